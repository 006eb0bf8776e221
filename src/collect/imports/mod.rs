//! Import reconciliation: for every import an application records in an audit table, count the
//! rows actually committed in its target table and say whether they are all there.
//!
//! * [`audit`] reads audit rows through the configured column mapping and looks up what the
//!   checks need (target table, id column and its index, row counts, `pg_xact_status`).
//! * [`reconcile`] is the pure verdict logic, with the grace period, the confirming second poll
//!   and the re-check window.
//! * [`problem`] says why an audit table could not be read and what fixes it (a missing grant,
//!   a lock held on it and by whom, a statement timeout and its knobs).
//!
//! With no `[[targets.imports.audit_tables]]` configured, a table named `import_audit` in
//! DESIGN.md's shape is found and watched. A broken audit table or a garbage row is reported
//! (logged once, shown in the report and on the status page) and never stops the other checks.

pub mod audit;
pub mod problem;
#[cfg(test)]
mod proptests;
pub mod reconcile;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tracing::warn;

use self::audit::{IdColumn, RawRow, Target};
use self::reconcile::{AuditStatus, Facts, ImportVerdict, Policy, Reconciler, Verdict};
use super::registry::{self, CollectorSpec, Scope};
use super::{
    CollectError, Observations, PollContext, Postgres, ReportCollector, describe_pg_error, session,
};
use crate::config::ImportsConfig;
use crate::metrics::{self, Snapshot};

/// What the imports collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportsReport {
    /// The database the imports live in (the `datname` alert label).
    pub datname: String,
    /// The audit tables read.
    pub audit_tables: Vec<String>,
    /// Every import the audit tables returned, newest first within each table.
    pub imports: Vec<ImportVerdict>,
    /// Audit tables that could not be read, and why.
    pub problems: Vec<String>,
    /// Imports the last read of an audit table returned, when it could not be read this time
    /// (permission revoked, a statement or lock timeout): unknown, not gone, so their alerts
    /// keep their state instead of resolving for one poll and firing again.
    pub unknown: Vec<UnknownImport>,
    /// Audit tables that could not be read and have not been read since pgvigil started (the
    /// first polls after a restart): what they hold is not known at all, so every import
    /// alert of this database keeps its state (the alert state file kept its `firing_since`)
    /// until a read of them succeeds and says whether it still holds.
    pub unknown_tables: Vec<String>,
    /// When a verdict waiting for its confirming second look can next be settled, from now.
    #[serde(skip)]
    pub look_again_in: Option<std::time::Duration>,
}

/// An import of an audit table that could not be read this poll; the values of its alerts'
/// labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownImport {
    /// The audit table that could not be read.
    pub audit_table: String,
    /// The `table` label: the import's target table as last read (empty when it had none).
    pub table: String,
    /// The `import_id` label.
    pub import_id: String,
}

/// The imports collector.
#[derive(Debug)]
pub struct Imports {
    config: ImportsConfig,
    reconciler: Reconciler,
    /// Verdict counts since start (a counter).
    checks: BTreeMap<&'static str, u64>,
    /// Unix time of the last complete import per target table.
    last_verified: BTreeMap<String, f64>,
    /// Problems already logged, so each is logged once.
    logged: HashSet<String>,
    /// The imports of each audit table's last successful read, as [`UnknownImport`]s ready
    /// for a poll that cannot read it.
    last_read: HashMap<String, Vec<UnknownImport>>,
}

impl Imports {
    /// A collector for one target's `[targets.imports]`.
    pub fn new(config: &ImportsConfig) -> Self {
        Imports {
            reconciler: Reconciler::new(Policy {
                grace_period: config.grace_period,
                recheck_interval: config.recheck_interval,
                stall_after: config.stall_after,
                max_duration: config.max_duration,
            }),
            config: config.clone(),
            checks: BTreeMap::new(),
            last_verified: BTreeMap::new(),
            logged: HashSet::new(),
            last_read: HashMap::new(),
        }
    }

    fn warn_once(&mut self, target: &str, message: String) {
        if self.logged.insert(message.clone()) {
            warn!(target = %target, "imports: {message}");
        }
    }

