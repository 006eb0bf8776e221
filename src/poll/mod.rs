//! What every poll loop shares, whatever it polls (a PostgreSQL target, a PgBouncer admin
//! console): the schedule, reconnecting with capped exponential backoff, `pgvigil_up` and the
//! status entry, and recording each collector's outcome.
//!
//! A [`Driver`] says how to open a session of its kind of source and what its collectors see
//! of it; [`run`] does the rest. Step by step:
//!
//! 0. The first poll waits a moment fixed by the source's name (`jitter::first_poll_delay`:
//!    within `poll_interval` and 30 ms per source of the configuration), so a fleet does not
//!    start in one burst, nor poll in waves after it.
//! 1. Connect: first wait in the process-wide line for a permit (`[server]
//!    max_concurrent_connects`, [`crate::connect_gate`]; waiting is not being down), then the
//!    whole attempt, handshake and session setup included, bounded by `connect_timeout`. On
//!    failure the source is down:
//!    `pgvigil_up 0`, its snapshots are dropped, the rules see `up: false`, and the loop retries
//!    after a backoff doubling from 0.5 s up to `reconnect_max_backoff`, each delay drawn at
//!    random from the upper half of its step so sources that failed together retry apart.
//! 2. Once connected, every collector is due. A poll runs the due ones one after another on
//!    the one session (`schedule`), so polls never overlap and the server sees one pgvigil
//!    query at a time; each collector runs on its own interval (`interval` in its table, else
//!    `poll_interval`).
//! 3. Each collector's outcome is published at once (`record`): its snapshot, its status, its
//!    duration. The poll's observations — with the last report of each collector that was not
//!    due carried over — go to the alert engine, without waiting for it.
//!    The source is up (`pgvigil_up 1`, "up" in the API) from the first collector that
//!    works on a session. After a collector fails, the session is settled (a transaction the
//!    collector left open or aborted is rolled back, see [`crate::collect::session`]).
//! 4. A collector timeout, a closed connection, a session that cannot be settled, or a poll
//!    in which every collector that ran failed drops the session: the source is down, back
//!    to 1.
//!
//! The loop stops when its cancellation token is cancelled (shutdown, or the supervisor
//! removing or restarting the source); a poll in flight then has its query cancelled on the
//! server (`Driver::cancel`), and dropping the session closes its connection.

mod error;
mod jitter;
mod record;
mod schedule;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::collect::{Observations, SourceType};
use crate::config::SourceSettings;
use crate::hub::Hub;
use crate::status::{TargetState, now_rfc3339};
pub(crate) use error::PollError;
pub(crate) use jitter::first_poll_delay;
use record::Recorder;
pub(crate) use schedule::{Schedule, Scheduled};

/// First reconnect delay; doubled on every failure up to `reconnect_max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// A source that stays down is reported at warn level at most this often.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// An open session and the server version it reported.
pub(crate) struct Connected<S> {
    pub(crate) session: S,
    /// The version as shown on the status page.
    pub(crate) version: String,
    /// PostgreSQL's `server_version_num`, which decides the collectors that can run; `None`
    /// for sources that have none (PgBouncer).
    pub(crate) version_num: Option<i32>,
    /// Whether the session is encrypted; `None` if that cannot be known.
    pub(crate) tls: Option<bool>,
}

/// How to open and read one kind of source.
pub(crate) trait Driver: Send + Sync + 'static {
    /// The kind of source, which names its collectors.
    type Source: SourceType;
    /// What a connection attempt yields.
    type Session: Send + Sync + 'static;

    /// The source's configuration.
    fn config(&self) -> &<Self::Source as SourceType>::Config;

    /// Take a new configuration of the same source with the same connection settings.
    fn update(&mut self, config: Arc<<Self::Source as SourceType>::Config>);

    /// The settings every source has.
    fn settings(&self) -> &SourceSettings;

    /// Open a session. The loop bounds the whole attempt by `connect_timeout`.
    fn connect(&self) -> impl Future<Output = Result<Connected<Self::Session>, PollError>> + Send;

    /// The session's connection is gone.
    fn is_closed(session: &Self::Session) -> bool;

    /// Cancel what `session` is running: called at shutdown (or when the supervisor stops
    /// the source) with a poll in flight. Sources whose queries cannot wait have nothing to
    /// cancel.
    fn cancel(&self, _session: &Self::Session) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Which of the kind's collectors this loop runs: those of one scope, or `None` for all
    /// (a PostgreSQL target's database-scope collectors run on its database sessions).
    fn scope(&self) -> Option<crate::collect::Scope> {
        None
    }

    /// What the collectors see of `session` during a poll.
    fn context<'s>(
        &'s self,
        session: &'s Self::Session,
    ) -> <Self::Source as SourceType>::Context<'s>;
}

