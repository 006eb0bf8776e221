//! WraparoundRisk: a database's oldest unfrozen transaction ID (or multixact) is so old that
//! autovacuum cannot keep up (past `autovacuum_freeze_max_age`, where the anti-wraparound
//! vacuum should already have frozen it) or that it approaches 2^31, where PostgreSQL stops
//! assigning IDs and the database takes no more writes. The annotations name who holds the
//! xmin horizon back, because that is what stops vacuum from freezing.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, params, toml_float};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::wraparound::{WRAPAROUND_LIMIT, WraparoundReport};

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "WraparoundRisk",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a database's XID or multixact age passes `freeze_max_age_ratio` x autovacuum_(multixact_)freeze_max_age or `wraparound_ratio` x 2^31; critical from `critical_wraparound_ratio` x 2^31; names the xmin horizon's holder; one alert per database",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_freeze")]
    freeze_max_age_ratio: f64,
    #[serde(default = "default_warning")]
    wraparound_ratio: f64,
    #[serde(default = "default_critical")]
    critical_wraparound_ratio: f64,
}

/// pgMonitor's PGEmergencyVacuum: 110% of autovacuum_freeze_max_age.
fn default_freeze() -> f64 {
    1.1
}

/// pgMonitor's PGXIDWraparound: 50% of the way to wraparound warns ...
fn default_warning() -> f64 {
    0.5
}

/// ... and 75% is critical.
fn default_critical() -> f64 {
    0.75
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if !(p.freeze_max_age_ratio > 0.0 && p.freeze_max_age_ratio <= 10.0) {
        return Err(format!(
            "freeze_max_age_ratio = {} is out of range; write a multiple of autovacuum_freeze_max_age above 0 and at most 10, e.g. 1.1",
            p.freeze_max_age_ratio
        ));
    }
    for (key, value) in [
        ("wraparound_ratio", p.wraparound_ratio),
        ("critical_wraparound_ratio", p.critical_wraparound_ratio),
    ] {
        if !(value > 0.0 && value < 1.0) {
            return Err(format!(
                "{key} = {value} is out of range; write a fraction of 2^31 above 0 and below 1, e.g. {key} = 0.5"
            ));
        }
    }
    if p.critical_wraparound_ratio < p.wraparound_ratio {
        return Err(format!(
            "critical_wraparound_ratio ({}) is below wraparound_ratio ({}); the critical threshold must be the higher one",
            p.critical_wraparound_ratio, p.wraparound_ratio
        ));
    }
    Ok(Box::new(WraparoundRisk {
        freeze: p.freeze_max_age_ratio,
        warning: p.wraparound_ratio,
        critical: p.critical_wraparound_ratio,
    }))
}

#[derive(Debug)]
struct WraparoundRisk {
    freeze: f64,
    warning: f64,
    critical: f64,
}

impl WraparoundRisk {
    /// Whether an age of one kind (XID or multixact) crosses a threshold: the reason, and
    /// whether it is critical.
    fn crossed(&self, age: f64, freeze_max_age: f64, kind: &str) -> Option<(String, bool)> {
        let share = age / WRAPAROUND_LIMIT;
        if share >= self.critical {
            return Some((
                format!(
                    "{kind} age {age} is {:.1}% of the way to wraparound (2^31)",
                    100.0 * share
                ),
                true,
            ));
        }
        if share >= self.warning {
            return Some((
                format!(
                    "{kind} age {age} is {:.1}% of the way to wraparound (2^31)",
                    100.0 * share
                ),
                false,
            ));
        }
        if freeze_max_age > 0.0 && age >= self.freeze * freeze_max_age {
            return Some((
                format!(
                    "{kind} age {age} is {:.0}% of its autovacuum freeze_max_age ({freeze_max_age}): the anti-wraparound vacuum is not keeping up",
                    100.0 * age / freeze_max_age
                ),
                false,
            ));
        }
        None
    }

