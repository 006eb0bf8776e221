//! Starts real PostgreSQL clusters: the private lifecycle, and the shared-server path (pointed
//! at a private cluster, so it needs no external server).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use pgvigil_testkit::{TestCluster, find_program, wait_until};

#[test]
fn private_cluster_lifecycle() {
    let cluster = TestCluster::start_private();
    assert!(cluster.is_private());
    assert!(cluster.is_running());
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(cluster.superuser(), "postgres");
    assert_eq!(
        cluster.dsn("postgres"),
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            cluster.port()
        )
    );
    assert_eq!(
        cluster.url("postgres"),
        format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port())
    );
    assert_eq!(cluster.psql("postgres", "select 1"), "1");
    assert!(cluster.server_version_num() >= 130_000);

    let data = cluster
        .data_dir()
        .expect("private clusters have a data dir");
    if is_root() {
        let postgres_uid: u32 = String::from_utf8(
            Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        assert_eq!(data.metadata().unwrap().uid(), postgres_uid);
    }

    // The settings the daemon relies on.
    assert_eq!(
        cluster.psql(
            "postgres",
            "select current_setting('shared_preload_libraries'), \
             current_setting('pg_stat_statements.track'), current_setting('track_io_timing'), \
             current_setting('max_connections'), current_user"
        ),
        "pg_stat_statements|all|on|60|postgres"
    );

    // A database with pg_stat_statements, and one without.
    let db = cluster.create_database("Testkit Smoke");
    assert!(db.starts_with("testkit_smoke_"), "{db}");
    cluster.psql(
        &db,
        "create table t (id int); insert into t values (1), (2)",
    );
    assert_eq!(cluster.psql(&db, "select count(*) from t"), "2");
    let calls = cluster.psql(
        &db,
        "select sum(calls) > 0 from pg_stat_statements \
         where dbid = (select oid from pg_database where datname = current_database())",
    );
    assert_eq!(calls, "t");
    let bare = cluster.create_database_without_extensions("bare");
    assert_eq!(
        cluster.psql(
            &bare,
            "select count(*) from pg_extension where extname = 'pg_stat_statements'"
        ),
        "0"
    );
    assert_ne!(db, cluster.create_database("Testkit Smoke"));

    // Errors come back with psql's stderr.
    let err = cluster
        .try_psql(&db, "select * from no_such_table")
        .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");

    // Stop: connections fail. Restart: same port, same data.
    let port = cluster.port();
    cluster.stop();
    assert!(!cluster.is_running());
    assert!(cluster.try_psql("postgres", "select 1").is_err());
    cluster.restart();
    assert!(cluster.is_running());
    assert_eq!(cluster.port(), port);
    assert_eq!(cluster.psql(&db, "select count(*) from t"), "2");
    // restart() also works on a running server.
    cluster.restart();
    assert_eq!(cluster.psql("postgres", "select 1"), "1");
    assert!(
        cluster
            .server_log()
            .contains("database system is ready to accept connections")
    );

    // Dropping stops the server and removes the directory.
    let pg_ctl = cluster.bindir().join("pg_ctl");
    drop(cluster);
    assert!(!data.exists(), "{} should be removed", data.display());
    let status = Command::new(pg_ctl)
        .arg("status")
        .arg("-D")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!status.status.success());
}

#[test]
fn shared_server_from_dsn() {
    let server = TestCluster::start_private();
    let shared = TestCluster::from_dsn(&server.url("postgres"));
    assert!(!shared.is_private());
    assert!(shared.data_dir().is_none());
    assert_eq!(shared.port(), server.port());
    assert_eq!(shared.superuser(), "postgres");
    assert_eq!(shared.psql("postgres", "select 1"), "1");

    let db = shared.create_database("shared");
    assert_eq!(
        shared.psql(
            &db,
            "select count(*) from pg_extension where extname = 'pg_stat_statements'"
        ),
        "1"
    );
    let exists = format!("select count(*) from pg_database where datname = '{db}'");
    assert_eq!(server.psql("postgres", &exists), "1");

    // Key=value form of the same server works too.
    let again = TestCluster::from_dsn(&server.dsn("postgres"));
    assert_eq!(again.psql(&db, "select current_database()"), db);
    drop(again);

    drop(shared);
    assert_eq!(
        server.psql("postgres", &exists),
        "0",
        "dropping a shared TestCluster drops its databases"
    );
}

#[test]
#[should_panic(expected = "needs a private cluster")]
fn shared_server_cannot_be_stopped() {
    let server = TestCluster::start_private();
    let shared = TestCluster::from_dsn(&server.dsn("postgres"));
    shared.stop();
}

#[test]
fn restart_after_the_server_was_killed() {
    let cluster = TestCluster::start_private();
    let data = cluster.data_dir().unwrap();
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap();
    let killed = Command::new("kill").args(["-KILL", pid]).status().unwrap();
    assert!(killed.success());
    wait_until("the server to die", Duration::from_secs(10), || {
        (!cluster.is_running()).then_some(())
    });
    cluster.restart();
    assert_eq!(cluster.psql("postgres", "select 1"), "1");
}

#[test]
#[should_panic(expected = "Address already in use")]
fn restart_on_a_taken_port_panics_with_the_log() {
    let cluster = TestCluster::start_private();
    cluster.stop();
    let _squatter = TcpListener::bind(("127.0.0.1", cluster.port())).expect("port is free");
    cluster.restart();
}

#[test]
fn helpers() {
    assert!(find_program("psql").is_file());
    let mut n = 0;
    assert_eq!(
        wait_until("n to reach 2", Duration::from_secs(1), || {
            n += 1;
            (n >= 2).then_some(n)
        }),
        2
    );
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}
