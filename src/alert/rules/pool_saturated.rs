//! PoolSaturated: a PgBouncer pool uses every server connection its pool_size allows.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

/// The rule's registry entry.
pub(crate) const SPEC: RuleSpec = RuleSpec {
    alertname: "PoolSaturated",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(300),
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "a PgBouncer pool's active server connections reach `ratio` (default 1.0) of its pool_size for `for` (5m)",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    /// Fraction of pool_size that counts as saturated.
    ratio: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params { ratio: 1.0 }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if !(p.ratio > 0.0 && p.ratio <= 1.0) {
        return Err(format!(
            "ratio = {} is outside (0, 1]; use e.g. 0.9 to warn at 90% of pool_size, or 1.0 for a full pool",
            p.ratio
        ));
    }
    Ok(Box::new(PoolSaturated { ratio: p.ratio }))
}

/// The rule.
#[derive(Debug)]
pub(crate) struct PoolSaturated {
    ratio: f64,
}

impl Rule for PoolSaturated {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![("ratio", super::toml_float(self.ratio))]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        if !observations.up {
            return Evaluation::Unknown;
        }
        let Some(report) = &observations.pgbouncer else {
            return Evaluation::Holds(Vec::new());
        };
        let (Some(pools), Some(_)) = (&report.pools, &report.databases) else {
            return Evaluation::Unknown;
        };
        let conditions = pools
            .iter()
            .filter_map(|p| {
                let size = report.pool_size(&p.datname).filter(|s| *s > 0)?;
                if (p.servers_active as f64) < self.ratio * size as f64 {
                    return None;
                }
                Some(
                    Condition::new(
                        format!(
                            "PgBouncer pool {}/{} on {target} uses {} of {size} server connections",
                            p.datname, p.usename, p.servers_active
                        ),
                        format!(
                            "Pool {}/{} on {target} has {} active server connections of pool_size {size}, {} idle, and {} clients waiting. The next client to need a server will queue.",
                            p.datname,
                            p.usename,
                            p.servers_active,
                            p.servers_idle,
                            p.clients_waiting
                        ),
                    )
                    .label("datname", &p.datname)
                    .label("usename", &p.usename)
                    .annotation("servers_active", p.servers_active)
                    .annotation("pool_size", size)
                    .annotation("clients_waiting", p.clients_waiting),
                )
            })
            .collect();
        Evaluation::Holds(conditions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::rules::testing::{bouncer, pool};

    #[test]
    fn fires_when_active_servers_reach_pool_size() {
        let rule = build(&toml::Table::new()).unwrap();
        let obs = bouncer(vec![pool("app", 2), pool("other", 1)]);
        let Evaluation::Holds(c) = rule.evaluate("b", &obs) else {
            panic!("expected conditions");
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["datname"], "app");
        let mut no_dbs = obs.clone();
        no_dbs.pgbouncer.as_mut().unwrap().databases = None;
        assert_eq!(rule.evaluate("b", &no_dbs), Evaluation::Unknown);
        let table: toml::Table = toml::from_str("ratio = 1.5").unwrap();
        assert!(build(&table).unwrap_err().contains("outside (0, 1]"));
    }
}
