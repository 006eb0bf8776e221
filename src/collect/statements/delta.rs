//! Counter deltas between two polls of pg_stat_statements, with resets and evictions detected
//! so that no delta is ever negative or a spike.
//!
//! Entries are keyed by (dbid, userid, queryid, toplevel), exactly as pg_stat_statements keys
//! them. For each entry the previous poll's counters are kept, and this poll's delta is:
//!
//! * **seen before, every counter ≥ before, same `stats_since`**: the difference.
//! * **seen before, but some counter went backwards, `stats_since` changed (PostgreSQL 17), or
//!   `pg_stat_statements_info.stats_reset` changed**: the entry was reset or evicted and
//!   recreated since the last poll, so everything it holds accrued after that poll — the
//!   delta is its current value (some calls made between the last poll and the reset are lost;
//!   nothing is double-counted).
//! * **not seen before, and the previous poll saw the complete view**: created since the last
//!   poll (new statement, or recreated after an eviction), so again the delta is its value.
//! * **the first poll** (after start, a reconnect, or the extension becoming available): no
//!   delta; the counters only become the base. Counting an entry's whole history as one
//!   interval would be exactly the spike this module exists to prevent.
//!
//! Entries that disappear are forgotten; their last interval is lost, which undercounts but
//! never goes negative.
//!
//! # Memory per entry
//!
//! ~152 bytes per entry of the view, in a `DenseMap` (`dense.rs`) sized to the poll's rows: the
//! key (24), the 13 counters (104: each is needed to tell a reset from growth and to compute
//! its own delta, kept as the f64 the rows carry), `stats_since` (8, NaN for none rather than
//! an `Option`'s 16), the poll that last saw the entry (4, a `u32`, and 4 of padding), and ~8
//! of the map's table. The `HashMap` this replaced held ~313 per entry at 1,000 entries: 2,048
//! buckets of a 24-byte key and a 128-byte value.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Index, IndexMut};

use super::dense::DenseMap;
use super::sql::StatementRow;

/// One cumulative counter of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Executions.
    Calls,
    /// Execution time, seconds.
    ExecSeconds,
    /// Planning time, seconds (0 unless `pg_stat_statements.track_planning`).
    PlanSeconds,
    /// Rows returned or affected.
    Rows,
    /// Shared buffer hits.
    SharedBlocksHit,
    /// Shared blocks read.
    SharedBlocksRead,
    /// Shared blocks dirtied.
    SharedBlocksDirtied,
    /// Shared blocks written.
    SharedBlocksWritten,
    /// Temp blocks read.
    TempBlocksRead,
    /// Temp blocks written.
    TempBlocksWritten,
    /// Time reading blocks, seconds (needs `track_io_timing`).
    BlockReadSeconds,
    /// Time writing blocks, seconds (needs `track_io_timing`).
    BlockWriteSeconds,
    /// WAL generated, bytes.
    WalBytes,
}

impl Counter {
    /// Every counter, in the column order of the counters query.
    pub const ALL: [Counter; 13] = [
        Counter::Calls,
        Counter::ExecSeconds,
        Counter::PlanSeconds,
        Counter::Rows,
        Counter::SharedBlocksHit,
        Counter::SharedBlocksRead,
        Counter::SharedBlocksDirtied,
        Counter::SharedBlocksWritten,
        Counter::TempBlocksRead,
        Counter::TempBlocksWritten,
        Counter::BlockReadSeconds,
        Counter::BlockWriteSeconds,
        Counter::WalBytes,
    ];
}

/// A value for every [`Counter`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters([f64; Counter::ALL.len()]);

impl Index<Counter> for Counters {
    type Output = f64;
    fn index(&self, c: Counter) -> &f64 {
        &self.0[c as usize]
    }
}

impl IndexMut<Counter> for Counters {
    fn index_mut(&mut self, c: Counter) -> &mut f64 {
        &mut self.0[c as usize]
    }
}

