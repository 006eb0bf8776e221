//! LockQueue: a migration-style `ALTER TABLE contacts ADD COLUMN ...` queued behind a session
//! idle in a transaction, with 5 readers queued behind the ALTER. With the locks collector at
//! its default fast interval (5 s), LockQueue fires within 10 s of the queue forming, naming
//! the blocker's pid, state and age and the 5 queued sessions; the blocking-chain series, the
//! status page's tree and `/api/v1/locks` show the same chain; it resolves when the blocker
//! ends.

use std::time::{Duration, Instant};

use pgvigil_testkit::TestCluster;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::support::{Daemon, connect, one_target};
use crate::support_alerting::{api_active, wait_async};

/// Generous: two loaded cores, several clusters at once.
const WAIT: Duration = Duration::from_secs(30);

/// The bound: the alert fires within this long of the queue forming.
const FIRE_WITHIN: Duration = Duration::from_secs(10);

/// Readers queued behind the ALTER TABLE.
const READERS: usize = 5;

/// The queued `ALTER TABLE contacts` (see [`start_migration`]).
type Migration = JoinHandle<Result<(), tokio_postgres::Error>>;
/// A queued reader of contacts (see [`queue_readers`]).
type Reader = JoinHandle<Result<tokio_postgres::Row, tokio_postgres::Error>>;

