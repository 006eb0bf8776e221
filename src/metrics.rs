//! Every metric pgvigil exports, defined once: name, help, type and label names.
//!
//! Two kinds of series live here:
//!
//! * **Snapshot metrics** describe the database. A collector fills a [`Snapshot`] during a poll
//!   and publishes it whole to the [`SnapshotStore`]; `/metrics` encodes the latest published
//!   snapshots through a [`Collector`] and therefore never waits on a database, never shows a
//!   half-finished poll, and drops series that a poll no longer reports (a dropped table, a
//!   database that went away) instead of repeating stale values.
//! * **Process metrics** describe pgvigil itself (`pgvigil_up`, poll durations, errors). They are
//!   ordinary `prometheus-client` families held in [`Metrics`].
//!
//! Both use the [`MetricDef`] constants below, and [`ALL`] lists every one of them: the README's
//! metrics reference and the dashboard/rule checks are tested against that list.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing value; its name ends in `_total`.
    Counter,
    /// A distribution with `_bucket`, `_sum` and `_count` series.
    Histogram,
}

/// One exported metric: what Prometheus sees.
#[derive(Debug)]
pub struct MetricDef {
    /// Full exported name (counters include `_total`).
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// Prometheus type.
    pub kind: Kind,
    /// Label names, in order.
    pub labels: &'static [&'static str],
}

impl MetricDef {
    /// The family name as `prometheus-client` wants it: counters without `_total`, which the
    /// encoder appends.
    pub fn family_name(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            _ => self.name,
        }
    }

    fn metric_type(&self) -> MetricType {
        match self.kind {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
            Kind::Histogram => MetricType::Histogram,
        }
    }
}

macro_rules! metric {
    ($ident:ident, $kind:ident, $name:literal, [$($label:literal),*], $help:literal) => {
        #[doc = concat!("`", $name, "`: ", $help)]
        pub const $ident: MetricDef = MetricDef {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            labels: &[$($label),*],
        };
    };
}

// --- pgvigil itself -------------------------------------------------------------------------

metric!(
    BUILD_INFO,
    Gauge,
    "pgvigil_build_info",
    ["version"],
    "pgvigil build information; always 1."
);
metric!(
    UP,
    Gauge,
    "pgvigil_up",
    ["target"],
    "1 if pgvigil's last connection attempt or poll of the target succeeded, 0 otherwise."
);
metric!(
    POLL_DURATION,
    Histogram,
    "pgvigil_poll_duration_seconds",
    ["target", "collector"],
    "Time one collector took to poll its target."
);
metric!(
    POLL_ERRORS,
    Counter,
    "pgvigil_poll_errors_total",
    ["target", "collector"],
    "Polls of a collector that failed."
);
metric!(
    LAST_SUCCESS,
    Gauge,
    "pgvigil_last_successful_poll_timestamp_seconds",
    ["target", "collector"],
    "Unix time of the collector's last successful poll."
);
metric!(
    CONNECT_ATTEMPTS,
    Counter,
    "pgvigil_connection_attempts_total",
    ["target", "result"],
    "Attempts to open the monitoring connection to the target, by result (success, failure)."
);

// --- server: pg_stat_activity and settings ------------------------------------------------

metric!(
    POSTGRES_INFO,
    Gauge,
    "pgvigil_postgres_info",
    ["target", "server_version"],
    "PostgreSQL server version of the target; always 1."
);
metric!(
    CONNECTIONS,
    Gauge,
    "pgvigil_connections",
    ["target", "datname", "usename", "state", "application_name"],
    "Client connections by database, user, state and application_name (allow-listed names, all others as other)."
);
metric!(
    BACKENDS,
    Gauge,
    "pgvigil_backends",
    ["target", "backend_type"],
    "Server processes by backend_type (client backend, autovacuum worker, walsender, ...)."
);
metric!(
    CONNECTIONS_WAITING,
    Gauge,
    "pgvigil_connections_waiting",
    ["target", "datname", "wait_event_type"],
    "Active client connections currently waiting, by wait_event_type (Lock, LWLock, IO, ...)."
);
metric!(
    MAX_CONNECTIONS,
    Gauge,
    "pgvigil_connections_max",
    ["target"],
    "The server's max_connections setting."
);
metric!(
    RESERVED_CONNECTIONS,
    Gauge,
    "pgvigil_connections_reserved",
    ["target"],
    "Connection slots reserved for superusers and pg_use_reserved_connections (not usable by applications)."
);
metric!(
    OLDEST_XACT_AGE,
    Gauge,
    "pgvigil_oldest_transaction_age_seconds",
    ["target"],
    "Age of the oldest open transaction of any client connection (0 when none)."
);
metric!(
    IDLE_IN_XACT_MAX_AGE,
    Gauge,
    "pgvigil_idle_in_transaction_max_age_seconds",
    ["target"],
    "How long the longest idle-in-transaction client session has sat idle (0 when none)."
);
metric!(
    WRITING_XACTS,
    Gauge,
    "pgvigil_transactions_with_writes",
    ["target", "datname"],
    "Open transactions that hold uncommitted writes (backend_xid assigned), by database."
);
metric!(
    WRITING_XACT_MAX_AGE,
    Gauge,
    "pgvigil_transactions_with_writes_max_age_seconds",
    ["target"],
    "Age of the oldest open transaction holding uncommitted writes (0 when none): an import that never committed."
);

