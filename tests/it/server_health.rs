//! The server-health collectors and their alerts against real PostgreSQL: a provoked deadlock,
//! a session holding the xmin horizon while XIDs are consumed, a setting pending a restart and
//! the restart itself, and database sizes on their own schedule.

use std::time::Duration;

use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, Metrics, connect, one_target};
use crate::support_alerting::{api_active, wait_async};
use crate::support_package::is_root;

const WAIT: Duration = crate::support::CEILING;

/// Polls of `collector` of target main so far.
fn polls(m: &Metrics, collector: &str) -> f64 {
    m.sum(
        "pgvigil_poll_duration_seconds_count",
        &[("target", "main"), ("collector", collector)],
    )
}

#[tokio::test]
async fn a_deadlock_counts_and_fires_deadlocks_detected() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("deadlock");
    cluster.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0)",
    );
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), "")).await;
    let before = daemon
        .wait_for("the deadlock counter", WAIT, |m| {
            m.value("pgvigil_database_deadlocks_total", &[("datname", &db)])
        })
        .await;
    assert_eq!(before, 0.0);

    // Two sessions lock the rows in opposite orders.
    let a = connect(&cluster.dsn(&db)).await;
    let b = connect(&cluster.dsn(&db)).await;
    a.batch_execute("BEGIN; UPDATE t SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("BEGIN; UPDATE t SET v = 1 WHERE id = 2")
        .await
        .unwrap();
    let first = tokio::spawn(async move {
        let r = a.batch_execute("UPDATE t SET v = 2 WHERE id = 2").await;
        (a, r)
    });
    let second = b.batch_execute("UPDATE t SET v = 2 WHERE id = 1").await;
    let (a, first) = first.await.unwrap();
    let failed: Vec<_> = [&first, &second]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "one of the two is cancelled: {first:?} {second:?}"
    );
    assert_eq!(
        failed[0].code(),
        Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
    );
    let _ = a.batch_execute("ROLLBACK").await;
    let _ = b.batch_execute("ROLLBACK").await;

    daemon
        .wait_for("the deadlock to be counted", WAIT, |m| {
            (m.value("pgvigil_database_deadlocks_total", &[("datname", &db)]) == Some(1.0))
                .then_some(())
        })
        .await;
    let labels = [("alertname", "DeadlocksDetected"), ("datname", db.as_str())];
    let firing = wait_async("DeadlocksDetected to fire", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    assert_eq!(firing["annotations"]["new_deadlocks"], "1", "{firing}");
    assert_eq!(firing["labels"]["severity"], "warning", "{firing}");
    daemon.stop().await;
}

#[tokio::test]
async fn wraparound_risk_names_the_backend_holding_the_oldest_xmin() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("wraparound");
    // autovacuum_freeze_max_age is 200 million: a ratio of 5e-6 fires at 1000 XIDs.
    let daemon = Daemon::start(&one_target(
        "main",
        &cluster.dsn(&db),
        "[targets.alerts.WraparoundRisk]\nfreeze_max_age_ratio = 0.000005\n",
    ))
    .await;

    // A session holding a snapshot: its xmin is the horizon.
    let holder = connect(&cluster.dsn(&db)).await;
    holder
        .batch_execute(
            "SET application_name = 'horizon-holder';
             BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class",
        )
        .await
        .unwrap();
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Consume 1500 transaction IDs, one transaction each.
    let burner = connect(&cluster.dsn(&db)).await;
    burner
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..1500 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$",
        )
        .await
        .unwrap();

    // The collector reads the databases' ages and the holders in two queries, and a poll may
    // run while the XIDs are being consumed: wait for one poll that saw both after the burn.
    daemon
        .wait_for(
            "the backend's xmin age and the database's XID age to grow with the consumed XIDs",
            WAIT,
            |m| {
                let horizon = m.value("pgvigil_xmin_horizon_age", &[("holder", "backend")])?;
                let database = m.value("pgvigil_database_xid_age", &[("datname", &db)])?;
                (horizon >= 1500.0 && database >= 1500.0).then_some(())
            },
        )
        .await;
    let labels = [("alertname", "WraparoundRisk"), ("datname", db.as_str())];
    let firing = wait_async("WraparoundRisk to fire", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    let named = firing["annotations"]["horizon_holder"].as_str().unwrap();
    assert!(
        named.contains(&format!("backend pid {pid} ")) && named.contains("\"horizon-holder\""),
        "{firing}"
    );
    assert_eq!(firing["annotations"]["horizon_holder_kind"], "backend");
    assert_eq!(firing["labels"]["severity"], "warning");
    holder.batch_execute("COMMIT").await.unwrap();
    daemon.stop().await;
}

