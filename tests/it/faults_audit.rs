//! Faults around the audit table (issue #16): the database restarted mid-poll, the table
//! dropped and re-created, made unreadable (REVOKE), unreadable across a pgvigil restart, and
//! locked exclusively. After each, the imports of
//! the table keep their alerts (unknown is not resolved), the problem names its cause and
//! fix, and pgvigil holds no more sessions than its budget.

use pgvigil_testkit::TestCluster;
use tokio_postgres::Client;

use crate::faults::{sessions, up};
use crate::support::{CEILING, Daemon, Metrics, connect, one_target};
use crate::support_alerting::{api_active, wait_async};

/// A database with the shipped audit table and `contacts` (indexed on `import_id`) as the
/// import target, and the application's session on it.
struct AuditDb {
    cluster: TestCluster,
    db: String,
    /// `deploy/sql/import_audit.sql`.
    ddl: String,
    app: Client,
}

impl AuditDb {
    async fn new(prefix: &str) -> AuditDb {
        AuditDb::on(TestCluster::start(), prefix).await
    }

    async fn on(cluster: TestCluster, prefix: &str) -> AuditDb {
        let db = cluster.create_database(prefix);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let ddl = std::fs::read_to_string(root.join("deploy/sql/import_audit.sql")).unwrap();
        cluster.psql(&db, &ddl);
        cluster.psql(
            &db,
            "CREATE TABLE contacts (import_id uuid); CREATE INDEX ON contacts (import_id)",
        );
        let app = connect(&cluster.dsn(&db)).await;
        AuditDb {
            cluster,
            db,
            ddl,
            app,
        }
    }

    /// A login role with pg_monitor and SELECT on both tables (dropped by [`Self::drop_role`]);
    /// its DSN.
    fn monitoring_role(&self, role: &str) -> String {
        self.cluster.psql(
            &self.db,
            &format!(
                "CREATE ROLE {role} LOGIN PASSWORD 'pw' IN ROLE pg_monitor; \
                 GRANT SELECT ON import_audit, contacts TO {role}"
            ),
        );
        format!(
            "host={} port={} dbname={} user={role} password=pw",
            self.cluster.host(),
            self.cluster.port(),
            self.db
        )
    }

    /// REVOKE SELECT on the audit table from `role`: what the problem names as its fix.
    async fn revoke_from(&self, role: &str) -> String {
        self.app
            .batch_execute(&format!("REVOKE SELECT ON import_audit FROM {role}"))
            .await
            .unwrap();
        format!("GRANT SELECT ON public.import_audit TO {role}")
    }

    /// That fix: SELECT on the audit table granted back to `role`.
    async fn grant_to(&self, role: &str) {
        self.app
            .batch_execute(&format!("GRANT SELECT ON import_audit TO {role}"))
            .await
            .unwrap();
    }

