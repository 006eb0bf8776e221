//! I/O statistics from `pg_stat_io` (PostgreSQL 16+): reads, writes, extends, hits,
//! evictions, reuses, fsyncs, their bytes and their time, by backend type, object and context.
//!
//! Evictions in the `normal` context are the signal that `shared_buffers` is too small for the
//! working set, which no other view shows (nbari/pg_exporter#25); backend `write`s and
//! `fsync`s are what `pg_stat_bgwriter.buffers_backend*` were up to PostgreSQL 16.
//!
//! # The poll, step by step
//!
//! 1. One `SELECT` over `pg_stat_io`, at most a few dozen rows (one per backend type, object
//!    and context the server tracks), with the column list chosen from `server_version_num`
//!    ([`Dialect`]).
//! 2. [`summarise`] turns each row into counters with the operation as a label. A NULL (a
//!    combination the server never counts, such as `hits` of a bulk write) is an absent series.
//!
//! # Cost and locks
//!
//! The view reads the cumulative statistics in shared memory: no table, no heavyweight lock
//! beyond its catalog entries; safe while a DDL holds ACCESS EXCLUSIVE on a table. Readable by
//! every role.
//!
//! # Versions
//!
//! | server | what changed |
//! |---|---|
//! | 13 to 15 | no `pg_stat_io`: the collector is skipped |
//! | 16, 17 | operation counts and `op_bytes` (the block size): bytes are `reads * op_bytes`, ... |
//! | 18 | `op_bytes` is gone; `read_bytes`, `write_bytes`, `extend_bytes` are counted (WAL I/O, object `wal`, has other sizes) |
//!
//! Times stay zero unless `track_io_timing` (for object `wal` on 18: `track_wal_io_timing`) is on.

use super::registry::{CollectorSpec, Scope, Versions};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::metrics::{self, Snapshot};

/// The operations counted, in the query's column order.
pub const OPERATIONS: [&str; 8] = [
    "read",
    "write",
    "writeback",
    "extend",
    "hit",
    "eviction",
    "reuse",
    "fsync",
];
/// The operations whose bytes are counted, in the query's column order.
pub const BYTES: [&str; 3] = ["read", "write", "extend"];
/// The operations whose time is counted, in the query's column order.
pub const TIMES: [&str; 5] = ["read", "write", "writeback", "extend", "fsync"];

/// The shape of `pg_stat_io` in one server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL 16 and 17: `op_bytes`.
    V16,
    /// PostgreSQL 18 and newer: `read_bytes`, `write_bytes`, `extend_bytes`.
    V18,
}

impl Dialect {
    /// The dialect of a `server_version_num`.
    pub fn of(version_num: i32) -> Dialect {
        if version_num >= 180000 {
            Dialect::V18
        } else {
            Dialect::V16
        }
    }

    /// The query: the three labels, then [`OPERATIONS`], [`BYTES`] and [`TIMES`] as `float8`.
    pub fn sql(self) -> String {
        let bytes = match self {
            Dialect::V16 => "reads * op_bytes, writes * op_bytes, extends * op_bytes",
            Dialect::V18 => "read_bytes, write_bytes, extend_bytes",
        };
        let bytes = bytes
            .split(", ")
            .map(|e| format!("({e})::float8"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT backend_type, object, context,
       reads::float8, writes::float8, writebacks::float8, extends::float8,
       hits::float8, evictions::float8, reuses::float8, fsyncs::float8,
       {bytes},
       read_time / 1000.0, write_time / 1000.0, writeback_time / 1000.0,
       extend_time / 1000.0, fsync_time / 1000.0
  FROM pg_stat_io"
        )
    }
}

/// One row of `pg_stat_io`, in the metric's units.
#[derive(Debug, Clone, PartialEq)]
pub struct IoRow {
    /// `client backend`, `checkpointer`, `autovacuum worker`, ...
    pub backend_type: String,
    /// `relation`, `temp relation`, `wal` (18+).
    pub object: String,
    /// `normal`, `vacuum`, `bulkread`, `bulkwrite`, `init` (18+).
    pub context: String,
    /// Counts, as [`OPERATIONS`].
    pub operations: [Option<f64>; 8],
    /// Bytes, as [`BYTES`].
    pub bytes: [Option<f64>; 3],
    /// Seconds, as [`TIMES`].
    pub times: [Option<f64>; 5],
}

/// One metric, its operations and a row's values of them.
type Group<'a> = (
    &'static metrics::MetricDef,
    &'static [&'static str],
    &'a [Option<f64>],
);

