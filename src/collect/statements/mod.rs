//! Query statistics from `pg_stat_statements`, exported with bounded cardinality, plus the
//! per-statement interval latencies and baselines the SlowQuery rule needs.
//!
//! One poll:
//!
//! 1. **detect** the extension in the connected database ([`sql::DETECT_SQL`]): its version
//!    picks the [`sql::Dialect`]; missing, not preloaded or not readable each become one
//!    clear message with the exact fix, `pgvigil_statements_available{reason} 0`, and
//!    [`CollectError::Degraded`] (logged once by the poll loop, not every poll);
//! 2. **read counters** with `pg_stat_statements(false)` — no query texts;
//! 3. **deltas** per (dbid, userid, queryid, toplevel) with resets and evictions detected
//!    ([`delta`]);
//! 4. **top-K** membership and monotonic exported counters ([`topk`]);
//! 5. **baselines**: each statement's interval mean against its own robust baseline
//!    ([`baseline`]);
//! 6. **texts**, fetched only for statements that need one and pgvigil has not cached: top-K
//!    members (for `pgvigil_statement_info`) and statements that look slow (for alert
//!    annotations). Normalised to one line and truncated to `query_text_length`.
//!
//! # Memory per entry
//!
//! The state kept between polls is ~270 bytes per entry of pg_stat_statements (at 1,000
//! entries, by the accounting of `footprint.rs`): ~152 for the previous counters ([`delta`]),
//! ~56 for the baseline ([`baseline`]; 56 more while it warms up) and ~55 for the top-K
//! ([`topk`]): a 40-byte score, and a share of the K members' exported counters. Each keeps
//! its entries in dense `Vec`s sized to the view, with a table of 4-byte positions to find
//! them (`dense.rs`), because `HashMap`s, with key and value in their buckets and doubled as
//! they grow, held ~630 bytes per entry at 1,000 entries: 630 KB per target, the largest
//! term of a daemon watching 100.
//!
//! pg_stat_statements is one view per *cluster*, but its functions exist only in databases
//! where `CREATE EXTENSION` ran, so the extension must be created in the database pgvigil
//! connects to; the statements of every database are then visible.
//!
//! The extension missing there is [`CollectError::Degraded`], an error, and not
//! [`CollectError::NotApplicable`] as for the database-scope advice collector in a database
//! without the extension: this collector reads the target's own database, once for the whole
//! cluster, so a missing, unloaded or unreadable extension means query statistics are lost for
//! every database and the operator has something to fix (the message says what).

pub mod baseline;
pub mod delta;
mod dense;
#[cfg(test)]
mod footprint;
#[cfg(test)]
mod proptests;
pub mod sql;
pub mod topk;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::error::SqlState;
use tracing::{debug, warn};

use self::baseline::Baselines;
use self::delta::{Counter, Counters, DeltaTracker, Key, KeyMap};
use self::sql::{Dialect, StatementRow};
use self::topk::TopK;
use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::config::StatementsConfig;
use crate::metrics::{self, Labels, MetricDef, Snapshot};

/// Most interval samples a baseline needs before it is used (its warm-up length).
pub const BASELINE_WARMUP: usize = baseline::WARMUP;

/// The `queryid` label of the series that sums every statement outside the top-K.
pub const OTHER: &str = "other";

/// A statement looks slow enough to fetch its text for a possible alert when its interval
/// mean is this many times its baseline ...
const NOTABLE_RATIO: f64 = 2.0;
/// ... and at least this much (seconds) above it, or when its mean exceeds [`NOTABLE_MEAN`].
const NOTABLE_INCREASE: f64 = 0.0005;
/// See [`NOTABLE_RATIO`].
const NOTABLE_MEAN: f64 = 0.1;
/// ... provided it had at least this many calls in the interval: reading texts makes the server
/// read its whole text file, so it is not done for every rarely run statement that had one slow
/// call. (SlowQuery's default `min_calls` is higher; with a lower one, an alert may say "text not
/// fetched".)
const NOTABLE_MIN_CALLS: f64 = 5.0;
/// Texts fetched for notable statements per poll, at most (members are always fetched).
const NOTABLE_TEXT_LIMIT: usize = 100;