#[tokio::test]
async fn a_pending_restart_setting_fires_then_the_restart_fires_postgres_restarted() {
    let cluster = TestCluster::start_private();
    let daemon = Daemon::start(&one_target("main", &cluster.dsn("postgres"), "")).await;
    let started = daemon
        .wait_for("the postmaster start time", WAIT, |m| {
            m.value("pgvigil_server_start_time_seconds", &[])
        })
        .await;
    let m = daemon.metrics().await;
    assert_eq!(m.value("pgvigil_settings_pending_restart", &[]), Some(0.0));
    // The server's statement_timeout, not the one pgvigil's session sets for itself.
    assert_eq!(
        m.value("pgvigil_setting", &[("name", "statement_timeout")]),
        Some(0.0)
    );

    cluster.psql("postgres", "ALTER SYSTEM SET max_connections = 61");
    cluster.reload();
    daemon
        .wait_for("max_connections pending a restart", WAIT, |m| {
            m.value(
                "pgvigil_setting_pending_restart",
                &[("name", "max_connections")],
            )
            .map(|_| ())
        })
        .await;
    let pending = wait_async("SettingsPendingRestart to fire", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[("alertname", "SettingsPendingRestart")],
        )
        .await
    })
    .await;
    assert_eq!(pending["annotations"]["settings"], "max_connections");
    assert_eq!(pending["labels"]["severity"], "info");

    cluster.restart();
    daemon
        .wait_for("the new start time and setting", WAIT, |m| {
            let restarted = m
                .value("pgvigil_server_start_time_seconds", &[])
                .is_some_and(|t| t > started);
            let applied = m.value("pgvigil_setting", &[("name", "max_connections")]) == Some(61.0);
            (restarted && applied).then_some(())
        })
        .await;
    let restarted = wait_async("PostgresRestarted to fire", WAIT, || async {
        api_active(&daemon, "firing", &[("alertname", "PostgresRestarted")]).await
    })
    .await;
    assert!(
        restarted["annotations"]["previous_started_at"] != restarted["annotations"]["started_at"],
        "{restarted}"
    );
    // The restart applied the setting: nothing pends any more.
    wait_async("SettingsPendingRestart to resolve", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[("alertname", "SettingsPendingRestart")],
        )
        .await
        .is_none()
        .then_some(())
    })
    .await;
    assert_eq!(
        daemon
            .metrics()
            .await
            .value("pgvigil_settings_pending_restart", &[]),
        Some(0.0)
    );
    daemon.stop().await;
}

#[tokio::test]
async fn database_sizes_run_on_their_own_schedule_and_fire_database_growth() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("sizes");
    let interval = 2.0;
    let started = std::time::Instant::now();
    let daemon = Daemon::start(&one_target(
        "main",
        &cluster.dsn(&db),
        "[targets.database_sizes]\ninterval = \"2s\"\n\
         [targets.alerts.DatabaseGrowth]\nfor = \"0s\"\nmax_bytes_per_hour = 1000000\n",
    ))
    .await;
    let first = daemon
        .wait_for("the first size", WAIT, |m| {
            m.value("pgvigil_database_size_bytes", &[("datname", &db)])
        })
        .await;
    // About 8 MB of rows.
    cluster.psql(
        &db,
        "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 30000) g",
    );
    let m = daemon
        .wait_for("a larger size", WAIT, |m| {
            m.value("pgvigil_database_size_bytes", &[("datname", &db)])
                .filter(|size| *size > first + 4e6)
                .map(|_| m.clone())
        })
        .await;
    assert!(
        polls(&m, "database_sizes") >= 2.0,
        "a larger size needs a second run"
    );
    // What the schedule guarantees: runs of database_sizes start at least its interval (2 s)
    // apart, so in t seconds it ran at most 1 + t/2 times, however fast or slow the polls
    // are; the server collector, every 200 ms poll, is not held to that. Waited for, since
    // on a loaded machine a poll may take long; the bound holds in every sample.
    let most = |since: std::time::Instant| 1.0 + (since.elapsed().as_secs_f64() / interval).floor();
    daemon
        .wait_for(
            "the server collector to run more often than database_sizes may",
            WAIT,
            |m| {
                let bound = most(started);
                let sizes = polls(m, "database_sizes");
                assert!(
                    sizes <= bound,
                    "database_sizes ran {sizes} times, at most {bound} allowed"
                );
                (polls(m, "server") > bound).then_some(())
            },
        )
        .await;
    let labels = [("alertname", "DatabaseGrowth"), ("datname", db.as_str())];
    let firing = wait_async("DatabaseGrowth to fire", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    let rate: f64 = firing["annotations"]["bytes_per_hour"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 1e6, "{firing}");
    assert_eq!(m.value("pgvigil_database_sizes_unmeasured", &[]), Some(0.0));
    daemon.stop().await;
}

