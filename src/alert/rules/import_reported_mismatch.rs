//! `ImportReportedMismatch`: the rows committed match neither what the app reported nor, for a
//! surplus, what it expected — no rows are lost, but the app's numbers cannot be trusted.

use serde::Deserialize;

use super::{RuleSpec, import_common as common};
use crate::alert::{Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::imports::reconcile::Verdict;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ImportReportedMismatch",
    default_severity: Severity::Warning,
    default_for: std::time::Duration::ZERO,
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "a committed import's rows match the expectation but not the app's reported count (mismatch), or exceed the expectation (surplus); param `include_surplus` (true)",
    build,
};

/// Parameters of `[alerts.rules.ImportReportedMismatch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Also fire when more rows are committed than expected.
    pub include_surplus: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            include_surplus: true,
        }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    Ok(Box::new(ImportReportedMismatch {
        params: super::params(table)?,
    }))
}

/// The rule.
#[derive(Debug)]
pub struct ImportReportedMismatch {
    params: Params,
}

impl Rule for ImportReportedMismatch {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![("include_surplus", self.params.include_surplus.to_string())]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        common::per_database(observations, |report| {
            let verdicts: &[Verdict] = if self.params.include_surplus {
                &[Verdict::Mismatch, Verdict::Surplus]
            } else {
                &[Verdict::Mismatch]
            };
            common::with_verdict(report, verdicts)
                .map(|v| {
                    common::condition(
                        report,
                        v,
                        format!(
                            "Import {} count disagrees in {} on {target}",
                            v.verdict.as_str(),
                            v.target_table.as_deref().unwrap_or("?")
                        ),
                        format!(
                            "{}: {} rows committed, app reported {}. {}",
                            common::describe(v),
                            v.committed_rows.unwrap_or(0),
                            v.reported_rows
                                .map(|r| r.to_string())
                                .unwrap_or_else(|| "nothing".into()),
                            v.reason.as_deref().unwrap_or("")
                        ),
                    )
                })
                .collect()
        })
    }
}