/// The exported counter families, in [`Counter::ALL`] order.
const COUNTER_METRICS: [&MetricDef; 13] = [
    &metrics::STATEMENT_CALLS,
    &metrics::STATEMENT_EXEC_SECONDS,
    &metrics::STATEMENT_PLAN_SECONDS,
    &metrics::STATEMENT_ROWS,
    &metrics::STATEMENT_SHARED_BLOCKS_HIT,
    &metrics::STATEMENT_SHARED_BLOCKS_READ,
    &metrics::STATEMENT_SHARED_BLOCKS_DIRTIED,
    &metrics::STATEMENT_SHARED_BLOCKS_WRITTEN,
    &metrics::STATEMENT_TEMP_BLOCKS_READ,
    &metrics::STATEMENT_TEMP_BLOCKS_WRITTEN,
    &metrics::STATEMENT_BLOCK_READ_SECONDS,
    &metrics::STATEMENT_BLOCK_WRITE_SECONDS,
    &metrics::STATEMENT_WAL_BYTES,
];

/// One statement's last interval, for the SlowQuery rule.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementInterval {
    /// pg_stat_statements' queryid.
    pub queryid: i64,
    /// Database name (the oid as text if unknown).
    pub datname: Arc<str>,
    /// Role name (the oid as text if unknown).
    pub usename: Arc<str>,
    /// Top-level statement (not nested in a function).
    pub toplevel: bool,
    /// Calls in the interval.
    pub calls: f64,
    /// Mean execution time of those calls, seconds.
    pub mean_seconds: f64,
    /// The statement's baseline mean before this interval; `None` while warming up.
    pub baseline_seconds: Option<f64>,
    /// Intervals the baseline rests on.
    pub baseline_samples: u32,
    /// Normalised, truncated text, when pgvigil has fetched it (top-K members and statements
    /// that looked slow).
    pub query: Option<Arc<str>>,
}

/// What the statements collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatementsReport {
    /// Seconds since the previous poll; 0 on the first.
    pub interval_seconds: f64,
    /// Whether this poll only set the base (no deltas yet).
    pub first_poll: bool,
    /// Whether pg_stat_statements was reset as a whole since the previous poll.
    pub reset: bool,
    /// Entries in pg_stat_statements.
    pub tracked: usize,
    /// Statements with calls in the interval.
    pub statements: Vec<StatementInterval>,
}

/// Why pg_stat_statements cannot be read; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unavailable {
    NotInstalled,
    NotPreloaded,
    PermissionDenied,
    Error,
}

impl Unavailable {
    fn reason(self) -> &'static str {
        match self {
            Unavailable::NotInstalled => "not_installed",
            Unavailable::NotPreloaded => "not_preloaded",
            Unavailable::PermissionDenied => "permission_denied",
            Unavailable::Error => "error",
        }
    }
}

/// Facts about the connected database, from [`sql::DETECT_SQL`].
#[derive(Debug)]
struct Detected {
    dialect: Option<Dialect>,
    extversion: Option<String>,
    schema: Option<String>,
    max: Option<String>,
    database: String,
    user: String,
    read_all_stats: bool,
}

/// The pg_stat_statements collector.
#[derive(Debug)]
pub struct Statements {
    config: StatementsConfig,
    started: Instant,
    last_poll: Option<f64>,
    generation: u64,
    deltas: DeltaTracker,
    topk: TopK,
    baselines: Baselines,
    texts: HashMap<i64, Arc<str>>,
    databases: HashMap<u32, Arc<str>>,
    roles: HashMap<u32, Arc<str>>,
    dealloc_total: f64,
    resets_all: f64,
    resets_entry: f64,
    warned_hidden: bool,
    warned_texts: bool,
    /// The label set of each exported statement, kept while it stays in the top-K so a poll
    /// reuses it instead of formatting and copying four strings for each of 13 counters.
    labels: KeyMap<Labels>,
    /// The `pgvigil_statement_info` label set of each exported queryid.
    info_labels: HashMap<i64, Labels>,
}

