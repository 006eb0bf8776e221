//! The databases of a target and the sessions that visit them (`crate::databases`), published
//! by the database sessions rather than by a collector.

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    DATABASES_METRICS;

    DATABASES_WATCHED, Gauge, "pgvigil_databases_watched", ["target"],
        "Databases of the target's cluster pgvigil watches now: those that accept connections, are no template and are selected by [targets.databases].";
    DATABASE_UP, Gauge, "pgvigil_database_up", ["target", "datname"],
        "1 if pgvigil's last attempt to enter the database succeeded, 0 if it could not (connection refused, no CONNECT privilege, ...); the others are read either way.";
    DATABASE_LAST_VISIT, Gauge, "pgvigil_database_last_visit_timestamp_seconds", ["target", "datname"],
        "Unix time the database's table statistics were last read.";
    DATABASE_SESSIONS, Gauge, "pgvigil_database_sessions", ["target"],
        "Database sessions pgvigil holds open on the target now (at most max_connections - 1, besides the main session).";
    CONNECTION_BUDGET, Gauge, "pgvigil_connection_budget", ["target"],
        "max_connections: the sessions pgvigil may hold on the target, the main one included.";
    DATABASE_VISITS_POSTPONED, Counter, "pgvigil_database_visits_postponed_total", ["target", "reason"],
        "Table visits put off to the next round, by reason: round_budget (the round ran out of time) or connect_budget (max_connects_per_hour was spent).";
    IMPORT_NOTIFICATIONS, Counter, "pgvigil_import_notifications_total", ["target", "datname"],
        "NOTIFY pgvigil_import messages received from the database; each starts an import check at once.";
}
