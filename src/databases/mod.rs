//! The database sessions of a PostgreSQL target: every watched database visited for the
//! database-scope collectors (tables, imports), on a hard budget of connections.
//!
//! A target's main session (`crate::poll`) reads the cluster-wide views. Beside it, in the same
//! task, this loop holds at most `max_connections - 1` sessions, each on one database, and does
//! the per-database work. Step by step:
//!
//! 1. **Rounds.** Every `[targets.databases] refresh_interval` (1m), once the previous round
//!    has ended, a round starts with one query, over any open session, of `pg_database` and `pg_stat_database` ([`listing`]):
//!    databases created since are watched from now on (their tables read in this round);
//!    dropped ones are forgotten (series retracted, their alerts resolve because their reports
//!    are gone); and each database's write counters say whether it changed.
//! 2. **Visits.** In a round, each database that is due ([`plan`]: never visited, changed and
//!    last visited at least `[targets.tables] interval` ago, or not visited for `idle_revisit`)
//!    is visited: a session on it is reused or opened, and every enabled database-scope
//!    collector that is due runs there: `tables` at every visit, the others (`migrations`
//!    1m, `advice` 5m, `indexes` 10m) when their own `interval` has passed since their last
//!    run in that database (counted from the start of the visit it ran in, as in
//!    [`crate::poll`]'s schedule); in between, their last series and findings stay published.
//!    Visits go postponed-first, then stalest. A round stops when its `round_budget` is spent,
//!    or when a visit would have to connect and `max_connects_per_hour` is spent: the rest
//!    are postponed to the next round, first in line, never queued twice.
//! 3. **Import checks** come before visits, between any two of them (one check, then the
//!    round's next visit, so checks that are always due on a loaded server never starve the
//!    visits; [`plan::next_step`]): in every database whose
//!    last check read an audit table, every `[targets.imports] interval` (5s), sooner when a
//!    verdict waits for its confirming second look, and at once when that database's writer
//!    sends `NOTIFY pgvigil_import` — every session `LISTEN`s, so a session kept on an audit
//!    database hears it. An import check that must connect always may; its connection counts
//!    against `max_connects_per_hour`, so table visits wait instead.
//! 4. **Sessions** stay open after use; when all are taken, the least recently used one is
//!    closed, those on audit databases last ([`sessions`]). With the default budget (2) the
//!    one database session therefore stays on the audit database between rounds, and a round
//!    costs one connection per changed database plus one to come back. Opening one first
//!    waits in the process-wide line of connection attempts ([`crate::connect_gate`]); its
//!    `connect_timeout` starts when its turn comes. The loop starts with the main session's
//!    first poll (spread by target name, see [`crate::poll`]).
//!
//! Everything found is published per database: snapshots under `(collector, datname)`, one
//! [`DatabasesReport`](crate::collect::DatabasesReport) per step for the alert rules (via the hub, beside the main session's
//! observations), and `pgvigil_database_*` series. A database that cannot be entered
//! (`REVOKE CONNECT`, `pg_hba.conf`) is reported by name (`pgvigil_database_up 0`, the status
//! page, the log once) and its alerts keep their state; the others go on.
//!
//! Cost at defaults: one listing query per minute; per visit one connection if the database
//! has no open session, then the collectors' own queries (the tables query, and the import
//! check's one index scan per recent import).

mod listing;
mod plan;
mod report;
mod sessions;
mod visit;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::listing::Listed;
use self::plan::{ConnectBudget, DatabasePlan, Intervals, Step};
use self::sessions::Sessions;
use crate::collect::{DatabaseReport, Postgres, Scope};
use crate::config::TargetConfig;
use crate::hub::Hub;
use crate::poll::{PollError, Schedule, Scheduled};
use crate::status::{DatabaseStatus, now_rfc3339};
use crate::target::{self, OwnBackends};
use crate::tls;

/// How often [`State::await_gone`] asks whether a closed session left the server.
const GONE_POLL: Duration = Duration::from_millis(5);

/// The first retry after a failed round; doubled up to `refresh_interval`.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The database sessions of one target, before they run.
pub(crate) struct Lane {
    target: Arc<TargetConfig>,
    hub: Arc<Hub>,
    tls: Arc<tls::Connector>,
    tracker: TaskTracker,
    own: OwnBackends,
    /// New configurations with the same connection (a reload), applied between two steps.
    updates: watch::Receiver<Arc<TargetConfig>>,
}