impl Statements {
    /// A collector with `config`'s top-K, windows and text length.
    pub fn new(config: &StatementsConfig) -> Self {
        Statements {
            config: config.clone(),
            started: Instant::now(),
            last_poll: None,
            generation: 0,
            deltas: DeltaTracker::default(),
            topk: TopK::new(config.top_k, config.rank_window),
            baselines: Baselines::new(config.baseline_window, config.baseline_min_samples),
            texts: HashMap::new(),
            databases: HashMap::new(),
            roles: HashMap::new(),
            dealloc_total: 0.0,
            resets_all: 0.0,
            resets_entry: 0.0,
            warned_hidden: false,
            warned_texts: false,
            labels: KeyMap::default(),
            info_labels: HashMap::new(),
        }
    }

    /// The top-K, `other`, statement info and per-database series.
    fn export(&mut self, snap: &mut Snapshot) {
        let mut kept = std::mem::take(&mut self.labels);
        let mut kept_info = std::mem::take(&mut self.info_labels);
        let mut info_seen = HashSet::new();
        for (key, counters) in self.topk.members() {
            let datname = self.database_name(key.dbid);
            let usename = self.role_name(key.userid);
            let labels = match kept.remove(key) {
                // A renamed database or role gets a new label set.
                Some(l) if *l[0] == *datname && *l[1] == *usename => l,
                _ => Labels::new(vec![
                    datname.to_string(),
                    usename.to_string(),
                    key.queryid.to_string(),
                    key.toplevel.to_string(),
                ]),
            };
            push_counters(snap, &labels, counters);
            self.labels.insert(*key, labels);
            // Several users or nesting levels can share a queryid: one info series each.
            if info_seen.insert(key.queryid) {
                if let Some(text) = self.texts.get(&key.queryid) {
                    let labels = match kept_info.remove(&key.queryid) {
                        Some(l) if *l[1] == **text => l,
                        _ => Labels::new(vec![key.queryid.to_string(), text.to_string()]),
                    };
                    snap.push_labels(&metrics::STATEMENT_INFO, &labels, 1.0);
                    self.info_labels.insert(key.queryid, labels);
                }
            }
        }
        let other = Labels::new(vec![
            String::new(),
            String::new(),
            OTHER.to_owned(),
            String::new(),
        ]);
        push_counters(snap, &other, self.topk.other());
        for (dbid, counters) in self.topk.databases() {
            let datname = vec![self.database_name(*dbid).to_string()];
            snap.push(
                &metrics::DATABASE_STATEMENT_CALLS,
                datname.clone(),
                counters[Counter::Calls],
            );
            snap.push(
                &metrics::DATABASE_STATEMENT_EXEC_SECONDS,
                datname.clone(),
                counters[Counter::ExecSeconds],
            );
            snap.push(
                &metrics::DATABASE_STATEMENT_ROWS,
                datname,
                counters[Counter::Rows],
            );
        }
    }

    /// Fetch texts for members without one and for `notable` statements, in one query.
    async fn fetch_texts(
        &mut self,
        client: &tokio_postgres::Client,
        dialect: Dialect,
        schema: &str,
        mut wanted: Vec<i64>,
    ) {
        wanted.extend(
            self.topk
                .members()
                .map(|(key, _)| key.queryid)
                .filter(|q| !self.texts.contains_key(q)),
        );
        if wanted.is_empty() {
            return;
        }
        wanted.sort_unstable();
        wanted.dedup();
        let fetched = sql::fetched_text_chars(self.config.query_text_length);
        match client
            .query(&dialect.texts_sql(schema), &[&wanted, &fetched])
            .await
        {
            Ok(rows) => {
                for row in rows {
                    let (Ok(queryid), Ok(Some(text))) = (
                        row.try_get::<_, i64>(0),
                        row.try_get::<_, Option<String>>(1),
                    ) else {
                        continue;
                    };
                    let cut = row
                        .try_get::<_, Option<bool>>(2)
                        .ok()
                        .flatten()
                        .unwrap_or(false);
                    let text =
                        sql::normalise_fetched_text(&text, cut, self.config.query_text_length);
                    self.texts.insert(queryid, Arc::from(text));
                }
            }
            Err(e) => {
                // Texts are decoration: the counters stay exported without them.
                let e = super::describe_pg_error(&e);
                if !std::mem::replace(&mut self.warned_texts, true) {
                    warn!("cannot read pg_stat_statements query texts: {e}");
                } else {
                    debug!("cannot read pg_stat_statements query texts: {e}");
                }
            }
        }
        // Bound the cache: keep members' texts when it grows well past what is exported.
        if self.texts.len() > 4 * self.config.top_k + 2 * NOTABLE_TEXT_LIMIT {
            let members: HashSet<i64> = self.topk.members().map(|(k, _)| k.queryid).collect();
            self.texts.retain(|q, _| members.contains(q));
        }
    }

