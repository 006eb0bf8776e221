//! Heavyweight locks: how many by database, mode and state (granted or waiting), how many
//! backends wait, how long the longest has waited, and — only when something waits — who
//! blocks whom, as blocking chains (the `LockWaitsLong` and `LockQueue` alerts, the status
//! page's "Blocked sessions" tree, `/api/v1/locks`).
//!
//! # The poll, step by step
//!
//! The collector polls every 5 s by default (`interval` in `[targets.locks]`; the target's
//! `poll_interval` if that is shorter), over the target's main session like the other
//! cluster-wide collectors, so a migration queueing the application behind it is seen within
//! one fast poll without another connection.
//!
//! 1. One grouped `SELECT` over `pg_locks` ([`sql::counts_sql`]): locks by database, mode and
//!    `granted`, with the longest wait of each group (`waitstart`, PostgreSQL 14+). pgvigil's
//!    own sessions are left out. If nothing waits, that is all: the idle cost is this one
//!    query per poll (one every 5 s).
//! 2. Otherwise [`sql::blocked_sql`] counts every waiter by its session's database, with the
//!    longest wait, and [`sql::waiters_sql`] reads the longest waiters (at most
//!    [`sql::MAX_EXAMINED_WAITERS`]), what each waits for, and `pg_blocking_pids` of each;
//!    `pg_blocking_pids` takes the lock manager's shared state, which is why it is asked
//!    only then and only for those (DataDog/integrations-core#11496 made the same choice).
//! 3. [`sql::SESSIONS_SQL`] reads those waiters' and blockers' sessions from
//!    `pg_stat_activity` (user, application, state, transaction age, query), for the alerts'
//!    text.
//! 4. [`summarise`] builds the series, the blocking forest ([`chains::build`], pure) and the
//!    [`LocksReport`] the rules read.
//!
//! # Cost and locks
//!
//! `pg_locks` copies the lock table out of shared memory under the lock manager's lightweight
//! locks, for microseconds per thousand locks; it takes no heavyweight lock on any user
//! relation, so it cannot queue behind a DDL that holds or waits for ACCESS EXCLUSIVE (the
//! OpenTelemetry receiver hung behind one through `pg_relation_size`:
//! opentelemetry-collector-contrib#49351). Relation names come from `regclass` output, a
//! catalog-cache lookup without a lock. With nothing waiting the poll is one query; with
//! waiters, four. The chain series are bounded: one per database with waiters, built from at
//! most [`sql::MAX_EXAMINED_WAITERS`] examined waiters (a longer queue is reported as "at
//! least" in the alert).
//!
//! # Versions
//!
//! | server | what changed |
//! |---|---|
//! | 13 | no `pg_locks.waitstart`: `pgvigil_lock_wait_max_age_seconds` and `pgvigil_lock_blocked_max_wait_seconds` are absent, `LockWaitsLong` cannot judge waits (it stays silent) and `LockQueue` judges the queue alone; waiters are examined in pid order |
//! | 14+ | `waitstart`: wait ages, longest waiters first |

pub mod chains;
pub mod sql;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::registry::{self, CollectorSpec, Scope};
use super::{BoxFuture, CollectError, Collector, Observations, PollContext, Postgres};
use crate::metrics::{self, Snapshot};

/// Locks of one database, mode and state.
#[derive(Debug, Clone, PartialEq)]
pub struct LockCount {
    /// The database, empty for locks on no database (transaction ids, shared catalogs).
    pub datname: String,
    /// `AccessShareLock`, `AccessExclusiveLock`, ...
    pub mode: String,
    /// Held, or waited for.
    pub granted: bool,
    /// How many.
    pub count: i64,
    /// The longest wait among them, in seconds (waiting locks on 14+).
    pub max_wait_seconds: Option<f64>,
}

/// A backend waiting for a lock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockWaiter {
    /// Its pid.
    pub pid: i32,
    /// The database of the session (of the lock if the session is gone).
    pub datname: String,
    /// `relation`, `transactionid`, `tuple`, ...
    pub locktype: String,
    /// The mode it asks for.
    pub mode: String,
    /// The relation, named if it is in the database pgvigil is connected to (else `oid N`).
    pub relation: Option<String>,
    /// How long it has waited, in seconds (`None` on PostgreSQL 13).
    pub wait_seconds: Option<f64>,
    /// The pids it waits for (`pg_blocking_pids`; 0 is a prepared transaction).
    pub blocked_by: Vec<i32>,
}

/// A session involved in a lock wait, from `pg_stat_activity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LockSession {
    /// Its pid.
    pub pid: i32,
    /// Database.
    pub datname: String,
    /// User.
    pub usename: String,
    /// application_name.
    pub application_name: String,
    /// `active`, `idle in transaction`, ...
    pub state: String,
    /// Seconds since its transaction began.
    pub xact_age_seconds: Option<f64>,
    /// Its last statement, truncated.
    pub query: String,
}

