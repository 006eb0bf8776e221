//! The bounded export: a sticky top-K of statements per target, everything else summed into
//! one `other` series, and per-database totals.
//!
//! # Ranking
//!
//! Each statement's score is its execution time in an exponentially decaying window
//! (`score ← score · e^(-Δt/window) + Δexec`), so one burst fades and steady load counts. Up to
//! K statements with the highest scores are *members*. Membership is sticky: a non-member
//! replaces the weakest member only when its score exceeds that member's by the factor
//! [`HYSTERESIS`] and by [`MIN_SWAP_SHARE`] of the target's total score. Statements of similar cost therefore do not swap places from poll to poll, and
//! the exported series stay the same set. (Among thousands of statements that each cost
//! next to nothing, a single slow call — a scheduling hiccup — really does make one the heavier,
//! and the last places of the top-K follow such bursts; the places held by the statements that
//! carry the load do not move.)
//!
//! # Counters that never go down
//!
//! Exported counters count from when pgvigil started watching, not pg_stat_statements' own
//! totals, so a reset upstream never makes them drop (see [`super::delta`]). Keeping `other`
//! monotonic while statements move in and out of the top-K decides how a statement's history is
//! attributed:
//!
//! * a member's counters start at zero when it **joins**; what it did before stays in `other`
//!   (moving it out would make `other` drop);
//! * when a member **leaves**, its series ends and everything it exported is added to `other`.
//!
//! So at every moment `Σ members + other` equals everything pgvigil has counted for the target,
//! which also equals `Σ` of the per-database totals; a statement that rejoins starts a new
//! series from zero, which Prometheus' `rate()` handles as it handles any new series.
//!
//! # Memory per entry
//!
//! Every statement with a score costs ~40 bytes in a `DenseMap` (`dense.rs`): its key (24),
//! its score (8) and ~8 of the map's table; each of the K members ~136 more (key, the 13
//! exported counters and table), ~14 bytes per statement at the default K = 100 and 1,000
//! statements. In `HashMap`s with twice as many buckets as entries it was ~84.

use std::collections::HashMap;
use std::time::Duration;

use super::delta::{Counter, Counters, Key};
use super::dense::DenseMap;

/// How much higher than the weakest member's score a challenger's must be to take its place.
pub const HYSTERESIS: f64 = 1.5;
/// ... and by at least this share of all statements' scores together: swapping one statement
/// that is a negligible part of the load for another is churn that tells nobody anything, and
/// among thousands of near-identical tiny statements one scheduling hiccup would trigger it.
pub const MIN_SWAP_SHARE: f64 = 0.001;
/// Scores below this (seconds) are forgotten, which bounds memory for one-off statements.
const FORGET_BELOW: f64 = 1e-9;

/// Membership, the exported counters, and the scores they rest on.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    window: Duration,
    scores: DenseMap<f64>,
    members: DenseMap<Counters>,
    other: Counters,
    databases: HashMap<u32, Counters>,
}

/// How membership changed in one poll.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// Statements that became members.
    pub joined: Vec<Key>,
    /// Statements that stopped being members.
    pub left: Vec<Key>,
}

impl TopK {
    /// At most `k` members, ranked by execution time over `window`.
    pub fn new(k: usize, window: Duration) -> Self {
        TopK {
            k,
            window,
            scores: DenseMap::default(),
            members: DenseMap::default(),
            other: Counters::default(),
            databases: HashMap::new(),
        }
    }

    /// Take one poll's deltas, `dt` seconds after the previous poll: rescore, update
    /// membership, add the deltas to the exported counters.
    pub fn update(&mut self, deltas: &[(Key, Counters)], dt: f64) -> Changes {
        let decay = (-dt.max(0.0) / self.window.as_secs_f64().max(1e-3)).exp();
        for score in self.scores.values_mut() {
            *score *= decay;
        }
        // Room for this poll's statements at once, not grown an eighth at a time.
        self.scores.reserve_total(deltas.len());
        for (key, delta) in deltas {
            *self.scores.get_or_insert_with(*key, || 0.0) += delta[Counter::ExecSeconds];
        }
        let members = &self.members;
        self.scores
            .retain(|key, score| *score >= FORGET_BELOW || members.contains_key(key));

        let changes = self.rebalance();
        for (key, delta) in deltas {
            self.databases.entry(key.dbid).or_default().add(delta);
            match self.members.get_mut(key) {
                Some(exported) => exported.add(delta),
                None => self.other.add(delta),
            }
        }
        changes
    }

    fn rebalance(&mut self) -> Changes {
        let mut changes = Changes::default();
        let min_gain = self.scores.values().sum::<f64>() * MIN_SWAP_SHARE;
        let score = |scores: &DenseMap<f64>, key: &Key| scores.get(key).copied().unwrap_or(0.0);
        // Best challengers first; only the best k can ever get in.
        let mut challengers: Vec<(f64, Key)> = self
            .scores
            .iter()
            .filter(|(key, s)| **s > 0.0 && !self.members.contains_key(key))
            .map(|(key, s)| (*s, *key))
            .collect();
        let by_score_desc =
            |a: &(f64, Key), b: &(f64, Key)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if challengers.len() > self.k && self.k > 0 {
            challengers.select_nth_unstable_by(self.k - 1, by_score_desc);
            challengers.truncate(self.k);
        }
        challengers.sort_unstable_by(by_score_desc);
        let mut challengers = challengers.into_iter().peekable();

        while self.members.len() < self.k {
            let Some((_, key)) = challengers.next() else {
                break;
            };
            self.members.insert(key, Counters::default());
            changes.joined.push(key);
        }
        if challengers.peek().is_some() {
            // Weakest members first.
            let mut weakest: Vec<(f64, Key)> = self
                .members
                .keys()
                .map(|key| (score(&self.scores, key), *key))
                .collect();
            weakest.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (weak_score, weak_key) in weakest {
                let Some((challenger_score, _)) = challengers.peek() else {
                    break;
                };
                if *challenger_score <= weak_score * HYSTERESIS
                    || *challenger_score - weak_score <= min_gain
                {
                    break;
                }
                let (_, key) = challengers.next().expect("peeked");
                if let Some(exported) = self.members.remove(&weak_key) {
                    self.other.add(&exported);
                }
                changes.left.push(weak_key);
                self.members.insert(key, Counters::default());
                changes.joined.push(key);
            }
        }
        changes
    }

