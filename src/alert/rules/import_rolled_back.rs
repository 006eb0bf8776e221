//! `ImportRolledBack`: the audit row says an import is running, but its transaction aborted.

use super::{RuleSpec, import_common as common};
use crate::alert::{Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::imports::reconcile::Verdict;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ImportRolledBack",
    default_severity: Severity::Warning,
    default_for: std::time::Duration::ZERO,
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "a running import's recorded transaction (`xact_id`) has aborted (`pg_xact_status`) while its audit row still says running",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(ImportRolledBack))
}

/// The rule.
#[derive(Debug)]
pub struct ImportRolledBack;

impl Rule for ImportRolledBack {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        common::per_database(observations, |report| {
            common::with_verdict(report, &[Verdict::Aborted])
                .map(|v| {
                    common::condition(
                        report,
                        v,
                        format!(
                            "Import into {} was rolled back on {target}",
                            v.target_table.as_deref().unwrap_or("?")
                        ),
                        format!(
                            "{}: {}. None of its {} rows are committed.",
                            common::describe(v),
                            v.reason.as_deref().unwrap_or("its transaction aborted"),
                            v.expected_rows.unwrap_or(0)
                        ),
                    )
                })
                .collect()
        })
    }
}
