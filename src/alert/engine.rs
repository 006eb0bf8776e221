//! The alert engine task: observations in, notifications out.
//!
//! Poll loops hand every poll's observations to [`AlertHub::offer`], which never waits: the
//! channel is bounded and a full channel drops the poll (counted in
//! `pgvigil_alert_observations_dropped_total`; the next poll is evaluated instead). The engine
//! runs the source's rules, feeds the [`AlertBook`], persists it when something changed,
//! publishes the view the HTTP API reads, and hands notifications to the sinks' bounded queues.
//!
//! Each source's rules live in the [`AlertHub`] (`set_rules`, `forget`), so sources can come
//! and go at runtime: when a source's rules change or it is forgotten, the engine is told on an
//! unbounded control channel (control messages are never dropped) and resolves — and
//! delivers the resolution of — every alert no rule of its source produces any more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::persist::StateStore;
use super::sink::http::{Format, HttpSink};
use super::sink::{Notification, log::log_event, payload::rfc3339};
use super::state::{AlertBook, Event, EventKind, Labels, RuleSettings};
use super::{ConfiguredRule, Evaluation};
use crate::collect::Observations;
use crate::config::{AlertsConfig, HttpSinkConfig};
use crate::metrics::Metrics;

/// Polls waiting for the engine; beyond this they are dropped.
const INBOX_CAPACITY: usize = 256;
/// Notifications waiting for one sink task; beyond this they are dropped.
const SINK_QUEUE_CAPACITY: usize = 1024;
/// How often the engine looks for firing alerts due to be re-sent.
const RESEND_CHECK: Duration = Duration::from_secs(1);
/// A firing alert tells Alertmanager it is valid for this many resend intervals, so that
/// Alertmanager resolves it by itself if pgvigil goes away (Prometheus uses 4 as well).
const VALID_FOR_RESENDS: u32 = 4;
/// The alert that means "the target is down"; while it is, every other rule is on hold.
const TARGET_DOWN: &str = "PgvigilTargetDown";

type Inbound = (String, Arc<Observations>);

/// What the engine is told besides observations.
#[derive(Debug)]
enum Control {
    /// Some source's rules changed or it is gone: resolve the alerts no rule produces any more.
    Reconcile,
    /// A reloaded `[alerts]`: receivers, resend interval, runbook URL, state directory.
    Reconfigure(Box<AlertsConfig>),
}

/// Each source's rules. A std lock: held only for a lookup or a swap, never across an await.
#[derive(Debug, Default)]
struct RuleMap(RwLock<HashMap<String, Arc<[ConfiguredRule]>>>);

impl RuleMap {
    fn get(&self, source: &str) -> Option<Arc<[ConfiguredRule]>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(source).cloned()
    }

    /// Whether `source` has a rule named `alertname`.
    fn has(&self, source: &str, alertname: &str) -> bool {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(source)
            .is_some_and(|rules| rules.iter().any(|r| r.alertname == alertname))
    }

    /// Whether `source`'s rule `alertname` sends to the receivers (an unknown one does).
    fn notifies(&self, source: &str, alertname: &str) -> bool {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(source)
            .and_then(|rules| rules.iter().find(|r| r.alertname == alertname))
            .is_none_or(|r| r.notify)
    }
}

/// The engine's door, shared with the poll loops and the HTTP server: observations in, each
/// source's rules, and the view of the alerts out.
#[derive(Debug)]
pub(crate) struct AlertHub {
    tx: mpsc::Sender<Inbound>,
    control: mpsc::UnboundedSender<Control>,
    rules: Arc<RuleMap>,
    view: Arc<RwLock<AlertsView>>,
}

/// The receiving end, handed to [`spawn`].
#[derive(Debug)]
pub(crate) struct Inbox {
    observations: mpsc::Receiver<Inbound>,
    control: mpsc::UnboundedReceiver<Control>,
    rules: Arc<RuleMap>,
    view: Arc<RwLock<AlertsView>>,
}

