//! Replication, seen from both sides: the standbys a server streams to
//! (`pg_stat_replication`), and, on a standby, how far it has received and replayed and
//! whether its WAL receiver streams (`pg_stat_wal_receiver`).
//!
//! # The poll, step by step
//!
//! 1. One statement (`REPLICATION_SQL` in `sql.rs`) returns a row per WAL sender, each carrying
//!    the server's own columns: `pg_is_in_recovery()`, the WAL position standbys are measured
//!    against (the current one on a primary, the replayed one on a cascading standby), the
//!    received and replayed positions, whether replay is paused, and the WAL receiver's
//!    status, the primary's last announced position and the age of its last message.
//! 2. Per standby (keyed by `application_name` and client address): its state and sync
//!    state, the bytes it has not yet been sent, written, flushed and replayed, and the
//!    write/flush/replay lag times PostgreSQL measured. A lag time PostgreSQL shows as NULL
//!    is 0 when the standby has caught up (PostgreSQL clears them once it has) and absent
//!    otherwise.
//! 3. A standby seen streaming before and gone now stays listed (`streaming` 0, state
//!    `absent`, how long ago it was last seen) so that `StandbyNotStreaming` fires on the
//!    primary when a standby stops; up to [`MAX_REMEMBERED`] of them, forgotten when the
//!    server changes role.
//! 4. On a standby, the replay lag in seconds is estimated from the history of positions the
//!    collector keeps ([`lag`]): it stays 0 on an idle primary and grows while replay is
//!    stuck, even when everything received has been replayed.
//!
//! # Cost and locks
//!
//! A read of two shared-memory arrays (the WAL senders' and the WAL receiver's state), a
//! handful of rows; no table, no lock beyond the senders' spinlocks. Well under a
//! millisecond (README: the cost table).
//!
//! # Versions
//!
//! The same statement on PostgreSQL 13 to 18 (see `sql.rs`). Without `pg_read_all_stats`
//! (in `pg_monitor`) PostgreSQL hides every column but the pid: the standbys are counted,
//! their lags are absent.

pub mod lag;
mod sql;

use std::collections::BTreeMap;

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::metrics::{self, Snapshot};
use lag::{ReplayLag, StandbyPosition};
use sql::{SenderRow, ServerRow};

/// Most standbys remembered after they disappear.
pub const MAX_REMEMBERED: usize = 64;

/// The `state` of a standby that was seen streaming and is gone.
pub const ABSENT: &str = "absent";

/// What the replication collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicationReport {
    /// The server is a standby.
    pub in_recovery: bool,
    /// The standbys streaming from this server, and those seen streaming before and gone.
    pub standbys: Vec<Standby>,
    /// On a standby: its own view. `None` on a primary.
    pub standby: Option<StandbySide>,
}

/// One standby of this server, as its WAL sender sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standby {
    /// `application_name` from its `primary_conninfo` (the cluster name, or `walreceiver`).
    pub application_name: String,
    /// Its address; empty over a Unix socket.
    pub client_addr: String,
    /// `startup`, `catchup`, `streaming`, `backup`, `stopping`, or [`ABSENT`].
    pub state: String,
    /// `async`, `potential`, `sync`, `quorum`; empty when absent.
    pub sync_state: String,
    /// Bytes not yet sent, written, flushed, replayed (`None`: unknown).
    pub lag_bytes: Stages,
    /// Write, flush and replay lag in seconds (`sent` is always `None`).
    pub lag_seconds: Stages,
    /// For an absent standby: seconds since it was last seen streaming.
    pub absent_seconds: Option<f64>,
}

impl Standby {
    /// Connected and streaming.
    pub fn streaming(&self) -> bool {
        self.state == "streaming"
    }

    /// A readable name: `application_name (client_addr)`.
    pub fn describe(&self) -> String {
        if self.client_addr.is_empty() {
            self.application_name.clone()
        } else {
            format!("{} ({})", self.application_name, self.client_addr)
        }
    }
}

