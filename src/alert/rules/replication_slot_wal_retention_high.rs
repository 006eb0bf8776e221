//! ReplicationSlotWalRetentionHigh: a replication slot keeps too much WAL, or is about to
//! lose it.
//!
//! Warning when a slot retains at least `max_retained_bytes`; critical when it is close to
//! `lost`: its `wal_status` is `unreserved` (its WAL goes at the next checkpoint) or `lost`
//! (it went; the consumer must be rebuilt), or its `safe_wal_size` (known when
//! `max_slot_wal_keep_size` is set) is below `critical_safe_wal_size_bytes`.

use std::time::Duration;

use serde::Deserialize;

use super::replication_lag_high::human_bytes;
use super::{RuleSpec, params};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::slots::Slot;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ReplicationSlotWalRetentionHigh",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(300),
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a replication slot retains at least `max_retained_bytes` of WAL; critical when it is close to lost: wal_status unreserved or lost, or safe_wal_size below `critical_safe_wal_size_bytes`",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_max_retained")]
    max_retained_bytes: i64,
    #[serde(default = "default_critical_safe")]
    critical_safe_wal_size_bytes: i64,
}

fn default_max_retained() -> i64 {
    1024 * 1024 * 1024
}

fn default_critical_safe() -> i64 {
    256 * 1024 * 1024
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.max_retained_bytes <= 0 || p.critical_safe_wal_size_bytes < 0 {
        return Err(format!(
            "max_retained_bytes ({}) must be above 0 and critical_safe_wal_size_bytes ({}) not negative, e.g. max_retained_bytes = 1073741824 (1 GiB)",
            p.max_retained_bytes, p.critical_safe_wal_size_bytes
        ));
    }
    Ok(Box::new(ReplicationSlotWalRetentionHigh { p }))
}

#[derive(Debug)]
struct ReplicationSlotWalRetentionHigh {
    p: Params,
}

impl ReplicationSlotWalRetentionHigh {
    /// Why the slot is critical, if it is.
    fn close_to_lost(&self, s: &Slot) -> Option<String> {
        if s.losing_wal() {
            let status = s.wal_status.as_deref().unwrap_or_default();
            return Some(if status == "lost" {
                "its wal_status is lost: WAL it needs was removed, its consumer must be rebuilt"
                    .to_owned()
            } else {
                "its wal_status is unreserved: it exceeds max_slot_wal_keep_size and its WAL is removed at the next checkpoint".to_owned()
            });
        }
        s.safe_wal_size
            .filter(|safe| *safe < self.p.critical_safe_wal_size_bytes as f64)
            .map(|safe| {
                format!(
                    "only {} of WAL can still be written before it exceeds max_slot_wal_keep_size",
                    human_bytes(safe)
                )
            })
    }
}

impl Rule for ReplicationSlotWalRetentionHigh {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("max_retained_bytes", self.p.max_retained_bytes.to_string()),
            (
                "critical_safe_wal_size_bytes",
                self.p.critical_safe_wal_size_bytes.to_string(),
            ),
        ]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(slots) = &observations.slots else {
            return Evaluation::Unknown;
        };
        let mut conditions = Vec::new();
        for s in &slots.slots {
            let critical = self.close_to_lost(s);
            let retained = s.retained_bytes.unwrap_or_default();
            if critical.is_none() && retained < self.p.max_retained_bytes as f64 {
                continue;
            }
            let why = critical.clone().unwrap_or_else(|| {
                format!(
                    "the limit is {}",
                    human_bytes(self.p.max_retained_bytes as f64)
                )
            });
            let mut c = Condition::new(
                format!(
                    "replication slot {} of {target} retains {} of WAL",
                    s.slot_name,
                    human_bytes(retained)
                ),
                format!(
                    "{} slot {} of target {target} ({}) keeps {} of WAL in pg_wal: {why}. Make its consumer catch up, or drop the slot if it has none.",
                    s.slot_type,
                    s.slot_name,
                    if s.active { "active" } else { "inactive" },
                    human_bytes(retained)
                ),
            )
            .label("slot_name", s.slot_name.clone())
            .annotation("retained_bytes", retained.round())
            .annotation("wal_status", s.wal_status.as_deref().unwrap_or("none"))
            .annotation("active", s.active);
            if let Some(safe) = s.safe_wal_size {
                c = c.annotation("safe_wal_size_bytes", safe.round());
            }
            if critical.is_some() {
                c = c.severity(Severity::Critical);
            }
            conditions.push(c);
        }
        Evaluation::Holds(conditions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::slots::SlotsReport;

    fn slot(name: &str, retained: f64, status: &str, safe: Option<f64>) -> Slot {
        Slot {
            slot_name: name.into(),
            slot_type: "physical".into(),
            retained_bytes: Some(retained),
            wal_status: Some(status.into()),
            safe_wal_size: safe,
            ..Slot::default()
        }
    }

    #[test]
    fn warning_by_size_critical_close_to_lost() {
        let table: toml::Table = toml::from_str("max_retained_bytes = 1000").unwrap();
        let rule = build(&table).unwrap();
        let o = Observations {
            up: true,
            slots: Some(SlotsReport {
                slots: vec![
                    slot("small", 10.0, "reserved", None),
                    slot("big", 5_000.0, "extended", None),
                    slot("going", 10.0, "unreserved", None),
                    slot("tight", 10.0, "reserved", Some(1024.0)),
                ],
            }),
            ..Observations::default()
        };
        let Evaluation::Holds(c) = rule.evaluate("main", &o) else {
            panic!("known")
        };
        let got: Vec<(&str, Option<Severity>)> = c
            .iter()
            .map(|c| (c.labels["slot_name"].as_str(), c.severity))
            .collect();
        assert_eq!(
            got,
            [
                ("big", None),
                ("going", Some(Severity::Critical)),
                ("tight", Some(Severity::Critical))
            ]
        );
        assert!(c[1].annotations["description"].contains("unreserved"));
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
        let bad: toml::Table = toml::from_str("max_retained_bytes = -1").unwrap();
        assert!(build(&bad).is_err());
    }
}
