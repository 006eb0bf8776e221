//! SlowQuery: a statement's mean latency over the last interval is too high, absolutely or
//! against its own baseline.
//!
//! Two checks, each only for statements called at least `min_calls` times in the interval (a
//! single slow call is an outlier, not a slow query):
//!
//! * **threshold**: interval mean ≥ `mean_threshold`;
//! * **regression**: interval mean ≥ `regression_factor` × the statement's baseline *and* at
//!   least `min_increase` above it — the lookup that took 0.2 ms until its index was dropped.
//!   The minimum increase keeps microsecond statements from alerting on noise. The baseline is
//!   the collector's robust rolling one (see `collect::statements::baseline`); statements
//!   still warming up have none and are only checked against the threshold.
//!
//! Labels are `datname` and `queryid`; when several roles or nesting levels run the same
//! statement, the worst of them is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::RuleSpec;
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;
use crate::collect::statements::{StatementInterval, StatementsReport};

/// The rule's registry entry.
pub const SPEC: RuleSpec = RuleSpec {
    alertname: "SlowQuery",
    default_severity: Severity::Warning,
    default_for: Duration::from_secs(60),
    default_keep_firing_for: Duration::ZERO,
    fires_when: "a statement's mean latency over the last poll interval is at least `mean_threshold` (1s), or at least `regression_factor` (5) times its own baseline and `min_increase` (1ms) above it, with at least `min_calls` (10) calls",
    build,
};

/// `[alerts.rules.SlowQuery]` parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowQueryParams {
    /// Interval mean at or above which a statement is slow regardless of its history.
    #[serde(with = "humantime_serde")]
    pub mean_threshold: Duration,
    /// Calls in the interval a statement needs to be judged at all.
    pub min_calls: u64,
    /// How many times its baseline the interval mean must be to count as a regression.
    pub regression_factor: f64,
    /// How far above its baseline the interval mean must also be.
    #[serde(with = "humantime_serde")]
    pub min_increase: Duration,
}

impl Default for SlowQueryParams {
    fn default() -> Self {
        SlowQueryParams {
            mean_threshold: Duration::from_secs(1),
            min_calls: 10,
            regression_factor: 5.0,
            min_increase: Duration::from_millis(1),
        }
    }
}

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    let params: SlowQueryParams = super::params(table)?;
    if !(params.regression_factor > 1.0 && params.regression_factor.is_finite()) {
        return Err(format!(
            "regression_factor = {} must be greater than 1, e.g. 5.0 (alert when a statement gets five times slower)",
            params.regression_factor
        ));
    }
    if params.min_calls == 0 {
        return Err("min_calls = 0 would judge statements nobody ran; use at least 1".into());
    }
    if params.mean_threshold.is_zero() {
        return Err("mean_threshold = 0 makes every statement slow; use e.g. \"1s\"".into());
    }
    Ok(Box::new(SlowQuery { params }))
}

/// Why a statement is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Over the absolute threshold.
    Threshold,
    /// Regressed against its baseline.
    Regression,
}

/// A statement the rule finds slow.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowStatement<'a> {
    /// The statement's interval.
    pub statement: &'a StatementInterval,
    /// Why.
    pub reason: Reason,
}

/// The pure check: every slow statement of one poll, the worst per (datname, queryid).
pub fn slow_statements<'a>(
    params: &SlowQueryParams,
    report: &'a StatementsReport,
) -> Vec<SlowStatement<'a>> {
    let threshold = params.mean_threshold.as_secs_f64();
    let min_increase = params.min_increase.as_secs_f64();
    let mut worst: BTreeMap<(&str, i64), SlowStatement<'a>> = BTreeMap::new();
    for s in &report.statements {
        if s.calls < params.min_calls as f64 {
            continue;
        }
        let regressed = s.baseline_seconds.is_some_and(|b| {
            s.mean_seconds >= params.regression_factor * b && s.mean_seconds - b >= min_increase
        });
        let reason = if s.mean_seconds >= threshold {
            Reason::Threshold
        } else if regressed {
            Reason::Regression
        } else {
            continue;
        };
        let found = SlowStatement {
            statement: s,
            reason,
        };
        worst
            .entry((&s.datname, s.queryid))
            .and_modify(|w| {
                if s.mean_seconds > w.statement.mean_seconds {
                    *w = found.clone();
                }
            })
            .or_insert(found);
    }
    worst.into_values().collect()
}

/// The SlowQuery rule.
#[derive(Debug)]
pub struct SlowQuery {
    params: SlowQueryParams,
}

impl SlowQuery {
    /// The rule with `params`.
    pub fn new(params: SlowQueryParams) -> Self {
        SlowQuery { params }
    }
}

impl Rule for SlowQuery {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn describe_params(&self) -> Vec<(&'static str, String)> {
        let p = &self.params;
        vec![
            ("mean_threshold", super::toml_duration(p.mean_threshold)),
            ("min_calls", p.min_calls.to_string()),
            ("regression_factor", super::toml_float(p.regression_factor)),
            ("min_increase", super::toml_duration(p.min_increase)),
        ]
    }

    fn evaluate(&self, _target: &str, observations: &Observations) -> Evaluation {
        let Some(report) = &observations.statements else {
            return Evaluation::Unknown;
        };
        let conditions = slow_statements(&self.params, report)
            .into_iter()
            .map(|slow| condition(&slow))
            .collect();
        Evaluation::Holds(conditions)
    }
}

