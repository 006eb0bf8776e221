//! The server itself: its role (primary or standby), when it started, its timeline, when it
//! last loaded its configuration, the settings that wait for a restart, and the numeric
//! settings the runbooks cite.
//!
//! One poll, over the main session:
//!
//! 1. [`STATUS_SQL`]: one row of functions (`pg_is_in_recovery()`,
//!    `pg_postmaster_start_time()`, `pg_conf_load_time()`, the last checkpoint's timeline from
//!    `pg_control_checkpoint()` when pgvigil may execute it);
//! 2. [`SETTINGS_SQL`]: the rows of `pg_settings` named in [`SETTINGS`] plus every row with
//!    `pending_restart` — only when the configuration was (re)loaded or the server restarted
//!    since the last read, since neither can change otherwise (`pg_settings` builds all of
//!    its ~350 rows, the costliest part of this collector); values are `reset_val`, the
//!    server's own, not pgvigil's session settings (`statement_timeout`, `lock_timeout`);
//! 3. [`Server::summarise`] (pure): values converted to base units (bytes, seconds), and the
//!    restart and role change detected against the previous poll.
//!
//! Cost: two catalog reads of a few dozen rows, no table touched and no lock taken, so they
//! run while a DDL holds ACCESS EXCLUSIVE on any table. Versions: the same SQL on 13 to 18; a
//! setting a version lacks (`reserved_connections` before 16, say) is an absent series.
//!
//! A restart or a role change is seen by comparing with the previous poll of the same
//! collector, which lives as long as the target's poll loop (reconnects included): pgvigil
//! restarting at the same time as the server misses it. Once seen, the event is reported in
//! every poll for [`EVENT_REPORTED_FOR`] (server time) rather than in one poll only, so that a
//! poll whose observations never reach the alert engine (its session dropped by a later
//! collector's failure, a full alert inbox) cannot lose the restart or the promotion.

use std::collections::BTreeMap;

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::metrics::{self, Snapshot};

/// The server's own facts: one row.
pub const STATUS_SQL: &str = "
SELECT pg_is_in_recovery(),
       extract(epoch FROM pg_postmaster_start_time())::float8,
       extract(epoch FROM pg_conf_load_time())::float8,
       extract(epoch FROM now())::float8,
       CASE WHEN has_function_privilege('pg_catalog.pg_control_checkpoint()', 'EXECUTE')
            THEN (SELECT timeline_id FROM pg_control_checkpoint())::float8 END";

/// The cited settings and every setting pending a restart.
pub const SETTINGS_SQL: &str = "
SELECT name, reset_val, coalesce(unit, ''), vartype, pending_restart
  FROM pg_settings
 WHERE name = ANY($1) OR pending_restart";

/// The settings exported as `pgvigil_setting`: what the runbooks cite.
pub const SETTINGS: &[&str] = &[
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "max_wal_size",
    "min_wal_size",
    "wal_keep_size",
    "max_slot_wal_keep_size",
    "checkpoint_timeout",
    "max_wal_senders",
    "max_replication_slots",
    "hot_standby_feedback",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "max_worker_processes",
    "autovacuum",
    "autovacuum_max_workers",
    "autovacuum_freeze_max_age",
    "autovacuum_multixact_freeze_max_age",
    "vacuum_failsafe_age",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "deadlock_timeout",
    "track_io_timing",
    "data_checksums",
];

/// One `pg_settings` row.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingRow {
    /// `name`.
    pub name: String,
    /// `reset_val` (the server's value, whatever the session set), as text.
    pub setting: String,
    /// `unit` (`8kB`, `ms`, ...), empty if none.
    pub unit: String,
    /// `vartype`: bool, integer, real, string, enum.
    pub vartype: String,
    /// Changed in the files, waiting for a restart.
    pub pending_restart: bool,
}

