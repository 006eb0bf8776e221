//! The standby's replay lag in seconds, estimated so that it neither grows on an idle primary
//! (postgres_exporter#385) nor hides a stuck replay when everything received has been
//! replayed (postgres_exporter#977). Pure: time and positions are passed in.
//!
//! # The method
//!
//! The lag is the time since the primary first had WAL that this standby has not replayed.
//! PostgreSQL does not record when a WAL position was written, so pgvigil samples it: at each
//! poll it notes the newest position the standby knows the primary has (the larger of what
//! it received, `pg_last_wal_receive_lsn()`, and what the primary last announced,
//! `pg_stat_wal_receiver.latest_end_lsn`) with the poll's time, whenever that position moved.
//! Samples the standby has replayed past are dropped. Then:
//!
//! * **Behind** (a sample is left): the lag is the time since the oldest sample not yet
//!   replayed. While replay is stuck or paused it grows by one second per second, whether or
//!   not WAL goes on arriving — and even when the receiver has stopped, so receive = replay
//!   proves nothing (#977).
//! * **Caught up and streaming**: 0. An idle primary sends nothing new, the standby has
//!   replayed everything, so the lag stays 0 however long since the last commit (#385; the
//!   naive `now() - pg_last_xact_replay_timestamp()` grows here).
//! * **Caught up but not streaming** (the WAL receiver is down, the primary unreachable): the
//!   standby cannot know what it misses, so the lag counts from the last poll at which it
//!   was streaming and caught up: the worst staleness a reader of this standby may see. If
//!   pgvigil never saw it streaming, `now() - pg_last_xact_replay_timestamp()` stands in.
//!
//! Precision: one poll interval. The sample is taken when pgvigil first sees a position, up
//! to one interval after the primary wrote it, so the lag may read up to one interval low
//! (and reads 0 at the first poll of a standby that is already behind), never high. Positions
//! that go backwards (a new timeline, a restored standby) start the history afresh.

use std::collections::VecDeque;

/// Most samples kept; past it every other one is dropped (the oldest is always kept), so a
/// standby stuck for days costs a bounded amount of memory at a coarser precision.
const MAX_SAMPLES: usize = 256;

/// What one poll of a standby saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StandbyPosition {
    /// The poll's time, epoch seconds (the standby's clock).
    pub now: f64,
    /// The newest WAL position the standby knows the primary has, bytes since 0/0.
    pub known_end: Option<f64>,
    /// The position it has replayed.
    pub replayed: Option<f64>,
    /// Its WAL receiver is streaming.
    pub streaming: bool,
    /// The commit time of the last transaction it replayed, epoch seconds.
    pub last_replayed_commit: Option<f64>,
}

/// The history the estimate needs, kept by the collector from poll to poll.
#[derive(Debug, Default, Clone)]
pub struct ReplayLag {
    /// (time first seen, position) of positions known but not yet replayed, oldest first.
    samples: VecDeque<(f64, f64)>,
    /// The newest position sampled, replayed or not.
    newest: Option<f64>,
    /// The last replayed position seen.
    replayed: Option<f64>,
    /// The last poll at which the standby was streaming and had replayed all it knew of.
    caught_up_at: Option<f64>,
}

impl ReplayLag {
    /// Take one poll's positions; returns the lag in seconds, `None` if it cannot be told
    /// (nothing replayed yet, and never seen streaming nor any commit replayed).
    pub fn update(&mut self, seen: StandbyPosition) -> Option<f64> {
        let replayed = seen.replayed?;
        if self.replayed.is_some_and(|last| replayed < last)
            || self
                .newest
                .zip(seen.known_end)
                .is_some_and(|(newest, end)| end < newest)
        {
            *self = ReplayLag::default();
        }
        self.replayed = Some(replayed);
        if let Some(end) = seen.known_end {
            if end > replayed && self.newest.is_none_or(|newest| end > newest) {
                self.samples.push_back((seen.now, end));
                if self.samples.len() > MAX_SAMPLES {
                    self.thin();
                }
            }
            self.newest = Some(self.newest.map_or(end, |n| n.max(end)));
        }
        while self
            .samples
            .front()
            .is_some_and(|&(_, lsn)| lsn <= replayed)
        {
            self.samples.pop_front();
        }
        if let Some(&(since, _)) = self.samples.front() {
            return Some((seen.now - since).max(0.0));
        }
        if seen.streaming {
            self.caught_up_at = Some(seen.now);
            return Some(0.0);
        }
        self.caught_up_at
            .or(seen.last_replayed_commit)
            .map(|since| (seen.now - since).max(0.0))
    }

