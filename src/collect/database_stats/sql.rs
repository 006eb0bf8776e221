//! The SQL of the `database_stats` collector, chosen by server version, and the columns it
//! maps to metrics.
//!
//! One query reads `pg_stat_database` joined with `pg_stat_database_conflicts` (both are one
//! row per database, from the cumulative statistics; no catalog or table lock). Every column
//! arrives as `float8` and a column the server lacks is selected as `NULL`, which the
//! collector publishes as no series:
//!
//! | server | what changed |
//! |---|---|
//! | 13 | the baseline: counters, `checksum_failures` (NULL when checksums are off), `stats_reset` |
//! | 14 | `session_time`, `active_time`, `idle_in_transaction_time`, `sessions`, `sessions_abandoned`, `sessions_fatal`, `sessions_killed` |
//! | 16 | `pg_stat_database_conflicts.confl_active_logicalslot` |
//! | 18 | `parallel_workers_to_launch` / `_launched` (not exported) |

use crate::metrics::{self, MetricDef};

/// One exported column.
#[derive(Debug)]
pub struct Column {
    /// The expression, as `float8`.
    pub expr: &'static str,
    /// The first `server_version_num` that has it.
    pub since: i32,
    /// Where it goes.
    pub metric: &'static MetricDef,
    /// The `reason` label of a conflicts column.
    pub reason: Option<&'static str>,
}

const fn col(expr: &'static str, since: i32, metric: &'static MetricDef) -> Column {
    Column {
        expr,
        since,
        metric,
        reason: None,
    }
}

const fn conflict(expr: &'static str, since: i32, reason: &'static str) -> Column {
    Column {
        expr,
        since,
        metric: &metrics::DB_CONFLICTS,
        reason: Some(reason),
    }
}

/// Every exported column, in the order the query selects them (after `datname` and `now()`).
pub const COLUMNS: &[Column] = &[
    col("d.numbackends::float8", 0, &metrics::DB_BACKENDS),
    col("d.xact_commit::float8", 0, &metrics::DB_COMMITS),
    col("d.xact_rollback::float8", 0, &metrics::DB_ROLLBACKS),
    col("d.blks_read::float8", 0, &metrics::DB_BLOCKS_READ),
    col("d.blks_hit::float8", 0, &metrics::DB_BLOCKS_HIT),
    col("d.tup_returned::float8", 0, &metrics::DB_TUPLES_RETURNED),
    col("d.tup_fetched::float8", 0, &metrics::DB_TUPLES_FETCHED),
    col("d.tup_inserted::float8", 0, &metrics::DB_TUPLES_INSERTED),
    col("d.tup_updated::float8", 0, &metrics::DB_TUPLES_UPDATED),
    col("d.tup_deleted::float8", 0, &metrics::DB_TUPLES_DELETED),
    col("d.temp_files::float8", 0, &metrics::DB_TEMP_FILES),
    col("d.temp_bytes::float8", 0, &metrics::DB_TEMP_BYTES),
    col("d.deadlocks::float8", 0, &metrics::DB_DEADLOCKS),
    col(
        "d.checksum_failures::float8",
        0,
        &metrics::DB_CHECKSUM_FAILURES,
    ),
    col(
        "extract(epoch FROM d.checksum_last_failure)::float8",
        0,
        &metrics::DB_CHECKSUM_LAST_FAILURE,
    ),
    col(
        "d.blk_read_time / 1000.0",
        0,
        &metrics::DB_BLOCK_READ_SECONDS,
    ),
    col(
        "d.blk_write_time / 1000.0",
        0,
        &metrics::DB_BLOCK_WRITE_SECONDS,
    ),
    col(
        "d.session_time / 1000.0",
        140000,
        &metrics::DB_SESSION_SECONDS,
    ),
    col(
        "d.active_time / 1000.0",
        140000,
        &metrics::DB_ACTIVE_SECONDS,
    ),
    col(
        "d.idle_in_transaction_time / 1000.0",
        140000,
        &metrics::DB_IDLE_IN_XACT_SECONDS,
    ),
    col("d.sessions::float8", 140000, &metrics::DB_CLIENT_SESSIONS),
    col(
        "d.sessions_abandoned::float8",
        140000,
        &metrics::DB_SESSIONS_ABANDONED,
    ),
    col(
        "d.sessions_fatal::float8",
        140000,
        &metrics::DB_SESSIONS_FATAL,
    ),
    col(
        "d.sessions_killed::float8",
        140000,
        &metrics::DB_SESSIONS_KILLED,
    ),
    col(
        "extract(epoch FROM d.stats_reset)::float8",
        0,
        &metrics::DB_STATS_RESET,
    ),
    conflict("c.confl_tablespace::float8", 0, "tablespace"),
    conflict("c.confl_lock::float8", 0, "lock"),
    conflict("c.confl_snapshot::float8", 0, "snapshot"),
    conflict("c.confl_bufferpin::float8", 0, "bufferpin"),
    conflict("c.confl_deadlock::float8", 0, "deadlock"),
    conflict("c.confl_active_logicalslot::float8", 160000, "logicalslot"),
];

/// Index in [`COLUMNS`] of a metric's column (for the values the rules need).
pub fn index_of(metric: &MetricDef) -> usize {
    COLUMNS
        .iter()
        .position(|c| c.metric.name == metric.name && c.reason.is_none())
        .expect("a column of COLUMNS")
}

/// The query for a server of `version_num`: `datname`, `now()`, then [`COLUMNS`], for every
/// database that is no template (the shared-objects row has no `pg_database` entry).
pub fn stats_sql(version_num: i32) -> String {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|c| {
            if version_num >= c.since {
                c.expr.to_owned()
            } else {
                "NULL::float8".to_owned()
            }
        })
        .collect();
    format!(
        "SELECT d.datname::text, extract(epoch FROM now())::float8,
       {}
  FROM pg_stat_database d
  JOIN pg_database db ON db.oid = d.datid
  LEFT JOIN pg_stat_database_conflicts c ON c.datid = d.datid
 WHERE NOT db.datistemplate",
        columns.join(",\n       ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_a_version_lacks_are_null() {
        let pg13 = stats_sql(130000);
        assert!(!pg13.contains("sessions_killed") && !pg13.contains("logicalslot"));
        assert_eq!(pg13.matches("NULL::float8").count(), 8);
        let pg16 = stats_sql(160000);
        assert!(pg16.contains("d.sessions_killed") && pg16.contains("confl_active_logicalslot"));
        assert!(!pg16.contains("NULL::float8"));
    }
}
