//! LockQueue: a session waits for a strong lock on a relation (ACCESS EXCLUSIVE, EXCLUSIVE,
//! SHARE ROW EXCLUSIVE, SHARE — typically a migration's DDL) and other sessions queue behind
//! it. PostgreSQL grants locks in order, so every later reader and writer of the table waits
//! for the DDL, which waits for whatever holds the table (a session idle in a transaction, a
//! long query, `pg_dump`): one migration without `lock_timeout` stops the application.
//!
//! One alert per database and relation, describing the strong waiter with the most sessions
//! behind it. The wait is judged by the server's own clock (`pg_locks.waitstart`, 14+), so the
//! alert fires at the first poll after the DDL has waited `min_wait` (the `locks` collector
//! polls every 5 s by default). On PostgreSQL 13, which records no wait start, the queue alone
//! decides; use the rule's `for` there to ask for persistence.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::lock_waits_long::{Blocker, blocker, pids, with_blocker};
use super::{RuleSpec, human_seconds, params, toml_duration};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::locks::chains::waits_for_strong_lock;
use crate::collect::locks::{LockWaiter, LocksReport};

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "LockQueue",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a session has waited `min_wait` or longer for a strong lock on a relation (ACCESS EXCLUSIVE, EXCLUSIVE, SHARE ROW EXCLUSIVE, SHARE: typically a migration) and `min_queued` or more sessions queue behind it; names the waiting statement, the blocker at the head of the chain and the fix; one alert per database and relation",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_min_queued")]
    min_queued: usize,
    #[serde(default = "default_min_wait", with = "humantime_serde")]
    min_wait: Duration,
}

fn default_min_queued() -> usize {
    3
}

fn default_min_wait() -> Duration {
    Duration::from_secs(5)
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.min_queued == 0 {
        return Err(
            "min_queued = 0 would fire for any DDL waiting with nobody behind it (LockWaitsLong covers long waits); use 1 or more, such as 3"
                .to_owned(),
        );
    }
    Ok(Box::new(LockQueue {
        min_queued: p.min_queued,
        min_wait: p.min_wait,
    }))
}

#[derive(Debug)]
struct LockQueue {
    min_queued: usize,
    min_wait: Duration,
}

impl Rule for LockQueue {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(locks) = &observations.locks else {
            return Evaluation::Unknown;
        };
        let limit = self.min_wait.as_secs_f64();
        // Per database and relation, the strong waiter with the most sessions behind it.
        let mut worst: BTreeMap<(&str, &str), (&LockWaiter, Vec<i32>)> = BTreeMap::new();
        for w in locks.waiters.iter().filter(|w| waits_for_strong_lock(w)) {
            if w.wait_seconds.is_some_and(|s| s < limit) {
                continue;
            }
            let behind: Vec<i32> = locks.queued_behind(w.pid).into_iter().collect();
            if behind.len() < self.min_queued {
                continue;
            }
            let key = (w.datname.as_str(), w.relation.as_deref().unwrap_or(""));
            let entry = worst.entry(key).or_insert((w, vec![]));
            if behind.len() > entry.1.len() {
                *entry = (w, behind);
            }
        }
        let conditions = worst
            .into_values()
            .map(|(w, behind)| condition(target, locks, w, &behind));
        Evaluation::Holds(conditions.collect())
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("min_queued", self.min_queued.to_string()),
            ("min_wait", toml_duration(self.min_wait)),
        ]
    }
}

/// The head of `w`'s chain to name: of its root blockers, the one in the oldest transaction.
fn head(locks: &LocksReport, w: &LockWaiter) -> Option<Blocker> {
    locks
        .root_blockers(w)
        .into_iter()
        .map(|pid| blocker(locks, pid))
        .max_by(|a, b| a.xact_age.total_cmp(&b.xact_age))
}

/// What to do, for the blocker at the head (if known).
fn fix(head: Option<&Blocker>) -> String {
    let end = head.map_or(
        "end the session at the head of the queue (pg_terminate_backend)",
        |h| h.end.as_str(),
    );
    format!(
        "Now: cancel the migration (SELECT pg_cancel_backend(<its pid>)) to release the queue, or {end}. For good: run migrations with SET lock_timeout = '5s' (and retry) so a DDL gives up instead of queueing everyone behind it."
    )
}

