//! What every poll loop shares, whatever it polls (a PostgreSQL target, a PgBouncer admin
//! console): the schedule, reconnecting with capped exponential backoff, `pgvigil_up` and the
//! status entry, and recording each collector's outcome.
//!
//! A [`Source`] says how to open its session and what one poll does; [`run`] drives it. Polls
//! run one after another in the source's own task, so they can never overlap: if a poll overruns
//! the interval, the next one starts when it ends rather than queueing up behind it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Shared;
use crate::collect::{BoxFuture, CollectError, Observations};
use crate::metrics::Snapshot;
use crate::status::{CollectorStatus, TargetState, now_rfc3339};

/// First reconnect delay; doubled on every failure up to `reconnect_max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// A source that stays down is reported at warn level at most this often.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// The schedule and limits of one poll loop.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// The `target` label and status key.
    pub(crate) name: String,
    /// `user@host:port/db`, safe to log.
    pub(crate) connection: String,
    pub(crate) poll_interval: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) reconnect_max_backoff: Duration,
}

/// An open session and the server version it reported.
pub(crate) struct Connected<S> {
    pub(crate) session: S,
    pub(crate) version: String,
    /// Whether the session is encrypted; `None` if that cannot be known.
    pub(crate) tls: Option<bool>,
}

/// Something a poll loop watches.
pub(crate) trait Source: Send + 'static {
    /// What a connection attempt yields.
    type Session: Send + Sync + 'static;

    /// Open a session. The loop bounds the whole attempt by connect + statement timeout.
    fn connect(&self) -> impl Future<Output = Result<Connected<Self::Session>, String>> + Send;

    /// The session's connection is gone.
    fn is_closed(session: &Self::Session) -> bool;

    /// Poll once over `session`, recording through `recorder`. An error means the session
    /// cannot be trusted any more and is dropped.
    fn poll(
        &mut self,
        session: &Self::Session,
        recorder: &Recorder,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Run `source` until `shutdown` is cancelled.
pub(crate) async fn run<S: Source>(
    mut source: S,
    schedule: Schedule,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut state = LoopState {
        backoff: Backoff::new(INITIAL_BACKOFF, schedule.reconnect_max_backoff),
        last_down_log: None,
        session: None,
        recorder: Recorder {
            schedule,
            shared,
            last_errors: Default::default(),
        },
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
            delay = state.cycle(&mut source) => delay,
        };
        next = match delay {
            // Up: keep the schedule; an overrunning poll pushes the next one back.
            None => (started + state.recorder.schedule.poll_interval).max(Instant::now()),
            Some(backoff) => Instant::now() + backoff,
        };
    }
    // Dropping the client closes the connection (tokio-postgres sends Terminate).
    state.session = None;
    debug!(target = %state.recorder.schedule.name, "poll loop stopped");
}

struct LoopState<S> {
    backoff: Backoff,
    last_down_log: Option<Instant>,
    session: Option<S>,
    recorder: Recorder,
}

