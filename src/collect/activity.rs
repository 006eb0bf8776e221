//! Server-side connection gauges from `pg_stat_activity` and the connection settings.
//!
//! One query returns one row per backend (at most `max_connections` rows) and the grouping is
//! done here, so the same rows also yield the per-session facts the alert rules need: who sits
//! idle in a transaction, and which open transactions hold uncommitted writes (a `backend_xid`
//! is assigned at a transaction's first write) — the signature of an import that never
//! committed.
//!
//! Cost: one row per backend, so on a server with many sessions (a fleet of targets on one
//! cluster reads every target's sessions) the daemon's part is per row: the rows' strings are
//! borrowed for the grouping (a label set is copied once per series, not per backend), and a
//! session's query text travels only when it has a transaction open, the only case it is kept.

use std::collections::{BTreeMap, HashSet};

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::config::ActivityConfig;
use crate::metrics::{self, Snapshot};

/// Label value for application names that are not allow-listed.
const OTHER_APPLICATION: &str = "other";
/// Longest query text kept per session (for alert annotations).
const QUERY_TEXT_LIMIT: i32 = 300;

const ACTIVITY_SQL: &str = "
SELECT pid,
       coalesce(datname, '') AS datname,
       coalesce(usename, '') AS usename,
       coalesce(application_name, '') AS application_name,
       coalesce(state, '') AS state,
       coalesce(backend_type, '') AS backend_type,
       wait_event_type,
       extract(epoch FROM clock_timestamp() - xact_start)::float8 AS xact_age,
       extract(epoch FROM clock_timestamp() - state_change)::float8 AS state_age,
       backend_xid IS NOT NULL AS holds_writes,
       CASE WHEN xact_start IS NOT NULL THEN left(query, $1) END AS query
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid()";

/// `current_setting()` rather than the `pg_settings` view, which builds a row for every
/// setting (about 0.4 ms of server time per poll); `reserved_connections` (16+) is NULL, and
/// left out, where it does not exist.
const SETTINGS_SQL: &str = "
SELECT name, setting::bigint
  FROM (VALUES ('max_connections', current_setting('max_connections')),
               ('superuser_reserved_connections', current_setting('superuser_reserved_connections')),
               ('reserved_connections', current_setting('reserved_connections', true)))
       AS s(name, setting)
 WHERE setting IS NOT NULL";

/// A client session with an open transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Backend process id.
    pub pid: i32,
    /// Database.
    pub datname: String,
    /// User.
    pub usename: String,
    /// application_name as the client set it.
    pub application_name: String,
    /// `active`, `idle in transaction`, ...
    pub state: String,
    /// Seconds since the transaction began.
    pub xact_age_seconds: f64,
    /// Seconds since the state last changed (for idle sessions: how long they have been idle).
    pub state_age_seconds: f64,
    /// The transaction has written something it has not committed.
    pub holds_writes: bool,
    /// The last statement, truncated.
    pub query: String,
}

impl Session {
    /// Idle inside an open transaction (including an aborted one).
    pub fn idle_in_transaction(&self) -> bool {
        self.state.starts_with("idle in transaction")
    }
}

/// What the activity collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityReport {
    /// `max_connections`.
    pub max_connections: i64,
    /// Slots applications cannot use (superuser and pg_use_reserved_connections reserves).
    pub reserved_connections: i64,
    /// Client backends connected, pgvigil excluded.
    pub client_connections: i64,
    /// Client sessions with an open transaction.
    pub open_transactions: Vec<Session>,
    /// Client backends by `state` (`active`, `idle`, `idle in transaction`, ...), pgvigil
    /// excluded; an empty state (unknown to the server) counts under `""`.
    pub by_state: BTreeMap<String, i64>,
}

/// The pg_stat_activity collector.
#[derive(Debug)]
pub struct Activity {
    application_names: HashSet<String>,
}

impl Activity {
    /// A collector exporting the allow-listed application names as themselves.
    pub fn new(config: &ActivityConfig) -> Self {
        Activity {
            application_names: config.application_names.iter().cloned().collect(),
        }
    }

