//! PgBouncer, read through its admin console: the special database `pgbouncer` that answers
//! `SHOW` commands over the simple query protocol only (PgBouncer 1.18 and later).
//!
//! Each `SHOW` family is its own collector, so one that fails (a column renamed in some future
//! release) loses only its own series. Columns are looked up by name, never by position:
//! releases add columns (1.18 added the cancel-request counts, later releases more), and a
//! column this version lacks is simply not exported. The admin console's own pool (database
//! `pgbouncer`) is left out: it is pgvigil's connection, not an application's pool.
//!
//! Labels: PgBouncer's `database` and `user` are exported as `datname` and `usename`, the names
//! `pgvigil_connections` uses, so a PgBouncer pool lines up with the server connections behind
//! it (see the README's "one picture" section).

pub(crate) mod databases;
pub(crate) mod instance;
pub(crate) mod pools;
#[cfg(test)]
mod proptests;
pub(crate) mod stats;

use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use super::{CollectError, Collector, Observations, Pgbouncer};
use crate::config::PgbouncerConfig;

pub use databases::Database;
pub(crate) use instance::version;
pub use pools::Pool;

/// The admin console's database name; its pool is pgvigil's own and not exported.
pub const ADMIN_DATABASE: &str = "pgbouncer";

/// What a PgBouncer collector sees during one poll.
#[derive(Debug)]
pub struct BouncerContext<'a> {
    /// The admin console connection.
    pub client: &'a Client,
    /// The instance's configuration.
    pub config: &'a PgbouncerConfig,
}

/// Every PgBouncer collector with its defaults, in poll order (the registry's
/// [`crate::collect::registry::PGBOUNCER`]; none of them has settings).
pub fn collectors() -> Vec<Box<dyn Collector<Pgbouncer>>> {
    vec![
        Box::new(instance::Instance),
        Box::new(pools::Pools),
        Box::new(databases::Databases),
        Box::new(stats::Stats),
    ]
}

/// What the PgBouncer collectors learnt in one poll. A part is `None` when its collector
/// failed, so rules can tell "no data" from "nothing wrong".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgbouncerReport {
    /// `SHOW VERSION`, without the `PgBouncer ` prefix.
    pub version: Option<String>,
    /// Client connections open, pgvigil's included (`SHOW LISTS` used_clients).
    pub client_connections: Option<i64>,
    /// `max_client_conn`.
    pub max_client_conn: Option<i64>,
    /// `SHOW POOLS`, the admin console's pool excluded.
    pub pools: Option<Vec<Pool>>,
    /// `SHOW DATABASES`, the admin console excluded.
    pub databases: Option<Vec<Database>>,
}

impl PgbouncerReport {
    /// The `pool_size` of a PgBouncer database, if `SHOW DATABASES` was read and lists it.
    pub fn pool_size(&self, datname: &str) -> Option<i64> {
        self.databases
            .as_ref()?
            .iter()
            .find(|d| d.name == datname)
            .map(|d| d.pool_size)
    }
}

/// The report part of `observations`, created on first use.
fn report(observations: &mut Observations) -> &mut PgbouncerReport {
    observations.pgbouncer.get_or_insert_with(Default::default)
}

/// Run one `SHOW` command and return its rows.
async fn show(client: &Client, command: &str) -> Result<Vec<SimpleQueryRow>, CollectError> {
    let messages = client.simple_query(command).await?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect())
}

/// One row of an admin-console `SHOW`, as the parsers read it: by column name. The parsers are
/// pure functions of such rows, so they are tested (and fuzzed) without a PgBouncer.
pub(crate) trait AdminRow {
    /// The row's column names, in order.
    fn column_names(&self) -> Vec<&str>;
    /// A column's value: `None` when the row has no such column, `Some(None)` for NULL.
    fn value(&self, column: &str) -> Option<Option<&str>>;
}

impl AdminRow for SimpleQueryRow {
    fn column_names(&self) -> Vec<&str> {
        self.columns().iter().map(|c| c.name()).collect()
    }

    fn value(&self, column: &str) -> Option<Option<&str>> {
        self.try_get(column).ok()
    }
}

/// A required text column.
fn text<'r, R: AdminRow>(row: &'r R, command: &str, column: &str) -> Result<&'r str, CollectError> {
    match row.value(column) {
        Some(value) => Ok(value.unwrap_or("")),
        None => Err(missing(command, column, row)),
    }
}

/// A required numeric column.
fn number<R: AdminRow>(row: &R, command: &str, column: &str) -> Result<i64, CollectError> {
    parse_number(command, column, text(row, command, column)?)
}

/// A numeric column that only some PgBouncer releases have.
fn optional_number<R: AdminRow>(
    row: &R,
    command: &str,
    column: &str,
) -> Result<Option<i64>, CollectError> {
    match row.value(column) {
        Some(Some(value)) => parse_number(command, column, value).map(Some),
        Some(None) | None => Ok(None),
    }
}

fn parse_number(command: &str, column: &str, value: &str) -> Result<i64, CollectError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(0);
    }
    value.parse().map_err(|_| {
        CollectError::Unavailable(format!(
            "{command}: column {column} holds {value:?}, not a whole number; is this PgBouncer 1.18 or later?"
        ))
    })
}

fn missing<R: AdminRow>(command: &str, column: &str, row: &R) -> CollectError {
    let columns = row.column_names();
    CollectError::Unavailable(format!(
        "{command} has no column {column} (it has: {}); pgvigil supports PgBouncer 1.18 and later",
        columns.join(", ")
    ))
}

/// Microseconds as seconds.
fn micros(us: i64) -> f64 {
    us as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_parsed_strictly_with_a_clear_error() {
        assert_eq!(parse_number("SHOW POOLS", "cl_active", " 12 ").unwrap(), 12);
        assert_eq!(parse_number("SHOW POOLS", "cl_active", "").unwrap(), 0);
        let err = parse_number("SHOW POOLS", "cl_active", "lots").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SHOW POOLS: column cl_active holds \"lots\""),
            "{err}"
        );
        assert_eq!(micros(1_500_000), 1.5);
    }

    #[test]
    fn collectors_are_the_registry_in_its_order() {
        let names: Vec<&str> = collectors().iter().map(|c| c.name()).collect();
        let registry: Vec<&str> = crate::collect::registry::PGBOUNCER
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, registry);
    }

    #[test]
    fn pool_size_comes_from_the_databases_part() {
        let mut report = PgbouncerReport::default();
        assert_eq!(report.pool_size("app"), None);
        report.databases = Some(vec![Database {
            name: "app".into(),
            pool_size: 20,
            ..Database::default()
        }]);
        assert_eq!(report.pool_size("app"), Some(20));
        assert_eq!(report.pool_size("other"), None);
    }
}
