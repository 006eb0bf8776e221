//! Every supported PostgreSQL major version: a cluster starts with `pg_stat_statements`
//! preloaded, and a standby of it streams, pauses and catches up. One test per version, so
//! they run in parallel and a failure names its version. A version that is not installed
//! fails its test (run `scripts/install-test-deps.sh`), it is not skipped.

use std::time::Duration;

use pgvigil_testkit::{SUPPORTED_VERSIONS, TestCluster, available_versions, wait_until};

macro_rules! version_tests {
    ($($name:ident: $major:literal,)*) => {
        $(
            #[test]
            fn $name() {
                check_version($major);
            }
        )*

        #[test]
        fn every_supported_version_has_a_test() {
            assert_eq!(SUPPORTED_VERSIONS, [$($major),*]);
        }
    };
}

version_tests! {
    postgres_13: 13,
    postgres_14: 14,
    postgres_15: 15,
    postgres_16: 16,
    postgres_17: 17,
    postgres_18: 18,
}

fn check_version(major: u32) {
    let cluster = TestCluster::start_version(major);
    assert_eq!(cluster.major_version(), major);
    assert_eq!(cluster.server_version_num() / 10_000, major);
    assert!(
        available_versions().contains(&major),
        "{:?}",
        available_versions()
    );

    // The template's settings, on every version.
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT current_setting('shared_preload_libraries'), \
             current_setting('pg_stat_statements.track'), current_setting('track_io_timing'), \
             current_setting('wal_level'), current_setting('max_wal_senders')::int > 0"
        ),
        "pg_stat_statements|all|on|replica|t"
    );
    let db = cluster.create_database("versions");
    cluster.psql(
        &db,
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)",
    );
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT sum(calls) > 0 FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        "t"
    );

    // A standby of the same version streams, pauses and catches up (the backup and pause
    // functions differ before 15 and 14).
    let standby = cluster.start_standby();
    assert_eq!(standby.major_version(), major);
    assert_eq!(standby.psql(&db, "SELECT pg_is_in_recovery()"), "t");
    let name = standby.standby_name().unwrap();
    assert_eq!(
        cluster.psql(
            "postgres",
            &format!("SELECT state FROM pg_stat_replication WHERE application_name = '{name}'")
        ),
        "streaming"
    );
    assert_eq!(standby.psql(&db, "SELECT count(*) FROM t"), "2");
    standby.pause_replay();
    cluster.psql(&db, "INSERT INTO t VALUES (3)");
    let written = cluster.generate_wal(1);
    let received = format!("SELECT pg_last_wal_receive_lsn() >= '{written}'::pg_lsn");
    wait_until(
        "the paused standby to receive the insert",
        Duration::from_secs(30),
        || (standby.psql("postgres", &received) == "t").then_some(()),
    );
    assert_eq!(
        standby.psql(&db, "SELECT count(*) FROM t"),
        "2",
        "replay is paused"
    );
    standby.resume_replay();
    standby.wait_for_replay();
    assert_eq!(standby.psql(&db, "SELECT count(*) FROM t"), "3");
}

#[test]
#[should_panic(expected = "run scripts/install-test-deps.sh")]
fn a_missing_version_says_how_to_install_it() {
    TestCluster::start_version(12_345);
}
