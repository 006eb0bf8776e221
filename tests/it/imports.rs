//! Import reconciliation against real PostgreSQL: the app side is `pgvigil-timing`'s
//! `ImportAudit`, pgvigil's side the imports collector, and the alert rules are evaluated on
//! exactly what the collector observed.

use std::time::Duration;

use pgvigil::collect::Observations;
use pgvigil::collect::imports::reconcile::{ImportVerdict, Verdict, XactStatus};
use pgvigil_testkit::TestCluster;
use pgvigil_timing::ImportAudit;
use tokio_postgres::Client;

use crate::support::{Daemon, Poller, conditions, connect, imports_of, one_target, tables_of};

pub const CONTACTS: &str =
    "CREATE TABLE contacts (id bigserial PRIMARY KEY, email text NOT NULL, import_id uuid);
                        CREATE INDEX ON contacts (import_id);";

pub async fn setup(prefix: &str) -> (TestCluster, String, Client) {
    let cluster = TestCluster::start();
    let db = cluster.create_database(prefix);
    cluster.psql(&db, CONTACTS);
    let audit = connect(&cluster.dsn(&db)).await;
    ImportAudit::ensure_table(&audit).await.unwrap();
    (cluster, db, audit)
}

/// Poller with no grace period, so two polls confirm a discrepancy.
async fn poller(dsn: &str) -> Poller {
    Poller::new(dsn, |t| t.imports.grace_period = Duration::ZERO).await
}

const INSERT: &str = "INSERT INTO contacts (email, import_id) SELECT 'user' || g || '@example.com', $1 FROM generate_series(1, $2::int8) g";

/// The right way: insert everything in one transaction, commit, then finish the audit row.
pub async fn import_correctly(dsn: &str, audit: &Client, source: &str, rows: i64) -> String {
    let mut a = ImportAudit::builder("contacts", source, rows as u64)
        .start(audit)
        .await
        .unwrap();
    let id = a.import_id();
    let mut db = connect(dsn).await;
    let tx = db.transaction().await.unwrap();
    a.attach_transaction(&tx).await.unwrap();
    tx.execute(INSERT, &[&id, &rows]).await.unwrap();
    tx.commit().await.unwrap();
    a.finish(rows as u64).await.unwrap();
    id.to_string()
}

/// The incident: rows inserted in a transaction that is never committed, the audit row marked
/// committed with the full count, then the connection dropped (the server aborts the
/// transaction).
pub async fn import_forgetting_commit(dsn: &str, audit: &Client, rows: i64) -> (String, u64) {
    let mut a = ImportAudit::builder("contacts", "forgot-commit.csv", rows as u64)
        .start(audit)
        .await
        .unwrap();
    let id = a.import_id();
    let db = connect(dsn).await;
    db.batch_execute("BEGIN").await.unwrap();
    let xid: String = db
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    let xid: u64 = xid.parse().unwrap();
    a.attach_xact_id(xid).await.unwrap();
    db.execute(INSERT, &[&id, &rows]).await.unwrap();
    a.finish(rows as u64).await.unwrap();
    drop(db);
    (id.to_string(), xid)
}

/// Commits only `committed` of `rows` rows but reports all of them.
pub async fn import_partially(dsn: &str, audit: &Client, rows: i64, committed: i64) -> String {
    let mut a = ImportAudit::builder("contacts", "partial.csv", rows as u64)
        .start(audit)
        .await
        .unwrap();
    let id = a.import_id();
    let mut db = connect(dsn).await;
    let tx = db.transaction().await.unwrap();
    a.attach_transaction(&tx).await.unwrap();
    tx.execute(INSERT, &[&id, &committed]).await.unwrap();
    tx.commit().await.unwrap();
    a.finish(rows as u64).await.unwrap();
    id.to_string()
}

fn verdict<'a>(obs: &'a Observations, import_id: &str) -> &'a ImportVerdict {
    imports_of(obs)
        .expect("imports report")
        .imports
        .iter()
        .find(|v| v.import_id == import_id)
        .unwrap_or_else(|| panic!("no verdict for {import_id}: {:#?}", imports_of(obs)))
}

fn ann<'a>(c: &'a pgvigil::alert::Condition, key: &str) -> &'a str {
    c.annotations
        .get(key)
        .unwrap_or_else(|| panic!("no annotation {key}: {c:#?}"))
}

