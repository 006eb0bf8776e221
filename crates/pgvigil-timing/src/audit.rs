//! [`ImportAudit`]: the application's trustworthy record of one bulk import, written to the
//! audit table that pgvigil reconciles (DESIGN.md, "Recommended import audit table").
//!
//! The audit row must survive a rolled-back import, so it is written on its **own autocommit
//! connection**, never inside the import's transaction. The borrow checker helps: a
//! `tokio_postgres::Transaction` borrows its client mutably, so the same client cannot be handed
//! to the audit while the import transaction is open.
//!
//! Lifecycle: [`start`](ImportAuditBuilder::start) inserts the row as `running` (expected rows,
//! target table, source) and hands out the [`import_id`](ImportAudit::import_id) the app stamps on
//! every imported row → [`attach_transaction`](ImportAudit::attach_transaction) records the
//! import transaction's `xact_id` (so pgvigil can ask `pg_xact_status`) →
//! [`heartbeat`](ImportAudit::heartbeat) while it runs → [`finish`](ImportAudit::finish)
//! (`committed`, with the rows the app believes it wrote), [`fail`](ImportAudit::fail) or
//! [`cancel`](ImportAudit::cancel).
//!
//! Every update is guarded by `status = 'running'` and returns `pg_xact_status(xact_id)`: a
//! `finish` whose transaction is still `in progress` (COMMIT has not returned) or was `aborted`
//! is the forgotten COMMIT of the incident, and is logged at once as a warning (target
//! `pgvigil_timing::audit`); the row is still marked committed, as the app says, and pgvigil
//! reports the shortfall. After `finish`, `fail` and `cancel` the writer sends
//! `NOTIFY pgvigil_import, '<import_id>'` ([`NOTIFY_CHANNEL`]) on the audit connection, so a
//! pgvigil that LISTENs checks the import at once instead of at its next poll; a failed NOTIFY
//! is logged, never returned (the row is already written).
//!
//! The Python helper `pgvigil-audit` (clients/python) writes the same rows with the same
//! statements; a test there compares rows from both writers column by column.

use std::fmt;

use tokio_postgres::Client;
use uuid::Uuid;

use crate::client::{GenericTimedClient, TimedClient, TimedTransaction};

/// The audit table DDL from DESIGN.md, for the default table name `import_audit`.
pub const IMPORT_AUDIT_DDL: &str = "\
CREATE TABLE IF NOT EXISTS import_audit (
  import_id     uuid PRIMARY KEY,
  target_table  regclass NOT NULL,
  id_column     name NOT NULL DEFAULT 'import_id',
  source_name   text NOT NULL,
  expected_rows bigint NOT NULL CHECK (expected_rows >= 0),
  rejected_rows bigint NOT NULL DEFAULT 0,
  skipped_rows  bigint NOT NULL DEFAULT 0,
  reported_rows bigint,
  xact_id       xid8,
  status        text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending','running','committed','failed','cancelled')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz, heartbeat_at timestamptz, finished_at timestamptz,
  error_message text
)";

/// Longest `error_message` written, in bytes (longer messages are cut at a character boundary;
/// NUL characters, which PostgreSQL text cannot hold, become U+FFFD).
pub const MAX_ERROR_MESSAGE_LEN: usize = 4000;

/// The channel the writer NOTIFYs after an import ends; the payload is the import id.
pub const NOTIFY_CHANNEL: &str = "pgvigil_import";

/// Errors of the audit helper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database rejected an audit statement (the error is tokio-postgres', unchanged).
    #[error("import audit: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The audit row is no longer `running` (already finished, failed or cancelled, possibly
    /// by someone else), so the update was not applied.
    #[error("import audit: import {import_id} is no longer running")]
    NotRunning {
        /// The import.
        import_id: Uuid,
    },
    /// A table or column name that cannot be used.
    #[error("import audit: invalid name {0:?}")]
    InvalidName(String),
    /// A row count above `i64::MAX`.
    #[error("import audit: row count {0} does not fit in bigint")]
    CountOutOfRange(u64),
}

