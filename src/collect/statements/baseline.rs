//! Each statement's own normal latency: a robust rolling baseline of its interval means.
//!
//! The SlowQuery regression check compares a statement's mean latency over the last interval
//! with this baseline. It has to be robust in two directions: one slow interval (a cold
//! cache, a lock wait) must not drag the baseline up and hide the next one, and a real,
//! lasting regression must keep alerting for a long while rather than becoming "normal" within
//! minutes. So the baseline is:
//!
//! * **warm-up**: the median of the first [`WARMUP`] interval means (a first cold-cache
//!   interval cannot dominate); usable once it has `min_samples` of them;
//! * **after that**: an exponentially weighted mean in the *log* domain, whose step per
//!   interval is clipped to ±ln 2 before weighting, with weight `1 - exp(-Δt / window)` (or
//!   `1/n` while that is larger). Ratios, not differences, are what latencies vary by, hence the
//!   log; the clip bounds how far any one interval can move it, like a Huber M-estimator.
//!   With the default one-hour window a lasting 10× regression takes hours to be absorbed.
//!
//! Only intervals with at least one call are samples. Baselines survive resets of
//! pg_stat_statements (a reset changes counters, not how fast a statement is) and are forgotten
//! when a statement has had no calls for a whole window.
//!
//! # Memory per entry
//!
//! A warmed-up baseline is ~56 bytes in a `DenseMap` (`dense.rs`): the key (24), the log mean,
//! the time of the last sample, the sample count and a warm-up slot number (24), and ~8 of the
//! map's table. The warm-up samples are needed only until the [`WARMUP`]th, so they are held
//! apart while a statement warms up, in a pool of `WARMUP - 1` f64 each (56 bytes; the last
//! sample is used as it arrives, never stored), freed when no statement is warming up and
//! compacted when pruning leaves most of it unused. They stay f64: the median is exactly what
//! it was. Each baseline used to carry its 8 × f64 array for its whole life, in 112-byte
//! buckets of a `HashMap` with twice as many buckets as entries: ~231 bytes per entry at 1,000.

use std::time::Duration;

use super::delta::Key;
use super::dense::{self, DenseMap};

/// Interval means collected before switching from median to the weighted mean.
pub const WARMUP: usize = 8;
/// Bound of one interval's step in the log domain (a factor of 2).
const MAX_STEP: f64 = std::f64::consts::LN_2;
/// Means are clamped to at least this (1 µs) before taking logarithms.
const FLOOR_SECONDS: f64 = 1e-6;

/// Baselines of every statement.
#[derive(Debug)]
pub struct Baselines {
    window: Duration,
    min_samples: u32,
    by_key: DenseMap<Baseline>,
    warming: WarmupPool,
    polls_since_prune: u32,
}

#[derive(Debug, Clone)]
struct Baseline {
    /// log of the baseline in seconds, once warmed up.
    log_mean: f64,
    /// Seconds (on the caller's clock) of the last sample.
    last_sample: f64,
    samples: u32,
    /// Its samples' slot in the [`WarmupPool`] while `samples < WARMUP`.
    warmup: u32,
}

/// The samples stored while warming up: all but the last, which completes the warm-up.
type Samples = [f64; WARMUP - 1];

/// Warm-up samples of the statements warming up, by slot; freed slots are reused.
#[derive(Debug, Default)]
struct WarmupPool {
    slots: Vec<Samples>,
    free: Vec<u32>,
}

impl WarmupPool {
    fn take(&mut self) -> u32 {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        dense::grow(&mut self.slots);
        self.slots.push([0.0; WARMUP - 1]);
        (self.slots.len() - 1) as u32
    }

