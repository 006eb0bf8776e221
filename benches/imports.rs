//! Time to alert for a short import at default settings, beside the case that must never
//! alert (an app that marks its audit row committed 2 s before its COMMIT), and the connection
//! churn of one target watching 50 databases.
//!
//! Run with `cargo bench --bench imports` (needs the PostgreSQL server binaries, like the
//! tests; about ten minutes). It starts a private cluster and an in-process daemon at default
//! settings (the grace period, the 5 s import interval, two sessions), and prints Markdown
//! tables; the figures in `BENCHMARKS.md` come from it. Not a test: nothing here asserts a
//! speed.
//!
//! * Time to alert is measured from the moment the audit row says `committed` (the writer's
//!   UPDATE returned) to the moment `/api/v1/alerts` shows `ImportRowShortfall` firing, polled
//!   every 20 ms. Three writers: plain SQL without `xact_id` (pgvigil must wait out the grace
//!   period), plain SQL with `xact_id` (`pg_xact_status` decides, no grace period), and
//!   pgvigil-timing's `ImportAudit` (`xact_id` and `NOTIFY pgvigil_import`).
//! * The no-false-alert case writes `committed` 2 s before its COMMIT; measured is when the
//!   verdict turns `ok`, and whether any alert fired meanwhile.
//! * Churn: 50 databases of 20 tables, with every interval of the database sessions divided by
//!   `SCALE` (so an hour passes in `3600 / SCALE` seconds; connections depend only on the
//!   ratios of the intervals), counted from `pgvigil_connection_attempts_total`.

use std::path::Path;
use std::time::{Duration, Instant};

use pgvigil::Config;
use pgvigil::config::LibpqEnv;
use pgvigil_testkit::TestCluster;
use pgvigil_timing::ImportAudit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};

const RUNS: usize = 10;
const SCALE: u32 = 20;

const CONTACTS: &str =
    "CREATE TABLE contacts (id bigserial PRIMARY KEY, email text, import_id uuid);
                        CREATE INDEX ON contacts (import_id);";