// --- PgBouncer: SHOW POOLS / STATS / LISTS / DATABASES / CONFIG / VERSION --------------------
// `datname` and `usename` carry PgBouncer's database and user names, under the names
// pgvigil_connections uses, so a PgBouncer pool and its server connections join on them.

metric!(
    PGBOUNCER_INFO,
    Gauge,
    "pgvigil_pgbouncer_info",
    ["target", "version"],
    "PgBouncer version of the instance (SHOW VERSION); always 1."
);
metric!(
    PGBOUNCER_CLIENTS,
    Gauge,
    "pgvigil_pgbouncer_clients",
    ["target", "datname", "usename", "state"],
    "Client connections of a PgBouncer pool by state: active (linked to a server or idle), waiting (queued for a server), active_cancel_req, waiting_cancel_req."
);
metric!(
    PGBOUNCER_SERVERS,
    Gauge,
    "pgvigil_pgbouncer_servers",
    ["target", "datname", "usename", "state"],
    "Server connections of a PgBouncer pool by state: active, idle, used, tested, login, active_cancel, being_canceled."
);
metric!(
    PGBOUNCER_MAX_WAIT,
    Gauge,
    "pgvigil_pgbouncer_max_wait_seconds",
    ["target", "datname", "usename"],
    "How long the oldest client waiting in a PgBouncer pool has waited (0 when none wait)."
);
metric!(
    PGBOUNCER_TRANSACTIONS,
    Counter,
    "pgvigil_pgbouncer_transactions_total",
    ["target", "datname"],
    "Transactions PgBouncer pooled, by database (SHOW STATS total_xact_count)."
);
metric!(
    PGBOUNCER_QUERIES,
    Counter,
    "pgvigil_pgbouncer_queries_total",
    ["target", "datname"],
    "Queries PgBouncer pooled, by database (SHOW STATS total_query_count)."
);
metric!(
    PGBOUNCER_RECEIVED_BYTES,
    Counter,
    "pgvigil_pgbouncer_received_bytes_total",
    ["target", "datname"],
    "Bytes PgBouncer received from clients, by database."
);
metric!(
    PGBOUNCER_SENT_BYTES,
    Counter,
    "pgvigil_pgbouncer_sent_bytes_total",
    ["target", "datname"],
    "Bytes PgBouncer sent to clients, by database."
);
metric!(
    PGBOUNCER_XACT_TIME,
    Counter,
    "pgvigil_pgbouncer_transaction_time_seconds_total",
    ["target", "datname"],
    "Time spent in transactions (server connection linked to a client), by database."
);
metric!(
    PGBOUNCER_QUERY_TIME,
    Counter,
    "pgvigil_pgbouncer_query_time_seconds_total",
    ["target", "datname"],
    "Time spent actively running queries on servers, by database."
);
metric!(
    PGBOUNCER_WAIT_TIME,
    Counter,
    "pgvigil_pgbouncer_client_wait_time_seconds_total",
    ["target", "datname"],
    "Time clients spent waiting for a server connection, by database: its rate is the average number of waiting clients."
);
metric!(
    PGBOUNCER_LIST_ITEMS,
    Gauge,
    "pgvigil_pgbouncer_list_items",
    ["target", "list"],
    "Items in PgBouncer's internal lists (SHOW LISTS: databases, users, pools, free_clients, used_clients, login_clients, free_servers, used_servers, dns_*)."
);
metric!(
    PGBOUNCER_CLIENT_CONNECTIONS,
    Gauge,
    "pgvigil_pgbouncer_client_connections",
    ["target"],
    "Client connections open to the instance, pgvigil included (SHOW LISTS used_clients): compare with pgvigil_pgbouncer_max_client_connections."
);
metric!(
    PGBOUNCER_MAX_CLIENT_CONN,
    Gauge,
    "pgvigil_pgbouncer_max_client_connections",
    ["target"],
    "The instance's max_client_conn setting."
);
metric!(
    PGBOUNCER_DEFAULT_POOL_SIZE,
    Gauge,
    "pgvigil_pgbouncer_default_pool_size",
    ["target"],
    "The instance's default_pool_size setting."
);
metric!(
    PGBOUNCER_POOL_SIZE,
    Gauge,
    "pgvigil_pgbouncer_pool_size",
    ["target", "datname"],
    "Server connections a PgBouncer pool may open per user (SHOW DATABASES pool_size)."
);
metric!(
    PGBOUNCER_DB_MAX_CONNECTIONS,
    Gauge,
    "pgvigil_pgbouncer_database_max_connections",
    ["target", "datname"],
    "Server connections PgBouncer may open to a database over all users (max_db_connections; 0 means no limit)."
);
metric!(
    PGBOUNCER_DB_CURRENT_CONNECTIONS,
    Gauge,
    "pgvigil_pgbouncer_database_current_connections",
    ["target", "datname"],
    "Server connections PgBouncer has open to a database over all users."
);
metric!(
    PGBOUNCER_DB_PAUSED,
    Gauge,
    "pgvigil_pgbouncer_database_paused",
    ["target", "datname"],
    "1 if the database is PAUSEd in PgBouncer."
);
metric!(
    PGBOUNCER_DB_DISABLED,
    Gauge,
    "pgvigil_pgbouncer_database_disabled",
    ["target", "datname"],
    "1 if the database is DISABLEd in PgBouncer (new clients are rejected)."
);
metric!(
    PGBOUNCER_DB_INFO,
    Gauge,
    "pgvigil_pgbouncer_database_info",
    ["target", "datname", "server_datname", "host", "port"],
    "Where a PgBouncer database points: the server database name, host and port; always 1."
);

