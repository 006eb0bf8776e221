//! `TableRowsDropped`: a table lost more than a configured share of its rows in one poll
//! interval — a mass `DELETE` or a `TRUNCATE` — confirmed by an exact count where allowed.

use serde::Deserialize;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "TableRowsDropped",
    default_severity: Severity::Critical,
    default_for: std::time::Duration::ZERO,
    default_keep_firing_for: std::time::Duration::from_secs(3600),
    fires_when: "a table lost at least `min_ratio` (0.5) of its rows in one poll interval, ignoring tables below `min_rows` (1000) rows",
    build,
};

/// Parameters of `[alerts.rules.TableRowsDropped]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Share of the rows lost that fires (0..1].
    pub min_ratio: f64,
    /// Tables with fewer rows before the drop are ignored.
    pub min_rows: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_ratio: 0.5,
            min_rows: 1000,
        }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let params: Params = super::params(table)?;
    if !(params.min_ratio > 0.0 && params.min_ratio <= 1.0) {
        return Err("min_ratio must be in (0, 1], e.g. 0.5 for half the rows".into());
    }
    Ok(Box::new(TableRowsDropped { params }))
}

/// The rule.
#[derive(Debug)]
pub struct TableRowsDropped {
    params: Params,
}

impl Rule for TableRowsDropped {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("min_ratio", super::toml_float(self.params.min_ratio)),
            ("min_rows", self.params.min_rows.to_string()),
        ]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        Evaluation::per_database(
            observations,
            |d| d.tables.as_ref(),
            |_, report| {
                report
            .changes
            .iter()
            .filter(|c| c.live_before >= self.params.min_rows)
            .filter(|c| c.lost_ratio() >= self.params.min_ratio)
            .map(|c| {
                let cause = c.drop_cause();
                let confirm = match c.exact_after {
                    Some(n) => format!(" An exact count confirms {n} rows remain."),
                    None => String::new(),
                };
                Condition::new(
                    format!(
                        "{} lost {} of {} rows ({:.1}%) on {target}",
                        c.table,
                        c.lost(),
                        c.live_before,
                        100.0 * c.lost_ratio()
                    ),
                    format!(
                        "Within {:.0}s, {} went from {} to {} rows; {} deletes were counted, so this looks like a {cause}.{confirm}",
                        c.seconds,
                        c.table,
                        c.live_before,
                        c.rows_after(),
                        c.deleted
                    ),
                )
                .label("datname", report.datname.clone())
                .label("table", c.table.clone())
                .annotation("rows_before", c.live_before)
                .annotation("rows_after", c.rows_after())
                .annotation("lost", c.lost())
                .annotation("ratio", format!("{:.4}", c.lost_ratio()))
                .annotation("deleted", c.deleted)
                .annotation("cause", cause)
                .annotation("exact_count", c.exact_after.map(|n| n.to_string()).unwrap_or_else(|| "not allow-listed".into()))
                .annotation("sql", format!("SELECT count(*) FROM {};", c.table))
            })
            .collect()
            },
        )
    }
}
