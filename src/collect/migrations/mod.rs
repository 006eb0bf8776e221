//! The schema guard's migration checks, per database: what the migration tools recorded
//! (golang-migrate, Flyway, sqlx, Alembic: the current version, failed migrations, every move
//! of the version as a schema-change event) and what unsafe migrations left behind (INVALID
//! indexes, NOT VALID constraints, rewrites and index builds in progress).
//!
//! # The poll, step by step
//!
//! 1. [`sql::CANDIDATES_SQL`] finds the migration tables in the catalogs: tables named like a
//!    tool's default (`schema_migrations`, `flyway_schema_history`, `_sqlx_migrations`,
//!    `alembic_version`) in any schema if `auto_detect`, and the configured
//!    `[[targets.migrations.tables]]`; with their columns, pgvigil's SELECT privilege, and
//!    whether an ACCESS EXCLUSIVE lock is held or awaited on them (from `pg_locks`).
//! 2. Each table with the shape its tool writes ([`tools::problem`]), readable and not locked,
//!    is read with one query ([`sql::records_sql`], at most [`sql::MAX_RECORDS`] rows) and
//!    interpreted ([`tools::interpret`]): the current version and the failed migrations. A
//!    table with another shape (Rails also writes `schema_migrations`), a denied read or a
//!    lock is a problem named with its fix — logged once, on the status page and in
//!    `pgvigil_migration_table_problems` — never an error of the collector; a locked table
//!    keeps what it said last.
//! 3. [`sql::INVALID_INDEXES_SQL`], [`sql::NOT_VALID_SQL`] and [`sql::OPERATIONS_SQL`] read
//!    the leftovers: `pg_index.indisvalid = false` without a running build on its table
//!    (`pg_stat_progress_create_index`), `pg_constraint.convalidated = false`, and the rows of
//!    `pg_stat_progress_create_index` and `pg_stat_progress_cluster` with their progress.
//! 4. [`summarise`] builds the series; a version that moved since the last poll counts as a
//!    schema change (`pgvigil_schema_changes_total`, `pgvigil_schema_change_timestamp_seconds`).
//!    [`MigrationsReport::findings`] turns the report into [`Finding`]s for `pgvigil advise`,
//!    and the `MigrationFailed` and `InvalidIndex` rules read the report.
//!
//! # Cost and locks
//!
//! Five catalog queries plus one small query per migration table, every `interval` (1m). No
//! query locks a user relation except the migration tables' own reads (ACCESS SHARE), and
//! those are skipped while anything holds or waits for ACCESS EXCLUSIVE on the table, so
//! pgvigil never joins a lock queue behind a migration; every query runs under the session's
//! `statement_timeout` and `lock_timeout`. Sizes come from `relpages`, never from
//! `pg_relation_size` (which locks: opentelemetry-collector-contrib#49351), and names from
//! `regclass` output and `format('%I.%I')`, catalog-cache lookups without locks.
//!
//! # Versions
//!
//! | server | what changed |
//! |---|---|
//! | 13+ | the same catalogs and progress views throughout; PostgreSQL 18 can add NOT NULL constraints `NOT VALID` (`type="not_null"`) |
//!
//! The progress views show other roles' backends with their relations only to members of
//! `pg_read_all_stats` (part of `pg_monitor`): without it a running build's half-made index
//! would be reported as INVALID.

pub mod leftovers;
pub mod sql;
pub mod tools;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::warn;

use self::leftovers::{InvalidIndex, NotValidConstraint, Operation};
use self::tools::{Candidate, Record};
use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::advice::{Finding, Severity};
use crate::config::{MigrationTool, MigrationsConfig};
use crate::metrics::{self, Snapshot};

/// A failed migration, as one table records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedMigration {
    /// The tool's row.
    #[serde(flatten)]
    pub record: Record,
    /// When pgvigil first saw it failed (RFC 3339): golang-migrate records no time.
    pub seen_since: String,
    /// How to recover, for this tool.
    pub fix: String,
}

