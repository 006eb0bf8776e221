//! I/O by backend type, object and context, from pg_stat_io (PostgreSQL 16+; collector `io`).
//! The operation is a label, so the three metrics cover every column of the view on 16, 17
//! and 18; a combination the server never counts (NULL in the view) is absent.

use super::{Kind, MetricDef};

super::catalogue! {
    /// Every metric of this file, in the order of the README reference.
    IO_METRICS;

    IO_OPERATIONS, Counter, "pgvigil_io_operations_total", ["target", "backend_type", "object", "context", "op"],
        "I/O operations from pg_stat_io; op is read, write, writeback, extend, hit, eviction, reuse or fsync (evictions show shared_buffers pressure).";
    IO_BYTES, Counter, "pgvigil_io_bytes_total", ["target", "backend_type", "object", "context", "op"],
        "Bytes read, written and extended (op read, write, extend): the view's *_bytes columns on 18+, operations times op_bytes on 16 and 17.";
    IO_TIME, Counter, "pgvigil_io_time_seconds_total", ["target", "backend_type", "object", "context", "op"],
        "Time spent in I/O operations (op read, write, writeback, extend, fsync); stays 0 unless track_io_timing is on (track_wal_io_timing for object wal).";
}
