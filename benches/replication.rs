//! Server-side cost per poll of the replication, slots, archiver and WAL directory
//! collectors, on a primary with 50 databases, a streaming standby and two slots, and on that
//! standby.
//!
//! Run with `cargo bench --bench replication` (needs the PostgreSQL server binaries, like the
//! tests; under a minute). For each server it resets `pg_stat_statements`, runs every one of
//! these collectors `POLLS` times over one session (as the daemon's main session does), then
//! reads each statement's calls and `total_exec_time` back from `pg_stat_statements`: that is
//! the server's own execution time, without the network or the daemon. The client-side time
//! per poll (round trip included) is printed beside it. Not a test: nothing here asserts a
//! speed. The figures in `/work/brief/status/health-repl-mapping.md` and the README come
//! from it.

use std::time::Instant;

use pgvigil::collect::{Observations, PollContext, Postgres, ServerInfo, registry};
use pgvigil::config::{ConnectionSpec, LibpqEnv, TargetConfig};
use pgvigil_testkit::TestCluster;
use tokio_postgres::NoTls;

const POLLS: u32 = 500;
const DATABASES: usize = 50;
const COLLECTORS: [(&str, &str); 4] = [
    ("replication", "pg_stat_wal_receiver"),
    ("replication_slots", "pg_replication_slots"),
    ("archiver", "pg_stat_archiver"),
    ("wal_directory", "pg_ls_waldir"),
];

async fn measure(role: &str, dsn: &str) {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(connection);
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
    let target = TargetConfig::new(
        "bench",
        ConnectionSpec::parse(dsn, &LibpqEnv::default()).unwrap(),
    );
    // Kept across the measured runs, as the daemon keeps it for a session.
    let prepared = pgvigil::collect::prepared::Prepared::default();
    let ctx = PollContext {
        client: &client,
        prepared: &prepared,
        target: &target,
        server: &server,
        database: target.connection.dbname(),
        own_backends: vec![server.backend_pid],
        max_tables: None,
    };
    client
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    let mut client_ms = Vec::new();
    for (name, _) in COLLECTORS {
        let spec = registry::find::<Postgres>(name).unwrap();
        let mut collector = (spec.build)(&target);
        let started = Instant::now();
        for _ in 0..POLLS {
            let mut observations = Observations::default();
            collector.collect(&ctx, &mut observations).await.unwrap();
        }
        client_ms.push(started.elapsed().as_secs_f64() * 1000.0 / f64::from(POLLS));
    }
    let rows = client
        .query(
            "SELECT query, calls::float8, total_exec_time FROM pg_stat_statements",
            &[],
        )
        .await
        .unwrap();
    println!("\n{role} (PostgreSQL {}):\n", server.version);
    println!("| collector | calls | server ms per poll | client ms per poll |\n|---|---|---|---|");
    let mut total = 0.0;
    for ((name, needle), client) in COLLECTORS.iter().zip(client_ms) {
        let (calls, exec): (f64, f64) = rows
            .iter()
            .filter(|r| r.get::<_, String>(0).contains(needle))
            .map(|r| (r.get::<_, f64>(1), r.get::<_, f64>(2)))
            .fold((0.0, 0.0), |(c, e), (c2, e2)| (c + c2, e + e2));
        let per_poll = exec / f64::from(POLLS);
        total += per_poll;
        println!("| `{name}` | {calls} | {per_poll:.3} | {client:.3} |");
    }
    println!("| all four, every poll | | {total:.3} | |");
}

#[tokio::main]
async fn main() {
    let primary = TestCluster::start_private();
    let db = primary.create_database("bench_repl");
    for i in 0..DATABASES - 1 {
        primary.create_database(&format!("bench_repl_{i}"));
    }
    let standby = primary.start_standby();
    primary.create_physical_slot("bench_a");
    primary.create_physical_slot("bench_b");
    primary.generate_wal(16 << 20);
    standby.wait_for_replay();
    measure(
        "primary, one standby, two slots, 50 databases",
        &primary.dsn(&db),
    )
    .await;
    measure("its standby", &standby.dsn(&db)).await;
}