/// A value per replication stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// Sent by the primary.
    pub sent: Option<f64>,
    /// Written by the standby.
    pub write: Option<f64>,
    /// Flushed by the standby.
    pub flush: Option<f64>,
    /// Replayed by the standby.
    pub replay: Option<f64>,
}

impl Stages {
    /// `(stage label, value)` of the known ones.
    pub fn known(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [
            ("sent", self.sent),
            ("write", self.write),
            ("flush", self.flush),
            ("replay", self.replay),
        ]
        .into_iter()
        .filter_map(|(stage, v)| v.map(|v| (stage, v)))
    }

    /// The largest known value.
    pub fn max(&self) -> Option<f64> {
        self.known().map(|(_, v)| v).reduce(f64::max)
    }
}

/// A standby's view of its own replication.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StandbySide {
    /// Received and flushed, bytes since 0/0.
    pub receive_lsn: Option<f64>,
    /// Replayed, bytes since 0/0.
    pub replay_lsn: Option<f64>,
    /// Bytes known to exist on the primary and not yet replayed.
    pub replay_lag_bytes: Option<f64>,
    /// Seconds behind the primary (see [`lag`]).
    pub replay_lag_seconds: Option<f64>,
    /// Replay is paused.
    pub replay_paused: bool,
    /// The WAL receiver's status, `none` when no receiver runs.
    pub receiver_status: String,
    /// Host of the primary it streams from.
    pub sender_host: String,
    /// Seconds since it last heard from the primary.
    pub last_message_age_seconds: Option<f64>,
    /// `primary_conninfo` is set, so it should stream (`false`: it reads archived WAL only;
    /// `None`: the role may not read the setting).
    pub primary_conninfo_set: Option<bool>,
}

impl StandbySide {
    /// The WAL receiver streams.
    pub fn streaming(&self) -> bool {
        self.receiver_status == "streaming"
    }
}

/// The replication collector, with what it remembers from poll to poll.
#[derive(Debug, Default)]
pub struct Replication {
    /// Standbys seen streaming, by (application_name, client_addr): when last seen.
    seen: BTreeMap<(String, String), f64>,
    /// The standby side's lag history.
    lag: ReplayLag,
    /// The role at the last poll.
    in_recovery: Option<bool>,
}

impl Replication {
    /// Turn one poll's rows into the report and its series, updating what is remembered.
    fn summarise(
        &mut self,
        server: &ServerRow,
        senders: Vec<SenderRow>,
    ) -> (Snapshot, ReplicationReport) {
        if self.in_recovery != Some(server.in_recovery) {
            self.seen.clear();
            self.lag = ReplayLag::default();
            self.in_recovery = Some(server.in_recovery);
        }
        let mut report = ReplicationReport {
            in_recovery: server.in_recovery,
            standbys: Vec::new(),
            standby: None,
        };
        let mut connected = std::collections::BTreeSet::new();
        for s in senders {
            let key = (s.application_name.clone(), s.client_addr.clone());
            if !connected.insert(key.clone()) {
                continue; // the same name from the same address twice: keep the first
            }
            let standby = standby_of(s, server.position);
            if standby.streaming() {
                self.seen.insert(key, server.now);
            }
            report.standbys.push(standby);
        }
        for ((application_name, client_addr), last_seen) in &self.seen {
            if connected.contains(&(application_name.clone(), client_addr.clone())) {
                continue;
            }
            report.standbys.push(Standby {
                application_name: application_name.clone(),
                client_addr: client_addr.clone(),
                state: ABSENT.to_owned(),
                absent_seconds: Some((server.now - last_seen).max(0.0)),
                ..Standby::default()
            });
        }
        while self.seen.len() > MAX_REMEMBERED {
            let oldest = self
                .seen
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k.clone())
                .expect("not empty");
            self.seen.remove(&oldest);
        }
        if server.in_recovery {
            report.standby = Some(self.standby_side(server));
        }
        let snapshot = snapshot_of(&report);
        (snapshot, report)
    }

    fn standby_side(&mut self, server: &ServerRow) -> StandbySide {
        let receiver_status = server
            .receiver_status
            .clone()
            .unwrap_or_else(|| "none".to_owned());
        let streaming = receiver_status == "streaming";
        let known_end = match (server.receive_lsn, server.latest_end_lsn) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let replay_lag_seconds = self.lag.update(StandbyPosition {
            now: server.now,
            known_end,
            replayed: server.replay_lsn,
            streaming,
            last_replayed_commit: server.last_replayed_commit,
        });
        StandbySide {
            receive_lsn: server.receive_lsn,
            replay_lsn: server.replay_lsn,
            replay_lag_bytes: known_end
                .zip(server.replay_lsn)
                .map(|(end, replayed)| (end - replayed).max(0.0)),
            replay_lag_seconds,
            replay_paused: server.replay_paused.unwrap_or(false),
            receiver_status,
            sender_host: server.sender_host.clone().unwrap_or_default(),
            last_message_age_seconds: server.last_message_age.map(|a| a.max(0.0)),
            primary_conninfo_set: server.primary_conninfo_set,
        }
    }
}