impl Lane {
    pub(crate) fn new(
        target: Arc<TargetConfig>,
        hub: Arc<Hub>,
        tls: Arc<tls::Connector>,
        tracker: TaskTracker,
        own: OwnBackends,
        updates: watch::Receiver<Arc<TargetConfig>>,
    ) -> Self {
        Lane {
            target,
            hub,
            tls,
            tracker,
            own,
            updates,
        }
    }

    /// Run until `shutdown` is cancelled; the sessions are closed on the way out.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut state = State::new(self, tx);
        loop {
            let wake = state.next_wake();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sleep_until(wake) => {}
                Some((datname, payload)) = rx.recv() => state.notified(&datname, &payload),
                Ok(()) = state.lane.updates.changed() => {
                    let new = state.lane.updates.borrow_and_update().clone();
                    state.reconfigure(new);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // A visit was in flight: its query must not outlive pgvigil.
                    let limit = state.lane.target.connect_timeout;
                    for session in state.sessions.all() {
                        session.cancel(&state.lane.target.name, limit).await;
                    }
                    break;
                }
                _ = state.work(&mut rx) => {}
            }
        }
        state.sessions.close_all();
        state.lane.own.set_databases(Vec::new());
        debug!(target = %state.lane.target.name, "database sessions stopped");
    }
}

/// Whether a visit starting at `now` runs `c`, booking it for its next run if so: `imports`
/// at every visit (an import check runs nothing else; the plan schedules both), `tables` at
/// every table visit (the visits follow its interval), the others at a table visit once their
/// own interval has passed.
fn runs_in_visit(c: &mut Scheduled<Postgres>, now: Instant, tables_visit: bool) -> bool {
    match c.spec.name {
        "imports" => true,
        "tables" => tables_visit,
        _ => tables_visit && Schedule::take_due(c, now),
    }
}

/// One watched database.
struct Watched {
    /// The target's settings with this database's overrides.
    config: TargetConfig,
    /// Its database-scope collectors.
    collectors: Vec<Scheduled<Postgres>>,
    plan: DatabasePlan,
    report: DatabaseReport,
    status: DatabaseStatus,
    may_connect: bool,
    /// Unix time of the last visit.
    last_visit_unix: Option<f64>,
    notifications: u64,
}

impl Watched {
    fn new(target: &TargetConfig, datname: &str) -> Self {
        let config = target.for_database(datname);
        let collectors =
            Schedule::new(&config, config.poll_interval, Some(Scope::Database)).collectors;
        Watched {
            config,
            collectors,
            plan: DatabasePlan::new(),
            report: DatabaseReport::default(),
            status: DatabaseStatus::default(),
            may_connect: true,
            last_visit_unix: None,
            notifications: 0,
        }
    }
}

/// The loop's state.
struct State {
    lane: Lane,
    name: String,
    sessions: Sessions,
    watched: BTreeMap<String, Watched>,
    budget: ConnectBudget,
    iv: Intervals,
    next_refresh: Instant,
    refresh_failures: u32,
    /// When the current round started; `None` between rounds.
    round: Option<Instant>,
    /// An import check ran since the round's last visit: the next visit goes first
    /// ([`plan::next_step`]).
    visit_owed: bool,
    postponed: BTreeMap<&'static str, u64>,
    notices: target::Notices,
    /// Problems already logged, so each is logged once until it changes.
    logged: HashSet<String>,
    /// Missing privileges already logged (each once).
    privileges_logged: std::sync::Mutex<HashSet<String>>,
}

impl State {
    fn new(lane: Lane, notices: target::Notices) -> Self {
        let t = &lane.target;
        let now = Instant::now();
        let iv = Intervals {
            tables: t.tables.interval.unwrap_or(t.poll_interval),
            idle_revisit: t.databases.idle_revisit,
            imports: t.imports.interval.unwrap_or(t.poll_interval),
        };
        State {
            name: t.name.clone(),
            sessions: Sessions::new(t.max_connections.saturating_sub(1)),
            budget: ConnectBudget::new(t.databases.max_connects_per_hour, now),
            watched: BTreeMap::new(),
            iv,
            next_refresh: now,
            refresh_failures: 0,
            round: None,
            visit_owed: false,
            postponed: [("round_budget", 0), ("connect_budget", 0)].into(),
            notices,
            logged: HashSet::new(),
            privileges_logged: std::sync::Mutex::default(),
            lane,
        }
    }

