//! One task per target: hold its single monitoring connection, poll its collectors on schedule,
//! publish what they found, and reconnect with capped exponential backoff when the database
//! goes away — which is normal, not fatal.
//!
//! Polls run one after another in this task, so they can never overlap: if a poll overruns the
//! interval, the next one starts when it ends rather than queueing up behind it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Shared;
use crate::collect::{
    self, CollectError, Collector, Observations, PollContext, ServerInfo, describe_pg_error,
};
use crate::config::TargetConfig;
use crate::status::{CollectorStatus, TargetState, now_rfc3339};

/// First reconnect delay; doubled on every failure up to `reconnect_max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// A target that stays down is reported at warn level at most this often.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// Run a target until `shutdown` is cancelled.
pub(crate) async fn run(
    target: Arc<TargetConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut poller = Poller {
        collectors: collect::for_target(&target),
        backoff: Backoff::new(INITIAL_BACKOFF, target.reconnect_max_backoff),
        session: None,
        last_down_log: None,
        last_errors: HashMap::new(),
        target,
        shared,
        tracker,
    };
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sleep_until(next) => {}
        }
        let started = Instant::now();
        let delay = tokio::select! {
            _ = shutdown.cancelled() => break,
            delay = poller.cycle() => delay,
        };
        next = match delay {
            // Up: keep the schedule; an overrunning poll pushes the next one back.
            None => (started + poller.target.poll_interval).max(Instant::now()),
            Some(backoff) => Instant::now() + backoff,
        };
    }
    // Dropping the client closes the connection (tokio-postgres sends Terminate).
    poller.session = None;
    debug!(target = %poller.target.name, "target task stopped");
}

struct Session {
    client: Client,
    server: ServerInfo,
}

struct Poller {
    target: Arc<TargetConfig>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    collectors: Vec<Box<dyn Collector>>,
    session: Option<Session>,
    backoff: Backoff,
    last_down_log: Option<Instant>,
    /// Each failing collector's last error, so a repeated one is logged once.
    last_errors: HashMap<&'static str, String>,
}