    fn summarise(
        &self,
        backends: &[Backend<'_>],
        mut report: ActivityReport,
    ) -> (Snapshot, ActivityReport) {
        // Keyed by the row's own strings: a label set is copied once per series, not once
        // per backend (at a fleet of 500 targets on one server, each reads 1,000 backends).
        let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
        let mut connections: BTreeMap<[&str; 4], u64> = BTreeMap::new();
        let mut waiting: BTreeMap<[&str; 2], u64> = BTreeMap::new();
        let mut writing: BTreeMap<&str, u64> = BTreeMap::new();
        let mut oldest_xact = 0.0_f64;
        let mut longest_idle_in_xact = 0.0_f64;
        let mut oldest_writing = 0.0_f64;

        let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
        for b in backends {
            *by_type.entry(b.backend_type).or_default() += 1;
            if b.backend_type != "client backend" {
                continue;
            }
            report.client_connections += 1;
            *by_state.entry(b.state).or_default() += 1;
            let application = if self.application_names.contains(b.application_name) {
                b.application_name
            } else {
                OTHER_APPLICATION
            };
            *connections
                .entry([b.datname, b.usename, b.state, application])
                .or_default() += 1;
            if let Some(wait) = b.wait_event_type {
                if b.state == "active" {
                    *waiting.entry([b.datname, wait]).or_default() += 1;
                }
            }
            let Some(xact_age) = b.xact_age else {
                continue;
            };
            let xact_age = xact_age.max(0.0);
            let state_age = b.state_age.unwrap_or(0.0).max(0.0);
            oldest_xact = oldest_xact.max(xact_age);
            let session = Session {
                pid: b.pid,
                datname: b.datname.to_owned(),
                usename: b.usename.to_owned(),
                application_name: b.application_name.to_owned(),
                state: b.state.to_owned(),
                xact_age_seconds: xact_age,
                state_age_seconds: state_age,
                holds_writes: b.holds_writes,
                query: b.query.unwrap_or_default().to_owned(),
            };
            if session.idle_in_transaction() {
                longest_idle_in_xact = longest_idle_in_xact.max(state_age);
            }
            if session.holds_writes {
                *writing.entry(b.datname).or_default() += 1;
                oldest_writing = oldest_writing.max(xact_age);
            }
            report.open_transactions.push(session);
        }
        report.by_state = by_state
            .into_iter()
            .map(|(state, n)| (state.to_owned(), n))
            .collect();

        let mut snap = Snapshot::default();
        snap.set(&metrics::MAX_CONNECTIONS, report.max_connections as f64);
        snap.set(
            &metrics::RESERVED_CONNECTIONS,
            report.reserved_connections as f64,
        );
        let owned = |labels: &[&str]| labels.iter().map(|l| (*l).to_owned()).collect();
        for (backend_type, n) in by_type {
            snap.push(&metrics::BACKENDS, owned(&[backend_type]), n as f64);
        }
        for (labels, n) in connections {
            snap.push(&metrics::CONNECTIONS, owned(&labels), n as f64);
        }
        for (labels, n) in waiting {
            snap.push(&metrics::CONNECTIONS_WAITING, owned(&labels), n as f64);
        }
        for (datname, n) in writing {
            snap.push(&metrics::WRITING_XACTS, owned(&[datname]), n as f64);
        }
        snap.set(&metrics::OLDEST_XACT_AGE, oldest_xact);
        snap.set(&metrics::IDLE_IN_XACT_MAX_AGE, longest_idle_in_xact);
        snap.set(&metrics::WRITING_XACT_MAX_AGE, oldest_writing);
        (snap, report)
    }
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "activity",
    table: "activity",
    reads: "pg_stat_activity, max_connections, reserved connection slots, server version",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::ACTIVITY_METRICS,
    section: |t| &t.activity,
    build: |t| Box::new(Activity::new(&t.activity)),
    carry: |from, to| to.activity = from.activity.clone(),
};

impl ReportCollector for Activity {
    const NAME: &'static str = SPEC.name;
    type Report = ActivityReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, ActivityReport), CollectError> {
        let settings = ctx.query(SETTINGS_SQL, &[]).await?;
        let rows = ctx.query(ACTIVITY_SQL, &[&QUERY_TEXT_LIMIT]).await?;
        let mut report = ActivityReport::default();
        for row in settings {
            let name: &str = row.get(0);
            let value: i64 = row.get(1);
            match name {
                "max_connections" => report.max_connections = value,
                _ => report.reserved_connections += value,
            }
        }
        let rows = rows.iter().map(|row| {
            Ok::<_, tokio_postgres::Error>(Backend {
                pid: row.try_get(0)?,
                datname: row.try_get(1)?,
                usename: row.try_get(2)?,
                application_name: row.try_get(3)?,
                state: row.try_get(4)?,
                backend_type: row.try_get(5)?,
                wait_event_type: row.try_get(6)?,
                xact_age: row.try_get(7)?,
                state_age: row.try_get(8)?,
                holds_writes: row.try_get(9)?,
                query: row.try_get(10)?,
            })
        });
        let backends = rows.collect::<Result<Vec<_>, _>>()?;
        let (mut snapshot, report) = self.summarise(&backends, report);
        // The short form ("15.19"), not the distribution suffix, keeps the label stable.
        let version = ctx
            .server
            .version
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        snapshot.push(&metrics::POSTGRES_INFO, vec![version], 1.0);
        Ok((snapshot, report))
    }

