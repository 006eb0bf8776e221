//! What the testkit costs a test, per installed PostgreSQL build: the first cluster start
//! (which builds the template with `initdb` when the cache has none), later starts, dropping a
//! cluster, and starting a standby. Prints a Markdown table; the figures in the crate docs come
//! from it. Give it a fresh cache directory to see the template builds:
//!
//! ```text
//! PGVIGIL_TESTKIT_DIR=/dev/shm/testkit-cost cargo run --release -p pgvigil-testkit \
//!     --example startup_cost [ROUNDS]
//! rm -rf /dev/shm/testkit-cost
//! ```

use std::time::{Duration, Instant};

use pgvigil_testkit::{TestCluster, available_versions};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("ROUNDS is a number"))
        .unwrap_or(10);
    println!(
        "| version | first start | later start (median, max) | drop (median) | standby start (median, max) |"
    );
    println!("|---|---|---|---|---|");
    for major in available_versions() {
        let (first, cluster) = timed(|| TestCluster::start_version(major));
        let version = cluster.psql("postgres", "SHOW server_version");
        drop(cluster);
        let mut starts = Vec::new();
        let mut drops = Vec::new();
        for _ in 0..rounds {
            let (start, cluster) = timed(|| TestCluster::start_version(major));
            starts.push(start);
            drops.push(timed(|| drop(cluster)).0);
        }
        let primary = TestCluster::start_version(major);
        let standbys: Vec<Duration> = (0..rounds.div_ceil(2))
            .map(|_| timed(|| primary.start_standby()).0)
            .collect();
        println!(
            "| {version} | {} | {}, {} | {} | {}, {} |",
            ms(first),
            ms(median(&starts)),
            ms(max(&starts)),
            ms(median(&drops)),
            ms(median(&standbys)),
            ms(max(&standbys)),
        );
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let value = f();
    (start.elapsed(), value)
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn max(samples: &[Duration]) -> Duration {
    samples.iter().copied().max().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
