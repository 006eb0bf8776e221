//! The heap the per-statement state holds per entry of pg_stat_statements, by accounting:
//! every allocated element (used or not) times its size, as each structure's `heap_bytes`
//! counts it. Allocator overhead is not included; it is a few bytes per allocation, and these
//! structures make a handful of allocations each, not one per entry.
//!
//! The state is driven as [`super::Statements::poll`] drives it: deltas, then top-K, then a
//! baseline sample for every statement with calls, then pruning.
//!
//! # The bound, 300 bytes per entry
//!
//! The layout gives, per entry once every statement is warmed up:
//!
//! | structure | bytes |
//! |---|---|
//! | delta | 24 key, 120 value (13 counters, `stats_since`, generation, padding), ~8 table: ~152 |
//! | baseline | 24 key, 24 value, ~8 table: ~56 |
//! | top-K | 24 key, 8 score, ~8 table: ~40; and 100 members of ~136 shared by all: ~14 at 1,000 |
//!
//! That is ~262; the rest of the 300 is for the `Vec`s' growth (at most an eighth, when a
//! poll brings more entries than the last).
//!
//! The old layout — `HashMap`s of 2,048 buckets for 1,000 entries, a 128-byte `Last`, an
//! 88-byte `Baseline` — is computed by [`old_layout_per_entry`] from the same types' sizes:
//! ~628 bytes per entry, so the bound fails on it by a factor of two.

use std::mem::size_of;
use std::time::Duration;

use super::baseline::Baselines;
use super::delta::{Counter, Counters, DeltaTracker, Key};
use super::sql::StatementRow;
use super::topk::TopK;

/// The configured defaults: top-K of 100, one-hour baseline window, 5 samples.
const TOP_K: usize = 100;

/// The bound of the whole state, bytes per entry, once warmed up (see the module docs).
const BOUND: usize = 300;

struct State {
    deltas: DeltaTracker,
    topk: TopK,
    baselines: Baselines,
    generation: u64,
}

impl State {
    fn new() -> Self {
        State {
            deltas: DeltaTracker::default(),
            topk: TopK::new(TOP_K, Duration::from_secs(300)),
            baselines: Baselines::new(Duration::from_secs(3600), 5),
            generation: 0,
        }
    }

    /// One poll of `entries` statements, `first..first + entries`, each called `poll` times
    /// more than before.
    fn poll(&mut self, first: i64, entries: i64, poll: u64) {
        let rows: Vec<StatementRow> = (first..first + entries).map(|q| row(q, poll)).collect();
        self.generation += 1;
        let now = poll as f64 * 15.0;
        let mut deltas: Vec<(Key, Counters)> = Vec::new();
        self.deltas.apply(&rows, self.generation, None, |key, d| {
            deltas.push((key, *d))
        });
        self.topk.update(&deltas, 15.0);
        for (key, d) in &deltas {
            let mean = d[Counter::ExecSeconds] / d[Counter::Calls];
            self.baselines.observe(*key, mean, now);
        }
        self.baselines.prune(now);
    }

    /// Bytes per entry of (delta, baseline, top-K) for `entries` entries.
    fn per_entry(&self, entries: usize) -> (usize, usize, usize) {
        (
            self.deltas.heap_bytes() / entries,
            self.baselines.heap_bytes() / entries,
            self.topk.heap_bytes() / entries,
        )
    }
}

fn row(queryid: i64, poll: u64) -> StatementRow {
    let mut counters = Counters::default();
    for (i, c) in Counter::ALL.into_iter().enumerate() {
        counters[c] = (poll * (queryid as u64 % 97 + 1) * (i as u64 + 1)) as f64;
    }
    counters[Counter::ExecSeconds] = poll as f64 * 1e-4 * (queryid % 89 + 1) as f64;
    StatementRow {
        dbid: (queryid % 4) as u32 + 1,
        userid: 10,
        queryid: Some(queryid * 7919),
        toplevel: queryid % 3 != 0,
        counters,
        stats_since: Some(1.7e9),
    }
}