/// One connected standby, its lags measured against `position`.
fn standby_of(s: SenderRow, position: Option<f64>) -> Standby {
    let behind = |lsn: Option<f64>| position.zip(lsn).map(|(p, l)| (p - l).max(0.0));
    let lag_bytes = Stages {
        sent: behind(s.sent_lsn),
        write: behind(s.write_lsn),
        flush: behind(s.flush_lsn),
        replay: behind(s.replay_lsn),
    };
    // PostgreSQL clears the lag times once the standby has caught up and nothing new is
    // written: NULL then means 0; before the first measurement it means unknown.
    let time = |lag: Option<f64>, bytes: Option<f64>| match (lag, bytes) {
        (Some(lag), _) => Some(lag.max(0.0)),
        (None, Some(b)) if b <= 0.0 => Some(0.0),
        _ => None,
    };
    let lag_seconds = Stages {
        sent: None,
        write: time(s.write_lag, lag_bytes.write),
        flush: time(s.flush_lag, lag_bytes.flush),
        replay: time(s.replay_lag, lag_bytes.replay),
    };
    Standby {
        application_name: s.application_name,
        client_addr: s.client_addr,
        state: s.state,
        sync_state: s.sync_state,
        lag_bytes,
        lag_seconds,
        absent_seconds: None,
    }
}

fn snapshot_of(report: &ReplicationReport) -> Snapshot {
    let mut snap = Snapshot::default();
    let connected = report.standbys.iter().filter(|s| s.state != ABSENT).count();
    snap.set(&metrics::REPLICATION_STANDBYS, connected as f64);
    for s in &report.standbys {
        let id = vec![s.application_name.clone(), s.client_addr.clone()];
        snap.push(
            &metrics::REPLICATION_STANDBY_STREAMING,
            id.clone(),
            f64::from(u8::from(s.streaming())),
        );
        if s.state == ABSENT {
            continue;
        }
        let mut info = id.clone();
        info.extend([s.state.clone(), s.sync_state.clone()]);
        snap.push(&metrics::REPLICATION_STANDBY_INFO, info, 1.0);
        for (def, stages) in [
            (&metrics::REPLICATION_LAG_BYTES, &s.lag_bytes),
            (&metrics::REPLICATION_LAG_SECONDS, &s.lag_seconds),
        ] {
            for (stage, value) in stages.known() {
                let mut labels = id.clone();
                labels.push(stage.to_owned());
                snap.push(def, labels, value);
            }
        }
    }
    if let Some(side) = &report.standby {
        let optional = [
            (&metrics::STANDBY_RECEIVE_LSN, side.receive_lsn),
            (&metrics::STANDBY_REPLAY_LSN, side.replay_lsn),
            (&metrics::STANDBY_REPLAY_LAG_BYTES, side.replay_lag_bytes),
            (
                &metrics::STANDBY_REPLAY_LAG_SECONDS,
                side.replay_lag_seconds,
            ),
            (
                &metrics::STANDBY_LAST_MESSAGE_AGE,
                side.last_message_age_seconds,
            ),
        ];
        for (def, value) in optional {
            if let Some(v) = value {
                snap.set(def, v);
            }
        }
        snap.set(
            &metrics::STANDBY_REPLAY_PAUSED,
            f64::from(u8::from(side.replay_paused)),
        );
        snap.set(
            &metrics::STANDBY_WAL_RECEIVER_STREAMING,
            f64::from(u8::from(side.streaming())),
        );
        snap.push(
            &metrics::STANDBY_WAL_RECEIVER_INFO,
            vec![side.receiver_status.clone(), side.sender_host.clone()],
            1.0,
        );
    }
    snap
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "replication",
    table: "replication",
    reads: "pg_stat_replication (per standby: state, sync state, lag in bytes and seconds); on a standby pg_stat_wal_receiver, received and replayed WAL positions, replay lag",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::REPLICATION_METRICS,
    section: |t| &t.replication,
    build: |_| Box::new(Replication::default()),
    carry: |from, to| to.replication = from.replication.clone(),
};