    async fn resolve_names(
        &mut self,
        client: &tokio_postgres::Client,
        deltas: &[(Key, Counters)],
    ) -> Result<(), CollectError> {
        let unknown_db = deltas
            .iter()
            .any(|(k, _)| !self.databases.contains_key(&k.dbid));
        let unknown_role = deltas
            .iter()
            .any(|(k, _)| !self.roles.contains_key(&k.userid));
        if unknown_db || self.databases.is_empty() {
            self.databases = names(client, sql::DATABASES_SQL).await?;
        }
        if unknown_role || self.roles.is_empty() {
            self.roles = names(client, sql::ROLES_SQL).await?;
        }
        Ok(())
    }

    fn database_name(&self, oid: u32) -> Arc<str> {
        self.databases
            .get(&oid)
            .cloned()
            .unwrap_or_else(|| Arc::from(oid.to_string()))
    }

    fn role_name(&self, oid: u32) -> Arc<str> {
        self.roles
            .get(&oid)
            .cloned()
            .unwrap_or_else(|| Arc::from(oid.to_string()))
    }

    fn warn_hidden(&mut self, hidden: usize, detected: &Detected) {
        if hidden == 0 {
            self.warned_hidden = false;
            return;
        }
        let message = format!(
            "pg_stat_statements hides {hidden} entries of other roles from {user}; their statements are not counted. Fix: GRANT pg_read_all_stats TO \"{user}\";",
            user = detected.user
        );
        if !std::mem::replace(&mut self.warned_hidden, true) {
            warn!("{message}");
        } else {
            debug!("{message}");
        }
    }

    fn query_failed(&mut self, e: tokio_postgres::Error, detected: &Detected) -> CollectError {
        match e.code() {
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
                self.unavailable(Unavailable::PermissionDenied, detected, None)
            }
            // "pg_stat_statements must be loaded via shared_preload_libraries"
            Some(c) if *c == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE => {
                self.unavailable(Unavailable::NotPreloaded, detected, None)
            }
            Some(_) => self.unavailable(
                Unavailable::Error,
                detected,
                Some(super::describe_pg_error(&e)),
            ),
            // Not a server error: the connection is in trouble; let the poll loop handle it.
            None => CollectError::Query(e),
        }
    }

    /// Forget the continuity of the counters and describe what is wrong, with the fix.
    fn unavailable(
        &mut self,
        why: Unavailable,
        d: &Detected,
        detail: Option<String>,
    ) -> CollectError {
        self.deltas.forget();
        self.last_poll = None;
        let db = &d.database;
        let user = &d.user;
        let message = match why {
            Unavailable::NotInstalled if d.max.is_none() => format!(
                "pg_stat_statements is not available in database \"{db}\": the library is not preloaded and the extension is not created. Fix: add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf (keeping any libraries already listed), restart PostgreSQL, then run CREATE EXTENSION pg_stat_statements; in database \"{db}\""
            ),
            Unavailable::NotInstalled => format!(
                "pg_stat_statements is not installed in database \"{db}\" (the library is preloaded, but the extension's view and functions exist only where it was created). Fix: run CREATE EXTENSION pg_stat_statements; in database \"{db}\" as a superuser or the database owner"
            ),
            Unavailable::NotPreloaded => format!(
                "pg_stat_statements is installed in database \"{db}\" but its library is not loaded. Fix: add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf (keeping any libraries already listed) and restart PostgreSQL"
            ),
            Unavailable::PermissionDenied => format!(
                "role \"{user}\" may not read pg_stat_statements in database \"{db}\"{}. Fix: GRANT pg_read_all_stats TO \"{user}\"; (or GRANT pg_monitor), and make sure EXECUTE on the pg_stat_statements functions has not been revoked",
                if d.read_all_stats {
                    ""
                } else {
                    " and lacks pg_read_all_stats"
                }
            ),
            Unavailable::Error => format!(
                "cannot read pg_stat_statements in database \"{db}\": {}",
                detail.unwrap_or_default()
            ),
        };
        let mut snapshot = Snapshot::default();
        snapshot.push(
            &metrics::STATEMENTS_AVAILABLE,
            vec![why.reason().to_owned()],
            0.0,
        );
        CollectError::Degraded {
            message,
            snapshot: Box::new(snapshot),
        }
    }
}

