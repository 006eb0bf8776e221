//! The indexes collector and `pgvigil advise` against real PostgreSQL: an unused index, a
//! duplicate, a prefix-redundant one, a foreign key without an index and an integer column
//! fed by a bigint sequence are each reported (and an index a query used is not), by the
//! command and by the daemon's series; and neither waits behind a migration's ACCESS
//! EXCLUSIVE lock.

use std::process::Command;
use std::time::{Duration, Instant};

use pgvigil_testkit::{TestCluster, wait_until};
use serde_json::Value;

use crate::support::{CEILING, Daemon, connect, http_get, one_target, pgvigil_bin};
use crate::support_alerting::wait_async;

/// Every case of the issue in one schema, and a used index whose scan has reached the
/// statistics (waited for, not slept on).
fn schema(cluster: &TestCluster, db: &str) {
    cluster.psql(
        db,
        "CREATE TABLE parents (id bigint PRIMARY KEY);
         CREATE TABLE children (id int PRIMARY KEY, parent_id bigint REFERENCES parents (id),
                                a int, b int, c int);
         CREATE INDEX children_a_idx ON children (a);
         CREATE INDEX children_b_idx ON children (b);
         CREATE INDEX children_b_copy ON children (b);
         CREATE INDEX children_c_idx ON children (c);
         CREATE INDEX children_c_a_idx ON children (c, a);
         CREATE TABLE contacts (id int, email text);
         CREATE INDEX contacts_email_idx ON contacts (email);
         INSERT INTO contacts SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 1000) g;
         CREATE SEQUENCE big_seq AS bigint;
         CREATE TABLE narrow (id int NOT NULL DEFAULT nextval('big_seq'), note text);
         SELECT setval('big_seq', 2000000000);
         ANALYZE;",
    );
    cluster.psql(
        db,
        "SET enable_seqscan = off; SELECT count(*) FROM contacts WHERE email = 'user7@example.com'",
    );
    wait_until(
        "the email index's scan in pg_stat_user_indexes",
        Duration::from_secs(30),
        || {
            let scans = cluster.psql(
            db,
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'contacts_email_idx'",
        );
            (scans.trim().parse::<i64>().ok()? > 0).then_some(())
        },
    );
}

const SETTINGS: &str =
    "[targets.indexes]\nunused_min_window = \"0s\"\nfk_min_table_bytes = 0\ninterval = \"1s\"\n";

