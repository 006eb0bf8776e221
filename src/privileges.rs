//! What pgvigil's role may read, collector by collector and database by database, and the
//! exact `GRANT` (or role membership) each missing piece needs: `pgvigil check-privileges`,
//! and the daemon's once-per-collector report at connect.
//!
//! The checks come from the registry ([`crate::collect::registry::POSTGRES`]): each enabled
//! collector's `grants` are interpreted here (`grant_checks`), so a collector that declares
//! a new kind of grant fails the unit test below until it is understood. What is asked:
//!
//! - `pg_monitor`: `pg_has_role(current_user, 'pg_monitor', 'USAGE')` (or superuser);
//! - `SELECT ON <exact_count_tables>`: `has_table_privilege(..., 'SELECT')` per configured
//!   table of the database;
//! - `SELECT ON import_audit`: the same for each audit table found (configured, else a table
//!   named `import_audit`);
//! - `SELECT ON <import target tables>`: the same for each distinct `target_table` of the
//!   readable audit tables of the recommended shape;
//! - `SELECT ON <migration tables>`: the same for each migration tool's table found or
//!   configured (`[targets.migrations]`);
//! - `SELECT ON <sequences>`: `has_sequence_privilege(..., 'SELECT,USAGE')` over the
//!   database's sequences, with one `GRANT ... ON ALL SEQUENCES IN SCHEMA` per schema lacking;
//! - and for every watched database, `has_database_privilege(..., 'CONNECT')`.
//!
//! Cost: a handful of catalog function calls per database; no locks beyond catalog reads.
//!
//! PgBouncer instances have no GRANT: [`pgbouncer`] checks their admin console's
//! `stats_users` / `admin_users` the same way, with the `pgbouncer.ini` line as the fix.

pub mod pgbouncer;

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::collect::registry::POSTGRES;
use crate::collect::{Scope, describe_pg_error};
use crate::config::TargetConfig;

/// One thing a collector reads, and whether the role may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The collector (or `databases` for entering a database).
    pub collector: &'static str,
    /// The database, for database-scope pieces.
    pub database: Option<String>,
    /// What is read ("role pg_monitor", "SELECT on public.import_audit").
    pub item: String,
    /// `None`: granted; `Some(fix)`: the statement that grants it, or what else to do.
    pub missing: Option<String>,
}

impl Check {
    /// One line for people: `collector [db]: item: ok` or `... MISSING: fix`.
    pub fn line(&self) -> String {
        let place = match &self.database {
            Some(db) => format!("{} in {db}", self.collector),
            None => self.collector.to_owned(),
        };
        match &self.missing {
            None => format!("{place}: {}: ok", self.item),
            Some(fix) => format!("{place}: {}: MISSING; {fix}", self.item),
        }
    }
}

/// Why the checks could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// A catalog query failed.
    #[error("checking privileges failed: {0}")]
    Query(String),
    /// The role could not connect at all.
    #[error("cannot connect to {connection}: {error}")]
    Connect {
        /// `user@host:port/db`.
        connection: String,
        /// Why.
        error: String,
    },
}

impl From<tokio_postgres::Error> for PrivilegeError {
    fn from(e: tokio_postgres::Error) -> Self {
        PrivilegeError::Query(describe_pg_error(&e))
    }
}

