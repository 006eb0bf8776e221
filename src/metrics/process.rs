//! pgvigil itself: its build, whether each target is up, how its polls go.

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    PROCESS_METRICS;

    BUILD_INFO, Gauge, "pgvigil_build_info", ["version"],
        "pgvigil build information; always 1.";
    UP, Gauge, "pgvigil_up", ["target"],
        "1 if pgvigil's last connection attempt or poll of the target succeeded, 0 otherwise.";
    POLL_DURATION, Histogram, "pgvigil_poll_duration_seconds", ["target", "collector"],
        "Time one collector took to poll its target (updated once per poll interval, like the two families after it).";
    POLL_ERRORS, Counter, "pgvigil_poll_errors_total", ["target", "collector"],
        "Polls of a collector that failed.";
    LAST_SUCCESS, Gauge, "pgvigil_last_successful_poll_timestamp_seconds", ["target", "collector"],
        "Unix time of the collector's last successful poll.";
    CONNECT_ATTEMPTS, Counter, "pgvigil_connection_attempts_total", ["target", "purpose", "result"],
        "Connections pgvigil opened or tried to open to the target, by purpose (main: the session for cluster-wide views; database: a session visiting one database) and result (success, failure).";
    CONNECT_WAITING, Gauge, "pgvigil_connect_attempts_waiting", [],
        "Connection attempts (of every source and purpose) waiting in line for a permit under max_concurrent_connects; their connect_timeout has not started.";
    CONNECT_IN_PROGRESS, Gauge, "pgvigil_connect_attempts_in_progress", [],
        "Connection attempts holding a permit: connecting, at most max_concurrent_connects.";
    CONNECT_WAIT, Histogram, "pgvigil_connect_permit_wait_seconds", [],
        "Time connection attempts waited in line for a permit under max_concurrent_connects before they started.";
    SESSION_LOSSES, Counter, "pgvigil_session_losses_total", ["target", "purpose", "reason"],
        "Sessions pgvigil lost without closing them itself, by purpose (main: a PostgreSQL target's main session or a PgBouncer admin console session; database) and reason: terminated (pg_terminate_backend or a server shutdown, 57P01), server_crash (57P02), idle_timeout (an idle timeout of the server's, 25P03 or 57P05), server_error (another server error), closed (the connection broke without one).";
    CONFIG_RELOAD_SUCCESSFUL, Gauge, "pgvigil_config_last_reload_successful", [],
        "1 if the last configuration reload (or the load at start) succeeded, 0 if it was rejected and the previous configuration still runs.";
    CONFIG_RELOAD_TIMESTAMP, Gauge, "pgvigil_config_last_reload_success_timestamp_seconds", [],
        "Unix time of the last successful configuration load (start or reload).";
}
