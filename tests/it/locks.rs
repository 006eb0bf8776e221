//! Locks: an `ALTER TABLE` queued behind a session idle in a transaction is seen (the lock
//! metrics show the waiter, LockWaitsLong names the idle session), and while it waits — and
//! while another session holds ACCESS EXCLUSIVE on a second table — every collector of the
//! registry keeps completing its polls well within its timeouts.

use std::collections::BTreeMap;
use std::time::Duration;

use pgvigil::collect::registry::POSTGRES;
use pgvigil_testkit::TestCluster;

use crate::support::{Daemon, Metrics, connect, one_target};
use crate::support_alerting::{api_active, wait_async};

/// Generous: two loaded cores, several clusters at once.
const WAIT: Duration = crate::support::CEILING;

/// PostgreSQL 18: every collector runs there (pg_stat_io needs 16+, wait ages 14+).
const MAJOR: u32 = 18;

/// Polls each collector must complete while the locks are held.
const POLLS_WHILE_LOCKED: f64 = 2.0;

/// The largest poll-duration bucket a poll may land in while the locks are held: below the
/// statement timeout (5 s by default), so no collector got anywhere near it.
const BUCKET: &str = "2.5";

#[tokio::test]
async fn alter_table_behind_idle_transaction_is_seen_and_no_collector_waits() {
    let cluster = TestCluster::start_version(MAJOR);
    let db = cluster.create_database("locks");
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id int); INSERT INTO contacts VALUES (1);
         CREATE TABLE ledger (id int); INSERT INTO ledger VALUES (1);",
    );
    let target = pgvigil::config::TargetConfig::new(
        "main",
        pgvigil::config::ConnectionSpec::parse(&cluster.dsn(&db), &Default::default()).unwrap(),
    );
    // Collectors on a slow schedule of their own (database sizes: 5 minutes) run every second
    // here, so that each is seen polling while the locks are held.
    let mut extra = String::from("[targets.alerts.LockWaitsLong]\nmax_wait = \"1s\"\n");
    for spec in POSTGRES {
        if spec.interval(&target, Duration::from_millis(200)) > Duration::from_secs(1) {
            extra.push_str(&format!("[targets.{}]\ninterval = \"1s\"\n", spec.table));
        }
    }
    let daemon = Daemon::start(&one_target("main", &cluster.dsn(&db), &extra)).await;
    let collectors: Vec<&str> = POSTGRES
        .iter()
        .filter(|spec| spec.enabled(&target) && spec.versions.supports(MAJOR as i32 * 10_000))
        .map(|spec| spec.name)
        .collect();
    assert!(collectors.contains(&"locks") && collectors.contains(&"io"));
    daemon
        .wait_for("a first poll of every collector", WAIT, |m| {
            collectors.iter().all(|c| polls(m, c) >= 1.0).then_some(())
        })
        .await;

    // The idle transaction read contacts (ACCESS SHARE, held until it ends); a second session
    // holds ACCESS EXCLUSIVE on ledger; the migration queues for ACCESS EXCLUSIVE on contacts.
    let dsn = cluster.dsn(&db);
    let idle = connect(&format!("{dsn} application_name=importer")).await;
    idle.batch_execute("BEGIN; SELECT * FROM contacts")
        .await
        .unwrap();
    let holder = connect(&dsn).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let migration = connect(&format!("{dsn} application_name=migration")).await;
    let alter = tokio::spawn(async move {
        migration
            .batch_execute("ALTER TABLE contacts ADD COLUMN email text")
            .await
    });

    let waiting = [
        ("target", "main"),
        ("datname", db.as_str()),
        ("mode", "AccessExclusiveLock"),
        ("state", "waiting"),
    ];
    let seen = daemon
        .wait_for("the ALTER TABLE waiting at least 1s", WAIT, |m| {
            let queued = m.value("pgvigil_locks", &waiting)? == 1.0;
            let age = m.value("pgvigil_lock_wait_max_age_seconds", &[("target", "main")])?;
            (queued && age >= 1.0).then(|| m.clone())
        })
        .await;
    assert_eq!(
        seen.value("pgvigil_lock_waiting_backends", &[("target", "main")]),
        Some(1.0)
    );
    assert_eq!(
        seen.value("pgvigil_lock_blockers", &[("target", "main")]),
        Some(1.0),
        "the idle transaction blocks the ALTER TABLE"
    );
    let held = [
        ("target", "main"),
        ("datname", db.as_str()),
        ("mode", "AccessExclusiveLock"),
        ("state", "granted"),
    ];
    assert!(
        seen.value("pgvigil_locks", &held).unwrap_or(0.0) >= 1.0,
        "LOCK TABLE ledger holds ACCESS EXCLUSIVE"
    );

    // The alert names the lock and the idle session at the head of the queue.
    let labels = [("alertname", "LockWaitsLong"), ("datname", db.as_str())];
    let alert = wait_async("LockWaitsLong firing", WAIT, || async {
        api_active(&daemon, "firing", &labels).await
    })
    .await;
    let ann = |key: &str| {
        alert["annotations"][key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(ann("mode"), "AccessExclusiveLock", "{alert:#}");
    assert_eq!(ann("relation"), "contacts", "{alert:#}");
    assert_eq!(ann("blocker_state"), "idle in transaction", "{alert:#}");
    assert_eq!(ann("blocker_application_name"), "importer", "{alert:#}");
    assert!(ann("query").contains("ALTER TABLE contacts"), "{alert:#}");
    assert!(
        ann("blocker_query").contains("SELECT * FROM contacts"),
        "{alert:#}"
    );

    // Every collector keeps completing while both locks are held, none anywhere near its
    // timeout, none with an error.
    let before = daemon.metrics().await;
    let after = daemon
        .wait_for(
            &format!("{POLLS_WHILE_LOCKED} more polls of each of {collectors:?}"),
            WAIT,
            |m| {
                let done = collectors
                    .iter()
                    .all(|c| polls(m, c) - polls(&before, c) >= POLLS_WHILE_LOCKED);
                done.then(|| m.clone())
            },
        )
        .await;
    assert!(!alter.is_finished(), "the ALTER TABLE still waits");
    let mut report = BTreeMap::new();
    for c in &collectors {
        let labels = [("target", "main"), ("collector", *c)];
        let errors = |m: &Metrics| m.sum("pgvigil_poll_errors_total", &labels);
        assert_eq!(errors(&after), errors(&before), "{c} failed while locked");
        let within = |m: &Metrics| {
            m.value(
                "pgvigil_poll_duration_seconds_bucket",
                &[("target", "main"), ("collector", *c), ("le", BUCKET)],
            )
            .unwrap_or(0.0)
        };
        let polled = polls(&after, c) - polls(&before, c);
        assert_eq!(
            within(&after) - within(&before),
            polled,
            "a poll of {c} took longer than {BUCKET}s while the locks were held"
        );
        report.insert(*c, polled);
    }
    eprintln!("polls per collector while locked: {report:?}");

    // The idle session ends: the ALTER TABLE runs, nothing waits, the alert resolves.
    idle.batch_execute("COMMIT").await.unwrap();
    alter.await.unwrap().unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    daemon
        .wait_for("no waiter", WAIT, |m| {
            let waiting = m.value("pgvigil_lock_waiting_backends", &[("target", "main")])?;
            let age = m.value("pgvigil_lock_wait_max_age_seconds", &[("target", "main")])?;
            (waiting == 0.0 && age == 0.0).then_some(())
        })
        .await;
    wait_async("LockWaitsLong resolved", WAIT, || async {
        api_active(&daemon, "firing", &labels)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    daemon.stop().await;
}

/// Completed polls of `collector` so far.
fn polls(m: &Metrics, collector: &str) -> f64 {
    m.sum(
        "pgvigil_poll_duration_seconds_count",
        &[("target", "main"), ("collector", collector)],
    )
}