// --- tables: estimates, exact counts (collector "tables") ---------------------------------

metric!(
    TABLE_LIVE_ROWS,
    Gauge,
    "pgvigil_table_live_rows",
    ["target", "table"],
    "Estimated live rows of a table (pg_stat_user_tables.n_live_tup)."
);
metric!(
    TABLE_DEAD_ROWS,
    Gauge,
    "pgvigil_table_dead_rows",
    ["target", "table"],
    "Estimated dead rows of a table (n_dead_tup): deleted, updated or rolled back, not yet vacuumed."
);
metric!(
    TABLE_RELTUPLES,
    Gauge,
    "pgvigil_table_reltuples",
    ["target", "table"],
    "The planner's row estimate of a table (pg_class.reltuples) as of its last vacuum or analyze; -1 if never."
);
metric!(
    TABLE_SIZE,
    Gauge,
    "pgvigil_table_size_bytes",
    ["target", "table"],
    "Size of a table with its indexes and TOAST, from relpages as of its last vacuum or analyze (taken without locking the table)."
);
metric!(
    TABLE_INSERTED,
    Counter,
    "pgvigil_table_rows_inserted_total",
    ["target", "table"],
    "Rows inserted into a table, including inserts later rolled back (n_tup_ins)."
);
metric!(
    TABLE_UPDATED,
    Counter,
    "pgvigil_table_rows_updated_total",
    ["target", "table"],
    "Rows updated in a table (n_tup_upd)."
);
metric!(
    TABLE_DELETED,
    Counter,
    "pgvigil_table_rows_deleted_total",
    ["target", "table"],
    "Rows deleted from a table (n_tup_del); TRUNCATE is not counted here."
);
metric!(
    TABLE_LAST_MAINTENANCE,
    Gauge,
    "pgvigil_table_last_maintenance_timestamp_seconds",
    ["target", "table", "operation"],
    "Unix time of a table's last vacuum, autovacuum, analyze or autoanalyze (operation label); absent if never."
);
metric!(
    TABLES_EXPORTED,
    Gauge,
    "pgvigil_tables_exported",
    ["target"],
    "User tables whose statistics are exported after the include and exclude filters and the max_tables cap."
);
metric!(
    TABLES_OMITTED,
    Gauge,
    "pgvigil_tables_omitted",
    ["target"],
    "User tables matching the filters but cut off by max_tables (the smallest ones); raise max_tables to see them."
);
metric!(
    TABLE_EXACT_ROWS,
    Gauge,
    "pgvigil_table_exact_rows",
    ["target", "table"],
    "Rows of an allow-listed table by an exact count(*), as of the last successful count."
);
metric!(
    TABLE_EXACT_COUNT_TIMESTAMP,
    Gauge,
    "pgvigil_table_exact_count_timestamp_seconds",
    ["target", "table"],
    "Unix time of the last successful exact count of an allow-listed table."
);
metric!(
    TABLE_EXACT_COUNT_DURATION,
    Gauge,
    "pgvigil_table_exact_count_duration_seconds",
    ["target", "table"],
    "How long the last exact count of an allow-listed table took."
);
metric!(
    TABLE_EXACT_COUNTS,
    Counter,
    "pgvigil_table_exact_counts_total",
    ["target", "result"],
    "Exact counts by result: ok, error (timeout, permission), skipped (over budget or a run would overlap)."
);

// --- imports: audit-table reconciliation (collector "imports") ----------------------------

