//! ChecksumFailures: PostgreSQL found data pages whose checksum does not match — storage or
//! memory corrupted them. Needs data checksums (`initdb --data-checksums`, or
//! `pg_checksums --enable`); without them the counter is absent and the rule stays silent.

use std::time::Duration;

use serde::Deserialize;

use super::postgres_restarted::rfc3339;
use super::{RuleSpec, params, toml_duration};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ChecksumFailures",
    default_severity: Severity::Critical,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a database's last data checksum failure (pg_stat_database.checksum_last_failure) is less than `window` old; one alert per database",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_window", with = "humantime_serde")]
    window: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.window.is_zero() {
        return Err("window = \"0s\" would never fire; use how long a failure stays alerted, e.g. window = \"24h\"".to_owned());
    }
    Ok(Box::new(ChecksumFailures { window: p.window }))
}

#[derive(Debug)]
struct ChecksumFailures {
    window: Duration,
}

impl Rule for ChecksumFailures {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(stats) = &observations.database_stats else {
            return Evaluation::Unknown;
        };
        let window = self.window.as_secs_f64();
        let conditions = stats
            .databases
            .iter()
            .filter_map(|(datname, s)| {
                let failures = s.checksum_failures.filter(|&f| f > 0.0)?;
                let last = s.checksum_last_failure.filter(|&at| s.now - at < window)?;
                Some(
                    Condition::new(
                        format!("{failures} data checksum failure(s) in database {datname} on {target}"),
                        format!(
                            "PostgreSQL read pages of database {datname} on target {target} whose checksum does not match: {failures} failure(s) since the statistics were reset, the last at {}. The storage (or memory) corrupted data; the server log names the files and blocks.",
                            rfc3339(last)
                        ),
                    )
                    .label("datname", datname.clone())
                    .annotation("checksum_failures", failures)
                    .annotation("last_failure", rfc3339(last)),
                )
            })
            .collect();
        Evaluation::Holds(conditions)
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![("window", toml_duration(self.window))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::database_stats::{DatabaseStat, DatabaseStatsReport};

    fn stats(failures: Option<f64>, last: Option<f64>) -> Observations {
        let stat = DatabaseStat {
            deadlocks: 0.0,
            new_deadlocks: Some(0.0),
            checksum_failures: failures,
            checksum_last_failure: last,
            now: 100_000.0,
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
    fn recent_failures_fire_old_ones_and_disabled_checksums_do_not() {
        let rule = build(&toml::Table::new()).unwrap();
        let Evaluation::Holds(c) = rule.evaluate("main", &stats(Some(2.0), Some(99_000.0))) else {
            panic!()
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["datname"], "shop");
        assert_eq!(c[0].annotations["checksum_failures"], "2");
        for quiet in [
            stats(Some(2.0), Some(1.0)),
            stats(None, None),
            stats(Some(0.0), None),
        ] {
            assert_eq!(rule.evaluate("main", &quiet), Evaluation::Holds(vec![]));
        }
    }
}
