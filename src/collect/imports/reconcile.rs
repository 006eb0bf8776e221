//! The verdict on each import: pure logic over what the audit row says and what the target
//! table holds, with the little memory it needs between polls.
//!
//! Two races are absorbed here rather than reported:
//!
//! * An app may mark its audit row `committed` a moment before its `COMMIT` becomes visible
//!   (or count rows while a concurrent delete runs). A discrepancy therefore only becomes a
//!   verdict once the import finished at least `grace_period` ago **and** two consecutive looks
//!   counted it; until then the verdict is `confirming`. When the audit row names the import's
//!   transaction (`xact_id`) and `pg_xact_status` says it committed or aborted, there is
//!   nothing left to wait for: no grace period, only the second look, [`CONFIRM_GAP`] after
//!   the first. Each `confirming` verdict says when it can next be settled
//!   ([`ImportVerdict::settle_in`]), so the collector's caller can look again exactly then
//!   instead of at its next regular check.
//! * An import still running is never a shortfall: its rows are not committed yet by design.
//!
//! Imports that checked out are remembered and re-counted every `recheck_interval` for as long as
//! the audit query returns them (`recheck_window` after they finished): rows deleted later are
//! loss too.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Consecutive polls that must see the same discrepancy before it is reported.
pub const CONFIRMING_POLLS: u32 = 2;

/// The least time between the two looks that confirm a discrepancy: long enough for a
/// transaction the first look raced with to have become visible.
pub const CONFIRM_GAP: Duration = Duration::from_secs(1);

/// The `status` column of an audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatus {
    /// Recorded, not started.
    Pending,
    /// In progress.
    Running,
    /// The app says its transaction committed.
    Committed,
    /// The app recorded a failure.
    Failed,
    /// The app abandoned the import on purpose.
    Cancelled,
}

impl AuditStatus {
    /// Parse the column value.
    pub fn parse(s: &str) -> Option<AuditStatus> {
        Some(match s {
            "pending" => AuditStatus::Pending,
            "running" => AuditStatus::Running,
            "committed" => AuditStatus::Committed,
            "failed" => AuditStatus::Failed,
            "cancelled" => AuditStatus::Cancelled,
            _ => return None,
        })
    }

    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Pending => "pending",
            AuditStatus::Running => "running",
            AuditStatus::Committed => "committed",
            AuditStatus::Failed => "failed",
            AuditStatus::Cancelled => "cancelled",
        }
    }
}

/// What `pg_xact_status` says about the import's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XactStatus {
    /// Still open.
    InProgress,
    /// Committed.
    Committed,
    /// Rolled back, or its session died.
    Aborted,
}

impl XactStatus {
    /// Parse `pg_xact_status` output; `None` when the server no longer knows.
    pub fn parse(s: &str) -> Option<XactStatus> {
        Some(match s {
            "in progress" => XactStatus::InProgress,
            "committed" => XactStatus::Committed,
            "aborted" => XactStatus::Aborted,
            _ => return None,
        })
    }

    /// As `pg_xact_status` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            XactStatus::InProgress => "in progress",
            XactStatus::Committed => "committed",
            XactStatus::Aborted => "aborted",
        }
    }
}

/// What pgvigil concluded about one import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Committed rows match expected − rejected − skipped, and the app's report.
    Ok,
    /// Fewer rows committed than expected: data loss.
    Shortfall,
    /// More rows committed than expected.
    Surplus,
    /// The committed rows match the expectation but not what the app reported.
    Mismatch,
    /// Running, but no heartbeat for too long or longer than the maximum duration.
    Stalled,
    /// Running, but its transaction aborted.
    Aborted,
    /// The audit row cannot be checked; `reason` says why.
    Invalid,
    /// Running and healthy.
    Running,
    /// A discrepancy seen, waiting for the grace period and a second poll to confirm it.
    Confirming,
    /// The app recorded a failure or cancellation; nothing is expected.
    Failed,
    /// The committed rows could not be counted this time; `reason` says why.
    Unknown,
}

