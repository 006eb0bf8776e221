//! Reading audit rows through the configured column mapping, and the lookups that check them:
//! does the target table exist, does it have the import-id column (and an index on it), how many
//! rows carry the import id, what became of the import's transaction.
//!
//! Every configured name reaches SQL only through [`Ident::quoted`]; table and type names that
//! come from the server are produced by the server's own quoting (`format('%I.%I')`,
//! `regtype::text`). Values read from audit rows are bound as parameters. Columns are read as
//! text and parsed here, so one garbage row is an `invalid` verdict, not a failed query.

use tokio_postgres::Client;

use super::reconcile::{AtRisk, AuditStatus, ImportRecord};
use crate::collect::describe_pg_error;
use crate::config::{AuditTableConfig, Ident, QualifiedName};

/// Audit tables found without configuration: any table named `import_audit`.
const DISCOVER_SQL: &str = "
SELECT n.nspname::text, c.relname::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = 'import_audit' AND c.relkind IN ('r', 'p')
 ORDER BY 1";

const RESOLVE_TABLE_SQL: &str = "
SELECT c.oid, format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass($1::text)";

const COLUMN_SQL: &str = "
SELECT a.atttypid::regtype::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indkey[0] = a.attnum)
  FROM pg_attribute a
 WHERE a.attrelid = $1 AND a.attname = $2::text AND a.attnum > 0 AND NOT a.attisdropped";

/// Sessions idle in a transaction that hold a write lock on a table of this database.
const AT_RISK_SQL: &str = "
SELECT l.relation, a.pid,
       extract(epoch FROM clock_timestamp() - a.state_change)::float8
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock' AND l.granted
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND a.state LIKE 'idle in transaction%' AND a.backend_xid IS NOT NULL";

/// The audit tables named `import_audit` in the database.
pub(super) async fn discover(
    client: &Client,
) -> Result<Vec<AuditTableConfig>, tokio_postgres::Error> {
    let rows = client.query(DISCOVER_SQL, &[]).await?;
    let mut found = Vec::new();
    for row in rows {
        let schema: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        if let (Ok(schema), Ok(name)) = (Ident::new(&schema), Ident::new(&name)) {
            found.push(AuditTableConfig::recommended(QualifiedName {
                schema: Some(schema),
                name,
            }));
        }
    }
    Ok(found)
}

/// The SELECT over one audit table: `$1` is the re-check window in seconds, `$2` the row limit.
pub(super) fn select_sql(table: &AuditTableConfig) -> String {
    let c = &table.columns;
    let text = |col: &Option<Ident>| match col {
        Some(col) => format!("(a.{})::text", col.quoted()),
        None => "NULL::text".to_owned(),
    };
    let age = |col: &Option<Ident>| match col {
        Some(col) => format!(
            "extract(epoch FROM now() - (a.{})::timestamptz)::float8",
            col.quoted()
        ),
        None => "NULL::float8".to_owned(),
    };
    let created = format!("(a.{})::timestamptz", c.created_at.quoted());
    let finished = match &c.finished_at {
        Some(col) => format!("coalesce((a.{})::timestamptz, {created})", col.quoted()),
        None => created.clone(),
    };
    format!(
        "SELECT (a.{import_id})::text, (a.{target})::text, {id_column}, {source}, \
                (a.{expected})::text, {rejected}, {skipped}, {reported}, {xact}, \
                (a.{status})::text, extract(epoch FROM now() - {created})::float8, \
                {heartbeat}, {finished_age}, {error} \
           FROM {table} a \
          WHERE (a.{status})::text IN ('pending', 'running') \
             OR {finished} > now() - make_interval(secs => $1::float8) \
          ORDER BY {created} DESC \
          LIMIT $2",
        import_id = c.import_id.quoted(),
        target = c.target_table.quoted(),
        id_column = text(&c.id_column),
        source = text(&c.source_name),
        expected = c.expected_rows.quoted(),
        rejected = text(&c.rejected_rows),
        skipped = text(&c.skipped_rows),
        reported = text(&c.reported_rows),
        xact = text(&c.xact_id),
        status = c.status.quoted(),
        heartbeat = age(&c.heartbeat_at),
        finished_age = age(&c.finished_at),
        error = text(&c.error_message),
        table = table.table.quoted(),
    )
}

