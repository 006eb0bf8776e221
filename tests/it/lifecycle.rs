//! A target's life: down at start, lost and regained, blocked; and the daemon's shutdown.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgvigil_testkit::{TestCluster, free_port, wait_until};

use crate::support::{Daemon, connect, http_get, one_target, pgvigil_bin};

const WAIT: Duration = Duration::from_secs(20);

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
    // Long lock and statement timeouts so the poll stays stuck for the whole check.
    let config = one_target(
        "main",
        &cluster.dsn(&db),
        "lock_timeout = \"4s\"\nstatement_timeout = \"8s\"",
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
    let deadline = Instant::now() + WAIT;
    loop {
        let row = observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'pg_catalog.pg_authid'::regclass",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "pgvigil's poll never blocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let (status, body) = http_get(daemon.addr, "/metrics", None).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(body.contains("pgvigil_up{target=\"main\"} 1"), "{body}");
    // The poll is blocked for up to 4 s; the scrape must not wait for it.
    assert!(
        took < Duration::from_secs(2),
        "/metrics took {took:?} while the poll was blocked"
    );

    // Shutdown does not wait for the stuck poll either.
    let shutdown = daemon.stop().await;
    assert!(
        shutdown < Duration::from_secs(5),
        "shutdown took {shutdown:?}"
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
        (status == 200 && body.contains("\"up\"") && body.contains("\"down\"")).then_some(body)
    });
    assert!(!targets.contains("Sekr1t"), "{targets}");
    let (_, page) = runtime.block_on(http_get(addr, "/", None));
    assert!(!page.contains("Sekr1t"), "{page}");

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "exit status {:?}", output.status);
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM to exit took {took:?}"
    );
    let logs = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(logs.contains("target is down"), "{logs}");
    assert!(logs.contains("connected"), "{logs}");
    assert!(
        !logs.contains("Sekr1t"),
        "password leaked into the logs:\n{logs}"
    );
}