impl AlertHub {
    pub(crate) fn new() -> (AlertHub, Inbox) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let (control, control_rx) = mpsc::unbounded_channel();
        let rules = Arc::new(RuleMap::default());
        let view = Arc::new(RwLock::default());
        let hub = AlertHub {
            tx,
            control,
            rules: rules.clone(),
            view: view.clone(),
        };
        let inbox = Inbox {
            observations: rx,
            control: control_rx,
            rules,
            view,
        };
        (hub, inbox)
    }

    /// Queue a poll for evaluation without waiting; false when the queue is full.
    pub(crate) fn offer(&self, target: &str, observations: Arc<Observations>) -> bool {
        match self.tx.try_send((target.to_owned(), observations)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
            // The engine has stopped (shutdown): nothing to do.
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }

    /// Set (or replace) a source's rules. Alerts of rules it no longer has resolve; the others
    /// keep their state (a changed threshold applies from the next evaluation, without
    /// re-notifying).
    pub(crate) fn set_rules(&self, source: &str, rules: Vec<ConfiguredRule>) {
        let replaced = {
            let mut map = self.rules.0.write().unwrap_or_else(|e| e.into_inner());
            map.insert(source.to_owned(), rules.into())
        };
        if replaced.is_some() {
            let _ = self.control.send(Control::Reconcile);
        }
    }

    /// Forget a source's rules: its alerts resolve, and the resolutions are delivered.
    pub(crate) fn forget(&self, source: &str) {
        let removed = {
            let mut map = self.rules.0.write().unwrap_or_else(|e| e.into_inner());
            map.remove(source)
        };
        if removed.is_some() {
            let _ = self.control.send(Control::Reconcile);
        }
    }

    /// Apply a reloaded `[alerts]` in place: receivers that did not change keep their queue
    /// and connection, new ones start, removed ones stop; alerts keep their state.
    pub(crate) fn reconfigure(&self, alerts: AlertsConfig) {
        let _ = self.control.send(Control::Reconfigure(Box::new(alerts)));
    }

    /// What `/api/v1/alerts` and the status page show.
    pub(crate) fn view(&self) -> AlertsView {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The alerts as the API shows them.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct AlertsView {
    /// Pending and firing alerts.
    pub(crate) active: Vec<ActiveAlertView>,
    /// Recent resolutions, newest first.
    pub(crate) resolved: Vec<ResolvedAlertView>,
    /// The state file, if state is persisted.
    pub(crate) state_file: Option<String>,
    /// Why the state file could not be read or written, if it could not.
    pub(crate) state_error: Option<String>,
}

/// One pending or firing alert.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActiveAlertView {
    /// `pending` or `firing`.
    pub(crate) state: &'static str,
    /// All labels, `severity` included.
    pub(crate) labels: Labels,
    /// The details.
    pub(crate) annotations: Labels,
    /// When the condition was first seen (RFC 3339).
    pub(crate) active_since: String,
    /// When it started firing (RFC 3339).
    pub(crate) firing_since: Option<String>,
}

/// One resolved alert.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResolvedAlertView {
    /// All labels, `severity` included.
    pub(crate) labels: Labels,
    /// The details as last seen firing.
    pub(crate) annotations: Labels,
    /// When it started firing (RFC 3339).
    pub(crate) firing_since: Option<String>,
    /// When it resolved (RFC 3339).
    pub(crate) resolved_at: String,
}

/// One receiver's task and the queue to it.
#[derive(Debug)]
struct SinkHandle {
    /// What it was started with: kept across a reload when this is unchanged.
    key: (Format, HttpSinkConfig, Option<String>),
    name: &'static str,
    queue: mpsc::Sender<Notification>,
    stop: CancellationToken,
    /// Whether its full queue was reported (once until it has room again).
    queue_full: bool,
}

/// Start the engine and its sinks on `tracker`; they stop when `shutdown` is cancelled. The
/// sources' rules must be set in the [`AlertHub`] first: alerts restored from the state file
/// whose rule is gone are resolved at start.
pub(crate) fn spawn(
    alerts: &AlertsConfig,
    metrics: Arc<Metrics>,
    inbox: Inbox,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut engine = Engine {
        rules: inbox.rules.clone(),
        view: inbox.view.clone(),
        store: alerts.state_dir.as_deref().map(StateStore::new),
        sinks: Vec::new(),
        metrics,
        book: AlertBook::default(),
        persist_error: None,
        gauges: BTreeSet::new(),
        alerts: alerts.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    };
    engine.start_sinks();
    tracker.spawn(engine.run(inbox, shutdown.clone()));
}