/// What the status query returned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Postmaster start, Unix seconds.
    pub start_time: f64,
    /// Last configuration load, Unix seconds.
    pub config_load_time: f64,
    /// The server's `now()`, Unix seconds.
    pub now: f64,
    /// The last checkpoint's timeline, if readable.
    pub timeline: Option<f64>,
}

/// How long after a restart (from the new postmaster start time) or a role change (from the
/// poll that saw it) the report keeps saying so. The rules hold while it does, and then for
/// their `keep_firing_for`.
pub const EVENT_REPORTED_FOR: f64 = 300.0;

/// A restart seen between two polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restart {
    /// The start time before.
    pub previous_start_time: f64,
    /// The start time now.
    pub start_time: f64,
}

/// What the server collector learnt in one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerReport {
    /// The status row.
    pub status: Status,
    /// Set from the poll that first sees a new postmaster start time, for
    /// [`EVENT_REPORTED_FOR`] after that start.
    pub restart: Option<Restart>,
    /// Set from the poll that first sees the role change, for [`EVENT_REPORTED_FOR`]: whether
    /// the server *was* in recovery.
    pub role_changed_from: Option<bool>,
    /// Settings waiting for a restart, by name, with their current (running) value.
    pub pending_restart: BTreeMap<String, String>,
    /// The cited settings in base units.
    pub settings: BTreeMap<String, f64>,
}

/// The server collector. It remembers the last poll's start time and role.
#[derive(Debug, Default)]
pub struct Server {
    last: Option<Status>,
    /// The last restart seen.
    restart: Option<Restart>,
    /// The last role change seen: the role before, and the server time of the poll that saw it.
    role_change: Option<(bool, f64)>,
    /// The settings rows and the (configuration load, start) times they were read at.
    settings: Option<((f64, f64), Vec<SettingRow>)>,
}

impl Server {
    /// Turn one poll's rows into series and a report, against the previous poll.
    pub fn summarise(&mut self, status: Status, rows: Vec<SettingRow>) -> (Snapshot, ServerReport) {
        let previous = self.last.replace(status);
        // pg_postmaster_start_time() is the same value, to the microsecond, at every poll of one
        // postmaster; a restart can take well under a second, so any change is one.
        if let Some(p) = previous.filter(|p| (p.start_time - status.start_time).abs() > 1e-3) {
            self.restart = Some(Restart {
                previous_start_time: p.start_time,
                start_time: status.start_time,
            });
        }
        if let Some(p) = previous.filter(|p| p.in_recovery != status.in_recovery) {
            self.role_change = Some((p.in_recovery, status.now));
        }
        let restart = self
            .restart
            .filter(|r| status.now - r.start_time < EVENT_REPORTED_FOR);
        let role_changed_from = self
            .role_change
            .filter(|(was, seen)| {
                *was != status.in_recovery && status.now - seen < EVENT_REPORTED_FOR
            })
            .map(|(was, _)| was);
        let mut report = ServerReport {
            status,
            restart,
            role_changed_from,
            pending_restart: BTreeMap::new(),
            settings: BTreeMap::new(),
        };
        for row in rows {
            if row.pending_restart {
                report
                    .pending_restart
                    .insert(row.name.clone(), row.setting.clone());
            }
            if SETTINGS.contains(&row.name.as_str()) {
                if let Some(value) = setting_value(&row) {
                    report.settings.insert(row.name, value);
                }
            }
        }

        let mut snap = Snapshot::default();
        snap.set(
            &metrics::SERVER_IN_RECOVERY,
            f64::from(u8::from(status.in_recovery)),
        );
        snap.set(&metrics::SERVER_START_TIME, status.start_time);
        snap.set(
            &metrics::SERVER_UPTIME,
            (status.now - status.start_time).max(0.0),
        );
        snap.set(&metrics::SERVER_CONFIG_LOAD_TIME, status.config_load_time);
        if let Some(timeline) = status.timeline {
            snap.set(&metrics::SERVER_TIMELINE, timeline);
        }
        snap.set(
            &metrics::SETTINGS_PENDING_RESTART,
            report.pending_restart.len() as f64,
        );
        for name in report.pending_restart.keys() {
            snap.push(&metrics::SETTING_PENDING_RESTART, vec![name.clone()], 1.0);
        }
        for (name, value) in &report.settings {
            snap.push(&metrics::SETTING, vec![name.clone()], *value);
        }
        (snap, report)
    }
}

