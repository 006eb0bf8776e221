//! `ImportRowShortfall`: a committed import has fewer rows in its target table than it should.

use serde::Deserialize;

use super::{RuleSpec, import_common as common};
use crate::alert::{Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::imports::reconcile::Verdict;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ImportRowShortfall",
    default_severity: Severity::Critical,
    default_for: std::time::Duration::ZERO,
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "a committed import has fewer rows in its target table than expected − rejected − skipped (confirmed by a second poll after `grace_period`); params `min_missing_rows` (1), `min_missing_ratio` (0.0)",
    build,
};

/// Parameters of `[alerts.rules.ImportRowShortfall]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Ignore shortfalls of fewer rows than this.
    pub min_missing_rows: i64,
    /// Ignore shortfalls smaller than this share of the expected rows (0..1).
    pub min_missing_ratio: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_missing_rows: 1,
            min_missing_ratio: 0.0,
        }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let params: Params = super::params(table)?;
    if params.min_missing_rows < 1 {
        return Err("min_missing_rows must be at least 1".into());
    }
    if !(0.0..1.0).contains(&params.min_missing_ratio) {
        return Err("min_missing_ratio must be between 0 and 1, e.g. 0.01 for 1%".into());
    }
    Ok(Box::new(ImportRowShortfall { params }))
}

/// The rule.
#[derive(Debug)]
pub struct ImportRowShortfall {
    params: Params,
}