/// Anything that can lend a `&tokio_postgres::Client`: the audit connection, or the import
/// transaction for [`ImportAudit::attach_transaction`].
pub trait AsClient {
    /// The client to run statements on.
    fn as_client(&self) -> &Client;
}

impl AsClient for Client {
    fn as_client(&self) -> &Client {
        self
    }
}
impl AsClient for tokio_postgres::Transaction<'_> {
    fn as_client(&self) -> &Client {
        self.client()
    }
}
impl AsClient for TimedClient {
    fn as_client(&self) -> &Client {
        self.get_ref()
    }
}
impl AsClient for TimedTransaction<'_> {
    fn as_client(&self) -> &Client {
        self.__ctx().client
    }
}
#[cfg(feature = "deadpool")]
impl AsClient for deadpool_postgres::Object {
    fn as_client(&self) -> &Client {
        self
    }
}
#[cfg(feature = "deadpool")]
impl AsClient for deadpool_postgres::Transaction<'_> {
    fn as_client(&self) -> &Client {
        self.client()
    }
}
#[cfg(feature = "deadpool")]
impl AsClient for crate::pool::TimedObject {
    fn as_client(&self) -> &Client {
        self.__ctx().client
    }
}
impl<T: AsClient + ?Sized> AsClient for &T {
    fn as_client(&self) -> &Client {
        (**self).as_client()
    }
}
impl<T: AsClient + ?Sized> AsClient for std::sync::Arc<T> {
    fn as_client(&self) -> &Client {
        (**self).as_client()
    }
}

/// Where audit rows go: a (possibly schema-qualified) table with DESIGN.md's columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditTable {
    quoted: String,
}

impl Default for AuditTable {
    fn default() -> Self {
        Self {
            quoted: quote_ident("import_audit"),
        }
    }
}

