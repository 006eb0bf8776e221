//! Index health and sequence exhaustion, per database (collector `indexes`, part of the
//! schema guard): unused indexes, duplicate and prefix-redundant indexes, foreign keys no
//! index leads with, and sequences (and identity columns) running out at the tighter of
//! their own limit and their column type's. Each verdict is a [`Finding`] with the SQL to
//! act on, which the status page, `/api/v1` and `pgvigil advise` show, plus bounded series.
//!
//! # The poll, step by step
//!
//! 1. [`sql::WINDOW_SQL`]: how long the statistics have been gathered (since
//!    `pg_stat_database.stats_reset` of this database, else since the server started: an
//!    under-estimate, which errs towards reporting nothing), whether commit timestamps are on
//!    (then an index's own age is known), and the role's name.
//! 2. [`sql::INDEXES_SQL`]: every valid index of a user table with what defines it (columns,
//!    operator classes, collations, expression and predicate trees), what it enforces and its
//!    size; [`sql::usage_sql`]: `idx_scan` per index, and `last_idx_scan` on 16+.
//! 3. [`sql::FOREIGN_KEYS_SQL`]: every foreign key with its columns and its table's size;
//!    [`sql::SEQUENCES_SQL`]: every sequence, the column it feeds (owned, identity, or in a
//!    default) and its type, and `last_value` where the role may read it.
//! 4. [`verdicts::judge`] (pure): the findings (a sequence's range and fix from
//!    [`sequences`]); then the series, each check's largest `max_series` (the rest counted in
//!    `pgvigil_index_findings_dropped`).
//! 5. The `SequenceExhaustion` rule turns the warning and critical sequence findings of the
//!    report into alerts, one per sequence.
//!
//! An index is *unused* when it has no scan over a statistics window of at least
//! `unused_min_window` (its own lifetime, if shorter and known), or on 16+ when its last scan
//! is older than `unused_stale_after`; unique, primary-key, exclusion and constraint indexes
//! never are (they enforce something), nor are partitions' attached indexes (they cannot be
//! dropped alone). A *duplicate* has the same method, columns, INCLUDE columns, operator
//! classes, collations, expressions and predicate as another (the one that enforces more, then
//! the older, is kept); a *prefix-redundant* index is a plain btree whose key columns lead
//! another btree's with the same predicate, and which enforces nothing.
//!
//! # Cost and locks
//!
//! Five catalog queries, linear in the numbers of indexes, constraints and sequences; on a
//! database with 10,000 indexes, a few tens of milliseconds. Nothing opens a relation: sizes
//! are `relpages` (as of the last vacuum or analyze), expressions are compared as stored
//! trees rather than through `pg_get_expr`, so a table under ACCESS EXCLUSIVE (a migration)
//! does not stop the run. The one exception is `pg_sequence_last_value`, which opens the
//! sequence: a sequence locked by `ALTER SEQUENCE` makes the run wait at most `lock_timeout`
//! and fail, costing only this collector's series until the next run. Default interval: 10
//! minutes.
//!
//! # Versions
//!
//! The same SQL on 13 to 18, except `last_idx_scan` (16+), read only there.

pub mod catalog;
pub mod sequences;
pub mod sql;
pub mod verdicts;

use std::collections::BTreeMap;

