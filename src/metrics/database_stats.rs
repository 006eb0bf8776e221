//! Every database's activity from pg_stat_database and pg_stat_database_conflicts (collector
//! `database_stats`) and its size (collector `database_sizes`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    DATABASE_STATS_METRICS;

    DB_BACKENDS, Gauge, "pgvigil_database_backends", ["target", "datname"],
        "Backends connected to the database (pg_stat_database.numbackends).";
    DB_COMMITS, Counter, "pgvigil_database_xact_commits_total", ["target", "datname"],
        "Transactions committed in the database.";
    DB_ROLLBACKS, Counter, "pgvigil_database_xact_rollbacks_total", ["target", "datname"],
        "Transactions rolled back in the database.";
    DB_BLOCKS_READ, Counter, "pgvigil_database_blocks_read_total", ["target", "datname"],
        "Blocks read from disk (or the OS cache) in the database.";
    DB_BLOCKS_HIT, Counter, "pgvigil_database_blocks_hit_total", ["target", "datname"],
        "Blocks found in shared buffers in the database.";
    DB_TUPLES_RETURNED, Counter, "pgvigil_database_tuples_returned_total", ["target", "datname"],
        "Rows returned by sequential and index scans (live and dead rows scanned).";
    DB_TUPLES_FETCHED, Counter, "pgvigil_database_tuples_fetched_total", ["target", "datname"],
        "Live rows fetched by index scans.";
    DB_TUPLES_INSERTED, Counter, "pgvigil_database_tuples_inserted_total", ["target", "datname"],
        "Rows inserted in the database.";
    DB_TUPLES_UPDATED, Counter, "pgvigil_database_tuples_updated_total", ["target", "datname"],
        "Rows updated in the database.";
    DB_TUPLES_DELETED, Counter, "pgvigil_database_tuples_deleted_total", ["target", "datname"],
        "Rows deleted in the database.";
    DB_TEMP_FILES, Counter, "pgvigil_database_temp_files_total", ["target", "datname"],
        "Temporary files created by queries (sorts and hashes that did not fit in work_mem).";
    DB_TEMP_BYTES, Counter, "pgvigil_database_temp_bytes_total", ["target", "datname"],
        "Bytes written to temporary files by queries.";
    DB_DEADLOCKS, Counter, "pgvigil_database_deadlocks_total", ["target", "datname"],
        "Deadlocks detected in the database.";
    DB_CHECKSUM_FAILURES, Counter, "pgvigil_database_checksum_failures_total", ["target", "datname"],
        "Data page checksum failures found in the database; absent when data checksums are off.";
    DB_CHECKSUM_LAST_FAILURE, Gauge, "pgvigil_database_checksum_last_failure_timestamp_seconds", ["target", "datname"],
        "Unix time of the database's last checksum failure; absent when there was none.";
    DB_BLOCK_READ_SECONDS, Counter, "pgvigil_database_block_read_seconds_total", ["target", "datname"],
        "Time spent reading blocks (0 unless track_io_timing is on).";
    DB_BLOCK_WRITE_SECONDS, Counter, "pgvigil_database_block_write_seconds_total", ["target", "datname"],
        "Time spent writing blocks (0 unless track_io_timing is on).";
    DB_SESSION_SECONDS, Counter, "pgvigil_database_session_seconds_total", ["target", "datname"],
        "Time client sessions spent connected to the database (PostgreSQL 14+).";
    DB_ACTIVE_SECONDS, Counter, "pgvigil_database_active_seconds_total", ["target", "datname"],
        "Time client sessions spent running statements (PostgreSQL 14+).";
    DB_IDLE_IN_XACT_SECONDS, Counter, "pgvigil_database_idle_in_transaction_seconds_total", ["target", "datname"],
        "Time client sessions spent idle inside a transaction (PostgreSQL 14+).";
    DB_CLIENT_SESSIONS, Counter, "pgvigil_database_client_sessions_total", ["target", "datname"],
        "Client sessions established to the database (PostgreSQL 14+).";
    DB_SESSIONS_ABANDONED, Counter, "pgvigil_database_client_sessions_abandoned_total", ["target", "datname"],
        "Client sessions that ended because the client went away without closing (PostgreSQL 14+).";
    DB_SESSIONS_FATAL, Counter, "pgvigil_database_client_sessions_fatal_total", ["target", "datname"],
        "Client sessions ended by a fatal error (PostgreSQL 14+).";
    DB_SESSIONS_KILLED, Counter, "pgvigil_database_client_sessions_killed_total", ["target", "datname"],
        "Client sessions terminated by an operator (pg_terminate_backend; PostgreSQL 14+).";
    DB_STATS_RESET, Gauge, "pgvigil_database_stats_reset_timestamp_seconds", ["target", "datname"],
        "Unix time the database's statistics were last reset; absent if never.";
    DB_CONFLICTS, Counter, "pgvigil_database_conflicts_total", ["target", "datname", "reason"],
        "Queries cancelled on a standby by recovery conflicts, by reason (tablespace, lock, snapshot, bufferpin, deadlock, and logicalslot on 16+); 0 on a primary.";
    DB_SIZE, Gauge, "pgvigil_database_size_bytes", ["target", "datname"],
        "Size of the database on disk (pg_database_size), read on the slow schedule of the database_sizes collector.";
    DB_SIZES_UNMEASURED, Gauge, "pgvigil_database_sizes_unmeasured", ["target"],
        "Watched databases whose size could not be read in the last run (no CONNECT privilege, or an error; the log says which).";
}
