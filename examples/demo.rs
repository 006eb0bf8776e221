//! The incident pgvigil was built for, replayed against a scratch PostgreSQL cluster.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example demo            # tells the story and exits (about 15 seconds)
//! cargo run --example demo -- --keep  # then keeps serving the status page until Ctrl-C
//! ```
//!
//! It starts a throwaway cluster (initdb on a free port, removed afterwards) and pgvigil against
//! it with a 1-second poll. Then a small "app" imports three generated CSV files of 10,000
//! contacts, recording each import with `pgvigil-timing`'s `ImportAudit`:
//!
//! 1. correctly: one transaction, `COMMIT`, then the audit row is marked committed;
//! 2. with the forgotten-commit bug: the rows go into a transaction that is never committed, the
//!    app reports success anyway, and its connection goes away (the server rolls back);
//! 3. committing only the first 3% of the rows and reporting all of them.
//!
//! Within a poll interval or two pgvigil reports the two shortfalls with exact numbers — printed
//! here from `/api/v1/imports` and `/metrics`, and on the status page — and the correct import as
//! ok.

use std::path::Path;
use std::time::{Duration, Instant};

use pgvigil::Config;
use pgvigil::config::LibpqEnv;
use pgvigil_testkit::TestCluster;
use pgvigil_timing::ImportAudit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const ROWS: usize = 10_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().any(|a| a == "--keep");
    println!("starting a scratch PostgreSQL cluster ...");
    let cluster = tokio::task::spawn_blocking(TestCluster::start_private).await?;
    let db = cluster.create_database("demo");
    let dsn = cluster.dsn(&db);
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id bigserial PRIMARY KEY, email text NOT NULL, name text NOT NULL, import_id uuid);
         CREATE INDEX ON contacts (import_id);",
    );
    let audit = connect(&dsn, "importer-audit").await?;
    ImportAudit::ensure_table(&audit).await?;
    println!(
        "cluster on port {}, database {db}, table contacts, audit table import_audit",
        cluster.port()
    );

    // pgvigil with no import configuration at all: it finds import_audit by itself.
    let config = Config::parse(
        Path::new("demo.toml"),
        &format!(
            "[logging]\nlevel = \"warn\"\n\n[[targets]]\nname = \"demo\"\ndsn = \"{dsn}\"\npoll_interval = \"1s\"\n\n[targets.imports]\ngrace_period = \"1s\"\n"
        ),
        &LibpqEnv::default(),
    )?;
    let _telemetry = pgvigil::telemetry::init(&config.logging, &config.telemetry)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(pgvigil::serve(config, listener, async {
        let _ = stopped.await;
    }));
    println!(
        "pgvigil is serving http://{addr}/ (status page; the target's last hour at http://{addr}/targets/demo), /api/v1/imports and /metrics\n"
    );

    let dir = tempfile::tempdir()?;
    let files: Vec<_> = [
        "contacts-monday.csv",
        "contacts-tuesday.csv",
        "contacts-wednesday.csv",
    ]
    .iter()
    .map(|name| {
        let path = dir.path().join(name);
        write_csv(&path, name, ROWS).map(|()| path)
    })
    .collect::<Result<_, _>>()?;

    println!(
        "== the app imports {} ({ROWS} rows) correctly",
        name(&files[0])
    );
    import_correctly(&dsn, &audit, &files[0]).await?;
    println!(
        "== the app imports {} and forgets to COMMIT, reports success, disconnects",
        name(&files[1])
    );
    import_forgetting_commit(&dsn, &audit, &files[1]).await?;
    println!(
        "== the app imports {}, commits only the first 3%, reports success",
        name(&files[2])
    );
    import_committing_three_percent(&dsn, &audit, &files[2]).await?;
    println!("   (the app believes all three imports succeeded)\n");

    let started = Instant::now();
    let imports = loop {
        let (_, body) = get(addr, "/api/v1/imports").await?;
        let json: serde_json::Value = serde_json::from_str(&body)?;
        let imports = json["targets"]["demo"]["imports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let settled = imports.len() == 3
            && imports
                .iter()
                .all(|v| matches!(v["verdict"].as_str(), Some("ok" | "shortfall")));
        if settled || started.elapsed() > Duration::from_secs(30) {
            break imports;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "pgvigil's verdicts after {:.1}s (from /api/v1/imports):\n",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  {:<24} {:<10} {:>8} {:>9} {:>8} {:>8}",
        "source", "verdict", "expected", "committed", "missing", "reported"
    );
    for v in &imports {
        println!(
            "  {:<24} {:<10} {:>8} {:>9} {:>8} {:>8}",
            v["source_name"].as_str().unwrap_or(""),
            v["verdict"].as_str().unwrap_or(""),
            v["expected_rows"].as_i64().unwrap_or(0),
            v["committed_rows"].as_i64().unwrap_or(0),
            v["missing_rows"].as_i64().unwrap_or(0),
            v["reported_rows"].as_i64().unwrap_or(0),
        );
    }
    for v in imports.iter().filter(|v| v["verdict"] == "shortfall") {
        println!(
            "\n  ImportRowShortfall (critical) import_id={}\n    {}\n    confirm with: {}",
            v["import_id"].as_str().unwrap_or(""),
            v["reason"].as_str().unwrap_or(""),
            v["confirm_sql"].as_str().unwrap_or(""),
        );
    }

    let (_, metrics) = get(addr, "/metrics").await?;
    println!("\nfrom /metrics:");
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("pgvigil_import_missing_rows")
                || l.starts_with("pgvigil_import_verdicts{") && !l.ends_with(" 0.0")
                || l.starts_with(
                    "pgvigil_table_live_rows{target=\"demo\",table=\"public.contacts\"",
                )
                || l.starts_with(
                    "pgvigil_table_dead_rows{target=\"demo\",table=\"public.contacts\"",
                ))
    }) {
        println!("  {line}");
    }

    if keep {
        println!("\nstatus page: http://{addr}/ — press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    } else {
        println!("\nstatus page was at http://{addr}/ (run with -- --keep to keep it up)");
    }
    let _ = stop.send(());
    daemon.await??;
    drop(cluster);
    println!("done; the scratch cluster is removed.");
    Ok(())
}