use self::catalog::Catalog;
pub use self::verdicts::IndexesReport;
use super::registry::{self, CollectorSpec, Scope};
use super::{BoxFuture, CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::advice::Finding;
use crate::config::IndexesConfig;
use crate::metrics::{self, Snapshot};

/// The indexes collector.
#[derive(Debug)]
pub struct Indexes {
    config: IndexesConfig,
}

impl Indexes {
    /// A collector for one target's `[targets.indexes]`.
    pub fn new(config: &IndexesConfig) -> Self {
        Indexes {
            config: config.clone(),
        }
    }
}

/// Read and judge one database (steps 1 to 4 without the series).
pub async fn report(
    client: &tokio_postgres::Client,
    version_num: i32,
    config: &IndexesConfig,
    database: &str,
) -> Result<IndexesReport, CollectError> {
    let catalog = Catalog::read(client, version_num).await?;
    Ok(verdicts::judge(&catalog, config, database))
}

/// This collector's findings in the database of `ctx`, for `pgvigil advise`.
pub fn findings<'a>(ctx: &'a PollContext<'a>) -> BoxFuture<'a, Result<Vec<Finding>, CollectError>> {
    Box::pin(async move {
        let report = report(
            ctx.client,
            ctx.server.version_num,
            &ctx.target.indexes,
            ctx.database,
        )
        .await?;
        Ok(report.findings)
    })
}

/// The series of one database's report, each check's at most `max_series`.
pub fn snapshot(report: &IndexesReport, datname: &str, max_series: usize) -> Snapshot {
    let mut snap = Snapshot::default();
    let db = || datname.to_owned();
    for u in report.unused.iter().take(max_series) {
        let labels = vec![db(), u.index.clone(), u.table.clone()];
        snap.push(&metrics::INDEX_UNUSED_BYTES, labels, u.bytes as f64);
    }
    for r in report.redundant.iter().take(max_series) {
        let labels = vec![db(), r.index.clone(), r.table.clone(), r.kind.to_owned()];
        snap.push(&metrics::INDEX_REDUNDANT_BYTES, labels, r.bytes as f64);
    }
    for fk in report.unindexed_foreign_keys.iter().take(max_series) {
        let labels = vec![db(), fk.constraint.clone(), fk.table.clone()];
        snap.push(
            &metrics::FOREIGN_KEY_UNINDEXED_BYTES,
            labels,
            fk.bytes as f64,
        );
    }
    for s in report.sequences.iter().take(max_series) {
        let labels = vec![db(), s.sequence.clone(), s.column.clone()];
        snap.push(&metrics::SEQUENCE_USED_RATIO, labels.clone(), s.used_ratio);
        snap.push(&metrics::SEQUENCE_REMAINING, labels, s.remaining);
    }
    snap.push(
        &metrics::SEQUENCES_UNREADABLE,
        vec![db()],
        report.unreadable_sequences as f64,
    );
    let mut counts: BTreeMap<&str, usize> = verdicts::CHECKS.iter().map(|c| (*c, 0)).collect();
    for f in &report.findings {
        *counts.entry(f.check).or_default() += 1;
    }
    let exported = [
        (verdicts::UNUSED_INDEX, report.unused.len()),
        (verdicts::DUPLICATE_INDEX, report.redundant.len()),
        (
            verdicts::FK_WITHOUT_INDEX,
            report.unindexed_foreign_keys.len(),
        ),
        (verdicts::SEQUENCE_EXHAUSTION, report.sequences.len()),
    ];
    for (check, n) in counts {
        snap.push(
            &metrics::INDEX_FINDINGS,
            vec![db(), check.to_owned()],
            n as f64,
        );
    }
    for (check, series) in exported {
        let dropped = series.saturating_sub(max_series);
        snap.push(
            &metrics::INDEX_FINDINGS_DROPPED,
            vec![db(), check.to_owned()],
            dropped as f64,
        );
    }
    snap
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "indexes",
    table: "indexes",
    reads: "pg_index, pg_stat_user_indexes, pg_constraint, pg_sequence and pg_depend: unused, duplicate and prefix-redundant indexes, foreign keys without an index, sequences running out at their column type's limit; no relation is opened",
    scope: Scope::Database,
    versions: registry::PG13,
    grants: &["SELECT ON <sequences>"],
    metrics: metrics::INDEXES_METRICS,
    section: |t| &t.indexes,
    build: |t| Box::new(Indexes::new(&t.indexes)),
    carry: |from, to| {
        for (datname, report) in from.each_database() {
            to.database_mut(datname).indexes = report.indexes.clone();
        }
    },
};

impl ReportCollector for Indexes {
    const NAME: &'static str = SPEC.name;
    type Report = IndexesReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, IndexesReport), CollectError> {
        let report = report(
            ctx.client,
            ctx.server.version_num,
            &self.config,
            ctx.database,
        )
        .await?;
        let snapshot = snapshot(&report, ctx.database, self.config.max_series);
        Ok((snapshot, report))
    }

    fn store(report: IndexesReport, ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.database_mut(ctx.database).indexes = Some(report);
    }
}