#[tokio::test]
async fn forgotten_commit_and_three_percent_import_are_shortfalls_with_exact_numbers() {
    let (cluster, db, audit) = setup("shortfall").await;
    let dsn = cluster.dsn(&db);
    let ok = import_correctly(&dsn, &audit, "good.csv", 2_000).await;
    let (forgot, xid) = import_forgetting_commit(&dsn, &audit, 10_000).await;
    let partial = import_partially(&dsn, &audit, 10_000, 300).await;

    // No configuration: the table named import_audit is found by itself.
    let mut p = poller(&dsn).await;
    let first = p.poll().await;
    assert_eq!(
        imports_of(&first).unwrap().audit_tables,
        vec!["public.import_audit".to_string()]
    );
    assert_eq!(verdict(&first, &ok).verdict, Verdict::Ok);
    // One poll is not proof: the race with COMMIT is absorbed by a confirming second poll.
    assert_eq!(verdict(&first, &partial).verdict, Verdict::Confirming);
    assert!(conditions("ImportRowShortfall", &first).is_empty());

    let obs = p.poll().await;
    let v = verdict(&obs, &forgot);
    assert_eq!(v.verdict, Verdict::Shortfall);
    assert_eq!((v.committed_rows, v.missing_rows), (Some(0), Some(10_000)));
    assert_eq!(v.xact_id, Some(xid));
    assert_eq!(v.xact_status, Some(XactStatus::Aborted));
    let v = verdict(&obs, &partial);
    assert_eq!(v.verdict, Verdict::Shortfall);
    assert_eq!((v.committed_rows, v.missing_rows), (Some(300), Some(9_700)));
    assert_eq!(verdict(&obs, &ok).verdict, Verdict::Ok);

    let fired = conditions("ImportRowShortfall", &obs);
    assert_eq!(fired.len(), 2, "{fired:#?}");
    let c = fired
        .iter()
        .find(|c| c.labels["import_id"] == partial)
        .unwrap();
    assert_eq!(c.labels["table"], "public.contacts");
    assert_eq!(c.labels["datname"], db);
    assert_eq!(ann(c, "expected"), "10000");
    assert_eq!(ann(c, "committed"), "300");
    assert_eq!(ann(c, "missing"), "9700");
    assert_eq!(ann(c, "reported"), "10000");
    assert_eq!(ann(c, "ratio"), "0.0300");
    assert_eq!(ann(c, "source"), "partial.csv");
    // The SQL to confirm gives the committed count when run.
    let confirmed = cluster.psql(&db, ann(c, "sql"));
    assert_eq!(confirmed, "300");
    assert!(ann(c, "summary").contains("9700 of 10000"), "{c:#?}");
    let c = fired
        .iter()
        .find(|c| c.labels["import_id"] == forgot)
        .unwrap();
    assert!(ann(c, "reason").contains("ABORTED"), "{c:#?}");
    // The app reported what it expected, so this is a shortfall, not a reported mismatch.
    assert!(conditions("ImportReportedMismatch", &obs).is_empty());
}

