//! ConnectionsNearLimit: client connections use most of the slots applications may use.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ConnectionsNearLimit",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(120),
    default_keep_firing_for: std::time::Duration::ZERO,
    fires_when: "client connections / (max_connections - reserved slots) reaches `warning_ratio`; severity critical from `critical_ratio`",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_warning")]
    warning_ratio: f64,
    #[serde(default = "default_critical")]
    critical_ratio: f64,
}

fn default_warning() -> f64 {
    0.8
}

fn default_critical() -> f64 {
    0.95
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    for (key, value) in [
        ("warning_ratio", p.warning_ratio),
        ("critical_ratio", p.critical_ratio),
    ] {
        if !(value > 0.0 && value <= 1.0) {
            return Err(format!(
                "{key} = {value} is out of range; write a fraction of the usable slots above 0 and at most 1, e.g. {key} = 0.8"
            ));
        }
    }
    if p.critical_ratio < p.warning_ratio {
        return Err(format!(
            "critical_ratio ({}) is below warning_ratio ({}); the critical threshold must be the higher one",
            p.critical_ratio, p.warning_ratio
        ));
    }
    Ok(Box::new(ConnectionsNearLimit {
        warning: p.warning_ratio,
        critical: p.critical_ratio,
    }))
}

#[derive(Debug)]
struct ConnectionsNearLimit {
    warning: f64,
    critical: f64,
}

impl Rule for ConnectionsNearLimit {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(activity) = &observations.activity else {
            return Evaluation::Unknown;
        };
        let usable = activity.max_connections - activity.reserved_connections;
        if usable <= 0 {
            return Evaluation::Unknown;
        }
        // pgvigil's own connection occupies a slot too.
        let used = activity.client_connections + 1;
        let ratio = used as f64 / usable as f64;
        if ratio < self.warning {
            return Evaluation::Holds(Vec::new());
        }
        let severity = if ratio >= self.critical {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let threshold = if severity == Severity::Critical {
            self.critical
        } else {
            self.warning
        };
        Evaluation::Holds(vec![
            Condition::new(
                format!(
                    "{target}: {used} of {usable} usable connection slots in use ({:.0}%)",
                    ratio * 100.0
                ),
                format!(
                    "Target {target} has {used} client connections; max_connections is {} with {} reserved, so {usable} are usable by applications. At {:.0}% (threshold {:.0}%) new connections will soon be refused with \"too many clients\".",
                    activity.max_connections,
                    activity.reserved_connections,
                    ratio * 100.0,
                    threshold * 100.0
                ),
            )
            .annotation("actual", used)
            .annotation("usable", usable)
            .annotation("max_connections", activity.max_connections)
            .annotation("reserved", activity.reserved_connections)
            .annotation("ratio", format!("{ratio:.3}"))
            .annotation("threshold", threshold)
            .severity(severity),
        ])
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("warning_ratio", self.warning.to_string()),
            ("critical_ratio", self.critical.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::activity::ActivityReport;

    fn obs(clients: i64) -> Observations {
        Observations {
            up: true,
            activity: Some(ActivityReport {
                max_connections: 103,
                reserved_connections: 3,
                client_connections: clients,
                ..ActivityReport::default()
            }),
            ..Observations::default()
        }
    }

    fn severities(rule: &dyn Rule, clients: i64) -> Vec<Option<Severity>> {
        match rule.evaluate("main", &obs(clients)) {
            Evaluation::Holds(c) => c.into_iter().map(|c| c.severity).collect(),
            other => panic!("known: {other:?}"),
        }
    }

    #[test]
    fn thresholds_are_fractions_of_usable_slots() {
        let rule = build(&toml::Table::new()).unwrap();
        // 100 usable; pgvigil itself counts.
        assert_eq!(severities(&*rule, 78), vec![]);
        assert_eq!(severities(&*rule, 79), vec![Some(Severity::Warning)]);
        assert_eq!(severities(&*rule, 94), vec![Some(Severity::Critical)]);
        let table: toml::Table =
            toml::from_str("warning_ratio = 0.5\ncritical_ratio = 0.6").unwrap();
        let rule = build(&table).unwrap();
        assert_eq!(severities(&*rule, 49), vec![Some(Severity::Warning)]);
        assert_eq!(severities(&*rule, 59), vec![Some(Severity::Critical)]);
    }

    #[test]
    fn unknown_without_activity() {
        let rule = build(&toml::Table::new()).unwrap();
        let down = Observations::default();
        assert_eq!(rule.evaluate("main", &down), Evaluation::Unknown);
    }

    #[test]
    fn bad_thresholds_are_explained() {
        for (text, needle) in [
            ("warning_ratio = -0.1", "out of range"),
            ("critical_ratio = 1.5", "out of range"),
            (
                "warning_ratio = 0.9\ncritical_ratio = 0.8",
                "below warning_ratio",
            ),
            ("warning_ratio = \"high\"", "invalid type"),
        ] {
            let table: toml::Table = toml::from_str(text).unwrap();
            let err = build(&table).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
