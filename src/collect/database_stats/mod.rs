//! Every database's activity from `pg_stat_database` and `pg_stat_database_conflicts`, as
//! `_total` counters, plus the per-database facts the DeadlocksDetected and ChecksumFailures
//! rules need.
//!
//! One poll, over the main session:
//!
//! 1. one query ([`sql::stats_sql`], chosen by server version) returns a row per database
//!    of the cluster that is no template (the shared-objects row left out);
//! 2. [`DatabaseStats::summarise`] (pure) keeps the databases `[targets.databases]` selects,
//!    publishes each non-NULL column as a series, and counts the
//!    deadlocks since the previous poll (a statistics reset counts from zero again).
//!
//! Cost: the cumulative statistics of the cluster's databases, a few microseconds per
//! database; no catalog or table lock, so it runs while a DDL holds ACCESS EXCLUSIVE on any
//! table. Versions: see [`sql`] (the session counters are 14+, the logical-slot conflicts
//! 16+); a column a version lacks is an absent series.

pub mod sql;

use std::collections::{BTreeMap, HashMap};

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::config::DatabasesConfig;
use crate::metrics::{self, Snapshot};

/// One database's row: its name, the server's `now()`, and [`sql::COLUMNS`].
#[derive(Debug, Clone, PartialEq)]
pub struct StatRow {
    /// `datname`.
    pub datname: String,
    /// The server's clock, Unix seconds.
    pub now: f64,
    /// One value per [`sql::COLUMNS`] entry; `None`: NULL or absent in this version.
    pub values: Vec<Option<f64>>,
}

/// One database's facts for the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseStat {
    /// Deadlocks counted since the statistics were reset.
    pub deadlocks: f64,
    /// Deadlocks since the previous poll (`None` on the first poll of the database).
    pub new_deadlocks: Option<f64>,
    /// Checksum failures since the reset; `None` when data checksums are off.
    pub checksum_failures: Option<f64>,
    /// Unix time of the last checksum failure, if any.
    pub checksum_last_failure: Option<f64>,
    /// The server's clock at the poll.
    pub now: f64,
}

/// What the database_stats collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseStatsReport {
    /// By database name.
    pub databases: BTreeMap<String, DatabaseStat>,
}

/// The pg_stat_database collector; remembers each database's deadlock counter. Which
/// databases it reports is read from the target's config at every poll, so a reload that
/// changes `[targets.databases]` applies at once.
#[derive(Debug, Default)]
pub struct DatabaseStats {
    deadlocks: HashMap<String, f64>,
}

impl DatabaseStats {
    /// Series and the rules' facts from one poll's rows.
    pub fn summarise(
        &mut self,
        watched: &DatabasesConfig,
        rows: Vec<StatRow>,
    ) -> (Snapshot, DatabaseStatsReport) {
        let mut snap = Snapshot::default();
        let mut report = DatabaseStatsReport::default();
        let deadlocks_at = sql::index_of(&metrics::DB_DEADLOCKS);
        let failures_at = sql::index_of(&metrics::DB_CHECKSUM_FAILURES);
        let last_failure_at = sql::index_of(&metrics::DB_CHECKSUM_LAST_FAILURE);
        let mut seen = HashMap::new();
        for row in rows {
            if !watched.selects(&row.datname) {
                continue;
            }
            for (column, value) in sql::COLUMNS.iter().zip(&row.values) {
                let Some(value) = value else { continue };
                let mut labels = vec![row.datname.clone()];
                labels.extend(column.reason.map(str::to_owned));
                snap.push(column.metric, labels, *value);
            }
            let deadlocks = row.values[deadlocks_at].unwrap_or(0.0);
            let new_deadlocks = self.deadlocks.get(&row.datname).map(|&before| {
                // A reset starts the counter again from zero: what it shows now is new.
                if deadlocks >= before {
                    deadlocks - before
                } else {
                    deadlocks
                }
            });
            seen.insert(row.datname.clone(), deadlocks);
            report.databases.insert(
                row.datname,
                DatabaseStat {
                    deadlocks,
                    new_deadlocks,
                    checksum_failures: row.values[failures_at],
                    checksum_last_failure: row.values[last_failure_at],
                    now: row.now,
                },
            );
        }
        // Dropped databases are forgotten.
        self.deadlocks = seen;
        (snap, report)
    }
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "database_stats",
    table: "database_stats",
    reads: "pg_stat_database (commits, rollbacks, blocks, tuples, temp files, deadlocks, checksum failures, session counters on 14+, stats_reset) and pg_stat_database_conflicts, for every watched database",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: &[
        &metrics::DB_BACKENDS,
        &metrics::DB_COMMITS,
        &metrics::DB_ROLLBACKS,
        &metrics::DB_BLOCKS_READ,
        &metrics::DB_BLOCKS_HIT,
        &metrics::DB_TUPLES_RETURNED,
        &metrics::DB_TUPLES_FETCHED,
        &metrics::DB_TUPLES_INSERTED,
        &metrics::DB_TUPLES_UPDATED,
        &metrics::DB_TUPLES_DELETED,
        &metrics::DB_TEMP_FILES,
        &metrics::DB_TEMP_BYTES,
        &metrics::DB_DEADLOCKS,
        &metrics::DB_CHECKSUM_FAILURES,
        &metrics::DB_CHECKSUM_LAST_FAILURE,
        &metrics::DB_BLOCK_READ_SECONDS,
        &metrics::DB_BLOCK_WRITE_SECONDS,
        &metrics::DB_SESSION_SECONDS,
        &metrics::DB_ACTIVE_SECONDS,
        &metrics::DB_IDLE_IN_XACT_SECONDS,
        &metrics::DB_CLIENT_SESSIONS,
        &metrics::DB_SESSIONS_ABANDONED,
        &metrics::DB_SESSIONS_FATAL,
        &metrics::DB_SESSIONS_KILLED,
        &metrics::DB_STATS_RESET,
        &metrics::DB_CONFLICTS,
    ],
    section: |t| &t.database_stats,
    build: |_| Box::new(DatabaseStats::default()),
    carry: |from, to| to.database_stats = from.database_stats.clone(),
};

