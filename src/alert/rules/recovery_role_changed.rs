//! RecoveryRoleChanged: the server went from primary to standby or back (a promotion or a
//! failover) between two polls.

use std::time::Duration;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "RecoveryRoleChanged",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::from_secs(15 * 60),
    fires_when: "pg_is_in_recovery() changed between two polls (a standby was promoted, or a primary came back as a standby): holds for 5 minutes after the poll that saw it, then stays firing for `keep_firing_for`",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(RecoveryRoleChanged))
}

fn role(in_recovery: bool) -> &'static str {
    if in_recovery { "standby" } else { "primary" }
}

#[derive(Debug)]
struct RecoveryRoleChanged;

impl Rule for RecoveryRoleChanged {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(server) = &observations.server else {
            return Evaluation::Unknown;
        };
        let Some(was) = server.role_changed_from else {
            return Evaluation::Holds(Vec::new());
        };
        let (from, to) = (role(was), role(server.status.in_recovery));
        let timeline = server
            .status
            .timeline
            .map(|t| format!(" It is on timeline {t}."))
            .unwrap_or_default();
        Evaluation::Holds(vec![
            Condition::new(
                format!("Target {target} changed from {from} to {to}"),
                format!(
                    "Target {target} was a {from} at the previous poll and is a {to} now.{timeline} Check that exactly one primary takes writes and that the applications and standbys follow it."
                ),
            )
            .annotation("from", from)
            .annotation("to", to),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::super::postgres_restarted::tests::server;
    use super::*;

    #[test]
    fn names_both_roles() {
        let rule = build(&toml::Table::new()).unwrap();
        assert_eq!(
            rule.evaluate("main", &server(None)),
            Evaluation::Holds(vec![])
        );
        let mut promoted = server(None);
        promoted.server.as_mut().unwrap().role_changed_from = Some(true);
        let Evaluation::Holds(c) = rule.evaluate("main", &promoted) else {
            panic!()
        };
        assert_eq!(c[0].annotations["from"], "standby");
        assert_eq!(c[0].annotations["to"], "primary");
    }
}