impl Counters {
    /// Add `other` to every counter.
    pub fn add(&mut self, other: &Counters) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// `self - earlier`, or `None` if any counter went backwards.
    fn since(&self, earlier: &Counters) -> Option<Counters> {
        let mut out = Counters::default();
        for ((o, now), before) in out.0.iter_mut().zip(self.0).zip(earlier.0) {
            if now < before {
                return None;
            }
            *o = now - before;
        }
        Some(out)
    }

    /// Whether every counter is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0.0)
    }
}

/// An entry of pg_stat_statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Database oid.
    pub dbid: u32,
    /// Role oid.
    pub userid: u32,
    /// The statement's queryid.
    pub queryid: i64,
    /// Top-level (not nested in a function or DO block).
    pub toplevel: bool,
}

/// What happened to pg_stat_statements as a whole between two polls.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ViewEvents {
    /// The whole view was reset (`stats_reset` moved) since the last poll.
    pub reset: bool,
    /// Entries evicted since the last poll (`dealloc` delta).
    pub evicted: f64,
    /// Entries whose counters went backwards or whose `stats_since` moved: reset individually.
    pub entries_reset: usize,
}

/// A map keyed by [`Key`], hashed with a multiply-rotate hash (FxHash's) instead of SipHash:
/// a full-fidelity poll makes several lookups per entry of pg_stat_statements, and the keys
/// are the server's own oids and queryids, not input an attacker picks to collide.
pub type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// The hasher of [`KeyMap`].
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// The previous poll's counters of every entry.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    last: DenseMap<Last>,
    info: Option<(f64, Option<f64>)>,
    primed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    counters: Counters,
    /// `stats_since`, NaN for none (see [`since_bits`]).
    stats_since: f64,
    /// The poll that last saw it, to forget entries that disappeared. The poll's `u64` number
    /// truncated: every entry is either seen by a poll or forgotten at its end, so the stored
    /// value is only ever compared with the current poll's, and equal values stay equal.
    generation: u32,
}

/// `stats_since` as stored: NaN for none. PostgreSQL's epochs are never NaN (`'infinity'`
/// becomes an infinity), so none and some stay apart.
fn since_bits(stats_since: Option<f64>) -> f64 {
    stats_since.unwrap_or(f64::NAN)
}

/// `stats_since` as read back.
fn since_value(stored: f64) -> Option<f64> {
    (!stored.is_nan()).then_some(stored)
}

impl DeltaTracker {
    /// Forget everything: the next poll only sets the base (after a reconnect, or when the
    /// view was unavailable and its continuity is unknown).
    pub fn forget(&mut self) {
        self.last.clear();
        self.info = None;
        self.primed = false;
    }

    /// Number of entries remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no entry is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Take one poll's rows and `(dealloc, stats_reset)` from `pg_stat_statements_info` (when
    /// the extension has it); call `each` with every entry's non-zero delta. Rows without a
    /// queryid (other users' statements the role may not see) are skipped.
    pub fn apply(
        &mut self,
        rows: &[StatementRow],
        generation: u64,
        info: Option<(f64, Option<f64>)>,
        mut each: impl FnMut(Key, &Counters),
    ) -> ViewEvents {
        let mut events = ViewEvents::default();
        if let (Some((dealloc, reset)), Some((last_dealloc, last_reset))) = (info, self.info) {
            events.reset = reset != last_reset || dealloc < last_dealloc;
            if !events.reset {
                events.evicted = dealloc - last_dealloc;
            }
        }
        self.info = info;
        let primed = self.primed;
        let generation = generation as u32;
        self.last
            .reserve_total(rows.iter().filter(|r| r.queryid.is_some()).count());
        for row in rows {
            let Some(queryid) = row.queryid else {
                continue;
            };
            let key = Key {
                dbid: row.dbid,
                userid: row.userid,
                queryid,
                toplevel: row.toplevel,
            };
            let now = Last {
                counters: row.counters,
                stats_since: since_bits(row.stats_since),
                generation,
            };
            let delta = match self.last.insert(key, now) {
                Some(before) if !events.reset => {
                    match (since_value(before.stats_since) == row.stats_since)
                        .then(|| row.counters.since(&before.counters))
                        .flatten()
                    {
                        Some(delta) => delta,
                        None => {
                            events.entries_reset += 1;
                            row.counters
                        }
                    }
                }
                Some(_) => row.counters,
                None if primed => row.counters,
                None => continue,
            };
            if !delta.is_zero() {
                each(key, &delta);
            }
        }
        self.last.retain(|_, last| last.generation == generation);
        self.primed = true;
        events
    }