async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Start a daemon on `toml`; returns its address and the sender that stops it.
async fn daemon(toml: &str) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let config = Config::parse(Path::new("bench.toml"), toml, &LibpqEnv::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pgvigil::serve(config, listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Whether `/api/v1/alerts` has `alertname` firing for `import_id`.
async fn firing(addr: std::net::SocketAddr, alertname: &str, import_id: &str) -> bool {
    let body = get(addr, "/api/v1/alerts").await;
    let view: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    view["active"].as_array().is_some_and(|active| {
        active.iter().any(|a| {
            a["state"] == "firing"
                && a["labels"]["alertname"] == alertname
                && a["labels"]["import_id"] == import_id
        })
    })
}

/// The verdict `/api/v1/imports` shows for `import_id`.
async fn verdict(addr: std::net::SocketAddr, import_id: &str) -> Option<String> {
    let body = get(addr, "/api/v1/imports").await;
    let view: serde_json::Value = serde_json::from_str(&body).ok()?;
    view["targets"]["main"]["imports"]
        .as_array()?
        .iter()
        .find(|v| v["import_id"] == import_id)
        .and_then(|v| v["verdict"].as_str().map(str::to_owned))
}

#[derive(Clone, Copy, PartialEq)]
enum Writer {
    /// Plain SQL, no xact_id, no NOTIFY.
    Plain,
    /// Plain SQL with xact_id, no NOTIFY.
    WithXactId,
    /// pgvigil-timing's ImportAudit: xact_id and NOTIFY.
    Library,
}

/// A committed import of `committed` of 1,000 rows; returns its id and when its audit row
/// said committed.
async fn short_import(
    dsn: &str,
    audit: &Client,
    writer: Writer,
    committed: i64,
) -> (String, Instant) {
    let mut db = connect(dsn).await;
    let insert = "INSERT INTO contacts (email, import_id) SELECT 'x', $1::text::uuid FROM generate_series(1, $2::int8)";
    if writer == Writer::Library {
        let mut a = ImportAudit::builder("contacts", "bench.csv", 1_000)
            .start(audit)
            .await
            .unwrap();
        let id = a.import_id().to_string();
        let tx = db.transaction().await.unwrap();
        a.attach_transaction(&tx).await.unwrap();
        tx.execute(insert, &[&id, &committed]).await.unwrap();
        tx.commit().await.unwrap();
        a.finish(1_000).await.unwrap();
        return (id, Instant::now());
    }
    let id = uuid::Uuid::new_v4().to_string();
    audit
        .execute(
            "INSERT INTO import_audit (import_id, target_table, source_name, expected_rows, status, started_at) \
             VALUES ($1::text::uuid, 'contacts', 'bench.csv', 1000, 'running', now())",
            &[&id],
        )
        .await
        .unwrap();
    let tx = db.transaction().await.unwrap();
    let xid: String = tx
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    tx.execute(insert, &[&id, &committed]).await.unwrap();
    tx.commit().await.unwrap();
    let xact = (writer == Writer::WithXactId).then_some(xid);
    audit
        .execute(
            "UPDATE import_audit SET status = 'committed', finished_at = now(), reported_rows = 1000, \
                    xact_id = $2::text::xid8 WHERE import_id = $1::text::uuid",
            &[&id, &xact],
        )
        .await
        .unwrap();
    (id, Instant::now())
}

/// The app of the incident that must not alert: its audit row says committed 2 s before its
/// COMMIT. Returns the id and the time from `committed` to an `ok` verdict, and whether any
/// alert about it fired.
async fn early_audit(dsn: &str, audit: &Client, addr: std::net::SocketAddr) -> (Duration, bool) {
    let mut db = connect(dsn).await;
    let id = uuid::Uuid::new_v4().to_string();
    audit
        .execute(
            "INSERT INTO import_audit (import_id, target_table, source_name, expected_rows, status, started_at) \
             VALUES ($1::text::uuid, 'contacts', 'early.csv', 1000, 'running', now())",
            &[&id],
        )
        .await
        .unwrap();
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO contacts (email, import_id) SELECT 'x', $1::text::uuid FROM generate_series(1, 1000)",
        &[&id],
    )
    .await
    .unwrap();
    audit
        .execute(
            "UPDATE import_audit SET status = 'committed', finished_at = now(), reported_rows = 1000 \
              WHERE import_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let marked = Instant::now();
    let commit_at = marked + Duration::from_secs(2);
    let mut alerted = false;
    let mut committed = false;
    let mut tx = Some(tx);
    loop {
        if !committed && Instant::now() >= commit_at {
            tx.take().unwrap().commit().await.unwrap();
            committed = true;
        }
        alerted |= firing(addr, "ImportRowShortfall", &id).await;
        if committed && verdict(addr, &id).await.as_deref() == Some("ok") {
            // A few more looks: an alert after ok would count too.
            for _ in 0..10 {
                alerted |= firing(addr, "ImportRowShortfall", &id).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return (marked.elapsed(), alerted);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{min:.1}–{max:.1} s")
}

async fn time_to_alert(cluster: &TestCluster) {
    let db = cluster.create_database("bench_alert");
    cluster.psql(&db, CONTACTS);
    let dsn = cluster.dsn(&db);
    let audit = connect(&dsn).await;
    ImportAudit::ensure_table(&audit).await.unwrap();
    // Default settings: only the name and the DSN.
    let (addr, stop) = daemon(&format!("[[targets]]\nname = \"main\"\ndsn = \"{dsn}\"\n")).await;
    // Let the first visit find the audit table.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("| writer | time to alert, median of {RUNS} | range |\n|---|---|---|");
    for (writer, name) in [
        (
            Writer::Plain,
            "plain SQL, no `xact_id`, no NOTIFY (grace period 10 s)",
        ),
        (
            Writer::WithXactId,
            "plain SQL with `xact_id`, no NOTIFY (`pg_xact_status`)",
        ),
        (Writer::Library, "`ImportAudit` (`xact_id` and NOTIFY)"),
    ] {
        let mut times = Vec::new();
        for run in 0..RUNS {
            let (id, committed) = short_import(&dsn, &audit, writer, 700).await;
            while !firing(addr, "ImportRowShortfall", &id).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            times.push(committed.elapsed().as_secs_f64());
            // Spread the runs over the 5 s check schedule: each starts at another phase of it.
            let phase = 300 + 1_700 * run as u64 % 5_000;
            tokio::time::sleep(Duration::from_millis(phase)).await;
        }
        println!(
            "| {name} | {:.1} s | {} |",
            median(times.clone()),
            spread(&times)
        );
    }
    let mut oks = Vec::new();
    let mut alerts = 0;
    for run in 0..RUNS {
        let (to_ok, alerted) = early_audit(&dsn, &audit, addr).await;
        oks.push(to_ok.as_secs_f64());
        alerts += usize::from(alerted);
        tokio::time::sleep(Duration::from_millis(300 + 1_700 * run as u64 % 5_000)).await;
    }
    println!(
        "| audit row `committed` 2 s before COMMIT (must not alert) | verdict `ok` after {:.1} s (median), {} | **{alerts} alerts in {RUNS} runs** |",
        median(oks.clone()),
        spread(&oks)
    );
    let _ = stop.send(());
}

async fn churn(cluster: &TestCluster) {
    let template = cluster.create_database("bench_tpl");
    let ddl: String = (0..20)
        .map(|t| format!("CREATE TABLE t{t} (id int); INSERT INTO t{t} VALUES (1);"))
        .collect();
    cluster.psql(&template, &ddl);
    let create: String = (0..50)
        .map(|i| format!("CREATE DATABASE churn_{i:02} TEMPLATE \"{template}\";"))
        .collect();
    cluster.psql("postgres", &create);
    let audit_db = "churn_00";
    cluster.psql(audit_db, CONTACTS);
    let audit = connect(&cluster.dsn(audit_db)).await;
    ImportAudit::ensure_table(&audit).await.unwrap();
    let scaled = |d: u64| format!("{}ms", d * 1000 / u64::from(SCALE));
    // Every interval of the database sessions divided by SCALE; max_connections etc. default.
    let toml = format!(
        "[[targets]]\nname = \"main\"\ndsn = \"{}\"\npoll_interval = \"{}\"\n\
         [targets.databases]\ninclude = [\"churn_*\"]\nrefresh_interval = \"{}\"\nidle_revisit = \"{}\"\nmax_connects_per_hour = {}\n\
         [targets.tables]\ninterval = \"{}\"\n[targets.imports]\ninterval = \"{}\"\n",
        cluster.dsn("postgres"),
        scaled(15),
        scaled(60),
        scaled(900),
        300 * SCALE,
        scaled(60),
        scaled(5),
    );
    let (addr, stop) = daemon(&toml).await;
    let connects = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("pgvigil_connection_attempts_total{")
                    && l.contains("purpose=\"database\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    // The first round (every database is new) is the burst; measure the steady state after.
    let hour = Duration::from_secs(3600 / u64::from(SCALE));
    tokio::time::sleep(hour / 4).await;
    println!("| databases that write every minute | connects per hour (measured) |\n|---|---|");
    for busy in [0usize, 10, 50] {
        let before = connects(&get(addr, "/metrics").await);
        let started = Instant::now();
        while started.elapsed() < hour / 2 {
            for i in 0..busy {
                cluster.psql(&format!("churn_{i:02}"), "INSERT INTO t0 VALUES (2)");
            }
            tokio::time::sleep(Duration::from_secs(60 / u64::from(SCALE))).await;
        }
        let after = connects(&get(addr, "/metrics").await);
        let per_hour = (after - before) * hour.as_secs_f64() / started.elapsed().as_secs_f64();
        println!("| {busy} of 50 | {per_hour:.0} |");
    }
    let _ = stop.send(());
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cluster = TestCluster::start_private();
    println!("PostgreSQL {}", cluster.server_version_num());
    time_to_alert(&cluster).await;
    println!();
    churn(&cluster).await;
}