/// The server-health collectors of the default set.
const SERVER_HEALTH: [&str; 4] = ["server", "database_stats", "wraparound", "database_sizes"];

/// Poll errors of the server-health collectors of target main.
fn server_health_errors(m: &Metrics) -> f64 {
    SERVER_HEALTH
        .iter()
        .map(|c| {
            m.sum(
                "pgvigil_poll_errors_total",
                &[("target", "main"), ("collector", c)],
            )
        })
        .sum()
}

#[tokio::test]
async fn a_promoted_standby_fires_recovery_role_changed() {
    let primary = TestCluster::start_private();
    let standby = primary.start_standby();
    let daemon = Daemon::start(&one_target("main", &standby.dsn("postgres"), "")).await;
    daemon
        .wait_for(
            "the standby seen in recovery by every collector",
            WAIT,
            |m| {
                let polled = SERVER_HEALTH.iter().all(|c| polls(m, c) >= 1.0);
                (polled && m.value("pgvigil_server_in_recovery", &[]) == Some(1.0)).then_some(())
            },
        )
        .await;

    standby.promote();
    let m = daemon
        .wait_for("the promotion", WAIT, |m| {
            (m.value("pgvigil_server_in_recovery", &[]) == Some(0.0)).then(|| m.clone())
        })
        .await;
    let changed = wait_async("RecoveryRoleChanged to fire", WAIT, || async {
        api_active(&daemon, "firing", &[("alertname", "RecoveryRoleChanged")]).await
    })
    .await;
    assert_eq!(changed["annotations"]["from"], "standby", "{changed}");
    assert_eq!(changed["annotations"]["to"], "primary", "{changed}");
    // A promotion is no restart.
    assert!(
        api_active(&daemon, "firing", &[("alertname", "PostgresRestarted")])
            .await
            .is_none()
    );
    assert_eq!(
        server_health_errors(&m),
        0.0,
        "no collector failed on the standby"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn server_health_collectors_complete_while_a_ddl_lock_is_held() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("ddllock");
    cluster.psql(&db, "CREATE TABLE busy (id int)");
    // An ALTER TABLE's lock, held by a transaction that does not end.
    let locker = connect(&cluster.dsn(&db)).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let daemon = Daemon::start(&one_target(
        "main",
        &cluster.dsn(&db),
        "[targets.database_sizes]\ninterval = \"1s\"\n",
    ))
    .await;
    let m = daemon
        .wait_for("three runs of every server-health collector", WAIT, |m| {
            SERVER_HEALTH
                .iter()
                .all(|c| polls(m, c) >= 3.0)
                .then(|| m.clone())
        })
        .await;
    assert_eq!(server_health_errors(&m), 0.0);
    assert!(
        m.value("pgvigil_database_size_bytes", &[("datname", &db)])
            .is_some()
    );
    // The lock is WAL-logged for standbys, which gives the locker a transaction ID: the
    // horizon names a backend.
    assert!(
        m.value("pgvigil_xmin_horizon_age", &[("holder", "backend")])
            .is_some()
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    daemon.stop().await;
}

#[tokio::test]
async fn a_database_pgvigil_may_not_measure_costs_only_its_own_size() {
    let cluster = TestCluster::start_private();
    let open = cluster.create_database("sizes_open");
    let closed = cluster.create_database("sizes_closed");
    // A role without pg_monitor: pg_database_size needs CONNECT on each database.
    cluster.psql(
        "postgres",
        &format!("CREATE ROLE sizer LOGIN; REVOKE CONNECT ON DATABASE {closed} FROM PUBLIC"),
    );
    let dsn = format!("{} user=sizer", cluster.dsn(&open));
    let config = format!(
        "[[targets]]\nname = \"main\"\ndsn = \"{dsn}\"\npoll_interval = \"200ms\"\n\
         [targets.databases]\ninclude = [\"sizes_*\"]\n"
    );
    let daemon = Daemon::start(&config).await;
    let m = daemon
        .wait_for("a run of database_sizes", WAIT, |m| {
            (polls(m, "database_sizes") >= 1.0).then(|| m.clone())
        })
        .await;
    assert!(
        m.value("pgvigil_database_size_bytes", &[("datname", &open)])
            .is_some()
    );
    assert_eq!(
        m.value("pgvigil_database_size_bytes", &[("datname", &closed)]),
        None
    );
    assert_eq!(m.value("pgvigil_database_sizes_unmeasured", &[]), Some(1.0));
    assert_eq!(
        m.sum(
            "pgvigil_poll_errors_total",
            &[("target", "main"), ("collector", "database_sizes")]
        ),
        0.0
    );
    daemon.stop().await;
}

#[tokio::test]
async fn the_horizon_holder_can_be_a_slot_or_a_prepared_transaction() {
    let cluster = TestCluster::builder()
        .setting("wal_level", "logical")
        .setting("max_prepared_transactions", "2")
        .start();
    let db = cluster.create_database("holders");
    cluster.psql(&db, "CREATE TABLE t (id int)");
    let burn = |n: u32| {
        cluster.psql(
            &db,
            &format!(
                "DO $$ BEGIN FOR i IN 1..{n} LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$"
            ),
        );
    };
    // Oldest: a logical slot's catalog_xmin; younger: a prepared transaction.
    cluster.psql(
        &db,
        "SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')",
    );
    burn(500);
    cluster.psql(
        &db,
        "BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'tx_forgotten'",
    );
    burn(1000);

    let daemon = Daemon::start(&one_target(
        "main",
        &cluster.dsn(&db),
        "[targets.alerts.WraparoundRisk]\nfreeze_max_age_ratio = 0.000005\n",
    ))
    .await;
    let m = daemon
        .wait_for("both holders", WAIT, |m| {
            let slot = m.value(
                "pgvigil_xmin_horizon_age",
                &[("holder", "replication_slot_catalog")],
            )?;
            let prepared = m.value(
                "pgvigil_xmin_horizon_age",
                &[("holder", "prepared_transaction")],
            )?;
            Some((slot, prepared, m.clone()))
        })
        .await;
    let (slot, prepared, m) = m;
    assert!(
        slot >= 1500.0 && prepared >= 1000.0 && slot > prepared,
        "{slot} {prepared}"
    );
    assert!(
        m.value(
            "pgvigil_xmin_horizon_age_seconds",
            &[("holder", "prepared_transaction")]
        )
        .is_some()
    );
    let labels = [("alertname", "WraparoundRisk"), ("datname", db.as_str())];
    let firing = wait_async("WraparoundRisk to fire", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    let named = firing["annotations"]["horizon_holder"].as_str().unwrap();
    assert!(
        named.contains("replication slot \"cdc\"") && named.contains("catalog_xmin"),
        "{firing}"
    );
    let all = firing["annotations"]["horizon_holders"].as_str().unwrap();
    assert!(
        all.contains("prepared transaction \"tx_forgotten\""),
        "{firing}"
    );
    cluster.psql(&db, "ROLLBACK PREPARED 'tx_forgotten'");
    cluster.psql(&db, "SELECT pg_drop_replication_slot('cdc')");
    daemon.stop().await;
}

#[tokio::test]
async fn a_corrupted_page_fires_checksum_failures() {
    // Debian's build: the npm builds of the other versions ship no pg_checksums.
    let cluster = TestCluster::start_version(15);
    let db = cluster.create_database("checksums");
    cluster.psql(
        &db,
        "CREATE TABLE t AS SELECT g, repeat('x', 50) AS pad FROM generate_series(1, 1000) g; CHECKPOINT",
    );
    let file = cluster.psql(&db, "SELECT pg_relation_filepath('t')");
    let data_dir = cluster.data_dir().expect("a private cluster");
    // Data checksums on (pg_checksums, on the stopped cluster, as the cluster's owner), then
    // garbage in the middle of the table's first page.
    cluster.stop();
    let pg_checksums = cluster.bindir().join("pg_checksums");
    let mut command = if is_root() {
        let mut c = std::process::Command::new(pgvigil_testkit::find_program("runuser"));
        c.args(["-u", "postgres", "--"]).arg(&pg_checksums);
        c
    } else {
        std::process::Command::new(&pg_checksums)
    };
    let out = command
        .arg("--enable")
        .arg("-D")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(data_dir.join(&file))
            .unwrap();
        f.seek(SeekFrom::Start(4000)).unwrap();
        f.write_all(&[0xA5; 64]).unwrap();
    }
    cluster.restart();

    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), "")).await;
    daemon
        .wait_for("the checksum failure counter", WAIT, |m| {
            m.value(
                "pgvigil_database_checksum_failures_total",
                &[("datname", &db)],
            )
        })
        .await;
    let read = cluster.try_psql(&db, "SELECT count(*) FROM t");
    assert!(read.is_err(), "reading the corrupted page fails: {read:?}");
    daemon
        .wait_for("the failure to be counted", WAIT, |m| {
            m.value(
                "pgvigil_database_checksum_failures_total",
                &[("datname", &db)],
            )
            .filter(|n| *n >= 1.0)
        })
        .await;
    let labels = [("alertname", "ChecksumFailures"), ("datname", db.as_str())];
    let firing = wait_async("ChecksumFailures to fire", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    assert_eq!(firing["labels"]["severity"], "critical", "{firing}");
    daemon.stop().await;
}
