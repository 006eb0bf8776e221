//! DatabaseGrowth: a database grows faster than a configured rate, measured between two runs
//! of the database_sizes collector (every 5 minutes by default) — a runaway import, a table
//! that bloats, a log table nobody prunes — before the disk fills.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, human_seconds, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "DatabaseGrowth",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(15 * 60),
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a database grew faster than `max_bytes_per_hour` between two runs of the database_sizes collector; one alert per database",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_rate")]
    max_bytes_per_hour: i64,
}

/// 1 GiB per hour.
fn default_rate() -> i64 {
    1 << 30
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.max_bytes_per_hour < 1 {
        return Err(format!(
            "max_bytes_per_hour = {} would fire for any growth; use a rate in bytes per hour, e.g. {} (1 GiB)",
            p.max_bytes_per_hour,
            default_rate()
        ));
    }
    Ok(Box::new(DatabaseGrowth {
        max: p.max_bytes_per_hour,
    }))
}

#[derive(Debug)]
struct DatabaseGrowth {
    max: i64,
}

/// Bytes as MiB with one decimal, for summaries.
fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1_048_576.0)
}

impl Rule for DatabaseGrowth {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(sizes) = &observations.database_sizes else {
            return Evaluation::Unknown;
        };
        let mut conditions = Vec::new();
        for (datname, size) in &sizes.databases {
            let (Some(rate), Some(over)) = (size.growth_bytes_per_hour, size.over_seconds) else {
                continue;
            };
            if rate <= self.max as f64 {
                continue;
            }
            conditions.push(
                Condition::new(
                    format!("Database {datname} on {target} grows by {}/h", mib(rate)),
                    format!(
                        "Database {datname} of target {target} grew by {} in {} to {} ({}/h; limit {}/h). At this rate, check the free disk space and which tables grow (pgvigil_table_size_bytes).",
                        mib(rate * over / 3600.0),
                        human_seconds(over),
                        mib(size.bytes),
                        mib(rate),
                        mib(self.max as f64)
                    ),
                )
                .label("datname", datname.clone())
                .annotation("bytes_per_hour", rate.round())
                .annotation("size_bytes", size.bytes)
                .annotation("measured_over_seconds", over.round()),
            );
        }
        // Databases not measured this time keep their alerts' state.
        let unknown: Vec<crate::alert::Matcher> = sizes
            .unmeasured
            .keys()
            .map(|d| crate::alert::database_matcher(d))
            .collect();
        if unknown.is_empty() {
            Evaluation::Holds(conditions)
        } else {
            Evaluation::HoldsExcept {
                conditions,
                unknown,
            }
        }
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![("max_bytes_per_hour", self.max.to_string())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::database_sizes::{DatabaseSize, DatabaseSizesReport};

    fn sizes(rate: Option<f64>) -> Observations {
        let size = DatabaseSize {
            bytes: 5e9,
            growth_bytes_per_hour: rate,
            over_seconds: rate.map(|_| 300.0),
        };
        Observations {
            up: true,
            database_sizes: Some(DatabaseSizesReport {
                databases: [("shop".to_owned(), size)].into(),
                unmeasured: Default::default(),
            }),
            ..Observations::default()
        }
    }

    #[test]
    fn fires_above_the_rate_only() {
        let rule = build(&toml::Table::new()).unwrap();
        let Evaluation::Holds(c) = rule.evaluate("main", &sizes(Some(2e9))) else {
            panic!()
        };
        assert_eq!(c[0].labels["datname"], "shop");
        assert_eq!(c[0].annotations["bytes_per_hour"], "2000000000");
        for quiet in [sizes(Some(1e6)), sizes(None), sizes(Some(-5e9))] {
            assert_eq!(rule.evaluate("main", &quiet), Evaluation::Holds(vec![]));
        }
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
    }
}
