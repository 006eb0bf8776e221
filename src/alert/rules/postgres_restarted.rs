//! PostgresRestarted: the postmaster's start time changed between two polls — the server
//! restarted (or crashed and recovered).

use std::time::{Duration, SystemTime};

use super::{RuleSpec, human_seconds};
use crate::alert::{Condition, Evaluation, Rule, Severity};
use crate::collect::Observations;

pub(super) const SPEC: RuleSpec = RuleSpec {
    alertname: "PostgresRestarted",
    default_severity: Severity::Warning,
    default_for: Duration::ZERO,
    default_keep_firing_for: Duration::from_secs(15 * 60),
    fires_when: "the postmaster start time changed between two polls (a restart or crash recovery): holds for 5 minutes after the new start, then stays firing for `keep_firing_for`",
    build,
};

fn build(table: &toml::Table) -> Result<Box<dyn Rule>, String> {
    super::no_params(table)?;
    Ok(Box::new(PostgresRestarted))
}

/// A Unix time as RFC 3339, for annotations.
pub(super) fn rfc3339(unix_seconds: f64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(unix_seconds.max(0.0));
    humantime::format_rfc3339_millis(at).to_string()
}

#[derive(Debug)]
struct PostgresRestarted;

impl Rule for PostgresRestarted {
    fn alertname(&self) -> &'static str {
        SPEC.alertname
    }

    fn evaluate(&self, target: &str, observations: &Observations) -> Evaluation {
        let Some(server) = &observations.server else {
            return Evaluation::Unknown;
        };
        let Some(restart) = server.restart else {
            return Evaluation::Holds(Vec::new());
        };
        let uptime = server.status.now - restart.start_time;
        Evaluation::Holds(vec![
            Condition::new(
                format!("PostgreSQL on {target} restarted {} ago", human_seconds(uptime)),
                format!(
                    "The postmaster of target {target} started at {} (it had been up since {}). A restart empties shared buffers and resets the statistics that are not persisted; if nobody planned it, the server log says whether it crashed.",
                    rfc3339(restart.start_time),
                    rfc3339(restart.previous_start_time)
                ),
            )
            .annotation("started_at", rfc3339(restart.start_time))
            .annotation("previous_started_at", rfc3339(restart.previous_start_time))
            .annotation("uptime_seconds", uptime.max(0.0).round()),
        ])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::collect::server::{Restart, ServerReport, Status};

    pub(crate) fn server(restart: Option<Restart>) -> Observations {
        Observations {
            up: true,
            server: Some(ServerReport {
                status: Status {
                    in_recovery: false,
                    start_time: 2000.0,
                    config_load_time: 2000.0,
                    now: 2060.0,
                    timeline: Some(1.0),
                },
                restart,
                role_changed_from: None,
                pending_restart: Default::default(),
                settings: Default::default(),
            }),
            ..Observations::default()
        }
    }

    #[test]
    fn fires_on_the_poll_that_sees_a_new_start_time() {
        let rule = build(&toml::Table::new()).unwrap();
        assert_eq!(
            rule.evaluate("main", &server(None)),
            Evaluation::Holds(vec![])
        );
        let restarted = server(Some(Restart {
            previous_start_time: 1000.0,
            start_time: 2000.0,
        }));
        let Evaluation::Holds(c) = rule.evaluate("main", &restarted) else {
            panic!()
        };
        assert_eq!(c[0].annotations["started_at"], "1970-01-01T00:33:20.000Z");
        assert_eq!(c[0].annotations["uptime_seconds"], "60");
        assert_eq!(
            rule.evaluate("main", &Observations::default()),
            Evaluation::Unknown
        );
    }
}