impl ReportCollector for Replication {
    const NAME: &'static str = SPEC.name;
    type Report = ReplicationReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, ReplicationReport), CollectError> {
        let rows = ctx.query(sql::REPLICATION_SQL, &[]).await?;
        let first = rows.first().ok_or_else(|| {
            CollectError::Unavailable("the replication query returned no row".into())
        })?;
        let server = sql::server_row(first)?;
        let mut senders = Vec::new();
        for row in &rows {
            senders.extend(sql::sender_row(row)?);
        }
        Ok(self.summarise(&server, senders))
    }

    fn store(report: ReplicationReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.replication = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(now: f64, position: f64) -> ServerRow {
        ServerRow {
            in_recovery: false,
            now,
            position: Some(position),
            ..ServerRow::default()
        }
    }

    fn sender(name: &str, state: &str, replay: f64, replay_lag: Option<f64>) -> SenderRow {
        SenderRow {
            application_name: name.into(),
            client_addr: "10.0.0.2".into(),
            state: state.into(),
            sync_state: "async".into(),
            sent_lsn: Some(1_000.0),
            write_lsn: Some(1_000.0),
            flush_lsn: Some(900.0),
            replay_lsn: Some(replay),
            write_lag: None,
            flush_lag: Some(0.5),
            replay_lag,
        }
    }

    #[test]
    fn lags_in_bytes_and_seconds_per_standby() {
        let mut c = Replication::default();
        let (snap, report) = c.summarise(
            &primary(10.0, 1_000.0),
            vec![sender("s1", "streaming", 400.0, Some(3.0))],
        );
        let s = &report.standbys[0];
        assert_eq!(s.lag_bytes.sent, Some(0.0));
        assert_eq!(s.lag_bytes.flush, Some(100.0));
        assert_eq!(s.lag_bytes.replay, Some(600.0));
        // write_lag NULL with nothing left to write: caught up, 0.
        assert_eq!(s.lag_seconds.write, Some(0.0));
        assert_eq!(s.lag_seconds.replay, Some(3.0));
        assert_eq!(snap.get(&metrics::REPLICATION_LAG_BYTES).len(), 4);
        assert_eq!(snap.get(&metrics::REPLICATION_LAG_SECONDS).len(), 3);
        assert_eq!(snap.get(&metrics::REPLICATION_STANDBYS)[0].value, 1.0);
        assert_eq!(
            snap.get(&metrics::REPLICATION_STANDBY_INFO)[0].labels,
            ["s1", "10.0.0.2", "streaming", "async"]
        );
        assert!(snap.get(&metrics::STANDBY_REPLAY_LSN).is_empty());
    }

    #[test]
    fn a_null_lag_time_behind_the_primary_is_unknown_not_zero() {
        let mut c = Replication::default();
        let (_, report) = c.summarise(
            &primary(10.0, 1_000.0),
            vec![sender("s1", "catchup", 400.0, None)],
        );
        assert_eq!(report.standbys[0].lag_seconds.replay, None);
    }

    #[test]
    fn a_standby_seen_streaming_is_reported_absent_when_gone() {
        let mut c = Replication::default();
        c.summarise(
            &primary(10.0, 1_000.0),
            vec![sender("s1", "streaming", 1_000.0, None)],
        );
        let (snap, report) = c.summarise(&primary(70.0, 2_000.0), vec![]);
        assert_eq!(report.standbys.len(), 1);
        let gone = &report.standbys[0];
        assert_eq!(
            (gone.state.as_str(), gone.absent_seconds),
            (ABSENT, Some(60.0))
        );
        assert_eq!(snap.get(&metrics::REPLICATION_STANDBYS)[0].value, 0.0);
        assert_eq!(
            snap.get(&metrics::REPLICATION_STANDBY_STREAMING)[0].value,
            0.0
        );
        assert!(snap.get(&metrics::REPLICATION_STANDBY_INFO).is_empty());
        // Back: present again, no longer absent.
        let (_, report) = c.summarise(
            &primary(80.0, 2_000.0),
            vec![sender("s1", "streaming", 2_000.0, None)],
        );
        assert_eq!(report.standbys.len(), 1);
        assert!(report.standbys[0].streaming());
        // A role change forgets them.
        let standby = ServerRow {
            in_recovery: true,
            ..primary(90.0, 2_000.0)
        };
        let (_, report) = c.summarise(&standby, vec![]);
        assert!(report.standbys.is_empty());
    }

    #[test]
    fn a_standby_never_seen_streaming_is_not_remembered() {
        let mut c = Replication::default();
        c.summarise(
            &primary(10.0, 1_000.0),
            vec![sender("s1", "catchup", 10.0, None)],
        );
        let (_, report) = c.summarise(&primary(20.0, 1_000.0), vec![]);
        assert!(report.standbys.is_empty());
    }

    #[test]
    fn the_standby_side_reports_positions_receiver_and_lag() {
        let mut c = Replication::default();
        let mut server = ServerRow {
            in_recovery: true,
            now: 100.0,
            position: Some(500.0),
            receive_lsn: Some(800.0),
            replay_lsn: Some(500.0),
            replay_paused: Some(true),
            receiver_status: Some("streaming".into()),
            sender_host: Some("primary.example".into()),
            latest_end_lsn: Some(800.0),
            last_message_age: Some(0.2),
            primary_conninfo_set: Some(true),
            ..ServerRow::default()
        };
        c.summarise(&server, vec![]);
        server.now = 130.0;
        let (snap, report) = c.summarise(&server, vec![]);
        let side = report.standby.expect("standby side");
        assert_eq!(side.replay_lag_bytes, Some(300.0));
        assert_eq!(side.replay_lag_seconds, Some(30.0));
        assert!(side.streaming() && side.replay_paused);
        assert_eq!(
            snap.get(&metrics::STANDBY_REPLAY_LAG_SECONDS)[0].value,
            30.0
        );
        assert_eq!(snap.get(&metrics::STANDBY_REPLAY_PAUSED)[0].value, 1.0);
        assert_eq!(
            snap.get(&metrics::STANDBY_WAL_RECEIVER_INFO)[0].labels,
            ["streaming", "primary.example"]
        );
        // The receiver goes away: status none, not streaming.
        server.receiver_status = None;
        let (snap, report) = c.summarise(&server, vec![]);
        assert_eq!(report.standby.unwrap().receiver_status, "none");
        assert_eq!(
            snap.get(&metrics::STANDBY_WAL_RECEIVER_STREAMING)[0].value,
            0.0
        );
    }
}