impl Verdict {
    /// Every verdict, for metrics that export zeros.
    pub const ALL: [Verdict; 11] = [
        Verdict::Ok,
        Verdict::Shortfall,
        Verdict::Surplus,
        Verdict::Mismatch,
        Verdict::Stalled,
        Verdict::Aborted,
        Verdict::Invalid,
        Verdict::Running,
        Verdict::Confirming,
        Verdict::Failed,
        Verdict::Unknown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Shortfall => "shortfall",
            Verdict::Surplus => "surplus",
            Verdict::Mismatch => "mismatch",
            Verdict::Stalled => "stalled",
            Verdict::Aborted => "aborted",
            Verdict::Invalid => "invalid",
            Verdict::Running => "running",
            Verdict::Confirming => "confirming",
            Verdict::Failed => "failed",
            Verdict::Unknown => "unknown",
        }
    }
}

/// A session idle in a transaction that holds writes on the import's target table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtRisk {
    /// Its backend pid.
    pub pid: i32,
    /// How long it has been idle.
    pub idle_seconds: f64,
}

/// One validated audit row.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRecord {
    /// The audit table it came from.
    pub audit_table: String,
    /// The import id, as text.
    pub import_id: String,
    /// The target table, `schema.table` quoted as needed.
    pub target_table: String,
    /// The import-id column of the target table.
    pub id_column: String,
    /// Where the rows came from.
    pub source_name: String,
    /// Rows in the source.
    pub expected_rows: i64,
    /// Rows rejected as bad input.
    pub rejected_rows: i64,
    /// Rows skipped on purpose.
    pub skipped_rows: i64,
    /// Rows the app says it wrote.
    pub reported_rows: Option<i64>,
    /// The import transaction.
    pub xact_id: Option<u64>,
    /// The audit status.
    pub status: AuditStatus,
    /// Seconds since the row was created.
    pub age_seconds: f64,
    /// Seconds since the last heartbeat.
    pub heartbeat_age_seconds: Option<f64>,
    /// Seconds since the import finished.
    pub finished_age_seconds: Option<f64>,
    /// The app's error message.
    pub error_message: Option<String>,
}

impl ImportRecord {
    /// Rows that should be in the target table: expected − rejected − skipped.
    ///
    /// Saturating: a validated record has `rejected + skipped <= expected`, all non-negative, so
    /// this never saturates for one; a hand-built one cannot make it wrap either.
    pub fn expected_net(&self) -> i64 {
        self.expected_rows
            .saturating_sub(self.rejected_rows)
            .saturating_sub(self.skipped_rows)
    }

    fn key(&self) -> (String, String) {
        (self.audit_table.clone(), self.import_id.clone())
    }
}

/// What the collector found out about an import in this poll, besides its audit row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// Rows with this import id in the target table; `None` when not counted this poll.
    pub committed_rows: Option<i64>,
    /// Why counting failed, if it did.
    pub count_error: Option<String>,
    /// `pg_xact_status(xact_id)`.
    pub xact_status: Option<XactStatus>,
    /// A session idle in a transaction with writes on the target table.
    pub at_risk: Option<AtRisk>,
}

/// One import's verdict, with the numbers behind it (what `/api/v1/imports` lists).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportVerdict {
    /// The audit table.
    pub audit_table: String,
    /// The import id.
    pub import_id: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why: the invalid row's fault, the stall, the transaction's fate.
    pub reason: Option<String>,
    /// The audit status, as written.
    pub status: String,
    /// The target table.
    pub target_table: Option<String>,
    /// The target's import-id column.
    pub id_column: Option<String>,
    /// Source name.
    pub source_name: Option<String>,
    /// Rows in the source.
    pub expected_rows: Option<i64>,
    /// Rows rejected.
    pub rejected_rows: Option<i64>,
    /// Rows skipped.
    pub skipped_rows: Option<i64>,
    /// Rows the app reported.
    pub reported_rows: Option<i64>,
    /// Rows committed in the target table (last count).
    pub committed_rows: Option<i64>,
    /// expected − rejected − skipped − committed, when positive.
    pub missing_rows: Option<i64>,
    /// The import transaction.
    pub xact_id: Option<u64>,
    /// Its status.
    pub xact_status: Option<XactStatus>,
    /// A session idle in a transaction holding writes on the target.
    pub at_risk: Option<AtRisk>,
    /// Seconds since the audit row was created.
    pub age_seconds: Option<f64>,
    /// Seconds since the import finished.
    pub finished_age_seconds: Option<f64>,
    /// The app's error message.
    pub error_message: Option<String>,
    /// SQL an operator can run to see the committed rows.
    pub confirm_sql: Option<String>,
    /// For a `confirming` verdict: how soon the next look can settle it.
    #[serde(skip)]
    pub settle_in: Option<Duration>,
}

