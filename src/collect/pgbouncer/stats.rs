//! `SHOW STATS`: per-database counters since PgBouncer started, times converted from
//! microseconds to seconds. PgBouncer keeps the counters, so they are exported as they are:
//! a PgBouncer restart is a counter reset, which `rate()` handles.

use super::{
    ADMIN_DATABASE, AdminRow, BouncerCollector, BouncerContext, micros, number, show, text,
};
use crate::collect::{BoxFuture, CollectError, Observations};
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

impl BouncerCollector for Stats {
    fn name(&self) -> &'static str {
        "pgbouncer_stats"
    }

    fn collect<'a>(
        &'a mut self,
        ctx: &'a BouncerContext<'a>,
        _observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        Box::pin(self.poll(ctx))
    }
}
