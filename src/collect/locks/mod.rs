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
//! 3. If an examined waiter waits for a strong lock (a DDL), [`sql::queues_sql`] collects the
//!    whole queue behind it on its relation, every waiter and not only the examined ones, so
//!    `LockQueue` and `pgvigil_lock_queue_sessions` give the exact number; if one is blocked
//!    by pid 0 (a prepared transaction, which has no session), [`sql::PREPARED_SQL`] names it
//!    from `pg_prepared_xacts` (gid, owner, database, age). Then [`sql::SESSIONS_SQL`] reads
//!    the waiters' and blockers' sessions from `pg_stat_activity` (user, application, state,
//!    transaction age, query), for the alerts' text.
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
//! waiters, four (five behind a DDL, six behind a prepared transaction). The chain series are
//! bounded: one per database with waiters, built from at most [`sql::MAX_EXAMINED_WAITERS`]
//! examined waiters; the queue behind a DDL is counted over every waiter, one pass over
//! `pg_locks` without `pg_blocking_pids`.
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
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector, query_rows};
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

/// A prepared transaction holding a lock that an examined waiter waits for (its blocker
/// "pid 0"), from `pg_prepared_xacts` ([`sql::PREPARED_SQL`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PreparedXact {
    /// Its global transaction id, what `COMMIT PREPARED` / `ROLLBACK PREPARED` take.
    pub gid: String,
    /// The role that prepared it.
    pub owner: String,
    /// The database it was prepared in.
    pub database: String,
    /// Seconds since it was prepared: its age as a blocker.
    pub age_seconds: Option<f64>,
}

impl PreparedXact {
    /// The statements that end it, its gid quoted as a literal.
    pub fn fix(&self) -> String {
        let gid = self.gid.replace('\'', "''");
        format!(
            "COMMIT PREPARED '{gid}'; or ROLLBACK PREPARED '{gid}'; (in database {}, as {} or a superuser)",
            self.database, self.owner
        )
    }
}

/// What steps 2 and 3 found when something waits (all empty when nothing does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Examined {
    /// Every waiter by database.
    pub blocked: Vec<BlockedDatabase>,
    /// The longest waiters, with their blockers.
    pub waiters: Vec<LockWaiter>,
    /// Their sessions and their blockers'.
    pub sessions: Vec<LockSession>,
    /// The whole queue behind each examined waiter for a strong lock, by its pid.
    pub queues: BTreeMap<i32, Vec<i32>>,
    /// The prepared transactions blocking examined waiters, oldest first.
    pub prepared: Vec<PreparedXact>,
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
    /// The whole queue behind each examined waiter for a strong lock, by its pid, counted in
    /// SQL over every waiter ([`sql::queues_sql`]), not only the examined ones.
    pub queues: BTreeMap<i32, Vec<i32>>,
    /// The prepared transactions holding a lock an examined waiter waits for (the blocker
    /// "pid 0" of `pg_blocking_pids`), oldest first.
    pub prepared: Vec<PreparedXact>,
}

impl LocksReport {
    /// Every session queued behind `pid`: through the examined waiters' blockers, and, for a
    /// waiter for a strong lock, the whole queue on its relation ([`LocksReport::queues`]), so
    /// a queue longer than the examined waiters is counted exactly.
    pub fn queued_behind(&self, pid: i32) -> BTreeSet<i32> {
        let mut behind = chains::queued_behind(&self.waiters, pid);
        if let Some(queue) = self.queues.get(&pid) {
            behind.extend(queue.iter().copied().filter(|p| *p != pid));
        }
        behind
    }

    /// The prepared transaction to name as the blocker "pid 0": the oldest one found.
    pub fn oldest_prepared(&self) -> Option<&PreparedXact> {
        self.prepared.first()
    }

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

/// The series and report of one poll: `counts` from step 1, what steps 2 and 3 found (empty
/// when nothing waits); `waitstart` says whether the server has wait ages at all (14+).
pub fn summarise(
    counts: Vec<LockCount>,
    examined: Examined,
    waitstart: bool,
) -> (Snapshot, LocksReport) {
    let Examined {
        blocked,
        waiters,
        sessions,
        queues,
        prepared,
    } = examined;
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
        queues,
        prepared,
    };
    chain_series(&mut snap, &report, waitstart);
    (snap, report)
}

/// The blocking-chain series: waiters and their longest wait by database, the oldest root
/// blocker's transaction by database, the longest queue behind a strong lock by database,
/// and the deepest chain. Bounded: one series per database with waiters, from at most
/// [`sql::MAX_EXAMINED_WAITERS`] examined waiters (the queue behind a strong lock counts every
/// session in it).
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
        // A prepared transaction (pid 0) has no session: its age is since it was prepared.
        let (datname, age) = match (&root.session, report.oldest_prepared()) {
            (Some(s), _) => (s.datname.as_str(), s.xact_age_seconds),
            (None, Some(p)) if root.pid == 0 => (p.database.as_str(), p.age_seconds),
            (None, _) => continue,
        };
        let entry = root_age.entry(datname).or_default();
        *entry = entry.max(age.unwrap_or(0.0).max(0.0));
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
        let behind = report.queued_behind(w.pid).len();
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