#[tokio::test]
async fn many_concurrent_correct_imports_never_alert() {
    let (cluster, db, audit) = setup("concurrent").await;
    let dsn = cluster.dsn(&db);
    let mut p = poller(&dsn).await;
    let audit = std::sync::Arc::new(audit);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (dsn, audit) = (dsn.clone(), audit.clone());
        tasks.push(tokio::spawn(async move {
            import_correctly(&dsn, &audit, &format!("batch-{i}.csv"), 500 + i * 37).await
        }));
    }
    let mut polls = 0;
    // Poll while the imports run, so polls land between their commits and audit updates.
    while tasks.iter().any(|t| !t.is_finished()) || polls < 3 {
        let obs = p.poll().await;
        polls += 1;
        for alert in [
            "ImportRowShortfall",
            "ImportReportedMismatch",
            "ImportStalled",
            "ImportRolledBack",
        ] {
            let fired = conditions(alert, &obs);
            assert!(fired.is_empty(), "{alert} fired: {fired:#?}");
        }
        for v in &imports_of(&obs).unwrap().imports {
            assert!(
                matches!(v.verdict, Verdict::Ok | Verdict::Running),
                "{v:#?}"
            );
        }
    }
    let ids: Vec<String> = futures_join(tasks).await;
    let obs = p.poll().await;
    for id in ids {
        assert_eq!(verdict(&obs, &id).verdict, Verdict::Ok);
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn audit_marked_committed_just_before_the_commit_never_alerts() {
    let (cluster, db, audit) = setup("race").await;
    let dsn = cluster.dsn(&db);
    // Realistic grace period: 10s.
    let mut p = Poller::new(&dsn, |_| {}).await;
    let mut a = ImportAudit::builder("contacts", "race.csv", 1_000)
        .start(&audit)
        .await
        .unwrap();
    let id = a.import_id();
    let mut db_client = connect(&dsn).await;
    let tx = db_client.transaction().await.unwrap();
    a.attach_transaction(&tx).await.unwrap();
    tx.execute(INSERT, &[&id, &1_000i64]).await.unwrap();
    // The app updates its audit row first (a different connection), then commits.
    a.finish(1_000).await.unwrap();
    for _ in 0..3 {
        let obs = p.poll().await;
        let v = verdict(&obs, &id.to_string());
        assert_eq!(v.verdict, Verdict::Confirming, "{v:#?}");
        assert_eq!(v.xact_status, Some(XactStatus::InProgress));
        assert!(conditions("ImportRowShortfall", &obs).is_empty());
    }
    tx.commit().await.unwrap();
    let obs = p.poll().await;
    assert_eq!(verdict(&obs, &id.to_string()).verdict, Verdict::Ok);
}

#[tokio::test]
async fn running_import_is_never_a_shortfall_but_is_shown_at_risk() {
    let (cluster, db, audit) = setup("running").await;
    let dsn = cluster.dsn(&db);
    let mut p = poller(&dsn).await;
    let mut a = ImportAudit::builder("contacts", "slow.csv", 5_000)
        .start(&audit)
        .await
        .unwrap();
    let id = a.import_id();
    let mut db_client = connect(&dsn).await;
    let tx = db_client.transaction().await.unwrap();
    a.attach_transaction(&tx).await.unwrap();
    tx.execute(INSERT, &[&id, &2_000i64]).await.unwrap();
    for _ in 0..3 {
        let obs = p.poll().await;
        let v = verdict(&obs, &id.to_string());
        assert_eq!(v.verdict, Verdict::Running);
        let risk = v.at_risk.as_ref().expect("at risk");
        assert!(
            v.reason.as_deref().unwrap().starts_with("at risk"),
            "{v:#?}"
        );
        assert!(risk.pid > 0);
        assert!(conditions("ImportRowShortfall", &obs).is_empty());
    }
    tx.rollback().await.unwrap();
    a.cancel("test over").await.unwrap();
}

#[tokio::test]
async fn stalled_and_rolled_back_running_imports_alert() {
    let (cluster, db, audit) = setup("stalled").await;
    let dsn = cluster.dsn(&db);
    let mut p = poller(&dsn).await;

    // Stalled: running, heartbeat 10 minutes old (default stall_after 5m).
    let stalled = ImportAudit::builder("contacts", "stuck.csv", 10)
        .start(&audit)
        .await
        .unwrap();
    audit
        .execute(
            "UPDATE import_audit SET heartbeat_at = now() - interval '10 minutes' WHERE import_id = $1",
            &[&stalled.import_id()],
        )
        .await
        .unwrap();

    // Rolled back: the transaction aborts, the app never updates the audit row.
    let mut rolled = ImportAudit::builder("contacts", "rolled.csv", 800)
        .start(&audit)
        .await
        .unwrap();
    let mut db_client = connect(&dsn).await;
    let tx = db_client.transaction().await.unwrap();
    let xid = rolled.attach_transaction(&tx).await.unwrap();
    tx.execute(INSERT, &[&rolled.import_id(), &800i64])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // An aborted transaction under a "running" audit row is confirmed by a second poll.
    let first = p.poll().await;
    assert!(conditions("ImportRolledBack", &first).is_empty());
    let obs = p.poll().await;
    let fired = conditions("ImportStalled", &obs);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(
        fired[0].labels["import_id"],
        stalled.import_id().to_string()
    );
    assert!(
        ann(&fired[0], "reason").contains("no heartbeat for 6"),
        "{fired:#?}"
    );

    let fired = conditions("ImportRolledBack", &obs);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].labels["import_id"], rolled.import_id().to_string());
    assert_eq!(ann(&fired[0], "xact_id"), xid.to_string());
    assert_eq!(ann(&fired[0], "xact_status"), "aborted");
    assert!(conditions("ImportRowShortfall", &obs).is_empty());
    stalled.cancel("test over").await.unwrap();
    rolled.fail_with_message("rolled back").await.unwrap();
}