    fn conditions(&self, target: &str, report: &WraparoundReport) -> Vec<Condition> {
        let holder = report
            .horizon_holder()
            .map(|h| h.describe())
            .unwrap_or_else(|| "nothing holds the xmin horizon now: run VACUUM (FREEZE) on the database's oldest tables".to_owned());
        let holders: Vec<String> = report.holders.iter().map(|h| h.describe()).collect();
        let mut out = Vec::new();
        for (datname, age) in &report.databases {
            let xid = self.crossed(age.xid_age, report.freeze_max_age, "XID");
            let mxid = self.crossed(age.mxid_age, report.multixact_freeze_max_age, "multixact");
            let reasons: Vec<&(String, bool)> = xid.iter().chain(mxid.iter()).collect();
            if reasons.is_empty() {
                continue;
            }
            let critical = reasons.iter().any(|(_, c)| *c);
            let why: Vec<&str> = reasons.iter().map(|(r, _)| r.as_str()).collect();
            let mut c = Condition::new(
                format!(
                    "Database {datname} on {target} is at risk of wraparound: {}",
                    why.join("; ")
                ),
                format!(
                    "Database {datname} of target {target}: {}. Vacuum can only freeze rows older than the xmin horizon; {holder}. At 2^31 minus a few million the server refuses writes until the database is vacuumed.",
                    why.join("; ")
                ),
            )
            .label("datname", datname.clone())
            .annotation("xid_age", age.xid_age)
            .annotation("mxid_age", age.mxid_age)
            .annotation("autovacuum_freeze_max_age", report.freeze_max_age)
            .annotation(
                "wraparound_percent",
                format!("{:.2}", 100.0 * age.xid_age.max(age.mxid_age) / WRAPAROUND_LIMIT),
            )
            .annotation("horizon_holder", &holder)
            .annotation("horizon_holders", holders.join("; "));
            if let Some(h) = report.horizon_holder() {
                c = c
                    .annotation("horizon_holder_kind", &h.kind)
                    .annotation("horizon_holder_id", &h.id)
                    .annotation("horizon_holder_age", h.xid_age);
            }
            if critical {
                c = c.severity(Severity::Critical);
            }
            out.push(c);
        }
        out
    }
}

impl Rule for WraparoundRisk {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        match &observations.wraparound {
            None => Evaluation::Unknown,
            Some(report) => Evaluation::Holds(self.conditions(target, report)),
        }
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("freeze_max_age_ratio", toml_float(self.freeze)),
            ("wraparound_ratio", toml_float(self.warning)),
            ("critical_wraparound_ratio", toml_float(self.critical)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::wraparound::DatabaseAge;
    use crate::collect::wraparound::tests::holder;

    fn obs(xid_age: f64, mxid_age: f64) -> Observations {
        Observations {
            up: true,
            wraparound: Some(WraparoundReport {
                databases: [("shop".to_owned(), DatabaseAge { xid_age, mxid_age })].into(),
                freeze_max_age: 200e6,
                multixact_freeze_max_age: 400e6,
                holders: vec![holder("backend", "42", 250e6)],
            }),
            ..Observations::default()
        }
    }

    fn fired(o: &Observations) -> Vec<Condition> {
        let Evaluation::Holds(c) = build(&toml::Table::new()).unwrap().evaluate("main", o) else {
            panic!()
        };
        c
    }

    #[test]
    fn thresholds_against_freeze_max_age_and_two_to_the_31() {
        assert!(fired(&obs(150e6, 1e6)).is_empty());
        let past_freeze = fired(&obs(230e6, 1e6));
        assert_eq!(past_freeze.len(), 1);
        assert_eq!(past_freeze[0].severity, None);
        assert!(past_freeze[0].annotations["summary"].contains("not keeping up"));
        assert!(past_freeze[0].annotations["horizon_holder"].contains("pid 42"));
        assert_eq!(past_freeze[0].annotations["horizon_holder_kind"], "backend");
        let half = fired(&obs(1.2e9, 1e6));
        assert!(half[0].annotations["summary"].contains("55.9%"));
        assert_eq!(
            fired(&obs(1.7e9, 1e6))[0].severity,
            Some(Severity::Critical)
        );
        // Multixacts against their own limit.
        assert!(fired(&obs(1e6, 450e6))[0].annotations["summary"].contains("multixact"));
    }

    #[test]
    fn bad_ratios_are_rejected() {
        for text in [
            "freeze_max_age_ratio = 0.0",
            "wraparound_ratio = 1.5",
            "wraparound_ratio = 0.8\ncritical_wraparound_ratio = 0.6",
        ] {
            let table: toml::Table = toml::from_str(text).unwrap();
            assert!(build(&table).is_err(), "{text}");
        }
    }
}
