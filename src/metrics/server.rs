//! The server itself: role, restarts, configuration (collector `server`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    SERVER_METRICS;

    SERVER_IN_RECOVERY, Gauge, "pgvigil_server_in_recovery", ["target"],
        "1 if the server is a standby (pg_is_in_recovery()), 0 if it is a primary.";
    SERVER_START_TIME, Gauge, "pgvigil_server_start_time_seconds", ["target"],
        "Unix time the postmaster started (pg_postmaster_start_time()); a change is a restart.";
    SERVER_UPTIME, Gauge, "pgvigil_server_uptime_seconds", ["target"],
        "Seconds since the postmaster started, by the server's clock.";
    SERVER_TIMELINE, Gauge, "pgvigil_server_timeline", ["target"],
        "Timeline of the last checkpoint (pg_control_checkpoint()); it grows at each promotion. Absent without EXECUTE on that function.";
    SERVER_CONFIG_LOAD_TIME, Gauge, "pgvigil_server_config_load_time_seconds", ["target"],
        "Unix time the server last loaded its configuration files (pg_conf_load_time()).";
    SETTINGS_PENDING_RESTART, Gauge, "pgvigil_settings_pending_restart", ["target"],
        "Settings changed in the configuration files that take effect only after a restart (pg_settings.pending_restart).";
    SETTING_PENDING_RESTART, Gauge, "pgvigil_setting_pending_restart", ["target", "name"],
        "1 for each setting whose change waits for a restart, by name.";
    SETTING, Gauge, "pgvigil_setting", ["target", "name"],
        "Value of the settings the runbooks cite, by name: memory in bytes, times in seconds, booleans as 0 or 1, others as PostgreSQL shows them; a setting the version lacks is absent.";
}