impl Rule for ImportRowShortfall {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("min_missing_rows", self.params.min_missing_rows.to_string()),
            (
                "min_missing_ratio",
                super::toml_float(self.params.min_missing_ratio),
            ),
        ]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        common::per_database(observations, |report| {
            common::with_verdict(report, &[Verdict::Shortfall])
            .filter(|v| {
                let missing = v.missing_rows.unwrap_or(0);
                let ratio = 1.0 - v.committed_ratio().unwrap_or(0.0);
                missing >= self.params.min_missing_rows && ratio >= self.params.min_missing_ratio
            })
            .map(|v| {
                let missing = v.missing_rows.unwrap_or(0);
                let expected = v
                    .expected_rows
                    .unwrap_or(0)
                    .saturating_sub(v.rejected_rows.unwrap_or(0))
                    .saturating_sub(v.skipped_rows.unwrap_or(0));
                let pct = 100.0 * (1.0 - v.committed_ratio().unwrap_or(0.0));
                common::condition(
                    report,
                    v,
                    format!(
                        "Import lost {missing} of {expected} rows ({pct:.1}%) in {} on {target}",
                        v.target_table.as_deref().unwrap_or("?")
                    ),
                    format!(
                        "{} is marked committed, but only {} of the {expected} expected rows are in the table: {missing} rows are missing. {}",
                        common::describe(v),
                        v.committed_rows.unwrap_or(0),
                        v.reason.as_deref().unwrap_or("")
                    ),
                )
            })
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::alert::state::{AlertBook, EventKind, RuleSettings};
    use crate::collect::imports::reconcile::ImportVerdict;
    use crate::collect::imports::{ImportsReport, UnknownImport};

    fn observations(report: ImportsReport) -> Observations {
        let mut o = Observations {
            up: true,
            ..Observations::default()
        };
        o.database_mut("shop").imports = Some(report);
        o
    }

    fn shortfall(id: &str, committed: i64) -> ImportVerdict {
        let mut v = ImportVerdict::invalid("import_audit", id, "committed", String::new());
        v.reason = None;
        v.verdict = if committed < 10 {
            Verdict::Shortfall
        } else {
            Verdict::Ok
        };
        v.target_table = Some("public.contacts".into());
        v.expected_rows = Some(10);
        v.rejected_rows = Some(0);
        v.skipped_rows = Some(0);
        v.committed_rows = Some(committed);
        v.missing_rows = (committed < 10).then_some(10 - committed);
        v
    }

    fn report(imports: Vec<ImportVerdict>, unknown: Vec<UnknownImport>) -> ImportsReport {
        ImportsReport {
            datname: "shop".into(),
            audit_tables: vec!["import_audit".into()],
            imports,
            unknown,
            ..ImportsReport::default()
        }
    }

    #[test]
    fn an_unread_audit_table_keeps_its_imports_alerts_firing_until_they_are_fixed() {
        let rule = (SPEC.build)(&toml::Table::new()).unwrap();
        let settings = RuleSettings {
            alertname: SPEC.alertname,
            severity: Severity::Critical,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            runbook_url: None,
        };
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut book = AlertBook::default();
        let mut apply = |report: ImportsReport, at: u64| {
            let evaluation = rule.evaluate("main", &observations(report));
            book.apply("main", &settings, evaluation, t(at))
                .into_iter()
                .map(|e| e.kind)
                .collect::<Vec<_>>()
        };
        let fired = apply(
            report(vec![shortfall("a", 4), shortfall("b", 3)], vec![]),
            0,
        );
        assert_eq!(
            fired,
            [
                EventKind::Pending,
                EventKind::Firing,
                EventKind::Pending,
                EventKind::Firing
            ]
        );

        // The audit table cannot be read (permission revoked): its imports are unknown, not
        // gone. Import "b" is the only one the last read returned (say "a" left the window
        // just before), so "a" resolves and "b" keeps firing.
        let unread = report(
            Vec::new(),
            vec![UnknownImport {
                audit_table: "import_audit".into(),
                table: "public.contacts".into(),
                import_id: "b".into(),
            }],
        );
        assert_eq!(apply(unread.clone(), 10), [EventKind::Resolved]);
        assert!(
            apply(unread, 20).is_empty(),
            "an unknown import's alert must not change"
        );

        // Read again, still short: the same alert, no new notification.
        assert!(apply(report(vec![shortfall("b", 3)], vec![]), 30).is_empty());
        // Fixed: now it resolves.
        assert_eq!(
            apply(report(vec![shortfall("b", 10)], vec![]), 40),
            [EventKind::Resolved]
        );
    }

    #[test]
    fn after_a_restart_an_audit_table_never_read_keeps_every_import_alert_of_its_database() {
        let rule = (SPEC.build)(&toml::Table::new()).unwrap();
        let settings = RuleSettings {
            alertname: SPEC.alertname,
            severity: Severity::Critical,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            runbook_url: None,
        };
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        // The alert as the state file brought it back: firing since t(0).
        let mut book = AlertBook::default();
        let fired = book.apply(
            "main",
            &settings,
            rule.evaluate(
                "main",
                &observations(report(vec![shortfall("a", 4)], vec![])),
            ),
            t(0),
        );
        assert_eq!(fired.len(), 2);
        let since = |book: &AlertBook| {
            book.active()
                .find(|a| a.labels.get("import_id").map(String::as_str) == Some("a"))
                .map(|a| a.active_since)
        };
        let firing_since = since(&book).unwrap();
        // Restarted, the audit table unreadable: pgvigil has no memory of its imports.
        let unread = ImportsReport {
            datname: "shop".into(),
            problems: vec!["cannot read the audit table import_audit".into()],
            unknown_tables: vec!["import_audit".into()],
            ..ImportsReport::default()
        };
        for at in [10, 20] {
            let evaluation = rule.evaluate("main", &observations(unread.clone()));
            assert!(book.apply("main", &settings, evaluation, t(at)).is_empty());
        }
        assert_eq!(since(&book), Some(firing_since));
        // The first good read only sees the discrepancy again (confirming): still unknown.
        let mut confirming = shortfall("a", 4);
        confirming.verdict = Verdict::Confirming;
        confirming.missing_rows = None;
        let evaluation = rule.evaluate("main", &observations(report(vec![confirming], vec![])));
        assert!(book.apply("main", &settings, evaluation, t(25)).is_empty());
        assert_eq!(since(&book), Some(firing_since));
        // A good read that no longer lists it resolves it.
        let evaluation = rule.evaluate("main", &observations(report(vec![], vec![])));
        let events = book.apply("main", &settings, evaluation, t(30));
        assert_eq!(
            events.into_iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::Resolved]
        );
    }
}
