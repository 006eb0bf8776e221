//! PoolMaxWaitHigh: the oldest client waiting in a PgBouncer pool has waited too long.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

/// The rule's registry entry.
pub(crate) const SPEC: RuleSpec = RuleSpec {
    alertname: "PoolMaxWaitHigh",
    default_severity: Severity::Critical,
    // The measured wait already is a duration: no further `for` is needed by default.
    default_for: Duration::ZERO,
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "the oldest client waiting in a PgBouncer pool has waited longer than `max_wait` (default 10s)",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    #[serde(with = "humantime_serde")]
    max_wait: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_wait: Duration::from_secs(10),
        }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.max_wait.is_zero() {
        return Err(
            "max_wait = \"0s\" would fire whenever a client waits at all; use PoolClientsWaiting for that, or a limit such as \"10s\"".into(),
        );
    }
    Ok(Box::new(PoolMaxWaitHigh {
        max_wait: p.max_wait.as_secs_f64(),
    }))
}

/// The rule.
#[derive(Debug)]
pub(crate) struct PoolMaxWaitHigh {
    max_wait: f64,
}

impl Rule for PoolMaxWaitHigh {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![(
            "max_wait",
            super::toml_duration(Duration::from_secs_f64(self.max_wait)),
        )]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        if !observations.up {
            return Evaluation::Unknown;
        }
        let Some(report) = &observations.pgbouncer else {
            return Evaluation::Holds(Vec::new());
        };
        let Some(pools) = &report.pools else {
            return Evaluation::Unknown;
        };
        let conditions = pools
            .iter()
            .filter(|p| p.max_wait_seconds > self.max_wait)
            .map(|p| {
                Condition::new(
                    format!(
                        "a client has waited {:.1}s for a server connection in PgBouncer pool {}/{} on {target}",
                        p.max_wait_seconds, p.datname, p.usename
                    ),
                    format!(
                        "The oldest of {} waiting clients in pool {}/{} on {target} has waited {:.1}s (limit {}s) while {} server connections are active. Requests are timing out or about to.",
                        p.clients_waiting,
                        p.datname,
                        p.usename,
                        p.max_wait_seconds,
                        self.max_wait,
                        p.servers_active
                    ),
                )
                .label("datname", &p.datname)
                .label("usename", &p.usename)
                .annotation("max_wait_seconds", format!("{:.3}", p.max_wait_seconds))
                .annotation("limit_seconds", self.max_wait)
                .annotation("clients_waiting", p.clients_waiting)
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
    fn fires_above_the_limit_only() {
        let table: toml::Table = toml::from_str("max_wait = \"5s\"").unwrap();
        let rule = build(&table).unwrap();
        let mut slow = pool("app", 0);
        slow.clients_waiting = 3;
        slow.max_wait_seconds = 7.5;
        let mut ok = pool("other", 0);
        ok.max_wait_seconds = 5.0;
        let Evaluation::Holds(c) = rule.evaluate("b", &bouncer(vec![slow, ok])) else {
            panic!("expected conditions");
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].annotations["max_wait_seconds"], "7.500");
        let table: toml::Table = toml::from_str("max_wait = \"0s\"").unwrap();
        assert!(build(&table).is_err());
    }
}