struct Engine {
    alerts: AlertsConfig,
    rules: Arc<RuleMap>,
    view: Arc<RwLock<AlertsView>>,
    store: Option<StateStore>,
    sinks: Vec<SinkHandle>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    book: AlertBook,
    persist_error: Option<String>,
    /// Every (alertname, severity, state) ever exported, so vanished ones are set to 0.
    gauges: BTreeSet<(String, &'static str, &'static str)>,
}

impl Engine {
    async fn run(mut self, mut inbox: Inbox, shutdown: CancellationToken) {
        self.restore();
        let mut tick = tokio::time::interval(RESEND_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let events = tokio::select! {
                _ = shutdown.cancelled() => break,
                inbound = inbox.observations.recv() => match inbound {
                    Some((target, observations)) => self.evaluate(&target, &observations),
                    None => break,
                },
                control = inbox.control.recv() => match control {
                    Some(Control::Reconcile) => self.reconcile(),
                    Some(Control::Reconfigure(alerts)) => {
                        self.reconfigure(*alerts);
                        Vec::new()
                    }
                    None => break,
                },
                _ = tick.tick() => self.book.resend_due(self.alerts.resend_interval, SystemTime::now()),
            };
            self.dispatch(&events);
            // Re-sends only update `last_sent`; persisting them too keeps a restart from
            // re-sending everything at once.
            if !events.is_empty() {
                self.persist();
            }
            self.publish();
        }
        self.persist();
    }

    fn restore(&mut self) {
        if let Some(store) = &self.store {
            let (book, err) = store.load();
            self.book = book;
            if let Some(err) = err {
                error!("{err}");
                self.persist_error = Some(err.to_string());
            }
            let restored = self.book.active().count();
            if restored > 0 {
                info!(
                    restored,
                    file = %store.path().display(),
                    "restored pending and firing alerts"
                );
            }
        } else {
            info!(
                "alert state is kept in memory only; set [alerts] state_dir so a restart neither forgets firing alerts nor re-sends them"
            );
        }
        // Alerts of targets or rules no longer configured would never resolve otherwise.
        let events = self.reconcile();
        self.dispatch(&events);
        self.persist();
        self.publish();
    }

    /// Start a sink for every receiver of `self.alerts` that has none yet; stop the others.
    fn start_sinks(&mut self) {
        let alerts = &self.alerts;
        let mut wanted = Vec::new();
        for (format, list) in [
            (Format::AlertmanagerV2, &alerts.alertmanagers),
            (Format::Webhook, &alerts.webhooks),
        ] {
            for sink_config in list {
                wanted.push((format, sink_config.clone(), alerts.external_url.clone()));
            }
        }
        let mut kept = Vec::new();
        for handle in std::mem::take(&mut self.sinks) {
            if wanted.contains(&handle.key) {
                kept.push(handle);
            } else {
                handle.stop.cancel();
            }
        }
        for key in wanted {
            if let Some(i) = kept.iter().position(|h| h.key == key) {
                self.sinks.push(kept.swap_remove(i));
                continue;
            }
            let (tx, rx) = mpsc::channel(SINK_QUEUE_CAPACITY);
            let (format, config, external_url) = key.clone();
            let sink = HttpSink::new(format, config, external_url, self.metrics.clone());
            let stop = self.shutdown.child_token();
            self.tracker.spawn(sink.run(rx, stop.clone()));
            self.sinks.push(SinkHandle {
                name: format.sink_name(),
                key,
                queue: tx,
                stop,
                queue_full: false,
            });
        }
    }

    /// A reloaded `[alerts]`.
    fn reconfigure(&mut self, alerts: AlertsConfig) {
        if alerts.state_dir != self.alerts.state_dir {
            self.store = alerts.state_dir.as_deref().map(StateStore::new);
        }
        self.alerts = alerts;
        self.start_sinks();
        self.persist();
    }

    /// Resolve every alert whose source or rule is no longer configured.
    fn reconcile(&mut self) -> Vec<Event> {
        let rules = &self.rules;
        self.book.retain(
            |target, alertname| rules.has(target, alertname),
            SystemTime::now(),
        )
    }