/// Steps 2 and 3, when something waits: the waiters by database, the longest waiters with
/// their blockers, the whole queue behind those that wait for a strong lock, the prepared
/// transactions blocking them, and the sessions of waiters and blockers.
async fn examine(ctx: &PollContext<'_>) -> Result<Examined, CollectError> {
    let version = ctx.server.version_num;
    let client = ctx.client;
    let own = &ctx.own_backends;
    let blocked = query_rows(client, &sql::blocked_sql(version), &[own], |r| {
        Ok(BlockedDatabase {
            datname: r.try_get(0)?,
            sessions: r.try_get(1)?,
            max_wait_seconds: r.try_get(2)?,
        })
    })
    .await?;
    let limit = &sql::MAX_EXAMINED_WAITERS;
    let waiters = query_rows(client, &sql::waiters_sql(version), &[limit], |r| {
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
    .await?;
    let queues = queues(client, version, &waiters).await?;
    let prepared = prepared(client, &waiters).await?;
    let pids: Vec<i32> = waiters
        .iter()
        .flat_map(|w| std::iter::once(w.pid).chain(w.blocked_by.iter().copied()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&pids, &sql::QUERY_TEXT_LIMIT];
    let sessions = query_rows(client, sql::SESSIONS_SQL, &params, |r| {
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
    .await?;
    Ok(Examined {
        blocked,
        waiters,
        sessions,
        queues,
        prepared,
    })
}

/// The whole queue behind each examined waiter for a strong lock ([`sql::queues_sql`]); no
/// query when none waits for one.
async fn queues(
    client: &tokio_postgres::Client,
    version: i32,
    waiters: &[LockWaiter],
) -> Result<BTreeMap<i32, Vec<i32>>, tokio_postgres::Error> {
    let strong: Vec<i32> = waiters
        .iter()
        .filter(|w| chains::waits_for_strong_lock(w))
        .map(|w| w.pid)
        .collect();
    if strong.is_empty() {
        return Ok(BTreeMap::new());
    }
    let queues = query_rows(client, &sql::queues_sql(version), &[&strong], |r| {
        Ok((r.try_get(0)?, r.try_get(1)?))
    })
    .await?;
    Ok(queues.into_iter().collect())
}

/// The prepared transactions blocking examined waiters ([`sql::PREPARED_SQL`]); no query
/// unless a waiter is blocked by one (pid 0).
async fn prepared(
    client: &tokio_postgres::Client,
    waiters: &[LockWaiter],
) -> Result<Vec<PreparedXact>, tokio_postgres::Error> {
    let behind: Vec<i32> = waiters
        .iter()
        .filter(|w| w.blocked_by.contains(&0))
        .map(|w| w.pid)
        .collect();
    if behind.is_empty() {
        return Ok(Vec::new());
    }
    query_rows(client, sql::PREPARED_SQL, &[&behind], |r| {
        Ok(PreparedXact {
            gid: r.try_get(0)?,
            owner: r.try_get(1)?,
            database: r.try_get(2)?,
            age_seconds: r.try_get(3)?,
        })
    })
    .await
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "locks",
    table: "locks",
    reads: "pg_locks by database, mode and state; pg_blocking_pids and pg_stat_activity of the longest waiters, the whole queue behind a DDL, and pg_prepared_xacts for a prepared blocker, only when something waits",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::LOCKS_METRICS,
    section: |t| &t.locks,
    build: |_| Box::new(Locks),
    carry: |from, to| to.locks = from.locks.clone(),
};

impl ReportCollector for Locks {
    const NAME: &'static str = SPEC.name;
    type Report = LocksReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, LocksReport), CollectError> {
        let version = ctx.server.version_num;
        let own = &ctx.own_backends;
        let counts = ctx
            .query_rows(&sql::counts_sql(version), &[own], |r| {
                Ok(LockCount {
                    datname: r.try_get(0)?,
                    mode: r.try_get(1)?,
                    granted: r.try_get(2)?,
                    count: r.try_get(3)?,
                    max_wait_seconds: r.try_get(4)?,
                })
            })
            .await?;
        let examined = if counts.iter().any(|c| !c.granted) {
            examine(ctx).await?
        } else {
            Examined::default()
        };
        Ok(summarise(counts, examined, sql::has_waitstart(version)))
    }

    fn store(report: LocksReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.locks = Some(report);
    }
}

#[cfg(test)]
mod tests;