impl ImportVerdict {
    /// An audit row that cannot be checked.
    pub fn invalid(audit_table: &str, import_id: &str, status: &str, reason: String) -> Self {
        ImportVerdict {
            audit_table: audit_table.to_owned(),
            import_id: import_id.to_owned(),
            verdict: Verdict::Invalid,
            reason: Some(reason),
            status: status.to_owned(),
            target_table: None,
            id_column: None,
            source_name: None,
            expected_rows: None,
            rejected_rows: None,
            skipped_rows: None,
            reported_rows: None,
            committed_rows: None,
            missing_rows: None,
            xact_id: None,
            xact_status: None,
            at_risk: None,
            age_seconds: None,
            finished_age_seconds: None,
            error_message: None,
            confirm_sql: None,
            settle_in: None,
        }
    }

    /// `expected_net / committed` as the share of rows that arrived, 0..1.
    pub fn committed_ratio(&self) -> Option<f64> {
        let expected = self
            .expected_rows?
            .checked_sub(self.rejected_rows?)?
            .checked_sub(self.skipped_rows?)?;
        let committed = self.committed_rows?;
        (expected > 0).then(|| committed as f64 / expected as f64)
    }
}

/// The thresholds of [`Reconciler`].
#[derive(Debug, Clone)]
pub struct Policy {
    /// A discrepancy is not reported until the import finished this long ago.
    pub grace_period: Duration,
    /// Re-count an import that checked out this often.
    pub recheck_interval: Duration,
    /// No heartbeat for this long: stalled.
    pub stall_after: Duration,
    /// Running longer than this: stalled.
    pub max_duration: Duration,
}

#[derive(Debug, Default)]
struct Tracked {
    discrepancy_polls: u32,
    /// Consecutive polls that saw the import running with its transaction aborted.
    aborted_polls: u32,
    last_count: Option<i64>,
    last_counted: Option<Instant>,
    verified: bool,
    /// A confirmed shortfall, surplus or mismatch: re-counted every `recheck_interval` like a
    /// verified import, not every poll.
    settled: bool,
    /// The transaction status seen with the last count: a settled import's transaction is not
    /// asked about between re-counts, and its verdict must not lose it meanwhile.
    last_xact_status: Option<XactStatus>,
}

/// Verdicts, and the memory between polls they need.
#[derive(Debug)]
pub struct Reconciler {
    policy: Policy,
    tracked: HashMap<(String, String), Tracked>,
    invalid_logged: HashSet<(String, String)>,
}

impl Reconciler {
    /// A reconciler with no history.
    pub fn new(policy: Policy) -> Self {
        Reconciler {
            policy,
            tracked: HashMap::new(),
            invalid_logged: HashSet::new(),
        }
    }

    /// Whether the committed rows of `record` must be counted this poll: every poll while its
    /// verdict is open (not counted yet, or a discrepancy being confirmed), then every
    /// `recheck_interval` once it is settled (it checked out, or its discrepancy is confirmed).
    pub fn needs_count(&self, record: &ImportRecord, now: Instant) -> bool {
        if record.status != AuditStatus::Committed {
            return false;
        }
        match self.tracked.get(&record.key()) {
            Some(t) if t.verified || t.settled => t
                .last_counted
                .is_none_or(|at| now.duration_since(at) >= self.policy.recheck_interval),
            _ => true,
        }
    }

    /// Remember that an audit row is invalid; true the first time (log it then, not every poll).
    pub fn first_invalid(&mut self, audit_table: &str, import_id: &str) -> bool {
        self.invalid_logged
            .insert((audit_table.to_owned(), import_id.to_owned()))
    }

    /// Forget imports the audit query no longer returns (they left the re-check window).
    /// `unread`: audit tables that could not be read this time; their imports are not known
    /// to be gone, so what was learnt of them (a confirmed shortfall) is kept — forgetting it
    /// would make the next read start over at `confirming`, resolving and re-firing the alert.
    pub fn retain(&mut self, seen: &HashSet<(String, String)>, unread: &HashSet<String>) {
        let keep = |k: &(String, String)| seen.contains(k) || unread.contains(&k.0);
        self.tracked.retain(|k, _| keep(k));
        self.invalid_logged.retain(|k| keep(k));
    }

