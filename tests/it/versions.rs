//! The daemon against every supported PostgreSQL major version (`pgvigil_testkit::
//! SUPPORTED_VERSIONS`; the npm builds of 13, 14, 16, 17 and 18 that
//! `scripts/install-test-deps.sh` installs, and Debian's 15): every default collector publishes
//! its series and no poll fails. One test per version, so they run in parallel and a failure
//! names its version; a version that is not installed fails, it is not skipped.

use std::path::Path;
use std::time::Duration;

use pgvigil::config::LibpqEnv;
use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, Metrics, connect, one_target};

const WAIT: Duration = crate::support::CEILING;

/// The collectors a `[[targets]]` entry runs with no collector configured, on PostgreSQL
/// `major`: the registry's entries enabled by default that support the version (so a new
/// default collector is tested here without being listed).
fn default_collectors(major: u32) -> Vec<&'static str> {
    let toml = one_target("main", "host=localhost dbname=postgres", "");
    let config = pgvigil::Config::parse(Path::new("versions.toml"), &toml, &LibpqEnv::default())
        .expect("a target with no collector configured");
    pgvigil::collect::registry::POSTGRES
        .iter()
        .filter(|spec| {
            spec.enabled(&config.targets[0]) && spec.versions.supports(major as i32 * 10_000)
        })
        .map(|spec| spec.name)
        .collect()
}

#[test]
fn the_default_collectors_are_the_registrys_enabled_ones() {
    // The derivation reads the defaults and the versions: all of the registry on 18 (every
    // collector is on by default), all but io (pg_stat_io, 16+) on 13.
    let all: Vec<&str> = pgvigil::collect::registry::POSTGRES
        .iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(default_collectors(18), all);
    let on_13 = default_collectors(13);
    assert_eq!(on_13.len() + 1, all.len(), "{on_13:?}");
    assert!(!on_13.contains(&"io"), "{on_13:?}");
}

/// How many polls of every collector to see before judging the error counters.
const POLLS: f64 = 3.0;

macro_rules! version_tests {
    ($($name:ident: $major:literal,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                every_default_collector_publishes_without_errors($major).await;
            }
        )*

        #[test]
        fn every_supported_version_is_tested() {
            assert_eq!(pgvigil_testkit::SUPPORTED_VERSIONS, [$($major),*]);
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

async fn every_default_collector_publishes_without_errors(major: u32) {
    let cluster = TestCluster::start_version(major);
    let db = cluster.create_database("versions");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let audit_ddl = std::fs::read_to_string(root.join("deploy/sql/import_audit.sql")).unwrap();
    cluster.psql(&db, &audit_ddl);
    // A table for the tables collector, and one committed import of its three rows.
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id int, import_id uuid);
         CREATE INDEX ON contacts (import_id);
         WITH audit AS (
             INSERT INTO import_audit (import_id, target_table, source_name, expected_rows,
                                       status, started_at, finished_at, xact_id)
             VALUES (gen_random_uuid(), 'contacts', 'versions.csv', 3, 'committed',
                     now(), now(), pg_current_xact_id())
             RETURNING import_id)
         INSERT INTO contacts SELECT g, import_id FROM audit, generate_series(1, 3) g;
         SELECT count(*) FROM contacts WHERE id > 1",
    );

    // A slot for the slots collector (with a version's columns); the WAL directory and the
    // database-scope collectors with an interval of their own (which run at a visit only when
    // it has passed) every poll.
    cluster.create_physical_slot("versions");
    let every_poll = ["wal_directory", "migrations", "indexes", "advice"]
        .map(|c| format!("[targets.{c}]\ninterval = \"200ms\"\n"))
        .concat();
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), &every_poll)).await;
    let collectors = default_collectors(major);
    // The table's row count reaches the statistics a moment after the insert (on 13 and 14
    // through the statistics collector), so it is waited for too.
    let m = daemon
        .wait_for(
            &format!("{POLLS} polls of every default collector on PostgreSQL {major}"),
            WAIT,
            |m| {
                // database_sizes runs every 5 minutes: its first run is the one to see.
                let polled = collectors
                    .iter()
                    .all(|c| polls(m, c) >= if *c == "database_sizes" { 1.0 } else { POLLS });
                (polled && contacts_live_rows(m) == Some(3.0)).then(|| m.clone())
            },
        )
        .await;

    assert_eq!(m.value("pgvigil_up", &[("target", "main")]), Some(1.0));
    let server_version = m
        .matching("pgvigil_postgres_info", &[("target", "main")])
        .map(|(labels, _)| labels["server_version"].clone())
        .next()
        .expect("pgvigil_postgres_info");
    assert!(
        server_version.starts_with(&format!("{major}.")),
        "{server_version}"
    );
    for collector in collectors {
        let errors = m.sum(
            "pgvigil_poll_errors_total",
            &[("target", "main"), ("collector", collector)],
        );
        assert_eq!(errors, 0.0, "poll errors of {collector} on {major}");
        assert!(
            m.value(
                "pgvigil_last_successful_poll_timestamp_seconds",
                &[("target", "main"), ("collector", collector)],
            )
            .is_some(),
            "{collector} never polled successfully on {major}"
        );
    }

    // Each collector's own series.
    assert_eq!(
        m.value("pgvigil_connections_max", &[("target", "main")]),
        Some(60.0),
        "activity: max_connections"
    );
    assert_eq!(
        contacts_live_rows(&m),
        Some(3.0),
        "tables: live rows of contacts"
    );
    assert_eq!(
        m.value("pgvigil_import_audit_tables", &[("target", "main")]),
        Some(1.0),
        "imports: the audit table is found"
    );
    assert_eq!(
        m.value(
            "pgvigil_imports",
            &[("target", "main"), ("status", "committed")]
        ),
        Some(1.0),
        "imports: the committed import"
    );
    assert_eq!(
        m.value(
            "pgvigil_statements_available",
            &[("target", "main"), ("reason", "ok")]
        ),
        Some(1.0),
        "statements: pg_stat_statements is read"
    );
    let tracked = m
        .value("pgvigil_statements_tracked", &[("target", "main")])
        .unwrap_or(0.0);
    assert!(tracked > 0.0, "statements tracked: {tracked}");
    assert!(
        m.sum("pgvigil_statement_calls_total", &[("target", "main")]) > 0.0,
        "statements: per-statement calls"
    );
    server_health_series(&m, major, &db);
    replication_series(&m, major);
    checkpointer_io_locks_series(&m, major);
    // The indexes collector ran in the database: its counts per check are there.
    assert!(
        m.value(
            "pgvigil_index_findings",
            &[("datname", db.as_str()), ("check", "sequence_exhaustion")]
        )
        .is_some(),
        "indexes: findings counts on {major}"
    );
    a_lock_wait_is_seen(&daemon, &cluster.dsn(&db), major).await;
    daemon.stop().await;
}

