//! ReplicationLagHigh: a standby is too far behind, in bytes of WAL or in seconds.
//!
//! Seen from both sides: on a primary, one alert per standby (by `application_name` and
//! `client_addr`) from `pg_stat_replication`'s replay position and `replay_lag`; on a standby
//! watched as a target, one alert for the standby itself from its own estimate (the
//! replication collector's lag method: 0 on an idle primary, growing while replay is stuck).
//! Severity critical from the critical thresholds.

use std::time::Duration;

use serde::Deserialize;

use super::{RuleSpec, human_seconds, params, toml_duration};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "ReplicationLagHigh",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(60),
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a standby's replay is at least `max_lag_bytes` of WAL or `max_lag` behind (seen on the primary per standby, and on a standby watched itself); critical from `critical_lag_bytes` or `critical_lag`",
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_max_bytes")]
    max_lag_bytes: i64,
    #[serde(default = "default_critical_bytes")]
    critical_lag_bytes: i64,
    #[serde(default = "default_max_lag", with = "humantime_serde")]
    max_lag: Duration,
    #[serde(default = "default_critical_lag", with = "humantime_serde")]
    critical_lag: Duration,
}

/// pgMonitor's PGReplicationByteLag thresholds: 50 MiB, 100 MiB.
fn default_max_bytes() -> i64 {
    50 * 1024 * 1024
}

fn default_critical_bytes() -> i64 {
    100 * 1024 * 1024
}

fn default_max_lag() -> Duration {
    Duration::from_secs(300)
}

fn default_critical_lag() -> Duration {
    Duration::from_secs(900)
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let p: Params = params(table)?;
    if p.max_lag_bytes <= 0 || p.critical_lag_bytes < p.max_lag_bytes {
        return Err(format!(
            "max_lag_bytes ({}) must be above 0 and critical_lag_bytes ({}) at least as high, e.g. max_lag_bytes = 52428800 (50 MiB)",
            p.max_lag_bytes, p.critical_lag_bytes
        ));
    }
    if p.max_lag.is_zero() || p.critical_lag < p.max_lag {
        return Err(format!(
            "max_lag ({}) must be above 0 and critical_lag ({}) at least as long, e.g. max_lag = \"5m\"",
            humantime::format_duration(p.max_lag),
            humantime::format_duration(p.critical_lag)
        ));
    }
    Ok(Box::new(ReplicationLagHigh { p }))
}

#[derive(Debug)]
struct ReplicationLagHigh {
    p: Params,
}

impl Rule for ReplicationLagHigh {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("max_lag_bytes", self.p.max_lag_bytes.to_string()),
            ("critical_lag_bytes", self.p.critical_lag_bytes.to_string()),
            ("max_lag", toml_duration(self.p.max_lag)),
            ("critical_lag", toml_duration(self.p.critical_lag)),
        ]
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(replication) = &observations.replication else {
            return Evaluation::Unknown;
        };
        let mut conditions = Vec::new();
        for s in replication
            .standbys
            .iter()
            .filter(|s| s.state != crate::collect::replication::ABSENT)
        {
            let (bytes, seconds) = (s.lag_bytes.replay, s.lag_seconds.replay);
            if let Some(c) = self.judge(bytes, seconds) {
                conditions.push(
                    c.describe(target, &format!("standby {}", s.describe()), "replayed on")
                        .label("application_name", s.application_name.clone())
                        .label("client_addr", s.client_addr.clone())
                        .annotation("state", &s.state)
                        .annotation("sync_state", &s.sync_state),
                );
            }
        }
        if let Some(side) = &replication.standby {
            if let Some(c) = self.judge(side.replay_lag_bytes, side.replay_lag_seconds) {
                conditions.push(
                    c.describe(target, "this standby", "replayed here from")
                        .annotation("replay_paused", side.replay_paused)
                        .annotation("wal_receiver_status", &side.receiver_status),
                );
            }
        }
        Evaluation::Holds(conditions)
    }
}

/// What exceeded which threshold.
struct Verdict {
    bytes: Option<f64>,
    seconds: Option<f64>,
    critical: bool,
    limits: String,
}

impl ReplicationLagHigh {
    fn judge(&self, bytes: Option<f64>, seconds: Option<f64>) -> Option<Verdict> {
        let over = |v: Option<f64>, limit: f64| v.is_some_and(|v| v >= limit);
        let p = &self.p;
        let warning = over(bytes, p.max_lag_bytes as f64) || over(seconds, p.max_lag.as_secs_f64());
        if !warning {
            return None;
        }
        let critical =
            over(bytes, p.critical_lag_bytes as f64) || over(seconds, p.critical_lag.as_secs_f64());
        let limits = if critical {
            format!(
                "{} or {}",
                human_bytes(p.critical_lag_bytes as f64),
                humantime::format_duration(p.critical_lag)
            )
        } else {
            format!(
                "{} or {}",
                human_bytes(p.max_lag_bytes as f64),
                humantime::format_duration(p.max_lag)
            )
        };
        Some(Verdict {
            bytes,
            seconds,
            critical,
            limits,
        })
    }
}

