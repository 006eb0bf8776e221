//! PgBouncer through its admin console, with a real PgBouncer (Debian's package) in front of the
//! test cluster, configured as nobody tuned it for monitoring (no `ignore_startup_parameters`).

use std::path::Path;
use std::time::{Duration, Instant};

use pgvigil::Config;
use pgvigil::alert::rules::RULES;
use pgvigil::alert::{Evaluation, Rule};
use pgvigil::collect::Observations;
use pgvigil::collect::pgbouncer::{self, BouncerContext};
use pgvigil::config::{ConnectionSpec, LibpqEnv, PgbouncerConfig};
use pgvigil_testkit::{TestCluster, TestPgbouncer};
use tokio::task::JoinSet;

use crate::support::{Daemon, connect, http_get};

const WAIT: Duration = crate::support::CEILING;

pub fn bouncer_config(name: &str, bouncer: &TestPgbouncer) -> String {
    format!(
        "[[pgbouncers]]\nname = \"{name}\"\ndsn = \"{}\"\npoll_interval = \"200ms\"\nreconnect_max_backoff = \"1s\"\n",
        bouncer.admin_dsn()
    )
}

fn rule(alertname: &str) -> Box<dyn Rule> {
    let spec = RULES
        .iter()
        .find(|s| s.alertname == alertname)
        .unwrap_or_else(|| panic!("{alertname} is not in RULES"));
    (spec.build)(&toml::Table::new()).unwrap()
}

/// One poll of every PgBouncer collector over `client`, as the daemon does it.
async fn observe(client: &tokio_postgres::Client, config: &PgbouncerConfig) -> Observations {
    let mut observations = Observations {
        up: true,
        pgbouncer: Some(Default::default()),
        ..Observations::default()
    };
    let ctx = BouncerContext { client, config };
    for mut collector in pgbouncer::collectors() {
        if let Err(e) = collector.collect(&ctx, &mut observations).await {
            panic!("collector {} failed: {e}", collector.name());
        }
    }
    observations
}

/// Evaluate `rule` on fresh observations until `done` accepts the conditions.
async fn evaluate_until(
    what: &str,
    rule: &dyn Rule,
    client: &tokio_postgres::Client,
    config: &PgbouncerConfig,
    done: impl Fn(&[pgvigil::alert::Condition]) -> bool,
) -> Vec<pgvigil::alert::Condition> {
    let deadline = Instant::now() + WAIT;
    loop {
        let observations = observe(client, config).await;
        match rule.evaluate(&config.name, &observations) {
            Evaluation::Holds(conditions) if done(&conditions) => return conditions,
            other if Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last evaluation: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn waiting_clients_raise_the_gauge_and_pool_clients_waiting_fires_then_resolves() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("pgb_wait");
    let bouncer = TestPgbouncer::start(&cluster, 2);
    let daemon = Daemon::start(&bouncer_config("bouncer-a", &bouncer)).await;

    // The test's own admin session, opened exactly as the daemon opens its own (tokio-postgres
    // with application_name = pgvigil), so the rules see what the daemon sees.
    let config = PgbouncerConfig::new(
        "bouncer-a",
        ConnectionSpec::parse_admin(&bouncer.admin_dsn(), &LibpqEnv::default()).unwrap(),
    );
    let (admin, connection) = config
        .connection
        .connect_config(Duration::from_secs(5))
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .expect("the admin console accepts tokio-postgres' startup parameters");
    tokio::spawn(connection);
    let waiting = rule("PoolClientsWaiting");
    let saturated = rule("PoolSaturated");

    // Ten clients, a pool of two: eight queue. Each sleeps 1s, so the queue drains in ~5s.
    let mut clients = JoinSet::new();
    for _ in 0..10 {
        let dsn = bouncer.dsn(&db);
        clients.spawn(async move {
            let client = connect(&dsn).await;
            client.simple_query("SELECT pg_sleep(1)").await.unwrap();
        });
    }

    let queued = daemon
        .wait_for("clients waiting in the pool", WAIT, |m| {
            let n = m.value(
                "pgvigil_pgbouncer_clients",
                &[
                    ("target", "bouncer-a"),
                    ("datname", &db),
                    ("state", "waiting"),
                ],
            )?;
            (n >= 3.0).then_some(n)
        })
        .await;
    // While the first two server connections log in, all ten may wait.
    assert!(queued <= 10.0, "{queued} waiting with 10 clients");

    let fired = evaluate_until(
        "PoolClientsWaiting to fire",
        &*waiting,
        &admin,
        &config,
        |c| !c.is_empty(),
    )
    .await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].labels["datname"], db);
    assert_eq!(fired[0].labels["usename"], cluster.superuser());
    assert_eq!(fired[0].annotations["pool_size"], "2");
    let full = evaluate_until("PoolSaturated to fire", &*saturated, &admin, &config, |c| {
        !c.is_empty()
    })
    .await;
    assert_eq!(full[0].annotations["servers_active"], "2");

    let m = daemon.metrics().await;
    let servers = m.sum(
        "pgvigil_pgbouncer_servers",
        &[
            ("target", "bouncer-a"),
            ("datname", &db),
            ("state", "active"),
        ],
    );
    assert!(servers <= 2.0, "{servers} active servers over pool_size 2");
    let (_, page) = daemon.get("/").await;
    assert!(page.contains("<h2>PgBouncer pools</h2>"), "{page}");
    assert!(page.contains(&format!("<td>{db}</td>")), "{page}");
    assert_eq!(
        m.value(
            "pgvigil_pgbouncer_pool_size",
            &[("target", "bouncer-a"), ("datname", &db)]
        ),
        Some(2.0)
    );

    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }

    evaluate_until(
        "PoolClientsWaiting to resolve",
        &*waiting,
        &admin,
        &config,
        |c| c.is_empty(),
    )
    .await;
    let m = daemon
        .wait_for("the queue to drain", WAIT, |m| {
            let n = m.value(
                "pgvigil_pgbouncer_clients",
                &[
                    ("target", "bouncer-a"),
                    ("datname", &db),
                    ("state", "waiting"),
                ],
            )?;
            (n == 0.0).then(|| m.clone())
        })
        .await;
    // Every client ran one query; SHOW STATS counts them, and the waits, in seconds.
    let queries = m
        .value(
            "pgvigil_pgbouncer_queries_total",
            &[("target", "bouncer-a"), ("datname", &db)],
        )
        .unwrap();
    assert!(queries >= 10.0, "{queries} queries");
    let waited = m
        .value(
            "pgvigil_pgbouncer_client_wait_time_seconds_total",
            &[("target", "bouncer-a"), ("datname", &db)],
        )
        .unwrap();
    // Eight clients queued behind 1s sleeps: together they waited many seconds, which only
    // holds if microseconds were converted.
    assert!((4.0..1000.0).contains(&waited), "{waited}s waited");
    daemon.stop().await;
}

