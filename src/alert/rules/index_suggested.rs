//! `IndexSuggested`: a top statement filters, joins or sorts a large, sequentially scanned
//! table by columns no valid index starts with (the advice collector's suggestions). An info
//! alert: on the status page and in the API, but not sent to the receivers unless
//! `notify = true` (see [`super::QUIET_BY_DEFAULT`]).

use std::time::Duration;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "IndexSuggested",
    default_severity: Severity::Info,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "the advice collector suggests an index: a top statement filters, joins or sorts a table of at least `[targets.advice] min_table_rows` rows, sequentially scanned at least `min_seq_scans` times, by columns no valid index starts with; not notified unless `notify = true`",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(IndexSuggested))
}

#[derive(Debug)]
struct IndexSuggested;

impl Rule for IndexSuggested {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        Evaluation::per_database(
            observations,
            |d| d.advice.as_ref(),
            |_, report| {
                report
                    .suggestions
                    .iter()
                    .map(|s| {
                        Condition::new(
                            format!(
                                "{} on {target} ({}) misses an index on ({})",
                                s.table,
                                report.datname,
                                s.columns.join(", ")
                            ),
                            s.message(),
                        )
                        .label("datname", report.datname.clone())
                        .label("table", s.table.clone())
                        .label("columns", s.columns_label())
                        .annotation("queryid", s.queryid)
                        .annotation("seq_scans", s.seq_scans)
                        .annotation("seq_rows", s.seq_rows)
                        .annotation("sql", s.sql())
                    })
                    .collect()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::advice::AdviceReport;
    use crate::collect::advice::suggest::{Suggestion, Window};

    fn observations(suggestions: Vec<Suggestion>) -> Observations {
        let mut o = Observations {
            up: true,
            ..Observations::default()
        };
        o.database_mut("app").advice = Some(AdviceReport {
            datname: "app".into(),
            suggestions,
            ..AdviceReport::default()
        });
        o
    }

    #[test]
    fn one_alert_per_suggestion_and_none_without() {
        let s = Suggestion {
            table: "public.contacts".into(),
            columns: vec!["email".into()],
            verb: "filters",
            queryid: 42,
            other_statements: 0,
            total_ms: 1.0,
            seq_scans: 500,
            seq_rows: 5_000_000,
            table_rows: 10_000.0,
            window: Window::Seconds(300.0),
        };
        let rule = build(&toml::Table::new()).unwrap();
        match rule.evaluate("db1", &observations(vec![s])) {
            Evaluation::Holds(conditions) => {
                assert_eq!(conditions.len(), 1);
                let c = &conditions[0];
                assert!(
                    c.annotations["description"]
                        .contains("CREATE INDEX CONCURRENTLY ON public.contacts (email)")
                );
                assert_eq!(c.labels["columns"], "email");
                assert_eq!(c.labels["table"], "public.contacts");
            }
            other => panic!("{other:?}"),
        }
        match rule.evaluate("db1", &observations(Vec::new())) {
            Evaluation::Holds(conditions) => assert!(conditions.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rule.evaluate(
                "db1",
                &Observations {
                    up: true,
                    ..Observations::default()
                }
            ),
            Evaluation::Unknown
        ));
    }
}
