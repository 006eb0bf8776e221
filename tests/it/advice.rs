//! Missing-index advice and lints against real PostgreSQL with pg_stat_statements: the advice
//! names `email` once the index on it is dropped and nothing while it exists, `SELECT *` is
//! linted, a run is lock-safe, and the daemon exports and alerts it (IndexSuggested, shown in
//! the API but not sent to a receiver).

use std::time::Duration;

use pgvigil::advice::Finding;
use pgvigil::collect::advice::{NOT_INSTALLED, findings};
use pgvigil::config::AdviceConfig;
use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, connect, one_target, pgvigil_bin};
use crate::support_alerting::{WebhookReceiver, api_active, wait_async};

const WAIT: Duration = Duration::from_secs(60);
const LOOKUP: &str = "SELECT id, name FROM contacts WHERE email = $1";

fn config() -> AdviceConfig {
    AdviceConfig {
        min_table_rows: 1000,
        min_seq_scans: 20,
        ..AdviceConfig::default()
    }
}

/// A database with 5,000 contacts and an index on email.
fn contacts(cluster: &TestCluster) -> String {
    contacts_named(cluster, "advice")
}

/// [`contacts`] in a database whose name starts with `prefix`.
fn contacts_named(cluster: &TestCluster, prefix: &str) -> String {
    let db = cluster.create_database(prefix);
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id serial PRIMARY KEY, email text NOT NULL, name text);
         INSERT INTO contacts (email, name)
              SELECT 'c' || i || '@example.com', 'name ' || i FROM generate_series(1, 5000) i;
         CREATE INDEX contacts_email_idx ON contacts (email);
         ANALYZE contacts;",
    );
    db
}

/// Look contacts up by email, and scan the table (a `LIKE` no b-tree serves), `n` times.
async fn workload(client: &tokio_postgres::Client, n: usize) {
    for i in 0..n {
        let email = format!("c{}@example.com", i % 5000 + 1);
        client.query(LOOKUP, &[&email]).await.unwrap();
        client
            .query("SELECT count(*) FROM contacts WHERE name LIKE '%7'", &[])
            .await
            .unwrap();
    }
}

async fn seq_scans(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'contacts'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn monitor(dsn: &str) -> tokio_postgres::Client {
    let client = connect(dsn).await;
    client
        .batch_execute("SET statement_timeout = '5s'; SET lock_timeout = '1s'")
        .await
        .unwrap();
    client
}

fn email_suggestion(found: &[Finding]) -> Option<Finding> {
    found
        .iter()
        .find(|f| f.check == "missing_index" && f.object == "public.contacts")
        .cloned()
}

#[tokio::test]
async fn advice_names_email_once_its_index_is_dropped_and_nothing_while_it_exists() {
    let cluster = TestCluster::start();
    let db = contacts(&cluster);
    let dsn = cluster.dsn(&db);
    let app = connect(&dsn).await;
    let pgvigil = monitor(&dsn).await;
    workload(&app, 100).await;
    // The table is scanned often enough to qualify: only the index stands in the way.
    wait_async("the scans of contacts in the statistics", WAIT, || async {
        (seq_scans(&pgvigil).await >= 100).then_some(())
    })
    .await;
    let found = findings(&pgvigil, &db, &config()).await.unwrap();
    assert!(
        found.iter().all(|f| f.check != "missing_index"),
        "nothing is missing while the index exists: {found:#?}"
    );

    cluster.psql(&db, "DROP INDEX contacts_email_idx");
    workload(&app, 100).await;
    let finding = wait_async("the email suggestion", WAIT, || async {
        email_suggestion(&findings(&pgvigil, &db, &config()).await.unwrap())
    })
    .await;
    assert_eq!(
        finding.fix.as_deref(),
        Some("CREATE INDEX CONCURRENTLY ON public.contacts (email);")
    );
    assert!(
        finding
            .message
            .contains("filters public.contacts by email; no index starts with email"),
        "{}",
        finding.message
    );
    assert_eq!(finding.database, db);
    let suggestions: Vec<_> = findings(&pgvigil, &db, &config())
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.check == "missing_index")
        .collect();
    assert_eq!(suggestions.len(), 1, "only email: {suggestions:#?}");
}

