//! The config file exactly as written: serde types that reject unknown keys and keep the spans
//! that validation errors point at. [`super::Config`] is what the rest of pgvigil sees.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::collectors::RawToggle;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) logging: RawLogging,
    #[serde(default)]
    pub(crate) telemetry: RawTelemetry,
    #[serde(default)]
    pub(crate) targets: Vec<Spanned<RawTarget>>,
    #[serde(default)]
    pub(crate) pgbouncers: Vec<Spanned<RawPgbouncer>>,
    #[serde(default)]
    pub(crate) alerts: super::alerts::RawAlerts,
    #[serde(default)]
    pub(crate) discovery: RawDiscovery,
}

/// `[discovery]`: targets from Prometheus file_sd files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    #[serde(default)]
    pub(crate) files: Vec<Spanned<String>>,
    pub(crate) refresh_interval: Option<Spanned<HumanDuration>>,
    pub(crate) defaults: Option<Spanned<RawTarget>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) web_config_file: Option<Spanned<String>>,
    pub(crate) auth_exempt_paths: Option<Spanned<Vec<String>>>,
    pub(crate) enable_lifecycle: Option<bool>,
    pub(crate) max_concurrent_connects: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogging {
    pub(crate) level: Option<Spanned<String>>,
    pub(crate) format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub(crate) otlp_enabled: Option<Spanned<bool>>,
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) service_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    /// Required in `[[targets]]`; absent in `[discovery.defaults]`.
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) dsn: Option<Spanned<String>>,
    pub(crate) dsn_env: Option<Spanned<String>>,
    pub(crate) password_file: Option<Spanned<String>>,
    pub(crate) tls_ca_file: Option<Spanned<String>>,
    pub(crate) tls_verify: Option<Spanned<String>>,
    pub(crate) tls_cert_file: Option<Spanned<String>>,
    pub(crate) tls_key_file: Option<Spanned<String>>,
    pub(crate) poll_interval: Option<Spanned<HumanDuration>>,
    pub(crate) connect_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) statement_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) lock_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) reconnect_max_backoff: Option<Spanned<HumanDuration>>,
    pub(crate) max_connections: Option<Spanned<i64>>,
    pub(crate) databases: Option<super::databases::RawDatabases>,
    #[serde(default)]
    pub(crate) activity: RawActivity,
    #[serde(default)]
    pub(crate) tables: RawTables,
    #[serde(default)]
    pub(crate) imports: RawImports,
    #[serde(default)]
    pub(crate) alerts: super::alerts::RawRuleTables,
    #[serde(default)]
    pub(crate) statements: RawStatements,
    // The server-health layer: collectors with only the uniform keys.
    #[serde(default)]
    pub(crate) server: RawToggle,
    #[serde(default)]
    pub(crate) database_stats: RawToggle,
    #[serde(default)]
    pub(crate) database_sizes: RawToggle,
    #[serde(default)]
    pub(crate) wraparound: RawToggle,
    // Replication, slots, archiver and WAL (issue 12): only the uniform keys.
    #[serde(default)]
    pub(crate) replication: RawToggle,
    #[serde(default)]
    pub(crate) replication_slots: RawToggle,
    #[serde(default)]
    pub(crate) archiver: RawToggle,
    #[serde(default)]
    pub(crate) wal_directory: RawToggle,
    // The server-health layer: checkpointer, I/O, locks (the common keys only).
    #[serde(default)]
    pub(crate) checkpointer: RawToggle,
    #[serde(default)]
    pub(crate) io: RawToggle,
    #[serde(default)]
    pub(crate) locks: RawToggle,
    // The schema guard.
    #[serde(default)]
    pub(crate) migrations: super::migrations::RawMigrations,
    // The schema guard (issue 14).
    #[serde(default)]
    pub(crate) indexes: super::indexes::RawIndexes,
    // The schema guard (issue 14): missing-index advice and rulebook lints.
    #[serde(default)]
    pub(crate) advice: super::advice::RawAdvice,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawActivity {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub(crate) application_names: Vec<String>,
}

