//! Table statistics: cheap estimates for every user table, exact counts for an allow-list, and
//! the per-interval changes that reveal lost rows.
//!
//! # The poll, step by step
//!
//! 1. [`COUNTERS_SQL`], over every user table that passes `include`/`exclude` (the globs go
//!    into the query as `LIKE` patterns, [`FILTER_SQL`], so excluded tables cost no row): the
//!    oid, the seven counters the row-loss rules need (`n_live_tup`, `n_dead_tup`, `n_tup_ins`,
//!    `n_tup_del`, `n_ins_since_vacuum`, vacuum and analyze counts) and the cap's sort key,
//!    heap + TOAST pages. Straight from `pg_class` and the `pg_stat_get_*` functions: no
//!    name, no index pages, no `pg_stat_user_tables` (see [`queries`] for what each costs).
//! 2. In the daemon: **every** table is compared with the previous poll; those whose counters
//!    moved are kept for step 3. The largest `max_tables` by the sort key (ties by oid) are the
//!    exported ones; `pgvigil_tables_omitted` counts the rest.
//! 3. [`queries::DETAIL_SQL`] by oid, for the exported tables and the moved ones only: the
//!    quoted name, `reltuples`, updates, the four maintenance timestamps and the exported size
//!    (heap + TOAST + index pages). A moved table's [`TableChange`] is made here, with its
//!    name; a table dropped between steps 1 and 3 has no row and is left out.
//! 4. Exact counts ([`exact`]) of allow-listed tables: a drop of 10% or more is confirmed at
//!    once; the others run on their own schedule under their own timeout.
//!
//! # Why neither the cap nor step 3 can hide a loss
//!
//! The cap limits what is *exported*, not what is *watched*: the row-loss rules
//! (`TableRowsDropped`, `RolledBackInserts`) read the changes, and step 2 compares every table
//! that passes the filters. This matters most for the loss they exist to catch: a `TRUNCATE`
//! sets the table's pages to 0, which moves it out of the largest `max_tables` in the very poll
//! it loses its rows; it is still compared, so it still alerts. Step 3 leaves out only the
//! tables whose seven counters are all equal to the previous poll's: for them `lost()` is 0
//! (`live` did not move) and `rolled_back_inserts()` is 0 (nothing inserted, no dead rows
//! gained, no vacuum), so no parameter of either rule can make them fire
//! (`TableRowsDropped` needs `lost() > 0` for any `min_ratio > 0`, `RolledBackInserts` at
//! least `min_rows ≥ 1` rolled back). The state this takes is one entry of counters per
//! table (about 80 bytes), keyed by oid.
//!
//! # Cost and locks
//!
//! Both queries read statistics and `pg_class` only: no table is scanned or locked. Sizes come
//! from `relpages` (as of the last vacuum or analyze) rather than `pg_total_relation_size`,
//! which takes a lock on every table and would make the whole query queue behind one
//! `ALTER TABLE` or `TRUNCATE`. The database's cost grows with the number of tables through
//! step 1 only: one `pg_class` row, one hash probe for the TOAST pages and nine statistics
//! lookups per table, about 6 µs at 10,000 tables on the benchmark machine under load, where
//! the `pg_stat_user_tables`-based query it replaces cost about 25 µs (BENCHMARKS.md, "Issue
//! 15, tables"). Step 3 follows `max_tables` plus the tables written to since the last poll,
//! not the number of tables; in the worst case (every table written to every interval) it
//! reads every table's name, as step 1 did before. The same SQL serves PostgreSQL 13 to 18.
//!
//! [`changes`] compares each table with the previous poll: a mass `DELETE`, a `TRUNCATE` and a
//! rolled-back bulk insert each leave a distinct signature in the counters.

pub mod changes;
pub mod exact;
pub mod queries;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::warn;

use self::changes::{Counters, TableChange};
use self::exact::ExactCounter;
use self::queries::{COUNTERS_SQL, Detail, FILTER_SQL};
use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::config::TablesConfig;
use crate::metrics::{self, Labels, Snapshot};

/// Drops at least this large in an allow-listed table are confirmed by an exact count at once.
const CONFIRM_DROP_RATIO: f64 = 0.1;