/// One audit row as read: every fact as text, parsed by [`RawRow::validate`].
#[derive(Debug, Clone, Default)]
pub(super) struct RawRow {
    pub(super) import_id: Option<String>,
    pub(super) target_table: Option<String>,
    pub(super) id_column: Option<String>,
    pub(super) source_name: Option<String>,
    pub(super) expected_rows: Option<String>,
    pub(super) rejected_rows: Option<String>,
    pub(super) skipped_rows: Option<String>,
    pub(super) reported_rows: Option<String>,
    pub(super) xact_id: Option<String>,
    pub(super) status: Option<String>,
    pub(super) age_seconds: Option<f64>,
    pub(super) heartbeat_age_seconds: Option<f64>,
    pub(super) finished_age_seconds: Option<f64>,
    pub(super) error_message: Option<String>,
}

/// Read the audit rows of one table (running ones, and those finished within `window_seconds`).
pub(super) async fn read(
    client: &Client,
    table: &AuditTableConfig,
    window_seconds: f64,
    limit: i64,
) -> Result<Vec<RawRow>, tokio_postgres::Error> {
    let rows = client
        .query(&select_sql(table), &[&window_seconds, &limit])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(RawRow {
                import_id: r.try_get(0)?,
                target_table: r.try_get(1)?,
                id_column: r.try_get(2)?,
                source_name: r.try_get(3)?,
                expected_rows: r.try_get(4)?,
                rejected_rows: r.try_get(5)?,
                skipped_rows: r.try_get(6)?,
                reported_rows: r.try_get(7)?,
                xact_id: r.try_get(8)?,
                status: r.try_get(9)?,
                age_seconds: r.try_get(10)?,
                heartbeat_age_seconds: r.try_get(11)?,
                finished_age_seconds: r.try_get(12)?,
                error_message: r.try_get(13)?,
            })
        })
        .collect()
}

/// The target table's facts needed to count.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) oid: u32,
    /// `schema.table`, quoted by the server.
    pub(super) qualified: String,
}

/// The target's import-id column.
#[derive(Debug, Clone)]
pub(super) struct IdColumn {
    /// Its type, as the server writes it (`uuid`, `bigint`, ...).
    pub(super) type_name: String,
    /// Whether an index leads with it.
    pub(super) indexed: bool,
}

/// Resolve a target table name; `Ok(None)` when there is no such table.
pub(super) async fn resolve_table(
    client: &Client,
    name: &str,
) -> Result<Option<Target>, tokio_postgres::Error> {
    let row = client.query_opt(RESOLVE_TABLE_SQL, &[&name]).await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(Target {
            oid: row.try_get(0)?,
            qualified: row.try_get(1)?,
        })),
    }
}

/// Look up a column of the target table; `Ok(None)` when it has none of that name.
pub(super) async fn id_column(
    client: &Client,
    table: u32,
    column: &str,
) -> Result<Option<IdColumn>, tokio_postgres::Error> {
    let row = client.query_opt(COLUMN_SQL, &[&table, &column]).await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(IdColumn {
            type_name: row.try_get(0)?,
            indexed: row.try_get(1)?,
        })),
    }
}

/// Rows of `target` whose `column` holds `import_id`.
pub(super) async fn count_rows(
    client: &Client,
    target: &Target,
    column: &str,
    id_type: &IdColumn,
    import_id: &str,
) -> Result<i64, String> {
    let column = Ident::new(column)?;
    // The id arrives as text and is cast to the column's own type, so an index on it is used.
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {} = $1::text::{}",
        target.qualified,
        column.quoted(),
        id_type.type_name
    );
    let row = client.query_one(&sql, &[&import_id]).await.map_err(|e| {
        let mut s = describe_pg_error(&e);
        if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
            s.push_str(&format!(
                "; grant pgvigil's role SELECT on {} (see deploy/sql/monitoring_role.sql)",
                target.qualified
            ));
        }
        s
    })?;
    row.try_get(0).map_err(|e| e.to_string())
}

