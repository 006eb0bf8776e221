//! One target, every database of its cluster, within its connection budget: each database's
//! imports reconciled under its own `datname`, databases created and dropped while pgvigil
//! runs, 50 databases on two sessions (sampled from `pg_stat_activity` every 100 ms), a
//! database pgvigil may not enter, and `NOTIFY pgvigil_import` starting a check at once.
//!
//! The intervals that default to a minute are shortened here so the suite stays fast; what is
//! asserted is waited for, never timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use pgvigil_testkit::TestCluster;
use pgvigil_timing::ImportAudit;

use crate::imports::{CONTACTS, import_correctly, import_partially};
use crate::support::{Daemon, connect};
use crate::support_alerting::{api_active, api_alerts, has_labels, wait_async};

const WAIT: Duration = crate::support::CEILING;
/// The ceiling for one round over fifty databases (see its test).
const FIRST_ROUND: Duration = Duration::from_secs(3 * crate::support::CEILING.as_secs());

/// A database with the contacts table and the recommended audit table.
async fn audit_database(cluster: &TestCluster, prefix: &str) -> (String, tokio_postgres::Client) {
    let db = cluster.create_database(prefix);
    cluster.psql(&db, CONTACTS);
    let audit = connect(&cluster.dsn(&db)).await;
    ImportAudit::ensure_table(&audit).await.unwrap();
    (db, audit)
}

/// A target on `cluster` watching the databases whose names start with `prefix`.
fn cluster_target(cluster: &TestCluster, prefix: &str, extra: &str) -> String {
    format!(
        "[[targets]]\nname = \"main\"\ndsn = \"{}\"\npoll_interval = \"200ms\"\nreconnect_max_backoff = \"1s\"\n{extra}\n\
         [targets.databases]\ninclude = [\"{prefix}*\"]\nrefresh_interval = \"500ms\"\n\
         [targets.imports]\ngrace_period = \"200ms\"\n",
        cluster.dsn("postgres")
    )
}

fn verdicts(m: &crate::support::Metrics, db: &str, verdict: &str) -> Option<f64> {
    m.value(
        "pgvigil_import_verdicts",
        &[("target", "main"), ("datname", db), ("verdict", verdict)],
    )
}

#[tokio::test]
async fn each_database_is_reconciled_under_its_own_datname_and_databases_come_and_go() {
    let cluster = TestCluster::start();
    let prefix = format!("tri{}_", std::process::id());
    let mut dbs = Vec::new();
    for name in ["a", "b", "c"] {
        dbs.push(audit_database(&cluster, &format!("{prefix}{name}")).await);
    }
    import_correctly(&cluster.dsn(&dbs[0].0), &dbs[0].1, "a.csv", 500).await;
    let short = import_partially(&cluster.dsn(&dbs[1].0), &dbs[1].1, 1_000, 700).await;
    import_correctly(&cluster.dsn(&dbs[2].0), &dbs[2].1, "c.csv", 300).await;
    let daemon = Daemon::start(&cluster_target(&cluster, &prefix, "")).await;

    // The shortfall in the second database alerts with its datname...
    let b = dbs[1].0.as_str();
    let alert = wait_async("the shortfall in the second database", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[("alertname", "ImportRowShortfall"), ("datname", b)],
        )
        .await
    })
    .await;
    assert_eq!(alert["labels"]["import_id"], short.as_str(), "{alert}");
    assert_eq!(alert["annotations"]["missing"], "300", "{alert}");
    // ... and the other two are ok, in their own series.
    let m = daemon
        .wait_for("every database's verdicts", WAIT, |m| {
            (verdicts(m, &dbs[0].0, "ok")? == 1.0
                && verdicts(m, &dbs[2].0, "ok")? == 1.0
                && verdicts(m, b, "shortfall")? == 1.0)
                .then(|| m.clone())
        })
        .await;
    for (db, _) in [&dbs[0], &dbs[2]] {
        assert_eq!(verdicts(&m, db, "shortfall"), Some(0.0), "{db}");
    }
    assert_eq!(
        m.value("pgvigil_databases_watched", &[("target", "main")]),
        Some(3.0)
    );
    let view = api_alerts(&daemon).await;
    let shortfalls: Vec<_> = view["active"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| has_labels(a, &[("alertname", "ImportRowShortfall")]))
        .collect();
    assert_eq!(shortfalls.len(), 1, "{view}");

    // A fourth database created while pgvigil runs is watched, its shortfall alerts...
    let (d, d_audit) = audit_database(&cluster, &format!("{prefix}d")).await;
    import_partially(&cluster.dsn(&d), &d_audit, 100, 10).await;
    drop(d_audit);
    wait_async("the new database's shortfall", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[("alertname", "ImportRowShortfall"), ("datname", d.as_str())],
        )
        .await
    })
    .await;
    daemon
        .wait_for("the new database's tables", WAIT, |m| {
            m.value(
                "pgvigil_table_live_rows",
                &[("datname", &d), ("table", "public.contacts")],
            )
            .map(|_| ())
        })
        .await;

    // ... and once dropped, its series are gone and its alert resolves.
    cluster.psql("postgres", &format!("DROP DATABASE \"{d}\" WITH (FORCE)"));
    let m = daemon
        .wait_for("the dropped database's series to go", WAIT, |m| {
            let gone = m
                .samples
                .iter()
                .all(|(_, labels, _)| labels.get("datname") != Some(&d));
            gone.then(|| m.clone())
        })
        .await;
    assert_eq!(
        m.value("pgvigil_databases_watched", &[("target", "main")]),
        Some(3.0)
    );
    let view = wait_async("the dropped database's alert to resolve", WAIT, || async {
        let view = api_alerts(&daemon).await;
        let resolved = view["resolved"].as_array()?.iter().any(|a| {
            has_labels(
                a,
                &[("alertname", "ImportRowShortfall"), ("datname", d.as_str())],
            )
        });
        resolved.then_some(view)
    })
    .await;
    let still: Vec<_> = view["active"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| has_labels(a, &[("datname", d.as_str())]))
        .collect();
    assert!(still.is_empty(), "{view}");
    // The second database's alert is untouched.
    assert!(
        api_active(
            &daemon,
            "firing",
            &[("alertname", "ImportRowShortfall"), ("datname", b)]
        )
        .await
        .is_some()
    );
    daemon.stop().await;
}

