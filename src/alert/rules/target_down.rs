//! PgvigilTargetDown: pgvigil cannot connect to or poll a target.

use std::time::Duration;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "PgvigilTargetDown",
    default_severity: Severity::Critical,
    default_for: Duration::from_secs(60),
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "pgvigil cannot connect to or poll the target (every other alert of the target is then on hold)",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(TargetDown))
}

#[derive(Debug)]
struct TargetDown;

impl Rule for TargetDown {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        if observations.up {
            return Evaluation::Holds(Vec::new());
        }
        let reason = observations
            .down_reason
            .as_deref()
            .unwrap_or("no error recorded");
        Evaluation::Holds(vec![
            Condition::new(
                format!("pgvigil cannot reach target {target}"),
                format!(
                    "pgvigil cannot connect to or poll target {target}: {reason}. Its metrics are missing and its other alerts are on hold until it is back."
                ),
            )
            .annotation("error", reason),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_only_while_down() {
        let rule = build(&toml::Table::new()).unwrap();
        let down = Observations {
            down_reason: Some("connection refused".into()),
            ..Observations::default()
        };
        let Evaluation::Holds(c) = rule.evaluate("main", &down) else {
            panic!("down is known")
        };
        assert_eq!(c.len(), 1);
        assert!(c[0].annotations["description"].contains("connection refused"));
        assert!(c[0].labels.is_empty());
        let up = Observations {
            up: true,
            ..Observations::default()
        };
        assert_eq!(rule.evaluate("main", &up), Evaluation::Holds(vec![]));
    }
}
