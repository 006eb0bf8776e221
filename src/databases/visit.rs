//! One visit of one database: enter it (reusing its session or opening one), run its
//! database-scope collectors there, and record each outcome — its snapshot under
//! `(collector, datname)`, `pgvigil_poll_*`, the collector's status, its part of the
//! database's report.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{State, Watched, now_text, plan, unix_now};
use crate::collect::{DatabasesReport, Observations, PollContext, Ran, session};
use crate::status::CollectorStatus;

impl State {
    /// Visit `datname`: every database-scope collector (`tables`, a visit of a round), or
    /// only the import check.
    pub(super) async fn visit(&mut self, datname: &str, tables: bool) {
        let now = Instant::now();
        if !self.sessions.has(datname) {
            let result = self.connect(datname, !tables).await;
            let Some(w) = self.watched.get_mut(datname) else {
                return;
            };
            let failed = result.is_err();
            Self::entered(&self.lane, &self.name, datname, w, result, &mut self.logged);
            if failed {
                // Try again at the next round (or visit), not at once.
                if tables {
                    w.plan.visited(now);
                }
                w.plan.imports_due = Some(now + self.iv.tables.max(self.iv.imports));
                self.publish();
                return;
            }
        }
        let shares = self.shares();
        let Some(w) = self.watched.get_mut(datname) else {
            return;
        };
        let Some(session) = self.sessions.get(datname, now) else {
            return;
        };
        let ctx = PollContext {
            client: &session.client,
            prepared: &session.prepared,
            target: &w.config,
            server: &session.server,
            database: datname,
            own_backends: Vec::new(),
            max_tables: shares.get(datname).copied(),
        };
        let version = session.server.version_num;
        let default_limit = w.config.statement_timeout * 2 + Duration::from_secs(1);
        let mut lost = false;
        let mut checked = false;
        // A visit checks imports only where no audit table is known yet (it finds them) or
        // the check is due anyway; elsewhere they keep their own schedule.
        let check_imports = !tables || !w.plan.has_audit || w.plan.imports_due(now);
        let Watched {
            collectors,
            report,
            status: w_status,
            ..
        } = w;
        for c in collectors.iter_mut() {
            let is_imports = c.spec.name == "imports";
            if (is_imports && !check_imports)
                || !c.spec.versions.supports(version)
                || !super::runs_in_visit(c, now, tables)
            {
                continue;
            }
            let (spec, collector) = (c.spec, &mut c.collector);
            checked |= is_imports;
            let span = info_span!("poll", target = %self.name, datname, collector = spec.name);
            let limit = collector.time_limit(default_limit);
            let started = Instant::now();
            let mut found = Observations::default();
            let result = timeout(limit, collector.collect(&ctx, &mut found))
                .instrument(span)
                .await;
            let seconds = started.elapsed().as_secs_f64();
            let (snapshot, ran) = match result {
                Ok(result) => Ran::of(result),
                Err(_) => {
                    lost = true;
                    (
                        None,
                        Ran::Failed(format!(
                            "no answer within {}; the session will be reopened",
                            humantime::format_duration(limit)
                        )),
                    )
                }
            };
            let hub = &self.lane.hub;
            hub.metrics
                .poll_finished(&self.name, spec.name, seconds, ran.error().is_none());
            match snapshot {
                Some(snapshot) => hub
                    .metrics
                    .store()
                    .publish_part(&self.name, spec.name, datname, snapshot),
                None => hub
                    .metrics
                    .store()
                    .retract_part(&self.name, spec.name, datname),
            }
            let failed = ran.error().is_some();
            // The collector's part of the database's report: what it found, or nothing.
            if !matches!(ran, Ran::Worked) {
                found = Observations::default();
            }
            found.database_mut(datname);
            let mut into = Observations {
                databases: Some(DatabasesReport {
                    databases: BTreeMap::from([(datname.to_owned(), report.clone())]),
                }),
                ..Observations::default()
            };
            (spec.carry)(&found, &mut into);
            if let Some(updated) = into.databases.and_then(|mut d| d.databases.remove(datname)) {
                *report = updated;
            }
            match &ran {
                Ran::NotApplicable(reason) => w_status
                    .not_applicable
                    .insert(spec.name.to_owned(), format!("not applicable: {reason}")),
                _ => w_status.not_applicable.remove(spec.name),
            };
            record_status(
                &self.lane.hub,
                &self.name,
                datname,
                spec.name,
                seconds,
                ran,
                &mut self.logged,
            );
            if failed && !lost {
                // What the failure may have left of a transaction is ended, or the session
                // is given up (see crate::collect::session).
                match timeout(default_limit, session::settle(&session.client)).await {
                    Ok(Ok(settled)) => {
                        if let Some(what) = settled.describe() {
                            warn!(target = %self.name, datname, collector = spec.name, "{what}");
                        }
                    }
                    Ok(Err(error)) => {
                        warn!(target = %self.name, datname, collector = spec.name, "the session could not be reset after the failure ({error}); it is closed");
                        lost = true;
                    }
                    Err(_) => lost = true,
                }
            }
            if lost || session.client.is_closed() {
                lost = true;
                break;
            }
        }
        let imports = report.imports.clone();
        if lost {
            self.sessions.close(datname);
            self.lane.own.set_databases(self.sessions.pids());
        }
        if tables {
            w.plan.visited(now);
            w.last_visit_unix = Some(unix_now());
            w.status.last_visit = Some(now_text());
        }
        if checked {
            let has_audit = imports
                .as_ref()
                .map_or(w.plan.has_audit, |r| !r.audit_tables.is_empty());
            let look_again = imports
                .as_ref()
                .and_then(|r| r.look_again_in)
                .map(|d| Instant::now() + d);
            w.plan
                .checked(Instant::now(), has_audit, look_again, &self.iv);
        }
        self.publish();
    }

