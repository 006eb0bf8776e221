//! The status page's memory: bytes of history per source after a full hour, and the cost of
//! taking one sample.
//!
//! Run with `cargo bench --bench history` (no database needed; a few seconds). Each source is
//! fed an hour of realistic observations — 60 client connections, 12 open transactions (3
//! holding writes), 200 statements with 200-character texts (of which the top 5 are kept), 40
//! tables in 2 databases (8 kept), and an import every minute with 20 in the audit table, each
//! moving from running through confirming to a verdict — at a 1 s, 15 s (default) and 60 s
//! poll. Reported: the ring's own count of its heap bytes ([`Ring::heap_bytes`]), the process's
//! resident memory growth for 100 such sources (a cross-check of the count, allocator overhead
//! included), and the time to take one sample. The README and BENCHMARKS.md quote the figures.
//! Not a test: nothing here asserts a speed.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgvigil::collect::Observations;
use pgvigil::collect::activity::{ActivityReport, Session};
use pgvigil::collect::imports::ImportsReport;
use pgvigil::collect::imports::reconcile::{ImportVerdict, Verdict};
use pgvigil::collect::statements::{StatementInterval, StatementsReport};
use pgvigil::collect::tables::{TableStats, TablesReport};
use pgvigil::page::history::Ring;

const SOURCES_FOR_RSS: usize = 100;

/// The observations of the poll at second `t`.
fn observations(t: u64, texts: &[Arc<str>], datnames: &[Arc<str>]) -> Observations {
    let mut by_state = BTreeMap::new();
    by_state.insert("active".to_owned(), 8 + (t % 5) as i64);
    by_state.insert("idle".to_owned(), 40);
    by_state.insert("idle in transaction".to_owned(), 12);
    let session = |i: i32| Session {
        pid: 1000 + i,
        datname: "app".into(),
        usename: "app".into(),
        application_name: "web".into(),
        state: "idle in transaction".into(),
        xact_age_seconds: 3.0,
        state_age_seconds: 1.0,
        holds_writes: i < 3,
        query: "UPDATE accounts SET balance = balance - $1 WHERE id = $2".into(),
    };
    let statements = (0..200)
        .map(|i| StatementInterval {
            queryid: 7_000_000 + i as i64,
            datname: datnames[i % 2].clone(),
            usename: "app".into(),
            toplevel: true,
            calls: 10.0 + ((t as usize + i) % 17) as f64,
            mean_seconds: 0.001 * (1 + i % 13) as f64,
            baseline_seconds: Some(0.002),
            baseline_samples: 20,
            query: Some(texts[i].clone()),
        })
        .collect();
    let mut o = Observations {
        up: true,
        activity: Some(ActivityReport {
            max_connections: 100,
            reserved_connections: 3,
            client_connections: 60,
            open_transactions: (0..12).map(session).collect(),
            by_state,
        }),
        statements: Some(StatementsReport {
            interval_seconds: 15.0,
            statements,
            ..StatementsReport::default()
        }),
        ..Observations::default()
    };
    for datname in ["app", "crm"] {
        let tables = (0..20)
            .map(|i| TableStats {
                table: format!("public.table_{i}"),
                live_rows: 1_000_000 * (i + 1) + t as i64,
                dead_rows: 100,
                reltuples: 1e6,
                size_bytes: 100_000_000 * (i + 1),
                exact_rows: (i < 2).then_some(5_000 + t as i64),
            })
            .collect();
        o.database_mut(datname).tables = Some(TablesReport {
            datname: datname.into(),
            tables,
            ..TablesReport::default()
        });
    }
    // An import a minute; the audit table returns the newest 20.
    let newest = t / 60;
    let imports = (newest.saturating_sub(19)..=newest)
        .map(|n| {
            let mut v = ImportVerdict::invalid(
                "public.import_audit",
                &format!("{n:08x}-0000-4000-8000-000000000000"),
                "committed",
                String::new(),
            );
            let age = t - n * 60;
            v.verdict = match age {
                0..10 => Verdict::Running,
                10..20 => Verdict::Confirming,
                _ if n % 7 == 0 => Verdict::Shortfall,
                _ => Verdict::Ok,
            };
            v.age_seconds = Some(age as f64);
            v
        })
        .collect();
    o.database_mut("app").imports = Some(ImportsReport {
        datname: "app".into(),
        imports,
        ..ImportsReport::default()
    });
    o
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let texts: Vec<Arc<str>> = (0..200)
        .map(|i| Arc::from(format!("SELECT /* statement {i:03} */ {}", "x, ".repeat(60)).as_str()))
        .collect();
    let datnames: Vec<Arc<str>> = vec![Arc::from("app"), Arc::from("crm")];
    println!(
        "| poll interval | samples | heap bytes per source (counted) | RSS growth per source ({SOURCES_FOR_RSS} sources) | one sample |"
    );
    println!("|---|---|---|---|---|");
    // Every ring stays alive to the end, so memory freed by one run is not reused by the next
    // and the RSS growth is the rings' own.
    let mut keep: Vec<Vec<Ring>> = Vec::new();
    for step in [1_u64, 15, 60] {
        // An hour and a bit, so the ring is full and has wrapped; each poll's observations are
        // made, recorded into every ring, and dropped.
        let times: Vec<u64> = (0..(3_900 / step)).map(|i| 100_000 + i * step).collect();
        let mut ring = Ring::new(Duration::from_secs(step));
        let mut took = Duration::ZERO;
        for &t in &times {
            let o = observations(t, &texts, &datnames);
            let started = Instant::now();
            ring.record(&o, 0.02, t);
            took += started.elapsed();
        }
        let per_sample = took / times.len() as u32;
        let counted = ring.heap_bytes();
        let before = rss_bytes();
        let mut rings: Vec<Ring> = (0..SOURCES_FOR_RSS)
            .map(|_| Ring::new(Duration::from_secs(step)))
            .collect();
        for &t in &times {
            let o = observations(t, &texts, &datnames);
            for r in &mut rings {
                r.record(&o, 0.02, t);
            }
        }
        let rss = rss_bytes().saturating_sub(before) / SOURCES_FOR_RSS;
        keep.push(black_box(rings));
        println!(
            "| {step} s | {} | {:.0} KiB | {:.0} KiB | {:.1} µs |",
            ring.samples().len(),
            counted as f64 / 1024.0,
            rss as f64 / 1024.0,
            per_sample.as_secs_f64() * 1e6
        );
    }
}
