//! Per-source state in one place: status, published snapshots, latest observations, the
//! last hour's history, `pgvigil_up`, and the alert engine's rules for each source.
//!
//! The poll loops write here, the HTTP server reads here, and the supervisor
//! (`crate::app`) adds and forgets sources here. [`Hub::forget`] removes everything a source
//! left behind, so a source removed at runtime leaves no series on `/metrics`, no row in the
//! API, and no alert that can never resolve (its alerts resolve, and the resolutions are
//! delivered).
//!
//! Tasks take only the handles they use: the alert engine and its sinks take the metrics
//! handle and their end of the [`AlertHub`], not the whole hub.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock};

use crate::alert::ConfiguredRule;
use crate::alert::engine::AlertHub;
use crate::collect::{DatabasesReport, Observations};
use crate::connect_gate::ConnectGate;
use crate::metrics::Metrics;
use crate::page::history::History;
use crate::status::{SourceKind, Status};

/// State shared by the poll loops, the supervisor and the HTTP server.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) status: Status,
    /// The latest observations of every source. A std lock: never held across an await.
    observations: RwLock<BTreeMap<String, Arc<Observations>>>,
    pub(crate) alerts: AlertHub,
    /// The last hour of every source, for the status page's charts.
    pub(crate) history: History,
    /// `[server] max_concurrent_connects`: the line every connection attempt waits in.
    pub(crate) connects: ConnectGate,
    /// `[server] enable_lifecycle`: whether `POST /-/reload` is served.
    pub(crate) lifecycle: AtomicBool,
    /// How `POST /-/reload` asks for a reload; unset when there is nothing to re-read.
    pub(crate) reload: OnceLock<crate::app::ReloadTrigger>,
    /// The last rejected reload (when, why), until one succeeds.
    reload_error: RwLock<Option<(String, String)>>,
    /// Discovery files that could not be read, with why and where.
    discovery_errors: RwLock<Vec<String>>,
}

impl Hub {
    pub(crate) fn new(metrics: Arc<Metrics>, alerts: AlertHub) -> Self {
        Hub {
            connects: ConnectGate::new(
                crate::config::ServerConfig::DEFAULT_MAX_CONCURRENT_CONNECTS,
                metrics.clone(),
            ),
            metrics,
            status: Status::default(),
            observations: RwLock::default(),
            alerts,
            history: History::default(),
            lifecycle: AtomicBool::new(false),
            reload: OnceLock::new(),
            reload_error: RwLock::default(),
            discovery_errors: RwLock::default(),
        }
    }

