//! Blocking chains: who waits behind whom, built from the examined waiters' `pg_blocking_pids`
//! as a forest whose roots are the sessions at the head of each queue. Pure, so the awkward
//! shapes (cycles, several roots, a waiter blocked by several sessions, prepared transactions
//! with pid 0) are unit-tested without a database.
//!
//! A root is a blocker that does not wait itself (a session idle in a transaction, a long
//! query, a prepared transaction), a waiter whose blockers are already gone, or — when the
//! waiters only block one another — the lowest pid of the cycle (a deadlock the deadlock
//! detector is about to break). Every examined waiter appears once: under the first of its
//! blockers the walk reaches, the others listed in [`ChainNode::also_blocked_by`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{LockSession, LockWaiter};

/// The lock modes a DDL typically asks for, which queue every later reader and writer of the
/// relation behind them: ACCESS EXCLUSIVE (`ALTER TABLE`, `DROP`, `TRUNCATE`, `VACUUM FULL`),
/// EXCLUSIVE (`REFRESH MATERIALIZED VIEW CONCURRENTLY`), SHARE ROW EXCLUSIVE (`CREATE
/// TRIGGER`, adding a foreign key) and SHARE (`CREATE INDEX` without `CONCURRENTLY`).
pub const STRONG_MODES: &[&str] = &[
    "AccessExclusiveLock",
    "ExclusiveLock",
    "ShareRowExclusiveLock",
    "ShareLock",
];

/// Whether `w` waits for a strong lock on a relation (not a row's transaction id, where
/// `ShareLock` is the ordinary wait of an `UPDATE`).
pub fn waits_for_strong_lock(w: &LockWaiter) -> bool {
    w.locktype == "relation" && STRONG_MODES.contains(&w.mode.as_str())
}

/// One session of a blocking chain and the sessions queued directly behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainNode {
    /// Its pid (0: a prepared transaction).
    pub pid: i32,
    /// What it waits for, if it waits (roots usually do not).
    pub waiting: Option<LockWaiter>,
    /// Its session, if pgvigil read it (not for pid 0, nor for a session gone meanwhile).
    pub session: Option<LockSession>,
    /// It waits for itself through others: a deadlock.
    pub in_cycle: bool,
    /// Its blockers other than its parent in the tree.
    pub also_blocked_by: Vec<i32>,
    /// How many examined sessions wait behind it, directly or through others.
    pub behind: usize,
    /// The sessions it blocks that are drawn under it.
    pub children: Vec<ChainNode>,
}

impl ChainNode {
    /// How many levels of waiters hang below it (0: none).
    pub fn depth(&self) -> usize {
        self.children
            .iter()
            .map(|c| c.depth() + 1)
            .max()
            .unwrap_or(0)
    }

    /// Every node of its subtree, itself first.
    pub fn walk(&self) -> Vec<&ChainNode> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

/// The examined waiters by pid (a backend waits for at most one lock; the first row wins).
fn by_pid(waiters: &[LockWaiter]) -> BTreeMap<i32, &LockWaiter> {
    let mut map = BTreeMap::new();
    for w in waiters {
        map.entry(w.pid).or_insert(w);
    }
    map
}

/// The pids waiting behind `pid`, directly or through other waiters (never `pid` itself).
pub fn queued_behind(waiters: &[LockWaiter], pid: i32) -> BTreeSet<i32> {
    let mut behind = BTreeSet::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for w in waiters.iter().filter(|w| w.blocked_by.contains(&p)) {
            if w.pid != pid && behind.insert(w.pid) {
                stack.push(w.pid);
            }
        }
    }
    behind
}

/// Whether `pid` waits, through its blockers, for itself.
fn in_cycle(waiters: &BTreeMap<i32, &LockWaiter>, pid: i32) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<i32> = waiters.get(&pid).map_or(vec![], |w| w.blocked_by.clone());
    while let Some(p) = stack.pop() {
        if p == pid {
            return true;
        }
        if seen.insert(p) {
            if let Some(w) = waiters.get(&p) {
                stack.extend(&w.blocked_by);
            }
        }
    }
    false
}

/// The blocking forest of the examined `waiters`, the queue with the most sessions behind its
/// head first.
pub fn build(waiters: &[LockWaiter], sessions: &BTreeMap<i32, LockSession>) -> Vec<ChainNode> {
    let examined = by_pid(waiters);
    // Heads: blockers that do not wait, and waiters none of whose blockers is left.
    let mut heads: BTreeSet<i32> = examined
        .values()
        .flat_map(|w| w.blocked_by.iter().copied())
        .filter(|p| !examined.contains_key(p))
        .collect();
    heads.extend(
        examined
            .values()
            .filter(|w| w.blocked_by.is_empty())
            .map(|w| w.pid),
    );
    let mut seen = BTreeSet::new();
    let mut roots: Vec<ChainNode> = heads
        .into_iter()
        .map(|pid| node(pid, None, &examined, waiters, sessions, &mut seen))
        .collect();
    // Whatever the heads do not reach waits in (or behind) a cycle: its lowest pid heads it.
    while let Some(pid) = examined
        .keys()
        .copied()
        .find(|p| !seen.contains(p) && in_cycle(&examined, *p))
    {
        roots.push(node(pid, None, &examined, waiters, sessions, &mut seen));
    }
    roots.sort_by_key(|r| (std::cmp::Reverse(r.behind), r.pid));
    roots
}

