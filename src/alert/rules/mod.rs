//! Every alerting rule, one file each, listed once in [`RULES`].
//!
//! A rule's settings come from `[alerts.rules.<AlertName>]`, overridden per target by
//! `[targets.alerts.<AlertName>]`. The keys `enabled`, `severity` and `for` are common to every
//! rule and handled by the engine; everything else in the table is the rule's own parameters,
//! which its `build` function deserialises (unknown keys are errors) and validates.
//!
//! Every rule has a runbook at `docs/runbooks/<AlertName>.md` (a test checks it exists), linked
//! from the alert's `runbook_url`.

pub mod slow_query;

use std::time::Duration;

use super::{Rule, Severity};

/// How to make one rule, and its defaults.
#[derive(Debug)]
pub struct RuleSpec {
    /// The `alertname`.
    pub alertname: &'static str,
    /// Severity unless configured otherwise.
    pub default_severity: Severity,
    /// How long a condition must hold before the alert fires, unless configured otherwise.
    pub default_for: Duration,
    /// One line for the README: when the rule fires.
    pub fires_when: &'static str,
    /// Build the rule from its own parameters (the merged table minus `enabled`, `severity`,
    /// `for`). The error says what is wrong and how to fix it.
    pub build: fn(&toml::Table) -> Result<Box<dyn Rule>, String>,
}

/// Every rule pgvigil knows.
pub const RULES: &[RuleSpec] = &[slow_query::SPEC];

/// Deserialize a rule's parameters from its table, with serde's defaults and unknown-key checks.
pub fn params<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, String> {
    T::deserialize(toml::Value::Table(table.clone())).map_err(|e| e.to_string())
}
