//! Table statistics: cheap estimates for every user table, exact counts for an allow-list, and
//! the per-interval changes that reveal lost rows.
//!
//! # The poll, step by step
//!
//! 1. [`COUNTERS_SQL`], over every user table: the seven counters the row-loss rules need
//!    (`n_live_tup`, `n_dead_tup`, `n_tup_ins`, `n_tup_del`, `n_ins_since_vacuum`, vacuum and
//!    analyze counts), the quoted name, and the size key (heap + TOAST + index pages, the index
//!    pages summed in one grouped pass over `pg_index` rather than a subquery per table),
//!    largest first. PostgreSQL computes only the view columns a query reads, so this is about
//!    half of `pg_stat_user_tables`' per-table work.
//! 2. In the daemon: the `include`/`exclude` globs over `schema.table`; then **every** selected
//!    table is compared with the previous poll ([`changes`]), and the first `max_tables` are
//!    the exported ones (`pgvigil_tables_omitted` counts the rest).
//! 3. [`DETAIL_SQL`], for the exported tables only (`relid = ANY($1)`): `reltuples`, updates
//!    and the four maintenance timestamps, the rest of what is exported.
//! 4. Exact counts ([`exact`]) of allow-listed tables: a drop of 10% or more is confirmed at
//!    once; the others run on their own schedule under their own timeout.
//!
//! # Why the cap cannot hide a loss
//!
//! The cap limits what is *exported*, not what is *watched*: the row-loss rules
//! (`TableRowsDropped`, `RolledBackInserts`) read the changes, which step 2 computes for every
//! table that passes the filters. This matters most for the loss they exist to catch: a
//! `TRUNCATE` sets the table's pages to 0, which moves it out of the largest `max_tables` in
//! the very poll it loses its rows; it is still compared, so it still alerts. The state this
//! takes is one entry of counters per table (about 100 bytes), keyed by oid.
//!
//! # Cost and locks
//!
//! Both queries read statistics and `pg_class` only: no table is scanned or locked. Sizes come
//! from `relpages` (as of the last vacuum or analyze) rather than `pg_total_relation_size`,
//! which takes a lock on every table and would make the whole query queue behind one
//! `ALTER TABLE` or `TRUNCATE`. The database's cost grows with the number of tables through
//! step 1 only (a handful of statistics lookups per table); what is exported costs step 3, which
//! `max_tables` bounds. The same SQL serves PostgreSQL 13 to 18.
//!
//! [`changes`] compares each table with the previous poll: a mass `DELETE`, a `TRUNCATE` and a
//! rolled-back bulk insert each leave a distinct signature in the counters.

pub mod changes;
pub mod exact;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::warn;

use self::changes::{Counters, TableChange};
use self::exact::ExactCounter;
use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::config::TablesConfig;
use crate::metrics::{self, Labels, Snapshot};

/// Drops at least this large in an allow-listed table are confirmed by an exact count at once.
const CONFIRM_DROP_RATIO: f64 = 0.1;

/// Step 1: what every user table needs for the row-loss rules, and the cap's sort key.
pub const COUNTERS_SQL: &str = "
SELECT s.relid, format('%I.%I', s.schemaname, s.relname), s.schemaname::text, s.relname::text,
       s.n_live_tup, s.n_dead_tup, s.n_tup_ins, s.n_tup_del, s.n_ins_since_vacuum,
       s.vacuum_count + s.autovacuum_count, s.analyze_count + s.autoanalyze_count,
       ((c.relpages::int8 + coalesce(t.relpages, 0) + coalesce(ix.pages, 0))
        * current_setting('block_size')::int8)::int8
  FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
  LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
  LEFT JOIN (SELECT x.indrelid, sum(i.relpages)::int8 AS pages
               FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
              GROUP BY x.indrelid) ix ON ix.indrelid = s.relid
 ORDER BY 12 DESC, 2";

