//! `RolledBackInserts`: rows were inserted into a table between two visits that neither stayed
//! live nor were deleted — a bulk insert that was rolled back, whether or not the application
//! recorded an import, and whether or not a vacuum removed its dead rows before pgvigil looked
//! (see `crate::collect::tables::changes` for the arithmetic).

use serde::Deserialize;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::tables::changes::TableChange;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "RolledBackInserts",
    default_severity: Severity::Warning,
    default_for: std::time::Duration::ZERO,
    default_keep_firing_for: std::time::Duration::from_secs(3600),
    fires_when: "at least `min_rows` (1000) rows inserted into a table between two visits were rolled back: inserts that neither stayed live nor were deleted, shown by the dead rows they left or, after a vacuum removed those, by the live rows it re-counted; after a vacuum or analyze the estimate must also clear `reestimate_tolerance` (0.02) of the table's rows",
    build,
};

/// Parameters of `[alerts.rules.RolledBackInserts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Fewer rolled-back rows than this are ignored.
    pub min_rows: i64,
    /// After a vacuum or analyze re-counted a table, its live rows may be off by this share
    /// of them; a rollback must be larger than that to fire.
    pub reestimate_tolerance: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_rows: 1000,
            reestimate_tolerance: 0.02,
        }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let params: Params = super::params(table)?;
    if params.min_rows < 1 {
        return Err("min_rows must be at least 1".into());
    }
    if !(0.0..1.0).contains(&params.reestimate_tolerance) {
        return Err(
            "reestimate_tolerance must be between 0 and 1, e.g. 0.02 for 2% of a table's rows"
                .into(),
        );
    }
    Ok(Box::new(RolledBackInserts { params }))
}

/// The rule.
#[derive(Debug)]
pub struct RolledBackInserts {
    params: Params,
}

impl RolledBackInserts {
    fn fires(&self, c: &TableChange) -> bool {
        let n = c.rolled_back_inserts();
        n >= self.params.min_rows
            && n - c.reestimate_noise(self.params.reestimate_tolerance) >= self.params.min_rows
    }
}

/// What the counters say happened, for the description.
fn evidence(c: &TableChange) -> String {
    if c.vacuumed {
        format!(
            "a vacuum in between removed the dead rows and re-counted the live ones ({} → {})",
            c.live_before, c.live_after
        )
    } else {
        format!(
            "live rows went from {} to {} and dead rows from {} to {}",
            c.live_before, c.live_after, c.dead_before, c.dead_after
        )
    }
}

impl Rule for RolledBackInserts {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("min_rows", self.params.min_rows.to_string()),
            (
                "reestimate_tolerance",
                super::toml_float(self.params.reestimate_tolerance),
            ),
        ]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        Evaluation::per_database(
            observations,
            |d| d.tables.as_ref(),
            |datname, report| {
                report
                    .changes
                    .iter()
                    .filter(|c| self.fires(c))
                    .map(|c| {
                        let n = c.rolled_back_inserts();
                        Condition::new(
                            format!("{n} rows inserted into {} were rolled back on {target}/{datname}", c.table),
                            format!(
                                "Within {:.0}s, {} rows were inserted into {} and {} deleted; {}: an insert of about {n} rows was rolled back.",
                                c.seconds, c.inserted, c.table, c.deleted, evidence(c)
                            ),
                        )
                        .label("datname", datname)
                        .label("table", c.table.clone())
                        .annotation("inserted", c.inserted)
                        .annotation("deleted", c.deleted)
                        .annotation("rolled_back", n)
                        .annotation("live_before", c.live_before)
                        .annotation("live_after", c.live_after)
                        .annotation("dead_before", c.dead_before)
                        .annotation("dead_after", c.dead_after)
                        .annotation("vacuumed", c.vacuumed)
                        .annotation("analyzed", c.analyzed)
                    })
                    .collect()
            },
        )
    }
}
