//! Replication, both sides, and replication slots (collectors `replication` and
//! `replication_slots`).

use super::{Kind, MetricDef};

super::catalogue! {
    /// The `replication` collector's metrics, in the order of the README reference.
    REPLICATION_METRICS;

    REPLICATION_STANDBYS, Gauge, "pgvigil_replication_standbys", ["target"],
        "WAL senders connected to this server (rows of pg_stat_replication): its streaming standbys and logical subscribers.";
    REPLICATION_STANDBY_INFO, Gauge, "pgvigil_replication_standby_info", ["target", "application_name", "client_addr", "state", "sync_state"],
        "One series per connected standby with its WAL sender state (startup, catchup, streaming, backup, stopping) and sync_state; always 1.";
    REPLICATION_STANDBY_STREAMING, Gauge, "pgvigil_replication_standby_streaming", ["target", "application_name", "client_addr"],
        "1 while a standby is connected and streaming; 0 while it is connected in another state, or gone after pgvigil saw it streaming.";
    REPLICATION_LAG_BYTES, Gauge, "pgvigil_replication_lag_bytes", ["target", "application_name", "client_addr", "stage"],
        "Bytes of WAL a standby has not yet sent, written, flushed or replayed (stage), behind this server's current WAL position.";
    REPLICATION_LAG_SECONDS, Gauge, "pgvigil_replication_lag_seconds", ["target", "application_name", "client_addr", "stage"],
        "How long a standby took to write, flush or replay (stage) recent WAL (pg_stat_replication write_lag, flush_lag, replay_lag); 0 once it has caught up.";
    STANDBY_RECEIVE_LSN, Gauge, "pgvigil_standby_receive_lsn_bytes", ["target"],
        "On a standby: the WAL position received and flushed (pg_last_wal_receive_lsn) as bytes since 0/0; absent when nothing was streamed since startup.";
    STANDBY_REPLAY_LSN, Gauge, "pgvigil_standby_replay_lsn_bytes", ["target"],
        "On a standby: the WAL position replayed (pg_last_wal_replay_lsn) as bytes since 0/0.";
    STANDBY_REPLAY_LAG_BYTES, Gauge, "pgvigil_standby_replay_lag_bytes", ["target"],
        "On a standby: bytes of WAL it knows the primary has (received, or announced by the primary) but has not replayed.";
    STANDBY_REPLAY_LAG_SECONDS, Gauge, "pgvigil_standby_replay_lag_seconds", ["target"],
        "On a standby: seconds since the primary first had WAL this standby has not replayed yet; 0 when caught up, whether or not the primary is idle (README: the standby lag method).";
    STANDBY_REPLAY_PAUSED, Gauge, "pgvigil_standby_replay_paused", ["target"],
        "On a standby: 1 while WAL replay is paused (pg_wal_replay_pause), else 0.";
    STANDBY_WAL_RECEIVER_STREAMING, Gauge, "pgvigil_standby_wal_receiver_streaming", ["target"],
        "On a standby: 1 while its WAL receiver is streaming from the primary, 0 when it is not (disconnected, starting, or reading archived WAL).";
    STANDBY_WAL_RECEIVER_INFO, Gauge, "pgvigil_standby_wal_receiver_info", ["target", "status", "sender_host"],
        "On a standby: its WAL receiver's status (streaming, waiting, starting, stopping, stopped, none) and the primary it streams from; always 1.";
    STANDBY_LAST_MESSAGE_AGE, Gauge, "pgvigil_standby_wal_receiver_last_message_age_seconds", ["target"],
        "On a standby: seconds since its WAL receiver last heard from the primary (data or keepalive; up to wal_sender_timeout/2 on an idle primary).";
}

super::catalogue! {
    /// The `replication_slots` collector's metrics, in the order of the README reference.
    SLOT_METRICS;

    REPLICATION_SLOTS, Gauge, "pgvigil_replication_slots", ["target"],
        "Replication slots on this server (pg_replication_slots).";
    SLOT_INFO, Gauge, "pgvigil_replication_slot_info", ["target", "slot_name", "slot_type", "datname", "plugin", "temporary"],
        "One series per replication slot: physical or logical, its database and output plugin (logical slots), whether it is temporary; always 1.";
    SLOT_ACTIVE, Gauge, "pgvigil_replication_slot_active", ["target", "slot_name"],
        "1 while a consumer is connected to the slot, else 0.";
    SLOT_RETAINED_BYTES, Gauge, "pgvigil_replication_slot_retained_wal_bytes", ["target", "slot_name"],
        "Bytes of WAL the slot keeps on disk (current WAL position minus its restart_lsn); absent for a slot that reserves none.";
    SLOT_WAL_STATUS, Gauge, "pgvigil_replication_slot_wal_status", ["target", "slot_name", "wal_status"],
        "The slot's wal_status (reserved, extended, unreserved, lost), one series with value 1; unreserved means its WAL goes at the next checkpoint.";
    SLOT_SAFE_WAL_SIZE, Gauge, "pgvigil_replication_slot_safe_wal_size_bytes", ["target", "slot_name"],
        "Bytes of WAL that can still be written before the slot is in danger of being lost (safe_wal_size); absent when max_slot_wal_keep_size is -1 (unlimited).";
    SLOT_XMIN_AGE, Gauge, "pgvigil_replication_slot_xmin_age", ["target", "slot_name", "kind"],
        "Age in transactions of the oldest transaction the slot makes vacuum keep (kind xmin, or catalog_xmin for logical slots); absent when unset.";
    SLOT_INACTIVE_SECONDS, Gauge, "pgvigil_replication_slot_inactive_seconds", ["target", "slot_name"],
        "Seconds since the slot was last active (PostgreSQL 17+ inactive_since); absent while active and before 17.";
    SLOT_TWO_PHASE, Gauge, "pgvigil_replication_slot_two_phase", ["target", "slot_name"],
        "1 if the logical slot decodes prepared transactions at PREPARE (two_phase, PostgreSQL 14+), else 0; absent before 14.";
    SLOT_CONFLICTING, Gauge, "pgvigil_replication_slot_conflicting", ["target", "slot_name"],
        "1 if the logical slot was invalidated by a recovery conflict (conflicting, PostgreSQL 16+), else 0; absent for physical slots and before 16.";
}