/// One table's statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableStats {
    /// `schema.table`, quoted where PostgreSQL would need quotes.
    pub table: String,
    /// `n_live_tup`.
    pub live_rows: i64,
    /// `n_dead_tup`.
    pub dead_rows: i64,
    /// `reltuples`.
    pub reltuples: f64,
    /// Table, TOAST and index pages × block size, as of the last vacuum or analyze.
    pub size_bytes: i64,
    /// The last exact count, for allow-listed tables.
    pub exact_rows: Option<i64>,
}

/// What the tables collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TablesReport {
    /// The database (the `datname` alert label).
    pub datname: String,
    /// The exported tables, largest first.
    pub tables: Vec<TableStats>,
    /// Tables cut off by `max_tables`.
    pub omitted: usize,
    /// Changes since the previous poll, for the tables seen in both whose counters moved (an
    /// unmoved table can fire no row-loss rule; see the module docs).
    pub changes: Vec<TableChange>,
}

/// The tables collector.
#[derive(Debug)]
pub struct Tables {
    config: TablesConfig,
    exact: ExactCounter,
    /// The counters of every selected table at the last poll, by oid.
    previous: HashMap<u32, (Instant, Counters)>,
    logged: std::collections::HashSet<String>,
}

/// One table's row of step 1.
#[derive(Debug, Clone, Copy)]
struct Visit {
    oid: u32,
    counters: Counters,
    /// Heap + TOAST pages: the cap's sort key.
    pages: i64,
}

/// What step 2 decided: which tables to export, and which moved since the previous poll.
#[derive(Debug, Default)]
struct Plan {
    /// The largest `max_tables`, largest first.
    exported: Vec<Visit>,
    /// Tables cut off by the cap.
    omitted: usize,
    /// Tables whose counters moved: `(oid, seconds, before, after)`.
    moved: Vec<(u32, f64, Counters, Counters)>,
}

impl Plan {
    /// The oids step 3 reads: exported and moved, each once.
    fn oids(&self) -> Vec<u32> {
        let mut oids: Vec<u32> = self.exported.iter().map(|v| v.oid).collect();
        oids.extend(self.moved.iter().map(|m| m.0));
        oids.sort_unstable();
        oids.dedup();
        oids
    }
}

impl Tables {
    /// A collector for one target's `[targets.tables]`.
    pub fn new(config: &TablesConfig) -> Self {
        Tables {
            exact: ExactCounter::new(config),
            config: config.clone(),
            previous: HashMap::new(),
            logged: Default::default(),
        }
    }

    /// Step 1: the counters and sort key of every selected table.
    async fn visit(&self, ctx: &PollContext<'_>) -> Result<Vec<Visit>, CollectError> {
        let rows = if self.config.include.is_empty() && self.config.exclude.is_empty() {
            ctx.query(COUNTERS_SQL, &[]).await?
        } else {
            let sql = format!("{COUNTERS_SQL}{FILTER_SQL}");
            let include = queries::like_patterns(&self.config.include);
            let exclude = queries::like_patterns(&self.config.exclude);
            ctx.query(&sql, &[&include, &exclude]).await?
        };
        let visit = |row: &tokio_postgres::Row| -> Result<Visit, tokio_postgres::Error> {
            Ok(Visit {
                oid: row.try_get(0)?,
                counters: Counters {
                    live: row.try_get(1)?,
                    dead: row.try_get(2)?,
                    inserted: row.try_get(3)?,
                    deleted: row.try_get(4)?,
                    inserted_since_vacuum: row.try_get(5)?,
                    vacuums: row.try_get(6)?,
                    analyzes: row.try_get(7)?,
                },
                pages: row.try_get(8)?,
            })
        };
        Ok(rows.iter().map(visit).collect::<Result<_, _>>()?)
    }

    /// Step 2: compare every table with the previous poll (remembering all of them for the
    /// next), and pick the largest `max_tables` to export.
    fn plan(&mut self, mut visits: Vec<Visit>, now: Instant, max_tables: usize) -> Plan {
        let mut plan = Plan::default();
        let mut current = HashMap::with_capacity(visits.len());
        for v in &visits {
            if let Some((then, before)) = self.previous.get(&v.oid) {
                if *before != v.counters {
                    let seconds = now.duration_since(*then).as_secs_f64();
                    plan.moved.push((v.oid, seconds, *before, v.counters));
                }
            }
            current.insert(v.oid, (now, v.counters));
        }
        self.previous = current;
        visits.sort_unstable_by(|a, b| b.pages.cmp(&a.pages).then(a.oid.cmp(&b.oid)));
        plan.omitted = visits.len().saturating_sub(max_tables);
        visits.truncate(max_tables);
        plan.exported = visits;
        plan
    }

