//! Alerts end to end: real PostgreSQL sessions make the conditions, a real Alertmanager and a
//! local webhook receiver get the notifications.

use std::time::Duration;

use pgvigil_testkit::{TestCluster, free_port};
use serde_json::Value;

use crate::support::{Daemon, connect, one_target};
use crate::support_alerting::{Alertmanager, WebhookReceiver, api_active, api_alerts, wait_async};

const WAIT: Duration = crate::support::CEILING;

/// A session that opens a transaction, writes, and sits idle in it.
async fn idle_writer(dsn: &str) -> tokio_postgres::Client {
    let client = connect(dsn).await;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS contacts (id int); BEGIN; INSERT INTO contacts VALUES (1), (2), (3);",
        )
        .await
        .unwrap();
    client
}

#[tokio::test]
async fn idle_in_transaction_reaches_alertmanager_and_the_status_page_then_resolves() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("alert_am");
    let am = Alertmanager::start().await;
    let config = format!(
        "{}[targets.alerts.IdleInTransaction]\nmax_idle = \"1s\"\n\
         [alerts]\nresend_interval = \"1m\"\n[[alerts.alertmanager]]\nurl = \"{}\"\n",
        one_target("main", &cluster.dsn(&db), ""),
        am.url()
    );
    let daemon = Daemon::start(&config).await;
    let labels = [
        ("alertname", "IdleInTransaction"),
        ("target", "main"),
        ("datname", db.as_str()),
    ];

    let writer = idle_writer(&cluster.dsn(&db)).await;
    let alert = wait_async("IdleInTransaction in Alertmanager", WAIT, || async {
        am.find(&labels).await.into_iter().next()
    })
    .await;
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    let annotations = &alert["annotations"];
    assert!(
        annotations["summary"]
            .as_str()
            .unwrap()
            .contains("idle in transaction"),
        "{alert}"
    );
    assert!(
        annotations["query"]
            .as_str()
            .unwrap()
            .contains("INSERT INTO contacts"),
        "{alert}"
    );
    assert_eq!(annotations["holds_writes"], "true", "{alert}");
    assert!(
        annotations["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("/docs/runbooks/IdleInTransaction.md"),
        "{alert}"
    );
    // Firing: endsAt lies a few resend intervals ahead, so Alertmanager keeps it active.
    let at = |k: &str| humantime::parse_rfc3339_weak(alert[k].as_str().unwrap()).unwrap();
    assert!(
        at("endsAt").duration_since(at("startsAt")).unwrap() >= Duration::from_secs(180),
        "{alert}"
    );

    let firing = api_active(&daemon, "firing", &labels)
        .await
        .expect("firing in the API");
    assert!(firing["annotations"]["pid"].as_str().is_some(), "{firing}");
    let (_, page) = daemon.get("/").await;
    assert!(
        page.contains("IdleInTransaction") && page.contains("runbook"),
        "{page}"
    );

    writer.batch_execute("COMMIT").await.unwrap();
    wait_async("the resolution to reach Alertmanager", WAIT, || async {
        am.find(&labels).await.is_empty().then_some(())
    })
    .await;
    let view = api_alerts(&daemon).await;
    assert!(
        view["resolved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["labels"]["datname"] == db.as_str()),
        "{view}"
    );
    let (_, page) = daemon.get("/").await;
    assert!(page.contains("Recently resolved"), "{page}");
    // Counted when Alertmanager's answer is back, a moment after Alertmanager holds the
    // resolution the wait above saw: wait for the count too.
    let m = daemon
        .wait_for("the firing and the resolution counted as sent", WAIT, |m| {
            (m.sum(
                "pgvigil_notifications_total",
                &[("sink", "alertmanager"), ("result", "sent")],
            ) >= 2.0)
                .then(|| m.clone())
        })
        .await;
    assert_eq!(
        m.value(
            "pgvigil_alerts",
            &[
                ("alertname", "IdleInTransaction"),
                ("severity", "warning"),
                ("state", "firing")
            ]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn alertmanager_down_while_an_alert_fires_gets_it_once_back() {
    let am_port = free_port();
    let dead_db = format!("host=127.0.0.1 port={} user=nobody dbname=x", free_port());
    let config = format!(
        "{}[targets.alerts.PgvigilTargetDown]\nfor = \"0s\"\n\
         [[alerts.alertmanager]]\nurl = \"http://127.0.0.1:{am_port}\"\nmax_backoff = \"500ms\"\ntimeout = \"2s\"\n",
        one_target("gone", &dead_db, ""),
    );
    let daemon = Daemon::start(&config).await;
    let labels = [("alertname", "PgvigilTargetDown"), ("target", "gone")];
    let firing = wait_async("PgvigilTargetDown to fire", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    assert!(
        !firing["annotations"]["error"].as_str().unwrap().is_empty(),
        "{firing}"
    );
    daemon
        .wait_for("a failed delivery to the dead Alertmanager", WAIT, |m| {
            (m.sum(
                "pgvigil_notifications_total",
                &[("sink", "alertmanager"), ("result", "failed")],
            ) >= 1.0)
                .then_some(())
        })
        .await;

    let am = Alertmanager::start_on(am_port).await;
    let alert = wait_async(
        "the alert to arrive once Alertmanager is up",
        WAIT,
        || async { am.find(&labels).await.into_iter().next() },
    )
    .await;
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("gone")
    );
}

#[tokio::test]
async fn webhook_firing_and_resolution_survive_a_restart_without_duplicates() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("alert_hook");
    let hook = WebhookReceiver::start().await;
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "{}[targets.alerts.IdleInTransaction]\nmax_idle = \"1s\"\n\
         [alerts]\nstate_dir = \"{}\"\nresend_interval = \"1h\"\n[[alerts.webhook]]\nurl = \"{}\"\n",
        one_target("main", &cluster.dsn(&db), ""),
        state.path().display(),
        hook.url()
    );
    let labels = [("alertname", "IdleInTransaction"), ("datname", db.as_str())];

    let daemon = Daemon::start(&config).await;
    let writer = idle_writer(&cluster.dsn(&db)).await;
    wait_async("a firing webhook", WAIT, || async {
        (!hook.alerts("firing", &labels).is_empty()).then_some(())
    })
    .await;
    let body = hook
        .bodies()
        .into_iter()
        .find(|b| b["status"] == "firing")
        .unwrap();
    assert_eq!(body["version"], "4", "{body}");
    assert_eq!(
        body["commonLabels"]["alertname"], "IdleInTransaction",
        "{body}"
    );
    assert_eq!(
        body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z",
        "{body}"
    );
    let before = api_active(&daemon, "firing", &labels).await.unwrap();
    daemon.stop().await;
    let saved = std::fs::read_to_string(state.path().join("alerts.json")).unwrap();
    assert!(saved.contains("IdleInTransaction"), "{saved}");

    // Restart while the transaction is still open.
    let daemon = Daemon::start(&config).await;
    // The engine restores the state file in its own task: wait for it.
    let after = wait_async("the firing alert restored", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    assert_eq!(after["firing_since"], before["firing_since"]);
    // Let it evaluate the still-true condition several times.
    daemon
        .wait_for("several polls after the restart", WAIT, |m| {
            (m.sum(
                "pgvigil_poll_duration_seconds_count",
                &[("target", "main"), ("collector", "activity")],
            ) >= 8.0)
                .then_some(())
        })
        .await;
    assert_eq!(
        hook.alerts("firing", &labels).len(),
        1,
        "the restart re-sent the alert: {:?}",
        hook.bodies()
    );

    writer.batch_execute("COMMIT").await.unwrap();
    let resolved = wait_async("the resolution webhook", WAIT, || async {
        hook.alerts("resolved", &labels).into_iter().next()
    })
    .await;
    assert_ne!(resolved["endsAt"], "0001-01-01T00:00:00Z", "{resolved}");
    assert_eq!(hook.alerts("firing", &labels).len(), 1);
}

#[tokio::test]
async fn a_condition_shorter_than_for_never_fires() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("alert_for");
    let hook = WebhookReceiver::start().await;
    let config = format!(
        "{}[targets.alerts.IdleInTransaction]\nmax_idle = \"0s\"\nfor = \"8s\"\n\
         [[alerts.webhook]]\nurl = \"{}\"\n",
        one_target("main", &cluster.dsn(&db), ""),
        hook.url()
    );
    let labels = [("alertname", "IdleInTransaction"), ("datname", db.as_str())];
    let daemon = Daemon::start(&config).await;

    let writer = idle_writer(&cluster.dsn(&db)).await;
    wait_async("the alert to be pending", WAIT, || async {
        api_active(&daemon, "pending", &labels).await
    })
    .await;
    writer.batch_execute("COMMIT").await.unwrap();
    wait_async("the pending alert to clear", WAIT, || async {
        api_active(&daemon, "pending", &labels)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(hook.bodies().is_empty(), "{:?}", hook.bodies());
    assert!(api_active(&daemon, "firing", &labels).await.is_none());
    assert!(
        api_alerts(&daemon).await["resolved"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The same condition held past `for` does fire: the rule works, `for` held it back.
    writer
        .batch_execute("BEGIN; INSERT INTO contacts VALUES (4);")
        .await
        .unwrap();
    wait_async("the alert to fire after for", WAIT, || async {
        (!hook.alerts("firing", &labels).is_empty()).then_some(())
    })
    .await;
    let firing = api_active(&daemon, "firing", &labels).await.unwrap();
    let since = |k: &str| humantime::parse_rfc3339(firing[k].as_str().unwrap()).unwrap();
    assert!(
        since("firing_since")
            .duration_since(since("active_since"))
            .unwrap()
            >= Duration::from_secs(8),
        "{firing}"
    );
}

#[tokio::test]
async fn connection_thresholds_come_from_the_config_per_target() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("alert_conn");
    let dsn = cluster.dsn(&db);
    // Three targets on the same server: default thresholds, a tiny warning threshold, and
    // tiny thresholds that also cross critical.
    let config = format!(
        "[alerts.rules.ConnectionsNearLimit]\nfor = \"0s\"\n\
         {}{}[targets.alerts.ConnectionsNearLimit]\nwarning_ratio = 0.001\ncritical_ratio = 1.0\n\
         {}[targets.alerts.ConnectionsNearLimit]\nwarning_ratio = 0.001\ncritical_ratio = 0.002\n",
        one_target("lenient", &dsn, ""),
        one_target("warn", &dsn, ""),
        one_target("crit", &dsn, ""),
    );
    let daemon = Daemon::start(&config).await;
    let warn = wait_async("warning on target warn", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[("alertname", "ConnectionsNearLimit"), ("target", "warn")],
        )
        .await
    })
    .await;
    assert_eq!(warn["labels"]["severity"], "warning", "{warn}");
    assert_eq!(warn["annotations"]["threshold"], "0.001", "{warn}");
    let crit = wait_async("critical on target crit", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[("alertname", "ConnectionsNearLimit"), ("target", "crit")],
        )
        .await
    })
    .await;
    assert_eq!(crit["labels"]["severity"], "critical", "{crit}");
    daemon
        .wait_for("several polls of lenient", WAIT, |m| {
            (m.sum(
                "pgvigil_poll_duration_seconds_count",
                &[("target", "lenient"), ("collector", "activity")],
            ) >= 5.0)
                .then_some(())
        })
        .await;
    let view = api_alerts(&daemon).await;
    assert!(
        !view["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["target"] == "lenient"),
        "{view}"
    );
    let m = daemon.metrics().await;
    assert_eq!(
        m.value(
            "pgvigil_alerts",
            &[
                ("alertname", "ConnectionsNearLimit"),
                ("severity", "critical"),
                ("state", "firing")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_unwritable_state_dir_is_reported_and_alerting_goes_on() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("alert_state");
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    let config = format!(
        "{}[targets.alerts.IdleInTransaction]\nmax_idle = \"0s\"\n[alerts]\nstate_dir = \"{}\"\n",
        one_target("main", &cluster.dsn(&db), ""),
        blocker.join("state").display()
    );
    // Valid when loaded (check-config refuses a state_dir below a file); blocked afterwards,
    // as when a disk is remounted or a directory replaced while pgvigil runs.
    let config = pgvigil::app::parse(
        std::path::Path::new("test.toml"),
        &config,
        &pgvigil::config::LibpqEnv::default(),
    )
    .unwrap();
    std::fs::write(&blocker, "").unwrap();
    let daemon = Daemon::start_with(config).await;
    let _writer = idle_writer(&cluster.dsn(&db)).await;
    let labels = [("alertname", "IdleInTransaction"), ("datname", db.as_str())];
    wait_async("the alert to fire despite the state dir", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    // The failed save is reported after the transition that triggered it: wait for it.
    let error = wait_async("the state file error in the API", WAIT, || async {
        let view: Value = api_alerts(&daemon).await;
        view["state_error"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("state_dir"), "{error}");
    let (_, page) = daemon.get("/").await;
    assert!(page.contains("state_dir"), "{page}");
}

#[tokio::test]
async fn a_hanging_receiver_delays_neither_polling_nor_other_receivers_nor_shutdown() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("alert_slow");
    let am = Alertmanager::start().await;
    // Accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            streams.push(stream);
        }
    });
    let config = format!(
        "{}[targets.alerts.IdleInTransaction]\nmax_idle = \"0s\"\n\
         [[alerts.webhook]]\nurl = \"http://{hole_addr}/hook\"\ntimeout = \"60s\"\n\
         [[alerts.alertmanager]]\nurl = \"{}\"\n",
        one_target("main", &cluster.dsn(&db), ""),
        am.url()
    );
    let daemon = Daemon::start(&config).await;
    let _writer = idle_writer(&cluster.dsn(&db)).await;
    let labels = [("alertname", "IdleInTransaction"), ("datname", db.as_str())];
    wait_async(
        "the alert in Alertmanager despite the hanging webhook",
        WAIT,
        || async { am.find(&labels).await.into_iter().next() },
    )
    .await;
    let polls = |m: &crate::support::Metrics| {
        m.sum(
            "pgvigil_poll_duration_seconds_count",
            &[("target", "main"), ("collector", "activity")],
        )
    };
    let before = polls(&daemon.metrics().await);
    daemon
        .wait_for("polling to go on", WAIT, |m| {
            (polls(m) >= before + 5.0).then_some(())
        })
        .await;
    let m = daemon.metrics().await;
    assert_eq!(
        m.sum(
            "pgvigil_notifications_total",
            &[("sink", "webhook"), ("result", "sent")]
        ),
        0.0
    );
    // The receiver never answers: that shutdown ends at all shows it does not wait for it.
    tokio::time::timeout(WAIT, daemon.stop())
        .await
        .expect("shutdown waited for the hanging receiver");
    held.abort();
}