/// The most sessions `role` held at once, sampled every 100 ms until stopped.
struct Sampler {
    max: Arc<AtomicI64>,
    samples: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    async fn start(dsn: &str, role: &str) -> Sampler {
        let client = connect(dsn).await;
        let (max, samples, stop) = (
            Arc::new(AtomicI64::new(0)),
            Arc::new(AtomicI64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (m, s, st) = (max.clone(), samples.clone(), stop.clone());
        let role = role.to_owned();
        let task = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                        &[&role],
                    )
                    .await
                    .unwrap()
                    .get(0);
                m.fetch_max(n, Ordering::Relaxed);
                s.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Sampler {
            max,
            samples,
            stop,
            task,
        }
    }

    /// Stop; (most sessions seen at once, samples taken).
    async fn stop(self) -> (i64, i64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.max.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test]
async fn fifty_databases_are_read_on_two_sessions_and_one_that_refuses_does_not_stop_the_others() {
    const DATABASES: usize = 50;
    const TABLES: usize = 20;
    // A private cluster: the test creates a role and 50 databases of its own.
    let cluster = TestCluster::start_private();
    let role = "vigil_fifty";
    let template = cluster.create_database("tpl_fifty");
    let mut ddl = String::new();
    for t in 0..TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE t{t} (id int); INSERT INTO t{t} SELECT generate_series(1, {});",
            t + 1
        ));
    }
    cluster.psql(&template, &ddl);
    let mut create = format!("CREATE ROLE {role} LOGIN IN ROLE pg_monitor;");
    let names: Vec<String> = (0..DATABASES).map(|i| format!("fifty_{i:02}")).collect();
    for name in &names {
        create.push_str(&format!("CREATE DATABASE {name} TEMPLATE \"{template}\";"));
    }
    cluster.psql("postgres", &create);
    let refused = &names[7];
    cluster.psql(
        "postgres",
        &format!("REVOKE CONNECT ON DATABASE {refused} FROM PUBLIC"),
    );

    let sampler = Sampler::start(&cluster.dsn("postgres"), role).await;
    let dsn = format!("{} user={role}", cluster.dsn("postgres"));
    // Defaults, but rounds every 2 s instead of every minute.
    let config = format!(
        "[[targets]]\nname = \"main\"\ndsn = \"{dsn}\"\n\
         [targets.databases]\ninclude = [\"fifty_*\"]\nrefresh_interval = \"2s\"\n\
         [targets.tables]\ninterval = \"2s\"\n"
    );
    let daemon = Daemon::start(&config).await;
    // One round is 49 visits in line on one session, each a connect and every default
    // database-scope collector: under a loaded machine (load average 25 on 2 cores) a visit took
    // ~4 s, so the ceiling for the first round is three times the usual one.
    let m = daemon
        .wait_for("every database's tables", FIRST_ROUND, |m| {
            let readable = names.iter().filter(|n| *n != refused);
            let all = readable.clone().all(|db| {
                m.value("pgvigil_tables_exported", &[("datname", db)]) == Some(TABLES as f64)
            });
            (all && m
                .value("pgvigil_database_up", &[("datname", refused)])
                .is_some())
            .then(|| m.clone())
        })
        .await;
    // Within two rounds: at most two connects per readable database so far (one per round),
    // and the refused one was never even tried.
    let connects = m.sum(
        "pgvigil_connection_attempts_total",
        &[("target", "main"), ("purpose", "database")],
    );
    assert!(
        connects <= 2.0 * DATABASES as f64,
        "{connects} database connects for {DATABASES} databases"
    );
    assert_eq!(
        m.value("pgvigil_database_up", &[("datname", refused)]),
        Some(0.0)
    );
    assert_eq!(
        m.value("pgvigil_databases_watched", &[("target", "main")]),
        Some(DATABASES as f64)
    );
    // Statistics are per database and start empty in a copy of the template.
    assert_eq!(
        m.value(
            "pgvigil_table_live_rows",
            &[("datname", "fifty_49"), ("table", "public.t19")]
        ),
        Some(0.0)
    );
    let (_, targets) = daemon.get("/api/v1/targets").await;
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let error = targets[0]["databases"][refused]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("CONNECT"), "{targets}");
    assert_eq!(targets[0]["state"], "up", "{targets}");

    // Another round or two with writes in some databases, still within the budget.
    for db in &names[..5] {
        cluster.psql(db, "INSERT INTO t0 VALUES (0)");
    }
    daemon
        .wait_for("the writes to be read", WAIT, |m| {
            names[..5]
                .iter()
                .all(|db| {
                    m.value(
                        "pgvigil_table_live_rows",
                        &[("datname", db), ("table", "public.t0")],
                    ) == Some(1.0)
                })
                .then_some(())
        })
        .await;
    let (max, samples) = sampler.stop().await;
    assert!(samples >= 10, "only {samples} samples of pg_stat_activity");
    assert!(
        max <= 2,
        "pgvigil held {max} sessions at once, over max_connections = 2"
    );
    assert!(max >= 1, "the sampler never saw pgvigil's sessions");
    daemon.stop().await;
}