/// The waiting backends of one database (their sessions' database), from step 2.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockedDatabase {
    /// The database of the waiting sessions.
    pub datname: String,
    /// How many wait.
    pub sessions: i64,
    /// The longest wait, in seconds (`None` on PostgreSQL 13).
    pub max_wait_seconds: Option<f64>,
}

/// What the locks collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LocksReport {
    /// Backends waiting for a lock.
    pub waiting_backends: i64,
    /// The waiting backends by database (all of them, not only the examined ones).
    pub blocked_databases: Vec<BlockedDatabase>,
    /// The longest waiters (at most [`sql::MAX_EXAMINED_WAITERS`]), longest first on 14+.
    pub waiters: Vec<LockWaiter>,
    /// The sessions of those waiters and of their blockers, by pid.
    pub sessions: BTreeMap<i32, LockSession>,
    /// The examined waiters as blocking chains, headed by the session at the front of each
    /// queue ([`chains::build`]).
    pub chains: Vec<chains::ChainNode>,
}

impl LocksReport {
    /// The blockers at the head of `waiter`'s queue: following `blocked_by` through the
    /// examined waiters, the pids that do not wait themselves (an idle-in-transaction session,
    /// a long query, a prepared transaction). A blocker that waits but was not examined counts
    /// as a root, as does every member of a cycle (a deadlock about to be broken).
    pub fn root_blockers(&self, waiter: &LockWaiter) -> Vec<i32> {
        let by_pid: BTreeMap<i32, &LockWaiter> = self.waiters.iter().map(|w| (w.pid, w)).collect();
        let mut roots = BTreeSet::new();
        let mut seen = BTreeSet::from([waiter.pid]);
        let mut stack: Vec<i32> = waiter.blocked_by.clone();
        while let Some(pid) = stack.pop() {
            if !seen.insert(pid) {
                continue;
            }
            match by_pid.get(&pid) {
                Some(w) if !w.blocked_by.is_empty() => stack.extend(&w.blocked_by),
                _ => {
                    roots.insert(pid);
                }
            }
        }
        if roots.is_empty() {
            // Only a cycle: its members are the answer.
            roots.extend(waiter.blocked_by.iter().copied());
        }
        roots.into_iter().collect()
    }
}

/// The series and report of one poll: `counts` from step 1, `blocked`, `waiters` and
/// `sessions` from steps 2 and 3 (empty when nothing waits); `waitstart` says whether the
/// server has wait ages at all (14+).
pub fn summarise(
    counts: Vec<LockCount>,
    blocked: Vec<BlockedDatabase>,
    waiters: Vec<LockWaiter>,
    sessions: Vec<LockSession>,
    waitstart: bool,
) -> (Snapshot, LocksReport) {
    let mut snap = Snapshot::default();
    let mut waiting = 0;
    let mut max_wait = 0.0_f64;
    for c in &counts {
        let state = if c.granted { "granted" } else { "waiting" };
        snap.push(
            &metrics::LOCKS,
            vec![c.datname.clone(), c.mode.clone(), state.to_owned()],
            c.count as f64,
        );
        if !c.granted {
            waiting += c.count;
            max_wait = max_wait.max(c.max_wait_seconds.unwrap_or(0.0));
        }
    }
    let blockers: BTreeSet<i32> = waiters
        .iter()
        .flat_map(|w| w.blocked_by.iter().copied())
        .collect();
    snap.set(&metrics::LOCK_WAITING_BACKENDS, waiting as f64);
    snap.set(&metrics::LOCK_BLOCKERS, blockers.len() as f64);
    if waitstart {
        snap.set(&metrics::LOCK_WAIT_MAX_AGE, max_wait.max(0.0));
    }
    let sessions: BTreeMap<i32, LockSession> = sessions.into_iter().map(|s| (s.pid, s)).collect();
    let waiters: Vec<LockWaiter> = waiters
        .into_iter()
        .map(|mut w| {
            if let Some(s) = sessions.get(&w.pid).filter(|s| !s.datname.is_empty()) {
                w.datname = s.datname.clone();
            }
            w.wait_seconds = w.wait_seconds.map(|s| s.max(0.0));
            w
        })
        .collect();
    let report = LocksReport {
        waiting_backends: waiting,
        chains: chains::build(&waiters, &sessions),
        blocked_databases: blocked,
        waiters,
        sessions,
    };
    chain_series(&mut snap, &report, waitstart);
    (snap, report)
}