fn reason_ok(hidden: usize) -> String {
    if hidden == 0 {
        "ok".into()
    } else {
        "insufficient_privilege".into()
    }
}

fn push_counters(snap: &mut Snapshot, labels: &Labels, counters: &Counters) {
    for (def, counter) in COUNTER_METRICS.iter().zip(Counter::ALL) {
        snap.push_labels(def, labels, counters[counter]);
    }
}

/// The counters query, each row mapped as it streams in, into room for `expected` rows (the
/// entries of the last poll: the view's size changes little between polls).
async fn read_rows(
    ctx: &PollContext<'_>,
    sql: &str,
    expected: usize,
) -> Result<Vec<StatementRow>, tokio_postgres::Error> {
    use futures_util::TryStreamExt as _;
    let stream = ctx.query_raw(sql, &[]).await?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::with_capacity(expected);
    while let Some(row) = stream.try_next().await? {
        rows.push(StatementRow::from_row(&row)?);
    }
    Ok(rows)
}

async fn detect(ctx: &PollContext<'_>) -> Result<Detected, CollectError> {
    let row = ctx.query_one(sql::DETECT_SQL, &[]).await?;
    let extversion: Option<String> = row.try_get(0)?;
    Ok(Detected {
        dialect: extversion.as_deref().and_then(Dialect::from_extversion),
        extversion,
        schema: row.try_get(1)?,
        max: row
            .try_get::<_, Option<String>>(2)?
            .filter(|m| !m.is_empty()),
        database: row.try_get(3)?,
        user: row.try_get(4)?,
        read_all_stats: row.try_get(5)?,
    })
}

async fn names(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<HashMap<u32, Arc<str>>, CollectError> {
    let rows = client.query(sql, &[]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, Arc::from(row.try_get::<_, String>(1)?))))
        .collect()
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "statements",
    table: "statements",
    reads: "pg_stat_statements (the extension in the DSN's database), pg_stat_statements_info",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::STATEMENTS_METRICS,
    section: |t| &t.statements,
    build: |t| Box::new(Statements::new(&t.statements)),
    carry: |from, to| to.statements = from.statements.clone(),
};

