//! The alert lifecycle as a pure state machine: inactive → pending → firing (after `for`) →
//! resolved, deduplicated by label set, re-sent while firing.
//!
//! [`AlertBook`] takes the time of every step as an argument and does no I/O, so its tests are
//! exact: they say what happens at t = 0, 59 and 60 seconds without sleeping. The engine owns
//! one book, feeds it every rule evaluation and a periodic [`AlertBook::resend_due`], and turns
//! the [`Event`]s it returns into notifications.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Evaluation, Severity};

/// Label or annotation name → value, sorted (so equal sets compare equal).
pub type Labels = BTreeMap<String, String>;

/// How many resolved alerts the book remembers for the status page.
pub const RESOLVED_KEPT: usize = 50;

/// Where an active alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, but not yet for the rule's `for`.
    Pending,
    /// The condition has held for `for`: notified.
    Firing,
}

impl AlertState {
    /// The label value (`state` of `pgvigil_alerts`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One active (pending or firing) alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Identity: `alertname`, `target` and the rule's labels — without `severity`.
    pub labels: Labels,
    /// Current severity.
    pub severity: Severity,
    /// Details from the latest evaluation, `runbook_url` included.
    pub annotations: Labels,
    /// Pending or firing.
    pub state: AlertState,
    /// When the condition was first seen.
    #[serde(with = "humantime_serde")]
    pub active_since: SystemTime,
    /// When the alert started firing (at this severity).
    #[serde(default, with = "humantime_serde")]
    pub fired_at: Option<SystemTime>,
    /// When the last firing notification was handed to the sinks.
    #[serde(default, with = "humantime_serde")]
    pub last_sent: Option<SystemTime>,
    /// When a poll last found the condition true (for `keep_firing_for`).
    #[serde(default, with = "humantime_serde")]
    pub last_seen: Option<SystemTime>,
}

impl Alert {
    /// The labels sinks see: the identity plus `severity`.
    pub fn full_labels(&self) -> Labels {
        let mut labels = self.labels.clone();
        labels.insert("severity".into(), self.severity.as_str().into());
        labels
    }

    fn target_and_name(&self) -> (&str, &str) {
        (
            self.labels.get("target").map_or("", String::as_str),
            self.labels.get("alertname").map_or("", String::as_str),
        )
    }
}

/// An alert that fired and has resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedAlert {
    /// The alert as it was last firing.
    pub alert: Alert,
    /// When its condition cleared.
    #[serde(with = "humantime_serde")]
    pub resolved_at: SystemTime,
}

/// What happened to an alert in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The condition appeared; the alert waits for `for`.
    Pending,
    /// A pending alert's condition cleared before `for`: it never fired, nobody is told.
    Cleared,
    /// The alert started firing.
    Firing,
    /// The alert is still firing and is due to be sent again.
    Resend,
    /// A firing alert's condition cleared.
    Resolved,
}

/// One lifecycle step of one alert, for the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The alert after the step (for `Resolved`, as it was last firing).
    pub alert: Alert,
    /// When it happened.
    pub at: SystemTime,
}

/// The settings of one rule on one target, as the book needs them.
#[derive(Debug, Clone)]
pub struct RuleSettings<'a> {
    /// The rule's `alertname`.
    pub alertname: &'a str,
    /// Severity unless a condition overrides it.
    pub severity: Severity,
    /// How long a condition must hold before it fires.
    pub for_: Duration,
    /// How long a firing alert outlives its condition.
    pub keep_firing_for: Duration,
    /// Added as the `runbook_url` annotation unless the rule set one.
    pub runbook_url: Option<&'a str>,
}

/// Every active alert, and the most recent resolutions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertBook {
    alerts: BTreeMap<String, Alert>,
    resolved: VecDeque<ResolvedAlert>,
}

/// The map key of an alert: its identity labels, rendered unambiguously.
fn key(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_default()
}

impl AlertBook {
    /// A book holding these alerts and resolutions (from the state file).
    pub fn restore(alerts: Vec<Alert>, resolved: Vec<ResolvedAlert>) -> Self {
        let mut book = AlertBook::default();
        for alert in alerts {
            book.alerts.insert(key(&alert.labels), alert);
        }
        book.resolved = resolved.into_iter().take(RESOLVED_KEPT).collect();
        book
    }

