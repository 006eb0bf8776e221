//! LongRunningTransaction: a transaction has been open longer than a limit, whatever it is
//! doing. Long transactions hold back vacuum (dead rows pile up) and hold their locks.
//!
//! Labelled by database only, like IdleInTransaction and for the same reason.

use std::time::Duration;

use serde::Deserialize;

use super::idle_in_transaction::{by_database, pid_list};
use super::{RuleSpec, human_seconds, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "LongRunningTransaction",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "a client transaction has been open longer than `max_age` (sessions whose application_name is in `ignore_application_names` excepted); one alert per database",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_max_age", with = "humantime_serde")]
    max_age: Duration,
    #[serde(default)]
    ignore_application_names: Vec<String>,
}

fn default_max_age() -> Duration {
    Duration::from_secs(30 * 60)
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.max_age.is_zero() {
        return Err(
            "max_age = \"0s\" would fire for every transaction; use a real limit such as \"30m\""
                .to_owned(),
        );
    }
    Ok(Box::new(LongRunningTransaction {
        max_age: p.max_age,
        ignore: p.ignore_application_names,
    }))
}

#[derive(Debug)]
struct LongRunningTransaction {
    max_age: Duration,
    ignore: Vec<String>,
}

impl Rule for LongRunningTransaction {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(activity) = &observations.activity else {
            return Evaluation::Unknown;
        };
        let limit = self.max_age.as_secs_f64();
        let offending = activity
            .open_transactions
            .iter()
            .filter(|s| s.xact_age_seconds >= limit && !self.ignore.contains(&s.application_name));
        let conditions = by_database(offending).into_iter().map(|sessions| {
            let oldest = sessions
                .iter()
                .max_by(|a, b| a.xact_age_seconds.total_cmp(&b.xact_age_seconds))
                .expect("non-empty group");
            Condition::new(
                format!(
                    "{target}/{}: transaction open for {} (pid {})",
                    oldest.datname,
                    human_seconds(oldest.xact_age_seconds),
                    oldest.pid
                ),
                format!(
                    "Session pid {} (user {}, application \"{}\", state {}) on database {} of target {target} has had a transaction open for {}; limit {}. It holds back vacuum and keeps its locks. Last statement: {}",
                    oldest.pid,
                    oldest.usename,
                    oldest.application_name,
                    oldest.state,
                    oldest.datname,
                    human_seconds(oldest.xact_age_seconds),
                    humantime::format_duration(self.max_age),
                    oldest.query
                ),
            )
            .label("datname", oldest.datname.clone())
            .annotation("pid", oldest.pid)
            .annotation("usename", &oldest.usename)
            .annotation("application_name", &oldest.application_name)
            .annotation("state", &oldest.state)
            .annotation("transaction_age_seconds", oldest.xact_age_seconds.round())
            .annotation("query", &oldest.query)
            .annotation("sessions", sessions.len())
            .annotation("pids", pid_list(&sessions))
        });
        Evaluation::Holds(conditions.collect())
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "max_age",
                format!("\"{}\"", humantime::format_duration(self.max_age)),
            ),
            ("ignore_application_names", format!("{:?}", self.ignore)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::idle_in_transaction::tests::{obs, session};
    use super::*;

    #[test]
    fn any_state_counts_and_ignored_applications_do_not() {
        let table: toml::Table =
            toml::from_str("max_age = \"1m\"\nignore_application_names = [\"pg_dump\"]").unwrap();
        let rule = build(&table).unwrap();
        let mut dump = session(9, "shop", "active", 4000.0, false);
        dump.application_name = "pg_dump".into();
        let o = obs(vec![
            session(1, "shop", "active", 120.0, false),
            session(2, "shop", "idle in transaction", 10.0, true),
            dump,
        ]);
        let Evaluation::Holds(c) = rule.evaluate("main", &o) else {
            panic!()
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].annotations["pid"], "1");
        assert_eq!(c[0].labels["datname"], "shop");
    }

    #[test]
    fn zero_limit_is_rejected() {
        let table: toml::Table = toml::from_str("max_age = \"0s\"").unwrap();
        assert!(build(&table).unwrap_err().contains("max_age"));
    }
}
