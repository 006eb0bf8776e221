//! What the database sessions do next: pure scheduling over time passed in, tested without a
//! database.
//!
//! * [`DatabasePlan`]: one watched database — when its import check and its table visit are
//!   due, whether its statistics changed since its last visit, whether it has an audit table.
//! * [`ConnectBudget`]: the token bucket that bounds how many connections table visits open
//!   per hour.
//! * [`table_shares`]: each database's share of `max_tables_total`.
//! * [`next_step`]: what the loop does next (a round, an import check or a visit), so that
//!   neither rounds nor import checks that are always due starve the visits.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// The schedule of the database-scope work in one database.
#[derive(Debug, Clone)]
pub(crate) struct DatabasePlan {
    /// When its import check is next due; `None`: with its next table visit (no audit table
    /// known there yet, or imports are off).
    pub(crate) imports_due: Option<Instant>,
    /// When its tables were last visited; `None`: never.
    pub(crate) last_visit: Option<Instant>,
    /// `pg_stat_database`'s write counters at the last visit, and now.
    pub(crate) counters_at_visit: Option<WriteCounters>,
    pub(crate) counters_now: Option<WriteCounters>,
    /// Its last import check read at least one audit table.
    pub(crate) has_audit: bool,
    /// The visit was cut short by the round's budget or the connect budget: first in line.
    pub(crate) postponed: bool,
}

/// What `pg_stat_database` says about a database's writes: if none of these moved, no table
/// statistic of the database did except by vacuum and analyze, which `idle_revisit` catches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WriteCounters {
    /// `tup_inserted + tup_updated + tup_deleted`.
    pub(crate) writes: i64,
    /// `stats_reset` as Unix time.
    pub(crate) stats_reset: Option<f64>,
}

/// The intervals a plan is judged by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Intervals {
    /// `[targets.tables] interval`: the least time between two visits of a changed database.
    pub(crate) tables: Duration,
    /// `[targets.databases] idle_revisit`: the most time between two visits.
    pub(crate) idle_revisit: Duration,
    /// `[targets.imports] interval`.
    pub(crate) imports: Duration,
}

impl DatabasePlan {
    /// A database just discovered: everything is due.
    pub(crate) fn new() -> Self {
        DatabasePlan {
            imports_due: None,
            last_visit: None,
            counters_at_visit: None,
            counters_now: None,
            has_audit: false,
            postponed: false,
        }
    }

    /// Whether its statistics moved since its last visit (unknown counts as moved).
    pub(crate) fn changed(&self) -> bool {
        match (self.counters_at_visit, self.counters_now) {
            (Some(then), Some(now)) => then != now,
            _ => true,
        }
    }

    /// Whether its tables are due for a visit at `now`: with a session open on it, every
    /// `tables` interval (a visit costs no connection); without, only if it changed, or was
    /// left alone for `idle_revisit`.
    pub(crate) fn tables_due(&self, now: Instant, iv: &Intervals, session_open: bool) -> bool {
        let Some(last) = self.last_visit else {
            return true;
        };
        let since = now.saturating_duration_since(last);
        self.postponed
            || since >= iv.idle_revisit
            || ((session_open || self.changed()) && since >= iv.tables)
    }

    /// Whether its import check is due at `now` on its own (apart from a table visit).
    pub(crate) fn imports_due(&self, now: Instant) -> bool {
        self.has_audit && self.imports_due.is_some_and(|due| due <= now)
    }

    /// A visit of its tables finished at `now`.
    pub(crate) fn visited(&mut self, now: Instant) {
        self.last_visit = Some(now);
        self.counters_at_visit = self.counters_now;
        self.postponed = false;
    }

    /// An import check finished at `now`; `has_audit` says whether it read an audit table,
    /// `look_again_at` when a verdict waiting for confirmation can next be settled.
    pub(crate) fn checked(
        &mut self,
        now: Instant,
        has_audit: bool,
        look_again_at: Option<Instant>,
        iv: &Intervals,
    ) {
        self.has_audit = has_audit;
        let regular = now + iv.imports;
        self.imports_due = Some(look_again_at.map_or(regular, |at| at.max(now).min(regular)));
    }

    /// A `NOTIFY pgvigil_import` arrived from this database: check at once.
    pub(crate) fn notified(&mut self, now: Instant) {
        if self.has_audit {
            self.imports_due = Some(now);
        }
    }
}

/// Ordering of table visits in a round: postponed ones first, then never visited, then the
/// longest unvisited.
pub(crate) fn visit_order<'a>(
    plans: impl Iterator<Item = (&'a str, &'a DatabasePlan, bool)>,
    now: Instant,
    iv: &Intervals,
) -> Vec<&'a str> {
    let mut due: Vec<(&str, &DatabasePlan)> = plans
        .filter(|(_, p, open)| p.tables_due(now, iv, *open))
        .map(|(name, p, _)| (name, p))
        .collect();
    due.sort_by_key(|(name, p)| (!p.postponed, p.last_visit, *name));
    due.into_iter().map(|(name, _)| name).collect()
}

