//! Collectors: one module per data source, each turning what the server says into a metrics
//! [`Snapshot`] and typed [`Observations`] for the alert rules.
//!
//! A collector runs inside its source's poll loop (`crate::poll`), on the source's session,
//! one collector after another, so polls never overlap and the server sees at most one pgvigil
//! query at a time. A collector that fails loses only its own series; the others go on.
//!
//! # Shape
//!
//! * [`SourceType`] is a kind of source ([`Postgres`], [`Pgbouncer`]): its config type, the
//!   context a collector sees during a poll ([`PollContext`], [`pgbouncer::BouncerContext`]),
//!   and its collectors.
//! * [`Collector<S>`] is one data source of a kind `S`: named, polled once per run. Every
//!   PostgreSQL collector implements [`ReportCollector`] instead (poll, then store the report),
//!   which gives it its `Collector` impl.
//! * [`registry`] lists every collector with what it declares (scope, interval, versions,
//!   grants, metrics, how to build it), like the alert rules' `RULES`; the poll loop runs what
//!   it lists, each collector on its own interval.
//!
//! # What a rule sees of a collector that did not run
//!
//! Collectors run on their own intervals, so a poll may run only some of them. Each poll's
//! [`Observations`] carry over the last report of every collector that was not due (its
//! registry entry's `carry`), so a rule over a slow collector does not flap to Unknown between
//! its runs; a collector that ran and failed leaves its part `None` (unknown) until it
//! succeeds again.

pub mod activity;
pub mod archiver;
pub mod imports;
pub mod pgbouncer;
pub mod prepared;
pub mod registry;
pub mod replication;
pub mod session;
pub mod slots;
pub mod statements;
pub mod tables;
// The server-health layer: role and settings, pg_stat_database and sizes, wraparound.
pub mod database_sizes;
pub mod database_stats;
pub mod server;
pub mod wal_directory;
pub mod wraparound;
// The server-health layer: checkpointer, I/O, locks.
pub mod checkpointer;
pub mod io;
pub mod locks;
// The schema guard: migration records and the leftovers of unsafe migrations.
pub mod migrations;
// The schema guard (issue 14).
pub mod indexes;
// The schema guard (issue 14): missing-index advice and rulebook lints.
pub mod advice;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

use crate::config::{PgbouncerConfig, TargetConfig};
use crate::metrics::Snapshot;
use crate::status::SourceKind;

pub use registry::{CollectorSpec, Scope, Versions};

/// A boxed, sendable future, so collectors can live in one `Vec<Box<dyn Collector<S>>>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A kind of source: what its collectors are configured by and see while they poll.
pub trait SourceType: Sized + Send + Sync + 'static {
    /// The configuration of one source of this kind.
    type Config: Send + Sync + 'static;
    /// What a collector sees during one poll: the session and what is known about it.
    type Context<'a>: Sync;
    /// How the status page and API call this kind.
    const KIND: SourceKind;
    /// Every collector of this kind, in poll order (see [`registry`]).
    const COLLECTORS: &'static [CollectorSpec<Self>];

    /// The settings every source has, from its config.
    fn settings(config: &Self::Config) -> &crate::config::SourceSettings;

    /// Prepare the observations of a poll before any collector runs.
    fn begin(_observations: &mut Observations) {}

    /// After a collector failed: make the session usable for the next one (see
    /// [`session::settle`]). `Ok(Some(what))`: something had to be undone (logged);
    /// `Err`: the session cannot be trusted and is dropped. Sources without transactions
    /// have nothing to settle.
    fn settle<'a>(
        _ctx: &'a Self::Context<'_>,
    ) -> BoxFuture<'a, Result<Option<&'static str>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// PostgreSQL targets (`[[targets]]`).
#[derive(Debug, Clone, Copy)]
pub struct Postgres;

impl SourceType for Postgres {
    type Config = TargetConfig;
    type Context<'a> = PollContext<'a>;
    const KIND: SourceKind = SourceKind::Postgres;
    const COLLECTORS: &'static [CollectorSpec<Self>] = registry::POSTGRES;

    fn settings(config: &TargetConfig) -> &crate::config::SourceSettings {
        &config.source
    }

