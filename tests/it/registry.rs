//! The collector registry against a real server: every metric a collector declares is
//! published after real polls of a target and a PgBouncer with something to show, except the
//! few that only exist while a condition holds (each listed with its reason).

use std::collections::BTreeSet;

use pgvigil::collect::registry::{PGBOUNCER, POSTGRES};
use pgvigil_testkit::{TestCluster, TestPgbouncer};
use pgvigil_timing::ImportAudit;

use crate::imports::import_correctly;
use crate::pgbouncer::bouncer_config;
use crate::support::{Daemon, connect, one_target};

/// Metrics that exist only while a condition holds, which this test does not create.
const CONDITIONAL: &[(&str, &str)] = &[
    (
        "pgvigil_lock_blocked_sessions",
        "only while a session waits for a lock (tests/it/lock_queue.rs)",
    ),
    (
        "pgvigil_lock_blocked_max_wait_seconds",
        "only while a session waits for a lock (tests/it/lock_queue.rs)",
    ),
    (
        "pgvigil_lock_root_blocker_age_seconds",
        "only while a session blocks another (tests/it/lock_queue.rs)",
    ),
    (
        "pgvigil_lock_queue_sessions",
        "only while a session waits for a strong lock (tests/it/lock_queue.rs)",
    ),
    (
        "pgvigil_migration_info",
        "only in a database with a migration tool's table (tests/it/migrations.rs)",
    ),
    (
        "pgvigil_migration_failed",
        "only in a database with a migration tool's table (tests/it/migrations.rs)",
    ),
    (
        "pgvigil_schema_changes_total",
        "only in a database with a migration tool's table (tests/it/migrations.rs)",
    ),
    (
        "pgvigil_schema_change_timestamp_seconds",
        "only once a migration table's version moved (tests/it/migrations.rs)",
    ),
    (
        "pgvigil_invalid_index_info",
        "only for an INVALID index (tests/it/migrations.rs makes one)",
    ),
    (
        "pgvigil_invalid_index_size_bytes",
        "only for an INVALID index (tests/it/migrations.rs makes one)",
    ),
    (
        "pgvigil_not_valid_constraint_info",
        "only for a NOT VALID constraint (tests/it/migrations.rs makes one)",
    ),
    (
        "pgvigil_schema_operation_progress_ratio",
        "only while a CREATE INDEX, REINDEX, CLUSTER or VACUUM FULL runs",
    ),
    (
        "pgvigil_schema_operation_seconds",
        "only while a CREATE INDEX, REINDEX, CLUSTER or VACUUM FULL runs",
    ),
    (
        "pgvigil_index_suggestion_info",
        "only for a large, sequentially scanned table a top statement filters without an index (tests/it/advice.rs)",
    ),
    (
        "pgvigil_index_suggestion_seq_scans",
        "only beside pgvigil_index_suggestion_info",
    ),
    (
        "pgvigil_statement_lint_info",
        "only for a top statement with SELECT * or an unbounded select (tests/it/advice.rs)",
    ),
    (
        "pgvigil_connections_waiting",
        "only while an active session waits (on a lock, IO, ...)",
    ),
    (
        "pgvigil_import_missing_rows",
        "only for an import with a confirmed shortfall",
    ),
    (
        "pgvigil_statements_resets_total",
        "only once a pg_stat_statements reset was seen",
    ),
    // The server-health layer.
    (
        "pgvigil_database_checksum_failures_total",
        "only on clusters with data checksums (initdb --data-checksums); the test clusters have none",
    ),
    (
        "pgvigil_database_checksum_last_failure_timestamp_seconds",
        "only once a checksum failure was found",
    ),
    (
        "pgvigil_database_stats_reset_timestamp_seconds",
        "only once the database's statistics were reset",
    ),
    (
        "pgvigil_setting_pending_restart",
        "only while a setting waits for a restart",
    ),
];

/// The pg_stat_database session counters, PostgreSQL 14 on.
const SESSION_COUNTERS: &[&str] = &[
    "pgvigil_database_session_seconds_total",
    "pgvigil_database_active_seconds_total",
    "pgvigil_database_idle_in_transaction_seconds_total",
    "pgvigil_database_client_sessions_total",
    "pgvigil_database_client_sessions_abandoned_total",
    "pgvigil_database_client_sessions_fatal_total",
    "pgvigil_database_client_sessions_killed_total",
];

