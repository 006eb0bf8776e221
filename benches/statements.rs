//! Benchmark of the pg_stat_statements collector with ~8,000 distinct statements: daemon CPU per
//! poll against the time PostgreSQL takes to return the view, and `/metrics` latency.
//!
//! Run with `cargo bench --bench statements` (needs the PostgreSQL server binaries, like the
//! tests). It starts a private cluster with `pg_stat_statements.max = 10000`, fills the view,
//! and prints a Markdown table; the figures in `BENCHMARKS.md` come from it. Not a test: nothing
//! here asserts a speed.

use std::path::Path;
use std::time::{Duration, Instant};

use pgvigil::Config;
use pgvigil::collect::statements::Statements;
use pgvigil::collect::statements::sql::{Dialect, StatementRow};
use pgvigil::collect::{Collector, Observations, PollContext, ServerInfo};
use pgvigil::config::{ConnectionSpec, LibpqEnv, StatementsConfig, TargetConfig};
use pgvigil_testkit::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STATEMENTS: u32 = 8000;
const POLLS: usize = 20;
const SCRAPES: usize = 200;

/// 8,000 statements with distinct queryids: 100 target-list shapes × 80 IN-list shapes.
fn workload() -> String {
    format!(
        "DO $$
BEGIN
  FOR i IN 0..{} LOOP
    EXECUTE format('SELECT %s WHERE 1 IN (%s)',
                   rtrim(repeat('1,', i % 100 + 1), ','),
                   rtrim(repeat('1,', i / 100 + 1), ','));
  END LOOP;
END $$",
        STATEMENTS - 1
    )
}

/// CPU time this thread has used (the runtime is single-threaded, so: the collector's, with
/// tokio-postgres' decoding).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

async fn get_metrics(addr: std::net::SocketAddr) -> usize {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.unwrap();
    body.len()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cluster = TestCluster::start_private();
    cluster.psql(
        "postgres",
        "ALTER SYSTEM SET pg_stat_statements.max = 10000",
    );
    cluster.restart();
    let db = cluster.create_database("bench_statements");
    let dsn = cluster.dsn(&db);
    let sql = workload();
    cluster.psql(&db, &sql);

    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tracked: i64 = client
        .query_one("SELECT count(*) FROM pg_stat_statements", &[])
        .await
        .unwrap()
        .get(0);
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, version(), pg_backend_pid()",
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
        ConnectionSpec::parse(&dsn, &LibpqEnv::default()).unwrap(),
    );
    // Kept across the measured polls, as the daemon keeps it for a session.
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
    let mut collector = Statements::new(&StatementsConfig::default());

    // PostgreSQL's own time to return the counters (what every exporter pays at least).
    let counters_sql = Dialect::V1_10.counters_sql("public");
    let mut pg = Vec::new();
    let mut decode = Vec::new();
    for _ in 0..POLLS {
        let (c0, started) = (thread_cpu(), Instant::now());
        let rows = client.query(&counters_sql, &[]).await.unwrap();
        pg.push(ms(started.elapsed()));
        let mapped: Vec<StatementRow> = rows
            .iter()
            .map(|r| StatementRow::from_row(r).unwrap())
            .collect();
        decode.push(ms(thread_cpu() - c0));
        assert!(mapped.len() as i64 >= tracked / 2);
    }

    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    let mut first = None;
    for poll in 0..=POLLS {
        // Every statement runs again between polls: every entry has a delta (the worst case).
        cluster.psql(&db, &sql);
        let mut observations = Observations::default();
        let (c0, w0) = (thread_cpu(), Instant::now());
        let snapshot = collector.collect(&ctx, &mut observations).await.unwrap();
        let (c, w) = (ms(thread_cpu() - c0), ms(w0.elapsed()));
        if poll == 0 {
            // The first poll fetches the top-K's texts; later ones find them cached.
            first = Some((c, w, snapshot.len()));
        } else {
            cpu.push(c);
            wall.push(w);
        }
    }
    let (first_cpu, first_wall, series) = first.unwrap();

    // /metrics of a daemon watching the same database.
    let config = Config::parse(
        Path::new("bench.toml"),
        &format!("[[targets]]\nname = \"bench\"\ndsn = \"{dsn}\"\npoll_interval = \"1s\"\n"),
        &LibpqEnv::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(pgvigil::serve(config, listener, async {
        let _ = stopped.await;
    }));
    // Until the top-K is populated from deltas.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        cluster.psql(&db, &sql);
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        if body.matches("pgvigil_statement_info{").count() >= 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never exported a full top-K"
        );
    }
    let mut scrape = Vec::new();
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let started = Instant::now();
        bytes = get_metrics(addr).await;
        scrape.push(ms(started.elapsed()));
    }
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();

    println!("| measure | median | p99 / notes |");
    println!("|---|---|---|");
    println!("| entries in pg_stat_statements | {tracked} | pg_stat_statements.max = 10000 |");
    println!(
        "| PostgreSQL: `pg_stat_statements(false)` query, wall | {:.1} ms | p99 {:.1} ms |",
        median(pg.clone()),
        p99(pg)
    );
    println!(
        "| daemon CPU to receive and map those rows (tokio-postgres) | {:.1} ms | p99 {:.1} ms |",
        median(decode.clone()),
        p99(decode)
    );
    println!(
        "| daemon CPU per poll (steady state, every entry changed) | {:.1} ms | p99 {:.1} ms |",
        median(cpu.clone()),
        p99(cpu)
    );
    println!(
        "| poll wall time (steady state) | {:.1} ms | p99 {:.1} ms |",
        median(wall.clone()),
        p99(wall)
    );
    println!(
        "| first poll (base + top-K texts) CPU / wall | {first_cpu:.1} ms / {first_wall:.1} ms | {series} series in the snapshot |"
    );
    println!(
        "| `/metrics` latency ({SCRAPES} scrapes) | {:.2} ms | p99 {:.2} ms, {bytes} bytes |",
        median(scrape.clone()),
        p99(scrape)
    );
}