/// At most this many pids are listed in `queued_pids` (the count is `queued`).
const LISTED_PIDS: usize = 20;

fn condition(target: &str, locks: &LocksReport, w: &LockWaiter, behind: &[i32]) -> Condition {
    let wait = w.wait_seconds.unwrap_or(0.0);
    let relation = w.relation.as_deref().unwrap_or("");
    let queued_wait = behind
        .iter()
        .filter_map(|pid| locks.waiters.iter().find(|x| x.pid == *pid)?.wait_seconds)
        .fold(0.0_f64, f64::max);
    // The whole queue is counted (LocksReport::queues), not only the examined waiters.
    let count = behind.len();
    let head = head(locks, w);
    let query = locks
        .sessions
        .get(&w.pid)
        .map(|s| s.query.as_str())
        .unwrap_or_default();
    let fix = fix(head.as_ref());
    let description = format!(
        "Session pid {} on database {} of target {target} has waited {} for {} on {relation}, and {count} session(s) queue behind it (the longest for {}): nobody can use {relation} until it gets its lock. Its statement: {query}. It waits for {}. {fix}",
        w.pid,
        w.datname,
        human_seconds(wait),
        w.mode,
        human_seconds(queued_wait),
        head.as_ref()
            .map_or_else(|| format!("pids {:?}", w.blocked_by), |h| h.text.clone()),
    );
    let c = Condition::new(
        format!(
            "{target}/{}: {count} session(s) queued behind pid {} waiting {} for {} on {relation}",
            w.datname,
            w.pid,
            human_seconds(wait),
            w.mode
        ),
        description,
    )
    .label("datname", w.datname.clone())
    .label("relation", relation)
    .annotation("pid", w.pid)
    .annotation("mode", &w.mode)
    .annotation("query", query)
    .annotation("wait_seconds", wait.round())
    .annotation("queued", behind.len())
    .annotation(
        "queued_pids",
        pids(&behind[..behind.len().min(LISTED_PIDS)]),
    )
    .annotation("queued_max_wait_seconds", queued_wait.round())
    .annotation("waiting_backends", locks.waiting_backends)
    .annotation("blocking_pids", pids(&w.blocked_by))
    .annotation("fix", fix);
    with_blocker(c, head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::locks::{LockSession, PreparedXact};

    fn waiter(pid: i32, mode: &str, wait: Option<f64>, blocked_by: &[i32]) -> LockWaiter {
        LockWaiter {
            pid,
            datname: "shop".into(),
            locktype: "relation".into(),
            mode: mode.into(),
            relation: Some("contacts".into()),
            wait_seconds: wait,
            blocked_by: blocked_by.to_vec(),
        }
    }

    /// The migration (20) behind the idle session (10), `readers` readers behind it.
    fn queue(readers: i32, migration_wait: Option<f64>) -> Observations {
        let mut waiters = vec![waiter(20, "AccessExclusiveLock", migration_wait, &[10])];
        waiters.extend((0..readers).map(|i| waiter(30 + i, "AccessShareLock", Some(4.0), &[20])));
        let idle = LockSession {
            pid: 10,
            datname: "shop".into(),
            usename: "app".into(),
            application_name: "importer".into(),
            state: "idle in transaction".into(),
            xact_age_seconds: Some(120.4),
            query: "SELECT * FROM contacts".into(),
        };
        let migration = LockSession {
            pid: 20,
            query: "ALTER TABLE contacts ADD COLUMN email text".into(),
            ..idle.clone()
        };
        Observations {
            up: true,
            locks: Some(LocksReport {
                waiting_backends: waiters.len() as i64,
                waiters,
                sessions: [(10, idle), (20, migration)].into(),
                ..LocksReport::default()
            }),
            ..Observations::default()
        }
    }

    fn holds(rule: &dyn Rule, o: &Observations) -> Vec<Condition> {
        match rule.evaluate("main", o) {
            Evaluation::Holds(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_migration_with_readers_behind_it_names_the_blocker_and_the_fix() {
        let rule = build(&toml::Table::new()).unwrap();
        let c = holds(rule.as_ref(), &queue(5, Some(6.0)));
        assert_eq!(c.len(), 1, "{c:?}");
        let c = &c[0];
        assert_eq!(c.labels["datname"], "shop");
        assert_eq!(c.labels["relation"], "contacts");
        assert_eq!(c.annotations["pid"], "20");
        assert_eq!(c.annotations["queued"], "5");
        assert_eq!(c.annotations["queued_max_wait_seconds"], "4");
        assert_eq!(c.annotations["wait_seconds"], "6");
        assert_eq!(c.annotations["blocker_pid"], "10");
        assert_eq!(c.annotations["blocker_state"], "idle in transaction");
        assert_eq!(c.annotations["blocker_application_name"], "importer");
        assert_eq!(c.annotations["blocker_transaction_age_seconds"], "120");
        assert!(c.annotations["query"].starts_with("ALTER TABLE contacts"));
        assert!(c.annotations["fix"].contains("pg_terminate_backend(10)"));
        assert!(c.annotations["fix"].contains("lock_timeout"));
        let d = &c.annotations["description"];
        assert!(d.contains("5 session(s) queue behind it"), "{d}");
        assert!(d.contains("idle in transaction"), "{d}");
    }

    #[test]
    fn short_queues_short_waits_and_weak_locks_do_not_fire() {
        let rule = build(&toml::Table::new()).unwrap();
        assert!(holds(rule.as_ref(), &queue(2, Some(60.0))).is_empty());
        assert!(holds(rule.as_ref(), &queue(5, Some(4.0))).is_empty());
        // PostgreSQL 13: no wait age, the queue alone decides.
        assert_eq!(holds(rule.as_ref(), &queue(3, None)).len(), 1);
        // A writer waiting for ROW EXCLUSIVE is no DDL, however many queue behind it.
        let mut o = queue(5, Some(60.0));
        o.locks.as_mut().unwrap().waiters[0].mode = "RowExclusiveLock".into();
        assert!(holds(rule.as_ref(), &o).is_empty());
        let table: toml::Table = toml::from_str("min_queued = 6\nmin_wait = \"1s\"").unwrap();
        let rule = build(&table).unwrap();
        assert!(holds(rule.as_ref(), &queue(5, Some(2.0))).is_empty());
        assert_eq!(holds(rule.as_ref(), &queue(6, Some(2.0))).len(), 1);
        assert!(matches!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        ));
    }

    #[test]
    fn a_prepared_transaction_at_the_head_and_a_queue_longer_than_the_examined_waiters() {
        let rule = build(&toml::Table::new()).unwrap();
        // 9 readers examined, 12 in the whole queue: the exact 12.
        let mut o = queue(9, Some(30.0));
        let locks = o.locks.as_mut().unwrap();
        locks.waiters[0].blocked_by = vec![0];
        locks.waiting_backends = 40;
        locks.queues = [(20, (30..42).collect())].into();
        let c = &holds(rule.as_ref(), &o)[0];
        assert_eq!(c.annotations["queued"], "12");
        assert!(
            c.annotations["description"].contains(" 12 session(s) queue behind it"),
            "{}",
            c.annotations["description"]
        );
        // The prepared transaction was not found in pg_prepared_xacts: named generically.
        assert_eq!(c.annotations["blocker_pid"], "0");
        assert_eq!(c.annotations["blocker_state"], "prepared");
        assert!(c.annotations["fix"].contains("ROLLBACK PREPARED"));
        assert!(!c.annotations.contains_key("blocker_gid"));
        // Found: its gid, age and the exact statements.
        o.locks.as_mut().unwrap().prepared = vec![PreparedXact {
            gid: "deploy-7".into(),
            owner: "app".into(),
            database: "shop".into(),
            age_seconds: Some(3600.2),
        }];
        let c = &holds(rule.as_ref(), &o)[0];
        assert_eq!(c.annotations["blocker_gid"], "deploy-7");
        assert_eq!(c.annotations["blocker_transaction_age_seconds"], "3600");
        let fix = &c.annotations["fix"];
        assert!(
            fix.contains("COMMIT PREPARED 'deploy-7'; or ROLLBACK PREPARED 'deploy-7';"),
            "{fix}"
        );
        let d = &c.annotations["description"];
        assert!(d.contains("prepared transaction 'deploy-7'"), "{d}");
        assert!(d.contains("prepared 1h ago"), "{d}");
    }

    #[test]
    fn zero_queue_is_rejected() {
        let table: toml::Table = toml::from_str("min_queued = 0").unwrap();
        assert!(build(&table).unwrap_err().contains("min_queued"));
    }
}