async fn connect(dsn: &str, app: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{dsn} application_name={app}"), NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_csv(path: &Path, tag: &str, rows: usize) -> std::io::Result<()> {
    let mut text = String::from("email,name\n");
    for i in 1..=rows {
        text.push_str(&format!("contact{i}.{tag}@example.com,Contact {i}\n"));
    }
    std::fs::write(path, text)
}

/// The app's CSV reader: (emails, names).
fn read_csv(path: &Path) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(path)?;
    let (mut emails, mut names) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        if let Some((email, name)) = line.split_once(',') {
            emails.push(email.to_owned());
            names.push(name.to_owned());
        }
    }
    Ok((emails, names))
}

const INSERT: &str = "INSERT INTO contacts (email, name, import_id) SELECT e, n, $3 FROM unnest($1::text[], $2::text[]) AS r(e, n)";

async fn import_correctly(
    dsn: &str,
    audit: &Client,
    file: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let (emails, names) = read_csv(file)?;
    let mut a = ImportAudit::builder("contacts", name(file), emails.len() as u64)
        .start(audit)
        .await?;
    let id: Uuid = a.import_id();
    let mut db = connect(dsn, "importer").await?;
    let tx = db.transaction().await?;
    a.attach_transaction(&tx).await?;
    let written = tx.execute(INSERT, &[&emails, &names, &id]).await?;
    tx.commit().await?;
    a.finish(written).await?;
    Ok(())
}

async fn import_forgetting_commit(
    dsn: &str,
    audit: &Client,
    file: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let (emails, names) = read_csv(file)?;
    let mut a = ImportAudit::builder("contacts", name(file), emails.len() as u64)
        .start(audit)
        .await?;
    let id = a.import_id();
    let db = connect(dsn, "importer").await?;
    db.batch_execute("BEGIN").await?;
    let xid: String = db
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await?
        .get(0);
    a.attach_xact_id(xid.parse()?).await?;
    let written = db.execute(INSERT, &[&emails, &names, &id]).await?;
    // The bug: no COMMIT. The app reports success, and its connection goes away.
    a.finish(written).await?;
    drop(db);
    Ok(())
}

async fn import_committing_three_percent(
    dsn: &str,
    audit: &Client,
    file: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let (emails, names) = read_csv(file)?;
    let total = emails.len();
    let first = total * 3 / 100;
    let mut a = ImportAudit::builder("contacts", name(file), total as u64)
        .start(audit)
        .await?;
    let id = a.import_id();
    let mut db = connect(dsn, "importer").await?;
    // The first batch is committed ...
    let tx = db.transaction().await?;
    a.attach_transaction(&tx).await?;
    tx.execute(
        INSERT,
        &[&emails[..first].to_vec(), &names[..first].to_vec(), &id],
    )
    .await?;
    tx.commit().await?;
    // ... the rest goes into a transaction the app never commits.
    let tx = db.transaction().await?;
    tx.execute(
        INSERT,
        &[&emails[first..].to_vec(), &names[first..].to_vec(), &id],
    )
    .await?;
    a.finish(total as u64).await?;
    drop(tx);
    Ok(())
}

async fn get(
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}
