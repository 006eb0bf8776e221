//! Every watched database's size on disk, on a slow schedule of its own (default every 5
//! minutes: `pg_database_size` stats every file of a database), and how fast it grows, for
//! the DatabaseGrowth rule.
//!
//! One run, over the main session:
//!
//! 1. [`LIST_SQL`]: the databases that are no template, whether pgvigil may measure each
//!    (CONNECT on it, or the privileges of `pg_read_all_stats`), and the server's clock;
//! 2. the databases `[targets.databases]` selects and pgvigil may measure are measured in one
//!    query ([`SIZES_SQL`]); if that fails (a database dropped meanwhile, ...), each is
//!    measured on its own, so one database's error costs only its own series;
//! 3. [`DatabaseSizes::summarise`] (pure): the series, and each database's growth since the
//!    previous run in bytes per hour.
//!
//! Cost: a `stat()` per file of each database, about 1 ms per thousand files; no lock is
//! taken, so it runs while a DDL holds ACCESS EXCLUSIVE on any table, within the session's
//! `statement_timeout`. Versions: the same SQL on 13 to 18.

use std::collections::{BTreeMap, HashMap};

use tracing::{debug, warn};

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::config::DatabasesConfig;
use crate::metrics::{self, Snapshot};

/// The databases, whether each can be measured, and the clock.
pub const LIST_SQL: &str = "
SELECT oid, datname::text,
       has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE'),
       extract(epoch FROM now())::float8
  FROM pg_database
 WHERE NOT datistemplate";

/// The sizes of a list of databases (NULL for one dropped meanwhile).
pub const SIZES_SQL: &str =
    "SELECT oid, pg_database_size(oid)::float8 FROM unnest($1::oid[]) AS oid";

/// One database's size.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSize {
    /// Bytes on disk.
    pub bytes: f64,
    /// Growth since the previous run, bytes per hour (`None` on the first run).
    pub growth_bytes_per_hour: Option<f64>,
    /// Seconds between the two runs the growth is measured over.
    pub over_seconds: Option<f64>,
}

/// What the database_sizes collector learnt in one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseSizesReport {
    /// By database name, the measured ones.
    pub databases: BTreeMap<String, DatabaseSize>,
    /// Watched databases that could not be measured, with why.
    pub unmeasured: BTreeMap<String, String>,
}

/// The database sizes collector; remembers each database's previous size. Which databases
/// it measures is read from the target's config at every run (a reload applies at once).
#[derive(Debug, Default)]
pub struct DatabaseSizes {
    previous: HashMap<String, (f64, f64)>,
    /// The databases not measured last time, so each is logged once, not every run.
    unmeasured: BTreeMap<String, String>,
}

impl DatabaseSizes {
    /// Series and growth from one run's sizes (`now`: the server's clock, Unix seconds).
    pub fn summarise(
        &mut self,
        now: f64,
        measured: Vec<(String, f64)>,
        unmeasured: BTreeMap<String, String>,
    ) -> (Snapshot, DatabaseSizesReport) {
        let mut snap = Snapshot::default();
        let mut report = DatabaseSizesReport {
            unmeasured,
            ..Default::default()
        };
        let mut seen = HashMap::new();
        for (datname, bytes) in measured {
            snap.push(&metrics::DB_SIZE, vec![datname.clone()], bytes);
            let growth = self
                .previous
                .get(&datname)
                .filter(|(_, then)| now - then >= 1.0)
                .map(|(before, then)| ((bytes - before) * 3600.0 / (now - then), now - then));
            report.databases.insert(
                datname.clone(),
                DatabaseSize {
                    bytes,
                    growth_bytes_per_hour: growth.map(|(g, _)| g),
                    over_seconds: growth.map(|(_, s)| s),
                },
            );
            seen.insert(datname, (bytes, now));
        }
        self.previous = seen;
        for (datname, why) in &report.unmeasured {
            if self.unmeasured.get(datname) != Some(why) {
                warn!(%datname, %why, "database size not measured");
            }
        }
        self.unmeasured = report.unmeasured.clone();
        snap.set(
            &metrics::DB_SIZES_UNMEASURED,
            report.unmeasured.len() as f64,
        );
        (snap, report)
    }
}