/// One migration table and what it says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationTable {
    /// Whose.
    pub tool: MigrationTool,
    /// `schema.table`, quoted as needed.
    pub table: String,
    /// The current version; `None` for an empty table.
    pub version: Option<String>,
    /// Failed migrations recorded now.
    pub failed: Vec<FailedMigration>,
}

/// What the migrations collector found in one database.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MigrationsReport {
    /// The database (the `datname` alert label).
    pub datname: String,
    /// The migration tables read (a locked one as it was last read).
    pub tables: Vec<MigrationTable>,
    /// Tables that could not be read, each with its fix.
    pub problems: Vec<String>,
    /// INVALID indexes (at most `max_objects`).
    pub invalid_indexes: Vec<InvalidIndex>,
    /// All of them, including those beyond `max_objects`.
    pub invalid_indexes_total: i64,
    /// NOT VALID constraints (at most `max_objects`).
    pub not_valid_constraints: Vec<NotValidConstraint>,
    /// All of them.
    pub not_valid_constraints_total: i64,
    /// Index builds and rewrites running now.
    pub operations: Vec<Operation>,
}

impl MigrationsReport {
    /// Every finding of the report, failed migrations first.
    pub fn findings(&self) -> Vec<Finding> {
        let db = &self.datname;
        let mut out = Vec::new();
        for t in &self.tables {
            for f in &t.failed {
                let r = &f.record;
                let what = [r.description.as_str(), r.script.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                let when = r.installed_on.as_deref().unwrap_or(f.seen_since.as_str());
                out.push(Finding {
                    check: "migration_failed",
                    severity: Severity::Critical,
                    database: db.clone(),
                    object: t.table.clone(),
                    message: format!(
                        "{} records migration {} ({what}) as failed in {} since {when}",
                        t.tool, r.version, t.table
                    ),
                    fix: Some(f.fix.clone()),
                });
            }
        }
        for p in &self.problems {
            out.push(Finding {
                check: "migration_table_unreadable",
                severity: Severity::Warning,
                database: db.clone(),
                object: p.split_whitespace().next().unwrap_or_default().to_owned(),
                message: p.clone(),
                fix: None,
            });
        }
        out.extend(self.invalid_indexes.iter().map(|i| i.finding(db)));
        out.extend(self.not_valid_constraints.iter().map(|c| c.finding(db)));
        out.extend(self.operations.iter().map(|o| o.finding(db)));
        out
    }
}

/// A table's reading, or why it could not be read.
type TableRead = Result<MigrationTable, String>;

/// Read everything once: the candidate tables (each read, or its problem) and the leftovers.
async fn read(
    client: &tokio_postgres::Client,
    config: &MigrationsConfig,
) -> Result<(Vec<(Candidate, TableRead)>, MigrationsReport), CollectError> {
    let (auto, configured) = wanted(config);
    let rows = client
        .query(sql::CANDIDATES_SQL, &[&auto, &configured, &sql::MAX_TABLES])
        .await?;
    let mut tables = Vec::new();
    for row in rows {
        let relname: String = row.try_get(1)?;
        let ord: Option<i64> = row.try_get(2)?;
        let configured_tool = ord.and_then(|o| config.tables.get(o as usize - 1).map(|t| t.tool));
        let Some(tool) = configured_tool.or_else(|| {
            MigrationTool::ALL
                .into_iter()
                .find(|t| t.default_table() == relname)
        }) else {
            continue;
        };
        let names: Vec<String> = row.try_get(3)?;
        let types: Vec<String> = row.try_get(4)?;
        let candidate = Candidate {
            tool,
            table: row.try_get(0)?,
            columns: names.into_iter().zip(types).collect(),
            readable: row.try_get(5)?,
            locked: row.try_get(6)?,
            configured: configured_tool.is_some(),
        };
        let read = read_table(client, &candidate).await;
        tables.push((candidate, read));
    }
    let limit = config.max_objects as i64;
    let mut report = MigrationsReport::default();
    for row in client.query(sql::INVALID_INDEXES_SQL, &[&limit]).await? {
        report.invalid_indexes_total = row.try_get(5)?;
        report.invalid_indexes.push(InvalidIndex {
            index: row.try_get(0)?,
            table: row.try_get(1)?,
            size_bytes: row.try_get(2)?,
            unique: row.try_get(3)?,
            partitioned: row.try_get(4)?,
        });
    }
    for row in client.query(sql::NOT_VALID_SQL, &[&limit]).await? {
        report.not_valid_constraints_total = row.try_get(4)?;
        report.not_valid_constraints.push(NotValidConstraint {
            name: row.try_get(0)?,
            table: row.try_get(1)?,
            kind: NotValidConstraint::kind_of(&row.try_get::<_, String>(2)?),
            definition: row.try_get(3)?,
        });
    }
    let max = &sql::MAX_OPERATIONS;
    report.operations = super::query_rows(client, sql::OPERATIONS_SQL, &[max], |row| {
        let n = |i: usize| -> Result<i64, tokio_postgres::Error> {
            Ok(row.try_get::<_, Option<i64>>(i)?.unwrap_or(0))
        };
        Ok(Operation {
            pid: row.try_get(0)?,
            command: row.try_get(1)?,
            phase: row.try_get(2)?,
            table: row.try_get(3)?,
            index: row.try_get(4)?,
            blocks: (n(5)?, n(6)?),
            tuples: (n(7)?, n(8)?),
            seconds: row.try_get(9)?,
        })
    })
    .await?;
    Ok((tables, report))
}

/// One candidate's records, or why they cannot be read.
async fn read_table(client: &tokio_postgres::Client, c: &Candidate) -> TableRead {
    if let Some(problem) = tools::problem(c) {
        return Err(problem);
    }
    if c.locked {
        return Err(format!(
            "{} is locked ACCESS EXCLUSIVE (a migration is running, or waiting to), so it was not read; it is read again next time",
            c.table
        ));
    }
    let rows = client
        .query(&sql::records_sql(c.tool, &c.table), &[&sql::MAX_RECORDS])
        .await
        .map_err(|e| {
            format!(
                "cannot read {}'s migration table {}: {}; check its definition, the grants of pgvigil's role and lock_timeout",
                c.tool,
                c.table,
                super::describe_pg_error(&e)
            )
        })?;
    let records = rows
        .iter()
        .map(|r| {
            Ok(Record {
                version: r.try_get(0)?,
                description: r.try_get(1)?,
                script: r.try_get(2)?,
                installed_on: r.try_get(3)?,
                success: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(|e| format!("unexpected values in {}: {e}", c.table))?;
    let reading = tools::interpret(c.tool, records);
    Ok(MigrationTable {
        tool: c.tool,
        table: c.table.clone(),
        version: reading.version,
        failed: reading
            .failed
            .into_iter()
            .map(|record| FailedMigration {
                fix: tools::fix(c.tool, &c.table, &record),
                record,
                seen_since: crate::status::now_rfc3339(),
            })
            .collect(),
    })
}

/// The findings of one database read once, for `pgvigil advise`: no change tracking, a
/// locked migration table reported as such.
pub async fn findings(
    client: &tokio_postgres::Client,
    config: &MigrationsConfig,
) -> Result<Vec<Finding>, CollectError> {
    let datname: String = client
        .query_one("SELECT current_database()::text", &[])
        .await?
        .try_get(0)?;
    let (tables, mut report) = read(client, config).await?;
    report.datname = datname;
    for (_, read) in tables {
        match read {
            Ok(t) => report.tables.push(t),
            Err(p) => report.problems.push(p),
        }
    }
    Ok(report.findings())
}

/// The migration tables of the connected database, found or configured (for
/// `pgvigil check-privileges`), each as `schema.table`.
pub async fn table_names(
    client: &tokio_postgres::Client,
    config: &MigrationsConfig,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let (auto, configured) = wanted(config);
    let rows = client
        .query(sql::CANDIDATES_SQL, &[&auto, &configured, &sql::MAX_TABLES])
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// The default names looked for (if `auto_detect`) and the configured tables, quoted.
fn wanted(config: &MigrationsConfig) -> (Vec<String>, Vec<String>) {
    let auto = if config.auto_detect {
        MigrationTool::ALL
            .iter()
            .map(|t| t.default_table().to_owned())
            .collect()
    } else {
        Vec::new()
    };
    let configured = config.tables.iter().map(|t| t.table.quoted()).collect();
    (auto, configured)
}

/// A schema-change event: how many times a table's version moved, and when last.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Changes {
    /// Moves seen.
    pub count: u64,
    /// Unix time of the last.
    pub last_unix: Option<f64>,
}

/// The series of one poll's report, with each table's schema-change events.
pub fn summarise(report: &MigrationsReport, changes: &BTreeMap<String, Changes>) -> Snapshot {
    let mut snap = Snapshot::default();
    let db = report.datname.clone();
    for t in &report.tables {
        let labels = vec![db.clone(), t.tool.as_str().to_owned(), t.table.clone()];
        if let Some(version) = &t.version {
            let mut info = labels.clone();
            info.push(version.clone());
            snap.push(&metrics::MIGRATION_INFO, info, 1.0);
        }
        snap.push(
            &metrics::MIGRATION_FAILED,
            labels.clone(),
            t.failed.len() as f64,
        );
        let c = changes.get(&t.table).copied().unwrap_or_default();
        snap.push(&metrics::SCHEMA_CHANGES, labels.clone(), c.count as f64);
        if let Some(at) = c.last_unix {
            snap.push(&metrics::SCHEMA_CHANGE_TIMESTAMP, labels, at);
        }
    }
    snap.push(
        &metrics::MIGRATION_TABLE_PROBLEMS,
        vec![db.clone()],
        report.problems.len() as f64,
    );
    snap.push(
        &metrics::INVALID_INDEXES,
        vec![db.clone()],
        report.invalid_indexes_total as f64,
    );
    for i in &report.invalid_indexes {
        let info = vec![db.clone(), i.index.clone(), i.table.clone()];
        snap.push(&metrics::INVALID_INDEX_INFO, info, 1.0);
        let size = vec![db.clone(), i.index.clone()];
        snap.push(&metrics::INVALID_INDEX_SIZE, size, i.size_bytes as f64);
    }
    snap.push(
        &metrics::NOT_VALID_CONSTRAINTS,
        vec![db.clone()],
        report.not_valid_constraints_total as f64,
    );
    for c in &report.not_valid_constraints {
        let info = vec![db.clone(), c.name.clone(), c.table.clone(), c.kind.clone()];
        snap.push(&metrics::NOT_VALID_CONSTRAINT_INFO, info, 1.0);
    }
    let omitted = [
        (
            "index",
            report.invalid_indexes_total,
            report.invalid_indexes.len(),
        ),
        (
            "constraint",
            report.not_valid_constraints_total,
            report.not_valid_constraints.len(),
        ),
    ];
    for (kind, total, shown) in omitted {
        let n = (total - shown as i64).max(0);
        snap.push(
            &metrics::SCHEMA_OBJECTS_OMITTED,
            vec![db.clone(), kind.to_owned()],
            n as f64,
        );
    }
    for o in &report.operations {
        let pid = o.pid.to_string();
        let id = vec![db.clone(), pid, o.command.clone(), o.table.clone()];
        if let Some(ratio) = o.ratio() {
            let mut labels = id.clone();
            labels.push(o.phase.clone());
            snap.push(&metrics::SCHEMA_OPERATION_PROGRESS, labels, ratio);
        }
        if let Some(s) = o.seconds {
            snap.push(&metrics::SCHEMA_OPERATION_SECONDS, id, s.max(0.0));
        }
    }
    snap
}

/// The migrations collector of one database.
#[derive(Debug)]
pub struct Migrations {
    config: MigrationsConfig,
    interval: Duration,
    /// The last run: when, its series and its report (served until `interval` passed).
    last: Option<(Instant, Snapshot, MigrationsReport)>,
    /// Each table's version at the last reading, and its change events.
    versions: BTreeMap<String, Option<String>>,
    changes: BTreeMap<String, Changes>,
    /// When each (table, version) was first seen failed.
    failed_since: BTreeMap<(String, String), String>,
    /// Problems already logged.
    logged: HashSet<String>,
}

impl Migrations {
    /// A collector for `[targets.migrations]`, run at most every `interval`.
    pub fn new(config: &MigrationsConfig, interval: Duration) -> Self {
        Migrations {
            config: config.clone(),
            interval,
            last: None,
            versions: BTreeMap::new(),
            changes: BTreeMap::new(),
            failed_since: BTreeMap::new(),
            logged: HashSet::new(),
        }
    }

    /// Read every migration table and the leftovers now (the report without its series).
    async fn read_now(&mut self, ctx: &PollContext<'_>) -> Result<MigrationsReport, CollectError> {
        let (tables, mut report) = read(ctx.client, &self.config).await?;
        report.datname = ctx.database.to_owned();
        let previous: BTreeMap<String, MigrationTable> = self
            .last
            .take()
            .map(|(_, _, r)| r.tables.into_iter().map(|t| (t.table.clone(), t)).collect())
            .unwrap_or_default();
        for (candidate, read) in tables {
            match read {
                Ok(mut t) => {
                    for f in &mut t.failed {
                        let key = (t.table.clone(), f.record.version.clone());
                        f.seen_since = self
                            .failed_since
                            .entry(key)
                            .or_insert_with(|| f.seen_since.clone())
                            .clone();
                    }
                    self.record_version(&t);
                    report.tables.push(t);
                }
                Err(problem) => {
                    if self.logged.insert(problem.clone()) {
                        warn!(target = %ctx.target.name, datname = ctx.database, "{problem}");
                    }
                    // A locked (or briefly unreadable) table keeps what it said last.
                    if let Some(t) = previous.get(&candidate.table) {
                        report.tables.push(t.clone());
                    }
                    report.problems.push(problem);
                }
            }
        }
        let failed: HashSet<(String, String)> = report
            .tables
            .iter()
            .flat_map(|t| {
                t.failed
                    .iter()
                    .map(|f| (t.table.clone(), f.record.version.clone()))
            })
            .collect();
        self.failed_since.retain(|k, _| failed.contains(k));
        Ok(report)
    }

    /// Count a move of `t`'s version (the first reading sets the baseline).
    fn record_version(&mut self, t: &MigrationTable) {
        let before = self.versions.insert(t.table.clone(), t.version.clone());
        if matches!(&before, Some(v) if *v != t.version) {
            let c = self.changes.entry(t.table.clone()).or_default();
            c.count += 1;
            c.last_unix = Some(super::tables::unix_now());
        }
    }
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "migrations",
    table: "migrations",
    reads: "migration tools' tables (golang-migrate, Flyway, sqlx, Alembic; found in pg_class or configured), INVALID indexes, NOT VALID constraints, pg_stat_progress_create_index and pg_stat_progress_cluster",
    scope: Scope::Database,
    versions: registry::PG13,
    grants: &["pg_monitor", "SELECT ON <migration tables>"],
    metrics: metrics::MIGRATIONS_METRICS,
    section: |t| &t.migrations,
    build: |t| {
        let interval = t.migrations.interval.unwrap_or(t.poll_interval);
        Box::new(Migrations::new(&t.migrations, interval))
    },
    carry: |from, to| {
        for (datname, report) in from.each_database() {
            to.database_mut(datname).migrations = report.migrations.clone();
        }
    },
};

impl ReportCollector for Migrations {
    const NAME: &'static str = SPEC.name;
    type Report = MigrationsReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, MigrationsReport), CollectError> {
        // Database visits come every [targets.tables] interval; this one runs on its own and
        // answers from its last run in between.
        if let Some((at, snapshot, report)) = &self.last
            && at.elapsed() < self.interval
        {
            return Ok((snapshot.clone(), report.clone()));
        }
        let report = self.read_now(ctx).await?;
        let snapshot = summarise(&report, &self.changes);
        self.last = Some((Instant::now(), snapshot.clone(), report.clone()));
        Ok((snapshot, report))
    }

    fn store(report: MigrationsReport, ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.database_mut(ctx.database).migrations = Some(report);
    }
}
