//! Running the due collectors of one poll and recording each outcome: the snapshot published
//! or retracted, `pgvigil_poll_*`, the collector's status, and the poll's observations handed
//! to the alert engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::PollError;
use super::schedule::Schedule;
use crate::collect::{CollectorSpec, Observations, Ran, SourceType};
use crate::config::SourceSettings;
use crate::hub::Hub;
use crate::metrics::Snapshot;
use crate::status::{CollectorStatus, TargetState, now_rfc3339};

/// Records a poll's outcome: metrics, snapshots, status and observations of one source.
#[derive(Debug)]
pub(super) struct Recorder {
    /// The `target` label and status key.
    pub(super) name: String,
    /// `user@host:port/db`, safe to log.
    pub(super) connection: String,
    statement_timeout: Duration,
    /// The status page's history takes a sample per poll interval.
    pub(super) poll_interval: Duration,
    pub(super) hub: Arc<Hub>,
    /// Each failing collector's last error (or "not applicable: <reason>"), so one repeated
    /// every poll is logged once. A std mutex: never held across an await.
    last_errors: Mutex<HashMap<&'static str, String>>,
    /// When the `pgvigil_poll_*` series were last published (see [`Recorder::finish`]).
    polls_published: Mutex<Option<Instant>>,
}

impl Recorder {
    pub(super) fn new(settings: &SourceSettings, hub: Arc<Hub>) -> Self {
        Recorder {
            name: settings.name.clone(),
            connection: settings.connection.describe(),
            statement_timeout: settings.statement_timeout,
            poll_interval: settings.poll_interval,
            hub,
            last_errors: Mutex::default(),
            polls_published: Mutex::default(),
        }
    }

    /// Run every collector due at `started`, one after another, publish what they found, and
    /// hand the poll's observations (parts of collectors not due carried over from `last`) to
    /// the alert engine. A collector that fails loses only its own series, and the session is
    /// settled after it ([`SourceType::settle`]: a transaction it left open or aborted is
    /// rolled back). A timeout, a lost connection, a session that cannot be settled, or a
    /// poll in which every collector that ran failed ends the poll with an error: the source
    /// is then down, because "up" means that its polls work.
    pub(super) async fn collect_due<S: SourceType>(
        &self,
        schedule: &mut Schedule<S>,
        ctx: &S::Context<'_>,
        last: &Observations,
        started: Instant,
        is_closed: impl Fn() -> bool,
    ) -> Result<Observations, PollError> {
        let mut observations = Observations {
            up: true,
            ..Observations::default()
        };
        S::begin(&mut observations);
        // A network stall is not a statement: bound each collector on the client side too.
        let default_limit = self.statement_timeout * 2 + Duration::from_secs(1);
        let mut first_error = None;
        let mut worked = false;
        for c in schedule.collectors.iter_mut() {
            if !Schedule::take_due(c, started) {
                (c.spec.carry)(last, &mut observations);
                continue;
            }
            let limit = c.collector.time_limit(default_limit);
            let outcome = self
                .run_one(c, ctx, &mut observations, limit, &mut worked)
                .await;
            match outcome {
                Outcome::Worked => {}
                Outcome::Failed(error) => {
                    first_error.get_or_insert(format!("{}: {error}", c.spec.name));
                    if is_closed() {
                        return Err(PollError::ConnectionLost);
                    }
                    self.settle::<S>(c.spec.name, ctx, default_limit).await?;
                }
                Outcome::TimedOut => {
                    // Do not run the remaining collectors on a connection in an unknown state.
                    return Err(PollError::CollectorTimeout {
                        collector: c.spec.name,
                    });
                }
            }
            if is_closed() {
                return Err(PollError::ConnectionLost);
            }
        }
        if let (false, Some(error)) = (worked, first_error) {
            return Err(PollError::NothingWorks(error));
        }
        self.finish(observations.clone(), started.elapsed());
        Ok(observations)
    }