/// A source's configuration as the supervisor updates it.
pub(crate) type Updates<D> = watch::Receiver<Arc<<<D as Driver>::Source as SourceType>::Config>>;

/// Run `driver`'s source until `shutdown` is cancelled, applying each new configuration from
/// `updates` between two polls. The first poll waits `first_poll` (see [`first_poll_delay`]).
pub(crate) async fn run<D: Driver>(
    mut driver: D,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    mut updates: Updates<D>,
    first_poll: Duration,
) {
    let settings = driver.settings();
    let mut state = LoopState {
        backoff: Backoff::new(INITIAL_BACKOFF, settings.reconnect_max_backoff),
        last_down_log: None,
        session: None,
        schedule: Schedule::new(driver.config(), settings.poll_interval, driver.scope()),
        last: Observations::default(),
        recorder: Recorder::new(settings, hub),
    };
    let mut next = Instant::now() + first_poll;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sleep_until(next) => {}
        }
        if updates.has_changed().unwrap_or(false) {
            let new = updates.borrow_and_update().clone();
            state.update(&mut driver, new);
        }
        let started = Instant::now();
        let delay = tokio::select! {
            _ = shutdown.cancelled() => {
                // A poll was in flight: its query must not outlive pgvigil on the server.
                if let Some(session) = &state.session {
                    driver.cancel(session).await;
                }
                break;
            }
            delay = state.cycle(&driver, started) => delay,
        };
        next = match delay {
            // Up: the earliest due collector; an overrunning poll pushes the next one back.
            None => state
                .schedule
                .next_due()
                .unwrap_or(started + driver.settings().poll_interval)
                .max(Instant::now()),
            Some(backoff) => Instant::now() + backoff,
        };
    }
    // Dropping the client closes the connection (tokio-postgres sends Terminate).
    state.session = None;
    debug!(target = %driver.settings().name, "poll loop stopped");
}

struct LoopState<D: Driver> {
    backoff: Backoff,
    last_down_log: Option<Instant>,
    session: Option<D::Session>,
    schedule: Schedule<D::Source>,
    /// The last poll's observations, whose parts carry over to polls a collector skips.
    last: Observations,
    recorder: Recorder,
}

impl<D: Driver> LoopState<D> {
    /// A new configuration with the same connection: collectors and limits change in place.
    fn update(&mut self, driver: &mut D, new: Arc<<D::Source as SourceType>::Config>) {
        let settings = <D::Source as SourceType>::settings(&new);
        let dropped = self
            .schedule
            .reconfigure(driver.config(), &new, settings.poll_interval);
        let name = &self.recorder.name;
        for collector in dropped {
            self.recorder.hub.metrics.store().retract(name, collector);
            self.recorder.hub.metrics.forget_collector(name, collector);
            self.recorder.hub.status.update(name, |s| {
                s.collectors.remove(collector);
            });
        }
        self.backoff = Backoff::new(INITIAL_BACKOFF, settings.reconnect_max_backoff);
        // The status page's history follows the new interval (it starts over at its step).
        self.recorder.poll_interval = settings.poll_interval;
        driver.update(new);
        info!(target = %name, "configuration applied in place");
    }

    /// Connect if needed and poll the due collectors once. Returns a reconnect delay when the
    /// source is down.
    async fn cycle(&mut self, driver: &D, started: Instant) -> Option<Duration> {
        if self.session.as_ref().is_some_and(D::is_closed) {
            self.session = None;
        }
        if self.session.is_none() {
            match self.connect(driver).await {
                Ok(connected) => {
                    self.connected(&connected);
                    self.session = Some(connected.session);
                }
                Err(error) => return Some(self.down(&error, started)),
            }
        }
        let session = self.session.as_ref()?;
        let ctx = driver.context(session);
        let result = self
            .recorder
            .collect_due(&mut self.schedule, &ctx, &self.last, started, || {
                D::is_closed(session)
            })
            .await;
        drop(ctx);
        match result {
            Ok(observations) => {
                self.last = observations;
                None
            }
            Err(error) => {
                self.session = None;
                Some(self.down(&error, started))
            }
        }
    }