#[tokio::test]
async fn select_star_is_linted() {
    let cluster = TestCluster::start();
    let db = contacts(&cluster);
    let dsn = cluster.dsn(&db);
    let app = connect(&dsn).await;
    for id in 1..20 {
        app.query("SELECT * FROM contacts WHERE id = $1", &[&id])
            .await
            .unwrap();
    }
    let pgvigil = monitor(&dsn).await;
    let found = findings(&pgvigil, &db, &config()).await.unwrap();
    let star: Vec<_> = found.iter().filter(|f| f.check == "select_star").collect();
    assert_eq!(star.len(), 1, "{found:#?}");
    assert!(star[0].message.contains("selects *"), "{}", star[0].message);
    assert!(found.iter().all(|f| f.check != "unbounded_select"));
}

#[tokio::test]
async fn a_run_does_not_queue_behind_an_access_exclusive_lock() {
    let cluster = TestCluster::start();
    let db = contacts(&cluster);
    let dsn = cluster.dsn(&db);
    let app = connect(&dsn).await;
    cluster.psql(&db, "DROP INDEX contacts_email_idx");
    workload(&app, 100).await;
    let pgvigil = monitor(&dsn).await;
    wait_async("the email suggestion", WAIT, || async {
        email_suggestion(&findings(&pgvigil, &db, &config()).await.unwrap())
    })
    .await;
    // A migration holds ACCESS EXCLUSIVE on the table for the rest of the test.
    let migration = connect(&dsn).await;
    migration
        .batch_execute("BEGIN; LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let run = tokio::time::timeout(Duration::from_secs(10), findings(&pgvigil, &db, &config()))
        .await
        .expect("the run finishes under its timeouts")
        .expect("and succeeds: it takes no lock on the table");
    assert!(
        email_suggestion(&run).is_some(),
        "the advice still stands: {run:#?}"
    );
    migration.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn the_daemon_exports_the_suggestion_and_shows_index_suggested_without_notifying() {
    let cluster = TestCluster::start();
    let db = contacts(&cluster);
    let dsn = cluster.dsn(&db);
    cluster.psql(&db, "DROP INDEX contacts_email_idx");
    let app = connect(&dsn).await;
    workload(&app, 100).await;
    let receiver = WebhookReceiver::start().await;
    let daemon = Daemon::start(&format!(
        "[alerts]\nresend_interval = \"1s\"\n[[alerts.webhook]]\nurl = \"{}\"\n\
         [alerts.rules.ConnectionsNearLimit]\nwarning_ratio = 0.001\ncritical_ratio = 0.001\nfor = \"0s\"\n{}",
        receiver.url(),
        one_target(
            "main",
            &dsn,
            "[targets.advice]\ninterval = \"1s\"\nmin_table_rows = 1000\nmin_seq_scans = 20\n[targets.tables]\ninterval = \"1s\"\n"
        )
    ))
    .await;
    let labels = [
        ("datname", db.as_str()),
        ("table", "public.contacts"),
        ("columns", "email"),
    ];
    daemon
        .wait_for("pgvigil_index_suggestion_info for email", WAIT, |m| {
            (m.value("pgvigil_index_suggestion_info", &labels) == Some(1.0)).then_some(())
        })
        .await;
    let alert = wait_async("IndexSuggested in the API", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[("alertname", "IndexSuggested"), ("columns", "email")],
        )
        .await
    })
    .await;
    assert_eq!(alert["labels"]["severity"], "info");
    // The receiver is live: a notified alert (ConnectionsNearLimit, made to fire) is re-sent
    // every second through the same queue, so two more of its notifications after
    // IndexSuggested fired mean IndexSuggested's turn has passed.
    let before = receiver.bodies().len();
    wait_async("two later notifications", WAIT, || async {
        (receiver.bodies().len() >= before + 2).then_some(())
    })
    .await;
    assert!(
        !receiver
            .alerts("firing", &[("alertname", "ConnectionsNearLimit")])
            .is_empty()
    );
    assert!(
        receiver
            .alerts("firing", &[("alertname", "IndexSuggested")])
            .is_empty(),
        "IndexSuggested is quiet by default"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_database_without_pg_stat_statements_is_not_applicable_not_an_error() {
    let cluster = TestCluster::start();
    let prefix = format!("na{}_", std::process::id());
    let with = contacts_named(&cluster, &format!("{prefix}with"));
    let without = cluster.create_database_without_extensions(&format!("{prefix}without"));
    cluster.psql(&with, "DROP INDEX contacts_email_idx");
    let app = connect(&cluster.dsn(&with)).await;
    workload(&app, 100).await;
    // The advice's only run of the hour must see the scans: wait until they are counted.
    wait_async("the scans of contacts in the statistics", WAIT, || async {
        (seq_scans(&app).await >= 100).then_some(())
    })
    .await;
    let config = format!(
        "[[targets]]\nname = \"main\"\ndsn = \"{}\"\npoll_interval = \"200ms\"\n\
         reconnect_max_backoff = \"1s\"\n\
         [targets.databases]\ninclude = [\"{prefix}*\"]\nrefresh_interval = \"500ms\"\n\
         [targets.advice]\ninterval = \"1h\"\ntop_statements = 500\nmin_table_rows = 1000\nmin_seq_scans = 20\n\
         [targets.tables]\ninterval = \"1s\"\n",
        cluster.dsn(&with)
    );
    let daemon = Daemon::start(&config).await;
    // Advice still works where the extension is: its first run (the only one within the
    // hour, republished at every visit) counts the scans since the statistics were reset.
    daemon
        .wait_for(
            "the email suggestion in the database with the extension",
            WAIT,
            |m| {
                let labels = [("datname", with.as_str()), ("columns", "email")];
                (m.value("pgvigil_index_suggestion_info", &labels) == Some(1.0)).then_some(())
            },
        )
        .await;
    // In the other one it does not apply: said so per database and per collector.
    let target = daemon
        .wait_for_target(
            "main",
            "advice not applicable in the other database",
            WAIT,
            |t| {
                let reason = t["databases"][&without]["not_applicable"]["advice"].as_str()?;
                let summary = t["collectors"]["advice"]["not_applicable"].as_str()?;
                (reason.starts_with("not applicable: pg_stat_statements is not installed")
                    && summary.contains(&without))
                .then(|| t.clone())
            },
        )
        .await;
    assert_eq!(
        target["collectors"]["advice"]["not_applicable"],
        format!("not applicable in {without}: {NOT_INSTALLED}"),
        "{target}"
    );
    assert!(
        target["databases"][&with]["not_applicable"]
            .as_object()
            .is_some_and(|m| m.is_empty()),
        "{target}"
    );
    // None of that is an error: no last_error anywhere, no error counted for advice.
    assert!(target["last_error"].is_null(), "{target}");
    assert!(
        target["collectors"]["advice"]["last_error"].is_null(),
        "{target}"
    );
    assert!(
        target["databases"][&without]["last_error"].is_null(),
        "{target}"
    );
    // The status page's collector table says where it does not apply, not as an error.
    let (status, page) = daemon.get("/targets/main").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "not applicable in {without}: pg_stat_statements is not installed"
        )),
        "{page}"
    );
    // And its databases table, on the database's row.
    assert!(
        page.contains("advice: not applicable: pg_stat_statements is not installed"),
        "{page}"
    );
    let m = daemon.metrics().await;
    assert_eq!(
        m.sum("pgvigil_poll_errors_total", &[("collector", "advice")]),
        0.0,
        "{}",
        m.text
    );
    daemon.stop().await;

    // pgvigil advise says the same, in a line of its own, and exits 0.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgvigil.toml");
    std::fs::write(&file, &config).unwrap();
    let out = std::process::Command::new(pgvigil_bin())
        .args(["advise", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let section = &text[text
        .find(&format!("database {without}"))
        .expect("its section")..];
    let line = section
        .lines()
        .find(|l| l.contains("advice"))
        .unwrap_or_default();
    assert_eq!(
        line.trim(),
        format!("advice not applicable: {NOT_INSTALLED}"),
        "{text}"
    );
    assert!(!text.contains("advice failed"), "{text}");
}
