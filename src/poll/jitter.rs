//! Jitter, so that many sources do not act in lockstep: their first polls are spread over the
//! poll interval, and each reconnect delay is drawn from the upper half of its backoff
//! step. Both are pure here: the source name or the random draw is passed in.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// The first polls of a configuration's sources are spread over at most the poll interval
/// (then each keeps its phase, polling every interval from its first poll), and over at most
/// this much per source, so that one or a few sources start at once and a fleet of 500 at a
/// 15 s interval polls evenly through it. Spread over only a quarter of the interval (as
/// before), 500 targets polled in a wave of 3.75 s every 15 s, with the servers they query on
/// the same cores in the benchmark: a scrape that met the wave took 700 ms against 85 ms
/// outside it, and the eager gzip builder fell behind (BENCHMARKS.md, part 11).
const SPREAD_PER_SOURCE: Duration = Duration::from_millis(30);

/// How long the source `name`, one of `sources` in the configuration, waits before its first
/// poll: the same for the same name, and spread evenly over
/// `min(interval, sources × 30 ms)` across names.
pub(crate) fn first_poll_delay(name: &str, interval: Duration, sources: usize) -> Duration {
    let per_source = SPREAD_PER_SOURCE.saturating_mul(u32::try_from(sources).unwrap_or(u32::MAX));
    let spread = interval.min(per_source);
    spread.mul_f64(unit_of(mix(fnv1a(name.as_bytes()))))
}

/// A backoff step `delay` with equal jitter: somewhere in `[delay / 2, delay]` as `unit` goes
/// from 0 to 1, so sources that failed together retry apart but none sooner than half its step.
pub(crate) fn jittered(delay: Duration, unit: f64) -> Duration {
    delay.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// A fresh random draw in `[0, 1)` (from the standard library's randomly keyed hasher; jitter
/// needs no better).
pub(crate) fn random_unit() -> f64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    unit_of(RandomState::new().hash_one(seed))
}

/// The top 53 bits of `x` as a fraction in `[0, 1)`.
fn unit_of(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// MurmurHash3's finalizer: FNV-1a alone leaves names that differ in their last characters
/// (`db-001`, `db-002`) close together in the high bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// 64-bit FNV-1a: stable across runs and builds, unlike the standard hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn first_polls_are_stable_per_name_and_spread_within_the_bound() {
        let interval = 15 * SECOND;
        let a = first_poll_delay("db-001", interval, 500);
        assert_eq!(
            a,
            first_poll_delay("db-001", interval, 500),
            "deterministic"
        );
        let delays: Vec<Duration> = (0..500)
            .map(|i| first_poll_delay(&format!("db-{i:03}"), interval, 500))
            .collect();
        // The whole of 15 s (500 × 30 ms).
        let spread = interval;
        assert!(delays.iter().all(|d| *d < spread), "{delays:?}");
        // Spread out, not bunched: every tenth of the window holds some starts, none most.
        let mut buckets = [0usize; 10];
        for d in &delays {
            buckets[(d.as_secs_f64() / spread.as_secs_f64() * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (20..=80).contains(&n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn a_few_sources_start_almost_at_once() {
        // One source: within 30 ms; three: within 90 ms; never past the interval.
        assert!(first_poll_delay("main", 15 * SECOND, 1) < Duration::from_millis(30));
        assert!(first_poll_delay("main", 15 * SECOND, 3) < Duration::from_millis(90));
        let fast = Duration::from_millis(200);
        for name in ["a", "b", "c", "main", "replica"] {
            assert!(first_poll_delay(name, fast, 100) < fast);
        }
        assert_eq!(first_poll_delay("x", 15 * SECOND, 0), Duration::ZERO);
    }

    #[test]
    fn backoff_jitter_stays_in_the_upper_half_of_the_step() {
        let step = 8 * SECOND;
        assert_eq!(jittered(step, 0.0), 4 * SECOND);
        assert_eq!(jittered(step, 1.0), step);
        assert_eq!(jittered(step, 0.5), 6 * SECOND);
        assert_eq!(jittered(step, 7.0), step, "clamped");
        let draws: Vec<f64> = (0..200).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let distinct: std::collections::BTreeSet<u64> = draws.iter().map(|u| u.to_bits()).collect();
        assert!(distinct.len() > 190, "draws repeat: {}", distinct.len());
    }
}
