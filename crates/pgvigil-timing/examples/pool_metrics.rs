//! Wrap a deadpool-postgres pool, run a few queries, and serve `/metrics`.
//!
//! How to run (against any PostgreSQL you can reach; defaults to the local server):
//!
//! ```text
//! PG_DSN="host=127.0.0.1 user=postgres dbname=postgres" \
//!     cargo run -p pgvigil-timing --example pool_metrics --features deadpool
//! curl -s http://127.0.0.1:9962/metrics
//! ```
//!
//! `LISTEN` sets the address (default `127.0.0.1:9962`); `ONESHOT=1` prints the metrics once and
//! exits instead of serving (handy in CI).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::{Manager, Pool, Runtime};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pgvigil_timing::{GenericTimedClient, Recorder, TimedPool};
use prometheus_client::registry::Registry;

#[tokio::main]
async fn main() {
    if let Err(e) = try_main().await {
        eprintln!("pool_metrics: {e}");
        std::process::exit(1);
    }
}

async fn try_main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dsn = std::env::var("PG_DSN")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=postgres".to_owned());
    let config: tokio_postgres::Config = dsn.parse()?;
    let dbname = config.get_dbname().unwrap_or("postgres").to_owned();

    // 1. Metrics: one registry, one recorder for the process.
    let mut registry = Registry::default();
    let recorder = Recorder::builder()
        .namespace(dbname)
        .prometheus_client(&mut registry)
        .build();

    // 2. The one-line change: wrap the pool.
    let pool = Pool::builder(Manager::new(config, tokio_postgres::NoTls))
        .max_size(4)
        .runtime(Runtime::Tokio1)
        .build()?;
    let pool: TimedPool = recorder.wrap_pool(pool);

    // 3. Use it like deadpool/tokio-postgres.
    let client = pool.get().await?;
    client
        .batch_execute("CREATE TEMP TABLE demo (id int primary key, name text)")
        .await?;
    let insert = client
        .prepare_cached("INSERT INTO demo VALUES ($1, $2)")
        .await?;
    for (id, name) in [(1, "ada"), (2, "bob"), (3, "cy")] {
        client.execute(&insert, &[&id, &name]).await?;
    }
    let rows = client
        .named("list_demo")
        .query("SELECT name FROM demo ORDER BY id LIMIT 100", &[])
        .await?;
    println!(
        "{} rows: {:?}",
        rows.len(),
        rows.iter().map(|r| r.get::<_, &str>(0)).collect::<Vec<_>>()
    );
    if let Err(e) = client
        .query("SELECT id FROM missing_table WHERE id = 1", &[])
        .await
    {
        println!("error passes through unchanged: {e} ({:?})", e.code());
    }
    // Keep this connection checked out so the gauges show one used connection.
    let _held = client;

    let registry = Arc::new(registry);
    if std::env::var_os("ONESHOT").is_some() {
        print!("{}", render(&registry)?);
        return Ok(());
    }

    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:9962".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("serving http://{listen}/metrics (Ctrl-C to stop)");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| serve(req, registry.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}

fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

async fn serve(
    req: Request<hyper::body::Incoming>,
    registry: Arc<Registry>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => match render(&registry) {
            Ok(text) => Response::builder()
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(text))),
            Err(_) => Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Full::new(Bytes::from_static(b"encoding failed\n"))),
        },
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"try /metrics\n"))),
    };
    Ok(response.expect("static response parts are valid"))
}