    /// Judge one import.
    pub fn judge(&mut self, record: &ImportRecord, facts: Facts, now: Instant) -> ImportVerdict {
        let tracked = self.tracked.entry(record.key()).or_default();
        let counted_now = facts.committed_rows.is_some();
        let mut facts = facts;
        if record.status == AuditStatus::Committed {
            match facts.xact_status {
                Some(status) => tracked.last_xact_status = Some(status),
                None if !counted_now => facts.xact_status = tracked.last_xact_status,
                None => tracked.last_xact_status = None,
            }
        }
        if let Some(n) = facts.committed_rows {
            tracked.last_count = Some(n);
            tracked.last_counted = Some(now);
        }
        let committed = if record.status == AuditStatus::Committed {
            tracked.last_count
        } else {
            facts.committed_rows
        };
        let mut verdict = ImportVerdict {
            audit_table: record.audit_table.clone(),
            import_id: record.import_id.clone(),
            verdict: Verdict::Running,
            reason: None,
            status: record.status.as_str().to_owned(),
            target_table: Some(record.target_table.clone()),
            id_column: Some(record.id_column.clone()),
            source_name: Some(record.source_name.clone()),
            expected_rows: Some(record.expected_rows),
            rejected_rows: Some(record.rejected_rows),
            skipped_rows: Some(record.skipped_rows),
            reported_rows: record.reported_rows,
            committed_rows: committed,
            missing_rows: None,
            xact_id: record.xact_id,
            xact_status: facts.xact_status,
            at_risk: facts.at_risk.clone(),
            age_seconds: Some(record.age_seconds),
            finished_age_seconds: record.finished_age_seconds,
            error_message: record.error_message.clone(),
            confirm_sql: None,
            settle_in: None,
        };
        let policy = &self.policy;
        if record.status != AuditStatus::Pending && record.status != AuditStatus::Running
            || facts.xact_status != Some(XactStatus::Aborted)
        {
            tracked.aborted_polls = 0;
        }
        match record.status {
            AuditStatus::Failed | AuditStatus::Cancelled => {
                verdict.verdict = Verdict::Failed;
                verdict.reason = record.error_message.clone();
            }
            AuditStatus::Pending | AuditStatus::Running => {
                let heartbeat_age = record.heartbeat_age_seconds.unwrap_or(record.age_seconds);
                if facts.xact_status == Some(XactStatus::Aborted) {
                    // The audit row is read before the transaction's status, so an app that
                    // marks its import finished just as the transaction ends can be seen
                    // "running" with an aborted transaction for one poll: confirm it first.
                    tracked.aborted_polls += 1;
                    let reason = format!(
                        "transaction {} aborted, but the audit row still says {}",
                        record.xact_id.unwrap_or_default(),
                        record.status.as_str()
                    );
                    if tracked.aborted_polls >= CONFIRMING_POLLS {
                        verdict.verdict = Verdict::Aborted;
                        verdict.reason = Some(reason);
                    } else {
                        verdict.verdict = Verdict::Confirming;
                        verdict.reason = Some(format!("{reason}; confirming at the next poll"));
                        verdict.settle_in = Some(CONFIRM_GAP);
                    }
                } else if heartbeat_age > policy.stall_after.as_secs_f64() {
                    verdict.verdict = Verdict::Stalled;
                    verdict.reason = Some(format!(
                        "no heartbeat for {:.0}s (stall_after {}s)",
                        heartbeat_age,
                        policy.stall_after.as_secs()
                    ));
                } else if record.age_seconds > policy.max_duration.as_secs_f64() {
                    verdict.verdict = Verdict::Stalled;
                    verdict.reason = Some(format!(
                        "running for {:.0}s, longer than max_duration {}s",
                        record.age_seconds,
                        policy.max_duration.as_secs()
                    ));
                } else {
                    verdict.verdict = Verdict::Running;
                    verdict.reason = facts.at_risk.as_ref().map(|r| {
                        format!(
                            "at risk: session {} has sat idle in a transaction with writes on {} for {:.0}s",
                            r.pid, record.target_table, r.idle_seconds
                        )
                    });
                }
            }
            AuditStatus::Committed => {
                let expected = record.expected_net();
                let Some(count) = committed else {
                    verdict.verdict = Verdict::Unknown;
                    verdict.reason = Some(
                        facts
                            .count_error
                            .unwrap_or_else(|| "not counted yet".to_owned()),
                    );
                    return verdict;
                };
                let reported_differs = record.reported_rows.is_some_and(|r| r != count);
                if count == expected && !reported_differs {
                    tracked.discrepancy_polls = 0;
                    tracked.verified = true;
                    tracked.settled = false;
                    verdict.verdict = Verdict::Ok;
                    return verdict;
                }
                tracked.verified = false;
                if counted_now {
                    tracked.discrepancy_polls += 1;
                }
                let finished_age = record.finished_age_seconds.unwrap_or(record.age_seconds);
                // The transaction's fate known: its rows are all visible, or never will be.
                let decided = matches!(
                    facts.xact_status,
                    Some(XactStatus::Committed | XactStatus::Aborted)
                );
                let grace_left = policy.grace_period.as_secs_f64() - finished_age;
                let graced = decided || grace_left <= 0.0;
                let confirmed = graced && tracked.discrepancy_polls >= CONFIRMING_POLLS;
                if !confirmed {
                    let wait = if graced {
                        CONFIRM_GAP
                    } else {
                        Duration::from_secs_f64(grace_left).max(CONFIRM_GAP)
                    };
                    verdict.settle_in = Some(wait);
                }
                tracked.settled = confirmed;
                verdict.missing_rows = (count < expected).then_some(expected.saturating_sub(count));
                verdict.verdict = if !confirmed {
                    Verdict::Confirming
                } else if count < expected {
                    Verdict::Shortfall
                } else if count > expected {
                    Verdict::Surplus
                } else {
                    Verdict::Mismatch
                };
                verdict.reason = Some(cause(record, &facts, count, expected));
            }
        }
        verdict
    }
}