impl ReportCollector for DatabaseStats {
    const NAME: &'static str = SPEC.name;
    type Report = DatabaseStatsReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, DatabaseStatsReport), CollectError> {
        let rows = ctx
            .query(&sql::stats_sql(ctx.server.version_num), &[])
            .await?;
        let rows = rows
            .iter()
            .map(|r| {
                let values = (0..sql::COLUMNS.len())
                    .map(|i| r.try_get(i + 2))
                    .collect::<Result<Vec<Option<f64>>, _>>()?;
                Ok(StatRow {
                    datname: r.try_get(0)?,
                    now: r.try_get(1)?,
                    values,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        Ok(self.summarise(&ctx.target.databases, rows))
    }

    fn store(report: DatabaseStatsReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.database_stats = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(datname: &str, deadlocks: f64) -> StatRow {
        let mut values = vec![Some(1.0); sql::COLUMNS.len()];
        values[sql::index_of(&metrics::DB_DEADLOCKS)] = Some(deadlocks);
        values[sql::index_of(&metrics::DB_CHECKSUM_FAILURES)] = None;
        values[sql::index_of(&metrics::DB_CLIENT_SESSIONS)] = None;
        StatRow {
            datname: datname.into(),
            now: 100.0,
            values,
        }
    }

    #[test]
    fn columns_become_series_and_nulls_none() {
        let mut stats = DatabaseStats::default();
        let (snap, report) = stats.summarise(&DatabasesConfig::every(), vec![row("app", 2.0)]);
        assert_eq!(snap.get(&metrics::DB_DEADLOCKS)[0].value, 2.0);
        assert!(snap.get(&metrics::DB_CHECKSUM_FAILURES).is_empty());
        assert!(snap.get(&metrics::DB_CLIENT_SESSIONS).is_empty());
        let reasons: Vec<&str> = snap
            .get(&metrics::DB_CONFLICTS)
            .iter()
            .map(|s| s.labels[1].as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "tablespace",
                "lock",
                "snapshot",
                "bufferpin",
                "deadlock",
                "logicalslot"
            ]
        );
        assert_eq!(report.databases["app"].new_deadlocks, None);
        assert_eq!(report.databases["app"].checksum_failures, None);
    }

    #[test]
    fn new_deadlocks_are_counted_across_polls_and_resets() {
        let mut stats = DatabaseStats::default();
        let every = DatabasesConfig::every();
        stats.summarise(&every, vec![row("app", 2.0)]);
        let (_, report) = stats.summarise(&every, vec![row("app", 5.0)]);
        assert_eq!(report.databases["app"].new_deadlocks, Some(3.0));
        let (_, report) = stats.summarise(&every, vec![row("app", 5.0)]);
        assert_eq!(report.databases["app"].new_deadlocks, Some(0.0));
        // pg_stat_reset(): the counter starts again; one deadlock since.
        let (_, report) = stats.summarise(&every, vec![row("app", 1.0)]);
        assert_eq!(report.databases["app"].new_deadlocks, Some(1.0));
    }

    #[test]
    fn unselected_databases_are_left_out() {
        let mut stats = DatabaseStats::default();
        let (snap, report) = stats.summarise(
            &DatabasesConfig::only("app"),
            vec![row("app", 0.0), row("other", 0.0)],
        );
        assert_eq!(report.databases.len(), 1);
        assert!(
            snap.get(&metrics::DB_COMMITS)
                .iter()
                .all(|s| s.labels[0] == "app")
        );
    }
}