/// The pieces one grant of a collector's `grants` stands for, checked on `client` (connected
/// to `database`). An unknown grant text is reported as such (the unit test keeps the
/// registry's texts known).
async fn grant_checks(
    client: &Client,
    target: &TargetConfig,
    collector: &'static str,
    grant: &str,
    database: Option<&str>,
    role: &str,
) -> Result<Vec<Check>, PrivilegeError> {
    let check = |item: String, missing: Option<String>| Check {
        collector,
        database: database.map(str::to_owned),
        item,
        missing,
    };
    let tables: Vec<String> = match grant {
        "pg_monitor" => {
            let row = client
                .query_one(
                    "SELECT pg_has_role(current_user, 'pg_monitor', 'USAGE') \
                         OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
                    &[],
                )
                .await?;
            let granted: bool = row.get(0);
            return Ok(vec![check(
                "role pg_monitor (other users' sessions, queries and statement statistics)"
                    .to_owned(),
                (!granted).then(|| format!("GRANT pg_monitor TO {role};")),
            )]);
        }
        "SELECT ON <exact_count_tables>" => target
            .tables
            .exact_count_tables
            .iter()
            .map(|t| t.quoted())
            .collect(),
        "SELECT ON import_audit" => audit_tables(client, target).await?,
        "SELECT ON <import target tables>" => import_targets(client, target).await?,
        "SELECT ON <migration tables>" => {
            crate::collect::migrations::table_names(client, &target.migrations).await?
        }
        "SELECT ON <sequences>" => {
            let row = client
                .query_one(
                    "SELECT count(*)::int8, \
                            coalesce(array_agg(DISTINCT format('%I', n.nspname) ORDER BY format('%I', n.nspname)) \
                                     FILTER (WHERE NOT has_sequence_privilege(c.oid, 'SELECT,USAGE')), '{}') \
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                      WHERE c.relkind = 'S' AND NOT pg_is_other_temp_schema(n.oid) \
                        AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
                    &[],
                )
                .await?;
            let total: i64 = row.get(0);
            let schemas: Vec<String> = row.get(1);
            let fix = schemas
                .iter()
                .map(|s| format!("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {role};"))
                .collect::<Vec<_>>()
                .join(" ");
            return Ok(vec![check(
                format!("SELECT on the {total} sequences (their last value)"),
                (!schemas.is_empty()).then_some(fix),
            )]);
        }
        other => {
            return Ok(vec![check(
                other.to_owned(),
                Some(
                    "pgvigil cannot check this grant itself; see deploy/sql/monitoring_role.sql"
                        .to_owned(),
                ),
            )]);
        }
    };
    let mut checks = Vec::new();
    for table in tables {
        let row = client
            .query_one(
                "SELECT c.oid IS NOT NULL, c.oid::regclass::text, \
                        c.oid IS NOT NULL AND has_table_privilege(c.oid, 'SELECT') \
                   FROM (SELECT to_regclass($1) AS oid) c",
                &[&table],
            )
            .await?;
        let exists: bool = row.get(0);
        let name: Option<String> = row.get(1);
        let granted: bool = row.get(2);
        let name = name.unwrap_or(table);
        checks.push(if !exists {
            check(
                format!("SELECT on {name}"),
                Some(format!("the table does not exist (or its schema is not readable: GRANT USAGE ON SCHEMA <schema> TO {role};); check the name in the config")),
            )
        } else {
            check(
                format!("SELECT on {name}"),
                (!granted).then(|| format!("GRANT SELECT ON {name} TO {role};")),
            )
        });
    }
    Ok(checks)
}

/// The audit tables of this database: those configured, else `import_audit` if it exists.
async fn audit_tables(
    client: &Client,
    target: &TargetConfig,
) -> Result<Vec<String>, PrivilegeError> {
    if !target.imports.audit_tables.is_empty() {
        return Ok(target
            .imports
            .audit_tables
            .iter()
            .map(|a| a.table.quoted())
            .collect());
    }
    let row = client
        .query_one("SELECT to_regclass('import_audit')::text", &[])
        .await?;
    Ok(row.get::<_, Option<String>>(0).into_iter().collect())
}

/// The target tables recorded in the readable audit tables of this database.
async fn import_targets(
    client: &Client,
    target: &TargetConfig,
) -> Result<Vec<String>, PrivilegeError> {
    let mut tables = Vec::new();
    for audit in audit_tables(client, target).await? {
        let column = target
            .imports
            .audit_tables
            .iter()
            .find(|a| a.table.quoted() == audit)
            .map_or_else(
                || "\"target_table\"".to_owned(),
                |a| a.columns.target_table.quoted(),
            );
        let readable: bool = client
            .query_one(
                "SELECT has_table_privilege(to_regclass($1), 'SELECT')",
                &[&audit],
            )
            .await?
            .get(0);
        if !readable {
            continue;
        }
        let sql = format!("SELECT DISTINCT {column}::text FROM {audit} LIMIT 100");
        for row in client.query(&sql, &[]).await? {
            if let Some(t) = row.get::<_, Option<String>>(0) {
                tables.push(t);
            }
        }
    }
    Ok(tables)
}