    /// Keep the oldest sample and every other one after it.
    fn thin(&mut self) {
        let mut i = 0;
        self.samples.retain(|_| {
            i += 1;
            i == 1 || i % 2 == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now: f64, known_end: f64, replayed: f64, streaming: bool) -> StandbyPosition {
        StandbyPosition {
            now,
            known_end: Some(known_end),
            replayed: Some(replayed),
            streaming,
            last_replayed_commit: Some(0.0),
        }
    }

    #[test]
    fn an_idle_caught_up_standby_has_no_lag_however_old_the_last_commit() {
        // #385: the last commit was at t=0, nothing happened since.
        let mut lag = ReplayLag::default();
        for t in [100.0, 1_000.0, 10_000.0] {
            assert_eq!(lag.update(at(t, 500.0, 500.0, true)), Some(0.0));
        }
    }

    #[test]
    fn a_paused_replay_grows_from_when_the_wal_was_first_seen_then_clears() {
        let mut lag = ReplayLag::default();
        assert_eq!(lag.update(at(10.0, 500.0, 500.0, true)), Some(0.0));
        // New WAL arrives at t=20 and is not replayed.
        assert_eq!(lag.update(at(20.0, 900.0, 500.0, true)), Some(0.0));
        assert_eq!(lag.update(at(30.0, 900.0, 500.0, true)), Some(10.0));
        // More arrives: the lag still counts from the oldest unreplayed WAL.
        assert_eq!(lag.update(at(40.0, 1_500.0, 500.0, true)), Some(20.0));
        // Replay resumes and passes the first sample: the lag counts from the second.
        assert_eq!(lag.update(at(50.0, 1_500.0, 1_000.0, true)), Some(10.0));
        assert_eq!(lag.update(at(60.0, 1_500.0, 1_500.0, true)), Some(0.0));
    }

    #[test]
    fn receive_equal_to_replay_does_not_hide_a_standby_cut_off_from_its_primary() {
        // #977: the receiver stopped; everything received was replayed.
        let mut lag = ReplayLag::default();
        assert_eq!(lag.update(at(10.0, 500.0, 500.0, true)), Some(0.0));
        assert_eq!(lag.update(at(20.0, 500.0, 500.0, false)), Some(10.0));
        assert_eq!(lag.update(at(80.0, 500.0, 500.0, false)), Some(70.0));
        // Reconnected and caught up again.
        assert_eq!(lag.update(at(90.0, 600.0, 600.0, true)), Some(0.0));
    }

    #[test]
    fn never_seen_streaming_falls_back_to_the_last_replayed_commit() {
        let mut lag = ReplayLag::default();
        let mut seen = at(100.0, 500.0, 500.0, false);
        seen.last_replayed_commit = Some(40.0);
        assert_eq!(lag.update(seen), Some(60.0));
        seen.last_replayed_commit = None;
        assert_eq!(ReplayLag::default().update(seen), None);
        seen.replayed = None;
        assert_eq!(ReplayLag::default().update(seen), None);
    }

    #[test]
    fn positions_going_backwards_start_afresh() {
        let mut lag = ReplayLag::default();
        lag.update(at(10.0, 900.0, 500.0, true));
        assert_eq!(lag.update(at(20.0, 900.0, 500.0, true)), Some(10.0));
        // A rebuilt standby far behind the old positions.
        assert_eq!(lag.update(at(30.0, 300.0, 100.0, true)), Some(0.0));
        assert_eq!(lag.update(at(40.0, 300.0, 100.0, true)), Some(10.0));
    }

    #[test]
    fn history_stays_bounded_and_keeps_the_oldest_sample() {
        let mut lag = ReplayLag::default();
        for i in 0..10_000 {
            let t = f64::from(i);
            lag.update(at(t, 1_000.0 + t, 500.0, true));
        }
        assert!(lag.samples.len() <= MAX_SAMPLES, "{}", lag.samples.len());
        assert_eq!(lag.samples.front(), Some(&(0.0, 1_000.0)));
        assert_eq!(
            lag.update(at(10_000.0, 20_000.0, 500.0, true)),
            Some(10_000.0)
        );
    }
}
