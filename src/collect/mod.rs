//! Collectors: one module per data source, each turning what the database says into a metrics
//! [`Snapshot`] and typed [`Observations`] for the alert rules.
//!
//! A collector runs inside its target's poll loop (`target.rs`), on the target's single
//! connection, one collector after another, so polls never overlap and the database sees at
//! most one pgvigil query at a time. A collector that fails loses only its own series; the
//! others go on.

pub mod activity;
pub mod imports;
pub mod pgbouncer;
pub mod statements;
pub mod tables;

use std::future::Future;
use std::pin::Pin;

use crate::config::TargetConfig;
use crate::metrics::Snapshot;

/// A boxed, sendable future, so collectors can live in one `Vec<Box<dyn Collector>>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// What a collector sees of its target during one poll.
#[derive(Debug)]
pub struct PollContext<'a> {
    /// The target's monitoring connection.
    pub client: &'a tokio_postgres::Client,
    /// The target's configuration.
    pub target: &'a TargetConfig,
    /// The connected server.
    pub server: &'a ServerInfo,
}

/// Typed results of one poll of a target, for the alert rules and the API.
#[derive(Debug, Default, Clone)]
pub struct Observations {
    /// Whether the target was reachable and polled. When it is not, every other field is
    /// `None`.
    pub up: bool,
    /// Why the target is down (the connection or poll error), when `up` is false.
    pub down_reason: Option<String>,
    /// From pg_stat_activity; `None` when that collector failed.
    pub activity: Option<activity::ActivityReport>,
    /// From a PgBouncer admin console (only for `[[pgbouncers]]` entries); a part is `None`
    /// when its collector failed.
    pub pgbouncer: Option<pgbouncer::PgbouncerReport>,
    /// Table statistics and their changes since the previous poll; `None` when that collector
    /// failed or is disabled.
    pub tables: Option<tables::TablesReport>,
    /// Import verdicts; `None` when that collector failed or is disabled.
    pub imports: Option<imports::ImportsReport>,
    /// From pg_stat_statements; `None` when that collector failed, is unavailable or is
    /// disabled.
    pub statements: Option<statements::StatementsReport>,
}

/// One data source.
pub trait Collector: Send + Sync {
    /// Stable name: the `collector` label and the key of its snapshot.
    fn name(&self) -> &'static str;

    /// The longest one poll of this collector may take, given the target's default limit
    /// (collectors that run their own longer statements extend it).
    fn time_limit(&self, default: std::time::Duration) -> std::time::Duration {
        default
    }

    /// Poll once: return the metrics and fill this collector's part of `observations`.
    fn collect<'a>(
        &'a mut self,
        ctx: &'a PollContext<'a>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>>;
}

/// The collectors a target runs, in poll order.
pub fn for_target(target: &TargetConfig) -> Vec<Box<dyn Collector>> {
    let mut collectors: Vec<Box<dyn Collector>> =
        vec![Box::new(activity::Activity::new(&target.activity))];
    if target.statements.enabled {
        collectors.push(Box::new(statements::Statements::new(&target.statements)));
    }
    // The data-loss guard: table statistics, then import reconciliation.
    if target.tables.enabled {
        collectors.push(Box::new(tables::Tables::new(&target.tables)));
    }
    if target.imports.enabled {
        collectors.push(Box::new(imports::Imports::new(&target.imports)));
    }
    collectors
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
