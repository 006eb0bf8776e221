//! DeadlocksDetected: PostgreSQL broke deadlocks in a database since the previous poll (it
//! cancels one of the transactions involved, whose client gets SQLSTATE 40P01).

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "DeadlocksDetected",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::from_secs(10 * 60),
    fires_when: "pg_stat_database.deadlocks of a database grew by at least `min_deadlocks` since the previous poll; one alert per database, firing for `keep_firing_for`",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_min")]
    min_deadlocks: i64,
}

fn default_min() -> i64 {
    1
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.min_deadlocks < 1 {
        return Err(format!(
            "min_deadlocks = {} would fire without a deadlock; use 1 or more",
            p.min_deadlocks
        ));
    }
    Ok(Box::new(DeadlocksDetected {
        min: p.min_deadlocks,
    }))
}

#[derive(Debug)]
struct DeadlocksDetected {
    min: i64,
}

impl Rule for DeadlocksDetected {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(stats) = &observations.database_stats else {
            return Evaluation::Unknown;
        };
        let conditions = stats
            .databases
            .iter()
            .filter_map(|(datname, s)| {
                let new = s.new_deadlocks.filter(|&n| n >= self.min as f64)?;
                Some(
                    Condition::new(
                        format!("{new} deadlock(s) in database {datname} on {target}"),
                        format!(
                            "PostgreSQL detected {new} deadlock(s) in database {datname} of target {target} since pgvigil's previous poll ({} in all since the statistics were reset) and cancelled one transaction of each. The server log (log_lock_waits, the deadlock DETAIL) names the statements; take locks in the same order everywhere.",
                            s.deadlocks
                        ),
                    )
                    .label("datname", datname.clone())
                    .annotation("new_deadlocks", new)
                    .annotation("deadlocks_total", s.deadlocks),
                )
            })
            .collect();
        Evaluation::Holds(conditions)
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![("min_deadlocks", self.min.to_string())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::database_stats::{DatabaseStat, DatabaseStatsReport};

    fn stats(new: Option<f64>) -> Observations {
        let stat = DatabaseStat {
            deadlocks: 4.0,
            new_deadlocks: new,
            checksum_failures: None,
            checksum_last_failure: None,
            now: 1.0,
        };
        Observations {
            up: true,
            database_stats: Some(DatabaseStatsReport {
                databases: [("shop".to_owned(), stat)].into(),
            }),
            ..Observations::default()
        }
    }

    #[test]
    fn fires_on_new_deadlocks_only() {
        let rule = build(&toml::Table::new()).unwrap();
        let Evaluation::Holds(c) = rule.evaluate("main", &stats(Some(1.0))) else {
            panic!()
        };
        assert_eq!(c[0].labels["datname"], "shop");
        assert_eq!(c[0].annotations["new_deadlocks"], "1");
        for quiet in [stats(Some(0.0)), stats(None)] {
            assert_eq!(rule.evaluate("main", &quiet), Evaluation::Holds(vec![]));
        }
        let table: toml::Table = toml::from_str("min_deadlocks = 0").unwrap();
        assert!(build(&table).unwrap_err().contains("min_deadlocks"));
    }
}