fn objects(findings: &[Value], check: &str) -> Vec<String> {
    let mut out: Vec<String> = findings
        .iter()
        .filter(|f| f["check"] == check)
        .map(|f| f["object"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn advise_reports_each_case_with_its_fix_and_not_the_used_index() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("advise");
    schema(&cluster, &db);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgvigil.toml");
    std::fs::write(&config, one_target("main", &cluster.dsn(&db), SETTINGS)).unwrap();
    let out = Command::new(pgvigil_bin())
        .args(["advise", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let database = &report["targets"][0]["databases"][0];
    assert_eq!(database["database"], db.as_str(), "{stdout}");
    assert_eq!(database["errors"], Value::Array(vec![]), "{stdout}");
    let findings = database["findings"].as_array().unwrap();

    let unused = objects(findings, "unused_index");
    assert!(
        unused.contains(&"public.children_a_idx".to_owned()),
        "{unused:?}"
    );
    assert!(
        !unused.contains(&"public.contacts_email_idx".to_owned()),
        "{unused:?}"
    );
    assert!(!unused.iter().any(|i| i.ends_with("_pkey")), "{unused:?}");
    assert_eq!(
        objects(findings, "duplicate_index"),
        ["public.children_b_copy", "public.children_c_idx"],
        "{stdout}"
    );
    assert_eq!(
        objects(findings, "fk_without_index"),
        ["public.children.children_parent_id_fkey"]
    );
    let fk = findings
        .iter()
        .find(|f| f["check"] == "fk_without_index")
        .unwrap();
    assert_eq!(
        fk["fix"],
        "CREATE INDEX CONCURRENTLY ON public.children (parent_id);"
    );
    let seq = findings
        .iter()
        .find(|f| f["check"] == "sequence_exhaustion" && f["object"] == "public.big_seq")
        .unwrap_or_else(|| panic!("no finding for big_seq: {stdout}"));
    assert_eq!(seq["severity"], "critical");
    let message = seq["message"].as_str().unwrap();
    assert!(message.contains("2147483647"), "{message}");
    assert!(
        seq["fix"]
            .as_str()
            .unwrap()
            .starts_with("ALTER TABLE public.narrow ALTER COLUMN id TYPE bigint"),
        "{seq}"
    );

    // The same report as text, grouped by severity with the fixes.
    let text = Command::new(pgvigil_bin())
        .args(["advise", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let critical = text.find("CRITICAL:").expect("a critical group");
    let info = text.find("INFO:").expect("an info group");
    assert!(critical < info, "{text}");
    assert!(
        text.contains("fix: DROP INDEX CONCURRENTLY public.children_a_idx;"),
        "{text}"
    );
}

#[test]
fn advise_on_a_dsn_nobody_answers_exits_2_naming_the_connection() {
    let out = Command::new(pgvigil_bin())
        .args([
            "advise",
            "host=127.0.0.1 port=1 user=nobody dbname=app connect_timeout=2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to nobody@127.0.0.1:1/app"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_collector_exports_findings_and_is_not_stopped_by_a_migration_lock() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("indexes");
    schema(&cluster, &db);
    let dsn = cluster.dsn(&db);
    let daemon = Daemon::start(&one_target("main", &dsn, SETTINGS)).await;
    let labels = [("target", "main"), ("datname", db.as_str())];
    let m = daemon
        .wait_for(
            "the indexes collector's series",
            Duration::from_secs(60),
            |m| {
                m.value(
                    "pgvigil_sequence_used_ratio",
                    &[
                        ("target", "main"),
                        ("sequence", "public.big_seq"),
                        ("column", "public.narrow.id"),
                    ],
                )
                .filter(|r| *r > 0.9)
                .map(|_| m.clone())
            },
        )
        .await;
    let kinds: Vec<String> = m
        .matching("pgvigil_index_redundant_bytes", &labels)
        .map(|(l, _)| format!("{} {}", l["index"], l["kind"]))
        .collect();
    assert!(
        kinds.contains(&"public.children_c_idx prefix".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"public.children_b_copy duplicate".to_owned()),
        "{kinds:?}"
    );
    assert!(
        m.value(
            "pgvigil_foreign_key_unindexed_bytes",
            &[
                ("constraint", "children_parent_id_fkey"),
                ("table", "public.children")
            ]
        )
        .is_some()
    );
    assert!(
        m.value(
            "pgvigil_index_unused_bytes",
            &[("index", "public.contacts_email_idx")]
        )
        .is_none()
    );
    assert_eq!(
        m.value(
            "pgvigil_index_findings",
            &[("datname", db.as_str()), ("check", "fk_without_index")]
        ),
        Some(1.0)
    );

    // The same findings on /api/v1/findings and on the target's status page. A visit publishes
    // each collector's series as it finishes and the database's report once every collector
    // has run (advice comes after indexes): wait for the report, not only for the series.
    let addr = daemon.addr;
    let listed = wait_async(
        "the database's findings on /api/v1/findings",
        CEILING,
        || {
            let db = db.clone();
            async move {
                let (status, body) = http_get(addr, "/api/v1/findings", None).await;
                assert_eq!(status, 200, "{body}");
                let api: Value = serde_json::from_str(&body).unwrap();
                api["targets"]["main"][db.as_str()].as_array().cloned()
            }
        },
    )
    .await;
    assert_eq!(
        objects(&listed, "fk_without_index"),
        ["public.children.children_parent_id_fkey"],
        "{listed:?}"
    );
    let (status, page) = http_get(daemon.addr, "/targets/main", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("Schema guard findings"), "{page}");
    assert!(
        page.contains("CREATE INDEX CONCURRENTLY ON public.children (parent_id);"),
        "{page}"
    );

    // A migration holds ACCESS EXCLUSIVE on children (and on contacts, whose index a
    // rewrite would touch): the collector still completes runs, and so do the others.
    let holder = connect(&dsn).await;
    holder
        .batch_execute(
            "BEGIN; LOCK TABLE children IN ACCESS EXCLUSIVE MODE; LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .unwrap();
    let polls = |m: &crate::support::Metrics, collector: &str| {
        m.sum(
            "pgvigil_poll_duration_seconds_count",
            &[("target", "main"), ("collector", collector)],
        )
    };
    let before = daemon.metrics().await;
    let locked_at = Instant::now();
    let after = daemon
        .wait_for(
            "two runs of indexes and tables under the lock",
            Duration::from_secs(30),
            |m| {
                (polls(m, "indexes") >= polls(&before, "indexes") + 2.0
                    && polls(m, "tables") >= polls(&before, "tables") + 2.0)
                    .then(|| m.clone())
            },
        )
        .await;
    assert!(locked_at.elapsed() < Duration::from_secs(30));
    let errors = |m: &crate::support::Metrics| {
        m.sum(
            "pgvigil_poll_errors_total",
            &[("target", "main"), ("collector", "indexes")],
        )
    };
    assert_eq!(
        errors(&after),
        errors(&before),
        "the lock made the indexes collector fail"
    );
    assert!(
        after
            .value(
                "pgvigil_foreign_key_unindexed_bytes",
                &[("constraint", "children_parent_id_fkey")]
            )
            .is_some()
    );

    // pgvigil advise under the same lock finishes within its timeouts and reports the same.
    let text = one_target(
        "main",
        &dsn,
        &format!("lock_timeout = \"500ms\"\n{SETTINGS}"),
    );
    let config = pgvigil::Config::parse(
        std::path::Path::new("t.toml"),
        &text,
        &pgvigil::config::LibpqEnv::default(),
    )
    .unwrap();
    let target = config.targets[0].clone();
    let started = Instant::now();
    let advice = pgvigil::advice::report::advise(std::slice::from_ref(&target)).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let database = &advice.targets[0].databases[0];
    assert!(database.errors.is_empty(), "{:?}", database.errors);
    assert!(
        database
            .findings
            .iter()
            .any(|f| f.check == "fk_without_index")
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
}
