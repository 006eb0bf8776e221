//! What the database sessions publish after each step: whether each database could be
//! entered, every watched database's report for the alert rules (through the hub, beside the
//! main session's observations), the per-database status, and the `pgvigil_database_*` series.

use std::collections::HashSet;

use tracing::{info, warn};

use super::{Lane, State, Watched};
use crate::collect::{DatabaseReport, DatabasesReport};
use crate::metrics::{self, Snapshot};

impl State {
    /// Record whether entering a database worked.
    pub(super) fn entered(
        lane: &Lane,
        target: &str,
        datname: &str,
        w: &mut Watched,
        result: Result<(), String>,
        logged: &mut HashSet<String>,
    ) {
        match result {
            Ok(()) => {
                if w.status.up == Some(false) {
                    info!(target = %target, datname, "database can be entered again");
                    logged.retain(|l| !l.starts_with(&format!("{datname}: ")));
                }
                w.status.up = Some(true);
                w.status.last_error = None;
                w.report.error = None;
            }
            Err(error) => {
                if logged.insert(format!("{datname}: {error}")) {
                    warn!(target = %target, datname, "cannot enter the database: {error}; the other databases are read as usual");
                }
                w.status.up = Some(false);
                w.status.last_error = Some(error.clone());
                w.report = DatabaseReport {
                    error: Some(error),
                    ..DatabaseReport::default()
                };
                lane.hub.metrics.store().clear_database(target, datname);
            }
        }
    }

    /// Publish the per-database reports for the rules, the status, and the sessions' series.
    pub(super) fn publish(&self) {
        let hub = &self.lane.hub;
        let report = DatabasesReport {
            databases: self
                .watched
                .iter()
                .map(|(name, w)| (name.clone(), w.report.clone()))
                .collect(),
        };
        hub.observe_databases(&self.name, report);
        let open: HashSet<&str> = self.sessions.names().into_iter().collect();
        hub.status.update(&self.name, |s| {
            s.database_sessions = self.sessions.len();
            s.databases = self
                .watched
                .iter()
                .map(|(name, w)| {
                    let mut status = w.status.clone();
                    status.session = open.contains(name.as_str());
                    (name.clone(), status)
                })
                .collect();
        });
        hub.metrics
            .store()
            .publish(&self.name, "databases", self.snapshot());
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.set(&metrics::DATABASES_WATCHED, self.watched.len() as f64);
        snap.set(&metrics::DATABASE_SESSIONS, self.sessions.len() as f64);
        snap.set(
            &metrics::CONNECTION_BUDGET,
            self.lane.target.max_connections as f64,
        );
        for (reason, n) in &self.postponed {
            snap.push(
                &metrics::DATABASE_VISITS_POSTPONED,
                vec![(*reason).to_owned()],
                *n as f64,
            );
        }
        for (name, w) in &self.watched {
            if let Some(up) = w.status.up {
                snap.push(
                    &metrics::DATABASE_UP,
                    vec![name.clone()],
                    f64::from(u8::from(up)),
                );
            }
            if let Some(at) = w.last_visit_unix {
                snap.push(&metrics::DATABASE_LAST_VISIT, vec![name.clone()], at);
            }
            snap.push(
                &metrics::IMPORT_NOTIFICATIONS,
                vec![name.clone()],
                w.notifications as f64,
            );
        }
        snap
    }
}