/// The snapshot of the view's rows.
pub fn summarise(rows: &[IoRow]) -> Snapshot {
    let mut snap = Snapshot::default();
    for row in rows {
        let labels = |op: &str| {
            vec![
                row.backend_type.clone(),
                row.object.clone(),
                row.context.clone(),
                op.to_owned(),
            ]
        };
        let groups: [Group<'_>; 3] = [
            (&metrics::IO_OPERATIONS, &OPERATIONS, &row.operations),
            (&metrics::IO_BYTES, &BYTES, &row.bytes),
            (&metrics::IO_TIME, &TIMES, &row.times),
        ];
        for (metric, ops, values) in groups {
            for (op, value) in ops.iter().zip(values) {
                if let Some(value) = value {
                    snap.push(metric, labels(op), *value);
                }
            }
        }
    }
    snap
}

/// The pg_stat_io collector.
#[derive(Debug, Default)]
pub struct Io;

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "io",
    table: "io",
    reads: "pg_stat_io: I/O operations, bytes and time by backend type, object and context",
    scope: Scope::Cluster,
    versions: Versions::from(160000),
    grants: &[],
    metrics: metrics::IO_METRICS,
    section: |t| &t.io,
    build: |_| Box::new(Io),
    carry: |_, _| {},
};

impl ReportCollector for Io {
    const NAME: &'static str = SPEC.name;
    type Report = ();

    async fn poll(&mut self, ctx: &PollContext<'_>) -> Result<(Snapshot, ()), CollectError> {
        let sql = Dialect::of(ctx.server.version_num).sql();
        let rows = ctx.query(&sql, &[]).await?;
        let rows = rows
            .iter()
            .map(|r| {
                let mut row = IoRow {
                    backend_type: r.try_get(0)?,
                    object: r.try_get(1)?,
                    context: r.try_get(2)?,
                    operations: [None; 8],
                    bytes: [None; 3],
                    times: [None; 5],
                };
                let slots = row
                    .operations
                    .iter_mut()
                    .chain(row.bytes.iter_mut())
                    .chain(row.times.iter_mut());
                for (i, slot) in (3..).zip(slots) {
                    *slot = r.try_get(i)?;
                }
                Ok(row)
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        Ok((summarise(&rows), ()))
    }

    /// Metrics only: nothing for the rules.
    fn store((): (), _ctx: &PollContext<'_>, _observations: &mut Observations) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_from_op_bytes_before_18_and_from_their_columns_after() {
        assert_eq!(Dialect::of(160000), Dialect::V16);
        assert_eq!(Dialect::of(170006), Dialect::V16);
        assert_eq!(Dialect::of(180004), Dialect::V18);
        let v16 = Dialect::V16.sql();
        assert!(v16.contains("(reads * op_bytes)::float8"), "{v16}");
        assert!(!v16.contains("read_bytes"), "{v16}");
        let v18 = Dialect::V18.sql();
        assert!(v18.contains("(read_bytes)::float8"), "{v18}");
        assert!(!v18.contains("op_bytes"), "{v18}");
    }

    #[test]
    fn operations_are_labels_and_nulls_are_absent() {
        let mut operations = [Some(0.0); 8];
        operations[0] = Some(12.0);
        operations[4] = None; // no hits in this context
        operations[5] = Some(3.0);
        let row = IoRow {
            backend_type: "client backend".into(),
            object: "relation".into(),
            context: "normal".into(),
            operations,
            bytes: [Some(12.0 * 8192.0), Some(0.0), None],
            times: [Some(0.25), None, None, None, None],
        };
        let snap = summarise(&[row]);
        let ops = snap.get(&metrics::IO_OPERATIONS);
        assert_eq!(ops.len(), 7);
        let value = |op: &str| ops.iter().find(|s| s.labels[3] == op).map(|s| s.value);
        assert_eq!(value("read"), Some(12.0));
        assert_eq!(value("eviction"), Some(3.0));
        assert_eq!(value("hit"), None);
        assert_eq!(
            ops[0].labels[..3],
            ["client backend", "relation", "normal"].map(String::from)
        );
        assert_eq!(snap.get(&metrics::IO_BYTES).len(), 2);
        assert_eq!(snap.get(&metrics::IO_TIME)[0].value, 0.25);
    }
}