/// A `LOCK TABLE` queued behind an open transaction: the waiter, its blocker and (14+) its
/// age, read with each version's SQL.
async fn a_lock_wait_is_seen(daemon: &Daemon, dsn: &str, major: u32) {
    let holder = connect(dsn).await;
    holder
        .batch_execute("CREATE TABLE queue (id int)")
        .await
        .unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM queue")
        .await
        .unwrap();
    let waiter = connect(dsn).await;
    let lock = tokio::spawn(async move {
        waiter
            .batch_execute("BEGIN; LOCK TABLE queue IN ACCESS EXCLUSIVE MODE; COMMIT")
            .await
    });
    let m = daemon
        .wait_for(&format!("the LOCK TABLE waiting on {major}"), WAIT, |m| {
            let waiting = m.value("pgvigil_lock_waiting_backends", &[("target", "main")])?;
            let blockers = m.value("pgvigil_lock_blockers", &[("target", "main")])?;
            (waiting == 1.0 && blockers == 1.0).then(|| m.clone())
        })
        .await;
    let age = m.value("pgvigil_lock_wait_max_age_seconds", &[("target", "main")]);
    assert_eq!(age.is_some(), major >= 14, "wait age on {major}: {age:?}");
    holder.batch_execute("COMMIT").await.unwrap();
    lock.await.unwrap().unwrap();
}

/// The server-health collectors' own series, with what this version has and lacks.
fn server_health_series(m: &Metrics, major: u32, db: &str) {
    let target = ("target", "main");
    assert_eq!(
        m.value("pgvigil_server_in_recovery", &[target]),
        Some(0.0),
        "server: a primary"
    );
    assert!(
        m.value("pgvigil_server_uptime_seconds", &[target])
            .is_some_and(|v| v >= 0.0),
        "server: uptime"
    );
    assert_eq!(
        m.value("pgvigil_setting", &[target, ("name", "max_connections")]),
        Some(60.0),
        "server: cited settings"
    );
    assert_eq!(
        m.value(
            "pgvigil_setting",
            &[target, ("name", "reserved_connections")]
        )
        .is_some(),
        major >= 16,
        "server: reserved_connections exists from 16 on"
    );
    let dat = ("datname", db);
    assert!(
        m.value("pgvigil_database_xact_commits_total", &[target, dat])
            .is_some_and(|v| v > 0.0),
        "database_stats: commits of {db}"
    );
    assert_eq!(
        m.value("pgvigil_database_client_sessions_total", &[target, dat])
            .is_some(),
        major >= 14,
        "database_stats: session counters from 14 on"
    );
    assert_eq!(
        m.value(
            "pgvigil_database_conflicts_total",
            &[target, dat, ("reason", "logicalslot")]
        )
        .is_some(),
        major >= 16,
        "database_stats: logical-slot conflicts from 16 on"
    );
    assert!(
        m.value("pgvigil_database_size_bytes", &[target, dat])
            .is_some_and(|v| v > 1e6),
        "database_sizes: size of {db}"
    );
    for datname in [db, "template0"] {
        assert!(
            m.value("pgvigil_database_xid_age", &[target, ("datname", datname)])
                .is_some(),
            "wraparound: XID age of {datname}"
        );
    }
}