    async fn connect(&self, driver: &D) -> Result<Connected<D::Session>, PollError> {
        let settings = driver.settings();
        // connect_timeout bounds the whole attempt: TCP, TLS, startup and authentication,
        // and the session's setup queries (a listener that accepts and never answers is
        // given up after connect_timeout, not after connect + statement timeout).
        // The clock starts once a permit is held: a queue of attempts waits in line instead of
        // timing out (see crate::connect_gate).
        let permit = self.recorder.hub.connects.acquire().await;
        let limit = settings.connect_timeout;
        let result = match timeout(limit, driver.connect()).await {
            Ok(result) => result,
            Err(_) => Err(PollError::ConnectTimeout {
                limit,
                waited: permit.waited(),
            }),
        };
        drop(permit);
        self.recorder
            .hub
            .metrics
            .connect_attempt(&settings.name, "main", result.is_ok());
        result
    }

    fn connected(&mut self, connected: &Connected<D::Session>) {
        let recorder = &self.recorder;
        info!(
            target = %recorder.name,
            connection = %recorder.connection,
            server_version = %connected.version,
            "connected"
        );
        self.backoff.reset();
        self.last_down_log = None;
        self.schedule.reset(connected.version_num);
        for c in self.schedule.collectors.iter().filter(|c| c.unsupported) {
            info!(
                target = %recorder.name,
                collector = c.spec.name,
                supported = %c.spec.versions.describe(),
                "collector skipped: it does not support this server version"
            );
        }
        recorder.hub.status.update(&recorder.name, |s| {
            s.server_version = Some(connected.version.clone());
            s.tls = connected.tls;
            s.consecutive_failures = 0;
        });
        // Up once a collector has worked on the session (the recorder marks it before the
        // collector's series are published, so a scrape never sees them beside
        // `pgvigil_up 0`); a loop with nothing to run is up once connected.
        if self.schedule.collectors.iter().all(|c| c.unsupported) {
            recorder.mark_up();
        }
    }

    /// Record that the source is unreachable and return how long to wait before retrying.
    fn down(&mut self, error: &PollError, started: Instant) -> Duration {
        let recorder = &self.recorder;
        let hub = &recorder.hub;
        let name = &recorder.name;
        let delay = self.backoff.next_delay(jitter::random_unit());
        let error = error.to_string();
        self.last = Observations::default();
        hub.metrics.set_up(name, false);
        hub.metrics.publish_polls(name);
        // What this loop published; a target's database sessions retract their own.
        for c in &self.schedule.collectors {
            hub.metrics.store().retract(name, c.spec.name);
        }
        let mut failures = 0;
        hub.status.update(name, |s| {
            s.state = TargetState::Down;
            s.last_poll = Some(now_rfc3339());
            s.last_error = Some(error.clone());
            s.consecutive_failures += 1;
            failures = s.consecutive_failures;
        });
        let observations = Observations {
            down_reason: Some(error.clone()),
            ..Observations::default()
        };
        hub.observe_poll(
            name,
            observations,
            started.elapsed().as_secs_f64(),
            recorder.poll_interval,
        );
        let now = Instant::now();
        if self
            .last_down_log
            .is_none_or(|last| now.duration_since(last) >= DOWN_LOG_EVERY)
        {
            warn!(
                target = %name,
                connection = %recorder.connection,
                failures,
                retry_in = %humantime::format_duration(delay),
                "target is down: {error}"
            );
            self.last_down_log = Some(now);
        } else {
            debug!(target = %name, failures, "target still down: {error}");
        }
        delay
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

    /// The next delay: the current step with jitter from `unit` in `[0, 1)` (see
    /// [`jitter::jittered`]); the steps themselves double without it.
    fn next_delay(&mut self, unit: f64) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        jitter::jittered(step, unit)
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
        let delays: Vec<_> = (0..5).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(500));
        // The jitter shortens a delay, never the steps: the lowest draws still double.
        let delays: Vec<_> = (0..5).map(|_| b.next_delay(0.0).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 1500, 1500, 1500]);
    }
}
