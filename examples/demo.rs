//! pgvigil in two minutes, against a scratch PostgreSQL cluster of its own.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! It starts a throwaway cluster (initdb on a free port, removed afterwards), runs pgvigil
//! against it with a 1-second poll interval, then plays an application that leaves an import's
//! transaction open with uncommitted rows — the bug behind the incident pgvigil was built for —
//! and prints what pgvigil reports, before and after the transaction commits. While it runs,
//! the status page and `/metrics` are served on the address it prints.

use std::path::Path;
use std::time::Duration;

use pgvigil::Config;
use pgvigil::config::LibpqEnv;
use pgvigil_testkit::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("starting a scratch PostgreSQL cluster ...");
    let cluster = tokio::task::spawn_blocking(TestCluster::start_private).await?;
    let db = cluster.create_database("demo");
    cluster.psql(
        &db,
        "CREATE TABLE contacts (id bigint PRIMARY KEY, email text NOT NULL)",
    );
    println!("cluster on port {}, database {db}", cluster.port());

    let config = Config::parse(
        Path::new("demo.toml"),
        &format!(
            "[logging]\nlevel = \"warn\"\n\n[[targets]]\nname = \"demo\"\ndsn = \"{}\"\npoll_interval = \"1s\"\n",
            cluster.dsn(&db)
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
    println!("pgvigil is serving http://{addr}/ (status page) and http://{addr}/metrics\n");
    tokio::time::sleep(Duration::from_secs(2)).await;

    println!("== an importer opens a transaction, inserts 10,000 rows, and never commits");
    let (app, connection) = tokio_postgres::connect(
        &format!("{} application_name=importer", cluster.dsn(&db)),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    app.batch_execute(
        "BEGIN; INSERT INTO contacts SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 10000) g",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    show(addr).await?;

    println!("\n== the importer finally commits");
    app.batch_execute("COMMIT").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    show(addr).await?;

    let _ = stop.send(());
    daemon.await??;
    println!("\ndone; the scratch cluster is removed.");
    Ok(())
}

/// Print the metrics lines that tell the story.
async fn show(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    for line in body.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("pgvigil_up")
                || l.starts_with("pgvigil_transactions_with_writes")
                || l.starts_with("pgvigil_idle_in_transaction_max_age_seconds")
                || l.starts_with("pgvigil_connections{"))
    }) {
        println!("  {line}");
    }
    Ok(())
}
