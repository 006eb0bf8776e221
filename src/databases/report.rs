//! What the database sessions publish after each step: whether each database could be
//! entered, every watched database's report for the alert rules (through the hub, beside the
//! main session's observations), the per-database status, and the `pgvigil_database_*` series.

use std::collections::{BTreeMap, HashSet};

use tracing::{info, warn};

use super::{Lane, State, Watched};
use crate::collect::{DatabaseReport, DatabasesReport};
use crate::metrics::{self, Snapshot};

/// The most databases a collector's "not applicable" status names per reason.
const NAMED: usize = 5;

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
        let not_applicable = self.not_applicable();
        hub.status.update(&self.name, |s| {
            for name in self
                .watched
                .values()
                .flat_map(|w| &w.collectors)
                .map(|c| c.spec.name)
            {
                if let Some(c) = s.collectors.get_mut(name) {
                    c.not_applicable = not_applicable.get(name).cloned();
                }
            }
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

    /// Where each database-scope collector does not apply, for its collector status.
    fn not_applicable(&self) -> BTreeMap<&'static str, String> {
        summarise_not_applicable(self.watched.iter().flat_map(|(datname, w)| {
            w.collectors.iter().filter_map(|c| {
                let reason = w.status.not_applicable.get(c.spec.name)?;
                Some((datname.as_str(), c.spec.name, reason.as_str()))
            })
        }))
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

/// `(database, collector, "not applicable: <reason>")` entries as one line per collector:
/// "not applicable in db_a, db_b: <reason>", one clause per distinct reason, at most
/// [`NAMED`] databases named in a clause.
fn summarise_not_applicable<'a>(
    entries: impl Iterator<Item = (&'a str, &'static str, &'a str)>,
) -> BTreeMap<&'static str, String> {
    let mut by_collector: BTreeMap<&'static str, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for (datname, collector, reason) in entries {
        by_collector
            .entry(collector)
            .or_default()
            .entry(reason.strip_prefix("not applicable: ").unwrap_or(reason))
            .or_default()
            .push(datname);
    }
    by_collector
        .into_iter()
        .map(|(collector, reasons)| {
            let clauses: Vec<String> = reasons
                .into_iter()
                .map(|(reason, names)| {
                    let mut listed = names[..names.len().min(NAMED)].join(", ");
                    if names.len() > NAMED {
                        listed.push_str(&format!(" and {} more", names.len() - NAMED));
                    }
                    format!("not applicable in {listed}: {reason}")
                })
                .collect();
            (collector, clauses.join("; "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_applicable_names_the_databases_per_reason_and_caps_the_list() {
        let mut entries = vec![("db0", "advice", "not applicable: no extension")];
        let names: Vec<String> = (1..=7).map(|i| format!("db{i}")).collect();
        entries.extend(
            names
                .iter()
                .map(|n| (n.as_str(), "advice", "not applicable: no extension")),
        );
        entries.push(("other", "advice", "not applicable: a replica"));
        entries.push(("db1", "indexes", "not applicable: no tables"));
        let summary = summarise_not_applicable(entries.into_iter());
        assert_eq!(
            summary["advice"],
            "not applicable in other: a replica; \
             not applicable in db0, db1, db2, db3, db4 and 3 more: no extension"
        );
        assert_eq!(summary["indexes"], "not applicable in db1: no tables");
        assert_eq!(summary.len(), 2);
        assert!(summarise_not_applicable(std::iter::empty()).is_empty());
    }
}