impl Verdict {
    fn describe(self, target: &str, who: &str, verb: &str) -> Condition {
        let amount = match (self.bytes, self.seconds) {
            (Some(b), Some(s)) => format!("{} of WAL, {}", human_bytes(b), human_seconds(s)),
            (Some(b), None) => format!("{} of WAL", human_bytes(b)),
            (None, Some(s)) => human_seconds(s),
            (None, None) => "an unknown amount".to_owned(),
        };
        let mut c = Condition::new(
            format!("{who} of {target} is {amount} behind"),
            format!(
                "WAL written on the primary is {verb} {who} of target {target} {amount} late (limit {}). Reads from it return data that old; if it is a synchronous standby, commits wait for it; the primary keeps the WAL it still needs only if a slot or wal_keep_size holds it.",
                self.limits
            ),
        );
        if let Some(b) = self.bytes {
            c = c.annotation("lag_bytes", b.round());
        }
        if let Some(s) = self.seconds {
            c = c.annotation("lag_seconds", s.round());
        }
        if self.critical {
            c = c.severity(Severity::Critical);
        }
        c
    }
}

/// Bytes for an annotation: `52.4 MiB`.
pub(super) fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::replication::{ReplicationReport, Stages, Standby, StandbySide};

    fn standby(bytes: f64, seconds: f64) -> Standby {
        Standby {
            application_name: "replica1".into(),
            client_addr: "10.0.0.2".into(),
            state: "streaming".into(),
            sync_state: "async".into(),
            lag_bytes: Stages {
                replay: Some(bytes),
                ..Stages::default()
            },
            lag_seconds: Stages {
                replay: Some(seconds),
                ..Stages::default()
            },
            absent_seconds: None,
        }
    }

    fn obs(report: ReplicationReport) -> Observations {
        Observations {
            up: true,
            replication: Some(report),
            ..Observations::default()
        }
    }

    fn holds(rule: &dyn Rule, o: &Observations) -> Vec<Condition> {
        match rule.evaluate("main", o) {
            Evaluation::Holds(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn per_standby_by_bytes_or_seconds_critical_above_the_critical_thresholds() {
        let rule = build(&toml::Table::new()).unwrap();
        let o = obs(ReplicationReport {
            standbys: vec![
                standby(1024.0, 1.0),
                Standby {
                    application_name: "bytes".into(),
                    ..standby(60.0 * 1024.0 * 1024.0, 0.0)
                },
                Standby {
                    application_name: "slow".into(),
                    ..standby(0.0, 1_000.0)
                },
            ],
            ..ReplicationReport::default()
        });
        let c = holds(&*rule, &o);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].labels["application_name"], "bytes");
        assert_eq!(c[0].severity, None);
        assert_eq!(c[0].annotations["lag_bytes"], "62914560");
        assert!(
            c[0].annotations["summary"].contains("60.0 MiB"),
            "{:?}",
            c[0].annotations
        );
        assert_eq!(c[1].labels["application_name"], "slow");
        assert_eq!(c[1].severity, Some(Severity::Critical));
    }

    #[test]
    fn the_standby_itself_and_unknown_without_a_report() {
        let table: toml::Table = toml::from_str("max_lag = \"10s\"").unwrap();
        let rule = build(&table).unwrap();
        let o = obs(ReplicationReport {
            in_recovery: true,
            standby: Some(StandbySide {
                replay_lag_seconds: Some(12.0),
                replay_lag_bytes: Some(100.0),
                replay_paused: true,
                ..StandbySide::default()
            }),
            ..ReplicationReport::default()
        });
        let c = holds(&*rule, &o);
        assert_eq!(c.len(), 1);
        assert!(c[0].labels.is_empty());
        assert_eq!(c[0].annotations["replay_paused"], "true");
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
    }

    #[test]
    fn thresholds_are_checked() {
        let bad: toml::Table = toml::from_str("max_lag_bytes = 0").unwrap();
        assert!(build(&bad).unwrap_err().contains("max_lag_bytes"));
        let bad: toml::Table = toml::from_str("critical_lag = \"1s\"").unwrap();
        assert!(build(&bad).unwrap_err().contains("critical_lag"));
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(10.0), "10 B");
    }
}