/// The SQL an operator runs to see for themselves.
pub(super) fn confirm_sql(target: &str, column: &str, import_id: &str) -> String {
    // Always quoted: a name Ident refuses (empty, over 63 bytes, control characters) is
    // quoted by hand rather than shown raw, so the SQL never carries an unquoted identifier.
    let column = Ident::new(column)
        .map(|c| c.quoted())
        .unwrap_or_else(|_| format!("\"{}\"", column.replace('"', "\"\"")));
    format!(
        "SELECT count(*) FROM {target} WHERE {column} = '{}';",
        import_id.replace('\'', "''")
    )
}

/// `pg_xact_status` of a transaction; `None` when the server no longer knows or refuses.
pub(super) async fn xact_status(client: &Client, xact_id: u64) -> Option<String> {
    client
        .query_one(
            "SELECT pg_xact_status($1::text::xid8)",
            &[&xact_id.to_string()],
        )
        .await
        .ok()?
        .try_get(0)
        .ok()?
}

/// Sessions idle in a transaction with writes, by table oid (the longest idle per table).
pub(super) async fn at_risk(
    client: &Client,
) -> Result<std::collections::HashMap<u32, AtRisk>, tokio_postgres::Error> {
    let mut by_table = std::collections::HashMap::new();
    for row in client.query(AT_RISK_SQL, &[]).await? {
        let oid: u32 = row.try_get(0)?;
        let risk = AtRisk {
            pid: row.try_get(1)?,
            idle_seconds: row.try_get::<_, Option<f64>>(2)?.unwrap_or(0.0),
        };
        by_table
            .entry(oid)
            .and_modify(|r: &mut AtRisk| {
                if risk.idle_seconds > r.idle_seconds {
                    *r = risk.clone();
                }
            })
            .or_insert(risk);
    }
    Ok(by_table)
}

impl RawRow {
    /// The row's import id and status as text, for an invalid verdict.
    pub(super) fn id_and_status(&self) -> (String, String) {
        let shown = |v: &Option<String>| match v.as_deref() {
            None => "(null)".to_owned(),
            Some("") => "(empty)".to_owned(),
            Some(s) => s.to_owned(),
        };
        (shown(&self.import_id), shown(&self.status))
    }

