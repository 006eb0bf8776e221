//! `RolledBackInserts`: many rows were inserted into a table in one interval, live rows did not
//! rise, and dead rows rose to match — a bulk insert that was rolled back, whether or not the
//! application recorded an import.

use serde::Deserialize;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "RolledBackInserts",
    default_severity: Severity::Warning,
    default_for: std::time::Duration::ZERO,
    default_keep_firing_for: std::time::Duration::from_secs(3600),
    fires_when: "at least `min_rows` (1000) rows inserted into a table in one poll interval were rolled back (inserts without a rise in live rows, with a matching rise in dead rows)",
    build,
};

/// Parameters of `[alerts.rules.RolledBackInserts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Fewer rolled-back rows than this are ignored.
    pub min_rows: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params { min_rows: 1000 }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let params: Params = super::params(table)?;
    if params.min_rows < 1 {
        return Err("min_rows must be at least 1".into());
    }
    Ok(Box::new(RolledBackInserts { params }))
}

/// The rule.
#[derive(Debug)]
pub struct RolledBackInserts {
    params: Params,
}

impl Rule for RolledBackInserts {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![("min_rows", self.params.min_rows.to_string())]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(report) = &observations.tables else {
            return Evaluation::Unknown;
        };
        let conditions = report
            .changes
            .iter()
            .filter(|c| c.rolled_back_inserts() >= self.params.min_rows)
            .map(|c| {
                let n = c.rolled_back_inserts();
                Condition::new(
                    format!("{n} rows inserted into {} were rolled back on {target}", c.table),
                    format!(
                        "Within {:.0}s, {} rows were inserted into {}, live rows went from {} to {} and dead rows from {} to {}: an insert of about {n} rows was rolled back.",
                        c.seconds,
                        c.inserted,
                        c.table,
                        c.live_before,
                        c.live_after,
                        c.dead_before,
                        c.dead_after
                    ),
                )
                .label("datname", report.datname.clone())
                .label("table", c.table.clone())
                .annotation("inserted", c.inserted)
                .annotation("rolled_back", n)
                .annotation("live_before", c.live_before)
                .annotation("live_after", c.live_after)
                .annotation("dead_before", c.dead_before)
                .annotation("dead_after", c.dead_after)
            })
            .collect();
        Evaluation::Holds(conditions)
    }
}
