//! Jitter, so that many sources do not act in lockstep: their first polls are spread over part
//! of the poll interval, and each reconnect delay is drawn from the upper half of its backoff
//! step. Both are pure here: the source name or the random draw is passed in.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// The first polls of a configuration's sources are spread over at most this fraction of the
/// poll interval (one quarter)...
const SPREAD_DIVISOR: u32 = 4;
/// ...and over at most this much per source, so that one or a few sources start at once and a
/// fleet of 500 spreads its starts over seconds.
const SPREAD_PER_SOURCE: Duration = Duration::from_millis(20);

/// How long the source `name`, one of `sources` in the configuration, waits before its first
/// poll: the same for the same name, and spread evenly over
/// `min(interval / 4, sources × 20 ms)` across names.
pub(crate) fn first_poll_delay(name: &str, interval: Duration, sources: usize) -> Duration {
    let per_source = SPREAD_PER_SOURCE.saturating_mul(u32::try_from(sources).unwrap_or(u32::MAX));
    let spread = (interval / SPREAD_DIVISOR).min(per_source);
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
        // A quarter of 15 s (less than 500 × 20 ms).
        let spread = interval / 4;
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
        // One source: within 20 ms; three: within 60 ms; never past a quarter interval.
        assert!(first_poll_delay("main", 15 * SECOND, 1) < Duration::from_millis(20));
        assert!(first_poll_delay("main", 15 * SECOND, 3) < Duration::from_millis(60));
        let fast = Duration::from_millis(200);
        for name in ["a", "b", "c", "main", "replica"] {
            assert!(first_poll_delay(name, fast, 100) < fast / 4);
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