    /// Heap bytes held (see the module docs).
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.last.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_spread_over_every_field() {
        use std::hash::BuildHasher as _;
        let build = BuildHasherDefault::<KeyHasher>::default();
        let mut seen = std::collections::HashSet::new();
        for dbid in 1..4 {
            for userid in 10..14 {
                for queryid in -500..500 {
                    for toplevel in [true, false] {
                        let key = Key {
                            dbid,
                            userid,
                            queryid,
                            toplevel,
                        };
                        seen.insert(build.hash_one(key));
                    }
                }
            }
        }
        assert_eq!(
            seen.len(),
            3 * 4 * 1000 * 2,
            "no collisions among 24,000 keys"
        );
    }

    fn row(queryid: i64, calls: f64, exec: f64) -> StatementRow {
        let mut counters = Counters::default();
        counters[Counter::Calls] = calls;
        counters[Counter::ExecSeconds] = exec;
        StatementRow {
            dbid: 1,
            userid: 10,
            queryid: Some(queryid),
            toplevel: true,
            counters,
            stats_since: None,
        }
    }

    fn deltas(
        t: &mut DeltaTracker,
        rows: &[StatementRow],
        generation: u64,
        info: Option<(f64, Option<f64>)>,
    ) -> (Vec<(i64, f64, f64)>, ViewEvents) {
        let mut out = Vec::new();
        let events = t.apply(rows, generation, info, |k, d| {
            out.push((k.queryid, d[Counter::Calls], d[Counter::ExecSeconds]))
        });
        out.sort_by_key(|d| d.0);
        (out, events)
    }

    #[test]
    fn first_poll_is_only_the_base() {
        let mut t = DeltaTracker::default();
        let (d, _) = deltas(&mut t, &[row(1, 1000.0, 50.0)], 1, None);
        assert!(d.is_empty(), "{d:?}");
        let (d, _) = deltas(&mut t, &[row(1, 1010.0, 50.5)], 2, None);
        assert_eq!(d, [(1, 10.0, 0.5)]);
    }

    #[test]
    fn new_entries_after_the_first_poll_count_in_full() {
        let mut t = DeltaTracker::default();
        deltas(&mut t, &[row(1, 5.0, 1.0)], 1, None);
        let (d, _) = deltas(&mut t, &[row(1, 5.0, 1.0), row(2, 3.0, 0.3)], 2, None);
        assert_eq!(d, [(2, 3.0, 0.3)]);
    }

