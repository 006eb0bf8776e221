//! Every check is lock-safe (issue 14), all of them at once: while a migration holds ACCESS
//! EXCLUSIVE on every table of a watched database (the app's table, the migration tool's and
//! the import audit table), every collector the target runs keeps finishing its runs, and none
//! but the import checks (which must read the audit table's rows) reports a failure.
//!
//! The proof that nothing queues behind the lock is the runs themselves: the collectors share
//! the main session and one session per database, so a query waiting on the lock would stop
//! every collector behind it on that session, and the wait below would never be met.

use std::collections::BTreeMap;
use std::path::Path;

use pgvigil::collect::registry::POSTGRES;
use pgvigil::config::{Config, LibpqEnv};
use pgvigil_testkit::TestCluster;

use crate::support::{CEILING, Daemon, Metrics, connect, one_target};

/// The daemon's config: every collector every second, pgvigil's own lock_timeout short, and an
/// unchanged database revisited every second (visits are what run the database-scope checks),
/// and only the test's database watched.
fn config(dsn: &str, db: &str) -> String {
    let mut extra = format!(
        "lock_timeout = \"300ms\"\n[targets.databases]\ninclude = [\"{db}\"]\nidle_revisit = \"1s\"\nrefresh_interval = \"1s\"\n",
    );
    for spec in POSTGRES {
        extra.push_str(&format!("[targets.{}]\ninterval = \"1s\"\n", spec.table));
    }
    one_target("main", dsn, &extra)
}

/// Runs (finished or given up) of each collector, and failed runs.
fn runs(m: &Metrics, collector: &str) -> (f64, f64) {
    (
        m.sum(
            "pgvigil_poll_duration_seconds_count",
            &[("collector", collector)],
        ),
        m.sum("pgvigil_poll_errors_total", &[("collector", collector)]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_check_keeps_running_while_a_migration_locks_every_table() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("locksafe");
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id serial PRIMARY KEY, email text NOT NULL, import_id uuid);
         CREATE INDEX contacts_email_idx ON contacts (email);
         CREATE INDEX contacts_email_copy ON contacts (email);
         CREATE INDEX contacts_import_id_idx ON contacts (import_id);
         INSERT INTO contacts (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 2000) g;
         CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
         INSERT INTO schema_migrations VALUES (20261201, false);
         CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
         ANALYZE;",
    );
    cluster.psql(&db, include_str!("../../deploy/sql/import_audit.sql"));
    let dsn = cluster.dsn(&db);
    let text = config(&dsn, &db);
    let target = Config::parse(
        Path::new("lock_safety.toml"),
        &text,
        &LibpqEnv::from_process(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{text}"))
    .targets
    .remove(0);
    let app = connect(&dsn).await;
    for i in 0..50 {
        app.query(
            "SELECT id FROM contacts WHERE email = $1",
            &[&format!("c{i}@example.com")],
        )
        .await
        .unwrap();
    }
    let version = cluster.server_version_num() as i32;
    let running: Vec<&str> = POSTGRES
        .iter()
        .filter(|s| s.enabled(&target) && s.versions.supports(version))
        .map(|s| s.name)
        .collect();
    assert!(
        [
            "tables",
            "imports",
            "migrations",
            "indexes",
            "advice",
            "locks"
        ]
        .iter()
        .all(|c| running.contains(c)),
        "{running:?}"
    );

    let daemon = Daemon::start(&text).await;
    daemon
        .wait_for("a first run of every collector", CEILING, |m| {
            running.iter().all(|c| runs(m, c).0 >= 1.0).then_some(())
        })
        .await;

    // A migration takes ACCESS EXCLUSIVE on every table and keeps it until the end.
    let migration = connect(&dsn).await;
    migration
        .batch_execute(
            "BEGIN; LOCK TABLE contacts, schema_migrations, import_audit IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .unwrap();
    // Runs that started before the lock may finish after it: count from a scrape taken once
    // the lock is held.
    let before = daemon.metrics().await;
    let after = daemon
        .wait_for(
            "two more runs of every collector while locked",
            CEILING,
            |m| {
                running
                    .iter()
                    .all(|c| runs(m, c).0 >= runs(&before, c).0 + 2.0)
                    .then(|| m.clone())
            },
        )
        .await;
    let failed: BTreeMap<&str, f64> = running
        .iter()
        .filter(|c| **c != "imports")
        .map(|c| (*c, runs(&after, c).1 - runs(&before, c).1))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    assert!(
        failed.is_empty(),
        "runs failed while the tables were locked: {failed:?}"
    );
    // The lock is still held: nothing above waited for it to go.
    let held: i64 = migration
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND mode = 'AccessExclusiveLock' AND granted",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 3);
    migration.batch_execute("ROLLBACK").await.unwrap();
    daemon.stop().await;
}