#[tokio::test]
async fn reported_mismatch_and_rows_deleted_later() {
    let (cluster, db, audit) = setup("mismatch").await;
    let dsn = cluster.dsn(&db);
    let mut p = Poller::new(&dsn, |t| {
        t.imports.grace_period = Duration::ZERO;
        t.imports.recheck_interval = Duration::ZERO;
    })
    .await;
    // The app wrote 400 rows but reports 450.
    let a = ImportAudit::builder("contacts", "miscounted.csv", 400)
        .start(&audit)
        .await
        .unwrap();
    let miscounted = a.import_id();
    connect(&dsn)
        .await
        .execute(INSERT, &[&miscounted, &400i64])
        .await
        .unwrap();
    a.finish(450).await.unwrap();
    let good = import_correctly(&dsn, &audit, "good.csv", 1_000).await;

    p.poll().await;
    let obs = p.poll().await;
    assert_eq!(verdict(&obs, &good).verdict, Verdict::Ok);
    let fired = conditions("ImportReportedMismatch", &obs);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(ann(&fired[0], "committed"), "400");
    assert_eq!(ann(&fired[0], "reported"), "450");
    assert!(conditions("ImportRowShortfall", &obs).is_empty());

    // Someone deletes rows of the verified import later: the re-check finds it.
    cluster.psql(
        &db,
        &format!("DELETE FROM contacts WHERE id IN (SELECT id FROM contacts WHERE import_id = '{good}' LIMIT 250)"),
    );
    p.poll().await;
    let obs = p.poll().await;
    let v = verdict(&obs, &good);
    assert_eq!(v.verdict, Verdict::Shortfall);
    assert_eq!((v.committed_rows, v.missing_rows), (Some(750), Some(250)));
}

#[tokio::test]
async fn mapped_audit_table_with_garbage_rows_reports_each_as_invalid() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("garbage");
    cluster.psql(
        &db,
        "CREATE SCHEMA etl;
         CREATE TABLE etl.\"Batches\" (\"Batch Id\" text, dest text, rows_in text, state text,
                                      made timestamptz DEFAULT now(), done timestamptz DEFAULT now());
         CREATE TABLE orders (id serial, import_id text);
         CREATE TABLE no_id (id serial);
         INSERT INTO orders (import_id) SELECT 'b-ok' FROM generate_series(1, 50);
         INSERT INTO etl.\"Batches\" (\"Batch Id\", dest, rows_in, state) VALUES
           ('b-ok', 'orders', '50', 'committed'),
           ('b-neg', 'orders', '-3', 'committed'),
           ('b-notable', 'nosuchtable', '5', 'committed'),
           ('b-noid', 'no_id', '5', 'committed'),
           ('b-status', 'orders', '5', 'finished'),
           ('b-bad', 'a.b.c.d', '5', 'committed');",
    );
    let dsn = cluster.dsn(&db);
    let mut p = Poller::new(&dsn, |t| {
        let mut columns = pgvigil::config::AuditColumns::default();
        let id = |s: &str| pgvigil::config::Ident::new(s).unwrap();
        columns.import_id = id("Batch Id");
        columns.target_table = id("dest");
        columns.expected_rows = id("rows_in");
        columns.status = id("state");
        columns.created_at = id("made");
        columns.finished_at = Some(id("done"));
        for c in [
            &mut columns.id_column,
            &mut columns.source_name,
            &mut columns.rejected_rows,
            &mut columns.skipped_rows,
            &mut columns.reported_rows,
            &mut columns.xact_id,
            &mut columns.heartbeat_at,
            &mut columns.error_message,
        ] {
            *c = None;
        }
        t.imports.audit_tables = vec![pgvigil::config::AuditTableConfig {
            table: pgvigil::config::QualifiedName::parse("etl.Batches").unwrap(),
            columns,
        }];
    })
    .await;
    let obs = p.poll().await;
    let reason = |id: &str| {
        let v = verdict(&obs, id);
        assert_eq!(v.verdict, Verdict::Invalid, "{v:#?}");
        v.reason.clone().unwrap()
    };
    assert!(reason("b-neg").contains("expected_rows is negative (-3)"));
    assert!(reason("b-notable").contains("nosuchtable does not exist"));
    assert!(reason("b-noid").contains("has no column \"import_id\""));
    assert!(reason("b-status").contains("unknown status \"finished\""));
    assert!(reason("b-bad").contains("a.b.c.d"), "{}", reason("b-bad"));
    // The garbage never stops the good row's check.
    assert_eq!(verdict(&obs, "b-ok").verdict, Verdict::Ok);
    assert_eq!(verdict(&obs, "b-ok").committed_rows, Some(50));
}