    /// Record the outcome of the last reload: `Some((when, why))` if it was rejected.
    pub(crate) fn set_reload_error(&self, error: Option<(String, String)>) {
        *self.reload_error.write().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// The last rejected reload, until one succeeds.
    pub(crate) fn reload_error(&self) -> Option<(String, String)> {
        self.reload_error
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The discovery files that cannot be read right now.
    pub(crate) fn set_discovery_errors(&self, errors: Vec<String>) {
        *self
            .discovery_errors
            .write()
            .unwrap_or_else(|e| e.into_inner()) = errors;
    }

    /// See [`Hub::set_discovery_errors`].
    pub(crate) fn discovery_errors(&self) -> Vec<String> {
        self.discovery_errors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Register a source before its task starts: its status row (starting), `pgvigil_up 0`,
    /// and its rules.
    pub(crate) fn register(
        &self,
        name: &str,
        kind: SourceKind,
        connection: String,
        rules: Vec<ConfiguredRule>,
    ) {
        self.status.add_source(name, connection, kind);
        self.metrics.set_up(name, false);
        self.alerts.set_rules(name, rules);
    }

    /// A source is about to be restarted on a new connection: back to starting, with nothing
    /// published from the old one. Its alerts keep their state.
    pub(crate) fn restart(&self, name: &str, kind: SourceKind, connection: String) {
        self.metrics.store().clear_target(name);
        self.metrics.set_up(name, false);
        self.remove_observations(name);
        self.status.add_source(name, connection, kind);
    }

    /// Remove everything about a source that is no longer watched. Call it once its task has
    /// stopped, so nothing publishes after it.
    pub(crate) fn forget(&self, name: &str) {
        self.metrics.forget(name);
        self.status.remove(name);
        self.remove_observations(name);
        self.alerts.forget(name);
        self.history.forget(name);
    }

    fn remove_observations(&self, name: &str) {
        let mut latest = self.observations.write().unwrap_or_else(|e| e.into_inner());
        latest.remove(name);
    }

    /// Accept the observations of a finished poll (or of a failed connection attempt) that took
    /// `took` seconds, take the status page's sample of it, and hand them to the alert engine
    /// without waiting for it. A PostgreSQL target's per-database part comes from its database
    /// sessions ([`Hub::observe_databases`]): when `observations` has none, the latest one is
    /// kept (and sampled). `step` is the source's poll interval.
    pub(crate) fn observe_poll(
        &self,
        source: &str,
        observations: Observations,
        took: f64,
        step: std::time::Duration,
    ) {
        let observations = self.merge(source, observations);
        self.history.record(source, &observations, took, step);
        self.offer(source, observations);
    }

    fn merge(&self, source: &str, mut observations: Observations) -> Arc<Observations> {
        let mut latest = self.observations.write().unwrap_or_else(|e| e.into_inner());
        if observations.databases.is_none() {
            observations.databases = latest.get(source).and_then(|o| o.databases.clone());
        }
        let observations = Arc::new(observations);
        latest.insert(source.to_owned(), observations.clone());
        observations
    }

    /// Accept what a target's database sessions found (every watched database's report),
    /// beside the main session's latest observations, and hand the whole to the alert engine.
    pub(crate) fn observe_databases(&self, source: &str, databases: DatabasesReport) {
        let observations = {
            let mut latest = self.observations.write().unwrap_or_else(|e| e.into_inner());
            let mut observations = latest
                .get(source)
                .map(|o| Observations::clone(o))
                .unwrap_or_default();
            observations.databases = Some(databases);
            let observations = Arc::new(observations);
            latest.insert(source.to_owned(), observations.clone());
            observations
        };
        self.offer(source, observations);
    }

    fn offer(&self, source: &str, observations: Arc<Observations>) {
        if !self.alerts.offer(source, observations) {
            self.metrics.alert_observations_dropped(source);
        }
    }

    /// The latest observations of every source.
    pub(crate) fn latest_observations(&self) -> BTreeMap<String, Arc<Observations>> {
        self.observations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::metrics::{MAX_CONNECTIONS, Snapshot};

    #[test]
    fn forget_leaves_nothing_of_the_source_behind() {
        let (alerts, _inbox) = AlertHub::new();
        let hub = Hub::new(Arc::new(Metrics::new()), alerts);
        for name in ["gone", "kept"] {
            hub.register(
                name,
                SourceKind::Postgres,
                format!("u@h:5432/{name}"),
                Vec::new(),
            );
            let mut snap = Snapshot::default();
            snap.set(&MAX_CONNECTIONS, 100.0);
            hub.metrics.store().publish(name, "activity", snap);
            hub.metrics.poll_finished(name, "activity", 0.01, true);
            hub.metrics.publish_polls(name);
            hub.observe_poll(name, Observations::default(), 0.01, Duration::from_secs(1));
        }
        hub.forget("gone");
        let text = hub.metrics.encode_classic();
        assert!(!text.contains("target=\"gone\""), "{text}");
        assert!(text.contains("target=\"kept\""), "{text}");
        let names: Vec<String> = hub.status.targets().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["kept"]);
        assert!(!hub.latest_observations().contains_key("gone"));
        assert!(hub.history.ring("gone").is_none());
        assert_eq!(hub.history.ring("kept").map(|r| r.samples().len()), Some(1));
    }
}
