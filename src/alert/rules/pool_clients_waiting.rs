//! PoolClientsWaiting: clients queue in a PgBouncer pool for a server connection.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

/// The rule's registry entry.
pub(crate) const SPEC: RuleSpec = RuleSpec {
    alertname: "PoolClientsWaiting",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(60),
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "clients of a PgBouncer pool wait for a server connection (at least `min_waiting`, default 1) for longer than `for` (1m)",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    /// Waiting clients that count as a problem.
    min_waiting: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params { min_waiting: 1 }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.min_waiting < 1 {
        return Err(format!(
            "min_waiting = {} would fire on every pool; use 1 or more",
            p.min_waiting
        ));
    }
    Ok(Box::new(PoolClientsWaiting {
        min_waiting: p.min_waiting,
    }))
}

/// The rule.
#[derive(Debug)]
pub(crate) struct PoolClientsWaiting {
    min_waiting: i64,
}

impl Rule for PoolClientsWaiting {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![("min_waiting", self.min_waiting.to_string())]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        if !observations.up {
            return Evaluation::Unknown;
        }
        let Some(report) = &observations.pgbouncer else {
            // Not a PgBouncer: nothing to say.
            return Evaluation::Holds(Vec::new());
        };
        let Some(pools) = &report.pools else {
            return Evaluation::Unknown;
        };
        let conditions = pools
            .iter()
            .filter(|p| p.clients_waiting >= self.min_waiting)
            .map(|p| {
                let size = report
                    .pool_size(&p.datname)
                    .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
                Condition::new(
                    format!(
                        "{} clients wait for a server connection in PgBouncer pool {}/{} on {target}",
                        p.clients_waiting, p.datname, p.usename
                    ),
                    format!(
                        "Pool {}/{} on {target} has {} waiting clients, {} active servers of pool_size {size}; the oldest has waited {:.1}s. Every waiting client is a request the application is stalling on.",
                        p.datname,
                        p.usename,
                        p.clients_waiting,
                        p.servers_active,
                        p.max_wait_seconds
                    ),
                )
                .label("datname", &p.datname)
                .label("usename", &p.usename)
                .annotation("clients_waiting", p.clients_waiting)
                .annotation("clients_active", p.clients_active)
                .annotation("servers_active", p.servers_active)
                .annotation("pool_size", size)
                .annotation("max_wait_seconds", format!("{:.3}", p.max_wait_seconds))
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
    fn fires_per_pool_with_waiting_clients_and_is_unknown_without_data() {
        let rule = build(&toml::Table::new()).unwrap();
        let mut waiting = pool("app", 0);
        waiting.clients_waiting = 8;
        let obs = bouncer(vec![pool("other", 0), waiting]);
        let Evaluation::Holds(c) = rule.evaluate("b", &obs) else {
            panic!("expected conditions");
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["datname"], "app");
        assert_eq!(c[0].annotations["clients_waiting"], "8");
        assert_eq!(c[0].annotations["pool_size"], "2");

        let mut no_pools = obs.clone();
        no_pools.pgbouncer.as_mut().unwrap().pools = None;
        assert_eq!(rule.evaluate("b", &no_pools), Evaluation::Unknown);
        assert_eq!(
            rule.evaluate("b", &Observations::default()),
            Evaluation::Unknown
        );
        let postgres = Observations {
            up: true,
            ..Observations::default()
        };
        assert_eq!(rule.evaluate("pg", &postgres), Evaluation::Holds(vec![]));
    }

    #[test]
    fn parameters_are_checked() {
        let table: toml::Table = toml::from_str("min_waiting = 0").unwrap();
        assert!(build(&table).unwrap_err().contains("use 1 or more"));
        let table: toml::Table = toml::from_str("min_wait = 3").unwrap();
        assert!(build(&table).unwrap_err().contains("unknown field"));
    }
}