/// Collectors whose series need a standby, slots and archiving, which this test does not set
/// up: another test publishes every one of their metrics.
const COVERED_ELSEWHERE: &[(&str, &str)] = &[
    (
        "replication",
        "replication::every_replication_metric_is_published_by_real_polls",
    ),
    (
        "replication_slots",
        "replication::every_replication_metric_is_published_by_real_polls",
    ),
    (
        "archiver",
        "replication::every_replication_metric_is_published_by_real_polls",
    ),
    (
        "wal_directory",
        "replication::every_replication_metric_is_published_by_real_polls",
    ),
];

#[tokio::test]
async fn every_declared_metric_is_published_by_real_polls() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("registry");
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id bigserial PRIMARY KEY, email text NOT NULL, import_id uuid);
         -- For the indexes collector: an unused index, its duplicate, an unindexed foreign key.
         CREATE TABLE parents (id int PRIMARY KEY);
         CREATE TABLE kids (parent_id int REFERENCES parents (id), a int);
         CREATE INDEX kids_a ON kids (a);
         CREATE INDEX kids_a_copy ON kids (a);",
    );
    let audit = connect(&cluster.dsn(&db)).await;
    ImportAudit::ensure_table(&audit).await.unwrap();
    import_correctly(&cluster.dsn(&db), &audit, "registry.csv", 100).await;
    cluster.psql(&db, "VACUUM ANALYZE contacts");
    let bouncer = TestPgbouncer::start(&cluster, 2);
    let pooled = connect(&bouncer.dsn(&db)).await;
    pooled.simple_query("SELECT 1").await.unwrap();
    // A transaction holding writes, for the writing-transaction series.
    let writer = connect(&cluster.dsn(&db)).await;
    writer
        .batch_execute("BEGIN; INSERT INTO contacts (email) VALUES ('open@example.com')")
        .await
        .unwrap();

    let toml = format!(
        "{}{}",
        one_target(
            "main",
            &cluster.dsn(&db),
            "[targets.tables]\nexact_count_tables = [\"contacts\"]\n[targets.imports]\ngrace_period = \"100ms\"\n[targets.indexes]\nunused_min_window = \"0s\"\nfk_min_table_bytes = 0\n",
        ),
        bouncer_config("bouncer", &bouncer)
    );
    let daemon = Daemon::start(&toml).await;
    let declared: BTreeSet<&str> = POSTGRES
        .iter()
        .filter(|s| !COVERED_ELSEWHERE.iter().any(|(c, _)| *c == s.name))
        .flat_map(|s| s.metrics.iter())
        .chain(PGBOUNCER.iter().flat_map(|s| s.metrics.iter()))
        .map(|m| m.name)
        .collect();
    for (name, why) in CONDITIONAL {
        assert!(
            declared.contains(name),
            "{name} ({why}) is declared by no collector"
        );
    }
    // pg_stat_statements_info (evictions) and the session counters exist from PostgreSQL 14 on.
    let version = cluster.server_version_num() as i32;
    let too_old_for = |name: &str| {
        ((name == "pgvigil_statements_deallocations_total" || SESSION_COUNTERS.contains(&name))
            && version < 140000)
            || not_on_this_version(name, version)
    };
    let expected: BTreeSet<&str> = declared
        .iter()
        .copied()
        .filter(|name| !CONDITIONAL.iter().any(|(c, _)| c == name) && !too_old_for(name))
        .collect();
    let mut missing = expected.clone();
    daemon
        .wait_for("every declared metric", crate::support::CEILING, |m| {
            missing = expected
                .iter()
                .copied()
                .filter(|name| m.samples.iter().all(|(n, _, _)| n != name))
                .collect();
            missing.is_empty().then_some(())
        })
        .await;
    assert!(missing.is_empty(), "never published: {missing:?}");
    writer.batch_execute("ROLLBACK").await.unwrap();
    daemon.stop().await;
}

/// A metric the server of `version` cannot show: its collector does not run there, or its
/// column is not in that version's view (the collectors' own version tables say which).
fn not_on_this_version(name: &str, version: i32) -> bool {
    use pgvigil::collect::{checkpointer, locks};
    let unsupported = POSTGRES
        .iter()
        .any(|s| !s.versions.supports(version) && s.metrics.iter().any(|m| m.name == name));
    let checkpointer_spec = POSTGRES.iter().find(|s| s.name == "checkpointer").unwrap();
    let checkpointer_column_absent = checkpointer_spec.metrics.iter().any(|m| m.name == name)
        && !checkpointer::Dialect::of(version)
            .columns()
            .any(|(m, _)| m.name == name);
    let no_waitstart =
        name == "pgvigil_lock_wait_max_age_seconds" && !locks::sql::has_waitstart(version);
    unsupported || checkpointer_column_absent || no_waitstart
}