    /// One run over every audit table: the verdicts, without the series.
    async fn report(&mut self, ctx: &PollContext<'_>) -> Result<ImportsReport, CollectError> {
        let client = ctx.client;
        let target_name = &ctx.target.name;
        let who = client
            .query_one(
                "SELECT current_database()::text, quote_ident(current_user)",
                &[],
            )
            .await?;
        let (datname, role): (String, String) = (who.try_get(0)?, who.try_get(1)?);
        let sources = if self.config.audit_tables.is_empty() {
            audit::discover(client).await?
        } else {
            self.config.audit_tables.clone()
        };
        let mut report = ImportsReport {
            datname,
            ..ImportsReport::default()
        };
        // One lock query per poll; only needed when something could be at risk.
        let mut at_risk = None;
        let now = Instant::now();
        let mut seen = HashSet::new();
        let mut targets: HashMap<String, Result<Option<Target>, String>> = HashMap::new();
        let mut columns: HashMap<(u32, String), Result<Option<IdColumn>, String>> = HashMap::new();
        let window = self.config.recheck_window.as_secs_f64();
        let limit = i64::try_from(self.config.max_imports).unwrap_or(i64::MAX);

        let mut unread = HashSet::new();
        for source in sources {
            let name = source.table.to_string();
            let rows = match audit::read(client, &source, window, limit).await {
                Ok(rows) => rows,
                // The session is gone (a restart between two queries): nothing is known of
                // this database's imports now, which is not the same as none.
                Err(e) if session::is_session_lost(&e) => return Err(e.into()),
                Err(e) => {
                    unread.insert(name.clone());
                    let holders = if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                        problem::lock_holders(client, &source).await
                    } else {
                        Vec::new()
                    };
                    let knobs = problem::Knobs {
                        target: ctx.target,
                        imports: &self.config,
                    };
                    let problem = problem::describe(
                        &source,
                        &role,
                        knobs,
                        e.code(),
                        &describe_pg_error(&e),
                        &holders,
                    );
                    self.warn_once(target_name, problem.clone());
                    report.problems.push(problem);
                    match self.last_read.get(&name) {
                        Some(last) => report.unknown.extend(last.iter().cloned()),
                        None => report.unknown_tables.push(name.clone()),
                    }
                    continue;
                }
            };
            report.audit_tables.push(name.clone());
            let first = report.imports.len();
            for raw in rows {
                let (id, status) = raw.id_and_status();
                seen.insert((name.clone(), id.clone()));
                let checked = self
                    .check(
                        ctx,
                        &name,
                        &raw,
                        &mut targets,
                        &mut columns,
                        &mut at_risk,
                        now,
                    )
                    .await;
                let verdict = match checked {
                    Ok(v) => v,
                    Err(Unchecked::Lost(e)) => return Err(e.into()),
                    Err(Unchecked::Invalid(reason)) => {
                        if self.reconciler.first_invalid(&name, &id) {
                            warn!(
                                target = %target_name,
                                audit_table = %name,
                                import_id = %id,
                                "imports: invalid audit row: {reason}"
                            );
                            *self.checks.entry(Verdict::Invalid.as_str()).or_default() += 1;
                        }
                        ImportVerdict::invalid(&name, &id, &status, reason)
                    }
                };
                report.imports.push(verdict);
            }
            self.last_read
                .insert(name, unknown_imports(&report.imports[first..]));
        }
        self.last_read
            .retain(|name, _| unread.contains(name) || report.audit_tables.contains(name));
        self.reconciler.retain(&seen, &unread);
        report.look_again_in = report.imports.iter().filter_map(|v| v.settle_in).min();
        Ok(report)
    }

    /// Resolve, count and judge one audit row; `Ok(Err)` is the reason it is invalid, `Err`
    /// a lost session (the row is unknown, not invalid).
    #[allow(clippy::too_many_arguments)]
    async fn check(
        &mut self,
        ctx: &PollContext<'_>,
        audit_table: &str,
        raw: &RawRow,
        targets: &mut HashMap<String, Result<Option<Target>, String>>,
        columns: &mut HashMap<(u32, String), Result<Option<IdColumn>, String>>,
        at_risk: &mut Option<HashMap<u32, reconcile::AtRisk>>,
        now: Instant,
    ) -> Result<ImportVerdict, Unchecked> {
        let client = ctx.client;
        let table_name = raw
            .target_table
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or("the target table is NULL or empty")?;
        if !targets.contains_key(&table_name) {
            let resolved = audit::resolve_table(client, &table_name).await;
            targets.insert(table_name.clone(), Unchecked::lookup(resolved)?);
        }
        let target = match &targets[&table_name] {
            Ok(Some(t)) => t.clone(),
            Ok(None) => {
                return Err(format!("the target table {table_name} does not exist").into());
            }
            Err(e) => {
                return Err(format!("the target table {table_name:?} is unusable: {e}").into());
            }
        };
        let record = raw.validate(audit_table, target.qualified.clone())?;
        let column_key = (target.oid, record.id_column.clone());
        if !columns.contains_key(&column_key) {
            let info = audit::id_column(client, target.oid, &record.id_column).await;
            columns.insert(column_key.clone(), Unchecked::lookup(info)?);
        }
        let column = match &columns[&column_key] {
            Ok(Some(c)) => c.clone(),
            Ok(None) => {
                return Err(format!(
                    "the target table {} has no column {:?} to count the import's rows by",
                    target.qualified, record.id_column
                )
                .into());
            }
            Err(e) => return Err(format!("cannot inspect {}: {e}", target.qualified).into()),
        };
        if !column.indexed {
            self.warn_once(
                &ctx.target.name,
                format!(
                    "{}.{} has no index, so every import check scans the whole table; create one: CREATE INDEX ON {} ({})",
                    target.qualified,
                    record.id_column,
                    target.qualified,
                    crate::config::Ident::new(&record.id_column)
                        .map(|i| i.quoted())
                        .unwrap_or_default()
                ),
            );
        }

        let mut facts = Facts::default();
        let counting = self.reconciler.needs_count(&record, now);
        // A verified import's transaction is not asked about again: one query per import that
        // is still open to doubt, not per import in the window.
        let in_doubt = matches!(record.status, AuditStatus::Pending | AuditStatus::Running)
            || (record.status == AuditStatus::Committed && counting);
        if let Some(xid) = record.xact_id {
            if in_doubt {
                facts.xact_status = audit::xact_status(client, xid)
                    .await
                    .as_deref()
                    .and_then(reconcile::XactStatus::parse);
            }
        }
        if counting {
            match audit::count_rows(
                client,
                &target,
                &record.id_column,
                &column,
                &record.import_id,
            )
            .await
            {
                Ok(n) => facts.committed_rows = Some(n),
                Err(e) => {
                    self.warn_once(
                        &ctx.target.name,
                        format!("cannot count the rows of {}: {e}", target.qualified),
                    );
                    facts.count_error = Some(e);
                }
            }
        }
        if at_risk.is_none() {
            *at_risk = Some(audit::at_risk(client).await.unwrap_or_else(|e| {
                warn!(target = %ctx.target.name, "imports: cannot read pg_locks: {}", describe_pg_error(&e));
                HashMap::new()
            }));
        }
        facts.at_risk = at_risk.as_ref().and_then(|m| m.get(&target.oid).cloned());

        let mut verdict = self.reconciler.judge(&record, facts, now);
        verdict.confirm_sql = Some(audit::confirm_sql(
            &target.qualified,
            &record.id_column,
            &record.import_id,
        ));
        if counting {
            *self.checks.entry(verdict.verdict.as_str()).or_default() += 1;
            if verdict.verdict == Verdict::Ok {
                self.last_verified
                    .insert(target.qualified.clone(), unix_now());
            }
        }
        Ok(verdict)
    }

    fn snapshot(&self, report: &ImportsReport) -> Snapshot {
        let mut snap = Snapshot::default();
        let db = &report.datname;
        snap.push(
            &metrics::IMPORT_AUDIT_TABLES,
            vec![db.clone()],
            report.audit_tables.len() as f64,
        );
        for (result, n) in &self.checks {
            snap.push(
                &metrics::IMPORT_CHECKS,
                vec![db.clone(), (*result).to_owned()],
                *n as f64,
            );
        }
        let mut by_status: BTreeMap<&str, u64> =
            ["pending", "running", "committed", "failed", "cancelled"]
                .into_iter()
                .map(|s| (s, 0))
                .collect();
        let mut by_verdict: BTreeMap<&str, u64> =
            Verdict::ALL.iter().map(|v| (v.as_str(), 0)).collect();
        let mut missing: BTreeMap<&str, i64> = BTreeMap::new();
        for v in &report.imports {
            if let Some(n) = by_status.get_mut(v.status.as_str()) {
                *n += 1;
            }
            *by_verdict.entry(v.verdict.as_str()).or_default() += 1;
            if let Some(table) = v.target_table.as_deref() {
                let sum = missing.entry(table).or_default();
                if v.verdict == Verdict::Shortfall {
                    *sum += v.missing_rows.unwrap_or(0);
                }
            }
        }
        for (status, n) in by_status {
            snap.push(
                &metrics::IMPORTS,
                vec![db.clone(), status.to_owned()],
                n as f64,
            );
        }
        for (verdict, n) in by_verdict {
            snap.push(
                &metrics::IMPORT_VERDICTS,
                vec![db.clone(), verdict.to_owned()],
                n as f64,
            );
        }
        for (table, n) in missing {
            snap.push(
                &metrics::IMPORT_MISSING_ROWS,
                vec![db.clone(), table.to_owned()],
                n as f64,
            );
        }
        for (table, at) in &self.last_verified {
            snap.push(
                &metrics::IMPORT_LAST_VERIFIED,
                vec![db.clone(), table.clone()],
                *at,
            );
        }
        snap
    }
}

