//! The checkpointer and the background writer: `pg_stat_checkpointer` on PostgreSQL 17+,
//! `pg_stat_bgwriter` before, exported under one set of names.
//!
//! # The poll, step by step
//!
//! 1. One `SELECT` of one row: on 17+ `pg_stat_checkpointer CROSS JOIN pg_stat_bgwriter`, on
//!    13 to 16 `pg_stat_bgwriter` alone. The column list is chosen from `server_version_num`
//!    ([`Dialect`]); a counter the version does not have is not selected, so its series is
//!    absent rather than zero.
//! 2. [`summarise`] turns the row into counters (milliseconds into seconds, `stats_reset` into
//!    Unix time). Nothing is kept between polls: the server's counters are exported as they
//!    are, and Prometheus' `rate()` handles resets.
//!
//! # Cost and locks
//!
//! Both views read a few counters from shared memory (the cumulative statistics system): no
//! table is read, no heavyweight lock is taken beyond the views' own catalog entries, so a DDL
//! holding ACCESS EXCLUSIVE on a user table cannot stop it. Readable by every role.
//!
//! # Versions
//!
//! | server | where | what changed |
//! |---|---|---|
//! | 13 to 16 | `pg_stat_bgwriter` | `checkpoints_timed`, `checkpoints_req`, `buffers_checkpoint`, `buffers_backend`, `buffers_backend_fsync` |
//! | 17 | `pg_stat_checkpointer` + `pg_stat_bgwriter` | checkpoint counters move to `num_timed`, `num_requested`, `write_time`, `sync_time`, `buffers_written`; restartpoints are counted; the backend counters leave (see `pg_stat_io`) |
//! | 18 | the same | `num_done` (checkpoints performed, idle ones not) and `slru_written` |

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::metrics::{self, MetricDef, Snapshot};

/// The shape of the views in one server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL 13 to 16: everything in `pg_stat_bgwriter`.
    Bgwriter,
    /// PostgreSQL 17: `pg_stat_checkpointer` beside a slimmer `pg_stat_bgwriter`.
    Checkpointer17,
    /// PostgreSQL 18 and newer: `num_done` and `slru_written` as well.
    Checkpointer18,
}

