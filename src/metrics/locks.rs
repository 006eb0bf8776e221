//! Heavyweight locks, from pg_locks and pg_blocking_pids (collector `locks`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    LOCKS_METRICS;

    LOCKS, Gauge, "pgvigil_locks", ["target", "datname", "mode", "state"],
        "Heavyweight locks by database (empty for locks on no database, such as transaction ids), mode and state (granted or waiting); pgvigil's own excluded.";
    LOCK_WAITING_BACKENDS, Gauge, "pgvigil_lock_waiting_backends", ["target"],
        "Backends waiting for a heavyweight lock (a backend waits for at most one at a time).";
    LOCK_BLOCKERS, Gauge, "pgvigil_lock_blockers", ["target"],
        "Backends holding or queued for a lock that one of the longest waiters needs (pg_blocking_pids, asked only when something waits); 0 when none wait.";
    LOCK_WAIT_MAX_AGE, Gauge, "pgvigil_lock_wait_max_age_seconds", ["target"],
        "How long the longest current lock wait has lasted (pg_locks.waitstart), 0 when none wait; absent on PostgreSQL 13, which has no waitstart.";
    LOCK_BLOCKED_SESSIONS, Gauge, "pgvigil_lock_blocked_sessions", ["target", "datname"],
        "Backends waiting for a heavyweight lock, by the database of their session; a database with no waiter has no series.";
    LOCK_BLOCKED_MAX_WAIT, Gauge, "pgvigil_lock_blocked_max_wait_seconds", ["target", "datname"],
        "The longest current lock wait of the database's sessions (pg_locks.waitstart); absent on PostgreSQL 13 and for databases with no waiter.";
    LOCK_ROOT_BLOCKER_AGE, Gauge, "pgvigil_lock_root_blocker_age_seconds", ["target", "datname"],
        "The oldest transaction among the sessions at the head of a blocking chain (they block others and wait for nothing), by their database; from the examined waiters; absent when none blocks.";
    LOCK_QUEUE_SESSIONS, Gauge, "pgvigil_lock_queue_sessions", ["target", "datname"],
        "The most sessions queued (directly or through others) behind one session waiting for a strong relation lock (ACCESS EXCLUSIVE, EXCLUSIVE, SHARE ROW EXCLUSIVE, SHARE: typically a migration's DDL), by database; absent when no such lock is waited for.";
    LOCK_CHAIN_MAX_DEPTH, Gauge, "pgvigil_lock_chain_max_depth", ["target"],
        "The deepest blocking chain among the examined waiters: 1 when waiters wait for a session that waits for nothing, 2 when others queue behind such a waiter (readers behind a DDL behind an idle transaction); 0 when none wait.";
}