    /// Apply one evaluation of one rule on one target at `now`.
    pub fn apply(
        &mut self,
        target: &str,
        rule: &RuleSettings<'_>,
        evaluation: Evaluation,
        now: SystemTime,
    ) -> Vec<Event> {
        let (conditions, unknown) = match evaluation {
            // Missing data is not a resolution: everything stays as it is.
            Evaluation::Unknown => return Vec::new(),
            Evaluation::Holds(conditions) => (conditions, Vec::new()),
            Evaluation::HoldsExcept {
                conditions,
                unknown,
            } => (conditions, unknown),
        };
        // An alert matching one of these is not known about now: it keeps its state.
        let unknown_now = |a: &Alert| {
            unknown.iter().any(|matcher| {
                !matcher.is_empty()
                    && matcher
                        .iter()
                        .all(|(k, v)| a.labels.get(k).is_some_and(|x| x == v))
            })
        };
        // Deduplicate by label set; of two conditions with the same labels, the more severe
        // one wins.
        let mut current: BTreeMap<String, (Labels, Severity, Labels)> = BTreeMap::new();
        for condition in conditions {
            let mut labels = condition.labels;
            labels.remove("severity");
            labels.insert("alertname".into(), rule.alertname.into());
            labels.insert("target".into(), target.into());
            let severity = condition.severity.unwrap_or(rule.severity);
            let mut annotations = condition.annotations;
            if let Some(url) = rule.runbook_url {
                annotations
                    .entry("runbook_url".into())
                    .or_insert_with(|| url.to_owned());
            }
            let k = key(&labels);
            if current.get(&k).is_none_or(|(_, s, _)| severity > *s) {
                current.insert(k, (labels, severity, annotations));
            }
        }

        let mut events = Vec::new();
        // Alerts of this rule and target that no longer hold.
        let gone: Vec<String> = self
            .alerts
            .iter()
            .filter(|(k, a)| {
                a.target_and_name() == (target, rule.alertname)
                    && !current.contains_key(*k)
                    && !unknown_now(a)
            })
            .filter(|(_, a)| {
                // An event seen by one poll keeps firing for a while after it was last seen.
                let seen = a.last_seen.unwrap_or(a.active_since);
                a.state != AlertState::Firing
                    || now.duration_since(seen).unwrap_or_default() >= rule.keep_firing_for
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(alert) = self.alerts.remove(&k) {
                events.push(self.end(alert, now));
            }
        }

        for (k, (labels, severity, annotations)) in current {
            match self.alerts.get_mut(&k) {
                None => {
                    let alert = Alert {
                        labels,
                        severity,
                        annotations,
                        state: AlertState::Pending,
                        active_since: now,
                        fired_at: None,
                        last_sent: None,
                        last_seen: Some(now),
                    };
                    events.push(Event {
                        kind: EventKind::Pending,
                        alert: alert.clone(),
                        at: now,
                    });
                    self.alerts.insert(k.clone(), alert);
                }
                Some(alert) => {
                    alert.annotations = annotations;
                    alert.last_seen = Some(now);
                    if alert.severity != severity {
                        if alert.state == AlertState::Firing {
                            // Alertmanager knows the alert by its labels, severity included:
                            // resolve the old instance there and start the new one.
                            events.push(Event {
                                kind: EventKind::Resolved,
                                alert: alert.clone(),
                                at: now,
                            });
                            alert.severity = severity;
                            alert.fired_at = Some(now);
                            alert.last_sent = Some(now);
                            events.push(Event {
                                kind: EventKind::Firing,
                                alert: alert.clone(),
                                at: now,
                            });
                        }
                        alert.severity = severity;
                    }
                }
            }
            let alert = self.alerts.get_mut(&k).expect("inserted above");
            let held = now.duration_since(alert.active_since).unwrap_or_default();
            if alert.state == AlertState::Pending && held >= rule.for_ {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(now);
                alert.last_sent = Some(now);
                events.push(Event {
                    kind: EventKind::Firing,
                    alert: alert.clone(),
                    at: now,
                });
            }
        }
        events
    }

    /// Firing alerts whose last notification is at least `interval` old: mark them sent now.
    pub fn resend_due(&mut self, interval: Duration, now: SystemTime) -> Vec<Event> {
        let mut events = Vec::new();
        for alert in self.alerts.values_mut() {
            if alert.state != AlertState::Firing {
                continue;
            }
            let due = alert
                .last_sent
                .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= interval);
            if due {
                alert.last_sent = Some(now);
                events.push(Event {
                    kind: EventKind::Resend,
                    alert: alert.clone(),
                    at: now,
                });
            }
        }
        events
    }

