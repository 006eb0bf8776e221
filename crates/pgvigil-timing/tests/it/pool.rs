//! deadpool-postgres support: pool gauges, wait/use time, timeouts, generic code on pooled
//! connections.

use std::time::Duration;

use deadpool_postgres::{Manager, Pool, Runtime, Timeouts};
use pgvigil_timing::{GenericTimedClient, Recorder};
use prometheus_client::registry::Registry;

use crate::support::{cluster, database, encode, sample};

/// How long a caller waits for a connection before it times out. The third caller of
/// `pool_gauges_move_when_connections_are_checked_out` is pending for exactly this long, and
/// the test must see it pending meanwhile: generous, so a loaded machine that does not
/// schedule the test for seconds still does (it costs this long once, in that one test).
const POOL_WAIT: Duration = Duration::from_secs(10);

fn pool(db: &str, max: usize) -> Pool {
    let config: tokio_postgres::Config = cluster().dsn(db).parse().unwrap();
    let manager = Manager::new(config, tokio_postgres::NoTls);
    Pool::builder(manager)
        .max_size(max)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(POOL_WAIT),
            ..Timeouts::default()
        })
        .build()
        .unwrap()
}

fn gauge(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("db_client_connection_pool_name", "main")];
    all.extend_from_slice(labels);
    sample(text, name, &all).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
}

#[tokio::test]
async fn pool_gauges_move_when_connections_are_checked_out() {
    let db = database("timing_pool");
    let mut registry = Registry::default();
    let recorder = Recorder::builder().prometheus_client(&mut registry).build();
    let pool = pgvigil_timing::TimedPool::new(pool(&db, 2), recorder, "main");

    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    // Generic code runs on pooled connections, prepared statements come from the pool's cache.
    let one: i32 = a.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let stmt = b.prepare_cached("SELECT $1::int4").await.unwrap();
    assert_eq!(b.query_one(&stmt, &[&5]).await.unwrap().get::<_, i32>(0), 5);

    let text = encode(&registry);
    assert_eq!(
        gauge(
            &text,
            "db_client_connection_count",
            &[("db_client_connection_state", "used")]
        ),
        2.0
    );
    assert_eq!(
        gauge(
            &text,
            "db_client_connection_count",
            &[("db_client_connection_state", "idle")]
        ),
        0.0
    );
    assert_eq!(gauge(&text, "db_client_connection_max", &[]), 2.0);
    assert_eq!(
        gauge(&text, "db_client_connection_pending_requests", &[]),
        0.0
    );

    // A third caller waits...
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    // Wait until it is queued (the gauge asserted below), not for a fixed time.
    let deadline = std::time::Instant::now() + POOL_WAIT;
    let text = loop {
        let text = encode(&registry);
        if gauge(&text, "db_client_connection_pending_requests", &[]) == 1.0
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        gauge(&text, "db_client_connection_pending_requests", &[]),
        1.0
    );
    // ...and times out: counted.
    assert!(waiter.await.unwrap().is_err());
    let text = encode(&registry);
    assert_eq!(
        gauge(&text, "db_client_connection_timeouts_total", &[]),
        1.0
    );

    drop(a);
    let text = encode(&registry);
    assert_eq!(
        gauge(
            &text,
            "db_client_connection_count",
            &[("db_client_connection_state", "used")]
        ),
        1.0
    );
    assert_eq!(
        gauge(
            &text,
            "db_client_connection_count",
            &[("db_client_connection_state", "idle")]
        ),
        1.0
    );
    assert_eq!(
        gauge(&text, "db_client_connection_pending_requests", &[]),
        0.0
    );
    assert_eq!(
        gauge(&text, "db_client_connection_wait_time_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        gauge(&text, "db_client_connection_use_time_seconds_count", &[]),
        1.0
    );

    // A transaction on a pooled connection is timed too.
    let mut c = pool.get().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let stmt = tx.prepare_cached("SELECT 2").await.unwrap();
    tx.query_one(&stmt, &[]).await.unwrap();
    tx.commit().await.unwrap();
    drop(c);
    drop(b);
    let text = encode(&registry);
    assert_eq!(
        sample(
            &text,
            "db_client_operation_duration_seconds_count",
            &[("db_query_summary", "COMMIT")]
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &text,
            "db_client_connection_count",
            &[("db_client_connection_state", "idle")]
        ),
        2.0
    );

    // Once the pool is gone its gauges disappear.
    drop(pool);
    let text = encode(&registry);
    assert!(!text.contains("db_client_connection_count"), "{text}");
}
