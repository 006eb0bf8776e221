//! The important alerts end to end through a running daemon: real database events, the
//! collectors and the engine as the daemon runs them, read back from `/api/v1/alerts` (and once
//! from a real Alertmanager). The rule-level tests beside each feature evaluate `Rule`s on
//! collector output; these prove the engine, its `for`/`keep_firing_for` and the config wiring.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pgvigil_testkit::{TestCluster, TestPgbouncer};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::imports::{import_correctly, import_forgetting_commit, import_partially, setup};
use crate::pgbouncer::bouncer_config;
use crate::statements::{lookup_queryid, lookup_workload};
use crate::support::{Daemon, Metrics, connect, one_target};
use crate::support_alerting::{Alertmanager, api_active, api_alerts, has_labels, wait_async};

/// Generous: two loaded cores, several clusters at once.
const WAIT: Duration = crate::support::CEILING;

fn ann<'a>(alert: &'a Value, key: &str) -> &'a str {
    alert["annotations"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no annotation {key}: {alert:#}"))
}

/// Polls of `target` the daemon has completed (the histogram is per collector, so the busiest
/// collector's count, not the sum).
fn polls(m: &Metrics, target: &str) -> f64 {
    m.matching("pgvigil_poll_duration_seconds_count", &[("target", target)])
        .map(|(_, v)| v)
        .fold(0.0, f64::max)
}

/// Wait until `target` has completed `n` more polls than now.
async fn more_polls(daemon: &Daemon, target: &str, n: f64) {
    let start = polls(&daemon.metrics().await, target);
    daemon
        .wait_for(&format!("{n} more polls of {target}"), WAIT, |m| {
            (polls(m, target) >= start + n).then_some(())
        })
        .await;
}

/// Every active or resolved alert whose labels include `key` = `value`.
fn alerts_with(view: &Value, key: &str, value: &str) -> Vec<Value> {
    ["active", "resolved"]
        .iter()
        .flat_map(|list| view[*list].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"][key] == value)
        .collect()
}

/// The verdict of `import_id` in `/api/v1/imports`, once there is one.
async fn api_verdict(daemon: &Daemon, import_id: &str) -> Option<String> {
    let (status, body) = daemon.get("/api/v1/imports").await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    json["targets"]["main"]["imports"]
        .as_array()?
        .iter()
        .find(|v| v["import_id"] == import_id)
        .and_then(|v| v["verdict"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn import_shortfall_fires_with_exact_numbers_and_a_correct_import_stays_quiet() {
    let (cluster, db, audit) = setup("e2e_short").await;
    let dsn = cluster.dsn(&db);
    let am = Alertmanager::start().await;
    let config = format!(
        "{}[alerts]\nresend_interval = \"1m\"\n[[alerts.alertmanager]]\nurl = \"{}\"\n",
        one_target("main", &dsn, "[targets.imports]\ngrace_period = \"100ms\""),
        am.url()
    );
    let daemon = Daemon::start(&config).await;
    let good = import_correctly(&dsn, &audit, "good.csv", 1_500).await;
    let short = import_partially(&dsn, &audit, 4_000, 1_000).await;

    let labels = [
        ("alertname", "ImportRowShortfall"),
        ("target", "main"),
        ("import_id", short.as_str()),
    ];
    let alert = wait_async("ImportRowShortfall firing in the API", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    assert_eq!(alert["labels"]["table"], "public.contacts", "{alert:#}");
    assert_eq!(alert["labels"]["datname"], db.as_str(), "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert:#}");
    assert_eq!(ann(&alert, "expected"), "4000");
    assert_eq!(ann(&alert, "committed"), "1000");
    assert_eq!(ann(&alert, "missing"), "3000");
    assert_eq!(ann(&alert, "reported"), "4000");
    assert_eq!(ann(&alert, "source"), "partial.csv");
    assert!(ann(&alert, "summary").contains("3000 of 4000"), "{alert:#}");

    // The correct import is verified ok and never alerts, under any rule.
    wait_async("the correct import's ok verdict", WAIT, || async {
        (api_verdict(&daemon, &good).await.as_deref() == Some("ok")).then_some(())
    })
    .await;
    more_polls(&daemon, "main", 3.0).await;
    let view = api_alerts(&daemon).await;
    assert_eq!(alerts_with(&view, "import_id", &good), Vec::<Value>::new());
    assert_eq!(
        api_verdict(&daemon, &short).await.as_deref(),
        Some("shortfall")
    );
    // Still firing: a shortfall is a state, not an event.
    assert!(api_active(&daemon, "firing", &labels).await.is_some());

    // The same alert, delivered to a real Alertmanager.
    let delivered = wait_async("ImportRowShortfall in Alertmanager", WAIT, || async {
        am.find(&labels).await.into_iter().next()
    })
    .await;
    assert_eq!(delivered["labels"]["table"], "public.contacts");
    assert_eq!(delivered["labels"]["severity"], "critical");
    assert_eq!(ann(&delivered, "expected"), "4000");
    assert_eq!(ann(&delivered, "committed"), "1000");
    assert_eq!(ann(&delivered, "missing"), "3000");
    assert!(
        ann(&delivered, "runbook_url").ends_with("/docs/runbooks/ImportRowShortfall.md"),
        "{delivered:#}"
    );
    assert!(
        am.find(&[("import_id", good.as_str())]).await.is_empty(),
        "{:#?}",
        am.alerts().await
    );
    daemon.stop().await;
}

#[tokio::test]
async fn forgotten_commit_is_a_shortfall_of_every_row_naming_the_aborted_transaction() {
    let (cluster, db, audit) = setup("e2e_forgot").await;
    let dsn = cluster.dsn(&db);
    let daemon = Daemon::start(&one_target(
        "main",
        &dsn,
        "[targets.imports]\ngrace_period = \"100ms\"",
    ))
    .await;
    let (forgot, xid) = import_forgetting_commit(&dsn, &audit, 2_500).await;
    let labels = [
        ("alertname", "ImportRowShortfall"),
        ("import_id", forgot.as_str()),
    ];
    let alert = wait_async(
        "ImportRowShortfall for the forgotten commit",
        WAIT,
        || async { api_active(&daemon, "firing", &labels).await },
    )
    .await;
    assert_eq!(alert["labels"]["table"], "public.contacts", "{alert:#}");
    assert_eq!(ann(&alert, "expected"), "2500");
    assert_eq!(ann(&alert, "committed"), "0");
    assert_eq!(ann(&alert, "missing"), "2500");
    assert_eq!(ann(&alert, "xact_id"), xid.to_string());
    assert_eq!(ann(&alert, "xact_status"), "aborted");
    assert!(ann(&alert, "reason").contains("ABORTED"), "{alert:#}");
    // The audit row says committed, so it is a shortfall — not a rolled-back running import.
    more_polls(&daemon, "main", 2.0).await;
    let view = api_alerts(&daemon).await;
    let others: Vec<Value> = alerts_with(&view, "import_id", &forgot)
        .into_iter()
        .filter(|a| a["labels"]["alertname"] != "ImportRowShortfall")
        .collect();
    assert_eq!(others, Vec::<Value>::new());
    daemon.stop().await;
}

#[tokio::test]
async fn mass_delete_fires_table_rows_dropped_which_keeps_firing_after_the_event() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("e2e_drop");
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id int, email text);
         INSERT INTO contacts SELECT g, 'x' FROM generate_series(1, 10000) g;",
    );
    let dsn = cluster.dsn(&db);
    // Two targets on the same database: the default keep_firing_for (1h), and none, so the
    // test shows the one-poll event really is gone and only keep_firing_for holds the alert.
    let config = format!(
        "{}{}[targets.alerts.TableRowsDropped]\nkeep_firing_for = \"0s\"\n",
        one_target("held", &dsn, ""),
        one_target("bare", &dsn, ""),
    );
    let daemon = Daemon::start(&config).await;
    for target in ["held", "bare"] {
        daemon
            .wait_for("the 10000 rows to be seen", WAIT, |m| {
                let live = m.value(
                    "pgvigil_table_live_rows",
                    &[("target", target), ("table", "public.contacts")],
                )?;
                (live == 10_000.0).then_some(())
            })
            .await;
    }
    cluster.psql(&db, "DELETE FROM contacts WHERE id > 3000");

    let held = [("alertname", "TableRowsDropped"), ("target", "held")];
    let alert = wait_async("TableRowsDropped to fire", WAIT, || async {
        api_active(&daemon, "firing", &held).await
    })
    .await;
    assert_eq!(alert["labels"]["table"], "public.contacts", "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert:#}");
    assert_eq!(ann(&alert, "rows_before"), "10000");
    assert_eq!(ann(&alert, "lost"), "7000");
    assert_eq!(ann(&alert, "cause"), "DELETE");

    // Without keep_firing_for the alert resolves on the next poll: the condition is gone…
    wait_async("the bare target's alert to resolve", WAIT, || async {
        let view = api_alerts(&daemon).await;
        view["resolved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                r["labels"]["target"] == "bare" && r["labels"]["alertname"] == "TableRowsDropped"
            })
            .then_some(())
    })
    .await;
    // …yet with the default it is still firing several polls later, unchanged.
    more_polls(&daemon, "held", 5.0).await;
    let still = api_active(&daemon, "firing", &held)
        .await
        .expect("TableRowsDropped stopped firing before keep_firing_for ran out");
    assert_eq!(still["firing_since"], alert["firing_since"]);
    assert_eq!(ann(&still, "lost"), "7000");
    let view = api_alerts(&daemon).await;
    assert!(
        !view["resolved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["labels"]["target"] == "held"),
        "{view:#}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn waiting_pgbouncer_clients_fire_pool_clients_waiting_which_resolves_when_they_finish() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("e2e_pgb");
    let bouncer = TestPgbouncer::start(&cluster, 2);
    let config = format!(
        "[alerts.rules.PoolClientsWaiting]\nfor = \"0s\"\n{}",
        bouncer_config("bouncer-a", &bouncer)
    );
    let daemon = Daemon::start(&config).await;
    let labels = [
        ("alertname", "PoolClientsWaiting"),
        ("target", "bouncer-a"),
        ("datname", db.as_str()),
    ];

    // Ten clients through a pool of two, each holding its server connection for a second.
    let mut clients = JoinSet::new();
    for _ in 0..10 {
        let dsn = bouncer.dsn(&db);
        clients.spawn(async move {
            let client = connect(&dsn).await;
            client.simple_query("SELECT pg_sleep(1)").await.unwrap();
        });
    }
    let alert = wait_async("PoolClientsWaiting to fire", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    assert_eq!(alert["labels"]["usename"], cluster.superuser(), "{alert:#}");
    assert_eq!(ann(&alert, "pool_size"), "2");

    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let resolved = wait_async("PoolClientsWaiting to resolve", WAIT, || async {
        let view = api_alerts(&daemon).await;
        let active = view["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| has_labels(a, &labels));
        let resolved = view["resolved"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| has_labels(r, &labels))
            .cloned();
        resolved.filter(|_| !active)
    })
    .await;
    assert_eq!(
        resolved["firing_since"], alert["firing_since"],
        "{resolved:#}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn dropping_an_index_fires_slow_query_through_the_engine_for_that_statement() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("e2e_slow");
    let (calls, stop, task) = lookup_workload(&cluster, &db).await;
    let queryid = lookup_queryid(&cluster, &db).await;
    let config = format!(
        "{}[alerts.rules.SlowQuery]\nfor = \"0s\"\nmin_calls = 5\n",
        one_target(
            "main",
            &cluster.dsn(&db),
            "[targets.statements]\nbaseline_min_samples = 3"
        ),
    );
    let daemon = Daemon::start(&config).await;
    // Let the baselines warm up (baseline_min_samples intervals with calls, and then some);
    // a steady workload raises nothing.
    more_polls(&daemon, "main", 10.0).await;
    assert!(
        calls.load(Ordering::Relaxed) > 100,
        "the workload is not running"
    );
    let view = api_alerts(&daemon).await;
    assert_eq!(
        alerts_with(&view, "alertname", "SlowQuery"),
        Vec::<Value>::new(),
        "a steady workload raised SlowQuery"
    );

    cluster.psql(&db, "DROP INDEX t_id");
    let labels = [("alertname", "SlowQuery"), ("queryid", queryid.as_str())];
    let alert = wait_async("SlowQuery for the lookup", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    assert_eq!(alert["labels"]["datname"], db.as_str(), "{alert:#}");
    assert_eq!(ann(&alert, "reason"), "regression");
    assert_eq!(ann(&alert, "query"), "SELECT v FROM t WHERE id = $1");
    let mean: f64 = ann(&alert, "mean_seconds").parse().unwrap();
    let baseline: f64 = ann(&alert, "baseline_seconds").parse().unwrap();
    assert!(mean >= 5.0 * baseline, "{alert:#}");
    // Only the statement that regressed.
    let view = api_alerts(&daemon).await;
    for other in alerts_with(&view, "alertname", "SlowQuery") {
        assert_eq!(other["labels"]["queryid"], queryid.as_str(), "{other:#}");
    }
    daemon.stop().await;
}
