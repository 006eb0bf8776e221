//! `MigrationFailed`: a migration tool's own table records a failed migration —
//! golang-migrate's `dirty`, Flyway's latest row of a version with `success = false`, sqlx's
//! `success = false`. One alert per failed migration, naming the tool, the table, the version,
//! what it was, when, and the tool's way out. Resolves when the table no longer records it
//! (`migrate force`, `flyway repair`, the row deleted).

use std::time::Duration;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::migrations::MigrationsReport;

/// The rule's registration.
pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "MigrationFailed",
    default_severity: Severity::Critical,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a migration tool's table records a failed migration: golang-migrate `dirty`, Flyway or sqlx `success = false` (the latest row of its version); names the tool, table, version, script and the tool's fix",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(MigrationFailed))
}

/// The rule.
#[derive(Debug)]
struct MigrationFailed;

impl Rule for MigrationFailed {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        Evaluation::per_database(
            observations,
            |d| d.migrations.as_ref(),
            |_, report| conditions(target, report),
        )
    }
}

/// One condition per failed migration of `report`.
fn conditions(target: &str, report: &MigrationsReport) -> Vec<Condition> {
    let mut out = Vec::new();
    for t in &report.tables {
        for f in &t.failed {
            let r = &f.record;
            let what = match (r.description.is_empty(), r.script.is_empty()) {
                (false, false) => format!(" ({}, {})", r.description, r.script),
                (false, true) => format!(" ({})", r.description),
                (true, false) => format!(" ({})", r.script),
                (true, true) => String::new(),
            };
            let when = match &r.installed_on {
                Some(at) => format!("applied at {at}"),
                None => format!("seen dirty by pgvigil since {}", f.seen_since),
            };
            out.push(
                Condition::new(
                    format!(
                        "{} migration {} failed in {} on {target}",
                        t.tool, r.version, report.datname
                    ),
                    format!(
                        "{} records migration {}{what} as failed in {} ({when}); later migrations will not run until it is resolved. Fix: {}",
                        t.tool, r.version, t.table, f.fix
                    ),
                )
                .label("datname", report.datname.clone())
                .label("tool", t.tool.as_str())
                .label("table", t.table.clone())
                .label("version", r.version.clone())
                .annotation("description_text", &r.description)
                .annotation("script", &r.script)
                .annotation("when", when)
                .annotation("fix", &f.fix),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::migrations::tools::Record;
    use crate::collect::migrations::{FailedMigration, MigrationTable};
    use crate::config::MigrationTool;

    fn observations(failed: Vec<FailedMigration>) -> Observations {
        let mut o = Observations::default();
        o.database_mut("app").migrations = Some(MigrationsReport {
            datname: "app".into(),
            tables: vec![MigrationTable {
                tool: MigrationTool::Flyway,
                table: "public.flyway_schema_history".into(),
                version: Some("1".into()),
                failed,
            }],
            ..MigrationsReport::default()
        });
        o
    }

    #[test]
    fn one_alert_per_failed_migration_with_its_fix() {
        let rule = build(&toml::Table::new()).unwrap();
        let failed = FailedMigration {
            record: Record {
                version: "2".into(),
                description: "add email".into(),
                script: "V2__add_email.sql".into(),
                installed_on: Some("2026-01-01 10:00:00".into()),
                success: false,
            },
            seen_since: "2026-01-01T10:00:05Z".into(),
            fix: "flyway repair".into(),
        };
        let Evaluation::Holds(c) = rule.evaluate("main", &observations(vec![failed])) else {
            panic!("holds");
        };
        assert_eq!(c.len(), 1);
        let labels: Vec<(&str, &str)> = c[0]
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(labels.contains(&("version", "2")) && labels.contains(&("tool", "flyway")));
        let description = &c[0].annotations["description"];
        assert!(
            description.contains("(add email, V2__add_email.sql)"),
            "{description}"
        );
        assert!(
            description.contains("applied at 2026-01-01 10:00:00"),
            "{description}"
        );
        let Evaluation::Holds(none) = rule.evaluate("main", &observations(vec![])) else {
            panic!("holds");
        };
        assert!(none.is_empty());
        assert!(matches!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        ));
        assert!(build(&toml::from_str("x = 1").unwrap()).is_err());
    }
}