    /// Run one collector under `limit` and record its outcome; the first that works in a poll
    /// (`worked` still false) marks the source up before its series are published.
    async fn run_one<S: SourceType>(
        &self,
        c: &mut super::schedule::Scheduled<S>,
        ctx: &S::Context<'_>,
        observations: &mut Observations,
        limit: Duration,
        worked: &mut bool,
    ) -> Outcome {
        let name = c.spec.name;
        let span = info_span!("poll", target = %self.name, collector = name);
        let run_started = Instant::now();
        let result = timeout(limit, c.collector.collect(ctx, observations))
            .instrument(span)
            .await;
        let seconds = run_started.elapsed().as_secs_f64();
        // A degraded collector still publishes the series that say what is wrong, and its
        // queries were answered: it counts as working; so does one that does not apply here.
        let (snapshot, ran, outcome) = match result {
            Ok(result) => {
                let (snapshot, ran) = Ran::of(result);
                let outcome = match &ran {
                    Ran::Failed(e) => Outcome::Failed(e.clone()),
                    _ => Outcome::Worked,
                };
                (snapshot, ran, outcome)
            }
            Err(_) => (
                None,
                Ran::Failed(format!(
                    "no answer within {}; the connection will be reopened",
                    humantime::format_duration(limit)
                )),
                Outcome::TimedOut,
            ),
        };
        if matches!(outcome, Outcome::Worked) && !std::mem::replace(worked, true) {
            self.mark_up();
        }
        self.record(c.spec, seconds, snapshot, ran);
        outcome
    }

    /// After `collector` failed: end what it left of a transaction, or give the session up.
    async fn settle<S: SourceType>(
        &self,
        collector: &'static str,
        ctx: &S::Context<'_>,
        limit: Duration,
    ) -> Result<(), PollError> {
        match timeout(limit, S::settle(ctx)).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(what))) => {
                warn!(target = %self.name, collector, "{what}");
                Ok(())
            }
            Ok(Err(error)) => Err(PollError::Unsettled { collector, error }),
            Err(_) => Err(PollError::Unsettled {
                collector,
                error: format!("no answer within {}", humantime::format_duration(limit)),
            }),
        }
    }

    /// The session answers: `pgvigil_up 1` and "up" in the API, from the first collector
    /// that worked (so a scrape never sees a poll's fresh series beside `pgvigil_up 0`, and
    /// a session whose every collector fails is never reported up).
    pub(super) fn mark_up(&self) {
        self.hub.metrics.set_up(&self.name, true);
        self.hub.status.update(&self.name, |s| {
            s.state = TargetState::Up;
        });
    }

    /// Publish or retract one collector's snapshot and update its status.
    fn record<S: SourceType>(
        &self,
        spec: &'static CollectorSpec<S>,
        seconds: f64,
        snapshot: Option<Snapshot>,
        ran: Ran,
    ) {
        let collector = spec.name;
        let name = &self.name;
        let hub = &self.hub;
        hub.metrics
            .poll_finished(name, collector, seconds, ran.error().is_none());
        let store = hub.metrics.store();
        match snapshot {
            Some(snapshot) => {
                check_declared(spec, &snapshot);
                store.publish(name, collector, snapshot);
            }
            None => store.retract(name, collector),
        }
        let status = self.status_of(collector, seconds, ran);
        hub.status.update(name, |s| {
            let previous = s.collectors.remove(collector);
            let mut status = status;
            if status.last_success.is_none() {
                status.last_success = previous.and_then(|p| p.last_success);
            }
            s.collectors.insert(collector.to_owned(), status);
        });
    }

    /// The collector's status after a run, logging a failure (or that it does not apply)
    /// once until it changes.
    fn status_of(&self, collector: &'static str, seconds: f64, ran: Ran) -> CollectorStatus {
        let name = &self.name;
        let mut last_errors = self.last_errors.lock().unwrap_or_else(|e| e.into_inner());
        let mut status = CollectorStatus {
            last_duration_seconds: seconds,
            last_success: None,
            last_error: None,
            not_applicable: None,
        };
        match ran {
            Ran::Worked => {
                let was = last_errors.remove(collector);
                if was.is_some_and(|e| !e.starts_with("not applicable: ")) {
                    info!(target = %name, collector, "poll succeeded again");
                }
                status.last_success = Some(now_rfc3339());
            }
            Ran::NotApplicable(reason) => {
                let key = format!("not applicable: {reason}");
                if last_errors.get(collector) != Some(&key) {
                    info!(target = %name, collector, "the collector does not apply here: {reason}");
                    last_errors.insert(collector, key.clone());
                }
                status.last_success = Some(now_rfc3339());
                status.not_applicable = Some(key);
            }
            Ran::Degraded(error) | Ran::Failed(error) => {
                // The same error every poll is logged once; a different one again.
                if last_errors.get(collector) == Some(&error) {
                    debug!(target = %name, collector, "poll failed again: {error}");
                } else {
                    warn!(target = %name, collector, "poll failed: {error}");
                    last_errors.insert(collector, error.clone());
                }
                status.last_error = Some(error);
            }
        }
        status
    }

    /// The poll finished: the source is up; hand its observations to the alert rules. The
    /// source's last error is that of a collector still failing, whether or not it ran now.
    fn finish(&self, observations: Observations, took: Duration) {
        let name = &self.name;
        self.hub.metrics.set_up(name, true);
        if self.polls_due() {
            self.hub.metrics.publish_polls(name);
        }
        self.hub.status.update(name, |s| {
            s.state = TargetState::Up;
            s.last_poll = Some(now_rfc3339());
            match s.collectors.values().find_map(|c| c.last_error.clone()) {
                None => {
                    s.last_success = s.last_poll.clone();
                    s.last_error = None;
                }
                Some(e) => s.last_error = Some(e),
            }
        });
        self.hub
            .observe_poll(name, observations, took.as_secs_f64(), self.poll_interval);
    }
}