    /// The changes of the moved tables that still exist; which of them to confirm by an
    /// exact count (indexes into `report.changes`).
    fn changes(
        &self,
        plan: &Plan,
        detail: &HashMap<u32, Detail>,
        report: &mut TablesReport,
    ) -> Vec<usize> {
        let mut to_confirm = Vec::new();
        for (oid, seconds, before, after) in &plan.moved {
            let Some(d) = detail.get(oid) else { continue };
            if let Some(change) = TableChange::between(&d.table, *seconds, *before, *after) {
                if change.lost_ratio() >= CONFIRM_DROP_RATIO
                    && self.exact.allows(&d.schema, &d.name)
                {
                    to_confirm.push(report.changes.len());
                }
                report.changes.push(change);
            }
        }
        to_confirm
    }

    /// Publish the exported tables' series (a table dropped since step 1 is left out).
    fn export(
        plan: &Plan,
        detail: &HashMap<u32, Detail>,
        snap: &mut Snapshot,
        report: &mut TablesReport,
    ) {
        let datname = &report.datname;
        for v in &plan.exported {
            let Some(d) = detail.get(&v.oid) else {
                continue;
            };
            let counters = v.counters;
            let labels = Labels::new(vec![datname.clone(), d.table.clone()]);
            snap.push_labels(&metrics::TABLE_LIVE_ROWS, &labels, counters.live as f64);
            snap.push_labels(&metrics::TABLE_DEAD_ROWS, &labels, counters.dead as f64);
            snap.push_labels(&metrics::TABLE_RELTUPLES, &labels, d.reltuples);
            snap.push_labels(&metrics::TABLE_SIZE, &labels, d.size_bytes as f64);
            let inserted = counters.inserted as f64;
            snap.push_labels(&metrics::TABLE_INSERTED, &labels, inserted);
            snap.push_labels(&metrics::TABLE_UPDATED, &labels, d.updated as f64);
            let deleted = counters.deleted as f64;
            snap.push_labels(&metrics::TABLE_DELETED, &labels, deleted);
            let operations = ["vacuum", "autovacuum", "analyze", "autoanalyze"];
            for (operation, at) in operations.into_iter().zip(d.maintenance) {
                if let Some(at) = at {
                    snap.push(
                        &metrics::TABLE_LAST_MAINTENANCE,
                        vec![datname.clone(), d.table.clone(), operation.to_owned()],
                        at,
                    );
                }
            }
            report.tables.push(TableStats {
                table: d.table.clone(),
                live_rows: counters.live,
                dead_rows: counters.dead,
                reltuples: d.reltuples,
                size_bytes: d.size_bytes,
                exact_rows: None,
            });
        }
    }
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "tables",
    table: "tables",
    reads: "pg_stat_get_* counters and pg_class estimates of every table, names and detail of the exported and changed ones; count(*) of exact_count_tables on their own schedule",
    scope: Scope::Database,
    versions: registry::PG13,
    grants: &["SELECT ON <exact_count_tables>"],
    metrics: metrics::TABLES_METRICS,
    section: |t| &t.tables,
    build: |t| Box::new(Tables::new(&t.tables)),
    carry: |from, to| {
        for (datname, report) in from.each_database() {
            to.database_mut(datname).tables = report.tables.clone();
        }
    },
};

