//! SettingsPendingRestart: settings were changed in the configuration files (or by `ALTER
//! SYSTEM`) and reloaded, but take effect only after a restart.

use std::time::Duration;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "SettingsPendingRestart",
    default_severity: Severity::Info,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "pg_settings shows settings with pending_restart (changed and reloaded, effective only after a restart); the annotation names them",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(SettingsPendingRestart))
}

#[derive(Debug)]
struct SettingsPendingRestart;

impl Rule for SettingsPendingRestart {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(server) = &observations.server else {
            return Evaluation::Unknown;
        };
        if server.pending_restart.is_empty() {
            return Evaluation::Holds(Vec::new());
        }
        let names: Vec<&str> = server.pending_restart.keys().map(String::as_str).collect();
        let running: Vec<String> = server
            .pending_restart
            .iter()
            .map(|(name, value)| format!("{name} (running with {value})"))
            .collect();
        Evaluation::Holds(vec![
            Condition::new(
                format!(
                    "{} setting(s) on {target} wait for a restart: {}",
                    names.len(),
                    names.join(", ")
                ),
                format!(
                    "These settings of target {target} were changed and reloaded but take effect only after a restart: {}. Until then the server runs with the old values.",
                    running.join(", ")
                ),
            )
            .annotation("settings", names.join(","))
            .annotation("count", names.len()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::super::postgres_restarted::tests::server;
    use super::*;

    #[test]
    fn names_the_settings() {
        let rule = build(&toml::Table::new()).unwrap();
        assert_eq!(
            rule.evaluate("main", &server(None)),
            Evaluation::Holds(vec![])
        );
        let mut pending = server(None);
        let report = pending.server.as_mut().unwrap();
        report
            .pending_restart
            .insert("shared_buffers".into(), "16384".into());
        report
            .pending_restart
            .insert("max_connections".into(), "100".into());
        let Evaluation::Holds(c) = rule.evaluate("main", &pending) else {
            panic!()
        };
        assert_eq!(
            c[0].annotations["settings"],
            "max_connections,shared_buffers"
        );
        assert!(c[0].annotations["description"].contains("shared_buffers (running with 16384)"));
    }
}
