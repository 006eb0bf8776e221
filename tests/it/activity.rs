//! Server-side connection gauges from pg_stat_activity.

use std::time::Duration;

use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, connect, one_target};

const WAIT: Duration = crate::support::CEILING;

#[tokio::test]
async fn uncommitted_insert_shows_as_open_transaction_with_writes() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("activity");
    cluster.psql(&db, "CREATE TABLE contacts (id int, email text)");
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), "")).await;

    let app = connect(&format!("{} application_name=importer", cluster.dsn(&db))).await;
    app.batch_execute("BEGIN; INSERT INTO contacts SELECT g, 'x' FROM generate_series(1, 300) g")
        .await
        .unwrap();
    // Wait for what is asserted below (a poll that saw the transaction at least 1s old), not
    // for a fixed time: under load a poll may come later than any sleep.
    let m = daemon
        .wait_for("the open writing transaction, at least 1s old", WAIT, |m| {
            let writing = m.value(
                "pgvigil_transactions_with_writes",
                &[("target", "main"), ("datname", &db)],
            )?;
            let age = m.value(
                "pgvigil_transactions_with_writes_max_age_seconds",
                &[("target", "main")],
            )?;
            let idle = m.value(
                "pgvigil_idle_in_transaction_max_age_seconds",
                &[("target", "main")],
            )?;
            (writing == 1.0 && age >= 1.0 && idle >= 1.0).then(|| m.clone())
        })
        .await;
    let age = m
        .value(
            "pgvigil_transactions_with_writes_max_age_seconds",
            &[("target", "main")],
        )
        .unwrap();
    assert!(age >= 1.0, "writing transaction age {age}");
    let idle = m
        .value(
            "pgvigil_idle_in_transaction_max_age_seconds",
            &[("target", "main")],
        )
        .unwrap();
    assert!(idle >= 1.0, "idle in transaction age {idle}");
    assert!(
        m.value(
            "pgvigil_oldest_transaction_age_seconds",
            &[("target", "main")]
        )
        .unwrap()
            >= age
    );
    // application_name is not allow-listed, so it is exported as "other".
    assert_eq!(
        m.value(
            "pgvigil_connections",
            &[
                ("datname", &db),
                ("state", "idle in transaction"),
                ("application_name", "other")
            ]
        ),
        Some(1.0)
    );
    // pgvigil's own backend is not counted.
    assert_eq!(
        m.sum("pgvigil_connections", &[("application_name", "pgvigil")]),
        0.0
    );

    // The status page names the session. It reads the poll's observations, published apart
    // from its metrics: wait for them too.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, page) = daemon.get("/").await;
        if page.contains("INSERT INTO contacts") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the status page never named the session: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    app.batch_execute("COMMIT").await.unwrap();
    daemon
        .wait_for("the transaction to be gone", WAIT, |m| {
            let none = m
                .value(
                    "pgvigil_transactions_with_writes",
                    &[("target", "main"), ("datname", &db)],
                )
                .is_none();
            let age = m.value(
                "pgvigil_transactions_with_writes_max_age_seconds",
                &[("target", "main")],
            )?;
            (none && age == 0.0).then_some(())
        })
        .await;
    daemon.stop().await;
}

#[tokio::test]
async fn connections_by_state_follow_sessions_and_allow_listed_names() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("states");
    let daemon = Daemon::start(&one_target(
        "main",
        &cluster.dsn(&db),
        "[targets.activity]\napplication_names = [\"billing\"]",
    ))
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&format!("{} application_name=billing", cluster.dsn(&db))).await);
    }
    let reading = connect(&cluster.dsn(&db)).await;
    reading.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let m = daemon
        .wait_for(
            "three idle billing sessions and the open transaction",
            WAIT,
            |m| {
                let idle = m.value(
                    "pgvigil_connections",
                    &[
                        ("datname", &db),
                        ("state", "idle"),
                        ("application_name", "billing"),
                    ],
                )?;
                // A poll taken before the BEGIN reached the server would not show it yet.
                let in_xact = m.sum(
                    "pgvigil_connections",
                    &[("datname", &db), ("state", "idle in transaction")],
                );
                (idle == 3.0 && in_xact == 1.0).then(|| m.clone())
            },
        )
        .await;
    // A read-only transaction is open but holds no writes.
    assert_eq!(
        m.value(
            "pgvigil_connections",
            &[("datname", &db), ("state", "idle in transaction")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("pgvigil_transactions_with_writes", &[("datname", &db)]),
        None
    );
    // Target-wide, so another session's brief write may show; ours would be seconds old.
    let writing_age = m
        .value(
            "pgvigil_transactions_with_writes_max_age_seconds",
            &[("target", "main")],
        )
        .unwrap();
    assert!(
        writing_age < 1.0,
        "a read-only transaction counted as writing: {writing_age}"
    );
    let version = cluster.psql("postgres", "SHOW server_version");
    let version = version.split_whitespace().next().unwrap();
    assert_eq!(
        m.value(
            "pgvigil_postgres_info",
            &[("target", "main"), ("server_version", version)]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    let max = m
        .value("pgvigil_connections_max", &[("target", "main")])
        .unwrap();
    let expected_max: f64 = cluster
        .psql("postgres", "SHOW max_connections")
        .parse()
        .unwrap();
    assert_eq!(max, expected_max);
    let reserved = m
        .value("pgvigil_connections_reserved", &[("target", "main")])
        .unwrap();
    let expected_reserved: f64 = cluster
        .psql(
            "postgres",
            "SELECT sum(setting::int) FROM pg_settings WHERE name IN ('superuser_reserved_connections', 'reserved_connections')",
        )
        .parse()
        .unwrap();
    assert_eq!(reserved, expected_reserved);
    assert!(
        m.value("pgvigil_backends", &[("backend_type", "client backend")])
            .unwrap()
            >= 4.0
    );

    drop(clients);
    daemon
        .wait_for("the billing sessions to go", WAIT, |m| {
            m.value(
                "pgvigil_connections",
                &[("datname", &db), ("application_name", "billing")],
            )
            .is_none()
            .then_some(())
        })
        .await;
    daemon.stop().await;
}

#[tokio::test]
async fn sessions_waiting_on_a_lock_are_counted_by_wait_type() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("waits");
    cluster.psql(&db, "CREATE TABLE t (id int)");
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), "")).await;
    let holder = connect(&cluster.dsn(&db)).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let waiter = connect(&cluster.dsn(&db)).await;
    let blocked = tokio::spawn(async move { waiter.batch_execute("SELECT count(*) FROM t").await });

    daemon
        .wait_for("a session waiting on a Lock", WAIT, |m| {
            let n = m.value(
                "pgvigil_connections_waiting",
                &[("datname", &db), ("wait_event_type", "Lock")],
            )?;
            (n == 1.0).then_some(())
        })
        .await;
    holder.batch_execute("COMMIT").await.unwrap();
    blocked.await.unwrap().unwrap();
    daemon.stop().await;
}
