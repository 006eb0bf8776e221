//! ReplicationSlotInactive: a replication slot has no consumer. An inactive slot keeps WAL
//! (and, with an xmin, dead rows) for a consumer that is not reading; left alone it fills the
//! disk. One alert per slot; `for` (5 minutes by default) rides out a consumer's reconnect.

use std::time::Duration;

use super::replication_lag_high::human_bytes;
use super::{RuleSpec, human_seconds};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ReplicationSlotInactive",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(300),
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a replication slot has no consumer connected (temporary slots excepted); one alert per slot",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(ReplicationSlotInactive))
}

#[derive(Debug)]
struct ReplicationSlotInactive;

impl Rule for ReplicationSlotInactive {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(slots) = &observations.slots else {
            return Evaluation::Unknown;
        };
        let conditions = slots
            .slots
            .iter()
            .filter(|s| !s.active && !s.temporary)
            .map(|s| {
                let since = s
                    .inactive_seconds
                    .map(|a| format!(" for {}", human_seconds(a)))
                    .unwrap_or_default();
                let retained = s
                    .retained_bytes
                    .map(|b| format!(" It keeps {} of WAL.", human_bytes(b)))
                    .unwrap_or_default();
                let mut c = Condition::new(
                    format!("replication slot {} of {target} is inactive{since}", s.slot_name),
                    format!(
                        "No consumer reads {} slot {} of target {target}{since}; the server keeps every WAL file from its restart_lsn on{} until a consumer returns or the slot is dropped.{retained}",
                        s.slot_type,
                        s.slot_name,
                        if s.xmin_age.is_some() || s.catalog_xmin_age.is_some() {
                            ", and vacuum keeps the dead rows its xmin protects,"
                        } else {
                            ""
                        }
                    ),
                )
                .label("slot_name", s.slot_name.clone())
                .annotation("slot_type", &s.slot_type)
                .annotation("datname", &s.datname)
                .annotation("sql", format!("SELECT pg_drop_replication_slot('{}');", s.slot_name.replace('\'', "''")));
                if let Some(b) = s.retained_bytes {
                    c = c.annotation("retained_bytes", b.round());
                }
                if let Some(a) = s.inactive_seconds {
                    c = c.annotation("inactive_seconds", a.round());
                }
                c
            })
            .collect();
        Evaluation::Holds(conditions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::slots::{Slot, SlotsReport};

    #[test]
    fn inactive_permanent_slots_only() {
        let rule = build(&toml::Table::new()).unwrap();
        let slot = |name: &str, active: bool, temporary: bool| Slot {
            slot_name: name.into(),
            slot_type: "physical".into(),
            active,
            temporary,
            retained_bytes: Some(2048.0),
            inactive_seconds: Some(90.0),
            ..Slot::default()
        };
        let o = Observations {
            up: true,
            slots: Some(SlotsReport {
                slots: vec![
                    slot("idle", false, false),
                    slot("used", true, false),
                    slot("tmp", false, true),
                ],
            }),
            ..Observations::default()
        };
        let Evaluation::Holds(c) = rule.evaluate("main", &o) else {
            panic!("known")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["slot_name"], "idle");
        assert!(
            c[0].annotations["summary"].ends_with("inactive for 1m 30s"),
            "{:?}",
            c[0]
        );
        assert_eq!(c[0].annotations["retained_bytes"], "2048");
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
    }
}
