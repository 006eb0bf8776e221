//! LockWaitsLong: a backend has waited for a heavyweight lock longer than a limit. The alert
//! names what it waits for and the session at the head of the queue (the blocker that does
//! not wait itself: typically a session idle in a transaction, or a long query), because that
//! is the session to deal with.
//!
//! One alert per database (the waiter's), describing its longest waiter. Needs
//! `pg_locks.waitstart` (PostgreSQL 14+): on 13 no wait has an age and the rule stays silent.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, human_seconds, params, toml_duration};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::locks::{LockWaiter, LocksReport};

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "LockWaitsLong",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a backend has waited for a lock for `max_wait` or longer (PostgreSQL 14+: pg_locks.waitstart); names the lock and the blocker at the head of the queue; one alert per database",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    max_wait: Duration,
}

fn default_max_wait() -> Duration {
    Duration::from_secs(60)
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.max_wait.is_zero() {
        return Err(
            "max_wait = \"0s\" would fire for every lock wait, however brief; use a real limit such as \"1m\""
                .to_owned(),
        );
    }
    Ok(Box::new(LockWaitsLong {
        max_wait: p.max_wait,
    }))
}

#[derive(Debug)]
struct LockWaitsLong {
    max_wait: Duration,
}

impl Rule for LockWaitsLong {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(locks) = &observations.locks else {
            return Evaluation::Unknown;
        };
        let limit = self.max_wait.as_secs_f64();
        // The longest waiter of each database past the limit, and how many there are.
        let mut longest: std::collections::BTreeMap<&str, (&LockWaiter, usize)> =
            Default::default();
        for w in &locks.waiters {
            let Some(wait) = w.wait_seconds.filter(|s| *s >= limit) else {
                continue;
            };
            let entry = longest.entry(w.datname.as_str()).or_insert((w, 0));
            entry.1 += 1;
            if wait > entry.0.wait_seconds.unwrap_or(0.0) {
                entry.0 = w;
            }
        }
        let conditions = longest
            .into_values()
            .map(|(w, n)| self.condition(target, locks, w, n));
        Evaluation::Holds(conditions.collect())
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![("max_wait", toml_duration(self.max_wait))]
    }
}

impl LockWaitsLong {
    fn condition(
        &self,
        target: &str,
        locks: &LocksReport,
        w: &LockWaiter,
        waiters: usize,
    ) -> Condition {
        let wait = w.wait_seconds.unwrap_or(0.0);
        let what = match &w.relation {
            Some(rel) => format!("{} on {} {rel}", w.mode, w.locktype),
            None => format!("{} on a {}", w.mode, w.locktype),
        };
        let roots = locks.root_blockers(w);
        let head = roots.first().map(|pid| blocker(locks, *pid));
        let session = locks.sessions.get(&w.pid);
        let query = session.map(|s| s.query.as_str()).unwrap_or_default();
        let mut description = format!(
            "Session pid {} on database {} of target {target} has waited {} for {what} (limit {}); {waiters} session(s) there wait longer than the limit, {} in all on the target. Its statement: {query}",
            w.pid,
            w.datname,
            human_seconds(wait),
            humantime::format_duration(self.max_wait),
            locks.waiting_backends,
        );
        if let Some(head) = &head {
            description.push_str(&format!(
                ". At the head of the queue: {}. Waits for pids {:?}.",
                head.text, w.blocked_by
            ));
        }
        let c = Condition::new(
            format!(
                "{target}/{}: pid {} waiting {} for {what}",
                w.datname,
                w.pid,
                human_seconds(wait)
            ),
            description,
        )
        .label("datname", w.datname.clone())
        .annotation("pid", w.pid)
        .annotation("mode", &w.mode)
        .annotation("locktype", &w.locktype)
        .annotation("relation", w.relation.as_deref().unwrap_or(""))
        .annotation("wait_seconds", wait.round())
        .annotation("query", query)
        .annotation("waiting_backends", locks.waiting_backends)
        .annotation("blocking_pids", pids(&w.blocked_by))
        .annotation("root_blocker_pids", pids(&roots));
        with_blocker(c, head)
    }
}

/// The head of a queue, as the alerts (LockWaitsLong, LockQueue) tell it.
pub(super) struct Blocker {
    pub(super) pid: i32,
    pub(super) state: String,
    pub(super) application_name: String,
    /// Its transaction's age (for a prepared transaction: since it was prepared).
    pub(super) xact_age: f64,
    pub(super) query: String,
    pub(super) text: String,
    /// How to end it: the statement to run.
    pub(super) end: String,
    /// A prepared transaction's gid.
    pub(super) gid: Option<String>,
}

