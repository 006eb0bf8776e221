//! The server, from pg_stat_activity and settings (collector `activity`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    ACTIVITY_METRICS;

    POSTGRES_INFO, Gauge, "pgvigil_postgres_info", ["target", "server_version"],
        "PostgreSQL server version of the target; always 1.";
    CONNECTIONS, Gauge, "pgvigil_connections", ["target", "datname", "usename", "state", "application_name"],
        "Client connections by database, user, state and application_name (allow-listed names, all others as other).";
    BACKENDS, Gauge, "pgvigil_backends", ["target", "backend_type"],
        "Server processes by backend_type (client backend, autovacuum worker, walsender, ...).";
    CONNECTIONS_WAITING, Gauge, "pgvigil_connections_waiting", ["target", "datname", "wait_event_type"],
        "Active client connections currently waiting, by wait_event_type (Lock, LWLock, IO, ...).";
    MAX_CONNECTIONS, Gauge, "pgvigil_connections_max", ["target"],
        "The server's max_connections setting.";
    RESERVED_CONNECTIONS, Gauge, "pgvigil_connections_reserved", ["target"],
        "Connection slots reserved for superusers and pg_use_reserved_connections (not usable by applications).";
    OLDEST_XACT_AGE, Gauge, "pgvigil_oldest_transaction_age_seconds", ["target"],
        "Age of the oldest open transaction of any client connection (0 when none).";
    IDLE_IN_XACT_MAX_AGE, Gauge, "pgvigil_idle_in_transaction_max_age_seconds", ["target"],
        "How long the longest idle-in-transaction client session has sat idle (0 when none).";
    WRITING_XACTS, Gauge, "pgvigil_transactions_with_writes", ["target", "datname"],
        "Open transactions that hold uncommitted writes (backend_xid assigned), by database.";
    WRITING_XACT_MAX_AGE, Gauge, "pgvigil_transactions_with_writes_max_age_seconds", ["target"],
        "Age of the oldest open transaction holding uncommitted writes (0 when none): an import that never committed.";
}