/// A token bucket over connections: `per_hour` tokens an hour, holding at most one round's
/// worth (one per watched database), so a round can visit every database at once and the
/// steady state is the rate.
#[derive(Debug, Clone)]
pub(crate) struct ConnectBudget {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    at: Instant,
    /// No capacity set yet: the first one fills the bucket.
    fresh: bool,
}

impl ConnectBudget {
    /// A bucket that fills when its capacity is first set.
    pub(crate) fn new(per_hour: u32, now: Instant) -> Self {
        ConnectBudget {
            tokens: 1.0,
            capacity: 1.0,
            per_second: f64::from(per_hour) / 3600.0,
            at: now,
            fresh: true,
        }
    }

    /// Hold at most `databases` tokens (the watched databases; at least one).
    pub(crate) fn set_capacity(&mut self, databases: usize, now: Instant) {
        self.refill(now);
        self.capacity = databases.max(1) as f64;
        if self.fresh {
            self.tokens = self.capacity;
            self.fresh = false;
        } else {
            self.tokens = self.tokens.min(self.capacity);
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.at = now;
    }

    /// Take a token for a table visit that must connect; false when there is none.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // A hair of slack, so float steps of exactly one token are not lost to rounding.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// An import check connected: it goes first, and may leave the bucket in debt — of at most
    /// one round, so table visits still come back once the checks settle down.
    pub(crate) fn take_anyway(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - 1.0).max(-self.capacity);
    }
}

