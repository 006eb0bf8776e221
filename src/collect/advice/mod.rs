//! Missing-index advice (the rulebook's rule 3) and the rulebook lints (rule 6, unbounded
//! selects) over the top statements of each watched database.
//!
//! # The run, step by step
//!
//! 1. [`TOP_SQL`]: the `top_statements` statements of this database (`dbid` of
//!    `current_database()`) with the most total execution time in pg_stat_statements, their
//!    texts cut in SQL to `query_text_length` characters, calls and rows summed over users.
//! 2. In the daemon ([`extract`]): each normalised text is parsed with `sqlparser` (PostgreSQL
//!    dialect); the columns in `WHERE`, `JOIN ... ON`/`USING` and `ORDER BY` are found per
//!    table, aliases and common table expressions resolved. Texts that do not parse are
//!    counted (`pgvigil_advice_statements{outcome="unparsed"}`) and skipped.
//! 3. [`RESOLVE_SQL`]: every table name used, through `to_regclass` under pgvigil's
//!    `search_path` (a table found only through the application's own `search_path` is missed).
//! 4. [`TABLES_SQL`], [`COLUMNS_SQL`], [`INDEXES_SQL`], for those tables only: size
//!    (`reltuples`, `n_live_tup`), `seq_scan`/`seq_tup_read`, columns, and the first key column
//!    of each valid index.
//! 5. In the daemon ([`suggest`]): the scan counters are compared with the previous run (kept
//!    here, per table); on the first run they count since the statistics were reset. Then the
//!    suggestions and lints, capped by `max_suggestions` and `max_lints` (the rest counted).
//!
//! The collector runs every `[targets.advice] interval` (5 minutes), at the first visit of its
//! database after that (see `crate::databases`); in between, its last series stay published.
//!
//! # Cost and locks
//!
//! One read of pg_stat_statements (its texts for the top statements only) and four catalog
//! queries bounded by the tables those statements name. Nothing takes a lock on a user table:
//! `to_regclass` resolves without locking, sizes come from `pg_class`, never from
//! `pg_relation_size`, so a run never queues behind an `ACCESS EXCLUSIVE` lock (see the locks
//! module on opentelemetry#49351), and every query runs under the session's `statement_timeout`
//! and `lock_timeout`. The same SQL serves PostgreSQL 13 to 18 (pg_stat_statements 1.8+ has
//! `total_exec_time`); the extension must be installed in the database being read.
//!
//! # Databases without pg_stat_statements
//!
//! Most databases of a cluster have no pg_stat_statements extension (it is created where
//! someone ran `CREATE EXTENSION`, usually one database). There the run stops at step 1 with
//! [`CollectError::NotApplicable`] ([`NOT_INSTALLED`]): not an error, no series, the database's
//! status says "not applicable" (see [`Ran`](super::Ran)). The statements of such a database
//! *are* in the cluster-wide view, readable from any database with the extension; but a
//! session reads only its own database's catalogs, and steps 3 and 4 need those, so the visit
//! would need both the other database's statement texts and its own catalogs. The main
//! session's statements collector keeps no texts of other databases' statements
//! (`StatementsReport` holds counters only, texts only for its top-K), so there is no cheap
//! source of them here: advice covers the databases that have the extension.

pub mod extract;
pub mod suggest;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use self::extract::{TableName, analyse};
use self::suggest::{Lint, Suggestion, TableFacts, TopStatement, Window};
use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::advice::{Finding, Severity};
use crate::config::AdviceConfig;
use crate::metrics::{self, Snapshot};

/// Where pg_stat_statements is installed in this database, if it is.
pub const EXTENSION_SQL: &str = "
SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'pg_stat_statements'";

/// Why the collector does not apply in a database without pg_stat_statements (see the module
/// doc, "Databases without pg_stat_statements").
pub const NOT_INSTALLED: &str = "pg_stat_statements is not installed in this database, so there are no statements to advise on here (to get advice, run CREATE EXTENSION pg_stat_statements in it, with pg_stat_statements in shared_preload_libraries)";

/// Step 1 (`{schema}` is the extension's, quoted): `$1` text length, `$2` how many.
pub const TOP_SQL: &str = "
SELECT s.queryid, left(s.query, $1)::text, sum(s.calls)::float8, sum(s.rows)::float8,
       sum(s.total_exec_time)::float8
  FROM {schema}.pg_stat_statements s
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND s.queryid IS NOT NULL
 GROUP BY s.queryid, s.query
 ORDER BY 5 DESC
 LIMIT $2";

/// Step 3: each quoted name (`schema.table` or `table`) to its relation, or NULL.
pub const RESOLVE_SQL: &str = "SELECT q, to_regclass(q)::oid FROM unnest($1::text[]) AS q";