#[tokio::test]
async fn notify_pgvigil_import_starts_a_check_at_once() {
    let cluster = TestCluster::start();
    let prefix = format!("notify{}_", std::process::id());
    let (db, audit) = audit_database(&cluster, &prefix).await;
    // No regular check for an hour: only NOTIFY (and the second look it leads to) can find
    // the shortfall.
    let config = format!(
        "{}[targets.imports]\ninterval = \"1h\"\ngrace_period = \"1h\"\n",
        format_args!(
            "[[targets]]\nname = \"main\"\ndsn = \"{}\"\npoll_interval = \"200ms\"\n",
            cluster.dsn(&db)
        )
    );
    let daemon = Daemon::start(&config).await;
    daemon
        .wait_for("the audit table to be found", WAIT, |m| {
            (m.value("pgvigil_import_audit_tables", &[("datname", &db)])? == 1.0).then_some(())
        })
        .await;
    // A short import whose transaction committed (xact_id set), then the writer's NOTIFY.
    let id = import_partially(&cluster.dsn(&db), &audit, 1_000, 600).await;
    audit
        .execute("SELECT pg_notify('pgvigil_import', $1)", &[&id])
        .await
        .unwrap();
    let alert = wait_async("the shortfall found through NOTIFY", WAIT, || async {
        api_active(
            &daemon,
            "firing",
            &[
                ("alertname", "ImportRowShortfall"),
                ("import_id", id.as_str()),
            ],
        )
        .await
    })
    .await;
    assert_eq!(alert["annotations"]["missing"], "400", "{alert}");
    assert_eq!(alert["annotations"]["xact_status"], "committed", "{alert}");
    let m = daemon.metrics().await;
    assert!(
        m.value("pgvigil_import_notifications_total", &[("datname", &db)])
            .unwrap()
            >= 1.0
    );
    daemon.stop().await;
}