metric!(
    IMPORT_AUDIT_TABLES,
    Gauge,
    "pgvigil_import_audit_tables",
    ["target"],
    "Import audit tables being read (configured, or found by the name import_audit); 0 means no import is checked."
);
metric!(
    IMPORT_CHECKS,
    Counter,
    "pgvigil_import_checks_total",
    ["target", "result"],
    "Reconciliations of committed imports against their target tables, by verdict (ok, shortfall, surplus, mismatch, confirming, unknown, invalid)."
);
metric!(
    IMPORTS,
    Gauge,
    "pgvigil_imports",
    ["target", "status"],
    "Imports in the audit tables that are running or finished within the re-check window, by audit status."
);
metric!(
    IMPORT_VERDICTS,
    Gauge,
    "pgvigil_import_verdicts",
    ["target", "verdict"],
    "Imports by pgvigil's current verdict (ok, shortfall, surplus, mismatch, stalled, aborted, invalid, running, confirming, failed, unknown)."
);
metric!(
    IMPORT_MISSING_ROWS,
    Gauge,
    "pgvigil_import_missing_rows",
    ["target", "table"],
    "Rows missing from a target table over its confirmed import shortfalls: expected minus rejected minus skipped minus committed."
);
metric!(
    IMPORT_LAST_VERIFIED,
    Gauge,
    "pgvigil_import_last_verified_timestamp_seconds",
    ["target", "table"],
    "Unix time an import into the table was last counted and found complete."
);

// --- alerting (src/alert/) ---------------------------------------------------------------
// Process metrics about pgvigil's own alert engine: they describe pgvigil, not one target,
// so the first two carry no `target` label (see PROCESS_WIDE).

metric!(
    NOTIFICATIONS,
    Counter,
    "pgvigil_notifications_total",
    ["sink", "result"],
    "Alert notifications by sink (alertmanager, webhook, log) and result: sent, failed (an attempt that will be retried) or dropped (queue full)."
);
metric!(
    ALERTS,
    Gauge,
    "pgvigil_alerts",
    ["alertname", "severity", "state"],
    "Alerts pgvigil currently holds, by alertname, severity and state (pending, firing)."
);
metric!(
    ALERT_OBSERVATIONS_DROPPED,
    Counter,
    "pgvigil_alert_observations_dropped_total",
    ["target"],
    "Polls the alert engine could not evaluate because its queue was full; polling never waits for alerting."
);

// --- pg_stat_statements (src/collect/statements) ------------------------------------------
// Per-statement series exist for the sticky top-K per target plus one queryid="other" series,
// so each family has at most K+1 series per target.

metric!(
    STATEMENTS_AVAILABLE,
    Gauge,
    "pgvigil_statements_available",
    ["target", "reason"],
    "1 if pg_stat_statements can be read in the target database, 0 if not; reason is ok, insufficient_privilege (other roles statements hidden), not_installed, not_preloaded, permission_denied or error."
);
metric!(
    STATEMENTS_TRACKED,
    Gauge,
    "pgvigil_statements_tracked",
    ["target"],
    "Entries in pg_stat_statements at the last poll (all databases of the cluster)."
);
metric!(
    STATEMENTS_MAX,
    Gauge,
    "pgvigil_statements_max",
    ["target"],
    "The pg_stat_statements.max setting: entries beyond it evict the least used."
);
metric!(
    STATEMENTS_DEALLOCATIONS,
    Counter,
    "pgvigil_statements_deallocations_total",
    ["target"],
    "Entries pg_stat_statements evicted to make room, counted since pgvigil started watching (PostgreSQL 14+)."
);
metric!(
    STATEMENTS_RESETS,
    Counter,
    "pgvigil_statements_resets_total",
    ["target", "scope"],
    "Resets of pg_stat_statements pgvigil detected: scope all (stats_reset moved) or entry (counters went backwards)."
);
metric!(
    STATEMENT_INFO,
    Gauge,
    "pgvigil_statement_info",
    ["target", "queryid", "query"],
    "Normalised, truncated query text of each top-K statement; always 1."
);
metric!(
    STATEMENT_CALLS,
    Counter,
    "pgvigil_statement_calls_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Executions of a top-K statement (queryid other: all the rest), counted since pgvigil started watching it."
);
metric!(
    STATEMENT_EXEC_SECONDS,
    Counter,
    "pgvigil_statement_exec_seconds_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Execution time of a top-K statement (queryid other: all the rest)."
);
metric!(
    STATEMENT_PLAN_SECONDS,
    Counter,
    "pgvigil_statement_plan_seconds_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Planning time of a top-K statement (needs pg_stat_statements.track_planning)."
);
metric!(
    STATEMENT_ROWS,
    Counter,
    "pgvigil_statement_rows_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Rows returned or affected by a top-K statement."
);
metric!(
    STATEMENT_SHARED_BLOCKS_HIT,
    Counter,
    "pgvigil_statement_shared_blocks_hit_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Shared buffer hits of a top-K statement."
);
metric!(
    STATEMENT_SHARED_BLOCKS_READ,
    Counter,
    "pgvigil_statement_shared_blocks_read_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Shared blocks read (not found in shared buffers) by a top-K statement."
);
metric!(
    STATEMENT_SHARED_BLOCKS_DIRTIED,
    Counter,
    "pgvigil_statement_shared_blocks_dirtied_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Shared blocks dirtied by a top-K statement."
);
metric!(
    STATEMENT_SHARED_BLOCKS_WRITTEN,
    Counter,
    "pgvigil_statement_shared_blocks_written_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Shared blocks written by a top-K statement."
);
metric!(
    STATEMENT_TEMP_BLOCKS_READ,
    Counter,
    "pgvigil_statement_temp_blocks_read_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Temporary-file blocks read by a top-K statement."
);
metric!(
    STATEMENT_TEMP_BLOCKS_WRITTEN,
    Counter,
    "pgvigil_statement_temp_blocks_written_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Temporary-file blocks written by a top-K statement (work_mem too small)."
);
metric!(
    STATEMENT_BLOCK_READ_SECONDS,
    Counter,
    "pgvigil_statement_block_read_seconds_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Time a top-K statement spent reading blocks (needs track_io_timing)."
);
metric!(
    STATEMENT_BLOCK_WRITE_SECONDS,
    Counter,
    "pgvigil_statement_block_write_seconds_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "Time a top-K statement spent writing blocks (needs track_io_timing)."
);
metric!(
    STATEMENT_WAL_BYTES,
    Counter,
    "pgvigil_statement_wal_bytes_total",
    ["target", "datname", "usename", "queryid", "toplevel"],
    "WAL generated by a top-K statement (PostgreSQL 13+)."
);
metric!(
    DATABASE_STATEMENT_CALLS,
    Counter,
    "pgvigil_database_statement_calls_total",
    ["target", "datname"],
    "Executions of all statements in a database, counted since pgvigil started watching."
);
metric!(
    DATABASE_STATEMENT_EXEC_SECONDS,
    Counter,
    "pgvigil_database_statement_exec_seconds_total",
    ["target", "datname"],
    "Execution time of all statements in a database."
);
metric!(
    DATABASE_STATEMENT_ROWS,
    Counter,
    "pgvigil_database_statement_rows_total",
    ["target", "datname"],
    "Rows returned or affected by all statements in a database."
);

