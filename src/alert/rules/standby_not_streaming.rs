//! StandbyNotStreaming: a standby does not stream WAL from its primary.
//!
//! On a primary, the replication collector lists the standbys connected now and those it saw
//! streaming before that are gone; this fires for each that is gone (until `forget_after`,
//! so a standby removed on purpose stops alerting), connected but not `streaming` (stuck in
//! `catchup` or `startup`), or named in `expected_standbys` and not connected at all (which
//! also covers a daemon restarted while the standby was down). On a standby watched as a
//! target, it fires while its WAL receiver is not streaming, unless the standby is meant to
//! read archived WAL only (`primary_conninfo` empty).

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, human_seconds, params, toml_duration};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::replication::ABSENT;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "StandbyNotStreaming",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(60),
    default_keep_firing_for: Duration::ZERO,
    fires_when: "on a primary, a standby seen streaming is gone (for up to `forget_after`) or not streaming, or one of `expected_standbys` (application_name) is not connected; on a standby, its WAL receiver is not streaming",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    expected_standbys: Vec<String>,
    #[serde(default = "default_forget_after", with = "humantime_serde")]
    forget_after: Duration,
}

fn default_forget_after() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.expected_standbys.iter().any(String::is_empty) {
        return Err("expected_standbys lists an empty name; write each standby's application_name (pg_stat_replication.application_name), e.g. expected_standbys = [\"replica1\"]".into());
    }
    Ok(Box::new(StandbyNotStreaming { p }))
}

#[derive(Debug)]
struct StandbyNotStreaming {
    p: Params,
}

impl Rule for StandbyNotStreaming {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        let names: Vec<String> = self
            .p
            .expected_standbys
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        vec![
            ("expected_standbys", format!("[{}]", names.join(", "))),
            ("forget_after", toml_duration(self.p.forget_after)),
        ]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(replication) = &observations.replication else {
            return Evaluation::Unknown;
        };
        let mut conditions = Vec::new();
        let forget = self.p.forget_after.as_secs_f64();
        for s in &replication.standbys {
            if s.streaming() || s.absent_seconds.is_some_and(|a| a > forget) {
                continue;
            }
            let (summary, why) = if s.state == ABSENT {
                let ago = human_seconds(s.absent_seconds.unwrap_or_default());
                (
                    format!("standby {} of {target} is gone", s.describe()),
                    format!("it was streaming {ago} ago and is no longer connected"),
                )
            } else {
                (
                    format!(
                        "standby {} of {target} is {}, not streaming",
                        s.describe(),
                        s.state
                    ),
                    format!("it is connected in state {}", s.state),
                )
            };
            conditions.push(
                Condition::new(
                    summary,
                    format!(
                        "Standby {} of target {target} does not stream WAL: {why}. It falls behind from now on; without a slot the primary may remove WAL it still needs, and a synchronous standby that is gone blocks commits.",
                        s.describe()
                    ),
                )
                .label("application_name", s.application_name.clone())
                .label("client_addr", s.client_addr.clone())
                .annotation("state", &s.state),
            );
        }
        if !replication.in_recovery {
            for name in &self.p.expected_standbys {
                if replication
                    .standbys
                    .iter()
                    .any(|s| &s.application_name == name)
                {
                    continue;
                }
                conditions.push(
                    Condition::new(
                        format!("expected standby {name} of {target} is not connected"),
                        format!(
                            "No WAL sender of target {target} serves application_name {name}, which expected_standbys lists: the standby is down, cannot reach the primary, or streams under another name."
                        ),
                    )
                    .label("application_name", name.clone())
                    .label("client_addr", "")
                    .annotation("state", ABSENT),
                );
            }
        }
        if let Some(side) = &replication.standby {
            if !side.streaming() && side.primary_conninfo_set != Some(false) {
                let age = side
                    .last_message_age_seconds
                    .map(|a| format!("; last message from the primary {} ago", human_seconds(a)))
                    .unwrap_or_default();
                conditions.push(
                    Condition::new(
                        format!("standby {target} is not streaming from its primary"),
                        format!(
                            "The WAL receiver of standby {target} is {}{age}: it replays only WAL it already has or finds in the archive, and falls behind.",
                            side.receiver_status
                        ),
                    )
                    .annotation("wal_receiver_status", &side.receiver_status)
                    .annotation("sender_host", &side.sender_host),
                );
            }
        }
        Evaluation::Holds(conditions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::replication::{ReplicationReport, Standby, StandbySide};

    fn standby(name: &str, state: &str, absent: Option<f64>) -> Standby {
        Standby {
            application_name: name.into(),
            state: state.into(),
            absent_seconds: absent,
            ..Standby::default()
        }
    }

    fn holds(rule: &dyn Rule, report: ReplicationReport) -> Vec<Condition> {
        let o = Observations {
            up: true,
            replication: Some(report),
            ..Observations::default()
        };
        match rule.evaluate("main", &o) {
            Evaluation::Holds(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gone_stuck_and_expected_standbys_on_a_primary() {
        let table: toml::Table =
            toml::from_str("expected_standbys = [\"s1\", \"never\"]\nforget_after = \"1h\"")
                .unwrap();
        let rule = build(&table).unwrap();
        let c = holds(
            &*rule,
            ReplicationReport {
                standbys: vec![
                    standby("s1", "streaming", None),
                    standby("gone", ABSENT, Some(120.0)),
                    standby("long_gone", ABSENT, Some(7_200.0)),
                    standby("stuck", "catchup", None),
                ],
                ..ReplicationReport::default()
            },
        );
        let names: Vec<&str> = c
            .iter()
            .map(|c| c.labels["application_name"].as_str())
            .collect();
        assert_eq!(names, ["gone", "stuck", "never"]);
        assert!(
            c[0].annotations["description"].contains("2m ago"),
            "{:?}",
            c[0]
        );
    }

    #[test]
    fn a_standby_whose_receiver_is_down_unless_it_reads_the_archive_only() {
        let rule = build(&toml::Table::new()).unwrap();
        let side = StandbySide {
            receiver_status: "none".into(),
            primary_conninfo_set: Some(true),
            ..StandbySide::default()
        };
        let report = ReplicationReport {
            in_recovery: true,
            standby: Some(side.clone()),
            ..ReplicationReport::default()
        };
        assert_eq!(holds(&*rule, report.clone()).len(), 1);
        let archive_only = ReplicationReport {
            standby: Some(StandbySide {
                primary_conninfo_set: Some(false),
                ..side.clone()
            }),
            ..report.clone()
        };
        assert!(holds(&*rule, archive_only).is_empty());
        let streaming = ReplicationReport {
            standby: Some(StandbySide {
                receiver_status: "streaming".into(),
                ..side
            }),
            ..report
        };
        assert!(holds(&*rule, streaming).is_empty());
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
        let bad: toml::Table = toml::from_str("expected_standbys = [\"\"]").unwrap();
        assert!(build(&bad).is_err());
    }
}