    /// A reload changed the target's settings but not its connection: rebuild the collectors
    /// of the databases whose settings changed, keep the others' memory, and start a round at
    /// once (the selection may have changed).
    fn reconfigure(&mut self, target: Arc<TargetConfig>) {
        self.iv = Intervals {
            tables: target.tables.interval.unwrap_or(target.poll_interval),
            idle_revisit: target.databases.idle_revisit,
            imports: target.imports.interval.unwrap_or(target.poll_interval),
        };
        self.budget = ConnectBudget::new(target.databases.max_connects_per_hour, Instant::now());
        for (name, w) in &mut self.watched {
            if target.for_database(name) != w.config {
                let mut fresh = Watched::new(&target, name);
                fresh.plan = w.plan.clone();
                fresh.status = w.status.clone();
                fresh.may_connect = w.may_connect;
                *w = fresh;
            }
        }
        self.lane.target = target;
        // A new round at once, in place of the current one.
        self.next_refresh = Instant::now();
        self.round = None;
    }

    /// When there is next something to do.
    fn next_wake(&self) -> Instant {
        if self.round.is_some() {
            return Instant::now();
        }
        self.watched
            .values()
            .filter(|w| w.plan.has_audit && w.may_connect)
            .filter_map(|w| w.plan.imports_due)
            .fold(self.next_refresh, Instant::min)
    }

    fn notified(&mut self, datname: &str, payload: &str) {
        if let Some(w) = self.watched.get_mut(datname) {
            debug!(target = %self.name, datname, import_id = payload, "NOTIFY pgvigil_import");
            w.notifications += 1;
            w.plan.notified(Instant::now());
        }
    }

    /// Do everything due now: a new round, import checks, the round's visits.
    async fn work(&mut self, notices: &mut mpsc::UnboundedReceiver<(String, String)>) {
        loop {
            while let Ok((datname, payload)) = notices.try_recv() {
                self.notified(&datname, &payload);
            }
            let now = Instant::now();
            let check = self.next_check(now);
            let step = plan::next_step(
                now >= self.next_refresh,
                self.round.is_some(),
                check.is_some(),
                self.visit_owed,
            );
            match (step, check) {
                (Step::Refresh, _) => self.refresh(now).await,
                (Step::Check, Some(datname)) => {
                    self.visit(&datname, false).await;
                    self.visit_owed = true;
                }
                (Step::Visit, _) => {
                    // None: the round has ended (or was cut short); the loop goes on.
                    if let Some(datname) = self.next_visit(now) {
                        self.visit(&datname, true).await;
                    }
                    self.visit_owed = false;
                }
                (Step::Check, None) | (Step::Idle, _) => return,
            }
        }
    }

    /// The database whose import check is due, those with an open session first.
    fn next_check(&self, now: Instant) -> Option<String> {
        self.watched
            .iter()
            .filter(|(_, w)| w.may_connect && w.plan.imports_due(now))
            .min_by_key(|(name, w)| (!self.sessions.has(name), w.plan.imports_due))
            .map(|(name, _)| name.clone())
    }

    /// The next database the current round visits, if the round goes on.
    fn next_visit(&mut self, now: Instant) -> Option<String> {
        let started = self.round?;
        let sessions = &self.sessions;
        let order: Vec<String> = plan::visit_order(
            self.watched
                .iter()
                .filter(|(_, w)| w.may_connect)
                .map(|(k, w)| (k.as_str(), &w.plan, sessions.has(k))),
            now,
            &self.iv,
        )
        .into_iter()
        .map(str::to_owned)
        .collect();
        let Some(first) = order.first() else {
            self.round = None;
            return None;
        };
        // A database never visited yet is always visited (once per database: bounded), so a
        // new one is watched even while import checks keep the connect budget spent.
        let new_database = self
            .watched
            .get(first)
            .is_some_and(|w| w.plan.last_visit.is_none());
        let reason = if now.duration_since(started) >= self.lane.target.databases.round_budget {
            Some("round_budget")
        } else if !self.sessions.has(first) && !new_database && !self.budget.try_take(now) {
            Some("connect_budget")
        } else {
            None
        };
        let Some(reason) = reason else {
            return Some(first.clone());
        };
        debug!(target = %self.name, reason, postponed = order.len(), "round cut short");
        for name in &order {
            if let Some(w) = self.watched.get_mut(name) {
                w.plan.postponed = true;
            }
        }
        *self.postponed.entry(reason).or_default() += order.len() as u64;
        self.round = None;
        self.publish();
        None
    }

