//! IdleInTransaction: a session sits idle inside a transaction that holds uncommitted writes —
//! the signature of an import whose COMMIT never came.
//!
//! One alert per database, not per session: a `pid` label would make a new alert identity for
//! every offending session (unbounded in Alertmanager over time, and an application that
//! leaves a fresh idle session behind every few minutes would flap between resolved and
//! firing). The annotations name the worst session (pid, user, application, last statement)
//! and list the pids of the others, which is what on-call needs to act.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, human_seconds, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::activity::Session;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "IdleInTransaction",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "a session has sat idle in a transaction holding uncommitted writes longer than `max_idle` (any idle transaction if `only_with_writes = false`); one alert per database",
    build,
};

/// Most pids listed in the annotation.
const MAX_PIDS: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_max_idle", with = "humantime_serde")]
    max_idle: Duration,
    #[serde(default = "default_only_with_writes")]
    only_with_writes: bool,
}

fn default_max_idle() -> Duration {
    Duration::from_secs(120)
}

fn default_only_with_writes() -> bool {
    true
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    Ok(Box::new(IdleInTransaction {
        max_idle: p.max_idle,
        only_with_writes: p.only_with_writes,
    }))
}

#[derive(Debug)]
struct IdleInTransaction {
    max_idle: Duration,
    only_with_writes: bool,
}

impl Rule for IdleInTransaction {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(activity) = &observations.activity else {
            return Evaluation::Unknown;
        };
        let limit = self.max_idle.as_secs_f64();
        let offending = activity.open_transactions.iter().filter(|s| {
            s.idle_in_transaction()
                && (s.holds_writes || !self.only_with_writes)
                && s.state_age_seconds >= limit
        });
        Evaluation::Holds(
            by_database(offending)
                .into_iter()
                .map(|sessions| self.condition(target, &sessions))
                .collect(),
        )
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "max_idle",
                format!("\"{}\"", humantime::format_duration(self.max_idle)),
            ),
            ("only_with_writes", self.only_with_writes.to_string()),
        ]
    }
}

impl IdleInTransaction {
    fn condition(&self, target: &str, sessions: &[&Session]) -> Condition {
        let worst = sessions
            .iter()
            .max_by(|a, b| a.state_age_seconds.total_cmp(&b.state_age_seconds))
            .expect("by_database yields non-empty groups");
        let writes = if worst.holds_writes {
            "holding uncommitted writes"
        } else {
            "without writes"
        };
        let others = if sessions.len() > 1 {
            format!(" ({} sessions in all)", sessions.len())
        } else {
            String::new()
        };
        Condition::new(
            format!(
                "{target}/{}: session {} idle in transaction for {}{others}",
                worst.datname,
                worst.pid,
                human_seconds(worst.state_age_seconds)
            ),
            format!(
                "Session pid {} (user {}, application \"{}\") on database {} of target {target} has been idle in a transaction {writes} for {} (transaction open for {}); limit {}. Until it commits, its rows are invisible to everyone else and are lost if the session ends. Last statement: {}",
                worst.pid,
                worst.usename,
                worst.application_name,
                worst.datname,
                human_seconds(worst.state_age_seconds),
                human_seconds(worst.xact_age_seconds),
                humantime::format_duration(self.max_idle),
                worst.query,
            ),
        )
        .label("datname", worst.datname.clone())
        .annotation("pid", worst.pid)
        .annotation("usename", &worst.usename)
        .annotation("application_name", &worst.application_name)
        .annotation("idle_seconds", worst.state_age_seconds.round())
        .annotation("transaction_age_seconds", worst.xact_age_seconds.round())
        .annotation("holds_writes", worst.holds_writes)
        .annotation("query", &worst.query)
        .annotation("sessions", sessions.len())
        .annotation("pids", pid_list(sessions))
    }
}

/// Group sessions by database, in a stable order.
pub(super) fn by_database<'a>(
    sessions: impl Iterator<Item = &'a Session>,
) -> Vec<Vec<&'a Session>> {
    let mut groups: std::collections::BTreeMap<&str, Vec<&Session>> = Default::default();
    for s in sessions {
        groups.entry(s.datname.as_str()).or_default().push(s);
    }
    groups.into_values().collect()
}

/// The pids, comma-separated, at most [`MAX_PIDS`].
pub(super) fn pid_list(sessions: &[&Session]) -> String {
    let mut pids: Vec<String> = sessions
        .iter()
        .take(MAX_PIDS)
        .map(|s| s.pid.to_string())
        .collect();
    if sessions.len() > MAX_PIDS {
        pids.push(format!("and {} more", sessions.len() - MAX_PIDS));
    }
    pids.join(", ")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::collect::activity::ActivityReport;

    pub(crate) fn session(pid: i32, datname: &str, state: &str, age: f64, writes: bool) -> Session {
        Session {
            pid,
            datname: datname.into(),
            usename: "app".into(),
            application_name: "importer".into(),
            state: state.into(),
            xact_age_seconds: age + 1.0,
            state_age_seconds: age,
            holds_writes: writes,
            query: "INSERT INTO contacts VALUES ($1)".into(),
        }
    }

    pub(crate) fn obs(sessions: Vec<Session>) -> Observations {
        Observations {
            up: true,
            activity: Some(ActivityReport {
                open_transactions: sessions,
                ..ActivityReport::default()
            }),
            ..Observations::default()
        }
    }

    fn conditions(rule: &dyn Rule, o: &Observations) -> Vec<Condition> {
        match rule.evaluate("main", o) {
            Evaluation::Holds(c) => c,
            other => panic!("known: {other:?}"),
        }
    }

    #[test]
    fn one_alert_per_database_naming_the_worst_session() {
        let table: toml::Table = toml::from_str("max_idle = \"1m\"").unwrap();
        let rule = build(&table).unwrap();
        let o = obs(vec![
            session(1, "shop", "idle in transaction", 61.0, true),
            session(2, "shop", "idle in transaction", 300.0, true),
            session(3, "shop", "idle in transaction", 30.0, true),
            session(4, "crm", "idle in transaction", 900.0, false),
            session(5, "crm", "active", 900.0, true),
        ]);
        let c = conditions(&*rule, &o);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].labels["datname"], "shop");
        assert_eq!(c[0].annotations["pid"], "2");
        assert_eq!(c[0].annotations["pids"], "1, 2");
        assert_eq!(c[0].annotations["sessions"], "2");
        assert!(c[0].annotations["description"].contains("INSERT INTO contacts"));
        assert!(!c[0].labels.contains_key("pid"));
    }

    #[test]
    fn without_writes_only_when_asked() {
        let table: toml::Table =
            toml::from_str("max_idle = \"10s\"\nonly_with_writes = false").unwrap();
        let rule = build(&table).unwrap();
        let o = obs(vec![session(
            4,
            "crm",
            "idle in transaction (aborted)",
            11.0,
            false,
        )]);
        assert_eq!(conditions(&*rule, &o).len(), 1);
        let rule = build(&toml::Table::new()).unwrap();
        assert!(conditions(&*rule, &o).is_empty());
    }

    #[test]
    fn unknown_when_activity_is_missing_and_bad_durations_explained() {
        let rule = build(&toml::Table::new()).unwrap();
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
        let table: toml::Table = toml::from_str("max_idle = \"soon\"").unwrap();
        assert!(build(&table).is_err());
        let table: toml::Table = toml::from_str("max_idle = -5").unwrap();
        assert!(build(&table).is_err());
    }
}