    /// Check and parse everything that does not need the database. The target table is
    /// resolved separately; `target_table` here is its server-quoted name.
    pub(super) fn validate(
        &self,
        audit_table: &str,
        target_table: String,
    ) -> Result<ImportRecord, String> {
        let import_id = self
            .import_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or("the import id is NULL or empty")?;
        let status_text = self.status.as_deref().ok_or("status is NULL")?;
        let status = AuditStatus::parse(status_text).ok_or_else(|| {
            format!(
                "unknown status {status_text:?}; expected pending, running, committed, failed or cancelled"
            )
        })?;
        let count =
            |v: &Option<String>, name: &str, required: bool| -> Result<Option<i64>, String> {
                match v {
                    None if required => Err(format!("{name} is NULL")),
                    None => Ok(None),
                    Some(s) => match s.trim().parse::<i64>() {
                        Ok(n) if n < 0 => Err(format!("{name} is negative ({n})")),
                        Ok(n) => Ok(Some(n)),
                        Err(_) => Err(format!("{name} {s:?} is not a whole number")),
                    },
                }
            };
        let expected_rows = count(&self.expected_rows, "expected_rows", true)?.unwrap_or(0);
        let rejected_rows = count(&self.rejected_rows, "rejected_rows", false)?.unwrap_or(0);
        let skipped_rows = count(&self.skipped_rows, "skipped_rows", false)?.unwrap_or(0);
        let reported_rows = count(&self.reported_rows, "reported_rows", false)?;
        // Widened: two i64 counts near i64::MAX must not wrap into a small sum (in release
        // builds that turned a garbage row into a false "import lost rows" alert).
        if i128::from(rejected_rows) + i128::from(skipped_rows) > i128::from(expected_rows) {
            return Err(format!(
                "rejected_rows ({rejected_rows}) + skipped_rows ({skipped_rows}) exceed expected_rows ({expected_rows})"
            ));
        }
        let xact_id = match &self.xact_id {
            None => None,
            Some(s) => Some(
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("xact_id {s:?} is not a transaction id"))?,
            ),
        };
        Ok(ImportRecord {
            audit_table: audit_table.to_owned(),
            import_id,
            target_table,
            id_column: self.id_column_name().to_owned(),
            source_name: self.source_name.clone().unwrap_or_default(),
            expected_rows,
            rejected_rows,
            skipped_rows,
            reported_rows,
            xact_id,
            status,
            age_seconds: self.age_seconds.unwrap_or(0.0).max(0.0),
            heartbeat_age_seconds: self.heartbeat_age_seconds.map(|a| a.max(0.0)),
            finished_age_seconds: self.finished_age_seconds.map(|a| a.max(0.0)),
            error_message: self.error_message.clone(),
        })
    }

    /// The target's import-id column: the row's own, or DESIGN.md's default.
    pub(super) fn id_column_name(&self) -> &str {
        self.id_column
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("import_id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuditColumns;

    fn row() -> RawRow {
        RawRow {
            import_id: Some("a1".into()),
            target_table: Some("contacts".into()),
            expected_rows: Some("100".into()),
            status: Some("committed".into()),
            age_seconds: Some(3.0),
            ..RawRow::default()
        }
    }

    #[test]
    fn garbage_rows_say_why() {
        let cases: Vec<(RawRow, &str)> = vec![
            (
                RawRow {
                    expected_rows: Some("-5".into()),
                    ..row()
                },
                "expected_rows is negative (-5)",
            ),
            (
                RawRow {
                    status: Some("done".into()),
                    ..row()
                },
                "unknown status \"done\"",
            ),
            (
                RawRow {
                    import_id: None,
                    ..row()
                },
                "the import id is NULL",
            ),
            (
                RawRow {
                    rejected_rows: Some("80".into()),
                    skipped_rows: Some("30".into()),
                    ..row()
                },
                "exceed expected_rows (100)",
            ),
            (
                RawRow {
                    reported_rows: Some("lots".into()),
                    ..row()
                },
                "reported_rows \"lots\" is not a whole number",
            ),
        ];
        for (raw, reason) in cases {
            let err = raw.validate("import_audit", "contacts".into()).unwrap_err();
            assert!(err.contains(reason), "{err:?} should contain {reason:?}");
        }
        let ok = row()
            .validate("import_audit", "public.contacts".into())
            .unwrap();
        assert_eq!(ok.expected_net(), 100);
        assert_eq!(ok.id_column, "import_id");
    }

    #[test]
    fn huge_rejected_and_skipped_counts_do_not_wrap_into_a_valid_row() {
        // i64::MAX + i64::MAX wraps to -2 in release builds, which is not > 5: the row passed
        // and fired "Import lost 7 of 7 rows".
        let raw = RawRow {
            expected_rows: Some("5".into()),
            rejected_rows: Some(i64::MAX.to_string()),
            skipped_rows: Some(i64::MAX.to_string()),
            ..row()
        };
        let err = raw.validate("import_audit", "contacts".into()).unwrap_err();
        assert!(err.contains("exceed expected_rows (5)"), "{err}");
        // Numbers past i64 are not whole numbers pgvigil can count with.
        let raw = RawRow {
            expected_rows: Some("9223372036854775808".into()),
            ..row()
        };
        let err = raw.validate("import_audit", "contacts".into()).unwrap_err();
        assert!(err.contains("expected_rows"), "{err}");
    }

    #[test]
    fn mapped_columns_are_quoted_and_missing_ones_are_null() {
        let columns = AuditColumns {
            import_id: Ident::new("Batch Id").unwrap(),
            xact_id: None,
            ..AuditColumns::default()
        };
        let table = AuditTableConfig {
            table: QualifiedName::parse("etl.batches").unwrap(),
            columns,
        };
        let sql = select_sql(&table);
        assert!(sql.contains("(a.\"Batch Id\")::text"), "{sql}");
        assert!(sql.contains("FROM \"etl\".\"batches\" a"), "{sql}");
        assert_eq!(sql.matches("NULL::text").count(), 1, "{sql}");
    }

    #[test]
    fn confirm_sql_escapes_the_id() {
        assert_eq!(
            confirm_sql("public.contacts", "import_id", "x'y"),
            "SELECT count(*) FROM public.contacts WHERE \"import_id\" = 'x''y';"
        );
    }
}