impl Recorder {
    /// Whether a poll that ends now publishes the `pgvigil_poll_*` series: once per poll
    /// interval. A collector on a shorter interval (`locks`, every 5 s) ends polls in
    /// between, and a snapshot published at each of them would be rebuilt three times per
    /// interval, the last time on the scrape path (a snapshot is prebuilt only if a scrape
    /// used the one it replaces): 236 ms against 169 ms for a 500-target scrape. Their runs
    /// show with the next full poll, at most one interval later.
    fn polls_due(&self) -> bool {
        let mut last = self
            .polls_published
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // A tenth of slack: a full poll that starts a little early still publishes.
        let due = last.is_none_or(|at| now.duration_since(at) >= self.poll_interval * 9 / 10);
        if due {
            *last = Some(now);
        }
        due
    }
}

/// How one collector's run went, for the poll.
enum Outcome {
    /// Its queries were answered (it may still report a degraded source).
    Worked,
    /// It failed with this error.
    Failed(String),
    /// It got no answer within its limit.
    TimedOut,
}

/// A collector publishes only the metrics its registry entry declares: the declarations feed
/// the README and the invariant tests, so an undeclared one is a bug (caught in debug builds,
/// logged in release ones; the series is exported either way).
fn check_declared<S: SourceType>(spec: &CollectorSpec<S>, snapshot: &Snapshot) {
    for def in snapshot.metrics() {
        if !spec.metrics.iter().any(|d| d.name == def.name) {
            error!(
                collector = spec.name,
                metric = def.name,
                "collector published a metric its registry entry does not declare"
            );
            debug_assert!(
                false,
                "collector {} published {}, which its registry entry does not declare",
                spec.name, def.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{Postgres, registry};
    use crate::config::ConnectionSpec;
    use crate::metrics::Metrics;

    fn recorder() -> Recorder {
        let (alerts, _) = crate::alert::engine::AlertHub::new();
        let hub = Arc::new(Hub::new(Arc::new(Metrics::new()), alerts));
        hub.status.add_target("t", "x".into());
        let connection = ConnectionSpec::parse("host=h dbname=d", &Default::default()).unwrap();
        Recorder::new(&SourceSettings::new("t", connection), hub)
    }

    fn status(r: &Recorder, collector: &str) -> CollectorStatus {
        r.hub.status.targets()[0].collectors[collector].clone()
    }

    /// The collector's error count once the poll ends.
    fn errors(r: &Recorder, collector: &str) -> usize {
        r.hub.metrics.publish_polls("t");
        let text = r.hub.metrics.encode_classic();
        let series =
            format!("pgvigil_poll_errors_total{{target=\"t\",collector=\"{collector}\"}} 1");
        text.matches(&series).count()
    }

    #[test]
    fn not_applicable_is_recorded_as_no_error_and_said_in_the_status() {
        let r = recorder();
        let spec: &'static CollectorSpec<Postgres> = &registry::POSTGRES[0];
        let name = spec.name;
        r.record(
            spec,
            0.1,
            None,
            Ran::NotApplicable("nothing to read here".into()),
        );
        let s = status(&r, name);
        assert_eq!(s.last_error, None);
        assert!(s.last_success.is_some(), "the collector did its job");
        assert_eq!(
            s.not_applicable.as_deref(),
            Some("not applicable: nothing to read here")
        );
        assert_eq!(errors(&r, name), 0);
        r.finish(Observations::default(), Duration::ZERO);
        assert_eq!(r.hub.status.targets()[0].last_error, None);

        // A failure is still one, and working again clears both.
        r.record(spec, 0.1, None, Ran::Failed("broken".into()));
        let s = status(&r, name);
        assert_eq!(
            (s.last_error.as_deref(), s.not_applicable),
            (Some("broken"), None)
        );
        assert_eq!(errors(&r, name), 1);
        r.record(spec, 0.1, Some(Snapshot::default()), Ran::Worked);
        let s = status(&r, name);
        assert_eq!((s.last_error, s.not_applicable), (None, None));
    }
}