#[tokio::test]
async fn daemon_serves_verdicts_on_the_api_the_status_page_and_metrics() {
    let (cluster, db, audit) = setup("api").await;
    let dsn = cluster.dsn(&db);
    let daemon = Daemon::start(&one_target(
        "main",
        &dsn,
        "[targets.imports]\ngrace_period = \"100ms\"",
    ))
    .await;
    let ok = import_correctly(&dsn, &audit, "good.csv", 1_000).await;
    let partial = import_partially(&dsn, &audit, 10_000, 300).await;
    let m = daemon
        .wait_for("the shortfall", crate::support::CEILING, |m| {
            let missing = m.value(
                "pgvigil_import_missing_rows",
                &[("target", "main"), ("table", "public.contacts")],
            )?;
            (missing == 9_700.0).then(|| m.clone())
        })
        .await;
    assert_eq!(
        m.value("pgvigil_import_verdicts", &[("verdict", "shortfall")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("pgvigil_import_verdicts", &[("verdict", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("pgvigil_imports", &[("status", "committed")]),
        Some(2.0)
    );
    assert!(
        m.value("pgvigil_import_checks_total", &[("result", "shortfall")])
            .unwrap()
            >= 1.0
    );
    assert!(
        m.value(
            "pgvigil_import_last_verified_timestamp_seconds",
            &[("table", "public.contacts")]
        )
        .unwrap()
            > 1.6e9
    );
    assert_eq!(m.value("pgvigil_import_audit_tables", &[]), Some(1.0));
    // Import ids never become metric labels.
    assert!(!m.text.contains(&partial));

    let (status, body) = daemon.get("/api/v1/imports").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let imports = json["targets"]["main"]["imports"].as_array().unwrap();
    let v = imports
        .iter()
        .find(|v| v["import_id"] == partial.as_str())
        .unwrap();
    assert_eq!(v["verdict"], "shortfall");
    assert_eq!(v["missing_rows"], 9_700);
    assert_eq!(v["committed_rows"], 300);
    let v = imports
        .iter()
        .find(|v| v["import_id"] == ok.as_str())
        .unwrap();
    assert_eq!(v["verdict"], "ok");

    let (_, page) = daemon.get("/").await;
    assert!(
        page.contains(&partial) && page.contains("shortfall"),
        "{page}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn shipped_ddl_and_least_privilege_role_are_enough() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("grants");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |f: &str| std::fs::read_to_string(root.join("deploy/sql").join(f)).unwrap();
    cluster.psql(&db, CONTACTS);
    cluster.psql(&db, &read("import_audit.sql"));
    cluster.psql(&db, &read("monitoring_role.sql"));
    cluster.psql(&db, "GRANT SELECT ON contacts TO pgvigil");
    let dsn = cluster.dsn(&db);
    let audit = connect(&dsn).await;
    let ok = import_correctly(&dsn, &audit, "good.csv", 700).await;
    let short = import_partially(&dsn, &audit, 700, 70).await;

    let monitoring_dsn = format!(
        "{} user=pgvigil password=change-me",
        dsn.split_whitespace()
            .filter(|kv| !kv.starts_with("user=") && !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut p = Poller::new(&monitoring_dsn, |t| {
        t.imports.grace_period = Duration::ZERO;
        t.tables.exact_count_tables =
            vec![pgvigil::config::QualifiedName::parse("contacts").unwrap()];
    })
    .await;
    p.poll().await;
    let obs = p.poll().await;
    assert_eq!(verdict(&obs, &ok).verdict, Verdict::Ok);
    let v = verdict(&obs, &short);
    assert_eq!(v.verdict, Verdict::Shortfall);
    assert_eq!(v.missing_rows, Some(630));
    let contacts = tables_of(&obs)
        .tables
        .iter()
        .find(|t| t.table == "public.contacts")
        .unwrap();
    assert_eq!(contacts.exact_rows, Some(770));
    // The role cannot write, even by mistake.
    let err = p
        .client
        .batch_execute("INSERT INTO contacts (email) VALUES ('x')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("read-only") || err.code().is_some(),
        "{err}"
    );
}