/// One line on what probably happened, for the alert's description.
fn cause(record: &ImportRecord, facts: &Facts, count: i64, expected: i64) -> String {
    let mut s = format!(
        "{count} of {expected} expected rows are committed (expected {} - rejected {} - skipped {})",
        record.expected_rows, record.rejected_rows, record.skipped_rows
    );
    if let Some(reported) = record.reported_rows {
        s.push_str(&format!("; the app reported {reported}"));
    }
    match facts.xact_status {
        Some(XactStatus::Aborted) => s.push_str(&format!(
            "; its transaction {} ABORTED although the audit row says committed: the import was rolled back or never committed",
            record.xact_id.unwrap_or_default()
        )),
        Some(XactStatus::InProgress) => s.push_str(&format!(
            "; its transaction {} is STILL OPEN: the app marked it committed before committing",
            record.xact_id.unwrap_or_default()
        )),
        _ => {}
    }
    if let Some(r) = &facts.at_risk {
        s.push_str(&format!(
            "; session {} sits idle in a transaction with writes on the table",
            r.pid
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            grace_period: Duration::from_secs(10),
            recheck_interval: Duration::from_secs(60),
            stall_after: Duration::from_secs(300),
            max_duration: Duration::from_secs(3600),
        }
    }

    fn committed(expected: i64, finished_age: f64) -> ImportRecord {
        ImportRecord {
            audit_table: "import_audit".into(),
            import_id: "imp-1".into(),
            target_table: "contacts".into(),
            id_column: "import_id".into(),
            source_name: "contacts.csv".into(),
            expected_rows: expected,
            rejected_rows: 0,
            skipped_rows: 0,
            reported_rows: Some(expected),
            xact_id: Some(1234),
            status: AuditStatus::Committed,
            age_seconds: finished_age + 5.0,
            heartbeat_age_seconds: Some(finished_age),
            finished_age_seconds: Some(finished_age),
            error_message: None,
        }
    }

    fn counted(n: i64) -> Facts {
        Facts {
            committed_rows: Some(n),
            ..Facts::default()
        }
    }

    #[test]
    fn matching_import_is_ok_at_once() {
        let mut r = Reconciler::new(policy());
        let v = r.judge(&committed(10_000, 0.5), counted(10_000), Instant::now());
        assert_eq!(v.verdict, Verdict::Ok);
        assert_eq!(v.missing_rows, None);
    }

    #[test]
    fn shortfall_needs_grace_and_a_second_poll() {
        let mut r = Reconciler::new(policy());
        let t0 = Instant::now();
        // Right after the audit update: the COMMIT may not be visible yet.
        let v = r.judge(&committed(10_000, 1.0), counted(300), t0);
        assert_eq!(v.verdict, Verdict::Confirming);
        assert_eq!(v.missing_rows, Some(9_700));
        // Past the grace period, second poll: confirmed, with exact numbers.
        let v = r.judge(&committed(10_000, 12.0), counted(300), t0);
        assert_eq!(v.verdict, Verdict::Shortfall);
        assert_eq!(v.missing_rows, Some(9_700));
        assert_eq!(v.committed_ratio(), Some(0.03));
    }

    /// Defect 8 of issue 16: a confirmed shortfall was re-counted on every poll (3,370 counts
    /// in 14 minutes for 4 imports).
    #[test]
    fn a_confirmed_shortfall_is_recounted_every_recheck_interval_not_every_poll() {
        let mut r = Reconciler::new(policy());
        let t0 = Instant::now();
        let rec = committed(10_000, 30.0);
        r.judge(&rec, counted(300), t0);
        assert!(
            r.needs_count(&rec, t0),
            "a discrepancy is confirmed by counting"
        );
        assert_eq!(r.judge(&rec, counted(300), t0).verdict, Verdict::Shortfall);
        // Settled: polls in between keep the verdict without counting.
        let soon = t0 + Duration::from_secs(5);
        assert!(!r.needs_count(&rec, soon));
        let v = r.judge(&rec, Facts::default(), soon);
        assert_eq!(v.verdict, Verdict::Shortfall);
        assert_eq!(v.missing_rows, Some(9_700));
        // The transaction's fate seen at the count is kept between counts.
        let mut aborted = counted(300);
        aborted.xact_status = Some(XactStatus::Aborted);
        let mut r2 = Reconciler::new(policy());
        r2.judge(&rec, aborted.clone(), t0);
        r2.judge(&rec, aborted, t0);
        let v = r2.judge(&rec, Facts::default(), soon);
        assert_eq!(v.xact_status, Some(XactStatus::Aborted));
        assert!(v.reason.unwrap().contains("ABORTED"));
        // Re-counted after recheck_interval: the late commit resolves it.
        let later = t0 + Duration::from_secs(61);
        assert!(r.needs_count(&rec, later));
        assert_eq!(r.judge(&rec, counted(10_000), later).verdict, Verdict::Ok);
    }

    #[test]
    fn a_confirming_verdict_says_when_it_can_be_settled() {
        let mut r = Reconciler::new(policy());
        let t0 = Instant::now();
        // 1 s after the audit row said committed, with a grace period of 10 s: at 10 s.
        let v = r.judge(&committed(100, 1.0), counted(0), t0);
        assert_eq!(v.verdict, Verdict::Confirming);
        assert_eq!(v.settle_in, Some(Duration::from_secs(9)));
        // Past the grace period, the second look a CONFIRM_GAP after the first.
        let mut r = Reconciler::new(policy());
        let v = r.judge(&committed(100, 30.0), counted(0), t0);
        assert_eq!(v.settle_in, Some(CONFIRM_GAP));
        let v = r.judge(&committed(100, 31.0), counted(0), t0);
        assert_eq!(v.verdict, Verdict::Shortfall);
        assert_eq!(v.settle_in, None);
    }

    #[test]
    fn a_transaction_known_committed_needs_no_grace_period_only_the_second_look() {
        let mut r = Reconciler::new(policy());
        let t0 = Instant::now();
        let facts = Facts {
            committed_rows: Some(300),
            xact_status: Some(XactStatus::Committed),
            ..Facts::default()
        };
        let v = r.judge(&committed(10_000, 0.2), facts.clone(), t0);
        assert_eq!(v.verdict, Verdict::Confirming);
        assert_eq!(v.settle_in, Some(CONFIRM_GAP));
        let v = r.judge(&committed(10_000, 1.3), facts, t0);
        assert_eq!(v.verdict, Verdict::Shortfall);
        // Still open (the app wrote its audit row before COMMIT): the grace period holds.
        let mut r = Reconciler::new(policy());
        let open = Facts {
            committed_rows: Some(0),
            xact_status: Some(XactStatus::InProgress),
            ..Facts::default()
        };
        r.judge(&committed(500, 0.2), open.clone(), t0);
        let v = r.judge(&committed(500, 1.3), open, t0);
        assert_eq!(v.verdict, Verdict::Confirming);
        // ... and the COMMIT that lands before it ends is no shortfall.
        let done = Facts {
            committed_rows: Some(500),
            xact_status: Some(XactStatus::Committed),
            ..Facts::default()
        };
        assert_eq!(r.judge(&committed(500, 2.5), done, t0).verdict, Verdict::Ok);
    }

    #[test]
    fn one_poll_past_grace_is_not_enough() {
        let mut r = Reconciler::new(policy());
        let v = r.judge(&committed(100, 60.0), counted(0), Instant::now());
        assert_eq!(v.verdict, Verdict::Confirming);
    }

    #[test]
    fn commit_that_becomes_visible_on_the_next_poll_never_alerts() {
        let mut r = Reconciler::new(policy());
        let t0 = Instant::now();
        assert_eq!(
            r.judge(&committed(500, 0.1), counted(0), t0).verdict,
            Verdict::Confirming
        );
        assert_eq!(
            r.judge(&committed(500, 20.0), counted(500), t0).verdict,
            Verdict::Ok
        );
        // The discrepancy streak was reset by the good count.
        assert_eq!(
            r.judge(&committed(500, 21.0), counted(499), t0).verdict,
            Verdict::Confirming
        );
    }

    #[test]
    fn running_import_is_never_a_shortfall() {
        let mut r = Reconciler::new(policy());
        let mut rec = committed(10_000, 0.0);
        rec.status = AuditStatus::Running;
        rec.finished_age_seconds = None;
        rec.reported_rows = None;
        rec.heartbeat_age_seconds = Some(2.0);
        rec.age_seconds = 100.0;
        for _ in 0..3 {
            let v = r.judge(&rec, Facts::default(), Instant::now());
            assert_eq!(v.verdict, Verdict::Running);
        }
        assert!(!r.needs_count(&rec, Instant::now()));
    }

    #[test]
    fn rejected_and_skipped_are_subtracted() {
        let mut r = Reconciler::new(policy());
        let mut rec = committed(1_000, 30.0);
        rec.rejected_rows = 7;
        rec.skipped_rows = 3;
        rec.reported_rows = Some(990);
        assert_eq!(
            r.judge(&rec, counted(990), Instant::now()).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn surplus_and_mismatch() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(policy());
        let rec = committed(100, 30.0);
        r.judge(&rec, counted(120), t0);
        let v = r.judge(&rec, counted(120), t0);
        assert_eq!(v.verdict, Verdict::Surplus);
        assert_eq!(v.missing_rows, None);

        let mut r = Reconciler::new(policy());
        let mut rec = committed(100, 30.0);
        rec.reported_rows = Some(150);
        r.judge(&rec, counted(100), t0);
        let v = r.judge(&rec, counted(100), t0);
        assert_eq!(v.verdict, Verdict::Mismatch);
        assert!(v.reason.unwrap().contains("the app reported 150"));
    }

    #[test]
    fn recheck_window_catches_rows_deleted_later() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(policy());
        let rec = committed(100, 30.0);
        assert_eq!(r.judge(&rec, counted(100), t0).verdict, Verdict::Ok);
        // Verified: not re-counted until recheck_interval passed; the old count stands.
        assert!(!r.needs_count(&rec, t0 + Duration::from_secs(5)));
        assert_eq!(
            r.judge(&rec, Facts::default(), t0 + Duration::from_secs(5))
                .verdict,
            Verdict::Ok
        );
        let later = t0 + Duration::from_secs(61);
        assert!(r.needs_count(&rec, later));
        assert_eq!(
            r.judge(&rec, counted(40), later).verdict,
            Verdict::Confirming
        );
        // A discrepancy is counted every poll until it resolves.
        assert!(r.needs_count(&rec, later));
        let v = r.judge(&rec, counted(40), later);
        assert_eq!(v.verdict, Verdict::Shortfall);
        assert_eq!(v.missing_rows, Some(60));
    }

    #[test]
    fn stalled_and_aborted_running_imports() {
        let mut r = Reconciler::new(policy());
        let mut rec = committed(100, 0.0);
        rec.status = AuditStatus::Running;
        rec.finished_age_seconds = None;
        rec.heartbeat_age_seconds = Some(301.0);
        let v = r.judge(&rec, Facts::default(), Instant::now());
        assert_eq!(v.verdict, Verdict::Stalled);
        assert!(v.reason.unwrap().contains("no heartbeat for 301s"));

        rec.heartbeat_age_seconds = Some(1.0);
        rec.age_seconds = 4000.0;
        let v = r.judge(&rec, Facts::default(), Instant::now());
        assert_eq!(v.verdict, Verdict::Stalled);
        assert!(v.reason.unwrap().contains("max_duration"));

        let facts = Facts {
            xact_status: Some(XactStatus::Aborted),
            ..Facts::default()
        };
        // One poll could have read the audit row just before the app updated it: confirm.
        let v = r.judge(&rec, facts.clone(), Instant::now());
        assert_eq!(v.verdict, Verdict::Confirming);
        let v = r.judge(&rec, facts, Instant::now());
        assert_eq!(v.verdict, Verdict::Aborted);
        assert!(v.reason.unwrap().contains("transaction 1234 aborted"));
    }

    #[test]
    fn at_risk_running_import_is_explained() {
        let mut r = Reconciler::new(policy());
        let mut rec = committed(100, 0.0);
        rec.status = AuditStatus::Running;
        rec.age_seconds = 5.0;
        let facts = Facts {
            at_risk: Some(AtRisk {
                pid: 42,
                idle_seconds: 9.0,
            }),
            ..Facts::default()
        };
        let v = r.judge(&rec, facts, Instant::now());
        assert_eq!(v.verdict, Verdict::Running);
        assert!(v.reason.unwrap().starts_with("at risk: session 42"));
    }

    #[test]
    fn aborted_transaction_marked_committed_is_a_shortfall_with_the_cause() {
        let mut r = Reconciler::new(policy());
        let facts = Facts {
            committed_rows: Some(0),
            xact_status: Some(XactStatus::Aborted),
            ..Facts::default()
        };
        r.judge(&committed(10_000, 15.0), facts.clone(), Instant::now());
        let v = r.judge(&committed(10_000, 16.0), facts, Instant::now());
        assert_eq!(v.verdict, Verdict::Shortfall);
        assert_eq!(v.missing_rows, Some(10_000));
        assert!(v.reason.unwrap().contains("ABORTED"));
    }

    #[test]
    fn count_failure_is_unknown_not_ok() {
        let mut r = Reconciler::new(policy());
        let facts = Facts {
            count_error: Some("canceling statement due to statement timeout".into()),
            ..Facts::default()
        };
        let v = r.judge(&committed(10, 30.0), facts, Instant::now());
        assert_eq!(v.verdict, Verdict::Unknown);
        assert!(v.reason.unwrap().contains("statement timeout"));
    }

    #[test]
    fn invalid_rows_are_logged_once_and_forgotten_with_the_window() {
        let mut r = Reconciler::new(policy());
        assert!(r.first_invalid("import_audit", "x"));
        assert!(!r.first_invalid("import_audit", "x"));
        r.retain(&HashSet::new(), &HashSet::new());
        assert!(r.first_invalid("import_audit", "x"));
    }

    /// Issue 16: an audit table that could not be read once (a restart between two queries of
    /// a check) made the reconciler forget its confirmed shortfall, so the next read said
    /// `confirming` (the alert resolved) and then `shortfall` again (it fired anew).
    #[test]
    fn an_unread_audit_table_keeps_its_confirmed_verdicts() {
        let mut r = Reconciler::new(policy());
        let t0 = Instant::now();
        r.judge(&committed(10, 30.0), counted(5), t0);
        let v = r.judge(&committed(10, 30.0), counted(5), t0);
        assert_eq!(v.verdict, Verdict::Shortfall);
        // The audit table could not be read: nothing seen, but it is unread, not emptied.
        r.retain(&HashSet::new(), &HashSet::from(["import_audit".to_owned()]));
        let v = r.judge(&committed(10, 31.0), Facts::default(), t0);
        assert_eq!(v.verdict, Verdict::Shortfall, "{v:?}");
        assert_eq!(v.committed_rows, Some(5));
        // Read and no longer returned (out of the window): forgotten.
        r.retain(&HashSet::new(), &HashSet::new());
        let v = r.judge(&committed(10, 32.0), counted(5), t0);
        assert_eq!(v.verdict, Verdict::Confirming);
    }
}