#[tokio::test]
async fn two_instances_are_watched_and_one_going_down_leaves_the_other_alone() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("pgb_two");
    let a = TestPgbouncer::start(&cluster, 2);
    let b = TestPgbouncer::start(&cluster, 2);
    let toml = format!(
        "{}{}",
        bouncer_config("bouncer-a", &a),
        bouncer_config("bouncer-b", &b)
    );
    let config = Config::parse(Path::new("test.toml"), &toml, &LibpqEnv::default()).unwrap();
    let daemon = Daemon::start_with(config).await;
    // A client on each, so each has a pool to show.
    let on_a = connect(&a.dsn(&db)).await;
    let on_b = connect(&b.dsn(&db)).await;
    on_a.simple_query("SELECT 1").await.unwrap();
    on_b.simple_query("SELECT 1").await.unwrap();

    // Each SHOW family is its own collector with its own snapshot: wait until every one the
    // assertions below read has published, with the test's clients counted (waiting on SHOW
    // POOLS alone and then reading SHOW DATABASES was the flake of issue 16).
    let m = daemon
        .wait_for("both instances polled by every SHOW collector", WAIT, |m| {
            let ok = ["bouncer-a", "bouncer-b"].iter().all(|t| {
                m.value("pgvigil_up", &[("target", t)]) == Some(1.0)
                    && m.value(
                        "pgvigil_pgbouncer_clients",
                        &[("target", t), ("datname", &db), ("state", "active")],
                    ) == Some(1.0)
                    && m.matching("pgvigil_pgbouncer_info", &[("target", t)])
                        .next()
                        .is_some()
                    && m.value("pgvigil_pgbouncer_max_client_connections", &[("target", t)])
                        .is_some()
                    && m.value("pgvigil_pgbouncer_client_connections", &[("target", t)])
                        == Some(2.0)
                    && m.matching(
                        "pgvigil_pgbouncer_database_info",
                        &[("target", t), ("datname", db.as_str())],
                    )
                    .next()
                    .is_some()
            });
            ok.then(|| m.clone())
        })
        .await;
    for t in ["bouncer-a", "bouncer-b"] {
        let by_target = [("target", t)];
        let (labels, _) = m
            .matching("pgvigil_pgbouncer_info", &by_target)
            .next()
            .unwrap_or_else(|| panic!("no pgvigil_pgbouncer_info for {t}"));
        assert!(labels["version"].starts_with("1."), "{labels:?}");
        assert_eq!(
            m.value("pgvigil_pgbouncer_max_client_connections", &[("target", t)]),
            Some(100.0)
        );
        // The test's client plus pgvigil's own admin session.
        assert_eq!(
            m.value("pgvigil_pgbouncer_client_connections", &[("target", t)]),
            Some(2.0)
        );
        let by_db = [("target", t), ("datname", db.as_str())];
        let (info, _) = m
            .matching("pgvigil_pgbouncer_database_info", &by_db)
            .next()
            .expect("SHOW DATABASES lists the pooled database");
        assert_eq!(info["port"], cluster.port().to_string());
    }
    // The admin console's own pool is pgvigil's, not an application's.
    assert!(
        m.matching("pgvigil_pgbouncer_clients", &[("datname", "pgbouncer")])
            .next()
            .is_none()
    );

    b.stop();
    let polled_a = m
        .value(
            "pgvigil_last_successful_poll_timestamp_seconds",
            &[("target", "bouncer-a"), ("collector", "pgbouncer_pools")],
        )
        .unwrap();
    daemon
        .wait_for("bouncer-b down, bouncer-a still polled", WAIT, |m| {
            let b_down = m.value("pgvigil_up", &[("target", "bouncer-b")]) == Some(0.0)
                && m.matching("pgvigil_pgbouncer_info", &[("target", "bouncer-b")])
                    .next()
                    .is_none();
            let a_fresh = m.value("pgvigil_up", &[("target", "bouncer-a")]) == Some(1.0)
                && m.value(
                    "pgvigil_last_successful_poll_timestamp_seconds",
                    &[("target", "bouncer-a"), ("collector", "pgbouncer_pools")],
                )? > polled_a
                && m.value(
                    "pgvigil_pgbouncer_clients",
                    &[
                        ("target", "bouncer-a"),
                        ("datname", &db),
                        ("state", "active"),
                    ],
                ) == Some(1.0);
            (b_down && a_fresh).then_some(())
        })
        .await;

    let (status, body) = http_get(daemon.addr, "/api/v1/targets", None).await;
    assert_eq!(status, 200);
    let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
    let b_status = targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bouncer-b")
        .expect("bouncer-b in /api/v1/targets");
    assert_eq!(b_status["kind"], "pgbouncer");
    assert_eq!(b_status["state"], "down");
    assert!(
        b_status["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{b_status}"
    );
    drop(on_a);
    daemon.stop().await;
}

