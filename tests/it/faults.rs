//! Faults injected into real programs (issue #16): after each, pgvigil still serves, recovers
//! alone, and never holds more sessions than its connection budget (asserted from
//! pg_stat_activity). Covered elsewhere: a terminated backend, a listener that never answers
//! and SIGTERM during a poll (`sessions.rs`), a server stopped and started
//! (`lifecycle.rs`), an unwritable state directory and a hanging receiver at shutdown
//! (`alerting.rs`), a table locked exclusively (`tables.rs`), pg_stat_statements dropped and
//! re-created (`statements.rs`), the audit table dropped, revoked or locked (`faults_audit.rs`).

use std::time::Duration;

use pgvigil_testkit::{TestCluster, TestPgbouncer};

use crate::support::{Daemon, Metrics, connect, one_target};

const WAIT: Duration = Duration::from_secs(30);

/// pgvigil's sessions on the cluster for databases named `prefix*`, as the server counts them.
pub async fn sessions(admin: &tokio_postgres::Client, prefix: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgvigil' \
               AND datname LIKE $1 || '%'",
            &[&prefix],
        )
        .await
        .unwrap()
        .get(0)
}

pub fn up(m: &Metrics, target: &str) -> Option<f64> {
    m.value("pgvigil_up", &[("target", target)])
}

#[tokio::test]
async fn a_host_name_that_does_not_resolve_is_down_with_the_reason_and_the_rest_serves() {
    let cluster = TestCluster::start();
    let config = format!(
        "{}{}",
        one_target("alive", &cluster.dsn("postgres"), ""),
        one_target(
            "nowhere",
            "host=pgvigil-no-such-host.invalid port=5432 user=pgvigil connect_timeout=2",
            "connect_timeout = \"2s\"\n"
        )
    );
    let daemon = Daemon::start(&config).await;
    let target = daemon
        .wait_for_target("nowhere", "the lookup failure", WAIT, |t| {
            t["last_error"].as_str().map(|_| t.clone())
        })
        .await;
    let error = target["last_error"].as_str().unwrap();
    assert!(
        error.contains("pgvigil-no-such-host.invalid")
            || error.contains("lookup")
            || error.contains("resolve"),
        "{error}"
    );
    assert_eq!(target["state"], "down");
    // The other target and the endpoints are unaffected, and it is retried.
    daemon
        .wait_for("alive up, nowhere retried", WAIT, |m| {
            let failures = [
                ("target", "nowhere"),
                ("purpose", "main"),
                ("result", "failure"),
            ];
            (up(m, "alive")? == 1.0
                && up(m, "nowhere")? == 0.0
                && m.value("pgvigil_connection_attempts_total", &failures)? >= 2.0)
                .then_some(())
        })
        .await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_collector_hitting_its_statement_timeout_fails_alone_and_recovers() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("fault_timeout");
    cluster.psql(
        &db,
        "CREATE TABLE counted (id int); INSERT INTO counted SELECT generate_series(1, 10)",
    );
    let admin = connect(&cluster.dsn("postgres")).await;
    let locker = connect(&cluster.dsn(&db)).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE counted IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // The exact count waits on the lock until its own statement_timeout (300 ms) cancels it.
    let extra = format!(
        "lock_timeout = \"10s\"\n[targets.databases]\ninclude = [\"{db}\"]\n\
         [targets.tables]\ninterval = \"200ms\"\nexact_count_tables = [\"public.counted\"]\n\
         exact_count_interval = \"200ms\"\nexact_count_timeout = \"300ms\"\n"
    );
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), &extra)).await;
    let errors = [
        ("target", "main"),
        ("datname", db.as_str()),
        ("result", "error"),
    ];
    let ok = [
        ("target", "main"),
        ("datname", db.as_str()),
        ("result", "ok"),
    ];
    // The sessions are sampled at every check of the wait, so the budget is asserted over it.
    let max_sessions = std::cell::Cell::new(0);
    let m = crate::support_alerting::wait_async("two timed-out exact counts", WAIT, || async {
        max_sessions.set(max_sessions.get().max(sessions(&admin, &db).await));
        let m = daemon.metrics().await;
        (m.value("pgvigil_table_exact_counts_total", &errors)
            .unwrap_or(0.0)
            >= 2.0)
            .then_some(m)
    })
    .await;
    let max_sessions = max_sessions.get();
    // The rest goes on meanwhile: the target is up, the table's statistics are read.
    assert_eq!(up(&m, "main"), Some(1.0), "{}", m.text);
    assert!(
        m.value("pgvigil_connections_max", &[("target", "main")])
            .is_some()
    );
    assert!(max_sessions <= 2, "budget 2, saw {max_sessions}");
    locker.batch_execute("ROLLBACK").await.unwrap();
    daemon
        .wait_for("a count after the lock", WAIT, |m| {
            let rows = m.value(
                "pgvigil_table_exact_rows",
                &[
                    ("target", "main"),
                    ("datname", db.as_str()),
                    ("table", "public.counted"),
                ],
            )?;
            (m.value("pgvigil_table_exact_counts_total", &ok)? >= 1.0 && rows == 10.0).then_some(())
        })
        .await;
    assert!(sessions(&admin, &db).await <= 2);
    daemon.stop().await;
}

