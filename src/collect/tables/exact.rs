//! Exact `count(*)` of allow-listed tables, on their own schedule inside the poll loop.
//!
//! A count runs in a transaction of its own with `SET LOCAL statement_timeout`, so it can take
//! longer than pgvigil's session timeout without changing the session. A round counts the
//! tables one after another until the round's budget is spent; tables not reached are skipped
//! (and counted as skipped), and the next round starts with them. A round that comes due while
//! whole intervals were missed does not catch up: the missed rounds are skipped, not queued.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::collect::describe_pg_error;
use crate::config::{QualifiedName, TablesConfig};

/// The last successful count of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactCount {
    /// Rows.
    pub rows: i64,
    /// Unix time of the count.
    pub at_unix: f64,
    /// How long it took.
    pub seconds: f64,
}

/// The schedule and results of exact counts for one target.
#[derive(Debug)]
pub struct ExactCounter {
    tables: Vec<QualifiedName>,
    interval: Duration,
    timeout: Duration,
    budget: Duration,
    next_due: Option<Instant>,
    cursor: usize,
    /// By server-quoted `schema.table`.
    pub(super) results: BTreeMap<String, ExactCount>,
    /// Outcomes since start: ok, error, skipped.
    pub(super) outcomes: BTreeMap<&'static str, u64>,
}

impl ExactCounter {
    /// Counts for `[targets.tables] exact_count_tables`.
    pub fn new(config: &TablesConfig) -> Self {
        ExactCounter {
            tables: config.exact_count_tables.clone(),
            interval: config.exact_count_interval,
            timeout: config.exact_count_timeout,
            budget: config.exact_count_budget,
            next_due: None,
            cursor: 0,
            results: BTreeMap::new(),
            outcomes: BTreeMap::new(),
        }
    }

    /// The longest a poll of the collector may spend on exact counts.
    pub fn max_round(&self) -> Duration {
        if self.tables.is_empty() {
            Duration::ZERO
        } else {
            self.budget + self.timeout
        }
    }

    /// Whether `table` (server-quoted) is allow-listed; matched against both forms.
    pub fn allows(&self, schema: &str, name: &str) -> bool {
        self.tables.iter().any(|t| {
            t.name.as_str() == name && t.schema.as_ref().is_none_or(|s| s.as_str() == schema)
        })
    }

    /// Run a round if one is due. Returns the problems met (to log once).
    pub async fn run_if_due(&mut self, client: &Client, now: Instant) -> Vec<String> {
        if self.tables.is_empty() {
            return Vec::new();
        }
        if let Some(due) = self.next_due {
            if now < due {
                return Vec::new();
            }
            let missed = (now.duration_since(due).as_secs_f64() / self.interval.as_secs_f64())
                .floor() as u64;
            if missed > 0 {
                *self.outcomes.entry("skipped").or_default() += missed * self.tables.len() as u64;
            }
        }
        self.next_due = Some(now + self.interval);
        let mut problems = Vec::new();
        let started = Instant::now();
        let n = self.tables.len();
        for i in 0..n {
            let index = (self.cursor + i) % n;
            if started.elapsed() >= self.budget {
                *self.outcomes.entry("skipped").or_default() += (n - i) as u64;
                self.cursor = index;
                return problems;
            }
            let table = self.tables[index].clone();
            match count(client, &table.quoted(), self.timeout).await {
                Ok((name, c)) => {
                    *self.outcomes.entry("ok").or_default() += 1;
                    self.results.insert(name, c);
                }
                Err(e) => {
                    *self.outcomes.entry("error").or_default() += 1;
                    problems.push(format!("exact count of {table} failed: {e}"));
                }
            }
        }
        self.cursor = 0;
        problems
    }

    /// Count one table now (to confirm a drop), outside the schedule.
    pub async fn confirm(&mut self, client: &Client, qualified: &str) -> Result<i64, String> {
        let result = count(client, qualified, self.timeout).await;
        match result {
            Ok((name, c)) => {
                *self.outcomes.entry("ok").or_default() += 1;
                let rows = c.rows;
                self.results.insert(name, c);
                Ok(rows)
            }
            Err(e) => {
                *self.outcomes.entry("error").or_default() += 1;
                Err(e)
            }
        }
    }
}

/// `count(*)` of `quoted` (an already quoted name) under its own statement timeout. Returns the
/// server-quoted `schema.table` with the count.
///
/// Everything after `BEGIN` runs in [`in_transaction`], which ends the transaction whatever
/// failed (the `SET LOCAL`, the count, or reading the row): a session left `idle in transaction
/// (aborted)` would make every later query of every collector fail with 25P02.
async fn count(
    client: &Client,
    quoted: &str,
    timeout: Duration,
) -> Result<(String, ExactCount), String> {
    let started = Instant::now();
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .map_err(|e| describe_pg_error(&e))?;
    let (name, rows) =
        in_transaction(client, count_in_transaction(client, quoted, timeout)).await?;
    Ok((
        name,
        ExactCount {
            rows,
            at_unix: super::unix_now(),
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}

/// The statements of [`count`] inside its transaction.
async fn count_in_transaction(
    client: &Client,
    quoted: &str,
    timeout: Duration,
) -> Result<(String, i64), String> {
    client
        .batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            timeout.as_millis()
        ))
        .await
        .map_err(|e| describe_pg_error(&e))?;
    let sql = format!(
        "SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = '{0}'::regclass), \
                count(*) FROM {0}",
        quoted.replace('\'', "''")
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(|e| describe_pg_error(&e))?;
    let name: String = row.try_get(0).map_err(|e| e.to_string())?;
    let rows: i64 = row.try_get(1).map_err(|e| e.to_string())?;
    Ok((name, rows))
}

/// Run `body` inside an open transaction and end it whatever happened: `COMMIT` after success,
/// `ROLLBACK` after any error. The body's error wins over the `ROLLBACK`'s.
pub(crate) async fn in_transaction<T>(
    client: &Client,
    body: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let result = body.await;
    let end = client
        .batch_execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await
        .map_err(|e| describe_pg_error(&e));
    let value = result?;
    end?;
    Ok(value)
}
