//! `SHOW STATS`: per-database counters since PgBouncer started, times converted from
//! microseconds to seconds. PgBouncer keeps the counters, so they are exported as they are:
//! a PgBouncer restart is a counter reset, which `rate()` handles.

use super::{ADMIN_DATABASE, AdminRow, BouncerContext, micros, number, show, text};
use crate::collect::registry::{CollectorSpec, Scope, Versions};
use crate::collect::{BoxFuture, CollectError, Observations};
use crate::collect::{Collector, Pgbouncer};
use crate::metrics::{self, MetricDef, Snapshot};

const COMMAND: &str = "SHOW STATS";

/// (metric, column, column is in microseconds).
const COUNTERS: [(&MetricDef, &str, bool); 7] = [
    (&metrics::PGBOUNCER_TRANSACTIONS, "total_xact_count", false),
    (&metrics::PGBOUNCER_QUERIES, "total_query_count", false),
    (&metrics::PGBOUNCER_RECEIVED_BYTES, "total_received", false),
    (&metrics::PGBOUNCER_SENT_BYTES, "total_sent", false),
    (&metrics::PGBOUNCER_XACT_TIME, "total_xact_time", true),
    (&metrics::PGBOUNCER_QUERY_TIME, "total_query_time", true),
    (&metrics::PGBOUNCER_WAIT_TIME, "total_wait_time", true),
];

/// The `SHOW STATS` collector.
#[derive(Debug)]
pub(super) struct Stats;

impl Stats {
    async fn poll(&self, ctx: &BouncerContext<'_>) -> Result<Snapshot, CollectError> {
        summarise(&show(ctx.client, COMMAND).await?)
    }
}

/// The series of a `SHOW STATS` answer.
pub(super) fn summarise<R: AdminRow>(rows: &[R]) -> Result<Snapshot, CollectError> {
    let mut snap = Snapshot::default();
    for row in rows {
        let datname = text(row, COMMAND, "database")?;
        if datname == ADMIN_DATABASE {
            continue;
        }
        for (def, column, is_micros) in COUNTERS {
            let raw = number(row, COMMAND, column)?;
            let value = if is_micros { micros(raw) } else { raw as f64 };
            snap.push(def, vec![datname.to_owned()], value);
        }
    }
    Ok(snap)
}

/// The registry's entry (see [`crate::collect::registry`]).
pub(crate) const SPEC: CollectorSpec<Pgbouncer> = CollectorSpec {
    name: "pgbouncer_stats",
    table: "stats",
    reads: "SHOW STATS",
    scope: Scope::Cluster,
    versions: Versions::ANY,
    grants: &["stats_users"],
    metrics: &[
        &metrics::PGBOUNCER_TRANSACTIONS,
        &metrics::PGBOUNCER_QUERIES,
        &metrics::PGBOUNCER_RECEIVED_BYTES,
        &metrics::PGBOUNCER_SENT_BYTES,
        &metrics::PGBOUNCER_XACT_TIME,
        &metrics::PGBOUNCER_QUERY_TIME,
        &metrics::PGBOUNCER_WAIT_TIME,
    ],
    section: |b| &b.stats,
    build: |_| Box::new(Stats),
    carry: |_, _| {},
};

impl Collector<Pgbouncer> for Stats {
    fn name(&self) -> &'static str {
        "pgbouncer_stats"
    }

    fn collect<'a, 'c>(
        &'a mut self,
        ctx: &'a BouncerContext<'c>,
        _observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        Box::pin(self.poll(ctx))
    }
}