#[tokio::test]
async fn a_postgres_server_in_place_of_pgbouncer_is_down_with_a_hint() {
    // Pointing a [[pgbouncers]] entry at PostgreSQL is an easy mistake: it must say so.
    let cluster = TestCluster::start();
    let dsn = format!(
        "host=127.0.0.1 port={} user={}",
        cluster.port(),
        cluster.superuser()
    );
    let toml =
        format!("[[pgbouncers]]\nname = \"wrong\"\ndsn = \"{dsn}\"\npoll_interval = \"200ms\"\n");
    let daemon = Daemon::start(&toml).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = daemon.get("/api/v1/targets").await;
        let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
        let error = targets[0]["last_error"].as_str().unwrap_or("").to_owned();
        if !error.is_empty() {
            assert_eq!(targets[0]["state"], "down");
            assert!(
                error.contains("does not look like a PgBouncer admin console"),
                "{error}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no error reported: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = daemon.metrics().await;
    assert_eq!(m.value("pgvigil_up", &[("target", "wrong")]), Some(0.0));
    daemon.stop().await;
}

#[test]
fn pool_rules_are_registered_with_runbooks_and_build_with_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "PoolClientsWaiting",
        "PoolMaxWaitHigh",
        "PoolSaturated",
        "PoolClientConnectionsNearLimit",
    ] {
        assert_eq!(rule(name).alertname(), name);
        let runbook = root.join(format!("docs/runbooks/{name}.md"));
        let text = std::fs::read_to_string(&runbook)
            .unwrap_or_else(|e| panic!("{}: {e}", runbook.display()));
        assert!(
            text.starts_with(&format!("# {name}\n")),
            "{}",
            runbook.display()
        );
    }
}