fn condition(slow: &SlowStatement<'_>) -> Condition {
    let s = slow.statement;
    let query = s.query.as_deref().unwrap_or("(text not fetched)");
    let baseline = s.baseline_seconds.map_or("none yet".to_owned(), seconds);
    let (reason, summary) = match slow.reason {
        Reason::Threshold => (
            "threshold",
            format!(
                "Statement {} in {} averages {} per call",
                s.queryid,
                s.datname,
                seconds(s.mean_seconds)
            ),
        ),
        Reason::Regression => (
            "regression",
            format!(
                "Statement {} in {} got {:.0}× slower: {} per call, normally {}",
                s.queryid,
                s.datname,
                s.mean_seconds / s.baseline_seconds.unwrap_or(s.mean_seconds),
                seconds(s.mean_seconds),
                baseline
            ),
        ),
    };
    let description = format!(
        "{} calls by {} in the last interval took {} on average (baseline {}). Query: {}",
        s.calls,
        s.usename,
        seconds(s.mean_seconds),
        baseline,
        query
    );
    let mut c = Condition::new(summary, description)
        .label("datname", s.datname.to_string())
        .label("queryid", s.queryid.to_string())
        .annotation("queryid", s.queryid)
        .annotation("datname", &s.datname)
        .annotation("usename", &s.usename)
        .annotation("query", query)
        .annotation("reason", reason)
        .annotation("mean_seconds", format!("{:.6}", s.mean_seconds))
        .annotation("calls", s.calls);
    if let Some(b) = s.baseline_seconds {
        c = c
            .annotation("baseline_seconds", format!("{b:.6}"))
            .annotation("ratio", format!("{:.1}", s.mean_seconds / b));
    }
    c
}

/// A duration in the unit people read latencies in.
fn seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.001 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn stmt(queryid: i64, calls: f64, mean: f64, baseline: Option<f64>) -> StatementInterval {
        StatementInterval {
            queryid,
            datname: Arc::from("app"),
            usename: Arc::from("web"),
            toplevel: true,
            calls,
            mean_seconds: mean,
            baseline_seconds: baseline,
            baseline_samples: 8,
            query: Some(Arc::from("SELECT v FROM t WHERE id = $1")),
        }
    }

    fn report(statements: Vec<StatementInterval>) -> StatementsReport {
        StatementsReport {
            interval_seconds: 15.0,
            statements,
            ..Default::default()
        }
    }

    #[test]
    fn regression_against_own_baseline() {
        let p = SlowQueryParams::default();
        let r = report(vec![
            // 0.2 ms → 8 ms: the dropped index.
            stmt(1, 500.0, 0.008, Some(0.0002)),
            // 10× slower but only +0.09 ms: noise, not a regression.
            stmt(2, 500.0, 0.0001, Some(0.00001)),
            // Slower, but only 2×.
            stmt(3, 500.0, 0.004, Some(0.002)),
            // Regressed, but too few calls to judge.
            stmt(4, 3.0, 0.008, Some(0.0002)),
            // No baseline yet.
            stmt(5, 500.0, 0.008, None),
        ]);
        let slow = slow_statements(&p, &r);
        assert_eq!(slow.len(), 1, "{slow:?}");
        assert_eq!(slow[0].statement.queryid, 1);
        assert_eq!(slow[0].reason, Reason::Regression);
    }

    #[test]
    fn absolute_threshold_needs_no_baseline() {
        let p = SlowQueryParams::default();
        let r = report(vec![stmt(7, 20.0, 1.5, None), stmt(8, 20.0, 0.9, None)]);
        let slow = slow_statements(&p, &r);
        assert_eq!(slow.len(), 1);
        assert_eq!(
            (slow[0].statement.queryid, slow[0].reason),
            (7, Reason::Threshold)
        );
    }

    #[test]
    fn one_condition_per_database_and_queryid_with_the_worst_numbers() {
        let mut other_user = stmt(1, 50.0, 0.02, Some(0.0002));
        other_user.usename = Arc::from("batch");
        let r = report(vec![stmt(1, 500.0, 0.008, Some(0.0002)), other_user]);
        let Evaluation::Holds(c) = SlowQuery::new(SlowQueryParams::default()).evaluate(
            "main",
            &Observations {
                up: true,
                statements: Some(r),
                ..Default::default()
            },
        ) else {
            panic!("expected conditions")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["queryid"], "1");
        assert_eq!(c[0].labels["datname"], "app");
        assert_eq!(c[0].annotations["usename"], "batch");
        assert_eq!(c[0].annotations["ratio"], "100.0");
        assert_eq!(c[0].annotations["query"], "SELECT v FROM t WHERE id = $1");
        assert!(
            c[0].annotations["summary"].contains("100× slower"),
            "{:?}",
            c[0].annotations
        );
    }

    #[test]
    fn unknown_without_statement_data() {
        let rule = SlowQuery::new(SlowQueryParams::default());
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
    }

    #[test]
    fn params_are_validated() {
        let table: toml::Table =
            toml::from_str("regression_factor = 3.0\nmin_increase = \"5ms\"").unwrap();
        assert!(build(&table).is_ok());
        let table: toml::Table = toml::from_str("regression_factor = 0.5").unwrap();
        assert!(build(&table).unwrap_err().contains("greater than 1"));
        let table: toml::Table = toml::from_str("min_call = 3").unwrap();
        assert!(build(&table).unwrap_err().contains("unknown field"));
    }
}
