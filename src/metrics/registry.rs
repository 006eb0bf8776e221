//! [`Metrics`]: the prometheus-client registry, the process families that describe pgvigil
//! itself, and the snapshot store attached as a custom collector.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::polls::{OWN, Polls};
use super::scrape::BodyCache;
use super::store::SnapshotStore;
use super::*;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    target: String,
    purpose: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LossLabels {
    target: String,
    purpose: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkResultLabels {
    sink: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    alertname: String,
    severity: &'static str,
    state: &'static str,
}

/// Buckets for the wait for a connect permit: none at all when there is no queue, up to
/// several `connect_timeout`s in a connect storm.
const CONNECT_WAIT_BUCKETS: [f64; 11] =
    [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process metrics plus the store of snapshot metrics, and the registry that encodes both.
#[derive(Debug)]
pub struct Metrics {
    pub(super) registry: Registry,
    pub(super) store: Arc<SnapshotStore>,
    pub(super) cache: BodyCache,
    up: Family<TargetLabels, Gauge>,
    /// `pgvigil_poll_*`, published per target as a snapshot (module `polls`).
    polls: Mutex<Polls>,
    connect_attempts: Family<AttemptLabels, Counter>,
    session_losses: Family<LossLabels, Counter>,
    connect_waiting: Gauge,
    connect_in_progress: Gauge,
    connect_wait: Histogram,
    reload_successful: Gauge,
    reload_timestamp: Gauge<f64, AtomicU64>,
    // alerting
    notifications: Family<SinkResultLabels, Counter>,
    alerts: Family<AlertLabels, Gauge>,
    alert_observations_dropped: Family<TargetLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create the registry with every process metric registered and the snapshot collector
    /// attached.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let store = Arc::new(SnapshotStore::default());

        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        register(&mut registry, &BUILD_INFO, build_info);
        let up = Family::default();
        register(&mut registry, &UP, up.clone());
        let connect_attempts = Family::default();
        register(&mut registry, &CONNECT_ATTEMPTS, connect_attempts.clone());
        let session_losses = Family::default();
        register(&mut registry, &SESSION_LOSSES, session_losses.clone());
        let connect_waiting = Gauge::default();
        register(&mut registry, &CONNECT_WAITING, connect_waiting.clone());
        let connect_in_progress = Gauge::default();
        register(
            &mut registry,
            &CONNECT_IN_PROGRESS,
            connect_in_progress.clone(),
        );
        let connect_wait = Histogram::new(CONNECT_WAIT_BUCKETS);
        register(&mut registry, &CONNECT_WAIT, connect_wait.clone());
        let reload_successful = Gauge::default();
        register(
            &mut registry,
            &CONFIG_RELOAD_SUCCESSFUL,
            reload_successful.clone(),
        );
        let reload_timestamp = Gauge::<f64, AtomicU64>::default();
        register(
            &mut registry,
            &CONFIG_RELOAD_TIMESTAMP,
            reload_timestamp.clone(),
        );

        // alerting
        let notifications = Family::default();
        register(&mut registry, &NOTIFICATIONS, notifications.clone());
        let alerts = Family::default();
        register(&mut registry, &ALERTS, alerts.clone());
        let alert_observations_dropped = Family::default();
        register(
            &mut registry,
            &ALERT_OBSERVATIONS_DROPPED,
            alert_observations_dropped.clone(),
        );

        Metrics {
            registry,
            store,
            cache: BodyCache::default(),
            up,
            polls: Mutex::default(),
            connect_attempts,
            session_losses,
            connect_waiting,
            connect_in_progress,
            connect_wait,
            reload_successful,
            reload_timestamp,
            notifications,
            alerts,
            alert_observations_dropped,
        }
    }

    /// The store collectors publish their snapshots to.
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// Record whether a target is reachable and pollable.
    pub fn set_up(&self, target: &str, up: bool) {
        self.up
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .set(i64::from(up));
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// Remove every series about `target` (it is no longer watched): its snapshots and its
    /// process series.
    pub fn forget(&self, target: &str) {
        let mut polls = self.polls();
        polls.forget(target);
        self.store.remove_target(target);
        drop(polls);
        let labels = TargetLabels {
            target: target.to_owned(),
        };
        self.up.remove(&labels);
        self.alert_observations_dropped.remove(&labels);
        for purpose in ["main", "database"] {
            for result in ["success", "failure"] {
                self.connect_attempts.remove(&AttemptLabels {
                    target: target.to_owned(),
                    purpose,
                    result,
                });
            }
        }
        for purpose in ["main", "database"] {
            for reason in crate::collect::session::LOSS_REASONS {
                self.session_losses.remove(&LossLabels {
                    target: target.to_owned(),
                    purpose,
                    reason,
                });
            }
        }
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// Record the outcome of a configuration load (at start or a reload).
    pub fn config_loaded(&self, ok: bool) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            self.reload_timestamp.set(now);
        }
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// Record one connection attempt; `purpose` is `main` or `database`.
    pub fn connect_attempt(&self, target: &str, purpose: &'static str, ok: bool) {
        self.connect_attempts
            .get_or_create(&AttemptLabels {
                target: target.to_owned(),
                purpose,
                result: if ok { "success" } else { "failure" },
            })
            .inc();
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// One more (`delta` 1) or one fewer (-1) connection attempt waiting for a permit.
    pub fn connect_waiting(&self, delta: i64) {
        self.connect_waiting.inc_by(delta);
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// One more (`delta` 1) or one fewer (-1) connection attempt holding a permit.
    pub fn connect_in_progress(&self, delta: i64) {
        self.connect_in_progress.inc_by(delta);
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// Record how long an attempt waited for its permit.
    pub fn connect_waited(&self, seconds: f64) {
        self.connect_wait.observe(seconds);
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// Count a session lost without pgvigil closing it; `purpose` is `main` or `database`,
    /// `reason` one of [`crate::collect::session::LOSS_REASONS`].
    pub fn session_lost(&self, target: &str, purpose: &'static str, reason: &'static str) {
        self.session_losses
            .get_or_create(&LossLabels {
                target: target.to_owned(),
                purpose,
                reason,
            })
            .inc();
    }

    /// Record the outcome of one collector run; it is exported once the target's poll ends
    /// ([`Metrics::publish_polls`]).
    pub fn poll_finished(&self, target: &str, collector: &str, seconds: f64, ok: bool) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.polls().record(target, collector, seconds, ok, now);
    }

    /// A poll of `target` ended (or failed): publish its `pgvigil_poll_*` series if a run
    /// was recorded (or a collector dropped) since they were last published.
    pub fn publish_polls(&self, target: &str) {
        let mut polls = self.polls();
        if let Some(snapshot) = polls.take(target) {
            // Under the lock, so two publishes of one target cannot swap.
            self.store.publish(target, OWN, snapshot);
        }
    }

    /// A collector no longer runs on `target`: its `pgvigil_poll_*` series go with the
    /// target's next [`Metrics::publish_polls`].
    pub fn forget_collector(&self, target: &str, collector: &str) {
        self.polls().forget_collector(target, collector);
    }

    fn polls(&self) -> std::sync::MutexGuard<'_, Polls> {
        self.polls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one alert notification outcome (`result`: sent, failed, dropped).
    pub fn notification(&self, sink: &'static str, result: &'static str, n: u64) {
        self.notifications
            .get_or_create(&SinkResultLabels { sink, result })
            .inc_by(n);
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// Set how many alerts of one name, severity and state pgvigil holds.
    pub fn set_alerts(&self, alertname: &str, severity: &'static str, state: &'static str, n: i64) {
        self.alerts
            .get_or_create(&AlertLabels {
                alertname: alertname.to_owned(),
                severity,
                state,
            })
            .set(n);
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// Count a poll whose observations the alert engine had no room for.
    pub fn alert_observations_dropped(&self, target: &str) {
        self.alert_observations_dropped
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .inc();
        // After the change: a scrape that saw the old generation encodes again.
        self.store.touch();
    }

    /// Encode everything in the OpenMetrics text format (see [`Metrics::scrape`]).
    pub fn encode_openmetrics(&self) -> String {
        self.stream(Format::OpenMetrics).into_text()
    }

    /// Encode everything in the classic Prometheus text format (0.0.4), for clients that do not
    /// ask for OpenMetrics (curl, `promtool check metrics`, older scrapers).
    pub fn encode_classic(&self) -> String {
        self.stream(Format::Classic).into_text()
    }
}

fn register<M>(registry: &mut Registry, def: &MetricDef, metric: M)
where
    M: prometheus_client::registry::Metric,
{
    // The registry appends the final period itself.
    registry.register(def.family_name(), def.help.trim_end_matches('.'), metric);
}