/// The replication, slots, archiver and WAL directory collectors' series on a primary with
/// one slot: what every version has, and what only some have.
fn replication_series(m: &Metrics, major: u32) {
    let main = [("target", "main")];
    let slot = [("target", "main"), ("slot_name", "versions")];
    assert_eq!(m.value("pgvigil_replication_standbys", &main), Some(0.0));
    assert!(m.value("pgvigil_standby_replay_lsn_bytes", &main).is_none());
    assert_eq!(m.value("pgvigil_replication_slots", &main), Some(1.0));
    assert_eq!(m.value("pgvigil_replication_slot_active", &slot), Some(0.0));
    assert!(
        m.value("pgvigil_replication_slot_retained_wal_bytes", &slot)
            .is_some()
    );
    assert_eq!(
        m.matching("pgvigil_replication_slot_wal_status", &slot)
            .count(),
        1,
        "wal_status on {major}"
    );
    // Physical slots have no two_phase (14+) value of their own, but the column exists.
    assert_eq!(
        m.value("pgvigil_replication_slot_two_phase", &slot)
            .is_some(),
        major >= 14,
        "two_phase on {major}"
    );
    assert_eq!(
        m.value("pgvigil_replication_slot_inactive_seconds", &slot)
            .is_some(),
        major >= 17,
        "inactive_since on {major}"
    );
    assert_eq!(m.value("pgvigil_archiver_enabled", &main), Some(0.0));
    assert!(m.value("pgvigil_archiver_archived_total", &main).is_some());
    assert_eq!(m.value("pgvigil_archiver_failing", &main), Some(0.0));
    assert_eq!(
        m.value("pgvigil_wal_bytes_total", &main)
            .is_some_and(|b| b > 0.0),
        major >= 14,
        "pg_stat_wal on {major}"
    );
    assert_eq!(
        m.value("pgvigil_wal_writes_total", &main).is_some(),
        (14..18).contains(&major),
        "pg_stat_wal's I/O columns on {major}"
    );
    assert!(
        m.value("pgvigil_wal_directory_files", &main)
            .is_some_and(|n| n >= 1.0)
    );
    assert!(
        m.value("pgvigil_wal_directory_bytes", &main)
            .is_some_and(|b| b > 0.0)
    );
}

/// The checkpointer, I/O and locks collectors' series on `major`: one set of checkpointer names
/// everywhere, and each version's own columns present exactly where the version has them.
fn checkpointer_io_locks_series(m: &Metrics, major: u32) {
    let main = [("target", "main")];
    let has = |name: &str| m.matching(name, &main).next().is_some();
    for name in [
        "pgvigil_checkpoints_timed_total",
        "pgvigil_checkpoints_requested_total",
        "pgvigil_checkpoint_buffers_written_total",
        "pgvigil_bgwriter_buffers_written_total",
        "pgvigil_buffers_allocated_total",
        "pgvigil_bgwriter_stats_reset_timestamp_seconds",
    ] {
        assert!(has(name), "checkpointer: {name} on {major}");
    }
    assert_eq!(
        has("pgvigil_restartpoints_done_total"),
        major >= 17,
        "{major}"
    );
    assert_eq!(
        has("pgvigil_backend_buffers_written_total"),
        major < 17,
        "{major}"
    );
    assert_eq!(
        has("pgvigil_checkpoints_done_total"),
        major >= 18,
        "{major}"
    );
    // pg_stat_io: client backends read relations in the normal context on every 16+ server.
    let reads = m.value(
        "pgvigil_io_operations_total",
        &[
            ("target", "main"),
            ("backend_type", "client backend"),
            ("object", "relation"),
            ("context", "normal"),
            ("op", "hit"),
        ],
    );
    assert_eq!(
        reads.is_some(),
        major >= 16,
        "io: hits on {major}: {reads:?}"
    );
    assert!(reads.unwrap_or(1.0) > 0.0, "io: hits on {major}");
    assert_eq!(has("pgvigil_io_bytes_total"), major >= 16, "{major}");
    assert_eq!(
        m.value("pgvigil_lock_waiting_backends", &main),
        Some(0.0),
        "locks: nothing waits on {major}"
    );
    // waitstart is 14+.
    assert_eq!(
        m.value("pgvigil_lock_wait_max_age_seconds", &main),
        (major >= 14).then_some(0.0),
        "locks: wait age on {major}"
    );
}

/// `pgvigil_table_live_rows` of the test's table.
fn contacts_live_rows(m: &Metrics) -> Option<f64> {
    m.matching("pgvigil_table_live_rows", &[("target", "main")])
        .find(|(labels, _)| labels["table"].ends_with(".contacts"))
        .map(|(_, v)| v)
}

/// Polls of `collector` so far.
fn polls(m: &Metrics, collector: &str) -> f64 {
    m.sum(
        "pgvigil_poll_duration_seconds_count",
        &[("target", "main"), ("collector", collector)],
    )
}