    #[test]
    fn counters_going_backwards_mean_a_reset_not_a_negative_delta() {
        let mut t = DeltaTracker::default();
        deltas(&mut t, &[row(1, 1000.0, 50.0), row(2, 10.0, 1.0)], 1, None);
        let (d, e) = deltas(&mut t, &[row(1, 4.0, 0.2), row(2, 12.0, 1.2)], 2, None);
        assert_eq!(e.entries_reset, 1);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], (1, 4.0, 0.2));
        assert_eq!(d[1].0, 2);
        assert!((d[1].1 - 2.0).abs() < 1e-9 && (d[1].2 - 0.2).abs() < 1e-9);
        // Calls up but time down is a reset too (the time would otherwise be negative).
        let (d, e) = deltas(&mut t, &[row(1, 5.0, 0.1)], 3, None);
        assert_eq!(e.entries_reset, 1);
        assert_eq!(d, [(1, 5.0, 0.1)]);
    }

    #[test]
    fn a_stats_reset_makes_every_entry_count_from_zero() {
        let mut t = DeltaTracker::default();
        deltas(&mut t, &[row(1, 10.0, 1.0)], 1, Some((0.0, Some(100.0))));
        // Reset, then more calls than before: without stats_reset this would look like +2.
        let (d, e) = deltas(&mut t, &[row(1, 12.0, 0.6)], 2, Some((0.0, Some(200.0))));
        assert!(e.reset);
        assert_eq!(d, [(1, 12.0, 0.6)]);
    }

    #[test]
    fn stats_since_moving_means_the_entry_was_recreated() {
        let mut t = DeltaTracker::default();
        let mut r = row(1, 10.0, 1.0);
        r.stats_since = Some(100.0);
        deltas(&mut t, &[r.clone()], 1, None);
        r.counters[Counter::Calls] = 20.0;
        r.counters[Counter::ExecSeconds] = 2.0;
        r.stats_since = Some(150.0);
        let (d, e) = deltas(&mut t, &[r], 2, None);
        assert_eq!(e.entries_reset, 1);
        assert_eq!(d, [(1, 20.0, 2.0)]);
    }

    #[test]
    fn evictions_are_counted_and_vanished_entries_forgotten() {
        let mut t = DeltaTracker::default();
        deltas(
            &mut t,
            &[row(1, 1.0, 1.0), row(2, 1.0, 1.0)],
            1,
            Some((5.0, None)),
        );
        let (_, e) = deltas(&mut t, &[row(2, 1.0, 1.0)], 2, Some((7.0, None)));
        assert_eq!(e.evicted, 2.0);
        assert!(!e.reset);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn invisible_rows_are_skipped_and_forget_restarts_the_base() {
        let mut t = DeltaTracker::default();
        let mut hidden = row(0, 1.0, 1.0);
        hidden.queryid = None;
        deltas(&mut t, &[hidden, row(1, 1.0, 1.0)], 1, None);
        assert_eq!(t.len(), 1);
        t.forget();
        let (d, _) = deltas(&mut t, &[row(1, 100.0, 9.0)], 2, None);
        assert!(d.is_empty());
    }

    #[test]
    fn poll_numbers_past_u32_still_forget_exactly_the_vanished_entries() {
        let mut t = DeltaTracker::default();
        let wrap = u64::from(u32::MAX);
        deltas(&mut t, &[row(1, 1.0, 0.1), row(2, 1.0, 0.1)], wrap, None);
        // The stored generation wraps to 0 here; entry 2 vanished and must go.
        let (d, _) = deltas(&mut t, &[row(1, 2.0, 0.2)], wrap + 1, None);
        assert_eq!(d, [(1, 1.0, 0.1)]);
        assert_eq!(t.len(), 1);
        let (d, _) = deltas(
            &mut t,
            &[row(1, 3.0, 0.3), row(3, 1.0, 0.1)],
            wrap + 2,
            None,
        );
        assert_eq!(d.len(), 2);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn stats_since_appearing_or_going_is_a_reset_as_before() {
        let mut t = DeltaTracker::default();
        deltas(&mut t, &[row(1, 10.0, 1.0)], 1, None);
        let mut r = row(1, 20.0, 2.0);
        r.stats_since = Some(100.0);
        let (d, e) = deltas(&mut t, &[r.clone()], 2, None);
        assert_eq!((d, e.entries_reset), (vec![(1, 20.0, 2.0)], 1));
        r.counters[Counter::Calls] = 25.0;
        let (d, e) = deltas(&mut t, &[r.clone()], 3, None);
        assert_eq!((d, e.entries_reset), (vec![(1, 5.0, 0.0)], 0));
        r.stats_since = None;
        r.counters[Counter::Calls] = 30.0;
        let (d, e) = deltas(&mut t, &[r], 4, None);
        assert_eq!((d, e.entries_reset), (vec![(1, 30.0, 2.0)], 1));
    }
}