    fn evaluate(&mut self, target: &str, observations: &Observations) -> Vec<Event> {
        let Some(rules) = self.rules.get(target) else {
            return Vec::new();
        };
        let now = SystemTime::now();
        let mut events = Vec::new();
        for configured in rules.iter() {
            let evaluation = if !observations.up && configured.alertname != TARGET_DOWN {
                Evaluation::Unknown
            } else {
                let rule = &configured.rule;
                // A bug in one rule must not take alerting down with it.
                match std::panic::catch_unwind(AssertUnwindSafe(|| {
                    rule.evaluate(target, observations)
                })) {
                    Ok(evaluation) => evaluation,
                    Err(_) => {
                        error!(
                            target,
                            alertname = configured.alertname,
                            "alert rule panicked; treating its data as unknown"
                        );
                        Evaluation::Unknown
                    }
                }
            };
            let runbook_url = self.alerts.runbook_url(configured.alertname);
            let settings = RuleSettings {
                alertname: configured.alertname,
                severity: configured.severity,
                for_: configured.for_,
                keep_firing_for: configured.keep_firing_for,
                runbook_url: Some(&runbook_url),
            };
            events.extend(self.book.apply(target, &settings, evaluation, now));
        }
        events
    }

    fn dispatch(&mut self, events: &[Event]) {
        let valid_for = self.alerts.resend_interval * VALID_FOR_RESENDS;
        for event in events {
            if self.alerts.log && log_event(event) {
                self.metrics.notification("log", "sent", 1);
            }
            let resolved_at = match event.kind {
                EventKind::Firing | EventKind::Resend => None,
                EventKind::Resolved => Some(event.at),
                EventKind::Pending | EventKind::Cleared => continue,
            };
            let alert = &event.alert;
            let (source, alertname) = (alert.labels.get("target"), alert.labels.get("alertname"));
            if let (Some(source), Some(alertname)) = (source, alertname) {
                if !self.rules.notifies(source, alertname) {
                    continue;
                }
            }
            let notification = Notification {
                labels: alert.full_labels(),
                annotations: alert.annotations.clone(),
                starts_at: alert.fired_at.unwrap_or(alert.active_since),
                resolved_at,
                valid_until: event.at + valid_for,
                generator_url: self.alerts.external_url.as_ref().map(|u| format!("{u}/")),
            };
            for handle in &mut self.sinks {
                if handle.queue.try_send(notification.clone()).is_ok() {
                    handle.queue_full = false;
                    continue;
                }
                self.metrics.notification(handle.name, "dropped", 1);
                if !handle.queue_full {
                    warn!(
                        sink = handle.name,
                        "alert sink queue is full; dropping notifications until it has room (the receiver is too slow or down)"
                    );
                    handle.queue_full = true;
                }
            }
        }
    }

    fn persist(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        match store.save(&self.book) {
            Ok(()) => {
                if self.persist_error.take().is_some() {
                    info!(file = %store.path().display(), "alert state file written again");
                }
            }
            Err(e) => {
                let message = e.to_string();
                // Once per distinct problem, not at every change.
                if self.persist_error.as_deref() != Some(message.as_str()) {
                    error!("{message}");
                    self.persist_error = Some(message);
                }
            }
        }
    }

    fn publish(&mut self) {
        let mut counts: BTreeMap<(String, &'static str, &'static str), i64> = BTreeMap::new();
        let active: Vec<ActiveAlertView> = self
            .book
            .active()
            .map(|a| {
                let name = a.labels.get("alertname").cloned().unwrap_or_default();
                *counts
                    .entry((name, a.severity.as_str(), a.state.as_str()))
                    .or_default() += 1;
                ActiveAlertView {
                    state: a.state.as_str(),
                    labels: a.full_labels(),
                    annotations: a.annotations.clone(),
                    active_since: rfc3339(a.active_since),
                    firing_since: a.fired_at.map(rfc3339),
                }
            })
            .collect();
        for key in counts.keys() {
            self.gauges.insert(key.clone());
        }
        for key in &self.gauges {
            let n = counts.get(key).copied().unwrap_or(0);
            self.metrics.set_alerts(&key.0, key.1, key.2, n);
        }
        let resolved = self
            .book
            .resolved()
            .map(|r| ResolvedAlertView {
                labels: r.alert.full_labels(),
                annotations: r.alert.annotations.clone(),
                firing_since: r.alert.fired_at.map(rfc3339),
                resolved_at: rfc3339(r.resolved_at),
            })
            .collect();
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = AlertsView {
            active,
            resolved,
            state_file: self.store.as_ref().map(|s| s.path().display().to_string()),
            state_error: self.persist_error.clone(),
        };
    }
}