    /// End every alert for which `keep(target, alertname)` is false: after a restart with a
    /// changed config, alerts of removed targets or disabled rules would otherwise never
    /// resolve.
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool, now: SystemTime) -> Vec<Event> {
        let gone: Vec<String> = self
            .alerts
            .iter()
            .filter(|(_, a)| {
                let (target, name) = a.target_and_name();
                !keep(target, name)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut events = Vec::new();
        for k in gone {
            if let Some(alert) = self.alerts.remove(&k) {
                events.push(self.end(alert, now));
            }
        }
        events
    }

    fn end(&mut self, alert: Alert, now: SystemTime) -> Event {
        if alert.state != AlertState::Firing {
            return Event {
                kind: EventKind::Cleared,
                alert,
                at: now,
            };
        }
        self.resolved.push_front(ResolvedAlert {
            alert: alert.clone(),
            resolved_at: now,
        });
        self.resolved.truncate(RESOLVED_KEPT);
        Event {
            kind: EventKind::Resolved,
            alert,
            at: now,
        }
    }

    /// The active alerts, in identity order.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// Recent resolutions, newest first.
    pub fn resolved(&self) -> impl Iterator<Item = &ResolvedAlert> {
        self.resolved.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Condition;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn rule(for_secs: u64) -> RuleSettings<'static> {
        RuleSettings {
            alertname: "IdleInTransaction",
            severity: Severity::Warning,
            for_: Duration::from_secs(for_secs),
            keep_firing_for: Duration::ZERO,
            runbook_url: Some("https://example/IdleInTransaction.md"),
        }
    }

    #[test]
    fn keep_firing_for_holds_an_event_alert_after_its_condition_clears() {
        let mut book = AlertBook::default();
        let rule = RuleSettings {
            keep_firing_for: Duration::from_secs(600),
            ..rule(0)
        };
        assert_eq!(
            kinds(&book.apply("main", &rule, holds(&["app"]), t(0))),
            [EventKind::Pending, EventKind::Firing]
        );
        // The next poll no longer sees it: still firing, nothing sent.
        assert!(book.apply("main", &rule, holds(&[]), t(15)).is_empty());
        assert!(book.apply("main", &rule, holds(&[]), t(599)).is_empty());
        assert_eq!(book.active().count(), 1);
        // Ten minutes after it was last seen it resolves.
        assert_eq!(
            kinds(&book.apply("main", &rule, holds(&[]), t(600))),
            [EventKind::Resolved]
        );
        // A pending alert is not held: it never fired.
        let rule = RuleSettings {
            keep_firing_for: Duration::from_secs(600),
            ..self::rule(60)
        };
        book.apply("main", &rule, holds(&["app"]), t(700));
        assert_eq!(
            kinds(&book.apply("main", &rule, holds(&[]), t(715))),
            [EventKind::Cleared]
        );
    }

    fn holds(datnames: &[&str]) -> Evaluation {
        Evaluation::Holds(
            datnames
                .iter()
                .map(|d| Condition::new("s", "d").label("datname", *d))
                .collect(),
        )
    }

    fn kinds(events: &[Event]) -> Vec<EventKind> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved() {
        let mut book = AlertBook::default();
        let r = rule(60);
        let e = book.apply("main", &r, holds(&["shop"]), t(0));
        assert_eq!(kinds(&e), [EventKind::Pending]);
        assert!(book.apply("main", &r, holds(&["shop"]), t(59)).is_empty());
        let e = book.apply("main", &r, holds(&["shop"]), t(60));
        assert_eq!(kinds(&e), [EventKind::Firing]);
        let alert = &e[0].alert;
        assert_eq!(alert.labels["alertname"], "IdleInTransaction");
        assert_eq!(alert.labels["target"], "main");
        assert_eq!(alert.labels["datname"], "shop");
        assert_eq!(alert.full_labels()["severity"], "warning");
        assert_eq!(
            alert.annotations["runbook_url"],
            "https://example/IdleInTransaction.md"
        );
        assert_eq!(alert.active_since, t(0));
        assert_eq!(alert.fired_at, Some(t(60)));
        let e = book.apply("main", &r, holds(&[]), t(75));
        assert_eq!(kinds(&e), [EventKind::Resolved]);
        assert_eq!(book.active().count(), 0);
        assert_eq!(book.resolved().next().unwrap().resolved_at, t(75));
    }

    #[test]
    fn a_condition_shorter_than_for_never_fires() {
        let mut book = AlertBook::default();
        let r = rule(60);
        book.apply("main", &r, holds(&["shop"]), t(0));
        let e = book.apply("main", &r, holds(&[]), t(59));
        assert_eq!(kinds(&e), [EventKind::Cleared]);
        // It comes back: `for` starts again.
        book.apply("main", &r, holds(&["shop"]), t(61));
        assert!(book.apply("main", &r, holds(&["shop"]), t(120)).is_empty());
        assert_eq!(book.resolved().count(), 0);
    }

    #[test]
    fn zero_for_fires_at_once() {
        let mut book = AlertBook::default();
        let e = book.apply("main", &rule(0), holds(&["shop"]), t(0));
        assert_eq!(kinds(&e), [EventKind::Pending, EventKind::Firing]);
    }

    #[test]
    fn unknown_keeps_everything() {
        let mut book = AlertBook::default();
        let r = rule(0);
        book.apply("main", &r, holds(&["shop"]), t(0));
        assert!(
            book.apply("main", &r, Evaluation::Unknown, t(10))
                .is_empty()
        );
        assert_eq!(book.active().count(), 1);
    }

    #[test]
    fn alerts_of_a_database_not_read_keep_their_state_the_others_resolve() {
        let mut book = AlertBook::default();
        let r = rule(0);
        book.apply("main", &r, holds(&["shop", "crm"]), t(0));
        let unknown_shop = Evaluation::HoldsExcept {
            conditions: Vec::new(),
            unknown: vec![crate::alert::database_matcher("shop")],
        };
        let e = book.apply("main", &r, unknown_shop, t(5));
        assert_eq!(kinds(&e), [EventKind::Resolved]);
        assert_eq!(e[0].alert.labels["datname"], "crm");
        assert_eq!(book.active().count(), 1);
        // Once the database is read again, what holds there decides.
        let e = book.apply("main", &r, holds(&[]), t(10));
        assert_eq!(kinds(&e), [EventKind::Resolved]);
        assert_eq!(book.active().count(), 0);
    }

    #[test]
    fn a_matcher_keeps_only_the_alerts_carrying_all_its_labels() {
        let mut book = AlertBook::default();
        let r = rule(0);
        let import = |db: &str, id: &str| {
            Condition::new("s", "d")
                .label("datname", db)
                .label("import_id", id)
        };
        let all = vec![import("shop", "1"), import("shop", "2"), import("crm", "1")];
        book.apply("main", &r, Evaluation::Holds(all), t(0));
        // Import 1 of shop is unknown now; nothing holds where the data is known.
        let unknown_one = Evaluation::HoldsExcept {
            conditions: Vec::new(),
            unknown: vec![vec![
                ("datname".into(), "shop".into()),
                ("import_id".into(), "1".into()),
            ]],
        };
        let e = book.apply("main", &r, unknown_one, t(5));
        assert_eq!(kinds(&e), [EventKind::Resolved, EventKind::Resolved]);
        let left: Vec<_> = book
            .active()
            .map(|a| (a.labels["datname"].clone(), a.labels["import_id"].clone()))
            .collect();
        assert_eq!(left, [("shop".to_owned(), "1".to_owned())]);
        assert_eq!(book.active().next().unwrap().active_since, t(0));
        // An empty matcher matches nothing (it is not "everything is unknown").
        let empty = Evaluation::HoldsExcept {
            conditions: Vec::new(),
            unknown: vec![Vec::new()],
        };
        let e = book.apply("main", &r, empty, t(10));
        assert_eq!(kinds(&e), [EventKind::Resolved]);
    }

    #[test]
    fn dedup_by_labels_and_separate_targets_and_rules() {
        let mut book = AlertBook::default();
        let r = rule(0);
        let e = book.apply("main", &r, holds(&["shop", "shop", "crm"]), t(0));
        assert_eq!(e.iter().filter(|e| e.kind == EventKind::Firing).count(), 2);
        book.apply("other", &r, holds(&["shop"]), t(0));
        assert_eq!(book.active().count(), 3);
        // Clearing one target's conditions does not touch the other target's alert.
        let e = book.apply("main", &r, holds(&[]), t(5));
        assert_eq!(kinds(&e), [EventKind::Resolved, EventKind::Resolved]);
        assert_eq!(book.active().count(), 1);
        // Another rule on the same target is independent, too.
        let other_rule = RuleSettings {
            alertname: "LongRunningTransaction",
            ..rule(0)
        };
        book.apply("other", &other_rule, holds(&[]), t(6));
        assert_eq!(book.active().count(), 1);
    }

    #[test]
    fn resend_only_after_the_interval() {
        let mut book = AlertBook::default();
        let r = rule(0);
        book.apply("main", &r, holds(&["shop"]), t(0));
        let every = Duration::from_secs(300);
        assert!(book.resend_due(every, t(299)).is_empty());
        let e = book.resend_due(every, t(300));
        assert_eq!(kinds(&e), [EventKind::Resend]);
        assert!(book.resend_due(every, t(301)).is_empty());
        // A pending alert is never sent.
        book.apply("main", &rule(1000), holds(&["crm", "shop"]), t(302));
        assert!(
            book.resend_due(every, t(10_000))
                .iter()
                .all(|e| e.alert.labels["datname"] == "shop")
        );
    }

    #[test]
    fn escalation_resolves_the_old_severity_and_fires_the_new() {
        let mut book = AlertBook::default();
        let r = rule(0);
        book.apply("main", &r, holds(&["shop"]), t(0));
        let critical = Evaluation::Holds(vec![
            Condition::new("s", "d")
                .label("datname", "shop")
                .severity(Severity::Critical),
        ]);
        let e = book.apply("main", &r, critical, t(30));
        assert_eq!(kinds(&e), [EventKind::Resolved, EventKind::Firing]);
        assert_eq!(e[0].alert.severity, Severity::Warning);
        assert_eq!(e[1].alert.severity, Severity::Critical);
        assert_eq!(e[1].alert.active_since, t(0), "same alert in pgvigil");
        assert_eq!(book.active().count(), 1);
    }

    #[test]
    fn restored_book_keeps_firing_alerts_without_resending_early() {
        let mut book = AlertBook::default();
        let r = rule(0);
        book.apply("main", &r, holds(&["shop"]), t(0));
        let json = serde_json::to_string(&book.active().collect::<Vec<_>>()).unwrap();
        let mut restored = AlertBook::restore(serde_json::from_str(&json).unwrap(), vec![]);
        assert_eq!(restored, book);
        // The condition still holds after the restart: no new Firing, no early resend.
        assert!(
            restored
                .apply("main", &r, holds(&["shop"]), t(10))
                .is_empty()
        );
        assert!(
            restored
                .resend_due(Duration::from_secs(300), t(10))
                .is_empty()
        );
        // It clears later: resolved.
        let e = restored.apply("main", &r, holds(&[]), t(20));
        assert_eq!(kinds(&e), [EventKind::Resolved]);
    }

    #[test]
    fn retain_ends_alerts_of_removed_targets_and_rules() {
        let mut book = AlertBook::default();
        book.apply("gone", &rule(0), holds(&["shop"]), t(0));
        book.apply("main", &rule(100), holds(&["shop"]), t(0));
        let e = book.retain(|target, _| target == "main", t(1));
        assert_eq!(kinds(&e), [EventKind::Resolved]);
        let e = book.retain(|_, name| name != "IdleInTransaction", t(2));
        assert_eq!(kinds(&e), [EventKind::Cleared]);
        assert_eq!(book.active().count(), 0);
    }

    #[test]
    fn resolutions_are_a_bounded_ring() {
        let mut book = AlertBook::default();
        let r = rule(0);
        for i in 0..(RESOLVED_KEPT as u64 + 10) {
            book.apply("main", &r, holds(&["shop"]), t(2 * i));
            book.apply("main", &r, holds(&[]), t(2 * i + 1));
        }
        assert_eq!(book.resolved().count(), RESOLVED_KEPT);
        assert_eq!(
            book.resolved().next().unwrap().resolved_at,
            t(2 * (RESOLVED_KEPT as u64 + 9) + 1)
        );
    }
}
