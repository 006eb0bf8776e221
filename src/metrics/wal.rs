//! The archiver, WAL statistics and the WAL directory (collectors `archiver` and
//! `wal_directory`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// The `archiver` collector's metrics, in the order of the README reference.
    ARCHIVER_METRICS;

    ARCHIVER_ENABLED, Gauge, "pgvigil_archiver_enabled", ["target"],
        "1 if this server archives WAL (archive_mode on, or always; on a standby only always), else 0.";
    ARCHIVER_ARCHIVED, Counter, "pgvigil_archiver_archived_total", ["target"],
        "WAL files archived successfully (pg_stat_archiver.archived_count).";
    ARCHIVER_FAILED, Counter, "pgvigil_archiver_failed_total", ["target"],
        "Failed attempts to archive a WAL file (pg_stat_archiver.failed_count).";
    ARCHIVER_LAST_ARCHIVED_AGE, Gauge, "pgvigil_archiver_last_archived_age_seconds", ["target"],
        "Seconds since the last WAL file was archived successfully; absent if none was since the statistics were reset.";
    ARCHIVER_LAST_FAILED_AGE, Gauge, "pgvigil_archiver_last_failed_age_seconds", ["target"],
        "Seconds since the last failed archive attempt; absent if none failed since the statistics were reset.";
    ARCHIVER_FAILING, Gauge, "pgvigil_archiver_failing", ["target"],
        "1 while the most recent archive attempt failed (its last failure is newer than its last success), else 0.";
    WAL_RECORDS, Counter, "pgvigil_wal_records_total", ["target"],
        "WAL records generated (pg_stat_wal, PostgreSQL 14+).";
    WAL_FPI, Counter, "pgvigil_wal_fpi_total", ["target"],
        "WAL full page images generated (pg_stat_wal, PostgreSQL 14+).";
    WAL_BYTES, Counter, "pgvigil_wal_bytes_total", ["target"],
        "Bytes of WAL generated (pg_stat_wal, PostgreSQL 14+).";
    WAL_BUFFERS_FULL, Counter, "pgvigil_wal_buffers_full_total", ["target"],
        "Times WAL was written out because the WAL buffers were full (pg_stat_wal, PostgreSQL 14+); raise wal_buffers if it climbs.";
    WAL_WRITES, Counter, "pgvigil_wal_writes_total", ["target"],
        "WAL buffer writes to disk (pg_stat_wal, PostgreSQL 14 to 17; on 18 see pg_stat_io).";
    WAL_SYNCS, Counter, "pgvigil_wal_syncs_total", ["target"],
        "WAL file syncs to disk (pg_stat_wal, PostgreSQL 14 to 17; on 18 see pg_stat_io).";
    WAL_WRITE_SECONDS, Counter, "pgvigil_wal_write_seconds_total", ["target"],
        "Time spent writing WAL to disk, 0 unless track_wal_io_timing is on (pg_stat_wal, PostgreSQL 14 to 17).";
    WAL_SYNC_SECONDS, Counter, "pgvigil_wal_sync_seconds_total", ["target"],
        "Time spent syncing WAL to disk, 0 unless track_wal_io_timing is on (pg_stat_wal, PostgreSQL 14 to 17).";
    WAL_STATS_RESET, Gauge, "pgvigil_wal_stats_reset_timestamp_seconds", ["target"],
        "Unix time pg_stat_wal was last reset (PostgreSQL 14+).";
}

super::catalogue! {
    /// The `wal_directory` collector's metrics, in the order of the README reference.
    WAL_DIRECTORY_METRICS;

    WAL_DIRECTORY_BYTES, Gauge, "pgvigil_wal_directory_bytes", ["target"],
        "Total size of the files in pg_wal (pg_ls_waldir), on the wal_directory collector's own slow schedule.";
    WAL_DIRECTORY_FILES, Gauge, "pgvigil_wal_directory_files", ["target"],
        "Files in pg_wal (pg_ls_waldir): WAL segments and history files.";
}