impl Dialect {
    /// The dialect of a `server_version_num`.
    pub fn of(version_num: i32) -> Dialect {
        match version_num {
            ..170000 => Dialect::Bgwriter,
            170000..180000 => Dialect::Checkpointer17,
            _ => Dialect::Checkpointer18,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The columns this version has, in the order the query selects them.
    pub fn columns(self) -> impl Iterator<Item = (&'static MetricDef, &'static Column)> {
        COLUMNS
            .iter()
            .filter(move |c| c.expr[self.index()].is_some())
            .map(|c| (c.metric, c))
    }

    /// The query: one row, one `float8` per [`Dialect::columns`] entry.
    pub fn sql(self) -> String {
        let list = self
            .columns()
            .filter_map(|(_, c)| c.expr[self.index()])
            .map(|expr| format!("({expr})::float8"))
            .collect::<Vec<_>>()
            .join(",\n       ");
        let from = match self {
            Dialect::Bgwriter => "pg_stat_bgwriter b",
            _ => "pg_stat_checkpointer c CROSS JOIN pg_stat_bgwriter b",
        };
        format!("SELECT {list}\n  FROM {from}")
    }
}

/// One exported counter and where each dialect keeps it.
#[derive(Debug)]
pub struct Column {
    metric: &'static MetricDef,
    /// The SQL expression per [`Dialect`] (`b`: pg_stat_bgwriter, `c`: pg_stat_checkpointer),
    /// already in the metric's unit (the views count time in milliseconds); `None` where the
    /// version does not have it.
    expr: [Option<&'static str>; 3],
}

// Which dialects have a column: every one, one expression before 17 and another since,
// only before 17, only since 17, only since 18.
const fn all(expr: &'static str) -> [Option<&'static str>; 3] {
    [Some(expr), Some(expr), Some(expr)]
}

const fn moved(before_17: &'static str, since_17: &'static str) -> [Option<&'static str>; 3] {
    [Some(before_17), Some(since_17), Some(since_17)]
}

const fn before_17(expr: &'static str) -> [Option<&'static str>; 3] {
    [Some(expr), None, None]
}

const fn since_17(expr: &'static str) -> [Option<&'static str>; 3] {
    [None, Some(expr), Some(expr)]
}

const fn since_18(expr: &'static str) -> [Option<&'static str>; 3] {
    [None, None, Some(expr)]
}

const COLUMNS: &[Column] = &[
    Column {
        metric: &metrics::CHECKPOINTS_TIMED,
        expr: moved("b.checkpoints_timed", "c.num_timed"),
    },
    Column {
        metric: &metrics::CHECKPOINTS_REQUESTED,
        expr: moved("b.checkpoints_req", "c.num_requested"),
    },
    Column {
        metric: &metrics::CHECKPOINTS_DONE,
        expr: since_18("c.num_done"),
    },
    Column {
        metric: &metrics::RESTARTPOINTS_TIMED,
        expr: since_17("c.restartpoints_timed"),
    },
    Column {
        metric: &metrics::RESTARTPOINTS_REQUESTED,
        expr: since_17("c.restartpoints_req"),
    },
    Column {
        metric: &metrics::RESTARTPOINTS_DONE,
        expr: since_17("c.restartpoints_done"),
    },
    Column {
        metric: &metrics::CHECKPOINT_WRITE_TIME,
        expr: moved("b.checkpoint_write_time / 1000.0", "c.write_time / 1000.0"),
    },
    Column {
        metric: &metrics::CHECKPOINT_SYNC_TIME,
        expr: moved("b.checkpoint_sync_time / 1000.0", "c.sync_time / 1000.0"),
    },
    Column {
        metric: &metrics::CHECKPOINT_BUFFERS_WRITTEN,
        expr: moved("b.buffers_checkpoint", "c.buffers_written"),
    },
    Column {
        metric: &metrics::CHECKPOINT_SLRU_WRITTEN,
        expr: since_18("c.slru_written"),
    },
    Column {
        metric: &metrics::BGWRITER_BUFFERS_WRITTEN,
        expr: all("b.buffers_clean"),
    },
    Column {
        metric: &metrics::BGWRITER_MAXWRITTEN,
        expr: all("b.maxwritten_clean"),
    },
    Column {
        metric: &metrics::BUFFERS_ALLOCATED,
        expr: all("b.buffers_alloc"),
    },
    Column {
        metric: &metrics::BACKEND_BUFFERS_WRITTEN,
        expr: before_17("b.buffers_backend"),
    },
    Column {
        metric: &metrics::BACKEND_BUFFERS_FSYNC,
        expr: before_17("b.buffers_backend_fsync"),
    },
    Column {
        metric: &metrics::CHECKPOINTER_STATS_RESET,
        expr: moved(
            "extract(epoch FROM b.stats_reset)",
            "extract(epoch FROM c.stats_reset)",
        ),
    },
    Column {
        metric: &metrics::BGWRITER_STATS_RESET,
        expr: all("extract(epoch FROM b.stats_reset)"),
    },
];

/// The snapshot of one row: one series per column the version has and the server filled
/// (a NULL, such as a `stats_reset` never set, is absent too).
pub fn summarise(values: impl IntoIterator<Item = (&'static MetricDef, Option<f64>)>) -> Snapshot {
    let mut snap = Snapshot::default();
    for (metric, value) in values {
        if let Some(value) = value {
            snap.set(metric, value);
        }
    }
    snap
}

/// The checkpointer/bgwriter collector.
#[derive(Debug, Default)]
pub struct Checkpointer;

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "checkpointer",
    table: "checkpointer",
    reads: "pg_stat_checkpointer (17+) and pg_stat_bgwriter: checkpoints, restartpoints, buffers written",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &[],
    metrics: metrics::CHECKPOINTER_METRICS,
    section: |t| &t.checkpointer,
    build: |_| Box::new(Checkpointer),
    carry: |_, _| {},
};

impl ReportCollector for Checkpointer {
    const NAME: &'static str = SPEC.name;
    type Report = ();

    async fn poll(&mut self, ctx: &PollContext<'_>) -> Result<(Snapshot, ()), CollectError> {
        let dialect = Dialect::of(ctx.server.version_num);
        let row = ctx.query_one(&dialect.sql(), &[]).await?;
        let values = dialect
            .columns()
            .enumerate()
            .map(|(i, (metric, _))| Ok((metric, row.try_get::<_, Option<f64>>(i)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        Ok((summarise(values), ()))
    }

    /// Metrics only: nothing for the rules.
    fn store((): (), _ctx: &PollContext<'_>, _observations: &mut Observations) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_selects_its_own_columns() {
        assert_eq!(Dialect::of(130000), Dialect::Bgwriter);
        assert_eq!(Dialect::of(160004), Dialect::Bgwriter);
        assert_eq!(Dialect::of(170002), Dialect::Checkpointer17);
        assert_eq!(Dialect::of(180004), Dialect::Checkpointer18);

        let old = Dialect::Bgwriter.sql();
        assert!(old.contains("b.checkpoints_timed") && old.contains("b.buffers_backend_fsync"));
        assert!(
            !old.contains("pg_stat_checkpointer") && !old.contains("c."),
            "{old}"
        );
        let v17 = Dialect::Checkpointer17.sql();
        assert!(v17.contains("c.num_timed") && v17.contains("c.restartpoints_done"));
        assert!(
            !v17.contains("num_done") && !v17.contains("buffers_backend"),
            "{v17}"
        );
        let v18 = Dialect::Checkpointer18.sql();
        assert!(
            v18.contains("c.num_done") && v18.contains("c.slru_written"),
            "{v18}"
        );
        assert!(v18.contains("c.write_time / 1000.0"), "{v18}");
    }

    #[test]
    fn one_set_of_names_on_every_version() {
        let names = |d: Dialect| d.columns().map(|(m, _)| m.name).collect::<Vec<_>>();
        for d in [
            Dialect::Bgwriter,
            Dialect::Checkpointer17,
            Dialect::Checkpointer18,
        ] {
            let names = names(d);
            for common in [
                "pgvigil_checkpoints_timed_total",
                "pgvigil_checkpoints_requested_total",
                "pgvigil_checkpoint_write_time_seconds_total",
                "pgvigil_checkpoint_buffers_written_total",
                "pgvigil_bgwriter_buffers_written_total",
                "pgvigil_buffers_allocated_total",
            ] {
                assert!(names.contains(&common), "{d:?} lacks {common}");
            }
        }
        assert_eq!(names(Dialect::Bgwriter).len(), 12);
        assert_eq!(names(Dialect::Checkpointer17).len(), 13);
        assert_eq!(names(Dialect::Checkpointer18).len(), 15);
    }

    #[test]
    fn a_null_is_an_absent_series() {
        let snap = summarise([
            (&metrics::CHECKPOINTS_TIMED, Some(7.0)),
            (&metrics::CHECKPOINTER_STATS_RESET, None),
        ]);
        assert_eq!(snap.get(&metrics::CHECKPOINTS_TIMED)[0].value, 7.0);
        assert!(snap.get(&metrics::CHECKPOINTER_STATS_RESET).is_empty());
    }
}
