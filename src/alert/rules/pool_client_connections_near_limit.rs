//! PoolClientConnectionsNearLimit: a PgBouncer instance nears max_client_conn, beyond which it
//! refuses new clients outright.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

/// The rule's registry entry.
pub(crate) const SPEC: RuleSpec = RuleSpec {
    alertname: "PoolClientConnectionsNearLimit",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(300),
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "client connections to a PgBouncer instance reach `ratio` (default 0.9) of max_client_conn for `for` (5m); critical from `critical_ratio` (0.98)",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    ratio: f64,
    critical_ratio: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            ratio: 0.9,
            critical_ratio: 0.98,
        }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if !(p.ratio > 0.0 && p.ratio <= 1.0) {
        return Err(format!(
            "ratio = {} is outside (0, 1]; use e.g. 0.9 for 90% of max_client_conn",
            p.ratio
        ));
    }
    if p.critical_ratio < p.ratio {
        return Err(format!(
            "critical_ratio = {} is below ratio = {}; make it at least ratio",
            p.critical_ratio, p.ratio
        ));
    }
    Ok(Box::new(PoolClientConnectionsNearLimit {
        ratio: p.ratio,
        critical_ratio: p.critical_ratio,
    }))
}

/// The rule.
#[derive(Debug)]
pub(crate) struct PoolClientConnectionsNearLimit {
    ratio: f64,
    critical_ratio: f64,
}

impl Rule for PoolClientConnectionsNearLimit {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ratio", super::toml_float(self.ratio)),
            ("critical_ratio", super::toml_float(self.critical_ratio)),
        ]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        if !observations.up {
            return Evaluation::Unknown;
        }
        let Some(report) = &observations.pgbouncer else {
            return Evaluation::Holds(Vec::new());
        };
        let (Some(used), Some(max)) = (report.client_connections, report.max_client_conn) else {
            return Evaluation::Unknown;
        };
        if max <= 0 {
            return Evaluation::Holds(Vec::new());
        }
        let ratio = used as f64 / max as f64;
        if ratio < self.ratio {
            return Evaluation::Holds(Vec::new());
        }
        let mut condition = Condition::new(
            format!("{used} of {max} client connections in use on PgBouncer {target}"),
            format!(
                "PgBouncer {target} has {used} client connections of max_client_conn {max} ({:.0}%). At the limit it refuses new clients with \"no more connections allowed\".",
                ratio * 100.0
            ),
        )
        .annotation("client_connections", used)
        .annotation("max_client_conn", max)
        .annotation("ratio", format!("{ratio:.3}"));
        if ratio >= self.critical_ratio {
            condition = condition.severity(Severity::Critical);
        }
        Evaluation::Holds(vec![condition])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::rules::testing::bouncer;

    #[test]
    fn warns_near_the_limit_and_is_critical_at_it() {
        let rule = build(&toml::Table::new()).unwrap();
        let at = |used| {
            let mut obs = bouncer(vec![]);
            let report = obs.pgbouncer.as_mut().unwrap();
            report.client_connections = Some(used);
            report.max_client_conn = Some(100);
            rule.evaluate("b", &obs)
        };
        assert_eq!(at(50), Evaluation::Holds(vec![]));
        let Evaluation::Holds(c) = at(92) else {
            panic!()
        };
        assert_eq!(c[0].severity, None);
        let Evaluation::Holds(c) = at(99) else {
            panic!()
        };
        assert_eq!(c[0].severity, Some(Severity::Critical));
        assert_eq!(rule.evaluate("b", &bouncer(vec![])), Evaluation::Unknown);
    }
}