/// Each database's share of `total` exported tables, never more than its own cap or than it
/// has (`matched`: by name, the tables its filters selected last time — unknown counts as its
/// cap — and its cap): water-filling, so what small databases leave goes to the large ones,
/// and the shares do not depend on the order the databases are visited in.
pub(crate) fn table_shares(
    matched: &BTreeMap<String, (Option<usize>, usize)>,
    total: usize,
) -> BTreeMap<String, usize> {
    let wants: BTreeMap<&str, usize> = matched
        .iter()
        .map(|(name, (n, cap))| (name.as_str(), n.unwrap_or(*cap).min(*cap)))
        .collect();
    if wants.values().sum::<usize>() <= total {
        return wants.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    }
    // The largest level L with sum(min(want, L)) <= total.
    let (mut low, mut high) = (0, wants.values().copied().max().unwrap_or(0));
    while low < high {
        let mid = (low + high).div_ceil(2);
        if wants.values().map(|w| (*w).min(mid)).sum::<usize>() <= total {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    wants
        .into_iter()
        .map(|(k, w)| (k.to_owned(), w.min(low)))
        .collect()
}

/// What the database loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Start a round: read the database list.
    Refresh,
    /// Run the import check that is due.
    Check,
    /// Go on with the current round (its next visit, or its end).
    Visit,
    /// Nothing is due: sleep until something is.
    Idle,
}

/// The loop's next step. A round is never restarted while one is in progress (it would start
/// over before reaching the databases at its end), and after each import check the round's
/// next visit comes before the next check: on a loaded server a check may take longer than
/// the checks' interval, and checks that are always due would otherwise starve every visit —
/// a database created meanwhile would never be read. A check so waits for at most one visit.
pub(crate) fn next_step(
    refresh_due: bool,
    in_round: bool,
    check_due: bool,
    visit_owed: bool,
) -> Step {
    if refresh_due && !in_round {
        Step::Refresh
    } else if check_due && !(visit_owed && in_round) {
        Step::Check
    } else if in_round {
        Step::Visit
    } else {
        Step::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv() -> Intervals {
        Intervals {
            tables: Duration::from_secs(60),
            idle_revisit: Duration::from_secs(900),
            imports: Duration::from_secs(5),
        }
    }

    fn counters(writes: i64) -> Option<WriteCounters> {
        Some(WriteCounters {
            writes,
            stats_reset: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_database_is_visited_when_it_changed_or_was_left_alone_too_long() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut p = DatabasePlan::new();
        assert!(p.tables_due(t0, &iv(), false), "never visited");
        p.counters_now = counters(10);
        p.visited(t0);
        assert!(!p.tables_due(s(61), &iv(), false), "idle");
        assert!(
            p.tables_due(s(61), &iv(), true),
            "idle, but its session is open"
        );
        p.counters_now = counters(11);
        assert!(!p.tables_due(s(30), &iv(), false), "too soon");
        assert!(p.tables_due(s(61), &iv(), false), "changed");
        p.visited(s(61));
        assert!(p.tables_due(s(961), &iv(), false), "revisit");
        p.postponed = true;
        assert!(p.tables_due(s(62), &iv(), false), "postponed");
    }

    #[tokio::test(start_paused = true)]
    async fn import_checks_run_on_their_own_only_where_an_audit_table_is() {
        let t0 = Instant::now();
        let mut p = DatabasePlan::new();
        assert!(
            !p.imports_due(t0),
            "no audit table known yet: with the visit"
        );
        p.checked(t0, true, None, &iv());
        assert!(!p.imports_due(t0 + Duration::from_secs(4)));
        assert!(p.imports_due(t0 + Duration::from_secs(5)));
        // A verdict to confirm in a second brings the next check forward.
        p.checked(t0, true, Some(t0 + Duration::from_secs(1)), &iv());
        assert!(p.imports_due(t0 + Duration::from_secs(1)));
        // ... but never later than the regular interval.
        p.checked(t0, true, Some(t0 + Duration::from_secs(60)), &iv());
        assert!(p.imports_due(t0 + Duration::from_secs(5)));
        p.notified(t0 + Duration::from_secs(2));
        assert!(
            p.imports_due(t0 + Duration::from_secs(2)),
            "NOTIFY: at once"
        );
        p.checked(t0, false, None, &iv());
        assert!(!p.imports_due(t0 + Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn visits_go_postponed_first_then_never_visited_then_stalest() {
        let t0 = Instant::now();
        let mut plans = BTreeMap::new();
        let mut stale = DatabasePlan::new();
        stale.visited(t0);
        let mut staler = DatabasePlan::new();
        staler.visited(t0 - Duration::from_secs(10));
        let mut cut = DatabasePlan::new();
        cut.visited(t0);
        cut.postponed = true;
        plans.insert("a_stale", stale);
        plans.insert("b_new", DatabasePlan::new());
        plans.insert("c_staler", staler);
        plans.insert("d_cut", cut);
        let now = t0 + Duration::from_secs(120);
        let order = visit_order(plans.iter().map(|(k, v)| (*k, v, false)), now, &iv());
        assert_eq!(order, ["d_cut", "b_new", "c_staler", "a_stale"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connect_budget_allows_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = ConnectBudget::new(300, t0);
        b.set_capacity(75, t0);
        let burst = (0..100).take_while(|_| b.try_take(t0)).count();
        assert_eq!(burst, 75, "one round of 75 databases");
        b.set_capacity(75, t0);
        assert!(!b.try_take(t0), "setting it again does not refill it");
        // 300 an hour: one every 12 s.
        assert!(!b.try_take(t0 + Duration::from_secs(11)));
        assert!(b.try_take(t0 + Duration::from_secs(12)));
        // Import checks go into debt, which table visits then wait out.
        b.take_anyway(t0 + Duration::from_secs(12));
        assert!(!b.try_take(t0 + Duration::from_secs(24)));
        assert!(b.try_take(t0 + Duration::from_secs(36)));
    }

    #[test]
    fn table_shares_fill_small_databases_first_and_respect_both_caps() {
        let matched: BTreeMap<String, (Option<usize>, usize)> = [
            ("a".to_owned(), (Some(10), 300)),
            ("b".to_owned(), (Some(500), 300)),
            ("c".to_owned(), (Some(200), 300)),
            ("d".to_owned(), (None, 300)),
        ]
        .into();
        // Under the total: each its own (capped at its max_tables).
        let s = table_shares(&matched, 10_000);
        assert_eq!((s["a"], s["b"], s["c"], s["d"]), (10, 300, 200, 300));
        // Over it: the small one keeps its 10, the rest share equally.
        let s = table_shares(&matched, 400);
        assert_eq!((s["a"], s["b"], s["c"], s["d"]), (10, 130, 130, 130));
        assert!(s.values().sum::<usize>() <= 400);
    }

    /// The loop as `work` runs it, on a server so slow that a refresh and an import check are
    /// due again whenever a step ends: every round still reaches all its visits.
    #[test]
    fn checks_and_rounds_that_are_always_due_do_not_starve_the_visits() {
        let mut in_round = false;
        let mut owed = false;
        let mut left = 0; // visits left in the round
        let (mut visits, mut checks, mut rounds) = (0, 0, 0);
        for _ in 0..60 {
            match next_step(true, in_round, true, owed) {
                Step::Refresh => {
                    rounds += 1;
                    in_round = true;
                    left = 3;
                }
                Step::Check => {
                    checks += 1;
                    owed = true;
                }
                Step::Visit if left == 0 => {
                    in_round = false;
                    owed = false;
                }
                Step::Visit => {
                    visits += 1;
                    left -= 1;
                    owed = false;
                }
                Step::Idle => unreachable!("something is always due"),
            }
        }
        assert!(rounds >= 5, "{rounds} rounds");
        assert_eq!(visits, 3 * (rounds - usize::from(in_round)) + (3 - left));
        // Checks keep their place: one between any two visits.
        assert!(checks >= visits, "{checks} checks, {visits} visits");
    }

    #[test]
    fn a_check_goes_first_and_nothing_due_is_idle() {
        assert_eq!(next_step(false, true, true, false), Step::Check);
        assert_eq!(next_step(false, true, true, true), Step::Visit);
        assert_eq!(
            next_step(false, false, true, true),
            Step::Check,
            "no round: checks go on"
        );
        assert_eq!(
            next_step(true, true, false, false),
            Step::Visit,
            "the round ends first"
        );
        assert_eq!(next_step(true, false, true, false), Step::Refresh);
        assert_eq!(next_step(false, false, false, false), Step::Idle);
    }
}
