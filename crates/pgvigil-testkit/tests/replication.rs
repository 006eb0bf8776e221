//! Streaming standbys and the replication helpers, against real servers of the default version
//! (every version's standby is started in `versions.rs`).

use std::time::Duration;

use pgvigil_testkit::{TestCluster, wait_until};

const WAIT: Duration = Duration::from_secs(120);

/// `state` of the standby's row in the primary's `pg_stat_replication`, or `absent`.
fn sender_state(primary: &TestCluster, name: &str) -> String {
    primary.psql(
        "postgres",
        &format!(
            "SELECT coalesce(max(state), 'absent') FROM pg_stat_replication \
             WHERE application_name = '{name}'"
        ),
    )
}

#[test]
fn standby_streams_and_follows_the_primary() {
    let primary = TestCluster::start_private();
    let db = primary.create_database("replicated");
    primary.psql(&db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)");

    let standby = primary.start_standby();
    let name = standby
        .standby_name()
        .expect("a standby has a name")
        .to_owned();
    assert!(standby.is_private());
    assert_ne!(standby.port(), primary.port());
    assert_eq!(primary.standby_name(), None);

    // The primary lists it as streaming; the standby is in recovery and has the data.
    assert_eq!(sender_state(&primary, &name), "streaming");
    assert_eq!(
        primary.psql(
            "postgres",
            &format!(
                "SELECT client_addr, sync_state FROM pg_stat_replication \
                 WHERE application_name = '{name}'"
            )
        ),
        "127.0.0.1|async"
    );
    assert_eq!(standby.psql(&db, "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(
        standby.psql(
            "postgres",
            "SELECT status, sender_port FROM pg_stat_wal_receiver"
        ),
        format!("streaming|{}", primary.port())
    );
    assert_eq!(standby.psql(&db, "SELECT count(*) FROM t"), "1");
    // Read-only.
    let err = standby
        .try_psql(&db, "INSERT INTO t VALUES (2)")
        .unwrap_err();
    assert!(err.contains("read-only transaction"), "{err}");

    // What the primary writes, the standby replays.
    primary.psql(&db, "INSERT INTO t VALUES (2)");
    let lsn = standby.wait_for_replay();
    assert_eq!(standby.psql(&db, "SELECT count(*) FROM t"), "2");
    assert_eq!(
        standby.psql(
            "postgres",
            &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")
        ),
        "t"
    );

    // Stopped, it leaves pg_stat_replication; started again, it streams again.
    standby.stop();
    wait_until(
        "the stopped standby to leave pg_stat_replication",
        WAIT,
        || (sender_state(&primary, &name) == "absent").then_some(()),
    );
    primary.psql(&db, "INSERT INTO t VALUES (3)");
    standby.restart();
    standby.wait_for_streaming();
    assert_eq!(sender_state(&primary, &name), "streaming");
    standby.wait_for_replay();
    assert_eq!(standby.psql(&db, "SELECT count(*) FROM t"), "3");

    // Dropping the standby removes it, and the primary goes on alone.
    let data = standby.data_dir().unwrap();
    drop(standby);
    assert!(!data.exists(), "{} should be removed", data.display());
    wait_until(
        "the dropped standby to leave pg_stat_replication",
        WAIT,
        || (sender_state(&primary, &name) == "absent").then_some(()),
    );
}

#[test]
fn paused_replay_shows_growing_lag_until_resumed() {
    let primary = TestCluster::start_private();
    let standby = primary.start_standby();
    let name = standby.standby_name().unwrap().to_owned();
    standby.wait_for_replay();
    standby.pause_replay();
    assert_eq!(
        standby.psql("postgres", "SELECT pg_is_wal_replay_paused()"),
        "t"
    );

    // Replay lag in bytes as the primary sees it (fed back by the standby every second).
    let lag_on_primary = || -> i64 {
        primary
            .psql(
                "postgres",
                &format!(
                    "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), -1)::bigint \
                     FROM pg_stat_replication WHERE application_name = '{name}'"
                ),
            )
            .parse()
            .unwrap()
    };
    // ... and as the standby itself sees it: received but not replayed.
    let lag_on_standby = || -> i64 {
        standby
            .psql(
                "postgres",
                "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint",
            )
            .parse()
            .unwrap()
    };
    let mut previous = 0;
    for round in 1..=2 {
        let written = primary.generate_wal(1 << 20);
        let received = format!("SELECT pg_last_wal_receive_lsn() >= '{written}'::pg_lsn");
        wait_until("the standby to receive the new WAL", WAIT, || {
            (standby.psql("postgres", &received) == "t").then_some(())
        });
        let lag = lag_on_standby();
        assert!(lag >= 1 << 20, "round {round}: standby-side lag {lag}");
        assert!(
            lag > previous,
            "round {round}: lag {lag} did not grow from {previous}"
        );
        previous = lag;
        wait_until("the primary to see the replay lag", WAIT, || {
            (lag_on_primary() >= lag).then_some(())
        });
    }

    standby.resume_replay();
    standby.wait_for_replay();
    // Replay has reached what the primary had written; the standby may already have received
    // a record more (the primary never stops writing altogether), so wait for it, too.
    wait_until("the standby to replay all it received", WAIT, || {
        (lag_on_standby() == 0).then_some(())
    });
    wait_until("the primary to see the lag gone", WAIT, || {
        (lag_on_primary() == 0).then_some(())
    });
}

#[test]
fn promoted_standby_accepts_writes() {
    let primary = TestCluster::start_private();
    let standby = primary.start_standby();
    standby.promote();
    assert_eq!(standby.psql("postgres", "SELECT pg_is_in_recovery()"), "f");
    standby.psql("postgres", "CREATE TABLE after_promotion (id int)");
    assert!(
        standby.standby_name().is_some(),
        "the name stays after promotion"
    );
}

#[test]
fn physical_slot_without_consumer_retains_wal() {
    let cluster = TestCluster::start_private();
    cluster.create_physical_slot("held_back");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT slot_type, active, restart_lsn IS NOT NULL FROM pg_replication_slots \
             WHERE slot_name = 'held_back'"
        ),
        "physical|f|t"
    );
    let written = cluster.generate_wal(3 << 20);
    let retained: i64 = cluster
        .psql(
            "postgres",
            &format!(
                "SELECT pg_wal_lsn_diff('{written}'::pg_lsn, restart_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = 'held_back'"
            ),
        )
        .parse()
        .unwrap();
    assert!(retained >= 3 << 20, "retained {retained} bytes");
}

#[test]
#[should_panic(expected = "needs a standby")]
fn pausing_a_primary_panics() {
    TestCluster::start_private().pause_replay();
}

#[test]
#[should_panic(expected = "needs a private cluster")]
fn a_shared_server_has_no_standby() {
    let server = TestCluster::start_private();
    TestCluster::from_dsn(&server.dsn("postgres")).start_standby();
}