    fn settle<'a>(ctx: &'a PollContext<'_>) -> BoxFuture<'a, Result<Option<&'static str>, String>> {
        Box::pin(async move { Ok(session::settle(ctx.client).await?.describe()) })
    }
}

/// PgBouncer instances (`[[pgbouncers]]`), read through their admin console.
#[derive(Debug, Clone, Copy)]
pub struct Pgbouncer;

impl SourceType for Pgbouncer {
    type Config = PgbouncerConfig;
    type Context<'a> = pgbouncer::BouncerContext<'a>;
    const KIND: SourceKind = SourceKind::Pgbouncer;
    const COLLECTORS: &'static [CollectorSpec<Self>] = registry::PGBOUNCER;

    fn settings(config: &PgbouncerConfig) -> &crate::config::SourceSettings {
        &config.source
    }

    fn begin(observations: &mut Observations) {
        // A polled PgBouncer always has a report, even if every collector fails: its parts
        // stay None, which the rules read as "unknown" rather than "fine".
        observations.pgbouncer.get_or_insert_with(Default::default);
    }
}

/// Facts about the server learnt when the connection was opened.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version_num`, e.g. 150019.
    pub version_num: i32,
    /// `server_version`, e.g. "15.19 (Debian 15.19-0+deb12u1)".
    pub version: String,
    /// pgvigil's own backend, excluded from activity counts.
    pub backend_pid: i32,
}

/// What a PostgreSQL collector sees of its target during one poll.
#[derive(Debug)]
pub struct PollContext<'a> {
    /// The session to query: the target's main connection for cluster-scope collectors; for
    /// database-scope ones, the connection to [`PollContext::database`].
    pub client: &'a tokio_postgres::Client,
    /// The statements prepared on `client` so far ([`prepared`]): the hot collectors' queries
    /// go through [`PollContext::query`] and its siblings, which prepare each once per session.
    pub prepared: &'a prepared::Prepared,
    /// The target's configuration.
    pub target: &'a TargetConfig,
    /// The connected server.
    pub server: &'a ServerInfo,
    /// The database `client` is connected to (database-scope collectors report per database).
    pub database: &'a str,
    /// pgvigil's own sessions on the cluster (the main one and the database sessions), left
    /// out of what the activity collector counts.
    pub own_backends: Vec<i32>,
    /// The most tables this database may export this time: its share of
    /// `max_tables_total`, never more than `max_tables`; `None`: `max_tables`.
    pub max_tables: Option<usize>,
}

impl PollContext<'_> {
    /// Run `sql` on the session as a statement prepared once per session.
    pub async fn query(
        &self,
        sql: &str,
        params: prepared::Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.prepared.query(self.client, sql, params).await
    }

    /// [`PollContext::query`] for a query that returns exactly one row.
    pub async fn query_one(
        &self,
        sql: &str,
        params: prepared::Params<'_>,
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        self.prepared.query_one(self.client, sql, params).await
    }

    /// [`PollContext::query`], streaming the rows.
    pub async fn query_raw(
        &self,
        sql: &str,
        params: prepared::Params<'_>,
    ) -> Result<tokio_postgres::RowStream, tokio_postgres::Error> {
        self.prepared.query_raw(self.client, sql, params).await
    }

    /// [`query_rows`] with a statement prepared once per session.
    pub async fn query_rows<T>(
        &self,
        sql: &str,
        params: prepared::Params<'_>,
        map: impl FnMut(&tokio_postgres::Row) -> Result<T, tokio_postgres::Error>,
    ) -> Result<Vec<T>, tokio_postgres::Error> {
        self.query(sql, params).await?.iter().map(map).collect()
    }
}

