//! What changed in a table between two visits: the raw material of `TableRowsDropped` and
//! `RolledBackInserts`. Pure, so the arithmetic is tested without a database.
//!
//! The statistics counters behave like this (PostgreSQL 13 to 18):
//!
//! * `INSERT` of n rows, committed: `n_tup_ins` += n, `n_live_tup` += n.
//! * `INSERT` of n rows rolled back: `n_tup_ins` += n, `n_dead_tup` += n, `n_live_tup` unchanged.
//! * `DELETE` of n rows: `n_tup_del` += n, `n_live_tup` −= n, `n_dead_tup` += n at commit.
//! * `UPDATE`: `n_dead_tup` += 1 per row; `n_tup_ins`, `n_tup_del`, `n_live_tup` unchanged.
//! * `TRUNCATE`: `n_live_tup` and `n_dead_tup` go to 0, `n_tup_del` does not move.
//! * `VACUUM` (or autovacuum): removes the dead rows (`n_dead_tup` → about 0), *re-counts*
//!   `n_live_tup` (exactly for the pages it scanned, extrapolated for the others), resets
//!   `n_ins_since_vacuum` to 0 and adds one to `vacuum_count`/`autovacuum_count`.
//! * `ANALYZE` (or autoanalyze): *re-estimates* `n_live_tup` and `n_dead_tup` from a sample,
//!   which for a large table is off by up to a few percent; adds one to the analyze counts.
//! * a statistics reset: the counters go backwards; no change is computed across it.
//!
//! # Rolled-back inserts, whether or not a vacuum came first
//!
//! Inserts that neither became live rows nor were deleted again were rolled back:
//! `unexplained = inserted − deleted − (live_after − live_before)`. Between two visits with no
//! vacuum or analyze, `n_live_tup` moves only with committed writes, so `unexplained` is exact,
//! and the dead rows the rollback left must show too: rolled back = `min(unexplained, dead
//! rows gained)`.
//!
//! A vacuum in between removes those dead rows (so waiting for them, as pgvigil once did,
//! never fires) but re-counts `n_live_tup`, so `unexplained` survives it. What a vacuum cannot
//! have removed bounds it: rows rolled back before the vacuum were inserted before it
//! (`inserted − n_ins_since_vacuum` now), and rows rolled back after it are dead now. An analyze
//! without a vacuum leaves the dead rows in place and re-estimates both counts, so dead rows
//! gained still bound it.
//!
//! Re-counting and re-estimating add noise to `unexplained`: an ANALYZE of a large table that
//! estimates 1% fewer live rows than the incremental count would otherwise read as a rollback.
//! After a vacuum or analyze, the rule therefore fires only when the estimate clears a
//! tolerance of a share of the table's rows (`RolledBackInserts.reestimate_tolerance`).

use serde::Serialize;

/// The counters of one table at one visit.
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
    /// `n_ins_since_vacuum`: inserts since the last vacuum.
    pub inserted_since_vacuum: i64,
    /// `vacuum_count + autovacuum_count`.
    pub vacuums: i64,
    /// `analyze_count + autoanalyze_count`.
    pub analyzes: i64,
}

/// How a table changed over one interval between visits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableChange {
    /// `schema.table`.
    pub table: String,
    /// Seconds between the two visits.
    pub seconds: f64,
    /// Live rows at the previous visit.
    pub live_before: i64,
    /// Live rows now.
    pub live_after: i64,
    /// Dead rows at the previous visit.
    pub dead_before: i64,
    /// Dead rows now.
    pub dead_after: i64,
    /// Rows inserted in the interval (committed or not).
    pub inserted: i64,
    /// Rows deleted in the interval.
    pub deleted: i64,
    /// Inserts since the last vacuum, now.
    pub inserted_since_vacuum: i64,
    /// A vacuum or autovacuum ran in the interval (dead rows removed, live rows re-counted).
    pub vacuumed: bool,
    /// An analyze or autoanalyze ran in the interval (live and dead rows re-estimated).
    pub analyzed: bool,
    /// An exact `count(*)` taken right after a drop was seen (allow-listed tables only).
    pub exact_after: Option<i64>,
}

