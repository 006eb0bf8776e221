//! The WAL archiver (`pg_stat_archiver`) and WAL generation statistics (`pg_stat_wal`).
//!
//! # The poll, step by step
//!
//! 1. One statement reads the archiver's one row (archived and failed counts, the ages of
//!    the last success and the last failure, the files concerned), `archive_mode`, the
//!    server's role and, on 14+, `pg_stat_wal`'s one row joined to it.
//! 2. Archiving is *failing* while its last failure is newer than its last success (or it
//!    failed and never succeeded since the statistics were reset): PostgreSQL retries the
//!    same file, so every retry is a failure until the command works again. A success after
//!    failures clears it at once.
//!
//! # Cost and locks
//!
//! Two rows from the cumulative statistics in shared memory: microseconds, no lock a DDL
//! could hold.
//!
//! # Versions
//!
//! | view | 13 | 14 to 17 | 18 |
//! |---|---|---|---|
//! | `pg_stat_archiver` | yes | yes | yes |
//! | `pg_stat_wal` records, fpi, bytes, buffers_full, stats_reset | — | yes | yes |
//! | `pg_stat_wal` wal_write, wal_sync and their times | — | yes | moved to `pg_stat_io` (object `wal`) |
//!
//! What a version lacks is NULL in the statement and an absent series. `archive_mode` is read
//! with `current_setting()`, not from `pg_settings` (which builds a row for every setting: 0.4
//! ms a poll).

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::metrics::{self, MetricDef, Snapshot};

/// The archiver statement for a server of `version_num`: the same columns in every version.
pub fn archiver_sql(version_num: i32) -> String {
    let (stats, from) = if version_num >= 140000 {
        (
            "w.wal_records::float8, w.wal_fpi::float8, w.wal_bytes::float8,
       w.wal_buffers_full::float8, extract(epoch FROM w.stats_reset)::float8",
            "pg_stat_archiver a CROSS JOIN pg_stat_wal w",
        )
    } else {
        (
            "NULL::float8, NULL::float8, NULL::float8, NULL::float8, NULL::float8",
            "pg_stat_archiver a",
        )
    };
    let io = if (140000..180000).contains(&version_num) {
        "w.wal_write::float8, w.wal_sync::float8,
       w.wal_write_time / 1000.0, w.wal_sync_time / 1000.0"
    } else {
        "NULL::float8, NULL::float8, NULL::float8, NULL::float8"
    };
    format!(
        "SELECT a.archived_count::float8, a.failed_count::float8,
       extract(epoch FROM clock_timestamp() - a.last_archived_time)::float8,
       extract(epoch FROM clock_timestamp() - a.last_failed_time)::float8,
       coalesce(a.last_archived_wal, ''), coalesce(a.last_failed_wal, ''),
       current_setting('archive_mode'),
       pg_is_in_recovery(),
       {stats},
       {io}
  FROM {from}"
    )
}

/// What the archiver collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiverReport {
    /// The server archives WAL (archive_mode on, on a primary; always, anywhere).
    pub enabled: bool,
    /// `archive_mode` as set.
    pub archive_mode: String,
    /// WAL files archived.
    pub archived_count: f64,
    /// Failed attempts.
    pub failed_count: f64,
    /// Seconds since the last success.
    pub last_archived_age: Option<f64>,
    /// Seconds since the last failure.
    pub last_failed_age: Option<f64>,
    /// The file last archived.
    pub last_archived_wal: String,
    /// The file that last failed.
    pub last_failed_wal: String,
}