    /// Start a round: read the database list and write counters, follow creations and drops.
    async fn refresh(&mut self, now: Instant) {
        self.next_refresh = now + self.round_interval();
        let listed = match self.list().await {
            Ok(listed) => listed,
            Err(e) => return self.unreachable(now, &e),
        };
        if self.refresh_failures > 0 {
            info!(target = %self.name, "database list read again");
        }
        self.refresh_failures = 0;
        let selected = listing::selected(&listed, &self.lane.target.databases);
        let keep: HashSet<&str> = selected.iter().map(|l| l.datname.as_str()).collect();
        let gone: Vec<String> = self
            .watched
            .keys()
            .filter(|name| !keep.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            info!(target = %self.name, datname = %name, "database no longer watched (dropped or excluded)");
            self.watched.remove(&name);
            self.sessions.close(&name);
            self.lane
                .hub
                .metrics
                .store()
                .clear_database(&self.name, &name);
        }
        for l in selected {
            let w = self
                .watched
                .entry(l.datname.clone())
                .or_insert_with(|| Watched::new(&self.lane.target, &l.datname));
            w.plan.counters_now = l.counters;
            w.may_connect = l.may_connect;
            if !l.may_connect {
                let error = format!(
                    "pgvigil's role has no CONNECT privilege on database {}; GRANT CONNECT ON DATABASE {} TO it, or leave the database out with [targets.databases] exclude",
                    l.datname,
                    crate::config::Ident::new(&l.datname)
                        .map(|i| i.quoted())
                        .unwrap_or_default()
                );
                Self::entered(
                    &self.lane,
                    &self.name,
                    &l.datname,
                    w,
                    Err(error),
                    &mut self.logged,
                );
            }
        }
        self.own_pids();
        self.budget.set_capacity(self.watched.len(), now);
        self.round = Some(now);
        self.publish();
    }

    /// Time between two rounds: `refresh_interval`, or the tables interval if that is
    /// shorter and the tables collector is on.
    fn round_interval(&self) -> Duration {
        let t = &self.lane.target;
        let refresh = t.databases.refresh_interval;
        if t.tables.enabled {
            refresh.min(self.iv.tables)
        } else {
            refresh
        }
    }

    /// The database list, over an open session or a new one on the DSN's database.
    async fn list(&mut self) -> Result<Vec<Listed>, String> {
        self.sessions.prune();
        if self.sessions.any().is_none() {
            let datname = self.lane.target.connection.dbname().to_owned();
            self.connect(&datname, true).await?;
        }
        let session = self.sessions.any().ok_or("no database session")?;
        match listing::list(&session.client).await {
            Ok(listed) => Ok(listed),
            Err(e) => {
                let message = crate::collect::describe_pg_error(&e);
                // The session is in an unknown state: do not reuse it.
                let names: Vec<String> = self
                    .sessions
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                for name in names {
                    self.sessions.close(&name);
                }
                Err(format!("cannot list the databases: {message}"))
            }
        }
    }

    /// The cluster could not be read at all: every database is unknown until it can.
    fn unreachable(&mut self, now: Instant, error: &str) {
        self.refresh_failures += 1;
        let delay = (FIRST_RETRY * 2u32.saturating_pow(self.refresh_failures - 1))
            .min(self.round_interval());
        self.next_refresh = now + delay;
        self.round = None;
        if self.logged.insert(format!("list: {error}")) {
            warn!(target = %self.name, "database sessions: {error}; retrying");
        }
        for (name, w) in &mut self.watched {
            w.report = DatabaseReport {
                error: Some(error.to_owned()),
                ..DatabaseReport::default()
            };
            w.plan = DatabasePlan::new();
            self.lane
                .hub
                .metrics
                .store()
                .clear_database(&self.name, name);
        }
        self.own_pids();
        self.publish();
    }

