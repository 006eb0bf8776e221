//! N+1 detection and rulebook lints against real PostgreSQL: a loop of 50 lookups in one request
//! span is reported once with count 50; 50 lookups spread over 50 requests are not; the eager
//! version (one `= ANY($1)` query) is not. `SELECT *` and whole-table reads are flagged once per
//! statement.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use pgvigil_timing::{GenericTimedClient, Recorder, TimedClient};
use prometheus_client::registry::Registry;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{connect, database, encode, sample};

const LOOKUP: &str = "SELECT name FROM campaign WHERE id = $1";
const EAGER: &str = "SELECT id, name FROM campaign WHERE id = ANY($1)";
const N_PLUS_ONE: &str = "db_client_n_plus_one_total";
const RULEBOOK: &str = "db_client_rulebook_violations_total";

async fn setup(
    prefix: &str,
    builder: pgvigil_timing::RecorderBuilder,
) -> (Recorder, TimedClient, Registry) {
    let db = database(prefix);
    let mut registry = Registry::default();
    let recorder = builder
        .namespace(&db)
        .prometheus_client(&mut registry)
        .build();
    let client = recorder.wrap(connect(&db).await);
    client
        .batch_execute(
            "CREATE TABLE campaign (id int8 PRIMARY KEY, name text NOT NULL);
             INSERT INTO campaign SELECT g, 'campaign ' || g FROM generate_series(1, 50) g",
        )
        .await
        .unwrap();
    (recorder, client, registry)
}

/// Events (target, fields, and the name of the span they belong to).
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);
impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S> tracing_subscriber::Layer<S> for Events
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut map = BTreeMap::new();
        map.insert("target".to_owned(), event.metadata().target().to_owned());
        if let Some(span) = ctx.event_span(event) {
            map.insert("span".to_owned(), span.name().to_owned());
        }
        event.record(&mut Fields(&mut map));
        self.0.lock().unwrap().push(map);
    }
}

impl Events {
    fn with_target(&self, target: &str) -> Vec<BTreeMap<String, String>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["target"] == target)
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn a_loop_in_one_request_span_is_reported_once_with_its_count() {
    let (recorder, client, registry) = setup("n1_spans", Recorder::builder()).await;
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let events = Events::default();
    // The unit-of-work layer goes before (inside) the OpenTelemetry layer.
    let subscriber = tracing_subscriber::registry()
        .with(recorder.unit_of_work_layer())
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("n1")))
        .with(events.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    // The N+1: one request, 50 lookups.
    async {
        for id in 1..=50_i64 {
            client.query_one(LOOKUP, &[&id]).await.unwrap();
        }
    }
    .instrument(tracing::info_span!(
        "request",
        unit_of_work = "GET /campaigns"
    ))
    .await;
    // The same 50 lookups spread over 50 requests.
    for id in 1..=50_i64 {
        async { client.query_one(LOOKUP, &[&id]).await.unwrap() }
            .instrument(tracing::info_span!(
                "request",
                unit_of_work = "GET /campaigns/:id"
            ))
            .await;
    }
    // The eager version.
    async {
        let ids: Vec<i64> = (1..=50).collect();
        assert_eq!(client.query(EAGER, &[&ids]).await.unwrap().len(), 50);
    }
    .instrument(tracing::info_span!(
        "request",
        unit_of_work = "GET /campaigns?eager"
    ))
    .await;

    let text = encode(&registry);
    assert_eq!(
        sample(
            &text,
            N_PLUS_ONE,
            &[("db_query_summary", "SELECT campaign")]
        ),
        Some(1.0),
        "{text}"
    );
    let reported = events.with_target("pgvigil_timing::n_plus_one");
    assert_eq!(reported.len(), 1, "{reported:#?}");
    let e = &reported[0];
    assert_eq!(e["count"], "50");
    assert_eq!(e["threshold"], "10");
    assert_eq!(e["unit"], "GET /campaigns");
    assert_eq!(e["statement"], "SELECT name FROM campaign WHERE id = ?");
    assert_eq!(e["db.query.summary"], "SELECT campaign");
    assert_eq!(e["span"], "request");

    // ... and a span event on the request's OpenTelemetry span.
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let with_event: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "request")
        .filter(|s| {
            s.events
                .iter()
                .any(|ev| ev.attributes.iter().any(|kv| kv.key.as_str() == "count"))
        })
        .collect();
    assert_eq!(with_event.len(), 1, "{spans:#?}");
    assert!(
        with_event[0]
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "unit_of_work" && kv.value.as_str() == "GET /campaigns")
    );
}