    fn drop_role(&self, role: &str) {
        self.cluster
            .psql(&self.db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
    }

    /// Target `main` on `dsn`, watching this database with imports polled every 200 ms,
    /// then `more` (e.g. an `[alerts]` table).
    fn config(&self, dsn: &str, more: &str) -> String {
        let extra = format!(
            "[targets.databases]\ninclude = [\"{}\"]\nrefresh_interval = \"1s\"\n\
             [targets.imports]\ninterval = \"200ms\"\ngrace_period = \"100ms\"\nrecheck_interval = \"1s\"\n",
            self.db
        );
        format!("{}{more}", one_target("main", dsn, &extra))
    }

    /// A short import: 10 rows expected, 5 committed.
    async fn short_import(&self) -> String {
        let id: String = self
            .app
            .query_one("SELECT gen_random_uuid()::text", &[])
            .await
            .unwrap()
            .get(0);
        self.app
            .batch_execute(&format!(
                "INSERT INTO contacts (import_id) SELECT '{id}' FROM generate_series(1, 5); \
                 INSERT INTO import_audit (import_id, target_table, source_name, expected_rows, status, finished_at) \
                 VALUES ('{id}', 'contacts', 'short.csv', 10, 'committed', now() - interval '1 minute')"
            ))
            .await
            .unwrap();
        id
    }

    /// The missing rows of import `id` committed: its alert resolves.
    async fn complete(&self, id: &str) {
        self.app
            .batch_execute(&format!(
                "INSERT INTO contacts (import_id) SELECT '{id}' FROM generate_series(1, 5)"
            ))
            .await
            .unwrap();
    }
}

/// The verdict `/api/v1/imports` gives import `id`, once it gives one.
async fn verdict_of(daemon: &Daemon, id: &str) -> Option<String> {
    let (_, body) = daemon.get("/api/v1/imports").await;
    let value: serde_json::Value = serde_json::from_str(&body).ok()?;
    value["targets"]["main"]["imports"]
        .as_array()?
        .iter()
        .find(|v| v["import_id"] == id)
        .and_then(|v| v["verdict"].as_str().map(str::to_owned))
}

/// The problems `/api/v1/imports` lists for target `main`.
async fn import_problems(daemon: &Daemon) -> Vec<String> {
    let (_, body) = daemon.get("/api/v1/imports").await;
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    value["targets"]["main"]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect()
}

/// The first problem containing `needle`, once there is one.
async fn wait_problem(daemon: &Daemon, what: &str, needle: &str) -> String {
    wait_async(what, CEILING, || async {
        import_problems(daemon)
            .await
            .into_iter()
            .find(|p| p.contains(needle))
    })
    .await
}

/// Whether `/api/v1/alerts` lists a resolved alert of import `id`.
fn resolved_for(body: &str, id: &str) -> bool {
    let view: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    view["resolved"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["labels"]["import_id"] == id)
}

fn shortfall(id: &str) -> [(&'static str, &str); 2] {
    [("alertname", "ImportRowShortfall"), ("import_id", id)]
}

/// The imports collector's poll count.
fn polls(m: &Metrics) -> Option<f64> {
    m.value(
        "pgvigil_poll_duration_seconds_count",
        &[("target", "main"), ("collector", "imports")],
    )
}

/// The shortfall alert of import `id`, once it fires.
async fn shortfall_firing(daemon: &Daemon, id: &str) -> serde_json::Value {
    wait_async("the shortfall alert", CEILING, || async {
        api_active(daemon, "firing", &shortfall(id)).await
    })
    .await
}

/// Three more polls in which the problem containing `needle` was reported; then the alert of
/// import `id` must still be the one firing since `firing_since`.
async fn still_firing_after_three_polls(
    daemon: &Daemon,
    needle: &str,
    id: &str,
    firing_since: &serde_json::Value,
) {
    let before = polls(&daemon.metrics().await).unwrap_or(0.0);
    let during = wait_async(
        "three more polls of the unreadable table",
        CEILING,
        || async {
            let now = polls(&daemon.metrics().await)?;
            let problems = import_problems(daemon).await;
            (now >= before + 3.0 && problems.iter().any(|p| p.contains(needle))).then_some(())?;
            api_active(daemon, "firing", &shortfall(id)).await
        },
    )
    .await;
    assert_eq!(&during["firing_since"], firing_since, "{during}");
}

/// The table is readable again: the alert of import `id` is still the one firing since
/// `firing_since` (the import is still short), and resolves once the import is completed.
async fn read_again_then_resolved(
    daemon: &Daemon,
    audit: &AuditDb,
    id: &str,
    firing_since: &serde_json::Value,
) {
    wait_async("the audit table read again", CEILING, || async {
        import_problems(daemon).await.is_empty().then_some(())
    })
    .await;
    let after = api_active(daemon, "firing", &shortfall(id))
        .await
        .expect("the alert still firing once the table is read again");
    assert_eq!(&after["firing_since"], firing_since, "{after}");
    let (_, body) = daemon.get("/api/v1/alerts").await;
    assert!(
        !resolved_for(&body, id),
        "resolved while the audit table was unreadable: {body}"
    );
    audit.complete(id).await;
    wait_async("the fixed import's alert resolved", CEILING, || async {
        let (_, body) = daemon.get("/api/v1/alerts").await;
        resolved_for(&body, id).then_some(())
    })
    .await;
}

/// SELECT granted back to `role`: the alert of import `id` is still the one firing since
/// `firing_since` and resolves once the import is completed; then pgvigil stops and the role
/// is dropped.
async fn granted_back_then_resolved(
    daemon: Daemon,
    audit: &AuditDb,
    role: &str,
    id: &str,
    firing_since: &serde_json::Value,
) {
    audit.grant_to(role).await;
    read_again_then_resolved(&daemon, audit, id, firing_since).await;
    daemon.stop().await;
    audit.drop_role(role);
}

#[tokio::test]
async fn the_audit_table_dropped_and_re_created_is_followed() {
    let audit = AuditDb::new("fault_audit").await;
    let admin = connect(&audit.cluster.dsn("postgres")).await;
    let first = audit.short_import().await;
    let daemon = Daemon::start(&audit.config(&audit.cluster.dsn(&audit.db), "")).await;
    let wait_verdict = |id: String| {
        let daemon = &daemon;
        async move {
            wait_async(
                &format!("a shortfall verdict for {id}"),
                CEILING,
                || async {
                    (verdict_of(daemon, &id).await.as_deref() == Some("shortfall")).then_some(())
                },
            )
            .await
        }
    };
    wait_verdict(first.clone()).await;

    audit
        .app
        .batch_execute("DROP TABLE import_audit")
        .await
        .unwrap();
    wait_async(
        "the dropped table's imports to leave the list",
        CEILING,
        || async { verdict_of(&daemon, &first).await.is_none().then_some(()) },
    )
    .await;
    let m = daemon.metrics().await;
    assert_eq!(up(&m, "main"), Some(1.0), "{}", m.text);
    assert!(sessions(&admin, &audit.db).await <= 2);

    // Re-created: found again by itself, and a new short import is caught.
    audit.app.batch_execute(&audit.ddl).await.unwrap();
    let second = audit.short_import().await;
    wait_verdict(second).await;
    assert!(sessions(&admin, &audit.db).await <= 2);
    daemon.stop().await;
}

#[tokio::test]
async fn an_unreadable_audit_table_keeps_its_import_alerts_firing() {
    let audit = AuditDb::new("fault_revoke").await;
    let role = format!("revoke_{}", std::process::id());
    let dsn = audit.monitoring_role(&role);
    let id = audit.short_import().await;
    let daemon = Daemon::start(&audit.config(&dsn, "")).await;
    let firing = shortfall_firing(&daemon, &id).await;

    // Revoked: the table cannot be read, the error names the fix, the alert stays.
    let fix = audit.revoke_from(&role).await;
    let problem = wait_problem(&daemon, "the unreadable audit table reported", &fix).await;
    assert!(problem.contains("permission denied"), "{problem}");
    still_firing_after_three_polls(&daemon, &fix, &id, &firing["firing_since"]).await;

    // Granted back: still the same alert, and it resolves only once the import is fixed.
    granted_back_then_resolved(daemon, &audit, &role, &id, &firing["firing_since"]).await;
}

#[tokio::test]
async fn an_audit_table_unreadable_across_a_restart_keeps_its_persisted_import_alerts() {
    let audit = AuditDb::new("fault_revoke_restart").await;
    let role = format!("revoke_rs_{}", std::process::id());
    let dsn = audit.monitoring_role(&role);
    let state = tempfile::tempdir().unwrap();
    let config = audit.config(
        &dsn,
        &format!("[alerts]\nstate_dir = \"{}\"\n", state.path().display()),
    );
    let id = audit.short_import().await;
    let daemon = Daemon::start(&config).await;
    let firing = shortfall_firing(&daemon, &id).await;
    let fix = audit.revoke_from(&role).await;
    wait_problem(&daemon, "the unreadable audit table reported", &fix).await;
    daemon.stop().await;

    // Restarted while the table is unreadable: pgvigil never read it in this life, yet the
    // alert the state file kept stays firing, since the same moment, poll after poll.
    let daemon = Daemon::start(&config).await;
    wait_problem(
        &daemon,
        "the unreadable table reported after the restart",
        &fix,
    )
    .await;
    still_firing_after_three_polls(&daemon, &fix, &id, &firing["firing_since"]).await;

    granted_back_then_resolved(daemon, &audit, &role, &id, &firing["firing_since"]).await;
}

#[tokio::test]
async fn a_locked_audit_table_names_the_session_holding_the_lock() {
    let audit = AuditDb::new("fault_audit_lock").await;
    let admin = connect(&audit.cluster.dsn("postgres")).await;
    let id = audit.short_import().await;
    let config = audit.config(
        &audit.cluster.dsn(&audit.db),
        "", // lock_timeout stays at its default
    );
    let daemon = Daemon::start(&config).await;
    let firing = shortfall_firing(&daemon, &id).await;

    // A migration holds ACCESS EXCLUSIVE on the audit table in an open transaction.
    let migration = connect(&audit.cluster.dsn(&audit.db)).await;
    let pid: i32 = migration
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    migration
        .batch_execute("BEGIN; LOCK TABLE import_audit IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let needle = format!("a lock on public.import_audit held by pid {pid} (idle in transaction: ");
    let problem = wait_problem(&daemon, "the lock holder named", &needle).await;
    assert!(
        problem.contains("canceling statement due to lock timeout")
            && problem.contains("LOCK TABLE import_audit IN ACCESS EXCLUSIVE MODE")
            && problem
                .contains("blocks the read for longer than lock_timeout (1s): see /api/v1/locks"),
        "{problem}"
    );
    still_firing_after_three_polls(&daemon, &needle, &id, &firing["firing_since"]).await;
    // Never more than the main and the database session, and no waiter left behind.
    assert!(sessions(&admin, &audit.db).await <= 2);

    migration.batch_execute("COMMIT").await.unwrap();
    read_again_then_resolved(&daemon, &audit, &id, &firing["firing_since"]).await;
    daemon.stop().await;
}

#[tokio::test]
async fn restarts_mid_poll_lose_no_alert_and_stay_within_the_budget() {
    let audit = AuditDb::on(TestCluster::start_private(), "fault_restart").await;
    let id = audit.short_import().await;
    let daemon = Daemon::start(&audit.config(&audit.cluster.dsn(&audit.db), "")).await;
    let firing = shortfall_firing(&daemon, &id).await;
    let successes = |m: &Metrics| {
        m.value(
            "pgvigil_connection_attempts_total",
            &[
                ("target", "main"),
                ("purpose", "main"),
                ("result", "success"),
            ],
        )
        .unwrap_or(0.0)
    };
    for round in 1..=2 {
        let before = successes(&daemon.metrics().await);
        // Polls run every 200 ms: a restart lands in or between them.
        audit.cluster.restart();
        daemon
            .wait_for(
                &format!("reconnected after restart {round}"),
                CEILING,
                |m| (up(m, "main")? == 1.0 && successes(m) > before).then_some(()),
            )
            .await;
        let admin = connect(&audit.cluster.dsn("postgres")).await;
        assert!(
            sessions(&admin, &audit.db).await <= 2,
            "budget 2 after restart {round}"
        );
    }
    // The alert neither resolved nor started over: the same one, still firing.
    let after = wait_async("the alert after the restarts", CEILING, || async {
        api_active(&daemon, "firing", &shortfall(&id)).await
    })
    .await;
    assert_eq!(after["firing_since"], firing["firing_since"], "{after}");
    let (_, body) = daemon.get("/api/v1/alerts").await;
    assert!(!resolved_for(&body, &id), "resolved by a restart: {body}");
    daemon.stop().await;
}