impl ReportCollector for Tables {
    const NAME: &'static str = SPEC.name;
    type Report = TablesReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, TablesReport), CollectError> {
        let client = ctx.client;
        let datname: String = ctx
            .query_one("SELECT current_database()::text", &[])
            .await?
            .try_get(0)?;
        let visits = self.visit(ctx).await?;
        let now = Instant::now();
        let mut report = TablesReport {
            datname,
            ..TablesReport::default()
        };
        let max_tables = ctx.max_tables.map_or(self.config.max_tables, |share| {
            share.min(self.config.max_tables)
        });
        let plan = self.plan(visits, now, max_tables);
        let detail = queries::details(ctx, &plan.oids()).await?;
        let to_confirm = self.changes(&plan, &detail, &mut report);
        report.omitted = plan.omitted;
        let mut snap = Snapshot::default();
        Self::export(&plan, &detail, &mut snap, &mut report);

        let mut problems = Vec::new();
        for i in to_confirm {
            let table = report.changes[i].table.clone();
            match self.exact.confirm(client, &table).await {
                Ok(n) => report.changes[i].exact_after = Some(n),
                Err(e) => problems.push(format!("exact count of {table} failed: {e}")),
            }
        }
        problems.extend(self.exact.run_if_due(client, now).await);
        for problem in problems {
            if self.logged.insert(problem.clone()) {
                warn!(target = %ctx.target.name, "tables: {problem}");
            }
        }

        let datname = report.datname.clone();
        for stats in &mut report.tables {
            stats.exact_rows = self.exact.results.get(&stats.table).map(|c| c.rows);
        }
        for (table, c) in &self.exact.results {
            let labels = || vec![datname.clone(), table.clone()];
            snap.push(&metrics::TABLE_EXACT_ROWS, labels(), c.rows as f64);
            snap.push(&metrics::TABLE_EXACT_COUNT_TIMESTAMP, labels(), c.at_unix);
            snap.push(&metrics::TABLE_EXACT_COUNT_DURATION, labels(), c.seconds);
        }
        if !self.config.exact_count_tables.is_empty() {
            for result in ["ok", "error", "skipped"] {
                let n = self.exact.outcomes.get(result).copied().unwrap_or(0);
                snap.push(
                    &metrics::TABLE_EXACT_COUNTS,
                    vec![datname.clone(), result.to_owned()],
                    n as f64,
                );
            }
        }
        snap.push(
            &metrics::TABLES_EXPORTED,
            vec![datname.clone()],
            report.tables.len() as f64,
        );
        snap.push(
            &metrics::TABLES_OMITTED,
            vec![datname],
            report.omitted as f64,
        );
        Ok((snap, report))
    }

    fn store(report: TablesReport, ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.database_mut(ctx.database).tables = Some(report);
    }

    fn time_limit(&self, default: Duration) -> Duration {
        default + self.exact.max_round()
    }
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

pub use crate::config::glob;

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(oid: u32, live: i64, pages: i64) -> Visit {
        let counters = Counters {
            live,
            inserted: live,
            ..Counters::default()
        };
        Visit {
            oid,
            counters,
            pages,
        }
    }

    /// Step 2: the cap picks the largest by pages (ties by oid); only moved tables go on to
    /// step 3 for their names, and a truncated table is among them although it left the cap.
    #[test]
    fn the_plan_exports_the_largest_and_keeps_every_moved_table() {
        let mut t = Tables::new(&TablesConfig::default());
        let start = Instant::now();
        let first = vec![visit(10, 5_000, 100), visit(11, 10, 1), visit(12, 20, 1)];
        let plan = t.plan(first, start, 2);
        let exported: Vec<u32> = plan.exported.iter().map(|v| v.oid).collect();
        assert_eq!(exported, [10, 11]);
        assert_eq!(plan.omitted, 1);
        assert!(plan.moved.is_empty(), "nothing to compare with yet");

        // 10 truncated (pages 0, live 0), 12 unchanged, 11 written to.
        let mut truncated = visit(10, 0, 0);
        truncated.counters.inserted = 5_000;
        let mut written = visit(11, 30, 1);
        written.counters.inserted = 30;
        let later = start + Duration::from_secs(60);
        let plan = t.plan(vec![truncated, written, visit(12, 20, 1)], later, 2);
        let exported: Vec<u32> = plan.exported.iter().map(|v| v.oid).collect();
        assert_eq!(exported, [11, 12], "the truncated table left the cap");
        let moved: Vec<u32> = plan.moved.iter().map(|m| m.0).collect();
        assert_eq!(moved, [10, 11], "the unchanged table is not read again");
        assert_eq!(plan.moved[0].1, 60.0);
        assert_eq!(plan.oids(), [10, 11, 12]);
    }

    #[test]
    fn globs() {
        assert!(glob("public.*", "public.contacts"));
        assert!(glob("*.audit_?", "crm.audit_1"));
        assert!(!glob("public.*", "crm.contacts"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }
}
