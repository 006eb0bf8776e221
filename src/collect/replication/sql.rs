//! The replication collector's one statement, and the mapping of its rows.
//!
//! The same SQL serves PostgreSQL 13 to 18: the columns it reads of `pg_stat_replication`
//! (10+) and `pg_stat_wal_receiver` (`status`, `latest_end_lsn`, `last_msg_receipt_time`;
//! `sender_host` 11+) have not changed since; 13's rename of `received_lsn` concerns a column
//! it does not read. What differs is the server's role, and the statement branches on it
//! itself: `pg_current_wal_lsn()` and `pg_is_wal_replay_paused()` raise an error on the
//! wrong side, so each is only evaluated under a `CASE` on `pg_is_in_recovery()`.
//!
//! `primary_conninfo` is read with `current_setting()` only on a standby and only by a role that
//! may (`pg_read_all_settings`, in `pg_monitor`); the `pg_settings` view would build a row for
//! every setting of the server, which alone cost 0.4 ms a poll.
//!
//! WAL positions come back as bytes since `0/0` in a `float8` (exact up to 8 PiB of WAL), so
//! differences are computed in the daemon.

use tokio_postgres::Row;

/// One row per WAL sender (at least one row: the server's own columns, with the sender
/// columns NULL when there is none), columns in [`ServerRow`] then [`SenderRow`] order.
pub(super) const REPLICATION_SQL: &str = "
WITH server AS (SELECT pg_is_in_recovery() AS in_recovery)
SELECT server.in_recovery,
       extract(epoch FROM clock_timestamp())::float8,
       pg_wal_lsn_diff(CASE WHEN server.in_recovery THEN pg_last_wal_replay_lsn()
                            ELSE pg_current_wal_lsn() END, '0/0')::float8,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::float8,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::float8,
       CASE WHEN server.in_recovery THEN pg_is_wal_replay_paused() END,
       extract(epoch FROM pg_last_xact_replay_timestamp())::float8,
       w.status,
       w.sender_host,
       pg_wal_lsn_diff(w.latest_end_lsn, '0/0')::float8,
       extract(epoch FROM clock_timestamp() - w.last_msg_receipt_time)::float8,
       CASE WHEN server.in_recovery AND pg_has_role('pg_read_all_settings', 'USAGE')
            THEN current_setting('primary_conninfo') <> '' END,
       r.application_name,
       host(r.client_addr),
       r.state,
       r.sync_state,
       pg_wal_lsn_diff(r.sent_lsn, '0/0')::float8,
       pg_wal_lsn_diff(r.write_lsn, '0/0')::float8,
       pg_wal_lsn_diff(r.flush_lsn, '0/0')::float8,
       pg_wal_lsn_diff(r.replay_lsn, '0/0')::float8,
       extract(epoch FROM r.write_lag)::float8,
       extract(epoch FROM r.flush_lag)::float8,
       extract(epoch FROM r.replay_lag)::float8,
       r.pid
  FROM server
  LEFT JOIN pg_stat_wal_receiver w ON true
  LEFT JOIN pg_stat_replication r ON true";

/// The server's own columns (the same in every row).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ServerRow {
    pub(crate) in_recovery: bool,
    /// `clock_timestamp()`, epoch seconds.
    pub(crate) now: f64,
    /// The position standbys are measured against: the current WAL position on a primary,
    /// the replayed one on a (cascading) standby.
    pub(crate) position: Option<f64>,
    pub(crate) receive_lsn: Option<f64>,
    pub(crate) replay_lsn: Option<f64>,
    pub(crate) replay_paused: Option<bool>,
    pub(crate) last_replayed_commit: Option<f64>,
    /// `pg_stat_wal_receiver.status`; `None`: no WAL receiver runs.
    pub(crate) receiver_status: Option<String>,
    pub(crate) sender_host: Option<String>,
    pub(crate) latest_end_lsn: Option<f64>,
    pub(crate) last_message_age: Option<f64>,
    /// `primary_conninfo` is set (the standby is meant to stream); `None` if not visible.
    pub(crate) primary_conninfo_set: Option<bool>,
}

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SenderRow {
    pub(crate) application_name: String,
    pub(crate) client_addr: String,
    pub(crate) state: String,
    pub(crate) sync_state: String,
    pub(crate) sent_lsn: Option<f64>,
    pub(crate) write_lsn: Option<f64>,
    pub(crate) flush_lsn: Option<f64>,
    pub(crate) replay_lsn: Option<f64>,
    pub(crate) write_lag: Option<f64>,
    pub(crate) flush_lag: Option<f64>,
    pub(crate) replay_lag: Option<f64>,
}

/// The server's columns of a row of [`REPLICATION_SQL`].
pub(super) fn server_row(row: &Row) -> Result<ServerRow, tokio_postgres::Error> {
    Ok(ServerRow {
        in_recovery: row.try_get(0)?,
        now: row.try_get(1)?,
        position: row.try_get(2)?,
        receive_lsn: row.try_get(3)?,
        replay_lsn: row.try_get(4)?,
        replay_paused: row.try_get(5)?,
        last_replayed_commit: row.try_get(6)?,
        receiver_status: row.try_get(7)?,
        sender_host: row.try_get(8)?,
        latest_end_lsn: row.try_get(9)?,
        last_message_age: row.try_get(10)?,
        primary_conninfo_set: row.try_get(11)?,
    })
}

/// The WAL sender of a row of [`REPLICATION_SQL`], if the row has one. A sender whose
/// columns the role may not read (it lacks pg_read_all_stats) still has its
/// pid alone; its other columns are NULL and read as empty or unknown.
pub(super) fn sender_row(row: &Row) -> Result<Option<SenderRow>, tokio_postgres::Error> {
    if row.try_get::<_, Option<i32>>(23)?.is_none() {
        return Ok(None);
    }
    Ok(Some(SenderRow {
        application_name: row.try_get::<_, Option<String>>(12)?.unwrap_or_default(),
        client_addr: row.try_get::<_, Option<String>>(13)?.unwrap_or_default(),
        state: row.try_get::<_, Option<String>>(14)?.unwrap_or_default(),
        sync_state: row.try_get::<_, Option<String>>(15)?.unwrap_or_default(),
        sent_lsn: row.try_get(16)?,
        write_lsn: row.try_get(17)?,
        flush_lsn: row.try_get(18)?,
        replay_lsn: row.try_get(19)?,
        write_lag: row.try_get(20)?,
        flush_lag: row.try_get(21)?,
        replay_lag: row.try_get(22)?,
    }))
}