impl<T: Send + Sync + 'static> LoopState<T> {
    /// Connect if needed and poll once. Returns a reconnect delay when the source is down.
    async fn cycle<S: Source<Session = T>>(&mut self, source: &mut S) -> Option<Duration> {
        if self.session.as_ref().is_some_and(S::is_closed) {
            self.session = None;
        }
        if self.session.is_none() {
            match self.connect(source).await {
                Ok(connected) => {
                    self.connected(&connected.version, connected.tls);
                    self.session = Some(connected.session);
                }
                Err(error) => return Some(self.down(&error)),
            }
        }
        let session = self.session.as_ref()?;
        match source.poll(session, &self.recorder).await {
            Ok(()) => None,
            Err(reason) => {
                self.session = None;
                Some(self.down(&reason))
            }
        }
    }

    async fn connect<S: Source<Session = T>>(&self, source: &S) -> Result<Connected<T>, String> {
        let schedule = &self.recorder.schedule;
        // connect_timeout bounds the TCP connect; this bounds the whole handshake.
        let limit = schedule.connect_timeout + schedule.statement_timeout;
        let result = match timeout(limit, source.connect()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "connecting took longer than {}",
                humantime::format_duration(limit)
            )),
        };
        self.recorder
            .shared
            .metrics
            .connect_attempt(&schedule.name, result.is_ok());
        result
    }

    fn connected(&mut self, version: &str, tls: Option<bool>) {
        let schedule = &self.recorder.schedule;
        info!(
            target = %schedule.name,
            connection = %schedule.connection,
            server_version = %version,
            "connected"
        );
        self.backoff.reset();
        self.last_down_log = None;
        // Up from the moment the session exists: collectors publish their series as each one
        // finishes, so waiting for the end of the first poll left a window in which a scrape
        // saw this poll's fresh series next to `pgvigil_up 0`.
        // The API and /readyz agree with pgvigil_up from the same moment.
        self.recorder.shared.metrics.set_up(&schedule.name, true);
        self.recorder.shared.status.update(&schedule.name, |s| {
            s.state = TargetState::Up;
            s.server_version = Some(version.to_owned());
            s.tls = tls;
            s.consecutive_failures = 0;
        });
    }

    /// Record that the source is unreachable and return how long to wait before retrying.
    fn down(&mut self, error: &str) -> Duration {
        let schedule = &self.recorder.schedule;
        let shared = &self.recorder.shared;
        let delay = self.backoff.next_delay();
        shared.metrics.set_up(&schedule.name, false);
        shared.metrics.store().clear_target(&schedule.name);
        let mut failures = 0;
        shared.status.update(&schedule.name, |s| {
            s.state = TargetState::Down;
            s.last_poll = Some(now_rfc3339());
            s.last_error = Some(error.to_owned());
            s.consecutive_failures += 1;
            failures = s.consecutive_failures;
        });
        shared.observe(
            &schedule.name,
            Observations {
                down_reason: Some(error.to_owned()),
                ..Observations::default()
            },
        );
        let now = Instant::now();
        if self
            .last_down_log
            .is_none_or(|last| now.duration_since(last) >= DOWN_LOG_EVERY)
        {
            warn!(
                target = %schedule.name,
                connection = %schedule.connection,
                failures,
                retry_in = %humantime::format_duration(delay),
                "target is down: {error}"
            );
            self.last_down_log = Some(now);
        } else {
            debug!(target = %schedule.name, failures, "target still down: {error}");
        }
        delay
    }
}

/// A collector as the poll loop sees it: named, and run against a context `Ctx` (the
/// session plus whatever the source knows about itself).
pub(crate) trait Collects<Ctx: ?Sized>: Send {
    /// The `collector` label and snapshot key.
    fn name(&self) -> &'static str;

    /// The longest one poll of this collector may take, given the source's default limit.
    fn time_limit(&self, default: Duration) -> Duration {
        default
    }

    /// Poll once.
    fn collect<'a>(
        &'a mut self,
        ctx: &'a Ctx,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>>;
}

/// Records a poll's outcome: metrics, snapshots, status and observations of one source.
#[derive(Debug)]
pub(crate) struct Recorder {
    schedule: Schedule,
    shared: Arc<Shared>,
    /// Each failing collector's last error, so one repeated every poll is logged once. A std
    /// mutex: never held across an await.
    last_errors: std::sync::Mutex<std::collections::HashMap<&'static str, String>>,
}

