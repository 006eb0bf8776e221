//! Which collectors of a source are due, and when the loop should wake next: each collector
//! runs on its own interval. Pure (time is passed in), so it is tested without a database.
//!
//! A collector that runs in a poll started at `t` is next due at `t + interval`, measured from
//! the poll's start, so collectors with the same interval stay together and a slow poll does
//! not drift the ones after it. The loop wakes at the earliest due time; a poll that overran
//! it starts the next one when it ends, never queueing polls up.

use std::time::Duration;

use tokio::time::Instant;

use crate::collect::{Collector, CollectorSpec, Scope, SourceType};

/// One collector of a source with its schedule.
pub(crate) struct Scheduled<S: SourceType> {
    pub(crate) spec: &'static CollectorSpec<S>,
    pub(crate) collector: Box<dyn Collector<S>>,
    pub(crate) interval: Duration,
    /// When it is next due; `None`: now (never run, or the session is new).
    next_due: Option<Instant>,
    /// The connected server's version is outside the collector's `versions`.
    pub(crate) unsupported: bool,
}

impl<S: SourceType> std::fmt::Debug for Scheduled<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduled")
            .field("collector", &self.spec.name)
            .field("interval", &self.interval)
            .field("next_due", &self.next_due)
            .finish()
    }
}

/// Every enabled collector of a source, in the registry's order.
#[derive(Debug)]
pub(crate) struct Schedule<S: SourceType> {
    pub(crate) collectors: Vec<Scheduled<S>>,
    /// Only collectors of this scope, if set.
    scope: Option<Scope>,
}

impl<S: SourceType> Schedule<S> {
    /// Build the collectors `config` enables (of `scope` only, if given); `poll_interval` is
    /// the interval of those without one of their own.
    pub(crate) fn new(config: &S::Config, poll_interval: Duration, scope: Option<Scope>) -> Self {
        let collectors = S::COLLECTORS
            .iter()
            .filter(|spec| spec.enabled(config))
            .filter(|spec| scope.is_none_or(|scope| spec.scope == scope))
            .map(|spec| Scheduled {
                spec,
                collector: (spec.build)(config),
                interval: spec.interval(config, poll_interval),
                next_due: None,
                unsupported: false,
            })
            .collect();
        Schedule { collectors, scope }
    }

