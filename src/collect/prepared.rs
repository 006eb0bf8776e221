//! Prepared statements kept per PostgreSQL session, so a collector's query is parsed once per
//! session instead of once per poll.
//!
//! Why: `Client::query` with SQL text makes tokio-postgres prepare a named statement (Parse +
//! Describe, one round trip), run it (Bind + Execute), and close it again, at every poll. At
//! default collectors that is ~16 such pairs per target and interval, and the server parses
//! and plans each query again every time. [`Prepared`] keeps each statement it prepared,
//! keyed by its SQL text, for the life of its session: a poll sends Bind + Execute only.
//!
//! Cost: one entry per distinct SQL text, at most [`CAPACITY`]; the server holds the same
//! statements (`pg_prepared_statements` of pgvigil's sessions lists them, named `s0`, `s1`…
//! as tokio-postgres names every statement). A full cache is emptied and refilled, which is
//! only reached by SQL built per table (none of the hot collectors does that). The cache is
//! dropped with its session, and a new session starts empty.
//!
//! Invalidation: PostgreSQL re-plans a prepared statement by itself after DDL on what it
//! reads, but refuses to run one whose result columns changed (SQLSTATE 0A000, "cached plan
//! must not change result type": `ALTER EXTENSION pg_stat_statements UPDATE`, or the
//! extension dropped and created again). Any error of a cached statement evicts it, so the
//! next run prepares it afresh; for that error and for a statement the server no longer
//! knows (26000), the query is prepared again and retried once at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Row, RowStream, Statement};

/// The most statements one session keeps.
pub const CAPACITY: usize = 64;

/// Query parameters, as tokio-postgres takes them.
pub type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// The prepared statements of one session, by SQL text.
#[derive(Debug, Default)]
pub struct Prepared {
    statements: Mutex<HashMap<Box<str>, Statement>>,
}

impl Prepared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Statement>> {
        // A panic while holding the lock cannot leave the map half-updated: recover it.
        self.statements
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many statements are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The statement for `sql` on `client`, prepared now if it is not kept yet.
    pub async fn statement(&self, client: &Client, sql: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.lock().get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        self.keep(sql, statement.clone());
        Ok(statement)
    }

    fn keep(&self, sql: &str, statement: Statement) {
        let mut statements = self.lock();
        if statements.len() >= CAPACITY && !statements.contains_key(sql) {
            statements.clear();
        }
        statements.insert(sql.into(), statement);
    }

    /// Forget the statement for `sql` (the server closes it once no query uses it).
    pub fn evict(&self, sql: &str) {
        self.lock().remove(sql);
    }

    /// Run `run` on the statement for `sql`; on an error, evict it and, if it was stale,
    /// run `run` once more on the statement prepared afresh.
    async fn run<T, F, Fut>(&self, client: &Client, sql: &str, run: F) -> Result<T, Error>
    where
        F: Fn(Statement) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let statement = self.statement(client, sql).await?;
        match run(statement).await {
            Err(e) => {
                self.evict(sql);
                if !is_stale(&e) {
                    return Err(e);
                }
                run(self.statement(client, sql).await?).await
            }
            ok => ok,
        }
    }

    /// Run `sql` with `params` and collect its rows.
    pub async fn query(
        &self,
        client: &Client,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Error> {
        self.run(
            client,
            sql,
            |s| async move { client.query(&s, params).await },
        )
        .await
    }

    /// Run `sql`, which returns exactly one row.
    pub async fn query_one(
        &self,
        client: &Client,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Row, Error> {
        self.run(client, sql, |s| async move {
            client.query_one(&s, params).await
        })
        .await
    }

    /// Run `sql` and stream its rows. An error while streaming does not evict the statement
    /// (the server has run it by then); one before the first row does.
    pub async fn query_raw(
        &self,
        client: &Client,
        sql: &str,
        params: Params<'_>,
    ) -> Result<RowStream, Error> {
        self.run(client, sql, |s| async move {
            client.query_raw(&s, params.iter().copied()).await
        })
        .await
    }
}

/// Whether `e` says the statement itself is out of date, so preparing it again helps.
pub fn is_stale(e: &Error) -> bool {
    stale_code(e.code())
}

fn stale_code(code: Option<&SqlState>) -> bool {
    // 0A000 is also "feature not supported" in general; preparing again costs one round
    // trip and, if the feature is really missing, fails the same way.
    matches!(
        code,
        Some(c) if *c == SqlState::FEATURE_NOT_SUPPORTED || *c == SqlState::INVALID_SQL_STATEMENT_NAME
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_result_type_and_an_unknown_statement_are_stale() {
        assert!(stale_code(Some(&SqlState::FEATURE_NOT_SUPPORTED)));
        assert!(stale_code(Some(&SqlState::INVALID_SQL_STATEMENT_NAME)));
    }

    #[test]
    fn other_errors_are_not_stale() {
        assert!(!stale_code(None));
        assert!(!stale_code(Some(&SqlState::UNDEFINED_TABLE)));
        assert!(!stale_code(Some(&SqlState::QUERY_CANCELED)));
        assert!(!stale_code(Some(&SqlState::IN_FAILED_SQL_TRANSACTION)));
    }
}