impl Poller {
    /// Connect if needed and poll once. Returns a reconnect delay when the target is down.
    async fn cycle(&mut self) -> Option<Duration> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        if self.session.is_none() {
            match self.connect().await {
                Ok(session) => {
                    self.connected(&session);
                    self.session = Some(session);
                }
                Err(error) => return Some(self.down(&error)),
            }
        }
        match self.poll().await {
            Ok(()) => None,
            Err(reason) => {
                self.session = None;
                Some(self.down(&reason))
            }
        }
    }

    async fn connect(&self) -> Result<Session, String> {
        let target = &self.target;
        let config = target.connection.connect_config(target.connect_timeout)?;
        let attempt = async {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|e| describe_pg_error(&e))?;
            let name = target.name.clone();
            self.tracker.spawn(async move {
                if let Err(e) = connection.await {
                    debug!(target = %name, error = %describe_pg_error(&e), "connection closed");
                }
            });
            // Session settings, so a poll can neither run long nor queue behind a lock.
            client
                .batch_execute(&format!(
                    "SET statement_timeout = {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = 0",
                    target.statement_timeout.as_millis(),
                    target.lock_timeout.as_millis()
                ))
                .await
                .map_err(|e| describe_pg_error(&e))?;
            let row = client
                .query_one(
                    "SELECT current_setting('server_version_num')::int, current_setting('server_version'), pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(|e| describe_pg_error(&e))?;
            let server = ServerInfo {
                version_num: row.get(0),
                version: row.get(1),
                backend_pid: row.get(2),
            };
            Ok::<_, String>(Session { client, server })
        };
        // connect_timeout bounds the TCP connect; this bounds the whole handshake.
        let limit = target.connect_timeout + target.statement_timeout;
        let result = match timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "connecting took longer than {}",
                humantime::format_duration(limit)
            )),
        };
        self.shared
            .metrics
            .connect_attempt(&target.name, result.is_ok());
        result
    }

    fn connected(&mut self, session: &Session) {
        let target = &self.target;
        info!(
            target = %target.name,
            connection = %target.connection.describe(),
            server_version = %session.server.version,
            "connected"
        );
        self.backoff.reset();
        self.last_down_log = None;
        let version = session.server.version.clone();
        self.shared.status.update(&target.name, |s| {
            s.server_version = Some(version);
            s.consecutive_failures = 0;
        });
    }

    /// Record that the target is unreachable and return how long to wait before retrying.
    fn down(&mut self, error: &str) -> Duration {
        let target = &self.target;
        let delay = self.backoff.next_delay();
        self.shared.metrics.set_up(&target.name, false);
        self.shared.metrics.store().clear_target(&target.name);
        let mut failures = 0;
        self.shared.status.update(&target.name, |s| {
            s.state = TargetState::Down;
            s.last_poll = Some(now_rfc3339());
            s.last_error = Some(error.to_owned());
            s.consecutive_failures += 1;
            failures = s.consecutive_failures;
        });
        self.shared.observe(&target.name, Observations::default());
        let now = Instant::now();
        if self
            .last_down_log
            .is_none_or(|last| now.duration_since(last) >= DOWN_LOG_EVERY)
        {
            warn!(
                target = %target.name,
                connection = %target.connection.describe(),
                failures,
                retry_in = %humantime::format_duration(delay),
                "target is down: {error}"
            );
            self.last_down_log = Some(now);
        } else {
            debug!(target = %target.name, failures, "target still down: {error}");
        }
        delay
    }

    /// Run every collector once. An error means the connection cannot be trusted any more.
    async fn poll(&mut self) -> Result<(), String> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let target = &self.target;
        let ctx = PollContext {
            client: &session.client,
            target,
            server: &session.server,
        };
        let mut observations = Observations {
            up: true,
            ..Observations::default()
        };
        let mut all_ok = true;
        // A network stall is not a statement: bound each collector on the client side too.
        let limit = target.statement_timeout * 2 + Duration::from_secs(1);
        for collector in &mut self.collectors {
            let name = collector.name();
            let span = info_span!("poll", target = %target.name, collector = name);
            let started = Instant::now();
            let result = timeout(limit, collector.collect(&ctx, &mut observations))
                .instrument(span)
                .await;
            let seconds = started.elapsed().as_secs_f64();
            // A degraded collector still publishes the series that say what is wrong.
            let (snapshot, result) = match result {
                Ok(Ok(snapshot)) => (Some(snapshot), Ok(())),
                Ok(Err(CollectError::Degraded { message, snapshot })) => {
                    (Some(*snapshot), Err(message))
                }
                Ok(Err(e)) => (None, Err(e.to_string())),
                Err(_) => (
                    None,
                    Err(format!(
                        "no answer within {}; the connection will be reopened",
                        humantime::format_duration(limit)
                    )),
                ),
            };
            let ok = result.is_ok();
            self.shared
                .metrics
                .poll_finished(&target.name, name, seconds, ok);
            let store = self.shared.metrics.store();
            match snapshot {
                Some(snapshot) => store.publish(&target.name, name, snapshot),
                None => store.retract(&target.name, name),
            }
            let status = match result {
                Ok(()) => {
                    if self.last_errors.remove(name).is_some() {
                        info!(target = %target.name, collector = name, "poll succeeded again");
                    }
                    CollectorStatus {
                        last_duration_seconds: seconds,
                        last_success: Some(now_rfc3339()),
                        last_error: None,
                    }
                }
                Err(error) => {
                    all_ok = false;
                    // The same error every poll is logged once; a different one again.
                    if self.last_errors.get(name) == Some(&error) {
                        debug!(target = %target.name, collector = name, "poll failed again: {error}");
                    } else {
                        warn!(target = %target.name, collector = name, "poll failed: {error}");
                        self.last_errors.insert(name, error.clone());
                    }
                    CollectorStatus {
                        last_duration_seconds: seconds,
                        last_success: None,
                        last_error: Some(error),
                    }
                }
            };
            let timed_out = status
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("no answer within"));
            self.shared.status.update(&target.name, |s| {
                let previous = s.collectors.remove(name);
                let mut status = status;
                if status.last_success.is_none() {
                    status.last_success = previous.and_then(|p| p.last_success);
                }
                s.collectors.insert(name.to_owned(), status);
            });
            if timed_out {
                // The connection is in an unknown state: do not run the remaining collectors
                // on it.
                return Err(format!("collector {name} timed out; reconnecting"));
            }
            if session.client.is_closed() {
                return Err("the connection was lost during the poll".to_owned());
            }
        }
        self.shared.metrics.set_up(&target.name, true);
        self.shared.status.update(&target.name, |s| {
            s.state = TargetState::Up;
            s.last_poll = Some(now_rfc3339());
            if all_ok {
                s.last_success = s.last_poll.clone();
                s.last_error = None;
            } else if let Some(e) = s.collectors.values().find_map(|c| c.last_error.clone()) {
                s.last_error = Some(e);
            }
        });
        self.shared.observe(&target.name, observations);
        Ok(())
    }
}

/// Capped exponential backoff.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }
}