/// Step 4: the size and scan counters of the tables (system catalogs left out).
pub const TABLES_SQL: &str = "
SELECT c.oid, format('%I.%I', n.nspname, c.relname),
       greatest(c.reltuples, coalesce(s.n_live_tup, 0))::float8,
       coalesce(s.seq_scan, 0)::int8, coalesce(s.seq_tup_read, 0)::int8
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.oid = ANY($1) AND c.relkind IN ('r', 'm', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'";

/// Step 4: the tables' columns.
pub const COLUMNS_SQL: &str = "
SELECT attrelid, attname::text FROM pg_attribute
 WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped";

/// Step 4: the first key column of each valid index of the tables (expression indexes lead
/// with no column and serve none).
pub const INDEXES_SQL: &str = "
SELECT i.indrelid, a.attname::text
  FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
 WHERE i.indrelid = ANY($1) AND i.indisvalid AND i.indisready";

/// What one run found in one database.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AdviceReport {
    /// The database.
    pub datname: String,
    /// The exported suggestions, strongest first.
    pub suggestions: Vec<Suggestion>,
    /// Suggestions cut off by `max_suggestions`.
    pub suggestions_dropped: usize,
    /// The exported lints.
    pub lints: Vec<Lint>,
    /// Lints cut off by `max_lints`.
    pub lints_dropped: usize,
    /// Top statements whose text parsed, and those whose text did not.
    pub parsed: usize,
    /// See `parsed`.
    pub unparsed: usize,
}

impl AdviceReport {
    /// The report as schema-guard findings (`missing_index`, `select_star`,
    /// `unbounded_select`).
    pub fn findings(&self) -> Vec<Finding> {
        let suggestions = self.suggestions.iter().map(|s| Finding {
            check: "missing_index",
            severity: Severity::Warning,
            database: self.datname.clone(),
            object: s.table.clone(),
            message: s.message(),
            fix: Some(s.sql()),
        });
        let lints = self.lints.iter().map(|l| Finding {
            check: l.lint,
            severity: Severity::Info,
            database: self.datname.clone(),
            object: format!("statement {}", l.queryid),
            message: l.message.clone(),
            fix: None,
        });
        suggestions.chain(lints).collect()
    }
}

/// The scan counters of a table at a run.
#[derive(Debug, Clone, Copy)]
struct Scans {
    seq_scan: i64,
    seq_tup_read: i64,
}

/// The advice collector of one database.
#[derive(Debug)]
pub struct Advice {
    config: AdviceConfig,
    /// When the last run was, and each table's counters then.
    previous: Option<(Instant, HashMap<u32, Scans>)>,
}

impl Advice {
    /// A collector for one target's `[targets.advice]`.
    pub fn new(config: &AdviceConfig) -> Self {
        Advice {
            config: config.clone(),
            previous: None,
        }
    }
}