/// `[[pgbouncers]]`: a PgBouncer admin console.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPgbouncer {
    pub(crate) name: Spanned<String>,
    pub(crate) dsn: Option<Spanned<String>>,
    pub(crate) dsn_env: Option<Spanned<String>>,
    pub(crate) password_file: Option<Spanned<String>>,
    pub(crate) tls_ca_file: Option<Spanned<String>>,
    pub(crate) tls_verify: Option<Spanned<String>>,
    pub(crate) tls_cert_file: Option<Spanned<String>>,
    pub(crate) tls_key_file: Option<Spanned<String>>,
    pub(crate) poll_interval: Option<Spanned<HumanDuration>>,
    pub(crate) connect_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) statement_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) reconnect_max_backoff: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub(crate) alerts: super::alerts::RawRuleTables,
    // The collectors, each with only the uniform keys.
    #[serde(default)]
    pub(crate) instance: RawToggle,
    #[serde(default)]
    pub(crate) pools: RawToggle,
    #[serde(default)]
    pub(crate) databases: RawToggle,
    #[serde(default)]
    pub(crate) stats: RawToggle,
}

// --- tables and imports (the data-loss guard) ------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTables {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub(crate) include: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) exclude: Vec<Spanned<String>>,
    pub(crate) max_tables: Option<Spanned<i64>>,
    pub(crate) max_tables_total: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) exact_count_tables: Vec<Spanned<String>>,
    pub(crate) exact_count_interval: Option<Spanned<HumanDuration>>,
    pub(crate) exact_count_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) exact_count_budget: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImports {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval: Option<Spanned<HumanDuration>>,
    pub(crate) grace_period: Option<Spanned<HumanDuration>>,
    pub(crate) recheck_window: Option<Spanned<HumanDuration>>,
    pub(crate) recheck_interval: Option<Spanned<HumanDuration>>,
    pub(crate) stall_after: Option<Spanned<HumanDuration>>,
    pub(crate) max_duration: Option<Spanned<HumanDuration>>,
    pub(crate) max_imports: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) audit_tables: Vec<Spanned<RawAuditTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuditTable {
    pub(crate) table: Spanned<String>,
    #[serde(default)]
    pub(crate) columns: RawAuditColumns,
}

/// Column names of an audit table, for apps that keep their own schema. Unset = DESIGN.md's name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuditColumns {
    pub(crate) import_id: Option<Spanned<String>>,
    pub(crate) target_table: Option<Spanned<String>>,
    pub(crate) id_column: Option<Spanned<String>>,
    pub(crate) source_name: Option<Spanned<String>>,
    pub(crate) expected_rows: Option<Spanned<String>>,
    pub(crate) rejected_rows: Option<Spanned<String>>,
    pub(crate) skipped_rows: Option<Spanned<String>>,
    pub(crate) reported_rows: Option<Spanned<String>>,
    pub(crate) xact_id: Option<Spanned<String>>,
    pub(crate) status: Option<Spanned<String>>,
    pub(crate) created_at: Option<Spanned<String>>,
    pub(crate) heartbeat_at: Option<Spanned<String>>,
    pub(crate) finished_at: Option<Spanned<String>>,
    pub(crate) error_message: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatements {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval: Option<Spanned<HumanDuration>>,
    pub(crate) top_k: Option<Spanned<i64>>,
    pub(crate) rank_window: Option<Spanned<HumanDuration>>,
    pub(crate) query_text_length: Option<Spanned<i64>>,
    pub(crate) baseline_window: Option<Spanned<HumanDuration>>,
    pub(crate) baseline_min_samples: Option<Spanned<i64>>,
}

/// A duration written the way people write them: `"15s"`, `"2m 30s"`, `"500ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"15s\", \"2m\" or \"500ms\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                let d = humantime::parse_duration(v).map_err(|e| {
                    E::custom(format!(
                        "invalid duration \"{v}\" ({e}); write a number with a unit, e.g. \"15s\", \"2m\", \"500ms\""
                    ))
                })?;
                // Key-specific bounds (PostgreSQL's) are checked where the key is known.
                if d > super::limits::MAX_DURATION {
                    return Err(E::custom(format!(
                        "duration \"{v}\" is too long; use at most \"365days\""
                    )));
                }
                Ok(HumanDuration(d))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a bare number ({v}) has no unit; write a duration string such as \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a bare number ({v}) has no unit; write a duration string such as \"{v}s\""
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
