//! The health of pgvigil's own sessions (issue #16, defects 3 to 6): "up" means the polls
//! work, a session a failure left in a transaction is reset, a terminated backend is counted
//! and logged, a connect is bounded by `connect_timeout`, and shutdown cancels what runs.

use std::time::Duration;

use pgvigil::collect::session::{Settled, settle};
use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, connect, one_target};

const WAIT: Duration = crate::support::CEILING;

/// Only the activity collector, so that revoking its view makes every collector fail: every
/// other collector of the registry switched off (a collector added later is too).
fn activity_only() -> String {
    pgvigil::collect::registry::POSTGRES
        .iter()
        .filter(|spec| spec.name != "activity")
        .map(|spec| format!("[targets.{}]\nenabled = false\n", spec.table))
        .collect()
}

#[tokio::test]
async fn a_target_whose_every_collector_fails_is_down_and_recovers_alone() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("blind");
    let role = format!("blind_{}", std::process::id());
    // The view's ACL is per database: this one only.
    cluster.psql(
        &db,
        &format!(
            "CREATE ROLE {role} LOGIN; REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC"
        ),
    );
    let dsn = format!("{} user={role}", cluster.dsn(&db));
    let daemon = Daemon::start(&one_target("main", &dsn, &activity_only())).await;
    // The session opens (the connect queries need no grant), the one collector fails.
    let target = daemon
        .wait_for_target("main", "the failed poll in the API", WAIT, |t| {
            let error = t["last_error"].as_str()?;
            error.contains("every collector failed").then(|| t.clone())
        })
        .await;
    assert_eq!(target["state"], "down", "{target}");
    let error = target["last_error"].as_str().unwrap();
    assert!(
        error.contains("activity") && error.contains("42501"),
        "the error names the collector and the server's reason: {error}"
    );
    let m = daemon.metrics().await;
    assert_eq!(m.value("pgvigil_up", &[("target", "main")]), Some(0.0));
    assert!(
        m.value("pgvigil_connections_max", &[("target", "main")])
            .is_none(),
        "nothing of the failed collector is published"
    );

    // Granted again: back up alone, with the collector's series.
    cluster.psql(&db, "GRANT SELECT ON pg_catalog.pg_stat_activity TO PUBLIC");
    daemon
        .wait_for("up 1 with the activity series", WAIT, |m| {
            (m.value("pgvigil_up", &[("target", "main")])? == 1.0
                && m.value("pgvigil_connections_max", &[("target", "main")])
                    .is_some())
            .then_some(())
        })
        .await;
    daemon
        .wait_for_target("main", "up in the API", WAIT, |t| {
            (t["state"] == "up").then_some(())
        })
        .await;
    daemon.stop().await;
    cluster.psql(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

#[tokio::test]
async fn a_session_left_in_a_transaction_is_settled() {
    let cluster = TestCluster::start();
    let client = connect(&cluster.dsn("postgres")).await;
    assert_eq!(settle(&client).await.unwrap(), Settled::Clean);

    client.batch_execute("BEGIN").await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(
        settle(&client).await.unwrap(),
        Settled::EndedOpenTransaction
    );
    // Outside a block again: a second settle finds nothing, and a query runs.
    assert_eq!(settle(&client).await.unwrap(), Settled::Clean);

    client.batch_execute("BEGIN").await.unwrap();
    let failed = client.query_one("SELECT 1 / 0", &[]).await.unwrap_err();
    assert!(failed.as_db_error().is_some(), "{failed}");
    let aborted = client.query_one("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(
        aborted.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    assert_eq!(
        settle(&client).await.unwrap(),
        Settled::EndedAbortedTransaction
    );
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// pgvigil's backends on `db`, as the server lists them.
async fn pgvigil_backends(client: &tokio_postgres::Client, db: &str) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgvigil' AND datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_terminated_backend_is_counted_by_reason_and_reopened() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("terminated");
    let admin = connect(&cluster.dsn("postgres")).await;
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), &activity_only())).await;
    daemon
        .wait_for("up 1", WAIT, |m| {
            (m.value("pgvigil_up", &[("target", "main")])? == 1.0).then_some(())
        })
        .await;
    // The main session, and the database session beside it (the budget is 2).
    let before = pgvigil_backends(&admin, &db).await;
    assert!(
        (1..=2).contains(&before.len()),
        "within the budget: {before:?}"
    );
    // Each is terminated while idle: a backend terminated in the middle of a query hands its
    // FATAL 57P01 to that query, not to the connection, and the loss is then counted as
    // `closed` (a known limit of how the reason is read; see the closing note of issue 16).
    for pid in &before {
        crate::support_alerting::wait_async("the session idle, then terminated", WAIT, || async {
            admin
                .query_one(
                    "SELECT coalesce((SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE pid = $1 AND state = 'idle'), false)",
                    &[pid],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
                .then_some(())
        })
        .await;
    }
    let loss = [
        ("target", "main"),
        ("purpose", "main"),
        ("reason", "terminated"),
    ];
    let m = daemon
        .wait_for("the loss counted", WAIT, |m| {
            (m.value("pgvigil_session_losses_total", &loss)? >= 1.0).then(|| m.clone())
        })
        .await;
    assert_eq!(m.value("pgvigil_session_losses_total", &loss), Some(1.0));
    // Reopened alone, on a new backend.
    let after =
        crate::support_alerting::wait_async("a new session on a new backend", WAIT, || async {
            let now = pgvigil_backends(&admin, &db).await;
            (!now.is_empty() && now.iter().all(|pid| !before.contains(pid))).then_some(now)
        })
        .await;
    assert!(after.len() <= 2, "within the budget: {after:?}");
    daemon
        .wait_for("up 1 again", WAIT, |m| {
            let attempts = [
                ("target", "main"),
                ("purpose", "main"),
                ("result", "success"),
            ];
            (m.value("pgvigil_up", &[("target", "main")])? == 1.0
                && m.value("pgvigil_connection_attempts_total", &attempts)? >= 2.0)
                .then_some(())
        })
        .await;
    // Closing its own sessions at shutdown is no loss.
    daemon.stop().await;
    assert!(
        pgvigil_backends(&admin, &db).await.len() <= 2,
        "never more than the budget"
    );
}

