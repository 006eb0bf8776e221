//! A target's life: down at start, lost and regained, blocked; and the daemon's shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use pgvigil_testkit::{TestCluster, free_port, wait_until};

use crate::support::{Daemon, connect, http_get, one_target, pgvigil_bin};
use crate::support_alerting::wait_async;

const WAIT: Duration = crate::support::CEILING;

fn up(m: &crate::support::Metrics, target: &str) -> Option<f64> {
    m.value("pgvigil_up", &[("target", target)])
}

#[tokio::test]
async fn database_stopped_and_started_again_is_followed_without_restart() {
    let cluster = TestCluster::start_private();
    let daemon = Daemon::start(&one_target("main", &cluster.dsn("postgres"), "")).await;
    daemon
        .wait_for("up 1", WAIT, |m| (up(m, "main")? == 1.0).then_some(()))
        .await;

    cluster.stop();
    let m = daemon
        .wait_for("up 0 after the server stopped", WAIT, |m| {
            (up(m, "main")? == 0.0).then(|| m.clone())
        })
        .await;
    // Database series are withdrawn rather than repeated stale; pgvigil's own stay.
    assert_eq!(
        m.value("pgvigil_connections_max", &[("target", "main")]),
        None
    );
    // The API is updated right after pgvigil_up: wait for it rather than read it once.
    let target = daemon
        .wait_for_target("main", "state down in the API", WAIT, |t| {
            (t["state"] == "down").then(|| t.clone())
        })
        .await;
    assert!(target["last_error"].as_str().is_some(), "{target}");
    // Down may be noticed by a poll rather than a connect; restart only once a reconnect has
    // failed, or a quick restart can win the race against the first retry.
    daemon
        .wait_for("a failed reconnect", WAIT, |m| {
            let attempts = &[
                ("target", "main"),
                ("purpose", "main"),
                ("result", "failure"),
            ];
            (m.value("pgvigil_connection_attempts_total", attempts)? >= 1.0).then_some(())
        })
        .await;

    cluster.restart();
    let m = daemon
        .wait_for("up 1 after the server came back", WAIT, |m| {
            (up(m, "main")? == 1.0
                && m.value("pgvigil_connections_max", &[("target", "main")])
                    .is_some())
            .then(|| m.clone())
        })
        .await;
    assert!(
        m.value(
            "pgvigil_connection_attempts_total",
            &[
                ("target", "main"),
                ("purpose", "main"),
                ("result", "failure")
            ]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        m.value(
            "pgvigil_connection_attempts_total",
            &[
                ("target", "main"),
                ("purpose", "main"),
                ("result", "success")
            ]
        )
        .unwrap()
            >= 2.0
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_target_down_at_start_does_not_affect_the_others() {
    let cluster = TestCluster::start();
    let dead_port = free_port();
    let config = format!(
        "{}{}",
        one_target("alive", &cluster.dsn("postgres"), ""),
        one_target(
            "dead",
            &format!("host=127.0.0.1 port={dead_port} user=postgres connect_timeout=1"),
            ""
        )
    );
    let daemon = Daemon::start(&config).await;
    daemon
        .wait_for("alive up, dead down", WAIT, |m| {
            (up(m, "alive")? == 1.0
                && up(m, "dead")? == 0.0
                && m.value("pgvigil_connections_max", &[("target", "alive")])
                    .is_some())
            .then_some(())
        })
        .await;
    // pgvigil_up of "dead" is 0 before its first attempt too: wait for the attempt's error,
    // which is what readiness is about.
    daemon
        .wait_for_target("dead", "the first failed attempt", WAIT, |t| {
            t["last_error"].as_str().map(|_| ())
        })
        .await;
    let (status, _) = daemon.get("/readyz").await;
    assert_eq!(status, 200, "every target has had its first attempt");
    daemon.stop().await;
}

#[tokio::test]
async fn metrics_answer_while_the_poll_is_stuck_behind_a_lock() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("blocked");
    // Lock and statement timeouts far above the waits' ceiling: the poll stays stuck for the
    // whole check, and only a cancel can end its query before the lock is released.
    let config = one_target(
        "main",
        &cluster.dsn(&db),
        "lock_timeout = \"600s\"\nstatement_timeout = \"600s\"",
    );
    let daemon = Daemon::start(&config).await;
    daemon
        .wait_for("a first successful poll", WAIT, |m| {
            m.value("pgvigil_connections_max", &[("target", "main")])
                .map(|_| ())
        })
        .await;

    // pg_stat_activity joins pg_authid; an exclusive lock on it blocks the activity query.
    // Both sessions are opened before the lock: new backends read pg_authid to authenticate.
    let locker = connect(&cluster.dsn(&db)).await;
    let observer = connect(&cluster.dsn(&db)).await;
    observer.batch_execute("SELECT 1").await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_authid IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // pg_locks does not touch pg_authid, so it can tell us when pgvigil's query is waiting.
    let waiting = || async {
        observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'pg_catalog.pg_authid'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    wait_async("pgvigil's poll to block on the lock", WAIT, || async {
        (waiting().await >= 1).then_some(())
    })
    .await;

    let (status, body) = http_get(daemon.addr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("pgvigil_up{target=\"main\"} 1"), "{body}");
    // The scrape did not wait for the poll: the poll is still blocked (the lock is held, and
    // the timeouts are far away), whatever the time the scrape took on a busy machine.
    assert!(waiting().await >= 1, "the poll was no longer blocked");

    // Shutdown does not wait for the stuck poll either: it ends, and so does the query,
    // while the lock is still held.
    tokio::time::timeout(WAIT, daemon.stop())
        .await
        .expect("shutdown waited for the stuck poll");
    wait_async("pgvigil's backend to leave", WAIT, || async {
        // pg_stat_activity joins the locked pg_authid; the function under it does not.
        let rows = observer
            .query(
                "SELECT pid FROM pg_stat_get_activity(NULL) a JOIN pg_database d ON d.oid = a.datid \
                 WHERE a.application_name = 'pgvigil' AND d.datname = $1",
                &[&db],
            )
            .await
            .unwrap();
        rows.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        waiting().await,
        0,
        "pgvigil's query still waits on the lock"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
}

#[test]
fn sigterm_stops_the_binary_quickly_and_the_password_never_appears() {
    let cluster = TestCluster::start();
    let dead_port = free_port();
    let http_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgvigil.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}",
            one_target(
                "alive",
                &format!(
                    "postgres://{}:Sekr1t-alive@{}:{}/postgres",
                    cluster.superuser(),
                    cluster.host(),
                    cluster.port()
                ),
                ""
            ),
            one_target(
                "dead",
                &format!("postgres://postgres:Sekr1t-dead@127.0.0.1:{dead_port}/postgres"),
                ""
            )
        ),
    )
    .unwrap();
    let child = Command::new(pgvigil_bin())
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{http_port}")])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let targets = wait_until("both targets polled", WAIT, || {
        let (status, body) = runtime.block_on(async {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => http_get(addr, "/api/v1/targets", None).await,
                Err(_) => (0, String::new()),
            }
        });
        // The main sessions' states (a database session may be up before its target).
        let targets: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let state = |name: &str| {
            targets
                .as_array()
                .and_then(|all| all.iter().find(|t| t["name"] == name))
                .map(|t| t["state"].clone())
        };
        (status == 200
            && state("alive") == Some("up".into())
            && state("dead") == Some("down".into()))
        .then_some(body)
    });
    assert!(!targets.contains("Sekr1t"), "{targets}");
    let (_, page) = runtime.block_on(http_get(addr, "/", None));
    assert!(!page.contains("Sekr1t"), "{page}");

    // How quickly a poll's query ends on SIGTERM is sessions::sigterm_cancels_a_query_waiting_on_a_lock;
    // here: the binary exits cleanly on SIGTERM, within the ceiling, with a target down.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Read its output while it exits (a full pipe would block it).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = rx
        .recv_timeout(WAIT)
        .expect("pgvigil did not exit after SIGTERM")
        .unwrap();
    assert!(output.status.success(), "exit status {:?}", output.status);
    let logs = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(logs.contains("target is down"), "{logs}");
    assert!(logs.contains("connected"), "{logs}");
    assert!(
        !logs.contains("Sekr1t"),
        "password leaked into the logs:\n{logs}"
    );
}