/// Steps 1 to 5 once. `window` turns a table's current counters into those of the window;
/// returns the report and every table's current counters.
async fn run(
    client: &tokio_postgres::Client,
    datname: &str,
    config: &AdviceConfig,
    window: impl Fn(u32, Scans) -> (Scans, Window),
) -> Result<(AdviceReport, HashMap<u32, Scans>), CollectError> {
    let schema: Option<String> = client
        .query_opt(EXTENSION_SQL, &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let Some(schema) = schema else {
        return Err(CollectError::NotApplicable(NOT_INSTALLED.to_owned()));
    };
    let sql = TOP_SQL.replace("{schema}", &extract::quote_ident(&schema));
    let length = config.query_text_length as i32;
    let limit = config.top_statements as i64;
    let mut report = AdviceReport {
        datname: datname.to_owned(),
        ..AdviceReport::default()
    };
    let mut statements = Vec::new();
    for row in client.query(&sql, &[&length, &limit]).await? {
        let text: Option<String> = row.try_get(1)?;
        match text.as_deref().map(analyse) {
            Some(Ok(analysis)) => {
                report.parsed += 1;
                statements.push(TopStatement {
                    queryid: row.try_get(0)?,
                    calls: row.try_get(2)?,
                    rows: row.try_get(3)?,
                    total_ms: row.try_get(4)?,
                    analysis,
                });
            }
            _ => report.unparsed += 1,
        }
    }
    let names: Vec<TableName> = statements
        .iter()
        .flat_map(|s| s.analysis.tables.iter().cloned())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let quoted: Vec<String> = names.iter().map(TableName::quoted).collect();
    let mut by_quoted = HashMap::new();
    for row in client.query(RESOLVE_SQL, &[&quoted]).await? {
        if let Some(oid) = row.try_get::<_, Option<u32>>(1)? {
            by_quoted.insert(row.try_get::<_, String>(0)?, oid);
        }
    }
    let oids: HashMap<TableName, u32> = names
        .into_iter()
        .filter_map(|n| Some((by_quoted.get(&n.quoted()).copied()?, n)))
        .map(|(oid, n)| (n, oid))
        .collect();
    let wanted: Vec<u32> = oids
        .values()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut tables: HashMap<u32, TableFacts> = HashMap::new();
    let mut current = HashMap::new();
    let mut window_of_run = Window::SinceReset;
    for row in client.query(TABLES_SQL, &[&wanted]).await? {
        let oid: u32 = row.try_get(0)?;
        let now = Scans {
            seq_scan: row.try_get(3)?,
            seq_tup_read: row.try_get(4)?,
        };
        current.insert(oid, now);
        let (scans, w) = window(oid, now);
        if let Window::Seconds(_) = w {
            window_of_run = w;
        }
        tables.insert(
            oid,
            TableFacts {
                name: row.try_get(1)?,
                rows: row.try_get(2)?,
                seq_scans: scans.seq_scan,
                seq_rows: scans.seq_tup_read,
                ..TableFacts::default()
            },
        );
    }
    let wanted: Vec<u32> = tables.keys().copied().collect();
    for row in client.query(COLUMNS_SQL, &[&wanted]).await? {
        if let Some(t) = tables.get_mut(&row.try_get::<_, u32>(0)?) {
            t.columns.insert(row.try_get(1)?);
        }
    }
    for row in client.query(INDEXES_SQL, &[&wanted]).await? {
        if let Some(t) = tables.get_mut(&row.try_get::<_, u32>(0)?) {
            t.leading.insert(row.try_get(1)?);
        }
    }
    let (mut suggestions, mut lints) =
        suggest::evaluate(&statements, &oids, &tables, config, window_of_run);
    report.suggestions_dropped = suggestions.len().saturating_sub(config.max_suggestions);
    suggestions.truncate(config.max_suggestions);
    report.lints_dropped = lints.len().saturating_sub(config.max_lints);
    lints.truncate(config.max_lints);
    report.suggestions = suggestions;
    report.lints = lints;
    Ok((report, current))
}

/// The series of a report.
fn export(report: &AdviceReport) -> Snapshot {
    let mut snap = Snapshot::default();
    let datname = &report.datname;
    for s in &report.suggestions {
        let columns = s.columns_label();
        snap.push(
            &metrics::INDEX_SUGGESTION_INFO,
            vec![
                datname.clone(),
                s.table.clone(),
                columns.clone(),
                s.queryid.to_string(),
            ],
            1.0,
        );
        snap.push(
            &metrics::INDEX_SUGGESTION_SEQ_SCANS,
            vec![datname.clone(), s.table.clone(), columns],
            s.seq_scans as f64,
        );
    }
    for l in &report.lints {
        snap.push(
            &metrics::STATEMENT_LINT_INFO,
            vec![datname.clone(), l.queryid.to_string(), l.lint.to_owned()],
            1.0,
        );
    }
    let dropped = [
        (
            &metrics::INDEX_SUGGESTIONS_DROPPED,
            report.suggestions_dropped,
        ),
        (&metrics::STATEMENT_LINTS_DROPPED, report.lints_dropped),
    ];
    for (def, n) in dropped {
        snap.push(def, vec![datname.clone()], n as f64);
    }
    for (outcome, n) in [("parsed", report.parsed), ("unparsed", report.unparsed)] {
        snap.push(
            &metrics::ADVICE_STATEMENTS,
            vec![datname.clone(), outcome.to_owned()],
            n as f64,
        );
    }
    snap
}

/// The findings of one database for `pgvigil advise`: one run, the scan counters as they
/// stand (since the statistics were reset).
pub async fn findings(
    client: &tokio_postgres::Client,
    datname: &str,
    config: &AdviceConfig,
) -> Result<Vec<Finding>, CollectError> {
    let (report, _) = run(client, datname, config, |_, now| (now, Window::SinceReset)).await?;
    Ok(report.findings())
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "advice",
    table: "advice",
    reads: "the top statements of pg_stat_statements (parsed with sqlparser), to_regclass, pg_class, pg_stat_user_tables, pg_attribute, pg_index",
    scope: Scope::Database,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::ADVICE_METRICS,
    section: |t| &t.advice,
    build: |t| Box::new(Advice::new(&t.advice)),
    carry: |from, to| {
        for (datname, report) in from.each_database() {
            to.database_mut(datname).advice = report.advice.clone();
        }
    },
};

impl ReportCollector for Advice {
    const NAME: &'static str = SPEC.name;
    type Report = AdviceReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, AdviceReport), CollectError> {
        let now = Instant::now();
        let previous = self.previous.as_ref();
        let (report, scans) = run(ctx.client, ctx.database, &self.config, |oid, current| {
            match previous.and_then(|(then, p)| Some((then, p.get(&oid)?))) {
                Some((then, before)) if current.seq_scan >= before.seq_scan => (
                    Scans {
                        seq_scan: current.seq_scan - before.seq_scan,
                        seq_tup_read: current.seq_tup_read - before.seq_tup_read,
                    },
                    Window::Seconds(now.duration_since(*then).as_secs_f64()),
                ),
                // First sight, or the counters were reset: what they hold.
                _ => (current, Window::SinceReset),
            }
        })
        .await?;
        self.previous = Some((now, scans));
        Ok((export(&report), report))
    }

    fn store(report: AdviceReport, ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.database_mut(ctx.database).advice = Some(report);
    }
}