#[tokio::test]
async fn connect_timeout_bounds_the_whole_connect_against_a_silent_listener() {
    let silent = crate::support_faults::StallingListener::start().await;
    // A statement_timeout far above the wait's ceiling: before the fix each attempt took
    // connect + statement timeout, so two failed attempts within the ceiling prove that
    // connect_timeout bounds the whole attempt, however busy the machine.
    let extra = "connect_timeout = \"1s\"\nstatement_timeout = \"600s\"\n";
    let daemon = Daemon::start(&one_target("silent", &silent.dsn(), extra)).await;
    let failures = [
        ("target", "silent"),
        ("purpose", "main"),
        ("result", "failure"),
    ];
    daemon
        .wait_for("two failed attempts", WAIT, |m| {
            (m.value("pgvigil_connection_attempts_total", &failures)? >= 2.0).then_some(())
        })
        .await;
    let target = daemon
        .wait_for_target("silent", "the timeout in the API", WAIT, |t| {
            t["last_error"].as_str().map(|_| t.clone())
        })
        .await;
    let error = target["last_error"].as_str().unwrap();
    assert!(
        error.contains("no session within connect_timeout (1s)"),
        "the error names the setting that gave up: {error}"
    );
    assert_eq!(target["state"], "down", "{target}");
    // Each attempt reached the listener (it is the handshake that stalls, not the TCP
    // connect).
    assert!(silent.accepted() >= 2, "{}", silent.accepted());
    daemon.stop().await;
}

#[test]
fn sigterm_cancels_a_query_waiting_on_a_lock() {
    use std::process::{Command, Stdio};

    let cluster = TestCluster::start();
    let db = cluster.create_database("cancelled");
    cluster.psql(&db, "CREATE TABLE locked (id int)");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let locker = runtime.block_on(connect(&cluster.dsn(&db)));
    runtime
        .block_on(async {
            locker
                .batch_execute("BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
                .await
        })
        .unwrap();

    // Timeouts far longer than the waits' ceiling: only a cancel ends the wait in time.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgvigil.toml");
    std::fs::write(
        &config,
        format!(
            "{}[targets.databases]\ninclude = [\"{db}\"]\n\
             [targets.tables]\nexact_count_tables = [\"public.locked\"]\nexact_count_timeout = \"600s\"\n",
            one_target(
                "main",
                &cluster.dsn(&db),
                "statement_timeout = \"600s\"\nlock_timeout = \"600s\"\n"
            )
        ),
    )
    .unwrap();
    let http_port = pgvigil_testkit::free_port();
    let mut child = Command::new(crate::support::pgvigil_bin())
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{http_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = |client: &tokio_postgres::Client| {
        runtime.block_on(async {
            client
                .query(
                    "SELECT pid, wait_event_type FROM pg_stat_activity \
                     WHERE application_name = 'pgvigil' AND datname = $1",
                    &[&db],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, Option<String>>(1)))
                .collect::<Vec<_>>()
        })
    };
    let admin = runtime.block_on(connect(&cluster.dsn("postgres")));
    pgvigil_testkit::wait_until("pgvigil's count waiting on the lock", WAIT, || {
        waiting(&admin)
            .iter()
            .any(|(_, wait)| wait.as_deref() == Some("Lock"))
            .then_some(())
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = pgvigil_testkit::wait_until("pgvigil to exit", WAIT, || child.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "exit status {exit:?}: {stderr}");
    // Gone from the server with pgvigil, while the lock is still held and lock_timeout
    // (600 s, far above the ceiling) is far away: only the cancel on shutdown ended it.
    pgvigil_testkit::wait_until("pgvigil's backends gone", WAIT, || {
        waiting(&admin).is_empty().then_some(())
    });
    runtime.block_on(locker.batch_execute("ROLLBACK")).unwrap();
}