impl TableChange {
    /// Compare two visits; `None` across a statistics reset.
    pub fn between(table: &str, seconds: f64, before: Counters, after: Counters) -> Option<Self> {
        if after.inserted < before.inserted
            || after.deleted < before.deleted
            || after.vacuums < before.vacuums
            || after.analyzes < before.analyzes
        {
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
            inserted_since_vacuum: after.inserted_since_vacuum,
            vacuumed: after.vacuums > before.vacuums,
            analyzed: after.analyzes > before.analyzes,
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

    /// Whether the live and dead counts were re-counted or re-estimated in the interval rather
    /// than kept by the writes alone.
    pub fn reestimated(&self) -> bool {
        self.vacuumed || self.analyzed
    }

    /// Inserts neither live now nor deleted again: `inserted − deleted − Δlive`.
    pub fn unexplained_inserts(&self) -> i64 {
        self.inserted - self.deleted - (self.live_after - self.live_before)
    }

    /// About how many rows inserted in the interval were rolled back (see the module docs).
    pub fn rolled_back_inserts(&self) -> i64 {
        let dead_gain = (self.dead_after - self.dead_before).max(0);
        let bound = if self.vacuumed {
            // Rolled back before the vacuum: inserted before it. After it: dead now.
            (self.inserted - self.inserted_since_vacuum).max(0) + self.dead_after.max(0)
        } else {
            dead_gain
        };
        self.unexplained_inserts()
            .min(bound)
            .min(self.inserted)
            .max(0)
    }

    /// How far [`Self::rolled_back_inserts`] may be off because the counts were re-estimated:
    /// `tolerance` of the table's rows after a vacuum or analyze, 0 otherwise.
    pub fn reestimate_noise(&self, tolerance: f64) -> i64 {
        if !self.reestimated() {
            return 0;
        }
        let rows = self.live_before.max(self.live_after).max(0) as f64;
        (rows * tolerance).ceil() as i64
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
            ..Counters::default()
        }
    }

    fn vacuumed(mut counters: Counters, inserted_since_vacuum: i64) -> Counters {
        counters.vacuums += 1;
        counters.inserted_since_vacuum = inserted_since_vacuum;
        counters
    }

    fn analyzed(mut counters: Counters) -> Counters {
        counters.analyzes += 1;
        counters
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
        assert_eq!(ch.rolled_back_inserts(), 0);
    }

    #[test]
    fn rolled_back_insert() {
        let ch =
            TableChange::between("t", 15.0, c(100, 0, 100, 0), c(100, 10_000, 10_100, 0)).unwrap();
        assert_eq!(ch.rolled_back_inserts(), 10_000);
        assert_eq!(ch.reestimate_noise(0.02), 0);
        assert_eq!(ch.lost(), 0);
        // A committed insert is not rolled back.
        let ch =
            TableChange::between("t", 15.0, c(100, 0, 100, 0), c(10_100, 0, 10_100, 0)).unwrap();
        assert_eq!(ch.rolled_back_inserts(), 0);
        // Nor are rows inserted and deleted again (they are dead, but deleted).
        let ch = TableChange::between("t", 15.0, c(100, 0, 100, 0), c(100, 5_000, 5_100, 5_000))
            .unwrap();
        assert_eq!(ch.rolled_back_inserts(), 0);
        // A rollback beside committed deletes.
        let ch = TableChange::between(
            "t",
            15.0,
            c(10_000, 0, 10_000, 0),
            c(9_000, 6_000, 15_000, 1_000),
        )
        .unwrap();
        assert_eq!(ch.rolled_back_inserts(), 5_000);
    }

    /// The reproduction: 10,000 rows, 5,000 inserted and rolled back, then VACUUM
    /// before the next visit: inserted +5000, live 10000 → 9950, dead 0, deleted 0.
    #[test]
    fn a_rollback_survives_the_vacuum_that_removed_its_dead_rows() {
        let before = c(10_000, 0, 10_000, 0);
        let after = vacuumed(c(9_950, 0, 15_000, 0), 0);
        let ch = TableChange::between("t", 60.0, before, after).unwrap();
        assert!(ch.vacuumed && !ch.analyzed);
        assert_eq!(ch.unexplained_inserts(), 5_050);
        assert_eq!(ch.rolled_back_inserts(), 5_000);
        assert_eq!(ch.reestimate_noise(0.02), 200);
        // Rows inserted after the vacuum cannot have been removed by it: they bound the
        // estimate unless they are dead now.
        let after = vacuumed(c(12_950, 0, 18_000, 0), 3_000);
        let ch = TableChange::between("t", 60.0, before, after).unwrap();
        assert_eq!(ch.rolled_back_inserts(), 5_000);
    }

    #[test]
    fn committed_inserts_and_a_vacuum_are_no_rollback() {
        let ch = TableChange::between(
            "t",
            60.0,
            c(10_000, 0, 10_000, 0),
            vacuumed(c(14_990, 0, 15_000, 0), 0),
        )
        .unwrap();
        // Ten rows of re-counting noise: far below any threshold.
        assert_eq!(ch.rolled_back_inserts(), 10);
    }

    #[test]
    fn analyze_underestimating_a_large_table_is_noise_not_a_rollback() {
        // 5,000 committed inserts into a table of a million rows; ANALYZE then estimates 1%
        // fewer live rows and no more dead ones than before.
        let ch = TableChange::between(
            "t",
            60.0,
            c(1_000_000, 2_000, 1_000_000, 0),
            analyzed(c(995_000, 2_100, 1_005_000, 0)),
        )
        .unwrap();
        assert_eq!(ch.unexplained_inserts(), 10_000);
        // No dead rows to show for it: no rollback.
        assert_eq!(ch.rolled_back_inserts(), 100);
        // Had a vacuum re-counted it 1% low instead, the tolerance covers it.
        let ch = TableChange::between(
            "t",
            60.0,
            c(1_000_000, 2_000, 1_000_000, 0),
            vacuumed(c(995_000, 0, 1_005_000, 0), 0),
        )
        .unwrap();
        assert_eq!(ch.rolled_back_inserts(), 5_000);
        assert!(ch.rolled_back_inserts() <= ch.reestimate_noise(0.02));
        // A real rollback after an analyze still shows in the dead rows the analyze estimates.
        let ch = TableChange::between(
            "t",
            60.0,
            c(10_000, 0, 10_000, 0),
            analyzed(c(10_000, 5_000, 15_000, 0)),
        )
        .unwrap();
        assert_eq!(ch.rolled_back_inserts(), 5_000);
    }

    #[test]
    fn exact_count_overrides_the_estimate_and_resets_are_skipped() {
        let mut ch = TableChange::between("t", 1.0, c(1_000, 0, 0, 0), c(0, 0, 0, 0)).unwrap();
        ch.exact_after = Some(990);
        assert_eq!(ch.lost(), 10);
        assert!(TableChange::between("t", 1.0, c(1, 0, 50, 0), c(1, 0, 0, 0)).is_none());
        let mut vacuumed_before = c(1, 0, 50, 0);
        vacuumed_before.vacuums = 3;
        assert!(TableChange::between("t", 1.0, vacuumed_before, c(1, 0, 50, 0)).is_none());
    }
}