    /// Give `slot` back; with no statement warming up, give the memory back too.
    fn release(&mut self, slot: u32) {
        self.free.push(slot);
        if self.free.len() == self.slots.len() {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
    }

    /// The median of the first `n` samples of `slot`, with `last` as one more if given.
    fn median(&self, slot: u32, n: usize, last: Option<f64>) -> f64 {
        let mut sorted = [0.0; WARMUP];
        sorted[..n].copy_from_slice(&self.slots[slot as usize][..n]);
        let n = match last {
            Some(last) => {
                sorted[n] = last;
                n + 1
            }
            None => n,
        };
        median(&mut sorted[..n])
    }
}

/// The median of `s` (sorted in place): the middle sample, or the mean of the middle two.
fn median(s: &mut [f64]) -> f64 {
    let n = s.len();
    s.sort_by(f64::total_cmp);
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

impl Baselines {
    /// Baselines over `window`, usable after `min_samples` intervals (at most [`WARMUP`]).
    pub fn new(window: Duration, min_samples: u32) -> Self {
        Baselines {
            window,
            min_samples: min_samples.clamp(1, WARMUP as u32),
            by_key: DenseMap::default(),
            warming: WarmupPool::default(),
            polls_since_prune: 0,
        }
    }

    /// Record a statement's interval mean at time `now` (seconds on any monotonic clock) and
    /// return its baseline *before* this sample (`None` while warming up) and the number of
    /// samples that baseline rests on.
    pub fn observe(&mut self, key: Key, mean_seconds: f64, now: f64) -> (Option<f64>, u32) {
        let mean = mean_seconds.max(FLOOR_SECONDS);
        let warming = &mut self.warming;
        let b = self.by_key.get_or_insert_with(key, || Baseline {
            log_mean: 0.0,
            last_sample: now,
            samples: 0,
            warmup: warming.take(),
        });
        let n = b.samples as usize;
        let before = (b.samples >= self.min_samples).then(|| {
            if n < WARMUP {
                warming.median(b.warmup, n, None)
            } else {
                b.log_mean.exp()
            }
        });
        let samples_before = b.samples;
        if n < WARMUP - 1 {
            warming.slots[b.warmup as usize][n] = mean;
            b.samples += 1;
        } else if n == WARMUP - 1 {
            b.log_mean = warming.median(b.warmup, n, Some(mean)).ln();
            warming.release(b.warmup);
            b.samples += 1;
        } else {
            let dt = (now - b.last_sample).max(0.0);
            let by_time = 1.0 - (-dt / self.window.as_secs_f64().max(1e-3)).exp();
            b.samples = b.samples.saturating_add(1);
            let weight = by_time.max(1.0 / f64::from(b.samples));
            let step = (mean.ln() - b.log_mean).clamp(-MAX_STEP, MAX_STEP);
            b.log_mean += weight * step;
        }
        b.last_sample = now;
        (before, samples_before)
    }

    /// Forget statements without a sample for a whole window. Cheap enough to call every poll;
    /// does real work every 100th.
    pub fn prune(&mut self, now: f64) {
        self.polls_since_prune += 1;
        if self.polls_since_prune < 100 {
            return;
        }
        self.polls_since_prune = 0;
        let window = self.window.as_secs_f64();
        let warming = &mut self.warming;
        self.by_key.retain(|_, b| {
            let keep = now - b.last_sample <= window;
            if !keep && (b.samples as usize) < WARMUP {
                warming.release(b.warmup);
            }
            keep
        });
        // Statements that stopped while warming up keep their slots until pruned; the pool
        // stays as large as its busiest moment unless compacted.
        if self.warming.free.len() > self.warming.slots.len() / 2 {
            self.compact_warming();
        }
    }

    /// Move the warm-up samples in use to a pool just large enough for them.
    fn compact_warming(&mut self) {
        let old = std::mem::take(&mut self.warming);
        let in_use = old.slots.len() - old.free.len();
        self.warming.slots.reserve_exact(in_use);
        for b in self.by_key.values_mut() {
            if (b.samples as usize) < WARMUP {
                let slot = self.warming.take();
                self.warming.slots[slot as usize] = old.slots[b.warmup as usize];
                b.warmup = slot;
            }
        }
    }

    /// Number of statements with a baseline.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Heap bytes held (see the module docs).
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.by_key.heap_bytes()
            + self.warming.slots.capacity() * size_of::<Samples>()
            + self.warming.free.capacity() * size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key {
        dbid: 1,
        userid: 1,
        queryid: 42,
        toplevel: true,
    };

    fn feed(b: &mut Baselines, means: &[f64], start: f64) -> Vec<Option<f64>> {
        means
            .iter()
            .enumerate()
            .map(|(i, m)| b.observe(KEY, *m, start + i as f64 * 15.0).0)
            .collect()
    }

    #[test]
    fn usable_after_min_samples_and_robust_to_a_cold_first_interval() {
        let mut b = Baselines::new(Duration::from_secs(3600), 5);
        let seen = feed(
            &mut b,
            &[0.010, 0.0002, 0.0002, 0.0002, 0.0002, 0.0002],
            0.0,
        );
        assert!(seen[..5].iter().all(Option::is_none), "{seen:?}");
        // Median of [10ms, 0.2ms × 4] is 0.2 ms.
        assert!((seen[5].unwrap() - 0.0002).abs() < 1e-12, "{seen:?}");
    }

    #[test]
    fn one_slow_interval_barely_moves_it_and_a_lasting_regression_is_not_absorbed_quickly() {
        let mut b = Baselines::new(Duration::from_secs(3600), 5);
        feed(&mut b, &[0.0002; 40], 0.0);
        let before = b.observe(KEY, 0.5, 600.0).0.unwrap();
        let after = b.observe(KEY, 0.0002, 615.0).0.unwrap();
        assert!(after / before < 1.03, "{before} -> {after}");
        // 20 minutes of a 25× slower statement, polled every 15 s.
        let slow = feed(&mut b, &[0.005; 80], 630.0);
        let last = slow.last().unwrap().unwrap();
        assert!(last < 0.0005, "baseline absorbed the regression: {last}");
    }

    #[test]
    fn a_permanent_change_is_eventually_the_new_normal() {
        let mut b = Baselines::new(Duration::from_secs(60), 5);
        feed(&mut b, &[0.001; 10], 0.0);
        let seen = feed(&mut b, &[0.004; 200], 150.0);
        let last = seen.last().unwrap().unwrap();
        assert!((last - 0.004).abs() / 0.004 < 0.05, "{last}");
    }

    #[test]
    fn idle_statements_are_pruned() {
        let mut b = Baselines::new(Duration::from_secs(60), 5);
        b.observe(KEY, 0.001, 0.0);
        for _ in 0..100 {
            b.prune(30.0);
        }
        assert_eq!(b.len(), 1);
        for _ in 0..100 {
            b.prune(1000.0);
        }
        assert!(b.is_empty());
    }

    /// The layout before the warm-up pool, kept as the reference the pool must agree with:
    /// one map entry per statement with its 8 samples inline.
    #[derive(Default)]
    struct Reference {
        by_key: std::collections::HashMap<Key, (f64, u32, [f64; WARMUP], f64)>,
        polls_since_prune: u32,
    }

    impl Reference {
        /// The old inline array's median; the arithmetic is the shared `median`.
        fn median(warmup: &[f64; WARMUP], n: usize) -> f64 {
            let mut sorted = *warmup;
            super::median(&mut sorted[..n])
        }

        fn observe(&mut self, b: &Baselines, key: Key, mean: f64, now: f64) -> (Option<f64>, u32) {
            let mean = mean.max(FLOOR_SECONDS);
            let e = self
                .by_key
                .entry(key)
                .or_insert((0.0, 0, [0.0; WARMUP], now));
            let (log_mean, samples, warmup, last) = e;
            let n = *samples as usize;
            let before = (*samples >= b.min_samples).then(|| {
                if n < WARMUP {
                    Self::median(warmup, n)
                } else {
                    log_mean.exp()
                }
            });
            let samples_before = *samples;
            if n < WARMUP {
                warmup[n] = mean;
                *samples += 1;
                if n + 1 == WARMUP {
                    *log_mean = Self::median(warmup, WARMUP).ln();
                }
            } else {
                let dt = (now - *last).max(0.0);
                let by_time = 1.0 - (-dt / b.window.as_secs_f64().max(1e-3)).exp();
                *samples = samples.saturating_add(1);
                let weight = by_time.max(1.0 / f64::from(*samples));
                *log_mean += weight * (mean.ln() - *log_mean).clamp(-MAX_STEP, MAX_STEP);
            }
            *last = now;
            (before, samples_before)
        }

        fn prune(&mut self, window: f64, now: f64) {
            self.polls_since_prune += 1;
            if self.polls_since_prune >= 100 {
                self.polls_since_prune = 0;
                self.by_key.retain(|_, e| now - e.3 <= window);
            }
        }
    }

    #[test]
    fn the_warmup_pool_gives_exactly_the_inline_samples_results() {
        // Statements that come and go: some stop while warming up and are pruned (their pool
        // slots freed and the pool compacted), others run for good; means of any magnitude.
        let mut b = Baselines::new(Duration::from_secs(120), 3);
        let mut reference = Reference::default();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for poll in 0..3000u64 {
            let now = poll as f64 * 15.0;
            // A window of 200 statements sliding along; each is called in about half the polls.
            let first = poll / 10;
            // ... and one-offs, seen in one poll or three, that stop while warming up.
            let once = (0..5).map(|i| 1_000_000 + poll * 5 + i);
            let thrice = 2_000_000 + poll / 3;
            let called: Vec<u64> = (first..first + 200).filter(|_| next() % 2 == 1).collect();
            for q in called.into_iter().chain(once).chain([thrice]) {
                let key = Key {
                    queryid: q as i64,
                    ..KEY
                };
                let mean = (next() % 1_000_000) as f64 * 1e-7;
                let got = b.observe(key, mean, now);
                assert_eq!(
                    got,
                    reference.observe(&b, key, mean, now),
                    "{key:?} at {poll}"
                );
            }
            b.prune(now);
            reference.prune(120.0, now);
            assert_eq!(b.len(), reference.by_key.len(), "at poll {poll}");
        }
        // The pool holds the statements warming up, and was compacted when most had gone.
        let warming = reference.by_key.values().filter(|e| e.1 < WARMUP as u32);
        let in_use = b.warming.slots.len() - b.warming.free.len();
        assert_eq!(in_use, warming.count());
        assert!(
            b.warming.slots.len() <= 2 * in_use,
            "{in_use} of {}",
            b.warming.slots.len()
        );
    }
}
