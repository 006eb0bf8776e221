//! The schema guard's migration checks against real PostgreSQL: a failed `CREATE INDEX
//! CONCURRENTLY` leaves an INVALID index that is reported with its fix (and no longer once
//! rebuilt), a NOT VALID constraint is reported; a golang-migrate dirty row and a Flyway failed
//! row each fire MigrationFailed through the daemon, a moved `alembic_version` is a schema
//! change, and with ACCESS EXCLUSIVE held on a migration table and on a watched table the
//! collector neither waits nor fails, and keeps what the locked table said.

use std::time::Duration;

use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, Metrics, Poller, conditions, connect, one_target};
use crate::support_alerting::{api_active, wait_async};

/// Generous: two loaded cores, several clusters at once.
const WAIT: Duration = Duration::from_secs(30);

fn migrations_of(
    o: &pgvigil::collect::Observations,
) -> &pgvigil::collect::migrations::MigrationsReport {
    let (_, report) = o.each_database().next().expect("a database report");
    report.migrations.as_ref().expect("a migrations report")
}

#[tokio::test]
async fn failed_concurrent_index_and_not_valid_constraint_are_reported_with_their_fix() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("leftovers");
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id int, email text);
         INSERT INTO contacts VALUES (1, 'a@x'), (2, 'a@x'), (3, 'b@x');
         ALTER TABLE contacts ADD CONSTRAINT contacts_id_positive CHECK (id > 0) NOT VALID;",
    );
    // A duplicate value: the concurrent build fails and leaves the index INVALID.
    let dsn = cluster.dsn(&db);
    let session = connect(&dsn).await;
    let err = session
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY contacts_email_key ON contacts (email)")
        .await
        .expect_err("a duplicate makes the build fail");
    assert!(
        err.to_string().contains("could not create unique index")
            || format!("{err:?}").contains("23505"),
        "{err:?}"
    );

    // Every poll reads (the daemon's visits come every [targets.tables] interval).
    let mut poller = Poller::new(&dsn, |t| t.migrations.interval = Some(Duration::ZERO)).await;
    let o = poller.poll().await;
    let report = migrations_of(&o);
    assert_eq!(report.invalid_indexes_total, 1, "{report:#?}");
    let ix = &report.invalid_indexes[0];
    assert_eq!(
        (ix.index.as_str(), ix.table.as_str()),
        ("contacts_email_key", "contacts")
    );
    assert!(ix.unique);
    assert_eq!(report.not_valid_constraints_total, 1, "{report:#?}");
    let c = &report.not_valid_constraints[0];
    assert_eq!(
        (c.name.as_str(), c.table.as_str(), c.kind.as_str()),
        ("contacts_id_positive", "contacts", "check")
    );

    let alerts = conditions("InvalidIndex", &o);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(alerts[0].annotations["fix"].contains("DROP INDEX CONCURRENTLY contacts_email_key;"));
    assert!(
        alerts[0].annotations["fix"].contains("REINDEX INDEX CONCURRENTLY contacts_email_key;")
    );

    // What `pgvigil advise` prints.
    let config = pgvigil::config::MigrationsConfig::default();
    let findings = pgvigil::collect::migrations::findings(&session, &config)
        .await
        .unwrap();
    let checks: Vec<&str> = findings.iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        ["invalid_index", "not_valid_constraint"],
        "{findings:#?}"
    );
    assert_eq!(
        findings[1].fix.as_deref().map(
            |f| f.starts_with("ALTER TABLE contacts VALIDATE CONSTRAINT contacts_id_positive;")
        ),
        Some(true),
        "{findings:#?}"
    );

    // Fixed as the findings say: neither is reported any more.
    // One statement each: REINDEX CONCURRENTLY cannot run in a transaction block.
    for sql in [
        "DELETE FROM contacts WHERE id = 2",
        "REINDEX INDEX CONCURRENTLY contacts_email_key",
        "ALTER TABLE contacts VALIDATE CONSTRAINT contacts_id_positive",
    ] {
        session.batch_execute(sql).await.unwrap();
    }
    let o = poller.poll().await;
    let report = migrations_of(&o);
    assert_eq!(
        (
            report.invalid_indexes_total,
            report.not_valid_constraints_total
        ),
        (0, 0),
        "{report:#?}"
    );
    assert!(conditions("InvalidIndex", &o).is_empty());
}

const TOOLS_SQL: &str = "
CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
INSERT INTO schema_migrations VALUES (20240101120000, true);
CREATE TABLE flyway_schema_history (
  installed_rank int NOT NULL PRIMARY KEY, version varchar(50), description varchar(200) NOT NULL,
  type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum int,
  installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(),
  execution_time int NOT NULL, success boolean NOT NULL);
INSERT INTO flyway_schema_history VALUES
  (1, '1', 'init', 'SQL', 'V1__init.sql', 1, 'app', now(), 5, true),
  (2, '2', 'add email', 'SQL', 'V2__add_email.sql', 2, 'app', now(), 7, false);
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version VALUES ('ae1027a6acf');
-- Rails writes schema_migrations too, in another shape: reported, never read as golang-migrate's.
CREATE SCHEMA rails;
CREATE TABLE rails.schema_migrations (version varchar NOT NULL PRIMARY KEY);
CREATE TABLE contacts (id int);
";

