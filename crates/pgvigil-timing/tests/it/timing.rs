//! The timed client: durations, errors, streams, cardinality, transactions, spans.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use pgvigil_timing::{GenericTimedClient, Recorder, TimedClient};
use prometheus_client::registry::Registry;
use tokio_postgres::error::SqlState;

use crate::support::{connect, database, encode, label_values, sample};

const DURATION: &str = "db_client_operation_duration_seconds";

async fn timed(db: &str, builder: pgvigil_timing::RecorderBuilder) -> (TimedClient, Registry) {
    let mut registry = Registry::default();
    let recorder = builder
        .namespace(db)
        .prometheus_client(&mut registry)
        .build();
    (recorder.wrap(connect(db).await), registry)
}

fn count(text: &str, summary: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut labels = vec![("db_query_summary", summary)];
    labels.extend_from_slice(extra);
    sample(text, &format!("{DURATION}_count"), &labels)
}

#[tokio::test]
async fn durations_are_recorded_per_statement() {
    let db = database("timing_durations");
    let (client, registry) = timed(&db, Recorder::builder()).await;
    client
        .batch_execute("CREATE TABLE users (id int primary key, name text); INSERT INTO users VALUES (1, 'ada')")
        .await
        .unwrap();
    for _ in 0..3 {
        let row = client
            .query_one("SELECT name FROM users WHERE id = $1", &[&1])
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "ada");
    }
    client.query("SELECT pg_sleep(0.06)", &[]).await.unwrap();
    let n = client
        .execute("UPDATE users SET name = $1 WHERE id = 1", &[&"bob"])
        .await
        .unwrap();
    assert_eq!(n, 1);
    client
        .named("load_user")
        .query_opt("SELECT * FROM users WHERE id = $1", &[&2])
        .await
        .unwrap();
    let stmt = client
        .prepare("INSERT INTO users VALUES ($1, $2)")
        .await
        .unwrap();
    assert_eq!(stmt.summary().summary(), "INSERT users");
    client.execute(&stmt, &[&2, &"cy"]).await.unwrap();
    client.execute(&stmt, &[&3, &"di"]).await.unwrap();

    let text = encode(&registry);
    let ns = db.as_str();
    let common = [("db_system_name", "postgresql"), ("db_namespace", ns)];
    assert_eq!(
        count(&text, "SELECT users", &[("db_operation_name", "SELECT")]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(count(&text, "UPDATE users", &common), Some(1.0));
    assert_eq!(
        count(&text, "load_user", &[("db_operation_name", "SELECT")]),
        Some(1.0)
    );
    assert_eq!(
        count(&text, "INSERT users", &[("db_operation_name", "INSERT")]),
        Some(2.0)
    );
    assert_eq!(
        count(&text, "INSERT users", &[("db_operation_name", "PREPARE")]),
        Some(1.0)
    );
    // The sleep's duration landed in the right buckets: not <= 50ms, but <= 100ms... or later
    // on a loaded machine; in every case the sum covers the 60ms slept.
    let sum = sample(
        &text,
        &format!("{DURATION}_sum"),
        &[("db_query_summary", "SELECT")],
    )
    .unwrap();
    assert!(sum >= 0.06, "sum {sum}");
    let le_005 = sample(
        &text,
        &format!("{DURATION}_bucket"),
        &[("db_query_summary", "SELECT"), ("le", "0.05")],
    )
    .unwrap();
    assert_eq!(le_005, 0.0, "{text}");
    // Buckets are the semantic-convention ones.
    for le in [
        "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "10.0", "+Inf",
    ] {
        assert!(
            sample(
                &text,
                &format!("{DURATION}_bucket"),
                &[("db_query_summary", "UPDATE users"), ("le", le)]
            )
            .is_some(),
            "bucket {le} missing:\n{text}"
        );
    }
}

#[tokio::test]
async fn errors_pass_through_unchanged_and_carry_the_sqlstate() {
    let db = database("timing_errors");
    let (client, registry) = timed(&db, Recorder::builder()).await;
    let raw = connect(&db).await;
    raw.batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    let timed_err = client
        .execute("INSERT INTO t VALUES ($1)", &[&1])
        .await
        .unwrap_err();
    let raw_err = raw
        .execute("INSERT INTO t VALUES ($1)", &[&1])
        .await
        .unwrap_err();
    assert_eq!(timed_err.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(timed_err.to_string(), raw_err.to_string());
    assert_eq!(
        timed_err.as_db_error().unwrap().constraint(),
        raw_err.as_db_error().unwrap().constraint()
    );

    let syntax = client.query("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(syntax.code(), Some(&SqlState::SYNTAX_ERROR));
    let missing = client
        .query_one("SELECT * FROM nope", &[])
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(&SqlState::UNDEFINED_TABLE));
    // query_one's own "not exactly one row" error has no SQLSTATE.
    let none = client
        .query_one("SELECT 1 WHERE false", &[])
        .await
        .unwrap_err();
    assert!(none.code().is_none());

    let text = encode(&registry);
    assert_eq!(
        count(&text, "INSERT t", &[("error_type", "23505")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(count(&text, "OTHER", &[("error_type", "42601")]), Some(1.0));
    assert_eq!(
        count(&text, "SELECT nope", &[("error_type", "42P01")]),
        Some(1.0)
    );
    assert_eq!(
        count(&text, "SELECT", &[("error_type", "_OTHER")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn streams_and_copy_are_timed_until_finished_or_dropped() {
    let db = database("timing_streams");
    let (client, registry) = timed(&db, Recorder::builder()).await;
    client
        .batch_execute("CREATE TABLE items (n int)")
        .await
        .unwrap();

    // COPY IN, finished.
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY items (n) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    for i in 0..100 {
        sink.send(bytes::Bytes::from(format!("{i}\n")))
            .await
            .unwrap();
    }
    assert_eq!(sink.as_mut().finish().await.unwrap(), 100);

    // COPY IN, dropped unfinished: aborted, recorded as cancelled.
    {
        let sink = client
            .named("abandoned_copy")
            .copy_in::<_, bytes::Bytes>("COPY items (n) FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"1\n")).await.unwrap();
    }

    // Row stream read to the end.
    let stream = client
        .query_raw("SELECT n FROM items ORDER BY n", std::iter::empty::<i32>())
        .await
        .unwrap();
    let rows: Vec<tokio_postgres::Row> = stream.try_collect().await.unwrap();
    assert_eq!(rows.len(), 100);
    // Row stream dropped after one row: still recorded, not as an error.
    {
        let stream = client
            .named("first_item")
            .query_raw("SELECT n FROM items", std::iter::empty::<i32>())
            .await
            .unwrap();
        futures_util::pin_mut!(stream);
        assert!(stream.next().await.is_some());
    }
    // COPY OUT.
    let out = client.copy_out("COPY items TO STDOUT").await.unwrap();
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    assert_eq!(chunks.len(), 100);

    let text = encode(&registry);
    assert_eq!(
        count(&text, "COPY items", &[("error_type", "")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        count(&text, "abandoned_copy", &[("error_type", "cancelled")]),
        Some(1.0)
    );
    assert_eq!(
        count(&text, "SELECT items", &[("error_type", "")]),
        Some(1.0)
    );
    assert_eq!(count(&text, "first_item", &[("error_type", "")]), Some(1.0));
    // The connection is still healthy after the aborted COPY.
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        100
    );
}

#[tokio::test]
async fn label_cardinality_stays_bounded() {
    const BUDGET: usize = 40;
    let db = database("timing_cardinality");
    let (client, registry) = timed(&db, Recorder::builder().max_statement_names(BUDGET)).await;
    let mut ddl = String::new();
    for t in 0..60 {
        ddl.push_str(&format!("CREATE TABLE t{t} (id int); "));
    }
    client.batch_execute(&ddl).await.unwrap();
    // 3000 distinct SQL strings over 60 tables, plus 500 distinct caller names.
    for i in 0..3000 {
        let sql = format!("SELECT {i} AS literal_{i} FROM t{} WHERE id = $1", i % 60);
        client.query(&sql, &[&i]).await.unwrap();
    }
    for i in 0..500 {
        client
            .named(&format!("job_{i}"))
            .query("SELECT $1::int4", &[&i])
            .await
            .unwrap();
    }
    assert!(client.recorder().distinct_statement_names() <= BUDGET);
    let text = encode(&registry);
    let summaries = label_values(&text, &format!("{DURATION}_count"), "db_query_summary");
    assert!(
        summaries.len() <= BUDGET + 1,
        "{} summaries: {summaries:?}",
        summaries.len()
    );
    assert!(summaries.contains("other"));
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with(&format!("{DURATION}_count")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(
        total, 3501.0,
        "every operation is still counted (incl. the DDL batch)"
    );
    let operations = label_values(&text, &format!("{DURATION}_count"), "db_operation_name");
    assert_eq!(
        operations.into_iter().collect::<Vec<_>>(),
        vec!["CREATE".to_owned(), "SELECT".to_owned()]
    );
}

/// Generic application code: runs on a client, a transaction or a savepoint alike.
async fn insert_and_count(
    db: &impl GenericTimedClient,
    id: i32,
) -> Result<i64, tokio_postgres::Error> {
    db.execute("INSERT INTO acct VALUES ($1)", &[&id]).await?;
    let row = db
        .named("count_acct")
        .query_one("SELECT count(*) FROM acct", &[])
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn transactions_savepoints_and_generic_code() {
    let db = database("timing_tx");
    let (mut client, registry) = timed(&db, Recorder::builder()).await;
    client
        .batch_execute("CREATE TABLE acct (id int)")
        .await
        .unwrap();
    assert_eq!(insert_and_count(&client, 1).await.unwrap(), 1);
    {
        let mut tx = client.transaction().await.unwrap();
        assert_eq!(insert_and_count(&tx, 2).await.unwrap(), 2);
        {
            let sp = tx.transaction().await.unwrap();
            assert_eq!(insert_and_count(&sp, 3).await.unwrap(), 3);
            sp.rollback().await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    {
        let tx = client.transaction().await.unwrap();
        insert_and_count(&tx, 4).await.unwrap();
        // dropped: rolled back by tokio-postgres
    }
    assert_eq!(
        client
            .get_ref()
            .query_one("SELECT count(*) FROM acct", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        2
    );
    let text = encode(&registry);
    assert_eq!(count(&text, "BEGIN", &[]), Some(2.0), "{text}");
    assert_eq!(count(&text, "SAVEPOINT", &[]), Some(1.0));
    assert_eq!(count(&text, "ROLLBACK", &[]), Some(1.0));
    assert_eq!(count(&text, "COMMIT", &[]), Some(1.0));
    assert_eq!(count(&text, "count_acct", &[]), Some(4.0));
}

/// Captures spans (name + fields) and events for assertions.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<std::collections::BTreeMap<String, String>>>>,
    events: Arc<Mutex<Vec<std::collections::BTreeMap<String, String>>>>,
}

struct Fields<'a>(&'a mut std::collections::BTreeMap<String, String>);
impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut map = std::collections::BTreeMap::new();
        attrs.record(&mut Fields(&mut map));
        ctx.span(id).unwrap().extensions_mut().insert(map);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let span = ctx.span(id).unwrap();
        let mut ext = span.extensions_mut();
        let map = ext
            .get_mut::<std::collections::BTreeMap<String, String>>()
            .unwrap();
        values.record(&mut Fields(map));
    }

    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut map = std::collections::BTreeMap::new();
        map.insert("target".to_owned(), event.metadata().target().to_owned());
        event.record(&mut Fields(&mut map));
        self.events.lock().unwrap().push(map);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        if let Some(map) = span
            .extensions()
            .get::<std::collections::BTreeMap<String, String>>()
        {
            self.spans.lock().unwrap().push(map.clone());
        }
    }
}

/// The capture layer, installed as the global subscriber: a thread-scoped one races with the
/// callsite interest cache while other tests run in parallel threads. Tests filter what they
/// read by their own `db.namespace`.
fn capture() -> Capture {
    use tracing_subscriber::layer::SubscriberExt;
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(capture.clone()),
            )
            .expect("no other global subscriber in this test binary");
            capture
        })
        .clone()
}

#[tokio::test]
async fn spans_carry_semconv_attributes_and_slow_queries_warn() {
    let capture = capture();

    let db = database("timing_spans");
    let (client, _registry) = timed(
        &db,
        Recorder::builder().slow_query_threshold(Duration::from_millis(50)),
    )
    .await;
    client
        .batch_execute("CREATE TABLE s (n int); INSERT INTO s SELECT generate_series(1, 5)")
        .await
        .unwrap();
    let rows = client.query("SELECT n FROM s", &[]).await.unwrap();
    assert_eq!(rows.len(), 5);
    client
        .named("nap")
        .query("SELECT pg_sleep(0.08), n FROM s LIMIT 2", &[])
        .await
        .unwrap();
    let _ = client
        .execute("INSERT INTO nope VALUES (1)", &[])
        .await
        .unwrap_err();
    let addressed = client
        .recorder()
        .with_server_address("db.internal", 6432)
        .wrap(connect(&db).await);
    addressed
        .named("with_server")
        .query("SELECT n FROM s WHERE n = $1", &[&1])
        .await
        .unwrap();
    drop(client);

    let spans: Vec<_> = capture
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.get("db.namespace") == Some(&db))
        .cloned()
        .collect();
    let select = spans
        .iter()
        .find(|s| s.get("otel.name").map(String::as_str) == Some("SELECT s"))
        .unwrap_or_else(|| panic!("no SELECT s span in {spans:#?}"));
    assert_eq!(select["db.system.name"], "postgresql");
    assert_eq!(select["db.namespace"], db);
    assert_eq!(select["db.operation.name"], "SELECT");
    assert_eq!(select["db.query.summary"], "SELECT s");
    assert_eq!(select["db.response.returned_rows"], "5");
    assert_eq!(select["otel.kind"], "client");
    assert!(!select.contains_key("server.address"), "{select:?}");
    let addressed = spans
        .iter()
        .find(|s| s.get("otel.name").map(String::as_str) == Some("with_server"))
        .unwrap();
    assert_eq!(addressed["server.address"], "db.internal");
    assert_eq!(addressed["server.port"], "6432");
    let failed = spans
        .iter()
        .find(|s| s.get("otel.name").map(String::as_str) == Some("INSERT nope"))
        .unwrap();
    assert_eq!(failed["error.type"], "42P01");
    assert_eq!(failed["db.response.status_code"], "42P01");
    assert_eq!(failed["otel.status_code"], "error");

    let events = capture.events.lock().unwrap().clone();
    let slow: Vec<_> = events
        .iter()
        .filter(|e| e["target"] == "pgvigil_timing::slow_query")
        .filter(|e| e.get("db.namespace") == Some(&db))
        // On a loaded machine any statement can pass 50 ms (a first query on a new connection
        // took 181 ms once); what must hold is that the nap is reported, once.
        .filter(|e| e["statement"] == "nap")
        .collect();
    assert_eq!(slow.len(), 1, "{events:#?}");
    assert_eq!(slow[0]["statement"], "nap");
    assert_eq!(slow[0]["rows"], "2");
    assert!(slow[0]["duration_ms"].parse::<f64>().unwrap() >= 80.0);
}