impl AuditTable {
    /// `name` is `table` or `schema.table`, as written (not case-folded: `Audit` stays `Audit`).
    pub fn new(name: &str) -> Result<Self, AuditError> {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.is_empty() || p.len() > 63) {
            return Err(AuditError::InvalidName(name.to_owned()));
        }
        Ok(Self {
            quoted: parts
                .iter()
                .map(|p| quote_ident(p))
                .collect::<Vec<_>>()
                .join("."),
        })
    }

    /// The quoted, qualified table name as used in SQL.
    pub fn quoted_name(&self) -> &str {
        &self.quoted
    }

    /// `CREATE TABLE IF NOT EXISTS` for this table (DESIGN.md's columns and checks).
    pub fn create_table_sql(&self) -> String {
        IMPORT_AUDIT_DDL.replacen("import_audit", &self.quoted, 1)
    }

    /// Create the table if it does not exist.
    pub async fn ensure(&self, conn: &impl AsClient) -> Result<(), AuditError> {
        conn.as_client()
            .batch_execute(&self.create_table_sql())
            .await?;
        Ok(())
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `message` as stored in `error_message`: NULs replaced, cut to [`MAX_ERROR_MESSAGE_LEN`] bytes
/// at a character boundary.
fn error_message(message: &str) -> String {
    let message = message.replace('\0', "\u{FFFD}");
    let mut end = message.len().min(MAX_ERROR_MESSAGE_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

fn to_i64(n: u64) -> Result<i64, AuditError> {
    i64::try_from(n).map_err(|_| AuditError::CountOutOfRange(n))
}

/// Describes an import before it starts. Obtained from [`ImportAudit::builder`].
#[derive(Debug, Clone)]
pub struct ImportAuditBuilder {
    table: AuditTable,
    target_table: String,
    source_name: String,
    expected_rows: u64,
    id_column: String,
    import_id: Option<Uuid>,
}

impl ImportAuditBuilder {
    /// The audit table (default `import_audit`).
    pub fn audit_table(mut self, table: AuditTable) -> Self {
        self.table = table;
        self
    }

    /// The column of the target table that carries the import id (default `import_id`).
    pub fn id_column(mut self, column: impl Into<String>) -> Self {
        self.id_column = column.into();
        self
    }

    /// Use this import id instead of a fresh random (v4) one.
    pub fn import_id(mut self, id: Uuid) -> Self {
        self.import_id = Some(id);
        self
    }

    /// Insert the audit row as `running` on `conn`, an autocommit connection that is **not**
    /// the one running the import. Fails if the target table does not exist (`regclass`).
    pub async fn start<C: AsClient>(self, conn: C) -> Result<ImportAudit<C>, AuditError> {
        if self.id_column.is_empty() || self.id_column.len() > 63 {
            return Err(AuditError::InvalidName(self.id_column));
        }
        let import_id = self.import_id.unwrap_or_else(Uuid::new_v4);
        let expected = to_i64(self.expected_rows)?;
        let sql = format!(
            "INSERT INTO {} (import_id, target_table, id_column, source_name, expected_rows, \
             status, started_at, heartbeat_at) \
             VALUES ($1, $2::text::regclass, $3::text::name, $4, $5, 'running', now(), now())",
            self.table.quoted
        );
        conn.as_client()
            .execute(
                &sql,
                &[
                    &import_id,
                    &self.target_table,
                    &self.id_column,
                    &self.source_name,
                    &expected,
                ],
            )
            .await?;
        Ok(ImportAudit {
            conn,
            table: self.table,
            import_id,
            rejected_rows: 0,
            skipped_rows: 0,
            xact_id: None,
            done: false,
        })
    }
}

/// One import's audit row, kept up to date on its own connection `C`. See the
/// [module docs](self) for the lifecycle.
///
/// ```no_run
/// # async fn demo(audit_conn: tokio_postgres::Client, mut db: pgvigil_timing::TimedClient)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use pgvigil_timing::{GenericTimedClient, ImportAudit};
///
/// let rows = vec![("ada@example.com",), ("bob@example.com",)];
/// let mut audit = ImportAudit::builder("contacts", "contacts.csv", rows.len() as u64)
///     .start(audit_conn)
///     .await?;
/// let import_id = audit.import_id();
/// let tx = db.transaction().await?;
/// audit.attach_transaction(&tx).await?;
/// let mut written = 0;
/// for (email,) in &rows {
///     written += tx
///         .execute("INSERT INTO contacts (email, import_id) VALUES ($1, $2)", &[email, &import_id])
///         .await?;
/// }
/// match tx.commit().await {
///     Ok(()) => audit.finish(written).await?,
///     Err(e) => audit.fail(&e).await?,
/// }
/// # Ok(()) }
/// ```
pub struct ImportAudit<C: AsClient> {
    conn: C,
    table: AuditTable,
    import_id: Uuid,
    rejected_rows: u64,
    skipped_rows: u64,
    xact_id: Option<u64>,
    done: bool,
}

impl<C: AsClient> fmt::Debug for ImportAudit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportAudit")
            .field("import_id", &self.import_id)
            .field("table", &self.table.quoted)
            .field("xact_id", &self.xact_id)
            .field("rejected_rows", &self.rejected_rows)
            .field("skipped_rows", &self.skipped_rows)
            .finish()
    }
}

impl ImportAudit<Client> {
    /// Describe an import of `expected_rows` rows from `source_name` into `target_table`
    /// (a table name as PostgreSQL would resolve it, e.g. `contacts` or `crm."Contacts"`).
    pub fn builder(
        target_table: impl Into<String>,
        source_name: impl Into<String>,
        expected_rows: u64,
    ) -> ImportAuditBuilder {
        ImportAuditBuilder {
            table: AuditTable::default(),
            target_table: target_table.into(),
            source_name: source_name.into(),
            expected_rows,
            id_column: "import_id".to_owned(),
            import_id: None,
        }
    }

    /// DESIGN.md's DDL for the default `import_audit` table ([`IMPORT_AUDIT_DDL`]).
    pub fn create_table_sql() -> &'static str {
        IMPORT_AUDIT_DDL
    }

    /// Create the default `import_audit` table if it does not exist.
    pub async fn ensure_table(conn: &impl AsClient) -> Result<(), AuditError> {
        AuditTable::default().ensure(conn).await
    }
}

