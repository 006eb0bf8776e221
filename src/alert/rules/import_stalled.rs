//! `ImportStalled`: a running import stopped heartbeating or ran past its maximum duration.

use super::{RuleSpec, import_common as common};
use crate::alert::{Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::imports::reconcile::Verdict;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ImportStalled",
    default_severity: Severity::Warning,
    default_for: std::time::Duration::ZERO,
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "a running import has not heartbeated for `[targets.imports] stall_after` (5m) or has run longer than `max_duration` (6h)",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(ImportStalled))
}

/// The rule; the thresholds are the collector's (`[targets.imports]`), as they also decide the
/// verdict shown by the API.
#[derive(Debug)]
pub struct ImportStalled;

impl Rule for ImportStalled {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        common::per_database(observations, |report| {
            common::with_verdict(report, &[Verdict::Stalled])
                .map(|v| {
                    common::condition(
                        report,
                        v,
                        format!(
                            "Import into {} stalled on {target}",
                            v.target_table.as_deref().unwrap_or("?")
                        ),
                        format!(
                            "{} is still {}: {}",
                            common::describe(v),
                            v.status,
                            v.reason.as_deref().unwrap_or("stalled")
                        ),
                    )
                })
                .collect()
        })
    }
}
