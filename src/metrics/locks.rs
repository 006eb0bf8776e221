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
}
