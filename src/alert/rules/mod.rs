//! Every alerting rule, one file each, listed once in [`RULES`].
//!
//! A rule's settings come from `[alerts.rules.<AlertName>]`, overridden per target by
//! `[targets.alerts.<AlertName>]`. The keys `enabled`, `severity` and `for` are common to every
//! rule and handled by the engine; everything else in the table is the rule's own parameters,
//! which its `build` function deserialises (unknown keys are errors) and validates.
//!
//! Every rule has a runbook at `docs/runbooks/<AlertName>.md` (a test checks it exists), linked
//! from the alert's `runbook_url`.

// PgBouncer pools.
mod pool_client_connections_near_limit;
mod pool_clients_waiting;
mod pool_max_wait_high;
mod pool_saturated;
// --- the data-loss guard's rules ---
mod import_common;
pub mod import_reported_mismatch;
pub mod import_rolled_back;
pub mod import_row_shortfall;
pub mod import_stalled;
pub mod rolled_back_inserts;
pub mod table_rows_dropped;

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
pub const RULES: &[RuleSpec] = &[
    // PgBouncer pools.
    pool_clients_waiting::SPEC,
    pool_max_wait_high::SPEC,
    pool_saturated::SPEC,
    pool_client_connections_near_limit::SPEC,
    // the data-loss guard
    import_row_shortfall::SPEC,
    import_reported_mismatch::SPEC,
    import_stalled::SPEC,
    import_rolled_back::SPEC,
    table_rows_dropped::SPEC,
    rolled_back_inserts::SPEC,
];

/// Deserialize a rule's parameters from its table, with serde's defaults and unknown-key checks.
pub fn params<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, String> {
    T::deserialize(toml::Value::Table(table.clone())).map_err(|e| e.to_string())
}

/// Observations for the PgBouncer rules' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::collect::Observations;
    use crate::collect::pgbouncer::{Database, PgbouncerReport, Pool};

    /// A pool of `datname`/`app` with `servers_active` server connections.
    pub(crate) fn pool(datname: &str, servers_active: i64) -> Pool {
        Pool {
            datname: datname.into(),
            usename: "app".into(),
            servers_active,
            pool_mode: "session".into(),
            ..Pool::default()
        }
    }

    /// A polled PgBouncer with these pools, each database with pool_size 2.
    pub(crate) fn bouncer(pools: Vec<Pool>) -> Observations {
        let databases = pools
            .iter()
            .map(|p| Database {
                name: p.datname.clone(),
                pool_size: 2,
                ..Database::default()
            })
            .collect();
        Observations {
            up: true,
            pgbouncer: Some(PgbouncerReport {
                pools: Some(pools),
                databases: Some(databases),
                ..PgbouncerReport::default()
            }),
            ..Observations::default()
        }
    }
}
