//! ArchiveFailing: WAL archiving fails. PostgreSQL retries the same file until
//! `archive_command` (or `archive_library`) succeeds, keeping it and every later segment in
//! pg_wal meanwhile, and point-in-time recovery ends at the last file archived. Fires while
//! the last attempt failed (the last failure is newer than the last success); the first
//! success resolves it.

use std::time::Duration;

use super::{RuleSpec, human_seconds};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ArchiveFailing",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(60),
    default_keep_firing_for: Duration::ZERO,
    fires_when: "archiving is on and the last archive attempt failed (pg_stat_archiver's last failure is newer than its last success)",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(ArchiveFailing))
}

#[derive(Debug)]
struct ArchiveFailing;

impl Rule for ArchiveFailing {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(a) = &observations.archiver else {
            return Evaluation::Unknown;
        };
        if !a.enabled || !a.failing() {
            return Evaluation::Holds(Vec::new());
        }
        let last_success = match a.last_archived_age {
            Some(age) => format!(
                "the last success was {} ago ({})",
                human_seconds(age),
                a.last_archived_wal
            ),
            None => "no file was archived since the statistics were reset".to_owned(),
        };
        let mut c = Condition::new(
            format!(
                "WAL archiving fails on {target}: {} failed attempts",
                a.failed_count
            ),
            format!(
                "Archiving WAL file {} failed on target {target} (archive_mode = {}); {} attempts have failed in all and {last_success}. WAL piles up in pg_wal until the command succeeds, and backups cannot be restored past the last archived file. The server log has the command's error.",
                a.last_failed_wal, a.archive_mode, a.failed_count
            ),
        )
        .annotation("failed_count", a.failed_count)
        .annotation("archived_count", a.archived_count)
        .annotation("last_failed_wal", &a.last_failed_wal)
        .annotation("last_archived_wal", &a.last_archived_wal);
        if let Some(age) = a.last_archived_age {
            c = c.annotation("last_archived_age_seconds", age.round());
        }
        Evaluation::Holds(vec![c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::archiver::ArchiverReport;

    #[test]
    fn fires_while_the_last_attempt_failed_and_archiving_is_on() {
        let rule = build(&toml::Table::new()).unwrap();
        let mut report = ArchiverReport {
            enabled: true,
            archive_mode: "on".into(),
            failed_count: 4.0,
            last_failed_age: Some(1.0),
            last_failed_wal: "000000010000000000000003".into(),
            ..ArchiverReport::default()
        };
        let eval = |r: &ArchiverReport| {
            let o = Observations {
                up: true,
                archiver: Some(r.clone()),
                ..Observations::default()
            };
            match rule.evaluate("main", &o) {
                Evaluation::Holds(c) => c,
                other => panic!("{other:?}"),
            }
        };
        let c = eval(&report);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].annotations["failed_count"], "4");
        assert!(c[0].annotations["description"].contains("000000010000000000000003"));
        report.last_archived_age = Some(0.5);
        assert!(eval(&report).is_empty(), "a success since");
        report.last_archived_age = None;
        report.enabled = false;
        assert!(eval(&report).is_empty(), "archiving off");
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
    }
}