fn node(
    pid: i32,
    parent: Option<i32>,
    examined: &BTreeMap<i32, &LockWaiter>,
    waiters: &[LockWaiter],
    sessions: &BTreeMap<i32, LockSession>,
    seen: &mut BTreeSet<i32>,
) -> ChainNode {
    seen.insert(pid);
    let waiting = examined.get(&pid).map(|w| (*w).clone());
    let also_blocked_by = waiting.as_ref().map_or(vec![], |w| {
        w.blocked_by
            .iter()
            .copied()
            .filter(|b| Some(*b) != parent)
            .collect()
    });
    let direct: Vec<i32> = examined
        .values()
        .filter(|w| w.blocked_by.contains(&pid))
        .map(|w| w.pid)
        .collect();
    let mut children = Vec::new();
    for child in direct {
        if seen.insert(child) {
            children.push(node(child, Some(pid), examined, waiters, sessions, seen));
        }
    }
    ChainNode {
        pid,
        in_cycle: in_cycle(examined, pid),
        waiting,
        session: sessions.get(&pid).cloned(),
        also_blocked_by,
        behind: queued_behind(waiters, pid).len(),
        children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(pid: i32, mode: &str, blocked_by: &[i32]) -> LockWaiter {
        LockWaiter {
            pid,
            datname: "shop".into(),
            locktype: "relation".into(),
            mode: mode.into(),
            relation: Some("contacts".into()),
            wait_seconds: Some(1.0),
            blocked_by: blocked_by.to_vec(),
        }
    }

    fn pids(nodes: &[ChainNode]) -> Vec<i32> {
        nodes.iter().map(|n| n.pid).collect()
    }

    #[test]
    fn a_migration_behind_an_idle_transaction_with_readers_behind_it() {
        let waiters = vec![
            waiter(20, "AccessExclusiveLock", &[10]),
            waiter(31, "AccessShareLock", &[20]),
            waiter(32, "AccessShareLock", &[20]),
            waiter(33, "RowExclusiveLock", &[20]),
        ];
        let sessions = [(
            10,
            LockSession {
                pid: 10,
                ..LockSession::default()
            },
        )]
        .into();
        let forest = build(&waiters, &sessions);
        assert_eq!(pids(&forest), [10]);
        let root = &forest[0];
        assert!(root.waiting.is_none() && root.session.is_some() && !root.in_cycle);
        assert_eq!(root.behind, 4);
        assert_eq!(root.depth(), 2);
        assert_eq!(pids(&root.children), [20]);
        assert_eq!(root.children[0].behind, 3);
        assert_eq!(pids(&root.children[0].children), [31, 32, 33]);
        assert_eq!(root.walk().len(), 5);
        assert_eq!(queued_behind(&waiters, 20), BTreeSet::from([31, 32, 33]));
        assert!(waits_for_strong_lock(&waiters[0]) && !waits_for_strong_lock(&waiters[1]));
    }

    #[test]
    fn several_roots_most_queued_first_and_prepared_transactions() {
        let waiters = vec![
            waiter(21, "AccessExclusiveLock", &[11]),
            waiter(40, "ShareLock", &[0]),
            waiter(41, "AccessShareLock", &[40]),
            waiter(42, "AccessShareLock", &[40]),
        ];
        let forest = build(&waiters, &BTreeMap::new());
        assert_eq!(pids(&forest), [0, 11]);
        assert_eq!(forest[0].behind, 3);
        assert!(forest[0].session.is_none());
        assert_eq!(forest[1].behind, 1);
    }

    #[test]
    fn a_waiter_blocked_by_several_appears_once() {
        // 30 waits for both 10 (holds) and 20 (queued ahead, itself behind 10).
        let waiters = vec![
            waiter(20, "AccessExclusiveLock", &[10]),
            waiter(30, "AccessShareLock", &[10, 20]),
        ];
        let forest = build(&waiters, &BTreeMap::new());
        assert_eq!(pids(&forest), [10]);
        let all: Vec<i32> = forest[0].walk().iter().map(|n| n.pid).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        let n30 = forest[0].walk().into_iter().find(|n| n.pid == 30).unwrap();
        assert_eq!(n30.also_blocked_by.len(), 1, "{n30:?}");
        assert_eq!(forest[0].behind, 2);
        // Blocked by two sessions that do not wait: two roots, the waiter under the first.
        let waiters = vec![waiter(30, "AccessExclusiveLock", &[10, 11])];
        let forest = build(&waiters, &BTreeMap::new());
        assert_eq!(pids(&forest), [10, 11]);
        assert_eq!(pids(&forest[0].children), [30]);
        assert!(forest[1].children.is_empty());
        assert_eq!(forest[1].behind, 1, "11 blocks 30 too");
    }

    #[test]
    fn cycles_are_headed_by_their_lowest_pid() {
        let waiters = vec![
            waiter(52, "ShareLock", &[51]),
            waiter(51, "ShareLock", &[52]),
            waiter(53, "AccessShareLock", &[52]),
        ];
        let forest = build(&waiters, &BTreeMap::new());
        assert_eq!(pids(&forest), [51]);
        let root = &forest[0];
        assert!(root.in_cycle && root.waiting.is_some());
        assert_eq!(root.walk().len(), 3);
        assert_eq!(root.behind, 2, "52 and 53; never itself");
        let n53 = root.walk().into_iter().find(|n| n.pid == 53).unwrap();
        assert!(!n53.in_cycle);
        // A waiter whose blocker is gone heads its own (empty) chain.
        let forest = build(&[waiter(60, "AccessShareLock", &[])], &BTreeMap::new());
        assert_eq!(pids(&forest), [60]);
        assert!(build(&[], &BTreeMap::new()).is_empty());
    }
}