impl ArchiverReport {
    /// The most recent attempt failed.
    pub fn failing(&self) -> bool {
        match (self.last_failed_age, self.last_archived_age) {
            (Some(failed), Some(archived)) => failed < archived,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// `pg_stat_wal`'s counters (14+; the I/O ones 14 to 17).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct WalStats {
    records: Option<f64>,
    fpi: Option<f64>,
    bytes: Option<f64>,
    buffers_full: Option<f64>,
    stats_reset: Option<f64>,
    writes: Option<f64>,
    syncs: Option<f64>,
    write_seconds: Option<f64>,
    sync_seconds: Option<f64>,
}

/// The archiver collector.
#[derive(Debug, Default)]
pub struct Archiver;

fn summarise(report: &ArchiverReport, wal: &WalStats) -> Snapshot {
    let mut snap = Snapshot::default();
    let flag = |b: bool| f64::from(u8::from(b));
    snap.set(&metrics::ARCHIVER_ENABLED, flag(report.enabled));
    snap.set(&metrics::ARCHIVER_ARCHIVED, report.archived_count);
    snap.set(&metrics::ARCHIVER_FAILED, report.failed_count);
    snap.set(&metrics::ARCHIVER_FAILING, flag(report.failing()));
    let optional: [(&'static MetricDef, Option<f64>); 11] = [
        (
            &metrics::ARCHIVER_LAST_ARCHIVED_AGE,
            report.last_archived_age.map(|a| a.max(0.0)),
        ),
        (
            &metrics::ARCHIVER_LAST_FAILED_AGE,
            report.last_failed_age.map(|a| a.max(0.0)),
        ),
        (&metrics::WAL_RECORDS, wal.records),
        (&metrics::WAL_FPI, wal.fpi),
        (&metrics::WAL_BYTES, wal.bytes),
        (&metrics::WAL_BUFFERS_FULL, wal.buffers_full),
        (&metrics::WAL_STATS_RESET, wal.stats_reset),
        (&metrics::WAL_WRITES, wal.writes),
        (&metrics::WAL_SYNCS, wal.syncs),
        (&metrics::WAL_WRITE_SECONDS, wal.write_seconds),
        (&metrics::WAL_SYNC_SECONDS, wal.sync_seconds),
    ];
    for (def, value) in optional {
        if let Some(v) = value {
            snap.set(def, v);
        }
    }
    snap
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "archiver",
    table: "archiver",
    reads: "pg_stat_archiver (archived and failed counts, ages of the last success and failure), archive_mode; pg_stat_wal (14+)",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::ARCHIVER_METRICS,
    section: |t| &t.archiver,
    build: |_| Box::new(Archiver),
    carry: |from, to| to.archiver = from.archiver.clone(),
};

impl ReportCollector for Archiver {
    const NAME: &'static str = SPEC.name;
    type Report = ArchiverReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, ArchiverReport), CollectError> {
        let row = ctx
            .query_one(&archiver_sql(ctx.server.version_num), &[])
            .await?;
        let archive_mode: String = row.try_get::<_, Option<String>>(6)?.unwrap_or_default();
        let in_recovery: bool = row.try_get(7)?;
        let report = ArchiverReport {
            enabled: archive_mode == "always" || (archive_mode == "on" && !in_recovery),
            archive_mode,
            archived_count: row.try_get(0)?,
            failed_count: row.try_get(1)?,
            last_archived_age: row.try_get(2)?,
            last_failed_age: row.try_get(3)?,
            last_archived_wal: row.try_get(4)?,
            last_failed_wal: row.try_get(5)?,
        };
        let wal = WalStats {
            records: row.try_get(8)?,
            fpi: row.try_get(9)?,
            bytes: row.try_get(10)?,
            buffers_full: row.try_get(11)?,
            stats_reset: row.try_get(12)?,
            writes: row.try_get(13)?,
            syncs: row.try_get(14)?,
            write_seconds: row.try_get(15)?,
            sync_seconds: row.try_get(16)?,
        };
        Ok((summarise(&report, &wal), report))
    }

    fn store(report: ArchiverReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.archiver = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_per_version() {
        let v13 = archiver_sql(130_000);
        assert!(!v13.contains("pg_stat_wal"), "{v13}");
        let v14 = archiver_sql(140_000);
        assert!(v14.contains("CROSS JOIN pg_stat_wal w") && v14.contains("w.wal_sync_time"));
        assert_eq!(archiver_sql(170_005), v14);
        let v18 = archiver_sql(180_000);
        assert!(
            v18.contains("w.wal_buffers_full") && !v18.contains("wal_write"),
            "{v18}"
        );
    }

    #[test]
    fn failing_while_the_last_failure_is_newer_than_the_last_success() {
        let mut r = ArchiverReport::default();
        assert!(!r.failing());
        r.last_failed_age = Some(5.0);
        assert!(r.failing(), "failed and never succeeded");
        r.last_archived_age = Some(60.0);
        assert!(r.failing());
        r.last_archived_age = Some(1.0);
        assert!(!r.failing(), "a success after the failure");
    }

    #[test]
    fn series_absent_where_the_version_has_no_column() {
        let report = ArchiverReport {
            enabled: true,
            failed_count: 3.0,
            last_failed_age: Some(2.0),
            ..ArchiverReport::default()
        };
        let snap = summarise(&report, &WalStats::default());
        assert_eq!(snap.get(&metrics::ARCHIVER_FAILING)[0].value, 1.0);
        assert_eq!(snap.get(&metrics::ARCHIVER_FAILED)[0].value, 3.0);
        assert!(snap.get(&metrics::ARCHIVER_LAST_ARCHIVED_AGE).is_empty());
        assert!(snap.get(&metrics::WAL_BYTES).is_empty());
        let wal = WalStats {
            bytes: Some(1e6),
            ..WalStats::default()
        };
        assert_eq!(
            summarise(&report, &wal).get(&metrics::WAL_BYTES)[0].value,
            1e6
        );
    }
}