impl<C: AsClient> ImportAudit<C> {
    /// The id to stamp on every imported row (the target table's id column).
    pub fn import_id(&self) -> Uuid {
        self.import_id
    }

    /// The import transaction's id, once attached.
    pub fn xact_id(&self) -> Option<u64> {
        self.xact_id
    }

    /// The audit connection.
    pub fn get_ref(&self) -> &C {
        &self.conn
    }

    /// Count rows the import rejected (bad input); written at the next heartbeat/finish and
    /// subtracted from the expectation by pgvigil.
    pub fn record_rejected(&mut self, rows: u64) {
        self.rejected_rows += rows;
    }

    /// Count rows the import skipped on purpose (duplicates, filters); like
    /// [`record_rejected`](Self::record_rejected).
    pub fn record_skipped(&mut self, rows: u64) {
        self.skipped_rows += rows;
    }

    /// Record which transaction performs the import: runs `SELECT pg_current_xact_id()` **inside**
    /// `import_tx` (assigning it a transaction id) and stores it as `xact_id` on the audit row, so
    /// pgvigil can tell with `pg_xact_status` whether it committed, aborted or is still open.
    /// Returns the id.
    pub async fn attach_transaction(
        &mut self,
        import_tx: &impl AsClient,
    ) -> Result<u64, AuditError> {
        let row = import_tx
            .as_client()
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .await?;
        let text: &str = row.get(0);
        let xid: u64 = text
            .parse()
            .map_err(|_| AuditError::InvalidName(text.to_owned()))?;
        self.attach_xact_id(xid).await?;
        Ok(xid)
    }

    /// Record the import transaction's id when the app obtained it itself
    /// (`SELECT pg_current_xact_id()` inside the import transaction).
    pub async fn attach_xact_id(&mut self, xact_id: u64) -> Result<(), AuditError> {
        self.update(
            "SET xact_id = $2::text::xid8, heartbeat_at = now()",
            &[&xact_id.to_string()],
        )
        .await?;
        self.xact_id = Some(xact_id);
        Ok(())
    }

    /// Tell pgvigil the import is alive (`heartbeat_at = now()`, plus rejected/skipped counts so
    /// far). Without heartbeats a long import is reported as stalled.
    pub async fn heartbeat(&self) -> Result<(), AuditError> {
        let (rejected, skipped) = (to_i64(self.rejected_rows)?, to_i64(self.skipped_rows)?);
        self.update(
            "SET heartbeat_at = now(), rejected_rows = $2, skipped_rows = $3",
            &[&rejected, &skipped],
        )
        .await
        .map(drop)
    }

    /// The import transaction committed: mark the row `committed` with the number of rows the
    /// app believes it wrote. pgvigil then compares it with what is really in the target table.
    pub async fn finish(mut self, reported_rows: u64) -> Result<(), AuditError> {
        let (rejected, skipped) = (to_i64(self.rejected_rows)?, to_i64(self.skipped_rows)?);
        let reported = to_i64(reported_rows)?;
        self.done = true;
        let status = self
            .update(
                "SET status = 'committed', reported_rows = $2, rejected_rows = $3, \
                 skipped_rows = $4, heartbeat_at = now(), finished_at = now()",
                &[&reported, &rejected, &skipped],
            )
            .await?;
        self.notify().await;
        if let Some(what) = match status.as_deref() {
            Some("in progress") => Some("is still in progress: COMMIT has not returned"),
            Some("aborted") => Some("was rolled back"),
            _ => None,
        } {
            tracing::warn!(
                target: "pgvigil_timing::audit",
                import_id = %self.import_id,
                xact_id = self.xact_id,
                reported_rows,
                "import marked committed with {reported_rows} rows, but its transaction {what}; \
                 a forgotten COMMIT? pgvigil will report the import as a shortfall"
            );
        }
        Ok(())
    }