/// The blocking-chain series: waiters and their longest wait by database, the oldest root
/// blocker's transaction by database, the longest queue behind a strong lock by database,
/// and the deepest chain. Bounded: one series per database with waiters, from at most
/// [`sql::MAX_EXAMINED_WAITERS`] examined waiters.
fn chain_series(snap: &mut Snapshot, report: &LocksReport, waitstart: bool) {
    for d in &report.blocked_databases {
        snap.push(
            &metrics::LOCK_BLOCKED_SESSIONS,
            vec![d.datname.clone()],
            d.sessions as f64,
        );
        if let Some(wait) = d.max_wait_seconds.filter(|_| waitstart) {
            snap.push(
                &metrics::LOCK_BLOCKED_MAX_WAIT,
                vec![d.datname.clone()],
                wait.max(0.0),
            );
        }
    }
    let mut root_age: BTreeMap<&str, f64> = BTreeMap::new();
    for root in &report.chains {
        let Some(s) = &root.session else { continue };
        let age = s.xact_age_seconds.unwrap_or(0.0).max(0.0);
        let entry = root_age.entry(s.datname.as_str()).or_default();
        *entry = entry.max(age);
    }
    for (datname, age) in root_age {
        snap.push(
            &metrics::LOCK_ROOT_BLOCKER_AGE,
            vec![datname.to_owned()],
            age,
        );
    }
    let mut queues: BTreeMap<&str, usize> = BTreeMap::new();
    for w in report
        .waiters
        .iter()
        .filter(|w| chains::waits_for_strong_lock(w))
    {
        let behind = chains::queued_behind(&report.waiters, w.pid).len();
        let entry = queues.entry(w.datname.as_str()).or_default();
        *entry = (*entry).max(behind);
    }
    for (datname, behind) in queues {
        snap.push(
            &metrics::LOCK_QUEUE_SESSIONS,
            vec![datname.to_owned()],
            behind as f64,
        );
    }
    let depth = report.chains.iter().map(|c| c.depth()).max().unwrap_or(0);
    snap.set(&metrics::LOCK_CHAIN_MAX_DEPTH, depth as f64);
}

/// The pg_locks collector.
#[derive(Debug, Default)]
pub struct Locks;

impl Locks {
    async fn poll(&self, ctx: &PollContext<'_>) -> Result<(Snapshot, LocksReport), CollectError> {
        let version = ctx.server.version_num;
        let own = &ctx.own_backends;
        let counts = ctx
            .client
            .query(&sql::counts_sql(version), &[own])
            .await?
            .iter()
            .map(|r| {
                Ok(LockCount {
                    datname: r.try_get(0)?,
                    mode: r.try_get(1)?,
                    granted: r.try_get(2)?,
                    count: r.try_get(3)?,
                    max_wait_seconds: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        let (blocked, waiters, sessions) = if counts.iter().any(|c| !c.granted) {
            examine(ctx).await?
        } else {
            Default::default()
        };
        Ok(summarise(
            counts,
            blocked,
            waiters,
            sessions,
            sql::has_waitstart(version),
        ))
    }
}

/// Steps 2 and 3, when something waits: the waiters by database, the longest waiters with
/// their blockers, and the sessions of both.
async fn examine(
    ctx: &PollContext<'_>,
) -> Result<(Vec<BlockedDatabase>, Vec<LockWaiter>, Vec<LockSession>), CollectError> {
    let version = ctx.server.version_num;
    let blocked = ctx
        .client
        .query(&sql::blocked_sql(version), &[&ctx.own_backends])
        .await?
        .iter()
        .map(|r| {
            Ok(BlockedDatabase {
                datname: r.try_get(0)?,
                sessions: r.try_get(1)?,
                max_wait_seconds: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let waiters = ctx
        .client
        .query(&sql::waiters_sql(version), &[&sql::MAX_EXAMINED_WAITERS])
        .await?
        .iter()
        .map(|r| {
            Ok(LockWaiter {
                pid: r.try_get(0)?,
                datname: r.try_get(1)?,
                locktype: r.try_get(2)?,
                mode: r.try_get(3)?,
                relation: r.try_get(4)?,
                wait_seconds: r.try_get(5)?,
                blocked_by: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let pids: Vec<i32> = waiters
        .iter()
        .flat_map(|w| std::iter::once(w.pid).chain(w.blocked_by.iter().copied()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let sessions = ctx
        .client
        .query(sql::SESSIONS_SQL, &[&pids, &sql::QUERY_TEXT_LIMIT])
        .await?
        .iter()
        .map(|r| {
            Ok(LockSession {
                pid: r.try_get(0)?,
                datname: r.try_get(1)?,
                usename: r.try_get(2)?,
                application_name: r.try_get(3)?,
                state: r.try_get(4)?,
                xact_age_seconds: r.try_get(5)?,
                query: r.try_get::<_, Option<String>>(6)?.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    Ok((blocked, waiters, sessions))
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "locks",
    table: "locks",
    reads: "pg_locks by database, mode and state; pg_blocking_pids and pg_stat_activity of the longest waiters, only when something waits",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::LOCKS_METRICS,
    section: |t| &t.locks,
    build: |_| Box::new(Locks),
    carry: |from, to| to.locks = from.locks.clone(),
};

impl Collector<Postgres> for Locks {
    fn name(&self) -> &'static str {
        SPEC.name
    }

    fn collect<'a, 'c>(
        &'a mut self,
        ctx: &'a PollContext<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        Box::pin(async move {
            let (snapshot, report) = self.poll(ctx).await?;
            observations.locks = Some(report);
            Ok(snapshot)
        })
    }
}

#[cfg(test)]
mod tests;