/// Typed results of one poll of a source, for the alert rules and the API.
#[derive(Debug, Default, Clone)]
pub struct Observations {
    /// Whether the source was reachable and polled. When it is not, every other field is
    /// `None`.
    pub up: bool,
    /// Why the source is down (the connection or poll error), when `up` is false.
    pub down_reason: Option<String>,
    /// From pg_stat_activity; `None` when that collector failed.
    pub activity: Option<activity::ActivityReport>,
    /// From a PgBouncer admin console (only for `[[pgbouncers]]` entries); a part is `None`
    /// when its collector failed.
    pub pgbouncer: Option<pgbouncer::PgbouncerReport>,
    /// From pg_stat_statements; `None` when that collector failed, is unavailable or is
    /// disabled.
    pub statements: Option<statements::StatementsReport>,
    /// What the database-scope collectors found in each watched database; `None` until the
    /// database sessions know which databases are watched.
    pub databases: Option<DatabasesReport>,
    /// Role, restarts and settings; `None` when that collector failed or is disabled.
    pub server: Option<server::ServerReport>,
    /// pg_stat_database facts per database; `None` when that collector failed or is disabled.
    pub database_stats: Option<database_stats::DatabaseStatsReport>,
    /// Database sizes and growth; `None` until that collector has run (or when it failed).
    pub database_sizes: Option<database_sizes::DatabaseSizesReport>,
    /// XID and multixact ages and the xmin horizon's holders; `None` when that collector
    /// failed or is disabled.
    pub wraparound: Option<wraparound::WraparoundReport>,
    /// From pg_stat_replication and, on a standby, pg_stat_wal_receiver; `None` when that
    /// collector failed or is disabled.
    pub replication: Option<replication::ReplicationReport>,
    /// From pg_replication_slots; `None` when that collector failed or is disabled.
    pub slots: Option<slots::SlotsReport>,
    /// From pg_stat_archiver; `None` when that collector failed or is disabled.
    pub archiver: Option<archiver::ArchiverReport>,
    /// From pg_locks (the waiters and their blockers); `None` when that collector failed or
    /// is disabled.
    pub locks: Option<locks::LocksReport>,
}

impl Observations {
    /// The report of one database, created empty if there is none yet (database-scope
    /// collectors fill their part of it).
    pub fn database_mut(&mut self, datname: &str) -> &mut DatabaseReport {
        self.databases
            .get_or_insert_with(DatabasesReport::default)
            .databases
            .entry(datname.to_owned())
            .or_default()
    }

    /// The report of one database, if it is watched.
    pub fn database(&self, datname: &str) -> Option<&DatabaseReport> {
        self.databases.as_ref()?.databases.get(datname)
    }

    /// Every watched database's report, by name.
    pub fn each_database(&self) -> impl Iterator<Item = (&str, &DatabaseReport)> {
        self.databases
            .iter()
            .flat_map(|d| d.databases.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

/// Every watched database's report.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct DatabasesReport {
    /// By database name: every database the target watches now (a dropped one is gone, and
    /// its alerts resolve).
    pub databases: BTreeMap<String, DatabaseReport>,
}

/// What the database-scope collectors found in one database. A part is `None` when its
/// collector failed, is disabled or has not run there yet: rules read it as unknown for that
/// database, whose alerts then keep their state.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct DatabaseReport {
    /// Table statistics and their changes since the previous visit.
    pub tables: Option<tables::TablesReport>,
    /// Import verdicts.
    pub imports: Option<imports::ImportsReport>,
    /// Migration records and leftovers of unsafe migrations.
    pub migrations: Option<migrations::MigrationsReport>,
    /// Index health and sequence exhaustion (the schema guard).
    pub indexes: Option<indexes::IndexesReport>,
    /// Missing-index advice and lints of the top statements.
    pub advice: Option<advice::AdviceReport>,
    /// Why the database could not be read, if it could not (connection refused, ...).
    pub error: Option<String>,
}

impl DatabaseReport {
    /// The schema guard's findings in this database, most severe first: the migrations,
    /// indexes and advice collectors' together; `None` while none of them has reported.
    pub fn findings(&self) -> Option<Vec<crate::advice::Finding>> {
        if self.migrations.is_none() && self.indexes.is_none() && self.advice.is_none() {
            return None;
        }
        let mut out = Vec::new();
        if let Some(r) = &self.migrations {
            out.extend(r.findings());
        }
        if let Some(r) = &self.indexes {
            out.extend(r.findings.iter().cloned());
        }
        if let Some(r) = &self.advice {
            out.extend(r.findings());
        }
        out.sort_by_key(|f| std::cmp::Reverse(f.severity));
        Some(out)
    }
}

/// One data source of a kind of source `S`.
pub trait Collector<S: SourceType>: Send + Sync {
    /// Stable name: the `collector` label and the key of its snapshot (its registry name).
    fn name(&self) -> &'static str;