    /// Apply a changed configuration of the same source in place: a collector whose table is
    /// unchanged keeps its state and schedule; a changed one is rebuilt (and runs at the next
    /// poll); a newly enabled one is added, a disabled one dropped. Returns the dropped names.
    pub(crate) fn reconfigure(
        &mut self,
        old: &S::Config,
        new: &S::Config,
        poll_interval: Duration,
    ) -> Vec<&'static str> {
        let mut kept: Vec<Scheduled<S>> = std::mem::take(&mut self.collectors);
        let mut dropped: Vec<&'static str> = Vec::new();
        let scope = self.scope;
        for spec in S::COLLECTORS
            .iter()
            .filter(|spec| scope.is_none_or(|scope| spec.scope == scope))
        {
            let position = kept.iter().position(|c| c.spec.name == spec.name);
            let existing = position.map(|i| kept.remove(i));
            if !spec.enabled(new) {
                if existing.is_some() {
                    dropped.push(spec.name);
                }
                continue;
            }
            let interval = spec.interval(new, poll_interval);
            let same = (spec.section)(old).same((spec.section)(new));
            let scheduled = match existing {
                Some(mut c) if same => {
                    c.interval = interval;
                    c
                }
                Some(c) => Scheduled {
                    collector: (spec.build)(new),
                    interval,
                    next_due: None,
                    ..c
                },
                None => Scheduled {
                    spec,
                    collector: (spec.build)(new),
                    interval,
                    next_due: None,
                    unsupported: false,
                },
            };
            self.collectors.push(scheduled);
        }
        dropped
    }

    /// A new session: everything is due at once, and the server's version decides which
    /// collectors can run (`None`: unknown, all run).
    pub(crate) fn reset(&mut self, version_num: Option<i32>) {
        for c in &mut self.collectors {
            c.next_due = None;
            c.unsupported = version_num.is_some_and(|v| !c.spec.versions.supports(v));
        }
    }

    /// Whether `c` runs in the poll that starts at `started`; if so, it is booked for its next
    /// run.
    pub(crate) fn take_due(c: &mut Scheduled<S>, started: Instant) -> bool {
        if c.unsupported || c.next_due.is_some_and(|due| due > started) {
            return false;
        }
        c.next_due = Some(started + c.interval);
        true
    }

    /// When the next poll is due; `None` when no collector can run (then the loop still
    /// polls every `poll_interval`, to stay up and evaluate its rules).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.collectors
            .iter()
            .filter(|c| !c.unsupported)
            .map(|c| c.next_due.unwrap_or_else(Instant::now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Postgres;
    use crate::config::{ConnectionSpec, LibpqEnv, TargetConfig};

    fn target() -> TargetConfig {
        let connection = ConnectionSpec::parse("host=h", &LibpqEnv::default()).unwrap();
        TargetConfig::new("t", connection)
    }

    fn due(schedule: &mut Schedule<Postgres>, at: Instant) -> Vec<&'static str> {
        schedule
            .collectors
            .iter_mut()
            .filter_map(|c| Schedule::take_due(c, at).then_some(c.spec.name))
            .collect()
    }

    /// The enabled collectors of `config` supported on PostgreSQL 17 that are due `elapsed`
    /// after the first poll: those whose interval divides it. Computed from the registry, so
    /// adding a collector does not rewrite this test.
    fn expected_due(config: &TargetConfig, elapsed: Duration) -> Vec<&'static str> {
        crate::collect::registry::POSTGRES
            .iter()
            .filter(|spec| spec.enabled(config) && spec.versions.supports(170000))
            .filter(|spec| {
                let interval = spec.interval(config, Duration::from_secs(15)).as_secs();
                elapsed.as_secs() % interval == 0
            })
            .map(|spec| spec.name)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn each_collector_runs_on_its_own_interval() {
        let mut config = target();
        config.imports.enabled = false;
        // The server-health collectors run every poll or every 5 minutes; not this test's.
        config.server.enabled = false;
        config.database_stats.enabled = false;
        config.wraparound.enabled = false;
        config.database_sizes.enabled = false;
        config.replication.enabled = false;
        config.replication_slots.enabled = false;
        config.archiver.enabled = false;
        config.wal_directory.enabled = false;
        // Nor the locks collector's 5 s fast sample (issue 14: lock queues).
        config.locks.enabled = false;
        let mut schedule = Schedule::<Postgres>::new(&config, Duration::from_secs(15), None);
        schedule.reset(Some(170000));
        let t0 = Instant::now();
        let all = expected_due(&config, Duration::ZERO);
        assert!(
            all.starts_with(&["activity", "statements", "tables"]),
            "{all:?}"
        );
        assert_eq!(due(&mut schedule, t0), all);
        assert_eq!(schedule.next_due(), Some(t0 + Duration::from_secs(15)));
        let t1 = t0 + Duration::from_secs(15);
        let at_poll_interval = expected_due(&config, Duration::from_secs(15));
        assert!(
            !at_poll_interval.contains(&"tables"),
            "{at_poll_interval:?}"
        );
        assert_eq!(due(&mut schedule, t1), at_poll_interval);
        let t4 = t0 + Duration::from_secs(60);
        let minute = expected_due(&config, Duration::from_secs(60));
        assert!(minute.contains(&"tables"), "{minute:?}");
        assert_eq!(due(&mut schedule, t4), minute);
        // A new session runs everything at once.
        schedule.reset(Some(170000));
        assert_eq!(due(&mut schedule, t4 + Duration::from_secs(1)), all);
    }

    #[test]
    fn a_scope_keeps_only_its_collectors() {
        let config = target();
        let names = |scope| {
            Schedule::<Postgres>::new(&config, Duration::from_secs(15), Some(scope))
                .collectors
                .iter()
                .map(|c| c.spec.name)
                .collect::<Vec<_>>()
        };
        let registered = |scope| {
            crate::collect::registry::POSTGRES
                .iter()
                .filter(|spec| spec.scope == scope)
                .map(|spec| spec.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Scope::Cluster), registered(Scope::Cluster));
        assert!(names(Scope::Cluster).contains(&"activity"));
        assert_eq!(
            names(Scope::Database),
            ["tables", "imports", "migrations", "indexes", "advice"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_config_rebuilds_only_what_changed() {
        let old = target();
        let mut schedule = Schedule::<Postgres>::new(&old, Duration::from_secs(15), None);
        schedule.reset(Some(170000));
        let t0 = Instant::now();
        due(&mut schedule, t0);
        let mut new = old.clone();
        new.imports.enabled = false;
        new.tables.max_tables = 10;
        let dropped = schedule.reconfigure(&old, &new, Duration::from_secs(15));
        assert_eq!(dropped, ["imports"]);
        // tables was rebuilt and is due at once; activity and statements keep their schedule.
        assert_eq!(due(&mut schedule, t0 + Duration::from_secs(1)), ["tables"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_collector_the_server_cannot_run_is_skipped() {
        let config = target();
        let mut schedule = Schedule::<Postgres>::new(&config, Duration::from_secs(15), None);
        schedule.reset(Some(120000));
        assert!(due(&mut schedule, Instant::now()).is_empty());
        assert_eq!(schedule.next_due(), None);
    }
}