    /// The import failed: mark the row `failed` with the error and its sources
    /// (for a tokio-postgres error: `db error: ERROR: duplicate key value violates …`).
    pub async fn fail(self, error: &(dyn std::error::Error + 'static)) -> Result<(), AuditError> {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        self.fail_with_message(message).await
    }

    /// The import failed: mark the row `failed` with `message`.
    pub async fn fail_with_message(mut self, message: impl fmt::Display) -> Result<(), AuditError> {
        self.done = true;
        self.end("failed", &message.to_string()).await
    }

    /// The import was abandoned on purpose: mark the row `cancelled` with the reason.
    pub async fn cancel(mut self, reason: impl fmt::Display) -> Result<(), AuditError> {
        self.done = true;
        self.end("cancelled", &reason.to_string()).await
    }

    async fn end(&self, status: &str, message: &str) -> Result<(), AuditError> {
        let message = error_message(message);
        let (rejected, skipped) = (to_i64(self.rejected_rows)?, to_i64(self.skipped_rows)?);
        self.update(
            "SET status = $2, error_message = $3, rejected_rows = $4, skipped_rows = $5, \
             heartbeat_at = now(), finished_at = now()",
            &[&status, &message, &rejected, &skipped],
        )
        .await?;
        self.notify().await;
        Ok(())
    }

    /// `SELECT pg_notify('pgvigil_import', '<import_id>')`; a failure is only logged.
    async fn notify(&self) {
        let id = self.import_id.to_string();
        let sql = format!("SELECT pg_notify('{NOTIFY_CHANNEL}', $1)");
        if let Err(e) = self.conn.as_client().execute(&sql, &[&id]).await {
            tracing::warn!(
                target: "pgvigil_timing::audit",
                import_id = %self.import_id,
                "NOTIFY {NOTIFY_CHANNEL} failed (pgvigil checks the import at its next poll): {e}"
            );
        }
    }

    /// `UPDATE <table> <set> WHERE import_id = $1 AND status = 'running'
    /// RETURNING pg_xact_status(xact_id)`: the import transaction's status, or `NotRunning`.
    async fn update(
        &self,
        set: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<String>, AuditError> {
        let sql = format!(
            "UPDATE {} {set} WHERE import_id = $1 AND status = 'running' \
             RETURNING pg_xact_status(xact_id)::text",
            self.table.quoted
        );
        let mut all: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&self.import_id];
        all.extend_from_slice(params);
        match self.conn.as_client().query_opt(&sql, &all).await? {
            None => Err(AuditError::NotRunning {
                import_id: self.import_id,
            }),
            Some(row) => Ok(row.get(0)),
        }
    }
}

impl<C: AsClient> Drop for ImportAudit<C> {
    fn drop(&mut self) {
        if !self.done {
            tracing::warn!(
                target: "pgvigil_timing::audit",
                import_id = %self.import_id,
                "import audit dropped without finish/fail/cancel: the row stays 'running' and \
                 pgvigil will report the import as stalled"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_cut_at_a_character_boundary_and_lose_their_nuls() {
        assert_eq!(error_message("a\0b"), "a\u{FFFD}b");
        let long = "é".repeat(2500); // 5000 bytes
        let cut = error_message(&long);
        assert_eq!(cut.len(), MAX_ERROR_MESSAGE_LEN);
        assert_eq!(cut, "é".repeat(2000));
        let odd = format!("x{}", "é".repeat(2500)); // the boundary falls inside a character
        assert_eq!(error_message(&odd).len(), MAX_ERROR_MESSAGE_LEN - 1);
    }
}