    /// The longest one run of this collector may take, given the source's default limit
    /// (collectors that run their own longer statements extend it).
    fn time_limit(&self, default: Duration) -> Duration {
        default
    }

    /// Poll once: return the metrics and fill this collector's part of `observations`.
    fn collect<'a, 'c>(
        &'a mut self,
        ctx: &'a S::Context<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>>;
}

/// A collector whose run is always the same three steps: [`poll`](ReportCollector::poll) the
/// source once for the metrics and a report, [`store`](ReportCollector::store) the report into
/// its part of the poll's [`Observations`], publish the metrics. It gets its
/// [`Collector<Postgres>`] from the blanket impl below, so each collector writes only what is
/// its own. (PostgreSQL only: over [`SourceType::Context`] the context's lifetime would be
/// early-bound in the trait, which an impl's `async fn poll` cannot match; PgBouncer's few
/// collectors keep their own impls.)
///
/// Use it for every collector whose `collect` would be just that, including one that only
/// exports metrics (`type Report = ()`, an empty `store`), one that answers from its last run
/// between its own runs (`advice`, `migrations`: their `poll` returns clones of it), and one
/// whose poll can end [`CollectError::Degraded`] or [`CollectError::NotApplicable`] (every
/// error passes through untouched and nothing is stored, so the part stays as the poll loop
/// left it). Only a collector that must store something when its poll fails would need a
/// hand-written [`Collector`] impl; no PostgreSQL collector does.
pub trait ReportCollector: Send + Sync {
    /// Its registry name (`SPEC.name`): the `collector` label and the key of its snapshot.
    const NAME: &'static str;
    /// What one run tells the alert rules and the API; `()` for metrics only.
    type Report: Send;

    /// Query the source once: the metrics to publish and the report to store.
    fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> impl Future<Output = Result<(Snapshot, Self::Report), CollectError>> + Send;

    /// Put a successful poll's report in its place in `observations`.
    fn store(report: Self::Report, ctx: &PollContext<'_>, observations: &mut Observations);

    /// See [`Collector::time_limit`].
    fn time_limit(&self, default: Duration) -> Duration {
        default
    }
}

impl<T: ReportCollector> Collector<Postgres> for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn time_limit(&self, default: Duration) -> Duration {
        ReportCollector::time_limit(self, default)
    }

    fn collect<'a, 'c>(
        &'a mut self,
        ctx: &'a PollContext<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        Box::pin(async move {
            let (snapshot, report) = ReportCollector::poll(self, ctx).await?;
            T::store(report, ctx, observations);
            Ok(snapshot)
        })
    }
}

/// The enabled collectors of a target, in poll order, as the registry builds them.
pub fn for_target(target: &TargetConfig) -> Vec<Box<dyn Collector<Postgres>>> {
    registry::build_enabled(target)
}

/// Why a collector could not finish a poll.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A query failed; the text carries the SQLSTATE and the server's message.
    #[error("{}", describe_pg_error(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The data source is missing or not readable; the message says how to fix it.
    #[error("{0}")]
    Unavailable(String),
    /// The collector does not apply here, and nothing is wrong: what it reads is not part of
    /// this database or source by design (most databases of a cluster have no
    /// pg_stat_statements, so the advice collector has nothing to advise on there). The text
    /// says why, without the database's name (the status shows where). The poll loop and the
    /// database visits record it through [`Ran::of`]: no error counted, no `last_error`, no
    /// series, logged once at info, and shown as `not applicable: <reason>` in
    /// `/api/v1/targets` and on the status page. Use [`CollectError::Degraded`] instead when
    /// the operator asked for the data and must fix something to get it.
    #[error("not applicable: {0}")]
    NotApplicable(String),
    /// The data source cannot be read (an extension is missing, a grant is lacking): `message`
    /// names the cause and the fix, and `snapshot` — published in place of the collector's
    /// usual series — says so in metrics (e.g. `pgvigil_statements_available 0`). The poll
    /// loop logs a repeated message once, not every poll.
    #[error("{message}")]
    Degraded {
        /// What is wrong and how to fix it.
        message: String,
        /// The series to publish meanwhile.
        snapshot: Box<Snapshot>,
    },
}