#[tokio::test]
async fn pgbouncer_pause_and_reload_while_polled() {
    let cluster = TestCluster::start();
    let bouncer = TestPgbouncer::start(&cluster, 2);
    let daemon = Daemon::start(&crate::pgbouncer::bouncer_config("pool", &bouncer)).await;
    let polls = |m: &Metrics| m.sum("pgvigil_poll_duration_seconds_count", &[("target", "pool")]);
    let before = daemon
        .wait_for("pool polled", WAIT, |m| {
            (up(m, "pool")? == 1.0 && polls(m) > 0.0).then(|| polls(m))
        })
        .await;
    let console = connect(&bouncer.admin_dsn()).await;
    for command in ["PAUSE", "RELOAD"] {
        console.simple_query(command).await.unwrap();
        // Polled on, without an error, while paused / after the reload.
        let at = daemon.metrics().await;
        let seen = polls(&at).max(before);
        daemon
            .wait_for(&format!("polls after {command}"), WAIT, |m| {
                (up(m, "pool")? == 1.0 && polls(m) >= seen + 8.0).then_some(())
            })
            .await;
        let m = daemon.metrics().await;
        assert_eq!(
            m.sum("pgvigil_poll_errors_total", &[("target", "pool")]),
            0.0,
            "after {command}: {}",
            m.text
        );
        if command == "PAUSE" {
            console.simple_query("RESUME").await.unwrap();
        }
    }
    daemon.stop().await;
}

#[tokio::test]
async fn a_lost_pgbouncer_console_session_is_counted_as_a_session_loss() {
    let cluster = TestCluster::start();
    let bouncer = TestPgbouncer::start(&cluster, 2);
    let daemon = Daemon::start(&crate::pgbouncer::bouncer_config("pool", &bouncer)).await;
    let losses = |m: &Metrics| {
        m.sum(
            "pgvigil_session_losses_total",
            &[("target", "pool"), ("purpose", "main")],
        )
    };
    daemon
        .wait_for("pool polled", WAIT, |m| {
            (up(m, "pool")? == 1.0).then_some(())
        })
        .await;
    assert_eq!(losses(&daemon.metrics().await), 0.0);
    // PgBouncer goes away under the open admin console session.
    bouncer.stop();
    let lost = daemon
        .wait_for("the lost console session counted", WAIT, |m| {
            (losses(m) >= 1.0).then(|| losses(m))
        })
        .await;
    assert_eq!(lost, 1.0, "one session, lost once");
    daemon.stop().await;
}