/// Every metric pgvigil can export. Order is the order of the README reference.
pub const ALL: &[&MetricDef] = &[
    &BUILD_INFO,
    &UP,
    &POLL_DURATION,
    &POLL_ERRORS,
    &LAST_SUCCESS,
    &CONNECT_ATTEMPTS,
    &POSTGRES_INFO,
    &CONNECTIONS,
    &BACKENDS,
    &CONNECTIONS_WAITING,
    &MAX_CONNECTIONS,
    &RESERVED_CONNECTIONS,
    &OLDEST_XACT_AGE,
    &IDLE_IN_XACT_MAX_AGE,
    &WRITING_XACTS,
    &WRITING_XACT_MAX_AGE,
    // PgBouncer
    &PGBOUNCER_INFO,
    &PGBOUNCER_CLIENTS,
    &PGBOUNCER_SERVERS,
    &PGBOUNCER_MAX_WAIT,
    &PGBOUNCER_TRANSACTIONS,
    &PGBOUNCER_QUERIES,
    &PGBOUNCER_RECEIVED_BYTES,
    &PGBOUNCER_SENT_BYTES,
    &PGBOUNCER_XACT_TIME,
    &PGBOUNCER_QUERY_TIME,
    &PGBOUNCER_WAIT_TIME,
    &PGBOUNCER_LIST_ITEMS,
    &PGBOUNCER_CLIENT_CONNECTIONS,
    &PGBOUNCER_MAX_CLIENT_CONN,
    &PGBOUNCER_DEFAULT_POOL_SIZE,
    &PGBOUNCER_POOL_SIZE,
    &PGBOUNCER_DB_MAX_CONNECTIONS,
    &PGBOUNCER_DB_CURRENT_CONNECTIONS,
    &PGBOUNCER_DB_PAUSED,
    &PGBOUNCER_DB_DISABLED,
    &PGBOUNCER_DB_INFO,
    // tables
    &TABLE_LIVE_ROWS,
    &TABLE_DEAD_ROWS,
    &TABLE_RELTUPLES,
    &TABLE_SIZE,
    &TABLE_INSERTED,
    &TABLE_UPDATED,
    &TABLE_DELETED,
    &TABLE_LAST_MAINTENANCE,
    &TABLES_EXPORTED,
    &TABLES_OMITTED,
    &TABLE_EXACT_ROWS,
    &TABLE_EXACT_COUNT_TIMESTAMP,
    &TABLE_EXACT_COUNT_DURATION,
    &TABLE_EXACT_COUNTS,
    // imports
    &IMPORT_AUDIT_TABLES,
    &IMPORT_CHECKS,
    &IMPORTS,
    &IMPORT_VERDICTS,
    &IMPORT_MISSING_ROWS,
    &IMPORT_LAST_VERIFIED,
    // alerting
    &NOTIFICATIONS,
    &ALERTS,
    &ALERT_OBSERVATIONS_DROPPED,
    // pg_stat_statements
    &STATEMENTS_AVAILABLE,
    &STATEMENTS_TRACKED,
    &STATEMENTS_MAX,
    &STATEMENTS_DEALLOCATIONS,
    &STATEMENTS_RESETS,
    &STATEMENT_INFO,
    &STATEMENT_CALLS,
    &STATEMENT_EXEC_SECONDS,
    &STATEMENT_PLAN_SECONDS,
    &STATEMENT_ROWS,
    &STATEMENT_SHARED_BLOCKS_HIT,
    &STATEMENT_SHARED_BLOCKS_READ,
    &STATEMENT_SHARED_BLOCKS_DIRTIED,
    &STATEMENT_SHARED_BLOCKS_WRITTEN,
    &STATEMENT_TEMP_BLOCKS_READ,
    &STATEMENT_TEMP_BLOCKS_WRITTEN,
    &STATEMENT_BLOCK_READ_SECONDS,
    &STATEMENT_BLOCK_WRITE_SECONDS,
    &STATEMENT_WAL_BYTES,
    &DATABASE_STATEMENT_CALLS,
    &DATABASE_STATEMENT_EXEC_SECONDS,
    &DATABASE_STATEMENT_ROWS,
];