    /// Each database's share of `max_tables_total`.
    fn shares(&self) -> BTreeMap<String, usize> {
        let matched = self
            .watched
            .iter()
            .map(|(name, w)| {
                let had = w.report.tables.as_ref().map(|t| t.tables.len() + t.omitted);
                (name.clone(), (had, w.config.tables.max_tables))
            })
            .collect();
        plan::table_shares(&matched, self.lane.target.tables.max_tables_total)
    }
}

/// The collector's status after a run in one database, a failure logged once until it
/// changes. A collector that does not apply in this database leaves the collector's status as
/// its other databases made it (the database's own status names it, see `super::report`) and
/// is logged once per database, at info.
fn record_status(
    hub: &crate::hub::Hub,
    target: &str,
    datname: &str,
    collector: &'static str,
    seconds: f64,
    ran: Ran,
    logged: &mut std::collections::HashSet<String>,
) {
    let key = format!("{datname}: {collector}: ");
    let not_applicable = format!("{datname}: not applicable: {collector}");
    if !matches!(ran, Ran::NotApplicable(_)) {
        logged.remove(&not_applicable);
    }
    let status = match ran {
        Ran::Worked => {
            if logged.iter().any(|l| l.starts_with(&key)) {
                logged.retain(|l| !l.starts_with(&key));
                info!(target = %target, datname, collector, "poll succeeded again");
            }
            Some(CollectorStatus {
                last_duration_seconds: seconds,
                last_success: Some(now_text()),
                last_error: None,
                not_applicable: None,
            })
        }
        Ran::NotApplicable(reason) => {
            logged.retain(|l| !l.starts_with(&key));
            if logged.insert(not_applicable) {
                info!(target = %target, datname, collector, "the collector does not apply in this database: {reason}");
            }
            None
        }
        Ran::Degraded(error) | Ran::Failed(error) => {
            if logged.insert(format!("{key}{error}")) {
                warn!(target = %target, datname, collector, "poll failed: {error}");
            } else {
                debug!(target = %target, datname, collector, "poll failed again: {error}");
            }
            Some(CollectorStatus {
                last_duration_seconds: seconds,
                last_success: None,
                last_error: Some(format!("{datname}: {error}")),
                not_applicable: None,
            })
        }
    };
    hub.status.update(target, |s| {
        let previous = s.collectors.remove(collector);
        let status = merged(status, previous, datname, seconds);
        s.collectors.insert(collector.to_owned(), status);
    });
}

/// A database-scope collector's status after a run in `datname`: the run's own (`None`: it
/// did not apply there) over what its runs in the other databases left.
fn merged(
    status: Option<CollectorStatus>,
    previous: Option<CollectorStatus>,
    datname: &str,
    seconds: f64,
) -> CollectorStatus {
    match (status, previous) {
        (Some(mut status), previous) => {
            if status.last_success.is_none() {
                status.last_success = previous.as_ref().and_then(|p| p.last_success.clone());
            }
            status.not_applicable = previous.and_then(|p| p.not_applicable);
            status
        }
        // This database's own error is over; another database's stays.
        (None, Some(mut previous)) => {
            if previous
                .last_error
                .as_ref()
                .is_some_and(|e| e.starts_with(&format!("{datname}: ")))
            {
                previous.last_error = None;
            }
            previous
        }
        (None, None) => CollectorStatus {
            last_duration_seconds: seconds,
            last_success: None,
            last_error: None,
            not_applicable: None,
        },
    }
}