/// A small tmpfs of its own, unmounted on drop (needs root, as the test machines run).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (the test machines run the suite as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fill it up: a file written until the disk refuses more.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = [0u8; 1024];
        while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_state_disk_is_reported_alerting_goes_on_and_it_recovers() {
    use crate::support_alerting::{api_active, api_alerts, wait_async};

    let disk = SmallDisk::mount("64k");
    let filler = disk.fill();
    let cluster = TestCluster::start();
    let db = cluster.create_database("fault_full");
    let config = format!(
        "{}[targets.alerts.IdleInTransaction]\nmax_idle = \"0s\"\n[alerts]\nstate_dir = \"{}\"\n",
        one_target("main", &cluster.dsn(&db), ""),
        disk.path().join("state").display()
    );
    let daemon = Daemon::start(&config).await;
    let writer = connect(&cluster.dsn(&db)).await;
    writer
        .batch_execute("CREATE TABLE contacts (id int); BEGIN; INSERT INTO contacts VALUES (1)")
        .await
        .unwrap();
    let labels = [("alertname", "IdleInTransaction"), ("datname", db.as_str())];
    wait_async("the alert to fire on a full disk", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    let error = wait_async("the state file error in the API", WAIT, || async {
        api_alerts(&daemon).await["state_error"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert!(
        error.contains("No space left") || error.contains("state_dir"),
        "{error}"
    );
    // Space again, and the next transition (the resolution) is saved: the error is gone.
    std::fs::remove_file(filler).unwrap();
    writer.batch_execute("COMMIT").await.unwrap();
    wait_async("the resolution saved", WAIT, || async {
        let view = api_alerts(&daemon).await;
        let resolved = api_active(&daemon, "firing", &labels).await.is_none();
        (resolved && view["state_error"].is_null()).then_some(())
    })
    .await;
    let saved = std::fs::read_to_string(disk.path().join("state/alerts.json")).unwrap();
    assert!(saved.contains("IdleInTransaction"), "{saved}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_receiver_down_while_an_alert_fires_and_resolves_gets_both_in_order() {
    use crate::support_alerting::{WebhookReceiver, api_active, wait_async};

    let cluster = TestCluster::start();
    let db = cluster.create_database("fault_receiver");
    let port = pgvigil_testkit::free_port();
    let config = format!(
        "{}[targets.alerts.IdleInTransaction]\nmax_idle = \"0s\"\n\
         [[alerts.webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nmax_backoff = \"500ms\"\ntimeout = \"2s\"\n",
        one_target("main", &cluster.dsn(&db), ""),
    );
    let daemon = Daemon::start(&config).await;
    let writer = connect(&cluster.dsn(&db)).await;
    writer
        .batch_execute("CREATE TABLE contacts (id int); BEGIN; INSERT INTO contacts VALUES (1)")
        .await
        .unwrap();
    let labels = [("alertname", "IdleInTransaction"), ("datname", db.as_str())];
    wait_async("the alert to fire", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    writer.batch_execute("COMMIT").await.unwrap();
    wait_async("the alert to resolve", WAIT, || async {
        api_active(&daemon, "firing", &labels)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    daemon
        .wait_for("failed deliveries to the missing receiver", WAIT, |m| {
            (m.sum(
                "pgvigil_notifications_total",
                &[("sink", "webhook"), ("result", "failed")],
            ) >= 1.0)
                .then_some(())
        })
        .await;

    // Back: the firing notification, then the resolution, both delivered.
    let receiver = WebhookReceiver::start_on(port).await;
    wait_async("the resolution at the receiver", WAIT, || async {
        (!receiver.alerts("resolved", &labels).is_empty()).then_some(())
    })
    .await;
    let statuses: Vec<String> = receiver
        .bodies()
        .iter()
        .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| crate::support_alerting::has_labels(a, &labels))
        .map(|a| a["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    let first_resolved = statuses.iter().position(|s| s == "resolved").unwrap();
    assert!(
        statuses[..first_resolved].iter().any(|s| s == "firing"),
        "the firing notification is delivered before the resolution: {statuses:?}"
    );
    daemon.stop().await;
}