/// Step 3: the rest of the exported detail, for the exported tables only.
pub const DETAIL_SQL: &str = "
SELECT s.relid, c.reltuples::float8, s.n_tup_upd,
       extract(epoch FROM s.last_vacuum)::float8,
       extract(epoch FROM s.last_autovacuum)::float8,
       extract(epoch FROM s.last_analyze)::float8,
       extract(epoch FROM s.last_autoanalyze)::float8
  FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
 WHERE s.relid = ANY($1)";

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
    /// Changes since the previous poll, for the tables seen in both.
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

    fn selected(&self, qualified: &str) -> bool {
        let included = self.config.include.is_empty()
            || self.config.include.iter().any(|p| glob(p, qualified));
        included && !self.config.exclude.iter().any(|p| glob(p, qualified))
    }

    /// Step 3: read the exported tables' detail and publish their series.
    async fn export(
        &self,
        client: &tokio_postgres::Client,
        snap: &mut Snapshot,
        report: &mut TablesReport,
        exported: &[(u32, Counters)],
    ) -> Result<(), CollectError> {
        if exported.is_empty() {
            return Ok(());
        }
        let oids: Vec<u32> = exported.iter().map(|(oid, _)| *oid).collect();
        let detail: HashMap<u32, tokio_postgres::Row> = client
            .query(DETAIL_SQL, &[&oids])
            .await?
            .into_iter()
            .map(|row| Ok((row.try_get::<_, u32>(0)?, row)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        let datname = &report.datname;
        for ((oid, counters), stats) in exported.iter().zip(&mut report.tables) {
            // A table dropped between the two queries has no detail: its estimates stay.
            let row = detail.get(oid);
            let get_f64 = |i| -> Result<Option<f64>, tokio_postgres::Error> {
                row.map_or(Ok(None), |r| r.try_get::<_, Option<f64>>(i))
            };
            stats.reltuples = get_f64(1)?.unwrap_or_default();
            let updated = row.map_or(Ok(0), |r| r.try_get::<_, i64>(2))?;
            let labels = Labels::new(vec![datname.clone(), stats.table.clone()]);
            snap.push_labels(&metrics::TABLE_LIVE_ROWS, &labels, counters.live as f64);
            snap.push_labels(&metrics::TABLE_DEAD_ROWS, &labels, counters.dead as f64);
            snap.push_labels(&metrics::TABLE_RELTUPLES, &labels, stats.reltuples);
            snap.push_labels(&metrics::TABLE_SIZE, &labels, stats.size_bytes as f64);
            let inserted = counters.inserted as f64;
            snap.push_labels(&metrics::TABLE_INSERTED, &labels, inserted);
            snap.push_labels(&metrics::TABLE_UPDATED, &labels, updated as f64);
            let deleted = counters.deleted as f64;
            snap.push_labels(&metrics::TABLE_DELETED, &labels, deleted);
            for (i, operation) in ["vacuum", "autovacuum", "analyze", "autoanalyze"]
                .into_iter()
                .enumerate()
            {
                if let Some(at) = get_f64(3 + i)? {
                    snap.push(
                        &metrics::TABLE_LAST_MAINTENANCE,
                        vec![datname.clone(), stats.table.clone(), operation.to_owned()],
                        at,
                    );
                }
            }
        }
        Ok(())
    }
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "tables",
    table: "tables",
    reads: "pg_stat_user_tables and pg_class estimates; count(*) of exact_count_tables on their own schedule",
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
        let datname: String = client
            .query_one("SELECT current_database()::text", &[])
            .await?
            .try_get(0)?;
        let rows = client.query(COUNTERS_SQL, &[]).await?;
        let now = Instant::now();
        let mut report = TablesReport {
            datname,
            ..TablesReport::default()
        };
        let max_tables = ctx.max_tables.map_or(self.config.max_tables, |share| {
            share.min(self.config.max_tables)
        });
        let mut current = HashMap::with_capacity(rows.len());
        let mut to_confirm = Vec::new();
        let mut exported = Vec::new();
        for row in &rows {
            let schema: &str = row.try_get(2)?;
            let name: &str = row.try_get(3)?;
            if !self.selected(&format!("{schema}.{name}")) {
                continue;
            }
            let oid: u32 = row.try_get(0)?;
            let table: &str = row.try_get(1)?;
            let counters = Counters {
                live: row.try_get(4)?,
                dead: row.try_get(5)?,
                inserted: row.try_get(6)?,
                deleted: row.try_get(7)?,
                inserted_since_vacuum: row.try_get(8)?,
                vacuums: row.try_get(9)?,
                analyzes: row.try_get(10)?,
            };
            if let Some((then, before)) = self.previous.get(&oid) {
                let seconds = now.duration_since(*then).as_secs_f64();
                if let Some(change) = TableChange::between(table, seconds, *before, counters) {
                    if change.lost_ratio() >= CONFIRM_DROP_RATIO && self.exact.allows(schema, name)
                    {
                        to_confirm.push(report.changes.len());
                    }
                    report.changes.push(change);
                }
            }
            current.insert(oid, (now, counters));
            if exported.len() < max_tables {
                exported.push((oid, counters));
                report.tables.push(TableStats {
                    table: table.to_owned(),
                    live_rows: counters.live,
                    dead_rows: counters.dead,
                    reltuples: 0.0,
                    size_bytes: row.try_get(11)?,
                    exact_rows: None,
                });
            } else {
                report.omitted += 1;
            }
        }
        self.previous = current;
        let mut snap = Snapshot::default();
        self.export(client, &mut snap, &mut report, &exported)
            .await?;

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

    #[test]
    fn globs() {
        assert!(glob("public.*", "public.contacts"));
        assert!(glob("*.audit_?", "crm.audit_1"));
        assert!(!glob("public.*", "crm.contacts"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn include_and_exclude() {
        let config = TablesConfig {
            include: vec!["public.*".into()],
            exclude: vec!["public.tmp_*".into()],
            ..TablesConfig::default()
        };
        let t = Tables::new(&config);
        assert!(t.selected("public.contacts"));
        assert!(!t.selected("public.tmp_load"));
        assert!(!t.selected("crm.contacts"));
    }
}
