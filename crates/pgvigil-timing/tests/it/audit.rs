//! ImportAudit: the audit row is written at every step and survives a rolled-back import.

use pgvigil_timing::{AuditError, AuditTable, GenericTimedClient, ImportAudit, Recorder};
use tokio_postgres::Client;

use crate::support::{connect, database};

/// The audit row as text columns, for assertions.
async fn row(
    client: &Client,
    table: &str,
    id: uuid::Uuid,
) -> std::collections::HashMap<String, Option<String>> {
    let sql = format!(
        "SELECT target_table::text, id_column::text, source_name, expected_rows::text, \
         rejected_rows::text, skipped_rows::text, reported_rows::text, xact_id::text, status, \
         started_at::text, heartbeat_at::text, finished_at::text, error_message, \
         pg_xact_status(xact_id) AS xact_status \
         FROM {table} WHERE import_id = $1"
    );
    let row = client.query_one(&sql, &[&id]).await.unwrap();
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name().to_owned(), row.get::<_, Option<String>>(i)))
        .collect()
}

fn get<'a>(row: &'a std::collections::HashMap<String, Option<String>>, k: &str) -> Option<&'a str> {
    row[k].as_deref()
}

#[tokio::test]
async fn audit_row_follows_a_committed_import() {
    let db = database("audit_commit");
    let check = connect(&db).await;
    check
        .batch_execute("CREATE TABLE contacts (email text, import_id uuid)")
        .await
        .unwrap();
    ImportAudit::ensure_table(&check).await.unwrap();
    ImportAudit::ensure_table(&check).await.unwrap(); // idempotent

    let mut app = Recorder::without_metrics().wrap(connect(&db).await);
    let audit_conn = connect(&db).await;
    let mut audit = ImportAudit::builder("contacts", "contacts.csv", 3)
        .start(audit_conn)
        .await
        .unwrap();
    let id = audit.import_id();
    let r = row(&check, "import_audit", id).await;
    assert_eq!(get(&r, "status"), Some("running"));
    assert_eq!(get(&r, "target_table"), Some("contacts"));
    assert_eq!(get(&r, "id_column"), Some("import_id"));
    assert_eq!(get(&r, "source_name"), Some("contacts.csv"));
    assert_eq!(get(&r, "expected_rows"), Some("3"));
    assert!(get(&r, "started_at").is_some() && get(&r, "heartbeat_at").is_some());
    assert_eq!(get(&r, "xact_id"), None);
    assert_eq!(get(&r, "finished_at"), None);
    let first_heartbeat = get(&r, "heartbeat_at").unwrap().to_owned();

    let tx = app.transaction().await.unwrap();
    let xid = audit.attach_transaction(&tx).await.unwrap();
    let own: String = tx
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, xid.to_string());
    let r = row(&check, "import_audit", id).await;
    assert_eq!(get(&r, "xact_id"), Some(own.as_str()));
    assert_eq!(get(&r, "xact_status"), Some("in progress"));

    let mut written = 0;
    for email in ["a@x", "b@x"] {
        written += tx
            .execute("INSERT INTO contacts VALUES ($1, $2)", &[&email, &id])
            .await
            .unwrap();
    }
    audit.record_rejected(1);
    // The heartbeat must be stamped later than the first: wait until the server's clock has
    // moved past it (a condition, not a fixed sleep).
    loop {
        let later: bool = check
            .query_one("SELECT now() > $1::text::timestamptz", &[&first_heartbeat])
            .await
            .unwrap()
            .get(0);
        if later {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    audit.heartbeat().await.unwrap();
    let r = row(&check, "import_audit", id).await;
    assert_eq!(get(&r, "rejected_rows"), Some("1"));
    assert!(get(&r, "heartbeat_at").unwrap() > first_heartbeat.as_str());
    tx.commit().await.unwrap();
    audit.finish(written).await.unwrap();

    let r = row(&check, "import_audit", id).await;
    assert_eq!(get(&r, "status"), Some("committed"));
    assert_eq!(get(&r, "reported_rows"), Some("2"));
    assert_eq!(get(&r, "rejected_rows"), Some("1"));
    assert_eq!(get(&r, "xact_status"), Some("committed"));
    assert!(get(&r, "finished_at").is_some());
    let stamped: i64 = check
        .query_one("SELECT count(*) FROM contacts WHERE import_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stamped, 2);
}

#[tokio::test]
async fn a_rolled_back_import_keeps_its_failed_audit_row() {
    let db = database("audit_fail");
    let check = connect(&db).await;
    check
        .batch_execute("CREATE TABLE contacts (email text UNIQUE, import_id uuid)")
        .await
        .unwrap();
    ImportAudit::ensure_table(&check).await.unwrap();

    let mut app = connect(&db).await;
    let audit_conn = connect(&db).await;
    let mut audit = ImportAudit::builder("public.contacts", "bad.csv", 2)
        .start(&audit_conn)
        .await
        .unwrap();
    let id = audit.import_id();
    let tx = app.transaction().await.unwrap();
    audit.attach_transaction(&tx).await.unwrap();
    tx.execute("INSERT INTO contacts VALUES ('a', $1)", &[&id])
        .await
        .unwrap();
    let err = tx
        .execute("INSERT INTO contacts VALUES ('a', $1)", &[&id])
        .await
        .unwrap_err();
    tx.rollback().await.unwrap();
    audit.fail(&err).await.unwrap();

    let r = row(&check, "import_audit", id).await;
    assert_eq!(get(&r, "status"), Some("failed"));
    assert!(
        get(&r, "error_message").unwrap().contains("duplicate key"),
        "{r:?}"
    );
    assert_eq!(get(&r, "xact_status"), Some("aborted"));
    assert!(get(&r, "finished_at").is_some());
    assert_eq!(get(&r, "reported_rows"), None);
}

#[tokio::test]
async fn audit_guards_and_custom_tables() {
    let db = database("audit_guards");
    let check = connect(&db).await;
    check
        .batch_execute("CREATE SCHEMA ops; CREATE TABLE \"Leads\" (id int, batch uuid)")
        .await
        .unwrap();
    let table = AuditTable::new("ops.Import_Log").unwrap();
    assert_eq!(table.quoted_name(), "\"ops\".\"Import_Log\"");
    table.ensure(&check).await.unwrap();
    assert!(AuditTable::new("a.b.c").is_err());
    assert!(AuditTable::new("").is_err());

    // The target table must exist (regclass); the database's error comes back unchanged.
    let err = ImportAudit::builder("missing", "x.csv", 1)
        .audit_table(table.clone())
        .start(&check)
        .await
        .unwrap_err();
    match err {
        AuditError::Db(e) => assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
        ),
        other => panic!("unexpected {other:?}"),
    }

    let audit = ImportAudit::builder("\"Leads\"", "leads.csv", 10)
        .audit_table(table.clone())
        .id_column("batch")
        .start(&check)
        .await
        .unwrap();
    let r = row(&check, "ops.\"Import_Log\"", audit.import_id()).await;
    assert_eq!(get(&r, "target_table"), Some("\"Leads\""));
    assert_eq!(get(&r, "id_column"), Some("batch"));

    // Someone else ended the import: further updates are refused, not silently lost.
    check
        .execute(
            "UPDATE ops.\"Import_Log\" SET status = 'cancelled' WHERE import_id = $1",
            &[&audit.import_id()],
        )
        .await
        .unwrap();
    assert!(matches!(
        audit.heartbeat().await,
        Err(AuditError::NotRunning { .. })
    ));
    assert!(matches!(
        audit.finish(10).await,
        Err(AuditError::NotRunning { .. })
    ));

    // The shipped DDL is DESIGN.md's table.
    let ddl = ImportAudit::create_table_sql();
    for column in [
        "import_id     uuid PRIMARY KEY",
        "target_table  regclass NOT NULL",
        "expected_rows bigint NOT NULL CHECK (expected_rows >= 0)",
        "xact_id       xid8",
        "CHECK (status IN ('pending','running','committed','failed','cancelled'))",
    ] {
        assert!(ddl.contains(column), "{column}");
    }
}

#[tokio::test]
async fn audit_works_through_timed_wrappers() {
    let db = database("audit_timed");
    let recorder = Recorder::without_metrics();
    let audit_conn = recorder.wrap(connect(&db).await);
    ImportAudit::ensure_table(&audit_conn).await.unwrap();
    audit_conn
        .batch_execute("CREATE TABLE t (import_id uuid)")
        .await
        .unwrap();
    let mut app = recorder.wrap(connect(&db).await);
    let mut audit = ImportAudit::builder("t", "t.csv", 1)
        .start(audit_conn)
        .await
        .unwrap();
    let tx = app.transaction().await.unwrap();
    let xid = audit.attach_transaction(&tx).await.unwrap();
    assert_eq!(audit.xact_id(), Some(xid));
    tx.execute("INSERT INTO t VALUES ($1)", &[&audit.import_id()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let id = audit.import_id();
    audit.finish(1).await.unwrap();
    let check = connect(&db).await;
    let r = row(&check, "import_audit", id).await;
    assert_eq!(get(&r, "status"), Some("committed"));
}
