//! `SequenceExhaustion`: a sequence (or an identity column's) has used a share of its range
//! that the `indexes` collector judges a warning (`[targets.indexes] sequence_warning_ratio`)
//! or critical (`sequence_critical_ratio`). Its range ends at the tighter of the sequence's own
//! limit and its column type's: an int4 column fed by a bigint sequence ends at 2^31 - 1 even
//! though the sequence goes on. When it ends, every INSERT that needs a new value fails. One
//! alert per sequence, naming the column and its type, the used share, the values left, which
//! of the two ends first, and the SQL that widens it.
//!
//! The thresholds are the collector's, so the alert, the status page's findings, the API and
//! `pgvigil advise` always agree; the rule only turns the collector's verdicts into alerts.

use std::time::Duration;

use super::RuleSpec;
use crate::advice::Severity as Verdict;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::indexes::IndexesReport;
use crate::collect::indexes::verdicts::SEQUENCE_EXHAUSTION;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "SequenceExhaustion",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a sequence (or identity column) has used `[targets.indexes] sequence_warning_ratio` of its range, up to the tighter of its own limit and its column type's; critical from `sequence_critical_ratio`; names the column, its type, the values left and the ALTER that widens it; one alert per sequence",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(SequenceExhaustion))
}

/// The rule.
#[derive(Debug)]
struct SequenceExhaustion;

impl Rule for SequenceExhaustion {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        Evaluation::per_database(
            observations,
            |d| d.indexes.as_ref(),
            |datname, report| conditions(target, datname, report),
        )
    }
}

/// One condition per sequence of `report` the collector judged a warning or worse.
fn conditions(target: &str, datname: &str, report: &IndexesReport) -> Vec<Condition> {
    let mut out = Vec::new();
    for finding in &report.findings {
        if finding.check != SEQUENCE_EXHAUSTION || finding.severity < Verdict::Warning {
            continue;
        }
        // Unreadable sequences are info findings; every judged one has its usage.
        let Some(usage) = report
            .sequences
            .iter()
            .find(|s| s.sequence == finding.object)
        else {
            continue;
        };
        let fix = finding.fix.clone().unwrap_or_default();
        let ends_first = if usage.column_type_limits {
            "column type"
        } else {
            "sequence"
        };
        let feeds = if usage.column.is_empty() {
            String::new()
        } else {
            format!(" ({} {})", usage.column, usage.column_type)
        };
        let mut c = Condition::new(
            format!(
                "sequence {}{feeds} has used {:.1}% of its range in {datname} on {target}",
                usage.sequence,
                100.0 * usage.used_ratio
            ),
            format!("{}. Fix: {fix}", finding.message),
        )
        .label("datname", datname)
        .label("sequence", usage.sequence.clone())
        .label("column", usage.column.clone())
        .annotation("column_type", &usage.column_type)
        .annotation("sequence_type", &usage.sequence_type)
        .annotation("used_ratio", format!("{:.4}", usage.used_ratio))
        .annotation("remaining", usage.remaining)
        .annotation("limit", usage.limit)
        .annotation("ends_first", ends_first)
        .annotation("fix", fix);
        if finding.severity == Verdict::Critical {
            c = c.severity(Severity::Critical);
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::indexes::catalog::{Catalog, SequenceDef};
    use crate::collect::indexes::verdicts::judge;
    use crate::config::IndexesConfig;

    fn sequence(column_type: &str, sequence_type: &str, last: i64) -> SequenceDef {
        SequenceDef {
            name: "public.orders_id_seq".into(),
            table: Some("public.orders".into()),
            column: Some("id".into()),
            column_type: Some(column_type.into()),
            sequence_type: sequence_type.into(),
            start: 1,
            increment: 1,
            max: if sequence_type == "bigint" {
                i64::MAX
            } else {
                i32::MAX.into()
            },
            min: 1,
            cycle: false,
            last_value: Some(last),
            readable: true,
            identity: None,
        }
    }

    /// The collector's verdicts on `sequences`, as the rule sees them.
    fn evaluate(sequences: Vec<SequenceDef>) -> Vec<Condition> {
        let catalog = Catalog {
            sequences,
            role: "pgvigil".into(),
            ..Catalog::default()
        };
        let mut o = Observations::default();
        o.database_mut("app").indexes = Some(judge(&catalog, &IndexesConfig::default(), "app"));
        let rule = build(&toml::Table::new()).unwrap();
        let Evaluation::Holds(c) = rule.evaluate("main", &o) else {
            panic!("holds");
        };
        c
    }

    #[test]
    fn warning_then_critical_with_the_column_and_the_fix() {
        // 80% of 2^31 - 1: past the default warning ratio 0.75, not the critical 0.9.
        let c = evaluate(vec![sequence("integer", "integer", 1_717_986_918)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].severity, None, "the configured severity (warning)");
        assert_eq!(c[0].labels["datname"], "app");
        assert_eq!(c[0].labels["sequence"], "public.orders_id_seq");
        assert_eq!(c[0].labels["column"], "public.orders.id");
        assert_eq!(c[0].annotations["column_type"], "integer");
        assert_eq!(c[0].annotations["used_ratio"], "0.8000");
        assert_eq!(c[0].annotations["remaining"], "429496729");
        assert_eq!(c[0].annotations["ends_first"], "sequence");
        let fix = &c[0].annotations["fix"];
        assert!(fix.starts_with(
            "ALTER TABLE public.orders ALTER COLUMN id TYPE bigint; ALTER SEQUENCE public.orders_id_seq AS bigint;"
        ));
        assert!(c[0].annotations["description"].contains("429496729 values left"));
        assert!(c[0].annotations["description"].contains(fix.as_str()));
        let c = evaluate(vec![sequence("integer", "integer", 2_000_000_000)]);
        assert_eq!(c[0].severity, Some(Severity::Critical));
    }

    #[test]
    fn an_int4_column_ends_first_even_when_the_sequence_is_bigint() {
        let c = evaluate(vec![sequence("integer", "bigint", 2_000_000_000)]);
        assert_eq!(c[0].severity, Some(Severity::Critical));
        assert_eq!(c[0].annotations["ends_first"], "column type");
        assert_eq!(c[0].annotations["limit"], i32::MAX.to_string());
        assert!(!c[0].annotations["fix"].contains("ALTER SEQUENCE"));
        // The same sequence on a bigint column has barely started: nothing holds.
        assert!(evaluate(vec![sequence("bigint", "bigint", 2_000_000_000)]).is_empty());
    }

    #[test]
    fn unreadable_and_healthy_sequences_do_not_alert() {
        let mut unreadable = sequence("integer", "integer", 2_000_000_000);
        (unreadable.readable, unreadable.last_value) = (false, None);
        unreadable.name = "public.secret_seq".into();
        let healthy = sequence("integer", "integer", 1000);
        assert!(evaluate(vec![unreadable, healthy]).is_empty());
    }

    #[test]
    fn a_database_not_read_keeps_its_alerts() {
        let rule = build(&toml::Table::new()).unwrap();
        let mut o = Observations::default();
        o.database_mut("app");
        assert!(matches!(
            rule.evaluate("main", &o),
            Evaluation::HoldsExcept { ref unknown, .. } if unknown.len() == 1
        ));
        assert!(build(&toml::from_str("ratio = 0.5").unwrap()).is_err());
    }
}
