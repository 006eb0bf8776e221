//! What changed in a table between two polls: the raw material of `TableRowsDropped` and
//! `RolledBackInserts`. Pure, so the arithmetic is tested without a database.
//!
//! The statistics counters behave like this (PostgreSQL 13 to 17):
//!
//! * `DELETE` of n rows: `n_tup_del` += n, `n_live_tup` −= n at commit.
//! * `TRUNCATE`: `n_live_tup` and `n_dead_tup` go to 0, `n_tup_del` does not move.
//! * `INSERT` of n rows rolled back: `n_tup_ins` += n, `n_dead_tup` += n, `n_live_tup` unchanged.
//! * a statistics reset: the counters go backwards; no change is computed across it.

use serde::Serialize;

/// The counters of one table at one poll.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counters {
    /// `n_live_tup`.
    pub live: i64,
    /// `n_dead_tup`.
    pub dead: i64,
    /// `n_tup_ins`.
    pub inserted: i64,
    /// `n_tup_del`.
    pub deleted: i64,
}

/// How a table changed over one poll interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableChange {
    /// `schema.table`.
    pub table: String,
    /// Seconds between the two polls.
    pub seconds: f64,
    /// Live rows at the previous poll.
    pub live_before: i64,
    /// Live rows now.
    pub live_after: i64,
    /// Dead rows at the previous poll.
    pub dead_before: i64,
    /// Dead rows now.
    pub dead_after: i64,
    /// Rows inserted in the interval (committed or not).
    pub inserted: i64,
    /// Rows deleted in the interval.
    pub deleted: i64,
    /// An exact `count(*)` taken right after a drop was seen (allow-listed tables only).
    pub exact_after: Option<i64>,
}

impl TableChange {
    /// Compare two polls; `None` across a statistics reset.
    pub fn between(table: &str, seconds: f64, before: Counters, after: Counters) -> Option<Self> {
        if after.inserted < before.inserted || after.deleted < before.deleted {
            return None;
        }
        Some(TableChange {
            table: table.to_owned(),
            seconds,
            live_before: before.live,
            live_after: after.live,
            dead_before: before.dead,
            dead_after: after.dead,
            inserted: after.inserted - before.inserted,
            deleted: after.deleted - before.deleted,
            exact_after: None,
        })
    }

    /// Rows now, by the exact count when there is one.
    pub fn rows_after(&self) -> i64 {
        self.exact_after.unwrap_or(self.live_after)
    }

    /// Rows lost over the interval (0 if it grew).
    pub fn lost(&self) -> i64 {
        (self.live_before - self.rows_after()).max(0)
    }

    /// Share of the previous rows lost, 0..1.
    pub fn lost_ratio(&self) -> f64 {
        if self.live_before <= 0 {
            0.0
        } else {
            self.lost() as f64 / self.live_before as f64
        }
    }

    /// `DELETE` when counted deletes explain most of the loss, else `TRUNCATE` (which counts none).
    pub fn drop_cause(&self) -> &'static str {
        if self.deleted * 2 >= self.lost() {
            "DELETE"
        } else {
            "TRUNCATE"
        }
    }

    /// Rows inserted in the interval that did not stay live and turned up dead: rolled back.
    pub fn rolled_back_inserts(&self) -> i64 {
        let live_gain = (self.live_after - self.live_before).max(0);
        let dead_gain = (self.dead_after - self.dead_before).max(0);
        (self.inserted - live_gain).min(dead_gain).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(live: i64, dead: i64, inserted: i64, deleted: i64) -> Counters {
        Counters {
            live,
            dead,
            inserted,
            deleted,
        }
    }

    #[test]
    fn mass_delete() {
        let ch = TableChange::between(
            "t",
            15.0,
            c(10_000, 0, 10_000, 0),
            c(1_000, 9_000, 10_000, 9_000),
        )
        .unwrap();
        assert_eq!(ch.lost(), 9_000);
        assert_eq!(ch.lost_ratio(), 0.9);
        assert_eq!(ch.drop_cause(), "DELETE");
        assert_eq!(ch.rolled_back_inserts(), 0);
    }

    #[test]
    fn truncate_counts_no_deletes() {
        let ch =
            TableChange::between("t", 15.0, c(5_000, 10, 5_000, 0), c(0, 0, 5_000, 0)).unwrap();
        assert_eq!(ch.lost(), 5_000);
        assert_eq!(ch.drop_cause(), "TRUNCATE");
    }

    #[test]
    fn rolled_back_insert() {
        let ch =
            TableChange::between("t", 15.0, c(100, 0, 100, 0), c(100, 10_000, 10_100, 0)).unwrap();
        assert_eq!(ch.rolled_back_inserts(), 10_000);
        assert_eq!(ch.lost(), 0);
        // A committed insert is not rolled back.
        let ch =
            TableChange::between("t", 15.0, c(100, 0, 100, 0), c(10_100, 0, 10_100, 0)).unwrap();
        assert_eq!(ch.rolled_back_inserts(), 0);
    }

    #[test]
    fn exact_count_overrides_the_estimate_and_resets_are_skipped() {
        let mut ch = TableChange::between("t", 1.0, c(1_000, 0, 0, 0), c(0, 0, 0, 0)).unwrap();
        ch.exact_after = Some(990);
        assert_eq!(ch.lost(), 10);
        assert!(TableChange::between("t", 1.0, c(1, 0, 50, 0), c(1, 0, 0, 0)).is_none());
    }
}