/// Why an audit row got no verdict from [`Imports::check`].
enum Unchecked {
    /// The row is invalid, for this reason.
    Invalid(String),
    /// The session was lost during the check: the row is unknown, not invalid.
    Lost(tokio_postgres::Error),
}

impl Unchecked {
    /// A lookup's result for the per-poll cache: a failure that lost the session ends the
    /// check; any other is the row's problem, described.
    fn lookup<T>(
        result: Result<Option<T>, tokio_postgres::Error>,
    ) -> Result<Result<Option<T>, String>, Unchecked> {
        match result {
            Ok(found) => Ok(Ok(found)),
            Err(e) if session::is_session_lost(&e) => Err(Unchecked::Lost(e)),
            Err(e) => Ok(Err(describe_pg_error(&e))),
        }
    }
}

impl From<String> for Unchecked {
    fn from(reason: String) -> Self {
        Unchecked::Invalid(reason)
    }
}

impl From<&str> for Unchecked {
    fn from(reason: &str) -> Self {
        Unchecked::Invalid(reason.to_owned())
    }
}

/// What a poll that cannot read their audit table knows of these imports: their alerts'
/// labels.
fn unknown_imports(verdicts: &[ImportVerdict]) -> Vec<UnknownImport> {
    verdicts
        .iter()
        .map(|v| UnknownImport {
            audit_table: v.audit_table.clone(),
            table: v.target_table.clone().unwrap_or_default(),
            import_id: v.import_id.clone(),
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "imports",
    table: "imports",
    reads: "import audit tables, and the rows of each import in its target table",
    scope: Scope::Database,
    versions: registry::PG13,
    grants: &["SELECT ON import_audit", "SELECT ON <import target tables>"],
    metrics: metrics::IMPORTS_METRICS,
    section: |t| &t.imports,
    build: |t| Box::new(Imports::new(&t.imports)),
    carry: |from, to| {
        for (datname, report) in from.each_database() {
            to.database_mut(datname).imports = report.imports.clone();
        }
    },
};

impl ReportCollector for Imports {
    const NAME: &'static str = SPEC.name;
    type Report = ImportsReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, ImportsReport), CollectError> {
        let report = self.report(ctx).await?;
        Ok((self.snapshot(&report), report))
    }

    fn store(report: ImportsReport, ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.database_mut(ctx.database).imports = Some(report);
    }
}
