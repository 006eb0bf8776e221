//! The database-side cost of every cluster-scope collector of the registry, at 50 databases.
//!
//! Run with `cargo bench --bench server_health` (needs the PostgreSQL server binaries, like the
//! tests; about two minutes). `PGVIGIL_BENCH_VERSION` picks the major version (default 18, on
//! which every collector runs). Not a test: nothing here asserts a speed; it prints Markdown
//! tables, and the figures in `BENCHMARKS.md` come from it.
//!
//! Method:
//!
//! * A private cluster with 50 databases (all watched, as for a DSN that names no database),
//!   each with a table and a session idle in a transaction that read it (so pg_stat_activity has 50 more backends and pg_locks 100 more
//!   locks than an idle server), and `pg_stat_statements.track_planning` on.
//! * Each cluster collector of `pgvigil::collect::registry::POSTGRES` (the list the daemon
//!   runs, so collectors added later are measured too) is built at its defaults and polled
//!   `RUNS` times over one session, exactly as the poll loop calls it. Its server time is the
//!   execution plus planning time pg_stat_statements recorded meanwhile (the difference of its
//!   sums before and after; nothing else runs), divided by `RUNS`; the wall time (client side,
//!   local socket) is its median.
//! * The collectors' share of one poll at default intervals: a collector whose default
//!   interval is longer than the default `poll_interval` (15 s) counts for the fraction of
//!   polls it runs in.
//! * The locks collector is measured twice: with nothing waiting (one query), and with 10
//!   backends queued behind one of the idle transactions (`pg_blocking_pids` and the sessions).

use std::time::{Duration, Instant};

use pgvigil::collect::registry::POSTGRES;
use pgvigil::collect::{Observations, PollContext, Scope, ServerInfo};
use pgvigil::config::{ConnectionSpec, DatabasesConfig, LibpqEnv, TargetConfig};
use pgvigil_testkit::TestCluster;
use tokio_postgres::{Client, NoTls};

const DATABASES: usize = 50;
const RUNS: u32 = 200;
const WAITERS: usize = 10;
/// The default `poll_interval`.
const POLL_INTERVAL: Duration = Duration::from_secs(15);

async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Per-run server time (exec + plan, ms) and median wall time (ms) of `RUNS` polls of the
/// collector `name`.
async fn measure(
    client: &Client,
    target: &TargetConfig,
    server: &ServerInfo,
    name: &str,
) -> (f64, f64) {
    let spec = POSTGRES.iter().find(|s| s.name == name).unwrap();
    let mut collector = (spec.build)(target);
    // Kept across the measured runs, as the daemon keeps it for a session.
    let prepared = pgvigil::collect::prepared::Prepared::default();
    let ctx = PollContext {
        client,
        prepared: &prepared,
        target,
        server,
        database: target.connection.dbname(),
        own_backends: vec![server.backend_pid],
        max_tables: None,
    };
    // One run first: caches (query texts, names) are filled as in a steady-state daemon.
    let mut observations = Observations::default();
    collector.collect(&ctx, &mut observations).await.unwrap();
    let before = recorded_ms(client).await;
    let mut walls = Vec::new();
    for _ in 0..RUNS {
        let mut observations = Observations::default();
        let started = Instant::now();
        collector.collect(&ctx, &mut observations).await.unwrap();
        walls.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let server_ms = recorded_ms(client).await - before;
    walls.sort_by(f64::total_cmp);
    (server_ms / f64::from(RUNS), walls[walls.len() / 2])
}

/// Execution plus planning time pg_stat_statements holds for every statement but the bench's
/// own (marked `/* bench */`). Read before and after a collector's runs rather than reset, so
/// the statements collector reads a view of realistic size.
async fn recorded_ms(client: &Client) -> f64 {
    client
        .query_one(
            "SELECT coalesce(sum(total_exec_time + total_plan_time), 0)::float8 /* bench */
               FROM pg_stat_statements
              WHERE query NOT LIKE '%/* bench */%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let major: u32 = std::env::var("PGVIGIL_BENCH_VERSION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(18);
    let cluster = TestCluster::builder()
        .version(major)
        .setting("max_connections", "150")
        .setting("pg_stat_statements.track_planning", "on")
        .start();
    let main_db = cluster.create_database("bench");
    let mut idle = Vec::new();
    for i in 0..DATABASES {
        let name = format!("app_{i:02}");
        cluster.psql(&main_db, &format!("CREATE DATABASE {name}"));
        cluster.psql(
            &name,
            "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)",
        );
        let session = connect(&cluster.dsn(&name)).await;
        session
            .batch_execute("BEGIN; SELECT count(*) FROM t")
            .await
            .unwrap();
        idle.push(session);
    }

    let dsn = cluster.dsn(&main_db);
    let connection = ConnectionSpec::parse(&dsn, &LibpqEnv::default()).unwrap();
    let mut target = TargetConfig::new("bench", connection);
    // Every database is watched, as with a DSN that names none (the default for a cluster).
    target.databases = DatabasesConfig::every();
    let client = connect(&dsn).await;
    client
        .batch_execute("SET statement_timeout = 5000; SET lock_timeout = 1000")
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let server = ServerInfo {
        version_num: row.get(0),
        version: row.get(1),
        backend_pid: row.get(2),
    };

    println!(
        "PostgreSQL {}, {DATABASES} databases with a session idle in a transaction each, {RUNS} polls per collector\n",
        server.version
    );
    println!(
        "| collector | default interval | server time per run | wall per run (median) | server time per default poll |"
    );
    println!("|---|---|---|---|---|");
    let mut total = 0.0;
    for spec in POSTGRES.iter().filter(|s| s.scope == Scope::Cluster) {
        if !spec.enabled(&target) || !spec.versions.supports(server.version_num) {
            println!("| `{}` | | not run on this version | | |", spec.name);
            continue;
        }
        let interval = spec.interval(&target, POLL_INTERVAL);
        let (server_ms, wall_ms) = measure(&client, &target, &server, spec.name).await;
        let share = POLL_INTERVAL.as_secs_f64() / interval.as_secs_f64().max(1e-9);
        let per_poll = server_ms * share.min(1.0);
        total += per_poll;
        println!(
            "| `{}` | {} | {server_ms:.3} ms | {wall_ms:.3} ms | {per_poll:.3} ms |",
            spec.name,
            humantime::format_duration(interval)
        );
    }
    println!("| **all cluster collectors** | | | | **{total:.3} ms** |\n");

    // The locks collector with backends waiting: WAITERS sessions queue for ACCESS EXCLUSIVE
    // on app_00's table behind its idle transaction.
    let waiting_dsn = cluster.dsn("app_00");
    let entries: i64 = client
        .query_one("SELECT count(*) FROM pg_stat_statements /* bench */", &[])
        .await
        .unwrap()
        .get(0);
    println!("({entries} entries in pg_stat_statements)\n");
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        let w = connect(&waiting_dsn).await;
        waiters.push(tokio::spawn(async move {
            let _ = w
                .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; COMMIT")
                .await;
        }));
    }
    loop {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted /* bench */",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n as usize >= WAITERS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (server_ms, wall_ms) = measure(&client, &target, &server, "locks").await;
    println!("| locks collector | server time per run | wall per run (median) |");
    println!("|---|---|---|");
    println!("| nothing waits | (above) | |");
    println!("| {WAITERS} backends waiting | {server_ms:.3} ms | {wall_ms:.3} ms |");
    drop(idle);
    for w in waiters {
        let _ = w.await;
    }
}