/// The role's name as it is written in a `GRANT`.
async fn role(client: &Client) -> Result<String, PrivilegeError> {
    Ok(client
        .query_one("SELECT quote_ident(current_user)", &[])
        .await?
        .get(0))
}

/// The checks of `target`'s enabled collectors of `scope` on `client` (connected to
/// `database`; for the database scope, the database's pieces).
pub async fn check_scope(
    client: &Client,
    target: &TargetConfig,
    scope: Scope,
    database: &str,
) -> Result<Vec<Check>, PrivilegeError> {
    let role = role(client).await?;
    let mut checks = Vec::new();
    let db = (scope == Scope::Database).then_some(database);
    for spec in POSTGRES
        .iter()
        .filter(|s| s.scope == scope && s.enabled(target))
    {
        for grant in spec.grants {
            checks.extend(grant_checks(client, target, spec.name, grant, db, &role).await?);
        }
    }
    Ok(checks)
}

/// The watched databases the role may enter, and a check for each it may not.
pub async fn databases(
    client: &Client,
    target: &TargetConfig,
) -> Result<(Vec<String>, Vec<Check>), PrivilegeError> {
    let role = role(client).await?;
    let rows = client
        .query(
            "SELECT datname, has_database_privilege(datname, 'CONNECT') FROM pg_database \
              WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await?;
    let mut enter = Vec::new();
    let mut checks = Vec::new();
    for row in rows {
        let datname: String = row.get(0);
        if !target.databases.selects(&datname) {
            continue;
        }
        let granted: bool = row.get(1);
        checks.push(Check {
            collector: "databases",
            database: Some(datname.clone()),
            item: "CONNECT".to_owned(),
            missing: (!granted).then(|| {
                format!(
                    "GRANT CONNECT ON DATABASE {} TO {role}; (or exclude it in [targets.databases])",
                    quote_ident(&datname)
                )
            }),
        });
        if granted {
            enter.push(datname);
        }
    }
    Ok((enter, checks))
}

fn quote_ident(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
    {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Every check of `target`: its cluster-scope collectors on its DSN's database, then each
/// watched database it may enter (a session of its own each, one at a time) for the
/// database-scope ones.
pub async fn check_target(target: &TargetConfig) -> Result<Vec<Check>, PrivilegeError> {
    let tls = crate::tls::Connector::new(&target.connection);
    let main = connect(target, &target.connection, &tls).await?;
    let mut checks = check_scope(&main, target, Scope::Cluster, target.connection.dbname()).await?;
    let (enter, entering) = databases(&main, target).await?;
    checks.extend(entering);
    drop(main);
    for datname in enter {
        let config = target.for_database(&datname);
        let client = connect(&config, &config.connection, &tls).await?;
        checks.extend(check_scope(&client, &config, Scope::Database, &datname).await?);
    }
    Ok(checks)
}

/// Open a session for a privilege check, bounded by the target's `connect_timeout`.
///
/// This does **not** go through the daemon's connect gate (`crate::connect_gate`, `[server]
/// max_concurrent_connects`): it serves the CLI's `advise` and `check-privileges`, which run
/// outside a daemon and open one session at a time (the main one, then one per watched
/// database in turn), so there is no line of attempts to keep short. The daemon checks
/// privileges on the sessions its poll loops opened through the gate ([`report_missing`]);
/// a daemon-side caller of this function would bypass the gate and must not be added.
pub(crate) async fn connect(
    target: &TargetConfig,
    connection: &crate::config::ConnectionSpec,
    tls: &crate::tls::Connector,
) -> Result<Client, PrivilegeError> {
    let fail = |error: String| PrivilegeError::Connect {
        connection: connection.describe(),
        error,
    };
    let config = connection
        .connect_config(target.connect_timeout)
        .map_err(fail)?;
    let tls = tls.get().map_err(fail)?;
    let attempt = tokio::time::timeout(target.connect_timeout, config.connect(tls)).await;
    let (client, conn) = match attempt {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(fail(crate::tls::explain(connection, describe_pg_error(&e)))),
        Err(_) => return Err(fail("no answer within connect_timeout".to_owned())),
    };
    tokio::spawn(conn);
    Ok(client)
}

/// Check the collectors of `scope` on a session pgvigil just opened and report what is
/// missing: in the target's status (`privileges` in `/api/v1/targets`, replacing what an
/// earlier check of the same collectors and database found) and in the log, each line once
/// (`logged` remembers). The collectors keep running either way: a missing grant costs only
/// the pieces it guards. A check that fails is logged at debug level and changes nothing.
pub(crate) async fn report_missing(
    hub: &crate::hub::Hub,
    client: &Client,
    target: &TargetConfig,
    scope: Scope,
    logged: &std::sync::Mutex<std::collections::HashSet<String>>,
) {
    let database = target.connection.dbname();
    let checks = match tokio::time::timeout(
        target.statement_timeout,
        check_scope(client, target, scope, database),
    )
    .await
    {
        Ok(Ok(checks)) => checks,
        Ok(Err(e)) => {
            tracing::debug!(target = %target.name, database, "privilege check failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let db = (scope == Scope::Database).then_some(database);
    let collectors: Vec<&str> = POSTGRES
        .iter()
        .filter(|s| s.scope == scope)
        .map(|s| s.name)
        .collect();
    let ours = |line: &str, collector: &str| match db {
        Some(db) => line.starts_with(&format!("{collector} in {db}:")),
        None => line.starts_with(&format!("{collector}:")),
    };
    hub.status.update(&target.name, |s| {
        for collector in &collectors {
            if let Some(lines) = s.privileges.get_mut(*collector) {
                lines.retain(|l| !ours(l, collector));
            }
        }
        for (collector, lines) in missing_by_collector(&checks) {
            s.privileges.entry(collector).or_default().extend(lines);
        }
        s.privileges.retain(|_, lines| !lines.is_empty());
    });
    let mut logged = logged.lock().unwrap_or_else(|e| e.into_inner());
    for check in checks.iter().filter(|c| c.missing.is_some()) {
        let line = check.line();
        if logged.insert(line.clone()) {
            tracing::warn!(
                target = %target.name,
                collector = check.collector,
                "missing privilege, the rest keeps running: {line}"
            );
        }
    }
}

/// The missing pieces by collector, for the log and `/api/v1/targets`.
pub fn missing_by_collector(checks: &[Check]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in checks.iter().filter(|c| c.missing.is_some()) {
        out.entry(c.collector.to_owned())
            .or_default()
            .push(c.line());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grants [`grant_checks`] understands; a collector declaring another is a bug here.
    const KNOWN: &[&str] = &[
        "pg_monitor",
        "SELECT ON <exact_count_tables>",
        "SELECT ON import_audit",
        "SELECT ON <import target tables>",
        "SELECT ON <migration tables>",
        "SELECT ON <sequences>",
    ];

    #[test]
    fn every_grant_the_registry_declares_is_checked() {
        for spec in POSTGRES {
            for grant in spec.grants {
                assert!(
                    KNOWN.contains(grant),
                    "{}: grant {grant:?} is not checked by check-privileges",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn lines_say_what_is_missing_and_the_fix() {
        let c = Check {
            collector: "imports",
            database: Some("app".to_owned()),
            item: "SELECT on import_audit".to_owned(),
            missing: Some("GRANT SELECT ON import_audit TO pgvigil;".to_owned()),
        };
        assert_eq!(
            c.line(),
            "imports in app: SELECT on import_audit: MISSING; GRANT SELECT ON import_audit TO pgvigil;"
        );
        let by = missing_by_collector(&[c.clone(), Check { missing: None, ..c }]);
        assert_eq!(by["imports"].len(), 1);
        assert_eq!(quote_ident("app"), "app");
        assert_eq!(quote_ident("My\"Db"), "\"My\"\"Db\"");
    }
}
