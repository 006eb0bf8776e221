//! What the daemon knows about each source right now: state, last poll, last error. Written by
//! the poll loops, read by `/api/v1/targets`, `/readyz` and the status page.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::SystemTime;

use serde::Serialize;

/// Connection state of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// No connection attempt has finished yet.
    Starting,
    /// Connected, last poll attempt finished.
    Up,
    /// Unreachable or its connection failed; reconnecting with backoff.
    Down,
}

/// What kind of server a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A PostgreSQL server (`[[targets]]`).
    Postgres,
    /// A PgBouncer admin console (`[[pgbouncers]]`).
    Pgbouncer,
}

/// Per-collector outcome of the last poll.
#[derive(Debug, Clone, Serialize)]
pub struct CollectorStatus {
    /// Seconds the last poll took.
    pub last_duration_seconds: f64,
    /// When it last succeeded (RFC 3339).
    pub last_success: Option<String>,
    /// The error of the last poll, if it failed.
    pub last_error: Option<String>,
    /// Where the collector does not apply, and why (`not applicable: <reason>`): for a
    /// cluster-scope collector its last poll's reason; for a database-scope one the
    /// databases where it does not apply (each database's own reason is in
    /// [`DatabaseStatus::not_applicable`]). Not an error.
    pub not_applicable: Option<String>,
}

/// One target as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    /// Target name.
    pub name: String,
    /// `user@host:port/db` (never the password).
    pub connection: String,
    /// PostgreSQL or PgBouncer.
    pub kind: SourceKind,
    /// Current state.
    pub state: TargetState,
    /// `server_version` of the connected server.
    pub server_version: Option<String>,
    /// Whether the current (or last) session is encrypted; `null` if unknown (not connected
    /// yet, or a PgBouncer under `sslmode=prefer`, which cannot say).
    pub tls: Option<bool>,
    /// When the last poll (or connection attempt) finished (RFC 3339).
    pub last_poll: Option<String>,
    /// When a poll last succeeded completely (RFC 3339).
    pub last_success: Option<String>,
    /// The last connection or poll error.
    pub last_error: Option<String>,
    /// Failed connection attempts since the target was last up.
    pub consecutive_failures: u32,
    /// By collector name.
    pub collectors: BTreeMap<String, CollectorStatus>,
    /// The watched databases of a PostgreSQL target, by name (empty for a PgBouncer).
    pub databases: BTreeMap<String, DatabaseStatus>,
    /// Database sessions open now.
    pub database_sessions: usize,
    /// What the role may not read, by collector: one line per missing piece with the GRANT
    /// that fixes it (as `pgvigil check-privileges` prints it); empty when nothing is missing
    /// or it was not checked yet.
    pub privileges: BTreeMap<String, Vec<String>>,
}

/// One watched database of a target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatabaseStatus {
    /// Whether pgvigil's last attempt to enter it succeeded; `null` before the first.
    pub up: Option<bool>,
    /// Whether a database session is open on it now.
    pub session: bool,
    /// When its table statistics were last read (RFC 3339).
    pub last_visit: Option<String>,
    /// Why it could not be entered or read, if it could not.
    pub last_error: Option<String>,
    /// The database-scope collectors that do not apply in this database, by name, each with
    /// why (`not applicable: <reason>`; not an error).
    pub not_applicable: BTreeMap<String, String>,
}

/// The status of every target.
#[derive(Debug, Default)]
pub struct Status {
    // A std lock: held only for short copies, never across an await.
    targets: RwLock<BTreeMap<String, TargetStatus>>,
}

/// RFC 3339 timestamp of now, to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Status {
    /// Register a target before its task starts.
    pub fn add_target(&self, name: &str, connection: String) {
        self.add_source(name, connection, SourceKind::Postgres);
    }

    /// Register a target of any kind before its task starts.
    pub fn add_source(&self, name: &str, connection: String, kind: SourceKind) {
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        targets.insert(
            name.to_owned(),
            TargetStatus {
                name: name.to_owned(),
                connection,
                kind,
                state: TargetState::Starting,
                server_version: None,
                tls: None,
                last_poll: None,
                last_success: None,
                last_error: None,
                consecutive_failures: 0,
                collectors: BTreeMap::new(),
                databases: BTreeMap::new(),
                database_sessions: 0,
                privileges: BTreeMap::new(),
            },
        );
    }

    /// Forget a source (it is no longer watched).
    pub fn remove(&self, name: &str) {
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        targets.remove(name);
    }

    /// Change one target's status.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut TargetStatus)) {
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = targets.get_mut(name) {
            f(status);
        }
    }

    /// A copy of every target's status.
    pub fn targets(&self) -> Vec<TargetStatus> {
        let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
        targets.values().cloned().collect()
    }

    /// Every target has finished its first connection attempt or poll, so `pgvigil_up` means
    /// something.
    pub fn ready(&self) -> bool {
        let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
        targets.values().all(|t| t.state != TargetState::Starting)
    }
}
