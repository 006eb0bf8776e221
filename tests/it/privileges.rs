//! `pgvigil check-privileges`: per collector and per database what the role may read, and the
//! GRANT each missing piece needs; with a role having pg_monitor only, none, and the shipped
//! `deploy/sql/monitoring_role.sql`.

use std::process::Command;

use pgvigil_testkit::TestCluster;

use crate::support::pgvigil_bin;

/// The database: the shipped audit table with one import into `contacts`.
fn database(cluster: &TestCluster, prefix: &str) -> String {
    let db = cluster.create_database(prefix);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ddl = std::fs::read_to_string(root.join("deploy/sql/import_audit.sql")).unwrap();
    cluster.psql(&db, &ddl);
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id int, import_id uuid); \
         INSERT INTO import_audit (import_id, target_table, source_name, expected_rows) \
         VALUES (gen_random_uuid(), 'contacts', 'a.csv', 1)",
    );
    db
}

/// Run check-privileges for `user` on `db` (exact counts of `contacts` configured):
/// (exit code, stdout).
fn check(cluster: &TestCluster, db: &str, user: &str, password: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgvigil.toml");
    let dsn = format!(
        "host={} port={} dbname={db} user={user} password={password}",
        cluster.host(),
        cluster.port()
    );
    std::fs::write(
        &config,
        format!(
            "[[targets]]\nname = \"main\"\ndsn = \"{dsn}\"\n[targets.databases]\ninclude = [\"{db}\"]\n\
             [targets.tables]\nexact_count_tables = [\"public.contacts\"]\n"
        ),
    )
    .unwrap();
    let out = Command::new(pgvigil_bin())
        .args(["check-privileges", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.is_empty() || out.status.code() == Some(2),
        "{stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout)
}

fn line<'a>(out: &'a str, starts: &str, contains: &str) -> &'a str {
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with(starts) && l.contains(contains))
        .unwrap_or_else(|| panic!("no line `{starts} ... {contains}` in:\n{out}"))
}

#[test]
fn a_role_with_pg_monitor_only_is_told_the_table_grants() {
    let cluster = TestCluster::start();
    let db = database(&cluster, "priv_monitor");
    let role = format!("priv_mon_{}", std::process::id());
    cluster.psql(
        &db,
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'pw' IN ROLE pg_monitor"),
    );
    let (code, out) = check(&cluster, &db, &role, "pw");
    assert_eq!(code, 1, "something is missing:\n{out}");
    assert!(
        line(&out, "activity:", "pg_monitor").ends_with(": ok"),
        "{out}"
    );
    assert!(
        line(&out, "statements:", "pg_monitor").ends_with(": ok"),
        "{out}"
    );
    assert!(
        line(&out, &format!("databases in {db}:"), "CONNECT").ends_with(": ok"),
        "{out}"
    );
    assert!(
        line(&out, &format!("imports in {db}:"), "SELECT on import_audit")
            .ends_with(&format!("MISSING; GRANT SELECT ON import_audit TO {role};")),
        "{out}"
    );
    assert!(
        line(&out, &format!("tables in {db}:"), "SELECT on contacts")
            .ends_with(&format!("MISSING; GRANT SELECT ON contacts TO {role};")),
        "{out}"
    );
    cluster.psql(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

#[test]
fn a_role_with_nothing_is_told_pg_monitor_too() {
    let cluster = TestCluster::start();
    let db = database(&cluster, "priv_none");
    let role = format!("priv_none_{}", std::process::id());
    cluster.psql(&db, &format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'"));
    let (code, out) = check(&cluster, &db, &role, "pw");
    assert_eq!(code, 1, "{out}");
    for collector in ["activity:", "statements:"] {
        assert!(
            line(&out, collector, "pg_monitor")
                .ends_with(&format!("MISSING; GRANT pg_monitor TO {role};")),
            "{out}"
        );
    }
    assert!(
        line(&out, &format!("imports in {db}:"), "import_audit").contains("MISSING"),
        "{out}"
    );
    cluster.psql(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

#[test]
fn the_shipped_monitoring_role_has_everything() {
    let cluster = TestCluster::start();
    let db = database(&cluster, "priv_shipped");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let role_sql = std::fs::read_to_string(root.join("deploy/sql/monitoring_role.sql")).unwrap();
    cluster.psql(&db, &role_sql);
    // The target tables of imports are the app's: the file says to grant them.
    cluster.psql(&db, "GRANT SELECT ON contacts TO pgvigil");
    let (code, out) = check(&cluster, &db, "pgvigil", "change-me");
    assert_eq!(code, 0, "nothing missing:\n{out}");
    assert!(!out.contains("MISSING"), "{out}");
    assert!(
        line(&out, &format!("imports in {db}:"), "import_audit").ends_with(": ok"),
        "{out}"
    );
    assert!(
        line(&out, &format!("imports in {db}:"), "SELECT on contacts").ends_with(": ok"),
        "{out}"
    );
}

#[tokio::test]
async fn the_daemon_says_the_same_in_the_api_and_keeps_the_rest_running() {
    use crate::support::Daemon;

    let cluster = TestCluster::start();
    let db = database(&cluster, "priv_daemon");
    let role = format!("priv_daemon_{}", std::process::id());
    cluster.psql(
        &db,
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'pw' IN ROLE pg_monitor"),
    );
    let dsn = format!(
        "host={} port={} dbname={db} user={role} password=pw",
        cluster.host(),
        cluster.port()
    );
    let daemon = Daemon::start(&format!(
        "[[targets]]\nname = \"main\"\ndsn = \"{dsn}\"\npoll_interval = \"200ms\"\n\
         [targets.databases]\ninclude = [\"{db}\"]\n"
    ))
    .await;
    let wait = crate::support::CEILING;
    let target = daemon
        .wait_for_target("main", "the missing grant in the API", wait, |t| {
            t["privileges"]["imports"].as_array().map(|_| t.clone())
        })
        .await;
    let lines = target["privileges"]["imports"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l
            .as_str()
            .unwrap()
            .ends_with(&format!("MISSING; GRANT SELECT ON import_audit TO {role};"))),
        "{target}"
    );
    assert!(
        target["privileges"].get("activity").is_none(),
        "pg_monitor is granted: {target}"
    );
    // Everything else runs: the activity series and the tables of the database.
    daemon
        .wait_for("activity and tables series", wait, |m| {
            (m.value("pgvigil_up", &[("target", "main")])? == 1.0
                && m.value("pgvigil_connections_max", &[("target", "main")])
                    .is_some()
                && m.matching("pgvigil_table_size_bytes", &[("target", "main")])
                    .count()
                    > 0)
            .then_some(())
        })
        .await;
    daemon.stop().await;
    cluster.psql(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}