/// What the old layout held per entry at `entries` entries: hashbrown keeps at most 7/8 of
/// its buckets full and doubles them, with a control byte each (plus 16).
fn old_layout_per_entry(entries: usize) -> usize {
    let buckets = |n: usize| (n * 8).div_ceil(7).next_power_of_two();
    let table = |n: usize, entry: usize| buckets(n) * (entry + 1) + 16;
    // Last: Counters, Option<f64>, u64. Baseline: f64, u32, [f64; 8], f64.
    let last = size_of::<Counters>() + size_of::<Option<f64>>() + size_of::<u64>();
    let baseline = 8 + 8 + 8 * 8 + 8;
    let key = size_of::<Key>();
    let old = table(entries, key + last)
        + table(entries, key + baseline)
        + table(entries, key + 8)
        + table(TOP_K, key + size_of::<Counters>());
    old / entries
}

fn warmed_up(entries: i64) -> State {
    let mut state = State::new();
    // The first poll sets the base; then enough for every baseline to warm up and more.
    for poll in 1..=super::BASELINE_WARMUP as u64 + 4 {
        state.poll(0, entries, poll);
    }
    state
}

#[test]
fn state_stays_under_300_bytes_per_entry_at_1000_and_5000_entries() {
    for entries in [1000, 5000] {
        let state = warmed_up(entries);
        assert_eq!(state.deltas.len(), entries as usize);
        assert_eq!(state.baselines.len(), entries as usize);
        let (delta, baseline, topk) = state.per_entry(entries as usize);
        let total = delta + baseline + topk;
        eprintln!("{entries} entries: delta {delta}, baseline {baseline}, topk {topk}: {total}");
        assert!(delta <= 160, "delta {delta} bytes per entry");
        assert!(baseline <= 64, "baseline {baseline} bytes per entry");
        assert!(topk <= 60, "top-K {topk} bytes per entry");
        assert!(
            total <= BOUND,
            "{total} bytes per entry at {entries} entries"
        );
        let old = old_layout_per_entry(entries as usize);
        eprintln!("{entries} entries: old layout {old}");
        assert!(old > BOUND, "the bound tells the layouts apart: {old}");
    }
}

#[test]
fn warming_up_costs_the_samples_only_until_done() {
    let mut state = State::new();
    for poll in 1..=4 {
        state.poll(0, 1000, poll);
    }
    // Mid warm-up every statement also holds 7 samples (56 bytes) in the pool.
    let (delta, baseline, topk) = state.per_entry(1000);
    eprintln!("warming up: delta {delta}, baseline {baseline}, topk {topk}");
    assert!(baseline <= 64 + 64, "baseline {baseline} bytes per entry");
    assert!(delta + baseline + topk <= BOUND + 64);
    for poll in 5..=12 {
        state.poll(0, 1000, poll);
    }
    let (_, baseline, _) = state.per_entry(1000);
    assert!(baseline <= 64, "the pool was not given back: {baseline}");
}

#[test]
fn churn_in_the_view_does_not_grow_the_state() {
    let mut state = warmed_up(1000);
    let settled = state.deltas.heap_bytes();
    // Ten statements evicted and ten new ones each poll, for 300 polls (75 minutes at 15 s:
    // past the one-hour window, so baselines of evicted statements are pruned as they go).
    for poll in 0..300 {
        state.poll(10 * poll, 1000, 20 + poll as u64);
    }
    assert_eq!(state.deltas.len(), 1000);
    let delta = state.deltas.heap_bytes();
    assert!(
        delta <= settled + settled / 8 + 1024,
        "{settled} -> {delta} bytes"
    );
    // Baselines hold the statements seen within the window, 1,000 plus up to 340 polls × 10
    // (the window is 240 polls, pruning runs every 100th); top-K scores those whose score has
    // not decayed below a nanosecond (~370 polls). Each costs what it costs in a stable view,
    // plus the `Vec`s' eighth, plus the samples of the ~80 warming up.
    let per_baseline = state.baselines.heap_bytes() / state.baselines.len();
    let per_score = state.topk.heap_bytes() / state.topk.scored();
    eprintln!(
        "churn: delta {settled} -> {delta}; {} baselines of {per_baseline}, {} scores of {per_score}",
        state.baselines.len(),
        state.topk.scored(),
    );
    assert!(per_baseline <= 72, "{per_baseline} bytes per baseline");
    assert!(per_score <= 60, "{per_score} bytes per score");
}