/// Process metrics that describe the whole daemon rather than one target, and so carry no
/// `target` label. Keep this list short: everything about a database carries `target`.
pub const PROCESS_WIDE: &[&MetricDef] = &[&BUILD_INFO, &NOTIFICATIONS, &ALERTS];

/// Look a metric up by its exported name (including `_total`; histogram series suffixes are
/// resolved to their family).
pub fn find(name: &str) -> Option<&'static MetricDef> {
    ALL.iter()
        .copied()
        .find(|def| def.name == name)
        .or_else(|| {
            ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                ALL.iter()
                    .copied()
                    .find(|def| def.name == base && def.kind == Kind::Histogram)
            })
        })
}

/// The README's metrics reference: a Markdown table of [`ALL`]. A test keeps the README's copy
/// identical (run it with `PGVIGIL_BLESS=1` to rewrite the README after adding a metric).
pub fn reference_markdown() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for def in ALL {
        let kind = match def.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {} | {} |\n",
            def.name,
            def.labels.join(", "),
            def.help.replace('|', "\\|")
        ));
    }
    out
}

/// Buckets for poll durations: a healthy poll takes milliseconds, a stuck one hits the
/// statement timeout (seconds).
const POLL_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CollectorLabels {
    target: String,
    collector: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    target: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkResultLabels {
    sink: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    alertname: String,
    severity: &'static str,
    state: &'static str,
}

type PollHistograms = Family<CollectorLabels, Histogram, fn() -> Histogram>;

/// The process metrics plus the store of snapshot metrics, and the registry that encodes both.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    store: Arc<SnapshotStore>,
    up: Family<TargetLabels, Gauge>,
    poll_duration: PollHistograms,
    poll_errors: Family<CollectorLabels, Counter>,
    last_success: Family<CollectorLabels, Gauge<f64, AtomicU64>>,
    connect_attempts: Family<ResultLabels, Counter>,
    // alerting
    notifications: Family<SinkResultLabels, Counter>,
    alerts: Family<AlertLabels, Gauge>,
    alert_observations_dropped: Family<TargetLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create the registry with every process metric registered and the snapshot collector
    /// attached.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let store = Arc::new(SnapshotStore::default());

        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        register(&mut registry, &BUILD_INFO, build_info);
        let up = Family::default();
        register(&mut registry, &UP, up.clone());
        let poll_duration: PollHistograms =
            Family::new_with_constructor(|| Histogram::new(POLL_BUCKETS));
        register(&mut registry, &POLL_DURATION, poll_duration.clone());
        let poll_errors = Family::default();
        register(&mut registry, &POLL_ERRORS, poll_errors.clone());
        let last_success = Family::default();
        register(&mut registry, &LAST_SUCCESS, last_success.clone());
        let connect_attempts = Family::default();
        register(&mut registry, &CONNECT_ATTEMPTS, connect_attempts.clone());

        // alerting
        let notifications = Family::default();
        register(&mut registry, &NOTIFICATIONS, notifications.clone());
        let alerts = Family::default();
        register(&mut registry, &ALERTS, alerts.clone());
        let alert_observations_dropped = Family::default();
        register(
            &mut registry,
            &ALERT_OBSERVATIONS_DROPPED,
            alert_observations_dropped.clone(),
        );

        registry.register_collector(Box::new(SnapshotCollector(store.clone())));

        Metrics {
            registry,
            store,
            up,
            poll_duration,
            poll_errors,
            last_success,
            connect_attempts,
            notifications,
            alerts,
            alert_observations_dropped,
        }
    }

    /// The store collectors publish their snapshots to.
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// Record whether a target is reachable and pollable.
    pub fn set_up(&self, target: &str, up: bool) {
        self.up
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .set(i64::from(up));
    }

    /// Record one connection attempt.
    pub fn connect_attempt(&self, target: &str, ok: bool) {
        self.connect_attempts
            .get_or_create(&ResultLabels {
                target: target.to_owned(),
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    /// Record the outcome of one collector poll.
    pub fn poll_finished(&self, target: &str, collector: &str, seconds: f64, ok: bool) {
        let labels = CollectorLabels {
            target: target.to_owned(),
            collector: collector.to_owned(),
        };
        self.poll_duration.get_or_create(&labels).observe(seconds);
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            self.last_success.get_or_create(&labels).set(now);
        } else {
            self.poll_errors.get_or_create(&labels).inc();
        }
    }

    /// Count one alert notification outcome (`result`: sent, failed, dropped).
    pub fn notification(&self, sink: &'static str, result: &'static str, n: u64) {
        self.notifications
            .get_or_create(&SinkResultLabels { sink, result })
            .inc_by(n);
    }

    /// Set how many alerts of one name, severity and state pgvigil holds.
    pub fn set_alerts(&self, alertname: &str, severity: &'static str, state: &'static str, n: i64) {
        self.alerts
            .get_or_create(&AlertLabels {
                alertname: alertname.to_owned(),
                severity,
                state,
            })
            .set(n);
    }

    /// Count a poll whose observations the alert engine had no room for.
    pub fn alert_observations_dropped(&self, target: &str) {
        self.alert_observations_dropped
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .inc();
    }

    /// Encode everything in the OpenMetrics text format.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Encode everything in the classic Prometheus text format (0.0.4), for clients that do not
    /// ask for OpenMetrics (curl, `promtool check metrics`, older scrapers).
    pub fn encode_classic(&self) -> String {
        crate::exposition::openmetrics_to_classic(&self.encode_openmetrics())
    }
}

fn register<M>(registry: &mut Registry, def: &MetricDef, metric: M)
where
    M: prometheus_client::registry::Metric,
{
    // The registry appends the final period itself.
    registry.register(def.family_name(), def.help.trim_end_matches('.'), metric);
}

/// One series: label values (in the order of the metric's `labels`, after `target`) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label values for the metric's labels other than `target`.
    pub labels: Vec<String>,
    /// The sample value.
    pub value: f64,
}