#[tokio::test]
async fn a_migration_queued_behind_an_idle_transaction_with_readers_behind_it_fires_lock_queue() {
    let cluster = TestCluster::start_version(18);
    let db = cluster.create_database("queue");
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id int); INSERT INTO contacts VALUES (1);",
    );
    let dsn = cluster.dsn(&db);
    // The locks collector at its default interval (the target polls every 200 ms otherwise);
    // the DDL must have waited 2 s, so one fast poll after that sees it.
    let extra =
        "[targets.locks]\ninterval = \"5s\"\n[targets.alerts.LockQueue]\nmin_wait = \"2s\"\n";
    let daemon = Daemon::start(&one_target("main", &dsn, extra)).await;
    daemon
        .wait_for("a first poll of the locks collector", WAIT, |m| {
            m.value("pgvigil_lock_chain_max_depth", &[("target", "main")])
        })
        .await;

    let idle = connect(&format!("{dsn} application_name=importer")).await;
    let idle_pid: i32 = idle
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    idle.batch_execute("BEGIN; SELECT * FROM contacts")
        .await
        .unwrap();
    let watcher = connect(&dsn).await;
    let alter = start_migration(&dsn, &watcher).await;
    let readers = queue_readers(&dsn, &watcher, READERS).await;
    let queued = Instant::now();

    let labels = [
        ("alertname", "LockQueue"),
        ("datname", db.as_str()),
        ("relation", "contacts"),
    ];
    let alert = wait_async("LockQueue firing", FIRE_WITHIN, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    eprintln!(
        "LockQueue fired {:?} after the queue formed",
        queued.elapsed()
    );
    let ann = |key: &str| {
        alert["annotations"][key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(ann("queued"), READERS.to_string(), "{alert:#}");
    assert_eq!(ann("blocker_pid"), idle_pid.to_string(), "{alert:#}");
    assert_eq!(ann("blocker_state"), "idle in transaction", "{alert:#}");
    assert_eq!(ann("blocker_application_name"), "importer", "{alert:#}");
    let age: f64 = ann("blocker_transaction_age_seconds").parse().unwrap();
    assert!(
        age >= 2.0,
        "the idle transaction is older than the DDL's wait: {alert:#}"
    );
    assert_eq!(ann("mode"), "AccessExclusiveLock", "{alert:#}");
    assert!(ann("query").contains("ALTER TABLE contacts"), "{alert:#}");
    assert!(
        ann("fix").contains(&format!("pg_terminate_backend({idle_pid})"))
            && ann("fix").contains("lock_timeout"),
        "{alert:#}"
    );
    assert!(
        ann("description").contains(&format!("{READERS} session(s) queue behind it")),
        "{alert:#}"
    );

    // The same chain as series: 6 blocked, 5 behind the DDL, two levels deep.
    let m = daemon
        .wait_for("the chain series", WAIT, |m| {
            let queue = m.value(
                "pgvigil_lock_queue_sessions",
                &[("target", "main"), ("datname", db.as_str())],
            )?;
            (queue == READERS as f64).then(|| m.clone())
        })
        .await;
    let per_db = |name: &str| m.value(name, &[("target", "main"), ("datname", db.as_str())]);
    assert_eq!(
        per_db("pgvigil_lock_blocked_sessions"),
        Some((READERS + 1) as f64)
    );
    assert!(per_db("pgvigil_lock_blocked_max_wait_seconds").unwrap() >= 2.0);
    assert!(per_db("pgvigil_lock_root_blocker_age_seconds").unwrap() >= 2.0);
    assert_eq!(
        m.value("pgvigil_lock_chain_max_depth", &[("target", "main")]),
        Some(2.0)
    );

    // The API's forest is headed by the idle session, with the 6 waiters behind it.
    let (status, body) = daemon.get("/api/v1/locks").await;
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    let root = &api["targets"]["main"]["chains"][0];
    assert_eq!(root["pid"], idle_pid, "{api:#}");
    assert_eq!(root["behind"], READERS + 1, "{api:#}");
    assert_eq!(root["children"][0]["behind"], READERS, "{api:#}");
    // The status page draws the tree.
    let (status, page) = daemon.get("/targets/main").await;
    assert_eq!(status, 200);
    assert!(page.contains("Blocked sessions"), "{page}");
    assert!(page.contains(&format!("pid {idle_pid}")), "{page}");
    assert!(
        page.contains("ALTER TABLE contacts ADD COLUMN email text"),
        "{page}"
    );

    // The idle session ends: the ALTER TABLE and the readers run, the alert resolves.
    idle.batch_execute("COMMIT").await.unwrap();
    queue_runs(alter, readers).await;
    lock_queue_resolves(&daemon, &labels).await;
    daemon.stop().await;
}

/// The number of backends waiting for a lock on `contacts`.
async fn waiting_on_contacts(watcher: &tokio_postgres::Client) -> usize {
    let n: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'contacts'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    n as usize
}

/// `ALTER TABLE contacts` started on its own session, waiting once `watcher` sees it wait.
async fn start_migration(dsn: &str, watcher: &tokio_postgres::Client) -> Migration {
    let migration = connect(&format!("{dsn} application_name=migration")).await;
    let alter = tokio::spawn(async move {
        migration
            .batch_execute("ALTER TABLE contacts ADD COLUMN email text")
            .await
    });
    wait_async("the ALTER TABLE waiting", WAIT, || async {
        (waiting_on_contacts(watcher).await == 1).then_some(())
    })
    .await;
    alter
}

/// `n` readers of contacts, each on its own session, queued once `watcher` sees them wait.
async fn queue_readers(dsn: &str, watcher: &tokio_postgres::Client, n: usize) -> Vec<Reader> {
    let mut readers = Vec::new();
    for _ in 0..n {
        let reader = connect(&format!("{dsn} application_name=reader")).await;
        readers.push(tokio::spawn(async move {
            reader.query_one("SELECT count(*) FROM contacts", &[]).await
        }));
    }
    wait_async(
        "the readers queued behind the ALTER TABLE",
        WAIT,
        || async { (waiting_on_contacts(watcher).await == n + 1).then_some(()) },
    )
    .await;
    readers
}

/// Once the blocker is gone: the ALTER TABLE and every reader behind it finish.
async fn queue_runs(alter: Migration, readers: Vec<Reader>) {
    alter.await.unwrap().unwrap();
    for r in readers {
        r.await.unwrap().unwrap();
    }
}

/// Waits until the LockQueue alert with `labels` is no longer firing.
async fn lock_queue_resolves(daemon: &Daemon, labels: &[(&str, &str)]) {
    wait_async("LockQueue resolved", WAIT, || async {
        api_active(daemon, "firing", labels)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_queue_longer_than_the_examined_waiters_is_counted_exactly() {
    // 12 readers behind the ALTER: 13 waiters, of which the collector examines 10.
    const LONG: usize = 12;
    let cluster = TestCluster::start();
    let db = cluster.create_database("longqueue");
    cluster.psql(&db, "CREATE TABLE contacts (id int);");
    let dsn = cluster.dsn(&db);
    let extra =
        "[targets.locks]\ninterval = \"1s\"\n[targets.alerts.LockQueue]\nmin_wait = \"1s\"\n";
    let daemon = Daemon::start(&one_target("main", &dsn, extra)).await;
    let idle = connect(&dsn).await;
    idle.batch_execute("BEGIN; SELECT * FROM contacts")
        .await
        .unwrap();
    let watcher = connect(&dsn).await;
    let alter = start_migration(&dsn, &watcher).await;
    let readers = queue_readers(&dsn, &watcher, LONG).await;
    let labels = [("alertname", "LockQueue"), ("datname", db.as_str())];
    // Fires once 3 are behind, and the count grows as the poll sees more: wait for the whole
    // queue, then check that it is said as such.
    let whole = LONG.to_string();
    let alert = wait_async("LockQueue with the whole queue", WAIT, || async {
        let alert = api_active(&daemon, "firing", &labels).await?;
        (alert["annotations"]["queued"] == whole.as_str()).then_some(alert)
    })
    .await;
    let description = alert["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains(&format!(" {LONG} session(s) queue behind it"))
            && !description.contains("at least"),
        "{alert:#}"
    );
    assert_eq!(
        alert["annotations"]["waiting_backends"],
        (LONG + 1).to_string(),
        "{alert:#}"
    );
    let m = daemon.metrics().await;
    let per_db = |name: &str| m.value(name, &[("target", "main"), ("datname", db.as_str())]);
    assert_eq!(per_db("pgvigil_lock_queue_sessions"), Some(LONG as f64));
    assert_eq!(
        per_db("pgvigil_lock_blocked_sessions"),
        Some((LONG + 1) as f64)
    );
    idle.batch_execute("COMMIT").await.unwrap();
    queue_runs(alter, readers).await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_prepared_transaction_at_the_head_is_named_by_its_gid_with_its_age_and_fix() {
    let cluster = TestCluster::builder()
        .setting("max_prepared_transactions", "5")
        .start();
    let db = cluster.create_database("prepared");
    cluster.psql(&db, "CREATE TABLE contacts (id int);");
    let dsn = cluster.dsn(&db);
    let extra =
        "[targets.locks]\ninterval = \"1s\"\n[targets.alerts.LockQueue]\nmin_wait = \"1s\"\n";
    let daemon = Daemon::start(&one_target("main", &dsn, extra)).await;
    // A two-phase commit left prepared: it holds its ACCESS SHARE lock with no session.
    let twophase = connect(&dsn).await;
    twophase
        .batch_execute("BEGIN; SELECT * FROM contacts; PREPARE TRANSACTION 'deploy-7'")
        .await
        .unwrap();
    let watcher = connect(&dsn).await;
    let alter = start_migration(&dsn, &watcher).await;
    let readers = queue_readers(&dsn, &watcher, 3).await;
    let labels = [("alertname", "LockQueue"), ("datname", db.as_str())];
    let alert = wait_async(
        "LockQueue behind the prepared transaction",
        WAIT,
        || async { api_active(&daemon, "firing", &labels).await },
    )
    .await;
    let ann = |key: &str| alert["annotations"][key].as_str().unwrap_or_default();
    assert_eq!(ann("blocker_pid"), "0", "{alert:#}");
    assert_eq!(ann("blocker_state"), "prepared", "{alert:#}");
    assert_eq!(ann("blocker_gid"), "deploy-7", "{alert:#}");
    assert_eq!(ann("queued"), "3", "{alert:#}");
    let age: f64 = ann("blocker_transaction_age_seconds").parse().unwrap();
    assert!(age >= 1.0, "prepared before the DDL waited 1 s: {alert:#}");
    assert!(
        ann("fix").contains("COMMIT PREPARED 'deploy-7'; or ROLLBACK PREPARED 'deploy-7';"),
        "{alert:#}"
    );
    assert!(
        ann("description").contains(&format!(
            "prepared transaction 'deploy-7' (pid 0: no session; owner {}, database {db}",
            cluster.superuser()
        )),
        "{alert:#}"
    );
    let m = daemon.metrics().await;
    let root_age = m
        .value(
            "pgvigil_lock_root_blocker_age_seconds",
            &[("target", "main"), ("datname", db.as_str())],
        )
        .expect("the prepared transaction's age as the root blocker's");
    assert!(root_age >= 1.0, "{root_age}");

    // The fix the alert names ends the queue.
    watcher
        .batch_execute("ROLLBACK PREPARED 'deploy-7'")
        .await
        .unwrap();
    queue_runs(alter, readers).await;
    lock_queue_resolves(&daemon, &labels).await;
    daemon.stop().await;
}