    /// Open a session on `datname`, making room for it; `anyway`: an import check or the
    /// listing, which may go over the connect budget.
    async fn connect(&mut self, datname: &str, anyway: bool) -> Result<(), String> {
        let now = Instant::now();
        if anyway {
            self.budget.take_anyway(now);
        }
        let watched = &self.watched;
        let closed = self
            .sessions
            .make_room(|name| watched.get(name).is_some_and(|w| w.plan.has_audit));
        if let Some(pid) = closed {
            self.own_pids();
            self.await_gone(pid).await;
        }
        let target = &self.lane.target;
        let connection = target.connection.with_dbname(datname);
        // In line with every other attempt of the process; connect_timeout starts after.
        let permit = self.lane.hub.connects.acquire().await;
        let limit = target.connect_timeout;
        let opened = timeout(
            limit,
            target::open(
                target,
                &connection,
                &self.lane.tls,
                &self.lane.tracker,
                Some(self.notices.clone()),
                target::Purpose {
                    hub: &self.lane.hub,
                    name: "database",
                },
            ),
        )
        .await
        .unwrap_or(Err(PollError::ConnectTimeout {
            limit,
            waited: permit.waited(),
        }));
        drop(permit);
        self.lane
            .hub
            .metrics
            .connect_attempt(&self.name, "database", opened.is_ok());
        let session = opened.map_err(|e| e.to_string())?;
        // The first session may be opened for the listing, before the database is watched.
        let config = match self.watched.get(datname) {
            Some(w) => std::borrow::Cow::Borrowed(&w.config),
            None => std::borrow::Cow::Owned(target.for_database(datname)),
        };
        crate::privileges::report_missing(
            &self.lane.hub,
            &session.client,
            &config,
            Scope::Database,
            &self.privileges_logged,
        )
        .await;
        self.sessions.insert(datname, session, Instant::now());
        self.own_pids();
        Ok(())
    }

    /// Wait until the backend of a session just closed has left the server (it takes the
    /// server a moment to act on the goodbye), asked over the main session; at most
    /// `statement_timeout`, and not at all while the main session is down.
    async fn await_gone(&self, pid: i32) {
        let Some(main) = self.lane.own.main_client() else {
            return;
        };
        let deadline = Instant::now() + self.lane.target.statement_timeout;
        while Instant::now() < deadline {
            let present = main
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await;
            match present {
                Ok(Some(_)) => tokio::time::sleep(GONE_POLL).await,
                _ => return,
            }
        }
        debug!(target = %self.name, pid, "a closed database session is still on the server");
    }

    fn own_pids(&self) {
        self.lane.own.set_databases(self.sessions.pids());
    }
}

/// Now as Unix time.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Now for the status page.
fn now_text() -> String {
    now_rfc3339()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, LibpqEnv};

    fn watched(extra: &str) -> Watched {
        let text = format!("[[targets]]\nname = \"main\"\ndsn = \"host=h dbname=app\"\n{extra}");
        let config = Config::parse(Path::new("pgvigil.toml"), &text, &LibpqEnv::default()).unwrap();
        Watched::new(&config.targets[0], "app")
    }

    /// The collectors a table visit (or an import check) at `at` runs, in registry order.
    fn run_at(w: &mut Watched, at: Instant, tables_visit: bool) -> Vec<&'static str> {
        w.collectors
            .iter_mut()
            .filter_map(|c| runs_in_visit(c, at, tables_visit).then_some(c.spec.name))
            .collect()
    }

    #[test]
    fn a_visit_runs_each_collector_on_its_own_interval() {
        let mut w = watched("[targets.migrations]\ninterval = \"2m\"\n");
        let t0 = Instant::now();
        let every = ["tables", "imports", "migrations", "indexes", "advice"];
        let mut first = run_at(&mut w, t0, true);
        first.sort_unstable();
        let mut expected = every.to_vec();
        expected.sort_unstable();
        assert_eq!(first, expected, "the first visit runs every collector");
        let minute = Duration::from_secs(60);
        let at = |m: u32| t0 + minute * m;
        assert_eq!(run_at(&mut w, at(1), true), ["tables", "imports"]);
        assert_eq!(
            run_at(&mut w, at(2), true),
            ["tables", "imports", "migrations"]
        );
        // An import check runs nothing but the import check, and books nothing.
        assert_eq!(run_at(&mut w, at(5), false), ["imports"]);
        let fifth = run_at(&mut w, at(5), true);
        assert!(
            fifth.contains(&"advice") && !fifth.contains(&"indexes"),
            "{fifth:?}"
        );
        // A visit later than due runs it then, and the next run counts from that visit.
        let late = run_at(&mut w, at(11), true);
        assert!(late.contains(&"indexes"), "{late:?}");
        assert!(!run_at(&mut w, at(20), true).contains(&"indexes"));
        assert!(run_at(&mut w, at(21), true).contains(&"indexes"));
    }
}
