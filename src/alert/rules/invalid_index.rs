//! `InvalidIndex`: an index is INVALID (`pg_index.indisvalid = false`) and no CREATE INDEX or
//! REINDEX of its table is running — the leftover of a failed `CREATE INDEX CONCURRENTLY`
//! (a duplicate value for a unique index, a deadlock, a cancel). No query uses it, every write
//! still maintains it, and a unique one still rejects duplicates. One alert per index, with
//! the `REINDEX INDEX CONCURRENTLY` / `DROP INDEX CONCURRENTLY` fix.

use std::time::Duration;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "InvalidIndex",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "an index is INVALID (pg_index.indisvalid = false) and no CREATE INDEX or REINDEX of its table is running: a failed CREATE INDEX CONCURRENTLY; one alert per index (the first `max_objects` of a database)",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(InvalidIndex))
}

/// The rule.
#[derive(Debug)]
struct InvalidIndex;

impl Rule for InvalidIndex {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        Evaluation::per_database(
            observations,
            |d| d.migrations.as_ref(),
            |_, report| {
                report
                    .invalid_indexes
                    .iter()
                    .map(|i| {
                        let finding = i.finding(&report.datname);
                        Condition::new(
                            format!(
                                "index {} on {} is INVALID in {} on {target}",
                                i.index, i.table, report.datname
                            ),
                            finding.message,
                        )
                        .label("datname", report.datname.clone())
                        .label("index", i.index.clone())
                        .annotation("table", &i.table)
                        .annotation("size_bytes", i.size_bytes)
                        .annotation("unique", i.unique)
                        .annotation("fix", i.fix())
                    })
                    .collect()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::migrations::MigrationsReport;
    use crate::collect::migrations::leftovers::InvalidIndex as Index;

    #[test]
    fn one_alert_per_invalid_index() {
        let rule = build(&toml::Table::new()).unwrap();
        let mut o = Observations::default();
        o.database_mut("app").migrations = Some(MigrationsReport {
            datname: "app".into(),
            invalid_indexes: vec![Index {
                index: "contacts_email_key".into(),
                table: "contacts".into(),
                size_bytes: 16384,
                unique: true,
                partitioned: false,
            }],
            invalid_indexes_total: 1,
            ..MigrationsReport::default()
        });
        let Evaluation::Holds(c) = rule.evaluate("main", &o) else {
            panic!("holds");
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["index"], "contacts_email_key");
        assert!(c[0].annotations["fix"].contains("DROP INDEX CONCURRENTLY contacts_email_key;"));
        o.database_mut("app").migrations = Some(MigrationsReport::default());
        let Evaluation::Holds(none) = rule.evaluate("main", &o) else {
            panic!("holds");
        };
        assert!(none.is_empty());
    }
}
