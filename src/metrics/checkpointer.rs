//! The checkpointer and the background writer, from pg_stat_checkpointer (PostgreSQL 17+) and
//! pg_stat_bgwriter (collector `checkpointer`). One set of names on every version; a counter a
//! version does not have is absent, never zero.

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    CHECKPOINTER_METRICS;

    CHECKPOINTS_TIMED, Counter, "pgvigil_checkpoints_timed_total", ["target"],
        "Checkpoints started because checkpoint_timeout elapsed (pg_stat_checkpointer.num_timed on 17+, pg_stat_bgwriter.checkpoints_timed before).";
    CHECKPOINTS_REQUESTED, Counter, "pgvigil_checkpoints_requested_total", ["target"],
        "Checkpoints requested before checkpoint_timeout (max_wal_size reached, CHECKPOINT, shutdown, ...): num_requested on 17+, checkpoints_req before.";
    CHECKPOINTS_DONE, Counter, "pgvigil_checkpoints_done_total", ["target"],
        "Checkpoints actually performed (skipped idle ones excluded); PostgreSQL 18+ only.";
    RESTARTPOINTS_TIMED, Counter, "pgvigil_restartpoints_timed_total", ["target"],
        "Restartpoints (a standby's checkpoints) started by checkpoint_timeout; PostgreSQL 17+ only.";
    RESTARTPOINTS_REQUESTED, Counter, "pgvigil_restartpoints_requested_total", ["target"],
        "Restartpoints requested before checkpoint_timeout; PostgreSQL 17+ only.";
    RESTARTPOINTS_DONE, Counter, "pgvigil_restartpoints_done_total", ["target"],
        "Restartpoints performed; PostgreSQL 17+ only.";
    CHECKPOINT_WRITE_TIME, Counter, "pgvigil_checkpoint_write_time_seconds_total", ["target"],
        "Time checkpoints and restartpoints spent writing their buffers to disk.";
    CHECKPOINT_SYNC_TIME, Counter, "pgvigil_checkpoint_sync_time_seconds_total", ["target"],
        "Time checkpoints and restartpoints spent waiting for fsync of the files they wrote.";
    CHECKPOINT_BUFFERS_WRITTEN, Counter, "pgvigil_checkpoint_buffers_written_total", ["target"],
        "Shared buffers written by checkpoints and restartpoints (buffers_written on 17+, buffers_checkpoint before).";
    CHECKPOINT_SLRU_WRITTEN, Counter, "pgvigil_checkpoint_slru_written_total", ["target"],
        "SLRU buffers (commit log, multixacts, ...) written by checkpoints and restartpoints; PostgreSQL 18+ only.";
    BGWRITER_BUFFERS_WRITTEN, Counter, "pgvigil_bgwriter_buffers_written_total", ["target"],
        "Shared buffers written by the background writer (pg_stat_bgwriter.buffers_clean).";
    BGWRITER_MAXWRITTEN, Counter, "pgvigil_bgwriter_maxwritten_clean_total", ["target"],
        "Times the background writer stopped a round because it had written bgwriter_lru_maxpages buffers.";
    BUFFERS_ALLOCATED, Counter, "pgvigil_buffers_allocated_total", ["target"],
        "Shared buffers allocated (pg_stat_bgwriter.buffers_alloc).";
    BACKEND_BUFFERS_WRITTEN, Counter, "pgvigil_backend_buffers_written_total", ["target"],
        "Shared buffers written by backends themselves, not by the checkpointer or background writer; up to PostgreSQL 16 (17+: pgvigil_io_operations_total op write).";
    BACKEND_BUFFERS_FSYNC, Counter, "pgvigil_backend_buffers_fsync_total", ["target"],
        "Times a backend had to fsync a file itself; up to PostgreSQL 16 (17+: pgvigil_io_operations_total op fsync).";
    CHECKPOINTER_STATS_RESET, Gauge, "pgvigil_checkpointer_stats_reset_timestamp_seconds", ["target"],
        "When the checkpointer statistics were last reset (Unix time; up to 16 the one reset of pg_stat_bgwriter).";
    BGWRITER_STATS_RESET, Gauge, "pgvigil_bgwriter_stats_reset_timestamp_seconds", ["target"],
        "When the background writer statistics were last reset (Unix time).";
}