impl ReportCollector for Statements {
    const NAME: &'static str = SPEC.name;
    type Report = StatementsReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, StatementsReport), CollectError> {
        let detected = detect(ctx).await?;
        let (dialect, schema) = match (&detected.dialect, &detected.schema) {
            _ if detected.extversion.is_none() => {
                return Err(self.unavailable(Unavailable::NotInstalled, &detected, None));
            }
            _ if detected.max.is_none() => {
                return Err(self.unavailable(Unavailable::NotPreloaded, &detected, None));
            }
            (Some(dialect), Some(schema)) => (*dialect, schema.clone()),
            _ => {
                let detail = format!(
                    "unrecognised pg_stat_statements version {:?}",
                    detected.extversion
                );
                return Err(self.unavailable(Unavailable::Error, &detected, Some(detail)));
            }
        };

        let info = match dialect.info_sql(&schema) {
            Some(sql) => match ctx.query_one(&sql, &[]).await {
                Ok(row) => Some((
                    row.try_get::<_, Option<f64>>(0)?.unwrap_or(0.0),
                    row.try_get::<_, Option<f64>>(1)?,
                )),
                Err(e) => return Err(self.query_failed(e, &detected)),
            },
            None => None,
        };
        // Each row is mapped as it arrives: the 8,000 raw rows of a busy server are never all
        // held at once (a few MB per poll otherwise), only their ~100-byte mapped form.
        let expected = self.deltas.len() + self.deltas.len() / 8;
        let rows = match read_rows(ctx, &dialect.counters_sql(&schema), expected).await {
            Ok(rows) => rows,
            Err(e) => return Err(self.query_failed(e, &detected)),
        };
        let hidden = rows.iter().filter(|r| r.queryid.is_none()).count();
        self.warn_hidden(hidden, &detected);

        let now = self.started.elapsed().as_secs_f64();
        let dt = self.last_poll.map_or(0.0, |last| now - last);
        let first_poll = self.deltas.is_empty() && self.last_poll.is_none();
        self.last_poll = Some(now);
        self.generation += 1;
        let mut deltas: Vec<(Key, Counters)> = Vec::new();
        let events = self.deltas.apply(&rows, self.generation, info, |key, d| {
            deltas.push((key, *d))
        });
        self.dealloc_total += events.evicted;
        self.resets_all += f64::from(u8::from(events.reset));
        self.resets_entry += events.entries_reset as f64;
        self.topk.update(&deltas, dt);

        self.resolve_names(ctx.client, &deltas).await?;
        let mut report = StatementsReport {
            interval_seconds: dt,
            first_poll,
            reset: events.reset,
            tracked: rows.len(),
            statements: Vec::with_capacity(deltas.len()),
        };
        let mut notable = Vec::new();
        for (key, d) in &deltas {
            let calls = d[Counter::Calls];
            if calls <= 0.0 {
                continue;
            }
            let mean = d[Counter::ExecSeconds] / calls;
            let (baseline, samples) = self.baselines.observe(*key, mean, now);
            let looks_slow = mean >= NOTABLE_MEAN
                || baseline
                    .is_some_and(|b| mean >= b * NOTABLE_RATIO && mean - b >= NOTABLE_INCREASE);
            if looks_slow && calls >= NOTABLE_MIN_CALLS && !self.texts.contains_key(&key.queryid) {
                notable.push(key.queryid);
            }
            report.statements.push(StatementInterval {
                queryid: key.queryid,
                datname: self.database_name(key.dbid),
                usename: self.role_name(key.userid),
                toplevel: key.toplevel,
                calls,
                mean_seconds: mean,
                baseline_seconds: baseline,
                baseline_samples: samples,
                query: None,
            });
        }
        self.baselines.prune(now);
        notable.truncate(NOTABLE_TEXT_LIMIT);
        self.fetch_texts(ctx.client, dialect, &schema, notable)
            .await;
        for s in &mut report.statements {
            s.query = self.texts.get(&s.queryid).cloned();
        }

        let mut snap = Snapshot::default();
        snap.push(&metrics::STATEMENTS_AVAILABLE, vec![reason_ok(hidden)], 1.0);
        snap.set(&metrics::STATEMENTS_TRACKED, rows.len() as f64);
        if let Some(max) = detected.max.as_deref().and_then(|m| m.parse::<f64>().ok()) {
            snap.set(&metrics::STATEMENTS_MAX, max);
        }
        if dialect.has_info_view() {
            snap.set(&metrics::STATEMENTS_DEALLOCATIONS, self.dealloc_total);
        }
        snap.push(
            &metrics::STATEMENTS_RESETS,
            vec!["all".into()],
            self.resets_all,
        );
        snap.push(
            &metrics::STATEMENTS_RESETS,
            vec!["entry".into()],
            self.resets_entry,
        );
        self.export(&mut snap);
        Ok((snap, report))
    }

    fn store(report: StatementsReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.statements = Some(report);
    }
}