/// The cited settings and those pending a restart.
async fn read_settings(ctx: &PollContext<'_>) -> Result<Vec<SettingRow>, CollectError> {
    let names: Vec<&str> = SETTINGS.to_vec();
    let rows = ctx.query(SETTINGS_SQL, &[&names]).await?;
    let settings = rows
        .iter()
        .map(|r| {
            Ok(SettingRow {
                name: r.try_get(0)?,
                setting: r.try_get(1)?,
                unit: r.try_get(2)?,
                vartype: r.try_get(3)?,
                pending_restart: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    Ok(settings)
}

/// A setting's value in base units: memory in bytes, time in seconds, booleans 0/1; `None` for
/// strings, enums and values that do not parse (`-1` stays `-1`: "no limit" or "default").
pub fn setting_value(row: &SettingRow) -> Option<f64> {
    match row.vartype.as_str() {
        "bool" => Some(if row.setting == "on" { 1.0 } else { 0.0 }),
        "integer" | "real" => {
            let value: f64 = row.setting.parse().ok()?;
            if value < 0.0 {
                return Some(value);
            }
            let factor = match row.unit.as_str() {
                "" => 1.0,
                "B" => 1.0,
                "kB" => 1024.0,
                "8kB" => 8192.0,
                "16kB" => 16384.0,
                "32kB" => 32768.0,
                "MB" => 1024.0 * 1024.0,
                "16MB" => 16.0 * 1024.0 * 1024.0,
                "GB" => 1024.0 * 1024.0 * 1024.0,
                "us" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "min" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return None,
            };
            Some(value * factor)
        }
        _ => None,
    }
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "server",
    table: "server",
    reads: "pg_is_in_recovery, postmaster start time, timeline, pg_conf_load_time, pg_settings (pending_restart and the settings the runbooks cite)",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::SERVER_METRICS,
    section: |t| &t.server,
    build: |_| Box::new(Server::default()),
    carry: |from, to| to.server = from.server.clone(),
};

impl ReportCollector for Server {
    const NAME: &'static str = SPEC.name;
    type Report = ServerReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, ServerReport), CollectError> {
        let row = ctx.query_one(STATUS_SQL, &[]).await?;
        let status = Status {
            in_recovery: row.try_get(0)?,
            start_time: row.try_get(1)?,
            config_load_time: row.try_get(2)?,
            now: row.try_get(3)?,
            timeline: row.try_get(4)?,
        };
        let read_at = (status.config_load_time, status.start_time);
        let settings = match self.settings.take() {
            Some((at, rows)) if at == read_at => rows,
            _ => read_settings(ctx).await?,
        };
        self.settings = Some((read_at, settings.clone()));
        Ok(self.summarise(status, settings))
    }

    fn store(report: ServerReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.server = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(start: f64, in_recovery: bool) -> Status {
        Status {
            in_recovery,
            start_time: start,
            config_load_time: start + 1.0,
            now: start + 100.0,
            timeline: Some(1.0),
        }
    }

    fn setting(name: &str, setting: &str, unit: &str, vartype: &str, pending: bool) -> SettingRow {
        SettingRow {
            name: name.into(),
            setting: setting.into(),
            unit: unit.into(),
            vartype: vartype.into(),
            pending_restart: pending,
        }
    }

    #[test]
    fn values_are_in_base_units() {
        let v = |s, u, t| setting_value(&setting("x", s, u, t, false));
        assert_eq!(v("16384", "8kB", "integer"), Some(134_217_728.0));
        assert_eq!(v("4096", "kB", "integer"), Some(4_194_304.0));
        assert_eq!(v("1024", "MB", "integer"), Some(1_073_741_824.0));
        assert_eq!(v("300", "s", "integer"), Some(300.0));
        assert_eq!(v("1000", "ms", "integer"), Some(1.0));
        assert_eq!(v("-1", "MB", "integer"), Some(-1.0));
        assert_eq!(v("on", "", "bool"), Some(1.0));
        assert_eq!(v("off", "", "bool"), Some(0.0));
        assert_eq!(v("replica", "", "enum"), None);
        assert_eq!(v("12", "lightyears", "integer"), None);
    }

    #[test]
    fn restart_and_role_change_are_reported_for_a_while_after_they_are_seen() {
        // A restart that took 0.2 s is a restart.
        let mut quick = Server::default();
        quick.summarise(status(1000.0, false), vec![]);
        let (_, restarted) = quick.summarise(status(1000.2, false), vec![]);
        assert!(restarted.restart.is_some());

        let mut server = Server::default();
        let (snap, first) = server.summarise(status(1000.0, false), vec![]);
        assert_eq!((first.restart, first.role_changed_from), (None, None));
        assert_eq!(snap.get(&metrics::SERVER_UPTIME)[0].value, 100.0);
        assert_eq!(snap.get(&metrics::SERVER_IN_RECOVERY)[0].value, 0.0);
        let (_, same) = server.summarise(status(1000.0, false), vec![]);
        assert_eq!(same.restart, None);
        let (_, restarted) = server.summarise(status(2000.0, true), vec![]);
        assert_eq!(
            restarted.restart,
            Some(Restart {
                previous_start_time: 1000.0,
                start_time: 2000.0
            })
        );
        assert_eq!(restarted.role_changed_from, Some(false));
        // A later poll within the window still says so (one lost poll cannot lose the event)...
        let (_, again) = server.summarise(status(2000.0, true), vec![]);
        assert_eq!(again.restart, restarted.restart);
        assert_eq!(again.role_changed_from, Some(false));
        // ...and once the window has passed, nothing is reported.
        let later = Status {
            now: 2100.0 + EVENT_REPORTED_FOR,
            ..status(2000.0, true)
        };
        let (_, after) = server.summarise(later, vec![]);
        assert_eq!((after.restart, after.role_changed_from), (None, None));
        // A role that changes back ends the report at once.
        let (_, back) = server.summarise(status(2000.0, false), vec![]);
        assert_eq!(back.role_changed_from, Some(true));
        let (_, back_again) = server.summarise(status(2000.0, true), vec![]);
        assert_eq!(back_again.role_changed_from, Some(false));
    }

    #[test]
    fn pending_restart_settings_are_counted_and_named() {
        let mut server = Server::default();
        let rows = vec![
            setting("shared_buffers", "16384", "8kB", "integer", true),
            setting("max_connections", "100", "", "integer", false),
            setting("wal_level", "replica", "", "enum", true),
        ];
        let (snap, report) = server.summarise(status(1.0, false), rows);
        assert_eq!(snap.get(&metrics::SETTINGS_PENDING_RESTART)[0].value, 2.0);
        let named: Vec<&str> = snap
            .get(&metrics::SETTING_PENDING_RESTART)
            .iter()
            .map(|s| s.labels[0].as_str())
            .collect();
        assert_eq!(named, ["shared_buffers", "wal_level"]);
        assert_eq!(report.settings["max_connections"], 100.0);
        assert_eq!(report.settings["shared_buffers"], 134_217_728.0);
        // wal_level is not a cited setting and an enum: no value series.
        assert!(!report.settings.contains_key("wal_level"));
        assert!(snap.get(&metrics::SERVER_TIMELINE)[0].value == 1.0);
    }
}