/// The sizes of `measure` in one query; if that fails on the server, one query per database,
/// each failure recorded in `unmeasured` instead of failing the run.
async fn measure_sizes(
    ctx: &PollContext<'_>,
    measure: &[(u32, String)],
    unmeasured: &mut BTreeMap<String, String>,
) -> Result<HashMap<u32, Option<f64>>, CollectError> {
    let oids: Vec<u32> = measure.iter().map(|(oid, _)| *oid).collect();
    let mut sizes = HashMap::new();
    let batch = match ctx.query(SIZES_SQL, &[&oids]).await {
        Ok(rows) => rows,
        Err(batch) if batch.as_db_error().is_some() => {
            debug!(error = %batch, "database sizes: measuring one database at a time");
            let mut rows = Vec::new();
            for (oid, datname) in measure {
                match ctx.query(SIZES_SQL, &[&vec![*oid]]).await {
                    Ok(one) => rows.extend(one),
                    Err(e) if e.as_db_error().is_some() => {
                        unmeasured.insert(datname.clone(), super::describe_pg_error(&e));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            rows
        }
        Err(e) => return Err(e.into()),
    };
    for row in batch {
        sizes.insert(row.try_get(0)?, row.try_get(1)?);
    }
    Ok(sizes)
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "database_sizes",
    table: "database_sizes",
    reads: "pg_database_size of every watched database, on a slow schedule of its own (it stats every file); one database's error costs only its own series",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: &[&metrics::DB_SIZE, &metrics::DB_SIZES_UNMEASURED],
    section: |t| &t.database_sizes,
    build: |_| Box::new(DatabaseSizes::default()),
    carry: |from, to| to.database_sizes = from.database_sizes.clone(),
};

impl ReportCollector for DatabaseSizes {
    const NAME: &'static str = SPEC.name;
    type Report = DatabaseSizesReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, DatabaseSizesReport), CollectError> {
        let watched: &DatabasesConfig = &ctx.target.databases;
        let rows = ctx.query(LIST_SQL, &[]).await?;
        let mut now = 0.0;
        let mut measure: Vec<(u32, String)> = Vec::new();
        let mut unmeasured = BTreeMap::new();
        for row in &rows {
            let oid: u32 = row.try_get(0)?;
            let datname: String = row.try_get(1)?;
            let allowed: bool = row.try_get(2)?;
            now = row.try_get(3)?;
            if !watched.selects(&datname) {
                continue;
            }
            if allowed {
                measure.push((oid, datname));
            } else {
                unmeasured.insert(
                    datname,
                    "no CONNECT privilege; GRANT pg_monitor (or CONNECT on the database) to pgvigil's role".to_owned(),
                );
            }
        }
        let sizes = measure_sizes(ctx, &measure, &mut unmeasured).await?;
        let measured = measure
            .into_iter()
            .filter_map(|(oid, datname)| Some((datname, sizes.get(&oid).copied().flatten()?)))
            .collect();
        Ok(self.summarise(now, measured, unmeasured))
    }

    fn store(report: DatabaseSizesReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.database_sizes = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_per_hour_between_two_runs() {
        let mut sizes = DatabaseSizes::default();
        let (snap, first) = sizes.summarise(1000.0, vec![("app".into(), 1e6)], BTreeMap::new());
        assert_eq!(snap.get(&metrics::DB_SIZE)[0].value, 1e6);
        assert_eq!(first.databases["app"].growth_bytes_per_hour, None);
        let (_, second) = sizes.summarise(1300.0, vec![("app".into(), 2e6)], BTreeMap::new());
        assert_eq!(second.databases["app"].growth_bytes_per_hour, Some(12e6));
        assert_eq!(second.databases["app"].over_seconds, Some(300.0));
    }

    #[test]
    fn unmeasured_databases_are_counted() {
        let mut sizes = DatabaseSizes::default();
        let unmeasured = BTreeMap::from([("secret".to_owned(), "no CONNECT".to_owned())]);
        let (snap, report) = sizes.summarise(1.0, vec![], unmeasured);
        assert_eq!(snap.get(&metrics::DB_SIZES_UNMEASURED)[0].value, 1.0);
        assert!(report.databases.is_empty());
    }
}