    /// The members and what each has exported since it joined.
    pub fn members(&self) -> impl Iterator<Item = (&Key, &Counters)> {
        self.members.iter()
    }

    /// Whether `key` is a member.
    pub fn is_member(&self, key: &Key) -> bool {
        self.members.contains_key(key)
    }

    /// Everything not exported by a current member.
    pub fn other(&self) -> &Counters {
        &self.other
    }

    /// Totals by database oid.
    pub fn databases(&self) -> impl Iterator<Item = (&u32, &Counters)> {
        self.databases.iter()
    }

    /// Statements with a score (members included).
    pub fn scored(&self) -> usize {
        self.scores.len()
    }

    /// Heap bytes held (see the module docs); the per-database totals as their entries.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.scores.heap_bytes()
            + self.members.heap_bytes()
            + self.databases.capacity() * std::mem::size_of::<(u32, Counters)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(q: i64) -> Key {
        Key {
            dbid: (q % 3) as u32,
            userid: 10,
            queryid: q,
            toplevel: true,
        }
    }

    fn delta(calls: f64, exec: f64) -> Counters {
        let mut c = Counters::default();
        c[Counter::Calls] = calls;
        c[Counter::ExecSeconds] = exec;
        c
    }

    fn totals(t: &TopK) -> (f64, f64) {
        let mut exported = *t.other();
        for (_, c) in t.members() {
            exported.add(c);
        }
        let mut by_db = Counters::default();
        for (_, c) in t.databases() {
            by_db.add(c);
        }
        (exported[Counter::Calls], by_db[Counter::Calls])
    }

    #[test]
    fn bounded_to_k_and_totals_add_up() {
        let mut t = TopK::new(10, Duration::from_secs(60));
        let deltas: Vec<_> = (0..1000)
            .map(|q| (key(q), delta(1.0, q as f64 * 1e-3)))
            .collect();
        t.update(&deltas, 15.0);
        assert_eq!(t.members().count(), 10);
        // The ten most expensive.
        assert!((990..1000).all(|q| t.is_member(&key(q))));
        let (exported, by_db) = totals(&t);
        assert_eq!(exported, 1000.0);
        assert_eq!(by_db, 1000.0);
    }

    #[test]
    fn similar_statements_do_not_churn() {
        let mut t = TopK::new(5, Duration::from_secs(60));
        let mut seen = Vec::new();
        for poll in 0..50 {
            // 50 statements of about the same cost, with ±20% noise that reorders them.
            let deltas: Vec<_> = (0..50)
                .map(|q| {
                    let noise = 1.0 + 0.2 * (((q * 7 + poll * 13) % 11) as f64 / 5.0 - 1.0);
                    (key(q), delta(10.0, 0.01 * noise))
                })
                .collect();
            let changes = t.update(&deltas, 1.0);
            if poll > 0 {
                seen.push(changes.joined.len());
            }
        }
        assert!(seen.iter().all(|j| *j == 0), "membership churned: {seen:?}");
    }

    #[test]
    fn a_clearly_heavier_statement_takes_the_weakest_place_and_other_never_drops() {
        let mut t = TopK::new(3, Duration::from_secs(30));
        let base: Vec<_> = (0..5)
            .map(|q| (key(q), delta(1.0, 0.01 * (q + 1) as f64)))
            .collect();
        t.update(&base, 1.0);
        let mut last_other = t.other()[Counter::Calls];
        let mut joined = Vec::new();
        for _ in 0..20 {
            let mut deltas = base.clone();
            deltas.push((key(99), delta(1.0, 1.0)));
            let changes = t.update(&deltas, 1.0);
            joined.extend(changes.joined);
            let other = t.other()[Counter::Calls];
            assert!(
                other >= last_other,
                "other went down: {last_other} -> {other}"
            );
            last_other = other;
            let (exported, by_db) = totals(&t);
            assert_eq!(exported, by_db);
        }
        assert_eq!(joined, [key(99)]);
        assert!(t.is_member(&key(99)) && !t.is_member(&key(2)));
        assert_eq!(t.members().count(), 3);
    }

    #[test]
    fn one_off_statements_are_forgotten() {
        let mut t = TopK::new(1, Duration::from_secs(1));
        let deltas: Vec<_> = (0..100).map(|q| (key(q), delta(1.0, 1e-6))).collect();
        t.update(&deltas, 1.0);
        assert_eq!(t.scored(), 100);
        t.update(&[], 60.0);
        assert_eq!(t.scored(), 1, "only the member keeps its score");
    }
}
