//! Live reload against real PostgreSQL and a real Alertmanager: sources added and removed
//! (connection closed, series gone, firing alert resolved at Alertmanager), a rule threshold
//! changed in place, a broken config rejected with check-config's message, and 200 reloads
//! that leak no connection, task or memory.

use std::process::Command;
use std::time::Duration;

use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, connect, pgvigil_bin};
use crate::support_alerting::{Alertmanager, api_active, wait_async};

const WAIT: Duration = crate::support::CEILING;

/// A target polling fast, with only the activity collector.
fn target(name: &str, dsn: &str, extra: &str) -> String {
    format!(
        "[[targets]]\nname = \"{name}\"\ndsn = \"{dsn}\"\npoll_interval = \"200ms\"\nreconnect_max_backoff = \"1s\"\n\
         [targets.statements]\nenabled = false\n[targets.tables]\nenabled = false\n[targets.imports]\nenabled = false\n{extra}"
    )
}

/// Fires at once on any server: one connection is more than 0.1% of the slots.
const FIRING: &str = "[targets.alerts.ConnectionsNearLimit]\nwarning_ratio = 0.001\ncritical_ratio = 1.0\nfor = \"0s\"\n";

const LIFECYCLE: &str = "[server]\nenable_lifecycle = true\n";

/// pgvigil's sessions on database `db`.
async fn backends(cluster: &TestCluster, db: &str) -> i64 {
    let client = connect(&cluster.dsn("postgres")).await;
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgvigil' AND datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}

async fn reload_ok(daemon: &Daemon) -> String {
    let (status, body) = daemon.post("/-/reload").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn reload_adds_removes_and_resolves_the_removed_sources_alerts() {
    let cluster = TestCluster::start();
    let (a, b, c) = (
        cluster.create_database_without_extensions("rl_a"),
        cluster.create_database_without_extensions("rl_b"),
        cluster.create_database_without_extensions("rl_c"),
    );
    let am = Alertmanager::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgvigil.toml");
    let alerting = format!(
        "{LIFECYCLE}[alerts]\nresend_interval = \"1s\"\n[[alerts.alertmanager]]\nurl = \"{}\"\n",
        am.url()
    );
    let v1 = format!(
        "{alerting}{}{}",
        target("a", &cluster.dsn(&a), ""),
        target("b", &cluster.dsn(&b), FIRING)
    );
    std::fs::write(&file, &v1).unwrap();
    let daemon = Daemon::start_file(&file).await;
    let b_alert = [("alertname", "ConnectionsNearLimit"), ("target", "b")];
    wait_async("b's alert at Alertmanager", WAIT, || async {
        am.find(&b_alert).await.into_iter().next()
    })
    .await;
    // The main session and the database session.
    assert_eq!(backends(&cluster, &b).await, 2);

    let v2 = format!(
        "{alerting}{}{}",
        target("a", &cluster.dsn(&a), ""),
        target("c", &cluster.dsn(&c), "")
    );
    std::fs::write(&file, &v2).unwrap();
    let body = reload_ok(&daemon).await;
    assert!(body.contains("1 added, 1 removed"), "{body}");
    // The added target is up within a poll.
    daemon
        .wait_for("c up", WAIT, |m| {
            (m.value("pgvigil_up", &[("target", "c")]) == Some(1.0)).then_some(())
        })
        .await;
    // The removed one: no series left, its connection closed, its alert resolved.
    let m = daemon.metrics().await;
    let left: Vec<&String> = m
        .samples
        .iter()
        .filter(|(_, l, _)| l.get("target").map(String::as_str) == Some("b"))
        .map(|(n, _, _)| n)
        .collect();
    assert!(left.is_empty(), "series of b remain: {left:?}");
    let (_, targets) = daemon.get("/api/v1/targets").await;
    assert!(!targets.contains("\"b\""), "{targets}");
    wait_async("b's backend gone", WAIT, || async {
        (backends(&cluster, &b).await == 0).then_some(())
    })
    .await;
    wait_async("b's alert resolved at Alertmanager", WAIT, || async {
        am.find(&b_alert).await.is_empty().then_some(())
    })
    .await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_changed_threshold_fires_without_a_restart() {
    let cluster = TestCluster::start();
    let db = cluster.create_database_without_extensions("rl_rule");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgvigil.toml");
    std::fs::write(
        &file,
        format!("{LIFECYCLE}{}", target("main", &cluster.dsn(&db), "")),
    )
    .unwrap();
    let daemon = Daemon::start_file(&file).await;
    daemon
        .wait_for("a few polls", WAIT, |m| {
            (m.value(
                "pgvigil_poll_duration_seconds_count",
                &[("target", "main"), ("collector", "activity")],
            )? >= 3.0)
                .then_some(())
        })
        .await;
    let labels = [("alertname", "ConnectionsNearLimit"), ("target", "main")];
    assert!(api_active(&daemon, "firing", &labels).await.is_none());

    std::fs::write(
        &file,
        format!("{LIFECYCLE}{}", target("main", &cluster.dsn(&db), FIRING)),
    )
    .unwrap();
    let body = reload_ok(&daemon).await;
    assert!(body.contains("0 added, 0 removed, 0 restarted"), "{body}");
    wait_async("ConnectionsNearLimit firing", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    // The same session all along: one successful connection attempt.
    let m = daemon.metrics().await;
    assert_eq!(
        m.value(
            "pgvigil_connection_attempts_total",
            &[
                ("target", "main"),
                ("purpose", "main"),
                ("result", "success")
            ]
        ),
        Some(1.0)
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_broken_reload_changes_nothing_and_says_what_check_config_says() {
    let cluster = TestCluster::start();
    let db = cluster.create_database_without_extensions("rl_broken");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgvigil.toml");
    let good = format!("{LIFECYCLE}{}", target("main", &cluster.dsn(&db), ""));
    std::fs::write(&file, &good).unwrap();
    let daemon = Daemon::start_file(&file).await;
    daemon
        .wait_for("main up", WAIT, |m| {
            (m.value("pgvigil_up", &[("target", "main")]) == Some(1.0)).then_some(())
        })
        .await;

    // A rule error (found after parsing) and a syntax error: both rejected as a whole.
    for broken in [
        format!("{good}[targets.alerts.ConnectionsNearLimit]\nwarning_ratio = 7.0\n"),
        format!("{good}[[targets]\n"),
    ] {
        std::fs::write(&file, &broken).unwrap();
        let (status, body) = daemon.post("/-/reload").await;
        assert_eq!(status, 500, "{body}");
        let check = Command::new(pgvigil_bin())
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(2));
        let expected = String::from_utf8(check.stderr).unwrap();
        assert_eq!(body.trim_end(), expected.trim_end());
        assert!(body.starts_with(&format!("{}:", file.display())), "{body}");
        let m = daemon.metrics().await;
        assert_eq!(
            m.value("pgvigil_config_last_reload_successful", &[]),
            Some(0.0)
        );
        assert_eq!(m.value("pgvigil_up", &[("target", "main")]), Some(1.0));
        let (_, page) = daemon.get("/").await;
        assert!(page.contains("Configuration reload rejected"), "{page}");
    }
    std::fs::write(&file, &good).unwrap();
    reload_ok(&daemon).await;
    let m = daemon.metrics().await;
    assert_eq!(
        m.value("pgvigil_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "pgvigil_connection_attempts_total",
            &[
                ("target", "main"),
                ("purpose", "main"),
                ("result", "success")
            ]
        ),
        Some(1.0),
        "the target kept its session through the rejected reloads"
    );
    daemon.stop().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_reloads_leak_no_connection_task_or_memory() {
    let cluster = TestCluster::start();
    let (x, y, z) = (
        cluster.create_database_without_extensions("rl_x"),
        cluster.create_database_without_extensions("rl_y"),
        cluster.create_database_without_extensions("rl_z"),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgvigil.toml");
    // Each reload removes one target and adds another (a new session each time).
    let variant = |n: usize| {
        let (name, db) = if n % 2 == 0 { ("y", &y) } else { ("z", &z) };
        format!(
            "{LIFECYCLE}{}{}",
            target("x", &cluster.dsn(&x), ""),
            target(name, &cluster.dsn(db), "")
        )
    };
    std::fs::write(&file, variant(0)).unwrap();
    let daemon = Daemon::start_file(&file).await;
    let settled = |name: &'static str| {
        let daemon = &daemon;
        async move {
            daemon
                .wait_for("both targets up", WAIT, |m| {
                    (m.value("pgvigil_up", &[("target", "x")]) == Some(1.0)
                        && m.value("pgvigil_up", &[("target", name)]) == Some(1.0))
                    .then_some(())
                })
                .await;
        }
    };
    settled("y").await;
    // Warm up allocator and caches with a few rounds before measuring.
    for n in 1..=10 {
        std::fs::write(&file, variant(n)).unwrap();
        daemon.reload().await.unwrap();
    }
    settled("y").await;
    let runtime = tokio::runtime::Handle::current().metrics();
    let backends_before =
        backends(&cluster, &x).await + backends(&cluster, &y).await + backends(&cluster, &z).await;
    let tasks_before = runtime.num_alive_tasks();
    let rss_before = rss_kib();

    for n in 11..=210 {
        std::fs::write(&file, variant(n)).unwrap();
        daemon.reload().await.unwrap();
    }
    settled("y").await;
    let total = || async {
        backends(&cluster, &x).await + backends(&cluster, &y).await + backends(&cluster, &z).await
    };
    wait_async("the backends of removed targets gone", WAIT, || async {
        (total().await == backends_before).then_some(())
    })
    .await;
    // Two targets, each with its main session and a database session.
    assert_eq!(backends_before, 4);
    let tasks = wait_async("finished tasks gone", WAIT, || async {
        let now = runtime.num_alive_tasks();
        (now <= tasks_before).then_some(now)
    })
    .await;
    assert!(tasks <= tasks_before, "{tasks} tasks vs {tasks_before}");
    let rss_after = rss_kib();
    eprintln!(
        "200 reloads: backends {backends_before} before and after, tasks {tasks_before} -> {tasks}, RSS {rss_before} -> {rss_after} KiB"
    );
    // A leak of a session, a task or a collector per reload would be megabytes by now; the
    // allocator may keep some slack.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over 200 reloads"
    );
    daemon.stop().await;
}

#[test]
fn check_config_reads_a_directory_of_fragments_and_rejects_a_name_used_twice() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("00-main.toml", "[server]\nlisten = \"127.0.0.1:0\"\n");
    write(
        "10-app.toml",
        "[[targets]]\nname = \"app\"\ndsn = \"host=h\"\n",
    );
    write(
        "20-billing.toml",
        "[[targets]]\nname = \"billing\"\ndsn = \"host=h\"\n",
    );
    write("notes.txt", "not a fragment");
    let out = Command::new(pgvigil_bin())
        .arg("check-config")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 targets: app, billing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    write(
        "30-dup.toml",
        "\n[[targets]]\nname = \"app\"\ndsn = \"host=h\"\n",
    );
    let out = Command::new(pgvigil_bin())
        .arg("check-config")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = dir.path().join("10-app.toml");
    let second = dir.path().join("30-dup.toml");
    assert!(
        err.starts_with(&format!(
            "{}:3:8: duplicate target name \"app\"",
            second.display()
        )) && err.contains(&format!("(first used in {} on line 2)", first.display())),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("30-dup.toml")).unwrap();
    write("40-server.toml", "[server]\nlisten = \"127.0.0.1:1\"\n");
    let out = Command::new(pgvigil_bin())
        .arg("check-config")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("40-server.toml:1:2: [server] is already set in")
            && err.contains("00-main.toml:1:2"),
        "{err}"
    );
}

#[test]
fn sighup_reloads_the_binary() {
    let cluster = TestCluster::start();
    let db = cluster.create_database_without_extensions("rl_hup");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgvigil.toml");
    let port = pgvigil_testkit::free_port();
    let server = format!("[server]\nlisten = \"127.0.0.1:{port}\"\n");
    std::fs::write(
        &file,
        format!("{server}{}", target("one", &cluster.dsn(&db), "")),
    )
    .unwrap();
    let mut child = Command::new(pgvigil_bin())
        .arg("--config")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let up = |name: &str| {
        let metrics = runtime
            .block_on(crate::support::http_get(addr, "/metrics", None))
            .1;
        crate::support::Metrics::parse(&metrics).value("pgvigil_up", &[("target", name)])
            == Some(1.0)
    };
    let connected = || std::net::TcpStream::connect(addr).is_ok();
    pgvigil_testkit::wait_until("pgvigil listening", WAIT, || connected().then_some(()));
    pgvigil_testkit::wait_until("one up", WAIT, || up("one").then_some(()));
    std::fs::write(
        &file,
        format!("{server}{}", target("two", &cluster.dsn(&db), "")),
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    pgvigil_testkit::wait_until("two up after SIGHUP", WAIT, || up("two").then_some(()));
    assert!(!up("one"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