/// The metrics one collector produced in one poll of one target.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    series: HashMap<&'static str, Vec<Series>>,
}

impl Snapshot {
    /// Add a sample. `labels` are the values for `def.labels` without the leading `target`.
    pub fn push(&mut self, def: &'static MetricDef, labels: Vec<String>, value: f64) {
        debug_assert_eq!(
            def.labels.first(),
            Some(&"target"),
            "snapshot metric {} must carry a target label",
            def.name
        );
        debug_assert_eq!(
            labels.len() + 1,
            def.labels.len(),
            "wrong label count for {}",
            def.name
        );
        debug_assert!(def.kind != Kind::Histogram, "snapshots hold no histograms");
        self.series
            .entry(def.name)
            .or_default()
            .push(Series { labels, value });
    }

    /// Add a sample with no labels besides `target`.
    pub fn set(&mut self, def: &'static MetricDef, value: f64) {
        self.push(def, Vec::new(), value);
    }

    /// The series recorded for one metric.
    pub fn get(&self, def: &MetricDef) -> &[Series] {
        self.series.get(def.name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of series in the snapshot.
    pub fn len(&self) -> usize {
        self.series.values().map(Vec::len).sum()
    }

    /// Whether the snapshot holds no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The latest snapshot of every (target, collector) pair.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    // A std RwLock: it is never held across an await, and scrapes only read.
    inner: RwLock<BTreeMap<String, BTreeMap<&'static str, Arc<Snapshot>>>>,
}

impl SnapshotStore {
    /// Replace the snapshot a collector published for a target.
    pub fn publish(&self, target: &str, collector: &'static str, snapshot: Snapshot) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner
            .entry(target.to_owned())
            .or_default()
            .insert(collector, Arc::new(snapshot));
    }

    /// Drop what a collector last published (it failed; stale values would mislead).
    pub fn retract(&self, target: &str, collector: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(by_collector) = inner.get_mut(target) {
            by_collector.remove(collector);
        }
    }

    /// Drop everything published for a target (it is down).
    pub fn clear_target(&self, target: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.remove(target);
    }

    /// The latest snapshot of one collector for one target.
    pub fn latest(&self, target: &str, collector: &str) -> Option<Arc<Snapshot>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.get(target)?.get(collector).cloned()
    }

    fn all(&self) -> Vec<(String, Arc<Snapshot>)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .iter()
            .flat_map(|(target, by_collector)| {
                by_collector
                    .values()
                    .map(move |snap| (target.clone(), snap.clone()))
            })
            .collect()
    }
}