    fn store(report: ActivityReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.activity = Some(report);
    }
}

/// One pg_stat_activity row, its strings borrowed from the row.
#[derive(Debug)]
struct Backend<'a> {
    pid: i32,
    datname: &'a str,
    usename: &'a str,
    application_name: &'a str,
    state: &'a str,
    backend_type: &'a str,
    wait_event_type: Option<&'a str>,
    xact_age: Option<f64>,
    state_age: Option<f64>,
    holds_writes: bool,
    /// Read only for sessions in a transaction (the only ones whose text is kept).
    query: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(state: &str, xact_age: Option<f64>, holds_writes: bool) -> Backend<'_> {
        Backend {
            pid: 1,
            datname: "app",
            usename: "u",
            application_name: "importer",
            state,
            backend_type: "client backend",
            wait_event_type: None,
            xact_age,
            state_age: xact_age,
            holds_writes,
            query: xact_age.map(|_| "insert into t values (1)"),
        }
    }

    #[test]
    fn summary_counts_and_ages() {
        let collector = Activity::new(&ActivityConfig {
            application_names: vec!["importer".into()],
        });
        let mut waiting = backend("active", Some(1.0), false);
        waiting.wait_event_type = Some("Lock");
        let mut walwriter = backend("", None, false);
        walwriter.backend_type = "walwriter";
        let mut psql = backend("idle", None, false);
        psql.application_name = "psql";
        let backends = vec![
            backend("idle in transaction", Some(42.0), true),
            waiting,
            walwriter,
            psql,
        ];
        let report = ActivityReport {
            max_connections: 100,
            reserved_connections: 3,
            ..Default::default()
        };
        let (snap, report) = collector.summarise(&backends, report);
        assert_eq!(report.client_connections, 3);
        let states: Vec<(&str, i64)> = report
            .by_state
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        assert_eq!(
            states,
            [("active", 1), ("idle", 1), ("idle in transaction", 1)]
        );
        assert_eq!(report.open_transactions.len(), 2);
        assert_eq!(snap.get(&metrics::WRITING_XACT_MAX_AGE)[0].value, 42.0);
        assert_eq!(snap.get(&metrics::IDLE_IN_XACT_MAX_AGE)[0].value, 42.0);
        assert_eq!(snap.get(&metrics::OLDEST_XACT_AGE)[0].value, 42.0);
        assert_eq!(
            snap.get(&metrics::WRITING_XACTS)[0].labels,
            vec!["app".to_string()]
        );
        assert_eq!(
            snap.get(&metrics::CONNECTIONS_WAITING)[0].labels,
            vec!["app".to_string(), "Lock".to_string()]
        );
        let apps: Vec<&str> = snap
            .get(&metrics::CONNECTIONS)
            .iter()
            .map(|s| s.labels[3].as_str())
            .collect();
        assert!(
            apps.contains(&"importer") && apps.contains(&"other"),
            "{apps:?}"
        );
        assert!(!apps.contains(&"psql"));
        assert_eq!(snap.get(&metrics::BACKENDS).len(), 2);
    }

    #[test]
    fn no_transactions_means_zero_ages() {
        let collector = Activity::new(&ActivityConfig::default());
        let (snap, report) =
            collector.summarise(&[backend("idle", None, false)], ActivityReport::default());
        assert!(report.open_transactions.is_empty());
        assert_eq!(snap.get(&metrics::WRITING_XACT_MAX_AGE)[0].value, 0.0);
        assert!(snap.get(&metrics::WRITING_XACTS).is_empty());
    }
}