pub(super) fn blocker(locks: &LocksReport, pid: i32) -> Blocker {
    let unknown = |text: String, end: String| Blocker {
        pid,
        state: String::new(),
        application_name: String::new(),
        xact_age: 0.0,
        query: String::new(),
        text,
        end,
        gid: None,
    };
    if pid == 0 {
        let Some(p) = locks.oldest_prepared() else {
            let mut b = unknown(
                "a prepared transaction (pid 0; see pg_prepared_xacts, COMMIT PREPARED or ROLLBACK PREPARED)".into(),
                "end the prepared transaction at the head of the queue (SELECT gid FROM pg_prepared_xacts; then COMMIT PREPARED or ROLLBACK PREPARED with its gid)".into(),
            );
            b.state = "prepared".into();
            return b;
        };
        let age = p.age_seconds.unwrap_or(0.0).max(0.0);
        let others = match locks.prepared.len() {
            1 => String::new(),
            n => format!(", the oldest of {n} holding these locks"),
        };
        return Blocker {
            pid,
            state: "prepared".into(),
            application_name: String::new(),
            xact_age: age,
            query: String::new(),
            text: format!(
                "prepared transaction '{}' (pid 0: no session; owner {}, database {}, prepared {} ago{others})",
                p.gid,
                p.owner,
                p.database,
                human_seconds(age)
            ),
            end: format!("end the prepared transaction: {}", p.fix()),
            gid: Some(p.gid.clone()),
        };
    }
    let Some(s) = locks.sessions.get(&pid) else {
        return unknown(
            format!("pid {pid} (gone before pgvigil could read its session)"),
            format!("end the blocker if it can go: SELECT pg_terminate_backend({pid})"),
        );
    };
    let xact_age = s.xact_age_seconds.unwrap_or(0.0).max(0.0);
    Blocker {
        pid,
        state: s.state.clone(),
        application_name: s.application_name.clone(),
        xact_age,
        query: s.query.clone(),
        text: format!(
            "pid {pid} (user {}, application \"{}\", {}, transaction open {}), last statement: {}",
            s.usename,
            s.application_name,
            s.state,
            human_seconds(xact_age),
            s.query
        ),
        end: format!("end the blocker if it can go: SELECT pg_terminate_backend({pid})"),
        gid: None,
    }
}

/// The head of the queue's annotations (`blocker_pid`, `blocker_state`, ...; `blocker_gid`
/// for a prepared transaction), shared by both lock alerts.
pub(super) fn with_blocker(mut c: Condition, head: Option<Blocker>) -> Condition {
    if let Some(head) = head {
        c = c
            .annotation("blocker_pid", head.pid)
            .annotation("blocker_state", head.state)
            .annotation("blocker_application_name", head.application_name)
            .annotation("blocker_transaction_age_seconds", head.xact_age.round())
            .annotation("blocker_query", head.query);
        if let Some(gid) = head.gid {
            c = c.annotation("blocker_gid", gid);
        }
    }
    c
}

pub(super) fn pids(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::locks::LockSession;

    fn waiter(pid: i32, datname: &str, wait: Option<f64>, blocked_by: &[i32]) -> LockWaiter {
        LockWaiter {
            pid,
            datname: datname.into(),
            locktype: "relation".into(),
            mode: "AccessExclusiveLock".into(),
            relation: Some("contacts".into()),
            wait_seconds: wait,
            blocked_by: blocked_by.to_vec(),
        }
    }

    fn obs(waiters: Vec<LockWaiter>) -> Observations {
        let idle = LockSession {
            pid: 10,
            datname: "shop".into(),
            usename: "app".into(),
            application_name: "importer".into(),
            state: "idle in transaction".into(),
            xact_age_seconds: Some(300.4),
            query: "SELECT * FROM contacts".into(),
        };
        Observations {
            up: true,
            locks: Some(LocksReport {
                waiting_backends: waiters.len() as i64,
                waiters,
                sessions: [(10, idle)].into(),
                ..LocksReport::default()
            }),
            ..Observations::default()
        }
    }

    #[test]
    fn the_longest_waiter_per_database_names_the_head_of_its_queue() {
        let table: toml::Table = toml::from_str("max_wait = \"30s\"").unwrap();
        let rule = build(&table).unwrap();
        let o = obs(vec![
            waiter(20, "shop", Some(95.0), &[10]),
            waiter(30, "shop", Some(40.0), &[20]),
            waiter(40, "shop", Some(5.0), &[20]),
            waiter(50, "crm", Some(10.0), &[0]),
        ]);
        let Evaluation::Holds(c) = rule.evaluate("main", &o) else {
            panic!()
        };
        assert_eq!(c.len(), 1, "{c:?}");
        let c = &c[0];
        assert_eq!(c.labels["datname"], "shop");
        assert_eq!(c.annotations["pid"], "20");
        assert_eq!(c.annotations["relation"], "contacts");
        assert_eq!(c.annotations["blocker_pid"], "10");
        assert_eq!(c.annotations["blocker_state"], "idle in transaction");
        assert_eq!(c.annotations["blocker_transaction_age_seconds"], "300");
        assert_eq!(c.annotations["waiting_backends"], "4");
        assert!(
            c.annotations["description"].contains("2 session(s) there wait longer"),
            "{}",
            c.annotations["description"]
        );
        // The second waiter's root is the idle session too, through the first.
        let o = obs(vec![
            waiter(30, "shop", Some(40.0), &[20]),
            waiter(20, "shop", Some(9.0), &[10]),
        ]);
        let Evaluation::Holds(c) = rule.evaluate("main", &o) else {
            panic!()
        };
        assert_eq!(c[0].annotations["root_blocker_pids"], "10");
    }

    #[test]
    fn short_waits_unknown_ages_and_prepared_blockers() {
        let rule = build(&toml::Table::new()).unwrap();
        let o = obs(vec![
            waiter(20, "shop", Some(59.0), &[10]),
            waiter(21, "shop", None, &[10]),
        ]);
        assert!(matches!(rule.evaluate("main", &o), Evaluation::Holds(c) if c.is_empty()));
        let o = obs(vec![waiter(20, "crm", Some(61.0), &[0])]);
        let Evaluation::Holds(c) = rule.evaluate("main", &o) else {
            panic!()
        };
        assert_eq!(c[0].annotations["blocker_state"], "prepared");
        assert!(c[0].annotations["description"].contains("prepared transaction"));
        assert!(matches!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        ));
    }

    #[test]
    fn zero_limit_is_rejected() {
        let table: toml::Table = toml::from_str("max_wait = \"0s\"").unwrap();
        assert!(build(&table).unwrap_err().contains("max_wait"));
    }
}
