//! Alerts, evaluated where the data is.
//!
//! The pipeline: after every poll of a target, each [`Rule`] looks at the target's
//! [`Observations`] and says which [`Condition`]s hold now; the engine turns conditions into
//! alerts with a lifecycle (pending → firing after the rule's `for` → resolved), deduplicated
//! by label set, persisted across restarts, and delivered by sinks (Alertmanager, webhook, log).
//!
//! Rules are small and pure: all they know is the observations of one poll. Everything about
//! time, state and delivery belongs to the engine. Each rule lives in its own file under
//! [`rules`] and is listed once in [`rules::RULES`].

//! # Layout
//!
//! * [`rules`]: the rules, one file each, and the registry [`rules::RULES`].
//! * [`state`]: the pure lifecycle state machine ([`state::AlertBook`]), time passed in.
//! * [`persist`]: the state file, written atomically.
//! * [`configure`]: each source's rules built from the config's rule tables.
//! * `engine` (crate-private): the task that feeds observations through the rules and the
//!   book, persists, and hands notifications to the sinks.
//! * [`sink`]: delivery to Alertmanager, webhooks and the log.
//!
//! # Alert identity and severity
//!
//! An alert is identified by `alertname`, `target` and the rule's labels — **not** by
//! `severity`. When a condition escalates (ConnectionsNearLimit goes from warning to critical)
//! it stays the same alert in pgvigil (its `startsAt` is kept on the status page). Alertmanager,
//! however, identifies alerts by their whole label set, severity included, so pgvigil tells it
//! that the warning instance resolved and a critical instance started: routes and inhibitions
//! on `severity` then work as they do for Prometheus rules.

pub mod configure;
pub(crate) mod engine;
pub mod persist;
pub mod rules;
pub mod sink;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::collect::Observations;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nobody needs to act now.
    Info,
    /// Needs attention during working hours.
    Warning,
    /// Page someone.
    Critical,
}

impl Severity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One instance of an alert that a rule finds true in the current poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Condition {
    /// Labels besides `alertname`, `severity` and `target`, which the engine adds. Keep them
    /// bounded: `datname`, `table`, `import_id`, `queryid`, `pool`, `instance` — never values
    /// that change from poll to poll, or the alert would flap.
    pub labels: BTreeMap<String, String>,
    /// The details: `summary` and `description` at least, and the numbers that explain the
    /// alert (`expected`, `actual`, `missing`, ...). The engine adds `runbook_url`.
    pub annotations: BTreeMap<String, String>,
    /// Overrides the rule's configured severity (e.g. a critical threshold was crossed).
    pub severity: Option<Severity>,
}

impl Condition {
    /// A condition with a summary and description.
    pub fn new(summary: impl Into<String>, description: impl Into<String>) -> Self {
        let mut c = Condition::default();
        c.annotations.insert("summary".into(), summary.into());
        c.annotations
            .insert("description".into(), description.into());
        c
    }

    /// Add a label.
    pub fn label(mut self, name: &str, value: impl Into<String>) -> Self {
        self.labels.insert(name.to_owned(), value.into());
        self
    }

    /// Add an annotation.
    pub fn annotation(mut self, name: &str, value: impl ToString) -> Self {
        self.annotations.insert(name.to_owned(), value.to_string());
        self
    }

    /// Override the severity.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }
}

/// What a rule concluded from one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// The data the rule needs is missing this time (its collector failed, or the target is
    /// down): alerts of this rule keep their state; unknown is not resolved.
    Unknown,
    /// These conditions hold now; an alert of this rule that is not among them resolves.
    Holds(Vec<Condition>),
    /// These conditions hold now, but nothing is known about alerts that match one of the
    /// `unknown` matchers (`[("datname", "billing")]`: a database not read this time;
    /// `[("datname", "shop"), ("table", "public.contacts"), ("import_id", "42")]`: one import
    /// whose audit table could not be read): those keep their state, every other alert of
    /// this rule not among `conditions` resolves.
    HoldsExcept {
        /// What holds where the data is known.
        conditions: Vec<Condition>,
        /// The alerts the rule knows nothing about now.
        unknown: Vec<Matcher>,
    },
}

/// `(label, value)` pairs an alert must all carry to match: one part of what a rule does not
/// know about this time (see [`Evaluation::HoldsExcept`]).
pub type Matcher = Vec<(String, String)>;

/// The matcher of one database's alerts.
pub fn database_matcher(datname: &str) -> Matcher {
    vec![("datname".to_owned(), datname.to_owned())]
}

impl Evaluation {
    /// A rule over the database-scope reports of every watched database: `conditions` of each
    /// database whose `part` is there; databases without it are unknown (their alerts keep
    /// their state); no database list at all is [`Evaluation::Unknown`].
    pub fn per_database<'o, T: 'o>(
        observations: &'o Observations,
        part: impl Fn(&'o crate::collect::DatabaseReport) -> Option<&'o T>,
        mut conditions: impl FnMut(&'o str, &'o T) -> Vec<Condition>,
    ) -> Evaluation {
        if observations.databases.is_none() {
            return Evaluation::Unknown;
        }
        let mut holds = Vec::new();
        let mut unknown = Vec::new();
        for (datname, report) in observations.each_database() {
            match part(report) {
                Some(part) => holds.extend(conditions(datname, part)),
                None => unknown.push(database_matcher(datname)),
            }
        }
        if unknown.is_empty() {
            Evaluation::Holds(holds)
        } else {
            Evaluation::HoldsExcept {
                conditions: holds,
                unknown,
            }
        }
    }
}

/// One alerting rule, configured for one target.
pub trait Rule: Send + Sync + std::fmt::Debug {
    /// The `alertname` label, e.g. `IdleInTransaction`.
    fn alertname(&self) -> &'static str;

    /// Look at one poll of `target`.
    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation;

    /// The rule's parameters as configured, `(key, value as TOML)`, for the README's rules
    /// reference and the status page. Rules without parameters keep the default.
    fn describe_params(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// A rule as configured for one target: the common settings resolved, the rule built.
#[derive(Debug, Clone)]
pub struct ConfiguredRule {
    /// The rule's `alertname`.
    pub alertname: &'static str,
    /// Severity unless a condition overrides it.
    pub severity: Severity,
    /// How long a condition must hold before its alert fires.
    pub for_: Duration,
    /// How long a firing alert stays firing after its condition was last seen.
    pub keep_firing_for: Duration,
    /// Whether its notifications go to the receivers (`notify`, default true except for
    /// [`rules::QUIET_BY_DEFAULT`]); a quiet rule's alerts still show on the status page, the
    /// API and the log.
    pub notify: bool,
    /// The built rule.
    pub rule: Arc<dyn Rule>,
}
