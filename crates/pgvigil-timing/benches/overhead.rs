//! Overhead of pgvigil-timing against the raw tokio-postgres client, as ratios measured in one run.
//!
//! How to run (needs PostgreSQL binaries for a throwaway cluster, or `PGVIGIL_TEST_DSN`):
//!
//! ```text
//! cargo bench -p pgvigil-timing --bench overhead --features otel
//! BENCH_ROUNDS=600 BENCH_ITERS=100 cargo bench -p pgvigil-timing --bench overhead --features otel
//! ```
//!
//! Workload: `client.query_one("SELECT $1::int4", &[&1])` on loopback, four variants:
//!
//! * `raw`: the tokio-postgres `Client`;
//! * `metrics`: a `TimedClient` recording to a prometheus-client registry, no tracing subscriber
//!   (spans are disabled, as in an app that only scrapes metrics), N+1 detection switched off
//!   (`n_plus_one_threshold(None)`);
//! * `metrics+n+1`: the same with N+1 detection on (the default threshold) and every 5 calls
//!   wrapped in a unit of work (`Recorder::unit_of_work(..).scope(..)`), as a request would be:
//!   each call is counted, each unit ends and is checked;
//! * `metrics+spans`: the same plus a tracing-opentelemetry layer exporting every span through
//!   the SDK's batch processor (to an in-memory exporter, emptied each round), and `trace_id`
//!   exemplars on the histogram.
//!
//! This is a plain `harness = false` program rather than criterion: the variants are
//! **interleaved** (each round runs a short batch of every variant, in rotating order) so drift
//! on a shared machine hits all of them alike. The figure of merit is the median, over rounds,
//! of each round's ratio to `raw`, which is what BENCHMARKS.md records.

use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use pgvigil_timing::{GenericTimedClient, Recorder, TimedClient};
use tokio_postgres::{Client, NoTls};
use tracing_subscriber::layer::SubscriberExt;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

async fn raw_batch(client: &Client, n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let row = client.query_one("SELECT $1::int4", &[&1i32]).await.unwrap();
        std::hint::black_box(row.get::<_, i32>(0));
    }
    start.elapsed()
}

/// `n` calls in units of work of 5 calls each.
async fn unit_batch(recorder: &Recorder, client: &TimedClient, n: usize) -> Duration {
    let start = Instant::now();
    for chunk in 0..n.div_ceil(5) {
        let calls = (n - chunk * 5).min(5);
        recorder
            .unit_of_work("request")
            .scope(async {
                for _ in 0..calls {
                    let row = client.query_one("SELECT $1::int4", &[&1i32]).await.unwrap();
                    std::hint::black_box(row.get::<_, i32>(0));
                }
            })
            .await;
    }
    start.elapsed()
}

async fn timed_batch(client: &TimedClient, n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let row = client.query_one("SELECT $1::int4", &[&1i32]).await.unwrap();
        std::hint::black_box(row.get::<_, i32>(0));
    }
    start.elapsed()
}

/// CPU time (ns) used so far by every thread of this process (Linux `schedstat`), so the client
/// side's work, including the span exporter's thread, is measured apart from scheduler noise.
/// `None` where `/proc` is unavailable.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special. Keep a
    // smoke mode for the latter so CI can compile-and-run it quickly.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds = if smoke {
        2
    } else {
        env_usize("BENCH_ROUNDS", 300)
    };
    let iters = if smoke {
        20
    } else {
        env_usize("BENCH_ITERS", 100)
    };

    let cluster = pgvigil_testkit::TestCluster::start();
    let dsn = cluster.dsn("postgres");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut registry = prometheus_client::registry::Registry::default();
    let recorder = Recorder::builder()
        .namespace("postgres")
        .prometheus_client(&mut registry)
        .slow_query_threshold(None)
        .n_plus_one_threshold(None)
        .build();
    let mut n1_registry = prometheus_client::registry::Registry::default();
    let n1_recorder = Recorder::builder()
        .namespace("postgres")
        .prometheus_client(&mut n1_registry)
        .slow_query_threshold(None)
        .build();
    let (raw, metrics, n1, spans) = rt.block_on(async {
        (
            connect(&dsn).await,
            recorder.wrap(connect(&dsn).await),
            n1_recorder.wrap(connect(&dsn).await),
            recorder.wrap(connect(&dsn).await),
        )
    });

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("pgvigil-timing-bench");
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer)),
    );

    // Warm up every variant (connections, statement paths, allocator).
    rt.block_on(async {
        raw_batch(&raw, iters / 4 + 1).await;
        timed_batch(&metrics, iters / 4 + 1).await;
        unit_batch(&n1_recorder, &n1, iters / 4 + 1).await;
    });
    tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(timed_batch(&spans, iters / 4 + 1))
    });

    const VARIANTS: usize = 4;
    let mut per_op: [Vec<f64>; VARIANTS] = Default::default();
    let mut ratios: [Vec<f64>; VARIANTS] = Default::default();
    let mut cpu_ns = [0u64; VARIANTS];
    for round in 0..rounds {
        for k in 0..VARIANTS {
            let variant = (round + k) % VARIANTS;
            let cpu_before = process_cpu_ns();
            let elapsed = match variant {
                0 => rt.block_on(raw_batch(&raw, iters)),
                1 => rt.block_on(timed_batch(&metrics, iters)),
                2 => rt.block_on(unit_batch(&n1_recorder, &n1, iters)),
                _ => tracing::dispatcher::with_default(&dispatch, || {
                    rt.block_on(timed_batch(&spans, iters))
                }),
            };
            if let (Some(before), Some(after)) = (cpu_before, process_cpu_ns()) {
                cpu_ns[variant] += after.saturating_sub(before);
            }
            per_op[variant].push(elapsed.as_secs_f64() * 1e6 / iters as f64);
        }
        for variant in 0..VARIANTS {
            ratios[variant].push(per_op[variant][round] / per_op[0][round]);
        }
        if round % 10 == 9 {
            let _ = provider.force_flush();
            exporter.reset();
        }
    }
    let _ = provider.shutdown();

    let names = ["raw", "metrics", "metrics+n+1", "metrics+spans"];
    let medians: Vec<f64> = per_op.iter_mut().map(|v| median(v)).collect();
    let ratio_medians: Vec<f64> = ratios.iter_mut().map(|v| median(v)).collect();
    println!(
        "overhead: {rounds} rounds x {iters} iterations per variant, interleaved; \
         query_one(\"SELECT $1::int4\") on loopback"
    );
    let total_ops = (rounds * iters) as f64;
    println!(
        "  variant        median µs/op   median per-round ratio vs raw   client CPU µs/op   CPU ratio"
    );
    for (i, ((name, m), r)) in names.iter().zip(&medians).zip(&ratio_medians).enumerate() {
        let cpu = cpu_ns[i] as f64 / 1e3 / total_ops;
        let cpu_raw = cpu_ns[0] as f64 / 1e3 / total_ops;
        println!(
            "  {name:<14} {m:>12.2}   {r:>29.3}   {cpu:>16.2}   {:>9.3}",
            cpu / cpu_raw
        );
    }
    // A sanity check that the metrics path really recorded everything it timed.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("db_client_operation_duration_seconds_count"));
    // Units of 5 calls stay under the threshold: counted and checked, never reported.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &n1_registry).unwrap();
    assert!(text.contains("db_client_operation_duration_seconds_count"));
    assert!(!text.contains("db_client_n_plus_one_total{"));
}