#[tokio::test]
async fn explicit_units_count_prepared_and_named_statements_and_can_be_switched_off() {
    let (recorder, client, registry) = setup("n1_scope", Recorder::builder()).await;
    let stmt = client.prepare(LOOKUP).await.unwrap();
    let unit = recorder.unit_of_work("job: reminders");
    let unit = {
        let counted = unit.scope(async {
            for id in 1..=12_i64 {
                client.query_one(&stmt, &[&id]).await.unwrap();
                client
                    .named("touch")
                    .execute("UPDATE campaign SET name = name WHERE id = $1", &[&id])
                    .await
                    .unwrap();
            }
            client
                .query_one("SELECT count(*) FROM campaign", &[])
                .await
                .unwrap();
        });
        counted.await;
        recorder.unit_of_work("ten is not more than ten")
    };
    unit.scope(async {
        for id in 1..=10_i64 {
            client.query_one(LOOKUP, &[&id]).await.unwrap();
        }
    })
    .await;
    let text = encode(&registry);
    assert_eq!(
        sample(
            &text,
            N_PLUS_ONE,
            &[("db_query_summary", "SELECT campaign")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, N_PLUS_ONE, &[("db_query_summary", "touch")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, N_PLUS_ONE, &[("db_query_summary", "SELECT count")]),
        None
    );

    // The counts are visible while the unit runs; outside any unit nothing is counted.
    let unit = recorder.unit_of_work("inspect");
    {
        // Synchronous-style scope (here on the test's single thread).
        let _entered = unit.enter();
        client.query_one(LOOKUP, &[&1_i64]).await.unwrap();
    }
    assert_eq!(unit.counts(), vec![("SELECT campaign".to_owned(), 1)]);
    for id in 1..=20_i64 {
        client.query_one(LOOKUP, &[&id]).await.unwrap();
    }
    drop(unit);

    let (off, client, registry) =
        setup("n1_off", Recorder::builder().n_plus_one_threshold(None)).await;
    assert_eq!(off.n_plus_one_threshold(), None);
    off.unit_of_work("off")
        .scope(async {
            for id in 1..=30_i64 {
                client.query_one(LOOKUP, &[&id]).await.unwrap();
            }
        })
        .await;
    assert!(!encode(&registry).contains(&format!("{N_PLUS_ONE}{{")));
}

#[tokio::test]
async fn select_star_and_whole_table_reads_are_flagged_once_per_statement() {
    let (recorder, client, registry) = setup("rulebook", Recorder::builder()).await;
    let events = Events::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    for _ in 0..3 {
        client
            .query("SELECT * FROM campaign WHERE id = $1", &[&1_i64])
            .await
            .unwrap();
        client
            .query("SELECT id, name FROM campaign", &[])
            .await
            .unwrap();
        client
            .query("SELECT name FROM campaign WHERE id = $1", &[&1_i64])
            .await
            .unwrap();
        client
            .query("SELECT '* FROM campaign' AS q", &[])
            .await
            .unwrap();
    }
    recorder.summary_for("TABLE campaign");
    let text = encode(&registry);
    let flagged = |rule: &str| {
        sample(
            &text,
            RULEBOOK,
            &[("rule", rule), ("db_query_summary", "SELECT campaign")],
        )
    };
    assert_eq!(flagged("select_star"), Some(1.0), "{text}");
    assert_eq!(flagged("unbounded_select"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            RULEBOOK,
            &[
                ("rule", "select_star"),
                ("db_query_summary", "TABLE campaign")
            ]
        ),
        Some(1.0)
    );
    let logged = events.with_target("pgvigil_timing::rulebook");
    let statements: Vec<(&str, &str)> = logged
        .iter()
        .map(|e| (e["rule"].as_str(), e["statement"].as_str()))
        .collect();
    assert_eq!(
        statements,
        [
            ("select_star", "SELECT * FROM campaign WHERE id = ?"),
            ("unbounded_select", "SELECT id , name FROM campaign"),
            ("select_star", "TABLE campaign"),
            ("unbounded_select", "TABLE campaign"),
        ]
    );
}
