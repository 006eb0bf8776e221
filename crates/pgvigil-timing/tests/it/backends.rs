//! The optional backends export the same metrics as the default one.

#[cfg(any(feature = "prometheus", feature = "otel"))]
use pgvigil_timing::{GenericTimedClient, Recorder};

#[cfg(any(feature = "prometheus", feature = "otel"))]
use crate::support::{connect, database};

#[cfg(feature = "prometheus")]
#[tokio::test]
async fn prometheus_crate_backend() {
    let db = database("backend_prom");
    let registry = prometheus::Registry::new();
    let recorder = Recorder::builder()
        .namespace(&db)
        .prometheus(&registry)
        .unwrap()
        .build();
    // Registering twice on the same registry is refused, not duplicated.
    assert!(Recorder::builder().prometheus(&registry).is_err());
    let client = recorder.wrap(connect(&db).await);
    client.query_one("SELECT $1::int4", &[&1]).await.unwrap();
    let _ = client.query("SELECT * FROM nope", &[]).await.unwrap_err();
    recorder
        .unit_of_work("n+1")
        .scope(async {
            for _ in 0..11 {
                client.query_one("SELECT $1::int4", &[&1]).await.unwrap();
            }
        })
        .await;
    let families = registry.gather();
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.get_metric().len())
    };
    assert_eq!(family("db_client_n_plus_one_total"), Some(1));
    // SELECT * FROM nope: select_star and unbounded_select.
    assert_eq!(family("db_client_rulebook_violations_total"), Some(2));
    let duration = families
        .iter()
        .find(|f| f.name() == "db_client_operation_duration_seconds")
        .expect("histogram registered");
    assert_eq!(duration.get_metric().len(), 2);
    let failed = duration
        .get_metric()
        .iter()
        .find(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "error_type" && l.value() == "42P01")
        })
        .expect("error series");
    assert_eq!(failed.get_histogram().get_sample_count(), 1);
    assert_eq!(failed.get_histogram().get_bucket().len(), 9);
}

#[cfg(feature = "otel")]
#[tokio::test]
async fn opentelemetry_metrics_backend() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let db = database("backend_otel");
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let meter = provider.meter("pgvigil-timing-test");
    let recorder = Recorder::builder()
        .namespace(&db)
        .opentelemetry(&meter)
        .build();
    let client = recorder.wrap(connect(&db).await);
    client.query_one("SELECT $1::int4", &[&1]).await.unwrap();
    recorder
        .unit_of_work("n+1")
        .scope(async {
            for _ in 0..11 {
                client.query_one("SELECT $1::int4", &[&1]).await.unwrap();
            }
        })
        .await;
    let _ = client
        .query("SELECT * FROM generate_series(1, 2)", &[])
        .await
        .unwrap();
    recorder.register_pool("fake", || {
        Some(pgvigil_timing::PoolStatus {
            max: 5,
            idle: 2,
            used: 1,
            pending_requests: 0,
        })
    });
    provider.force_flush().unwrap();
    let names: std::collections::BTreeSet<String> = exporter
        .get_finished_metrics()
        .unwrap()
        .iter()
        .flat_map(|rm| {
            rm.scope_metrics()
                .flat_map(|sm| sm.metrics().map(|m| m.name().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    for expected in [
        "db.client.operation.duration",
        "db.client.connection.count",
        "db.client.connection.max",
        "db.client.connection.pending_requests",
        "db.client.n_plus_one",
        "db.client.rulebook.violations",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
}