#[tokio::test]
async fn dirty_and_failed_migrations_fire_and_alembic_moves_are_schema_changes() {
    let cluster = TestCluster::start();
    let db = cluster.create_database("tools");
    cluster.psql(&db, TOOLS_SQL);
    let extra = "[targets.migrations]\ninterval = \"1s\"\n";
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), extra)).await;
    let d = db.as_str();

    // Both failures fire, each naming its tool's way out.
    let golang = [
        ("alertname", "MigrationFailed"),
        ("datname", d),
        ("tool", "golang-migrate"),
    ];
    let alert = wait_async("MigrationFailed for golang-migrate", WAIT, || async {
        api_active(&daemon, "firing", &golang).await
    })
    .await;
    assert_eq!(alert["labels"]["version"], "20240101120000", "{alert:#}");
    assert_eq!(
        alert["labels"]["table"], "public.schema_migrations",
        "{alert:#}"
    );
    let fix = alert["annotations"]["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("force 20240101120000"), "{alert:#}");
    let flyway = [
        ("alertname", "MigrationFailed"),
        ("datname", d),
        ("tool", "flyway"),
    ];
    let alert = wait_async("MigrationFailed for Flyway", WAIT, || async {
        api_active(&daemon, "firing", &flyway).await
    })
    .await;
    assert_eq!(alert["labels"]["version"], "2", "{alert:#}");
    assert_eq!(
        alert["annotations"]["script"], "V2__add_email.sql",
        "{alert:#}"
    );
    assert!(
        alert["annotations"]["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("flyway repair"),
        "{alert:#}"
    );

    // The versions, and the Rails table reported as not golang-migrate's.
    let info = |tool: &'static str, version: &'static str| {
        move |m: &Metrics| {
            m.value(
                "pgvigil_migration_info",
                &[("datname", d), ("tool", tool), ("version", version)],
            )
        }
    };
    let seen = daemon
        .wait_for("the first alembic revision", WAIT, |m| {
            info("alembic", "ae1027a6acf")(m).map(|_| m.clone())
        })
        .await;
    assert_eq!(
        info("flyway", "1")(&seen),
        Some(1.0),
        "Flyway's latest success is version 1"
    );
    assert_eq!(
        seen.value(
            "pgvigil_migration_failed",
            &[("datname", d), ("tool", "flyway")]
        ),
        Some(1.0)
    );
    assert_eq!(
        seen.value("pgvigil_migration_table_problems", &[("datname", d)]),
        Some(1.0)
    );
    let alembic = [("datname", d), ("tool", "alembic")];
    assert_eq!(
        seen.value("pgvigil_schema_changes_total", &alembic),
        Some(0.0),
        "a first reading is no change"
    );

    // A deploy moves the revision: one schema change, the info series shows the new one.
    cluster.psql(
        &db,
        "UPDATE alembic_version SET version_num = '1975ea83b712'",
    );
    let moved = daemon
        .wait_for("the new alembic revision", WAIT, |m| {
            info("alembic", "1975ea83b712")(m).map(|_| m.clone())
        })
        .await;
    assert_eq!(
        moved.value("pgvigil_schema_changes_total", &alembic),
        Some(1.0)
    );
    assert!(
        moved
            .value("pgvigil_schema_change_timestamp_seconds", &alembic)
            .is_some()
    );
    assert_eq!(
        info("alembic", "ae1027a6acf")(&moved),
        None,
        "the old revision's series is gone"
    );

    // ACCESS EXCLUSIVE on Flyway's table and on a watched table: the collector keeps polling
    // without an error, skips the locked table (a problem, not a wait) and keeps its alert.
    let holder = connect(&cluster.dsn(&db)).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE flyway_schema_history, contacts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let polls = |m: &Metrics| {
        m.sum(
            "pgvigil_poll_duration_seconds_count",
            &[("collector", "migrations")],
        )
    };
    let errors = |m: &Metrics| m.sum("pgvigil_poll_errors_total", &[("collector", "migrations")]);
    let before = daemon
        .wait_for("the locked table reported", WAIT, |m| {
            (m.value("pgvigil_migration_table_problems", &[("datname", d)])? == 2.0)
                .then(|| m.clone())
        })
        .await;
    let after = daemon
        .wait_for("two more polls while locked", WAIT, |m| {
            (polls(m) >= polls(&before) + 2.0).then(|| m.clone())
        })
        .await;
    assert_eq!(
        errors(&after),
        errors(&before),
        "no poll failed while locked"
    );
    assert_eq!(
        after.value(
            "pgvigil_migration_failed",
            &[("datname", d), ("tool", "flyway")]
        ),
        Some(1.0)
    );
    assert!(
        api_active(&daemon, "firing", &flyway).await.is_some(),
        "kept while locked"
    );
    holder.batch_execute("COMMIT").await.unwrap();

    // Forced clean: the golang-migrate alert resolves.
    cluster.psql(&db, "UPDATE schema_migrations SET dirty = false");
    wait_async(
        "MigrationFailed for golang-migrate resolved",
        WAIT,
        || async {
            api_active(&daemon, "firing", &golang)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    daemon.stop().await;
}
