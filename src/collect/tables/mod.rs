//! Table statistics: cheap estimates for every user table, exact counts for an allow-list, and
//! the per-interval changes that reveal lost rows.
//!
//! Estimates come from one query over `pg_stat_user_tables` and `pg_class`: no table is
//! scanned or even locked. Sizes come from `relpages` (as of the last vacuum or analyze) rather
//! than `pg_total_relation_size`, which takes a lock on every table and would make the whole
//! query queue behind one `ALTER TABLE` or `TRUNCATE`. Tables are filtered by `include`/`exclude` globs over `schema.table` and capped at
//! `max_tables`, largest first; `pgvigil_tables_omitted` says how many the cap cut off.
//! Exact counts ([`exact`]) run on their own schedule under their own timeout.
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
use super::{BoxFuture, CollectError, Collector, Observations, PollContext, Postgres};
use crate::config::TablesConfig;
use crate::metrics::{self, Snapshot};

/// Drops at least this large in an allow-listed table are confirmed by an exact count at once.
const CONFIRM_DROP_RATIO: f64 = 0.1;

const TABLES_SQL: &str = "
SELECT format('%I.%I', s.schemaname, s.relname),
       s.schemaname::text, s.relname::text,
       s.n_live_tup, s.n_dead_tup, c.reltuples::float8,
       ((c.relpages::int8 + coalesce(t.relpages, 0)
         + coalesce((SELECT sum(i.relpages) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                      WHERE x.indrelid = s.relid), 0))
        * current_setting('block_size')::int8)::int8,
       s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
       extract(epoch FROM s.last_vacuum)::float8,
       extract(epoch FROM s.last_autovacuum)::float8,
       extract(epoch FROM s.last_analyze)::float8,
       extract(epoch FROM s.last_autoanalyze)::float8
  FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
  LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
 ORDER BY 7 DESC, 1";

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
    previous: HashMap<String, (Instant, Counters)>,
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

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, TablesReport), CollectError> {
        let client = ctx.client;
        let datname: String = client
            .query_one("SELECT current_database()::text", &[])
            .await?
            .try_get(0)?;
        let rows = client.query(TABLES_SQL, &[]).await?;
        let now = Instant::now();
        let mut snap = Snapshot::default();
        let mut report = TablesReport {
            datname,
            ..TablesReport::default()
        };
        let mut current = HashMap::new();
        let mut to_confirm = Vec::new();
        for row in &rows {
            let table: String = row.try_get(0)?;
            let schema: String = row.try_get(1)?;
            let name: String = row.try_get(2)?;
            let plain = format!("{schema}.{name}");
            if !self.selected(&plain) {
                continue;
            }
            if report.tables.len() >= self.config.max_tables {
                report.omitted += 1;
                continue;
            }
            let counters = Counters {
                live: row.try_get(3)?,
                dead: row.try_get(4)?,
                inserted: row.try_get(7)?,
                deleted: row.try_get(9)?,
            };
            let updated: i64 = row.try_get(8)?;
            let stats = TableStats {
                table: table.clone(),
                live_rows: counters.live,
                dead_rows: counters.dead,
                reltuples: row.try_get(5)?,
                size_bytes: row.try_get(6)?,
                exact_rows: None,
            };
            let labels = || vec![table.clone()];
            snap.push(&metrics::TABLE_LIVE_ROWS, labels(), counters.live as f64);
            snap.push(&metrics::TABLE_DEAD_ROWS, labels(), counters.dead as f64);
            snap.push(&metrics::TABLE_RELTUPLES, labels(), stats.reltuples);
            snap.push(&metrics::TABLE_SIZE, labels(), stats.size_bytes as f64);
            snap.push(&metrics::TABLE_INSERTED, labels(), counters.inserted as f64);
            snap.push(&metrics::TABLE_UPDATED, labels(), updated as f64);
            snap.push(&metrics::TABLE_DELETED, labels(), counters.deleted as f64);
            for (i, operation) in ["vacuum", "autovacuum", "analyze", "autoanalyze"]
                .into_iter()
                .enumerate()
            {
                if let Some(at) = row.try_get::<_, Option<f64>>(10 + i)? {
                    snap.push(
                        &metrics::TABLE_LAST_MAINTENANCE,
                        vec![table.clone(), operation.to_owned()],
                        at,
                    );
                }
            }
            if let Some((then, before)) = self.previous.get(&table) {
                let seconds = now.duration_since(*then).as_secs_f64();
                if let Some(change) = TableChange::between(&table, seconds, *before, counters) {
                    if change.lost_ratio() >= CONFIRM_DROP_RATIO
                        && self.exact.allows(&schema, &name)
                    {
                        to_confirm.push(report.changes.len());
                    }
                    report.changes.push(change);
                }
            }
            current.insert(table.clone(), (now, counters));
            report.tables.push(stats);
        }
        self.previous = current;

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

        for stats in &mut report.tables {
            stats.exact_rows = self.exact.results.get(&stats.table).map(|c| c.rows);
        }
        for (table, c) in &self.exact.results {
            snap.push(
                &metrics::TABLE_EXACT_ROWS,
                vec![table.clone()],
                c.rows as f64,
            );
            snap.push(
                &metrics::TABLE_EXACT_COUNT_TIMESTAMP,
                vec![table.clone()],
                c.at_unix,
            );
            snap.push(
                &metrics::TABLE_EXACT_COUNT_DURATION,
                vec![table.clone()],
                c.seconds,
            );
        }
        if !self.config.exact_count_tables.is_empty() {
            for result in ["ok", "error", "skipped"] {
                let n = self.exact.outcomes.get(result).copied().unwrap_or(0);
                snap.push(
                    &metrics::TABLE_EXACT_COUNTS,
                    vec![result.to_owned()],
                    n as f64,
                );
            }
        }
        snap.set(&metrics::TABLES_EXPORTED, report.tables.len() as f64);
        snap.set(&metrics::TABLES_OMITTED, report.omitted as f64);
        Ok((snap, report))
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
    carry: |from, to| to.tables = from.tables.clone(),
};

impl Collector<Postgres> for Tables {
    fn name(&self) -> &'static str {
        "tables"
    }

    fn time_limit(&self, default: Duration) -> Duration {
        default + self.exact.max_round()
    }

    fn collect<'a, 'c>(
        &'a mut self,
        ctx: &'a PollContext<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        Box::pin(async move {
            let (snapshot, report) = self.poll(ctx).await?;
            observations.tables = Some(report);
            Ok(snapshot)
        })
    }
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Shell-style glob: `*` any run of characters, `?` one character, everything else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

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