#[derive(Debug)]
struct SnapshotCollector(Arc<SnapshotStore>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Copy the Arcs out so the lock is not held while encoding.
        let snapshots = self.0.all();
        for def in ALL.iter().copied() {
            if def.labels.first() != Some(&"target") || is_process_metric(def) {
                continue;
            }
            let mut present = snapshots
                .iter()
                .filter(|(_, snap)| !snap.get(def).is_empty())
                .peekable();
            if present.peek().is_none() {
                continue;
            }
            let mut family =
                encoder.encode_descriptor(def.family_name(), def.help, None, def.metric_type())?;
            for (target, snap) in present {
                for series in snap.get(def) {
                    let labels: Vec<(&str, &str)> = std::iter::once(("target", target.as_str()))
                        .chain(
                            def.labels[1..]
                                .iter()
                                .copied()
                                .zip(series.labels.iter().map(String::as_str)),
                        )
                        .collect();
                    let encoder = family.encode_family(&labels)?;
                    match def.kind {
                        Kind::Counter => ConstCounter::new(series.value).encode(encoder)?,
                        _ => ConstGauge::new(series.value).encode(encoder)?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Metrics held as process families in [`Metrics`] rather than published in snapshots.
fn is_process_metric(def: &MetricDef) -> bool {
    [
        &BUILD_INFO,
        &UP,
        &POLL_DURATION,
        &POLL_ERRORS,
        &LAST_SUCCESS,
        &CONNECT_ATTEMPTS,
        // alerting
        &NOTIFICATIONS,
        &ALERTS,
        &ALERT_OBSERVATIONS_DROPPED,
    ]
    .iter()
    .any(|d| d.name == def.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for def in ALL {
            assert!(def.name.starts_with("pgvigil_"), "{}", def.name);
            assert!(seen.insert(def.name), "{} defined twice", def.name);
            assert_eq!(
                def.kind == Kind::Counter,
                def.name.ends_with("_total"),
                "{}: _total is for counters only",
                def.name
            );
            assert!(!def.name.ends_with("_milliseconds"), "{}", def.name);
            if PROCESS_WIDE.iter().any(|d| d.name == def.name) {
                assert!(
                    is_process_metric(def),
                    "{} has no target: process only",
                    def.name
                );
                assert!(!def.labels.contains(&"target"), "{}", def.name);
            } else {
                assert_eq!(def.labels.first(), Some(&"target"), "{}", def.name);
            }
            assert!(def.help.len() > 10, "{} needs a real help text", def.name);
            // HELP is written unescaped by the encoder: keep it to characters both text formats
            // read the same way.
            assert!(
                !def.help.contains(['"', '\\', '\n']),
                "{}: help must not contain quotes, backslashes or newlines",
                def.name
            );
        }
    }

    #[test]
    fn snapshot_series_are_encoded_with_target_and_replaced_whole() {
        let metrics = Metrics::new();
        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 100.0);
        snap.push(&WRITING_XACTS, vec!["app".into()], 2.0);
        metrics.store().publish("main", "activity", snap);
        let text = metrics.encode_openmetrics();
        assert!(
            text.contains("pgvigil_connections_max{target=\"main\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("pgvigil_transactions_with_writes{target=\"main\",datname=\"app\"} 2"),
            "{text}"
        );

        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 50.0);
        metrics.store().publish("main", "activity", snap);
        let text = metrics.encode_openmetrics();
        assert!(
            text.contains("pgvigil_connections_max{target=\"main\"} 50"),
            "{text}"
        );
        assert!(!text.contains("pgvigil_transactions_with_writes"), "{text}");

        metrics.store().clear_target("main");
        assert!(
            !metrics
                .encode_openmetrics()
                .contains("pgvigil_connections_max")
        );
    }

    #[test]
    fn process_metrics_are_registered_under_their_defined_names() {
        let metrics = Metrics::new();
        metrics.set_up("main", true);
        metrics.poll_finished("main", "activity", 0.002, false);
        metrics.connect_attempt("main", true);
        let text = metrics.encode_classic();
        for def in [&UP, &POLL_ERRORS, &CONNECT_ATTEMPTS, &BUILD_INFO] {
            assert!(
                text.contains(&format!("# TYPE {} ", def.name)),
                "{} missing in\n{text}",
                def.name
            );
        }
        assert!(
            text.contains("pgvigil_poll_duration_seconds_bucket{"),
            "{text}"
        );
    }

    #[test]
    fn readme_metrics_reference_is_current() {
        crate::readme::assert_generated_block(
            "metrics-reference",
            &reference_markdown(),
            "src/metrics.rs",
        );
    }

    #[test]
    fn find_resolves_histogram_series() {
        assert_eq!(
            find("pgvigil_poll_duration_seconds_bucket").map(|d| d.name),
            Some(POLL_DURATION.name)
        );
        assert!(find("pgvigil_nope").is_none());
    }
}