/// How one run of a collector ended, as the poll loop (`crate::poll`) and the database visits
/// (`crate::databases`) record it: the one place that decides what counts as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// It worked: its series are published, its status shows a success.
    Worked,
    /// It does not apply here ([`CollectError::NotApplicable`]): no series, no error.
    NotApplicable(String),
    /// Its queries were answered, but the source is degraded ([`CollectError::Degraded`]):
    /// the series that say so are published, and the message is an error.
    Degraded(String),
    /// It failed: its series are retracted, and the error is counted.
    Failed(String),
}

impl Ran {
    /// What a collector's result means: the snapshot to publish (none: retract its series)
    /// and how the run ended.
    pub fn of(result: Result<Snapshot, CollectError>) -> (Option<Snapshot>, Ran) {
        match result {
            Ok(snapshot) => (Some(snapshot), Ran::Worked),
            Err(CollectError::Degraded { message, snapshot }) => {
                (Some(*snapshot), Ran::Degraded(message))
            }
            Err(CollectError::NotApplicable(reason)) => (None, Ran::NotApplicable(reason)),
            Err(e) => (None, Ran::Failed(e.to_string())),
        }
    }

    /// The error to count (`pgvigil_poll_errors_total`) and show as `last_error`, if the run
    /// is one: a failure or a degraded source, never "not applicable".
    pub fn error(&self) -> Option<&str> {
        match self {
            Ran::Degraded(e) | Ran::Failed(e) => Some(e),
            Ran::Worked | Ran::NotApplicable(_) => None,
        }
    }

    /// Whether the server answered the collector's queries (anything but a failure): such a
    /// run keeps the source up and needs no settling of the session.
    pub fn answered(&self) -> bool {
        !matches!(self, Ran::Failed(_))
    }
}

/// Run `sql` and map each row with `map`, stopping at the first value that does not convert:
/// the one way collectors read a catalog query into typed rows.
pub async fn query_rows<T>(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    map: impl FnMut(&tokio_postgres::Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Vec<T>, tokio_postgres::Error> {
    client.query(sql, params).await?.iter().map(map).collect()
}

/// A tokio-postgres error with its cause chain and, for server errors, SQLSTATE and hint.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str("; ");
            s.push_str(detail);
        }
        if let Some(hint) = db.hint() {
            s.push_str("; hint: ");
            s.push_str(hint);
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        // Some errors (TLS handshakes) already quote their cause in their own message.
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;

    fn snapshot(v: f64) -> Snapshot {
        let mut s = Snapshot::default();
        s.set(&metrics::DATABASES_WATCHED, v);
        s
    }

    #[test]
    fn not_applicable_is_neither_an_error_nor_a_failure_and_publishes_nothing() {
        let (snap, ran) = Ran::of(Err(CollectError::NotApplicable("no extension here".into())));
        assert!(snap.is_none(), "its series are retracted");
        assert_eq!(ran, Ran::NotApplicable("no extension here".into()));
        assert_eq!(ran.error(), None);
        assert!(ran.answered());
        assert_eq!(
            CollectError::NotApplicable("no extension here".into()).to_string(),
            "not applicable: no extension here"
        );
    }

    #[test]
    fn worked_degraded_and_failed_runs_keep_their_meaning() {
        let (snap, ran) = Ran::of(Ok(snapshot(1.0)));
        assert_eq!(snap.map(|s| s.len()), Some(1));
        assert_eq!((ran.error(), ran.answered()), (None, true));

        let (snap, ran) = Ran::of(Err(CollectError::Degraded {
            message: "grant it".into(),
            snapshot: Box::new(snapshot(0.0)),
        }));
        assert_eq!(
            snap.map(|s| s.len()),
            Some(1),
            "a degraded source says so in metrics"
        );
        assert_eq!((ran.error(), ran.answered()), (Some("grant it"), true));

        let (snap, ran) = Ran::of(Err(CollectError::Unavailable("gone".into())));
        assert!(snap.is_none());
        assert_eq!((ran.error(), ran.answered()), (Some("gone"), false));
    }
}