impl Recorder {
    /// Run every collector once, one after another, and publish what they found. A collector
    /// that fails loses only its own series; a timeout or a lost connection ends the poll with
    /// an error, because the session is then in an unknown state.
    pub(crate) async fn collect_all<Ctx: Sync + ?Sized, C: Collects<Ctx>>(
        &self,
        collectors: &mut [C],
        ctx: &Ctx,
        is_closed: impl Fn() -> bool,
    ) -> Result<(), String> {
        let name = &self.schedule.name;
        let mut observations = Observations {
            up: true,
            ..Observations::default()
        };
        let mut all_ok = true;
        // A network stall is not a statement: bound each collector on the client side too.
        let limit = self.schedule.statement_timeout * 2 + Duration::from_secs(1);
        for collector in collectors.iter_mut() {
            let collector_name = collector.name();
            let span = info_span!("poll", target = %name, collector = collector_name);
            let limit = collector.time_limit(limit);
            let started = Instant::now();
            let result = timeout(limit, collector.collect(ctx, &mut observations))
                .instrument(span)
                .await;
            let seconds = started.elapsed().as_secs_f64();
            // A degraded collector still publishes the series that say what is wrong.
            let (snapshot, result, timed_out) = match result {
                Ok(Ok(snapshot)) => (Some(snapshot), Ok(()), false),
                Ok(Err(CollectError::Degraded { message, snapshot })) => {
                    (Some(*snapshot), Err(message), false)
                }
                Ok(Err(e)) => (None, Err(e.to_string()), false),
                Err(_) => (
                    None,
                    Err(format!(
                        "no answer within {}; the connection will be reopened",
                        humantime::format_duration(limit)
                    )),
                    true,
                ),
            };
            all_ok &= result.is_ok();
            self.record(collector_name, seconds, snapshot, result);
            if timed_out {
                // Do not run the remaining collectors on a connection in an unknown state.
                return Err(format!(
                    "collector {collector_name} timed out; reconnecting"
                ));
            }
            if is_closed() {
                return Err("the connection was lost during the poll".to_owned());
            }
        }
        self.finish(all_ok, observations);
        Ok(())
    }

    /// Publish or retract one collector's snapshot and update its status.
    fn record(
        &self,
        collector: &'static str,
        seconds: f64,
        snapshot: Option<Snapshot>,
        result: Result<(), String>,
    ) {
        let name = &self.schedule.name;
        let shared = &self.shared;
        shared
            .metrics
            .poll_finished(name, collector, seconds, result.is_ok());
        let store = shared.metrics.store();
        match snapshot {
            Some(snapshot) => store.publish(name, collector, snapshot),
            None => store.retract(name, collector),
        }
        let mut last_errors = self.last_errors.lock().unwrap_or_else(|e| e.into_inner());
        let status = match result {
            Ok(()) => {
                if last_errors.remove(collector).is_some() {
                    info!(target = %name, collector, "poll succeeded again");
                }
                CollectorStatus {
                    last_duration_seconds: seconds,
                    last_success: Some(now_rfc3339()),
                    last_error: None,
                }
            }
            Err(error) => {
                // The same error every poll is logged once; a different one again.
                if last_errors.get(collector) == Some(&error) {
                    debug!(target = %name, collector, "poll failed again: {error}");
                } else {
                    warn!(target = %name, collector, "poll failed: {error}");
                    last_errors.insert(collector, error.clone());
                }
                CollectorStatus {
                    last_duration_seconds: seconds,
                    last_success: None,
                    last_error: Some(error),
                }
            }
        };
        drop(last_errors);
        shared.status.update(name, |s| {
            let previous = s.collectors.remove(collector);
            let mut status = status;
            if status.last_success.is_none() {
                status.last_success = previous.and_then(|p| p.last_success);
            }
            s.collectors.insert(collector.to_owned(), status);
        });
    }

    /// The poll finished: the source is up; hand its observations to the alert rules.
    fn finish(&self, all_ok: bool, observations: Observations) {
        let name = &self.schedule.name;
        self.shared.metrics.set_up(name, true);
        self.shared.status.update(name, |s| {
            s.state = TargetState::Up;
            s.last_poll = Some(now_rfc3339());
            if all_ok {
                s.last_success = s.last_poll.clone();
                s.last_error = None;
            } else if let Some(e) = s.collectors.values().find_map(|c| c.last_error.clone()) {
                s.last_error = Some(e);
            }
        });
        self.shared.observe(name, observations);
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
