//! Replication slots (`pg_replication_slots`): whether each is in use, how much WAL it keeps,
//! how close it is to losing it, and how old a transaction it makes vacuum keep.
//!
//! # The poll, step by step
//!
//! 1. One statement lists the slots (one row each; a server has a handful), with the WAL each
//!    retains computed on the server as the current WAL position (the replayed one on a
//!    standby, where logical slots exist from 16 on) minus the slot's `restart_lsn`, and the
//!    age of its `xmin` and `catalog_xmin`.
//! 2. Each slot's series are built from its row; a column the server's version lacks is an
//!    absent series.
//!
//! # Cost and locks
//!
//! A read of the slots' shared-memory array (taking `ReplicationSlotControlLock` in shared
//! mode for the copy) and, per slot, the WAL file layout for `wal_status` and
//! `safe_wal_size`: microseconds. No table is read, nothing waits on a relation lock.
//!
//! # Versions
//!
//! | column | from |
//! |---|---|
//! | `wal_status`, `safe_wal_size` | 13 |
//! | `two_phase` | 14 |
//! | `conflicting` | 16 (logical slots) |
//! | `inactive_since`, `invalidation_reason` | 17 |

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::metrics::{self, Snapshot};

/// The slots statement for a server of `version_num`: the same columns in every version,
/// NULL where the version lacks one.
pub fn slots_sql(version_num: i32) -> String {
    let two_phase = if version_num >= 140000 {
        "two_phase"
    } else {
        "NULL::bool"
    };
    let conflicting = if version_num >= 160000 {
        "conflicting"
    } else {
        "NULL::bool"
    };
    let (inactive, reason) = if version_num >= 170000 {
        (
            "extract(epoch FROM clock_timestamp() - inactive_since)::float8",
            "invalidation_reason",
        )
    } else {
        ("NULL::float8", "NULL::text")
    };
    format!(
        "SELECT slot_name::text, slot_type, coalesce(database::text, ''), coalesce(plugin::text, ''),
       temporary, active,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                            ELSE pg_current_wal_lsn() END, restart_lsn)::float8,
       wal_status, safe_wal_size::float8,
       age(xmin)::float8, age(catalog_xmin)::float8,
       {two_phase}, {conflicting}, {inactive}, {reason}
  FROM pg_replication_slots
 ORDER BY slot_name"
    )
}

/// Every slot of the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotsReport {
    /// By name.
    pub slots: Vec<Slot>,
}

/// One replication slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slot {
    /// Its name.
    pub slot_name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// Database of a logical slot; empty for physical ones.
    pub datname: String,
    /// Output plugin of a logical slot.
    pub plugin: String,
    /// Dropped at the end of its session.
    pub temporary: bool,
    /// A consumer is connected.
    pub active: bool,
    /// WAL kept for it, bytes; `None` when it reserves none.
    pub retained_bytes: Option<f64>,
    /// `reserved`, `extended`, `unreserved`, `lost`; `None` when it reserves no WAL.
    pub wal_status: Option<String>,
    /// Bytes that can be written before it is in danger (`None`: unlimited).
    pub safe_wal_size: Option<f64>,
    /// Age of its xmin, in transactions.
    pub xmin_age: Option<f64>,
    /// Age of its catalog_xmin, in transactions.
    pub catalog_xmin_age: Option<f64>,
    /// Decodes prepared transactions at PREPARE (14+).
    pub two_phase: Option<bool>,
    /// Invalidated by a recovery conflict (16+, logical slots).
    pub conflicting: Option<bool>,
    /// Seconds since it was last active (17+, while inactive).
    pub inactive_seconds: Option<f64>,
    /// Why it was invalidated (17+).
    pub invalidation_reason: Option<String>,
}

impl Slot {
    /// Its WAL is gone (`lost`) or goes at the next checkpoint (`unreserved`).
    pub fn losing_wal(&self) -> bool {
        matches!(self.wal_status.as_deref(), Some("unreserved" | "lost"))
    }
}

/// The replication slots collector.
#[derive(Debug, Default)]
pub struct Slots;

/// The series of one poll's slots.
fn summarise(report: &SlotsReport) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.set(&metrics::REPLICATION_SLOTS, report.slots.len() as f64);
    for s in &report.slots {
        let id = || vec![s.slot_name.clone()];
        let with = |extra: &str| vec![s.slot_name.clone(), extra.to_owned()];
        snap.push(
            &metrics::SLOT_INFO,
            vec![
                s.slot_name.clone(),
                s.slot_type.clone(),
                s.datname.clone(),
                s.plugin.clone(),
                s.temporary.to_string(),
            ],
            1.0,
        );
        snap.push(&metrics::SLOT_ACTIVE, id(), f64::from(u8::from(s.active)));
        let optional = [
            (
                &metrics::SLOT_RETAINED_BYTES,
                s.retained_bytes.map(|b| b.max(0.0)),
            ),
            (&metrics::SLOT_SAFE_WAL_SIZE, s.safe_wal_size),
            (
                &metrics::SLOT_INACTIVE_SECONDS,
                s.inactive_seconds.map(|a| a.max(0.0)),
            ),
            (
                &metrics::SLOT_TWO_PHASE,
                s.two_phase.map(|b| f64::from(u8::from(b))),
            ),
            (
                &metrics::SLOT_CONFLICTING,
                s.conflicting.map(|b| f64::from(u8::from(b))),
            ),
        ];
        for (def, value) in optional {
            if let Some(v) = value {
                snap.push(def, id(), v);
            }
        }
        if let Some(status) = &s.wal_status {
            snap.push(&metrics::SLOT_WAL_STATUS, with(status), 1.0);
        }
        for (kind, age) in [("xmin", s.xmin_age), ("catalog_xmin", s.catalog_xmin_age)] {
            if let Some(age) = age {
                snap.push(&metrics::SLOT_XMIN_AGE, with(kind), age);
            }
        }
    }
    snap
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "replication_slots",
    table: "replication_slots",
    reads: "pg_replication_slots: active, retained WAL, wal_status, safe_wal_size, xmin ages, inactive_since (17+), two_phase (14+), conflicting (16+)",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::SLOT_METRICS,
    section: |t| &t.replication_slots,
    build: |_| Box::new(Slots),
    carry: |from, to| to.slots = from.slots.clone(),
};

impl ReportCollector for Slots {
    const NAME: &'static str = SPEC.name;
    type Report = SlotsReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, SlotsReport), CollectError> {
        let rows = ctx.query(&slots_sql(ctx.server.version_num), &[]).await?;
        let slots = rows
            .iter()
            .map(|row| {
                Ok::<_, tokio_postgres::Error>(Slot {
                    slot_name: row.try_get(0)?,
                    slot_type: row.try_get(1)?,
                    datname: row.try_get(2)?,
                    plugin: row.try_get(3)?,
                    temporary: row.try_get(4)?,
                    active: row.try_get(5)?,
                    retained_bytes: row.try_get(6)?,
                    wal_status: row.try_get(7)?,
                    safe_wal_size: row.try_get(8)?,
                    xmin_age: row.try_get(9)?,
                    catalog_xmin_age: row.try_get(10)?,
                    two_phase: row.try_get(11)?,
                    conflicting: row.try_get(12)?,
                    inactive_seconds: row.try_get(13)?,
                    invalidation_reason: row.try_get(14)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let report = SlotsReport { slots };
        Ok((summarise(&report), report))
    }

    fn store(report: SlotsReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.slots = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_reads_only_the_columns_each_version_has() {
        let v13 = slots_sql(130_012);
        assert!(
            v13.contains("NULL::bool, NULL::bool, NULL::float8, NULL::text"),
            "{v13}"
        );
        assert!(v13.contains("wal_status, safe_wal_size"));
        let v14 = slots_sql(140_000);
        assert!(v14.contains("two_phase, NULL::bool"), "{v14}");
        assert!(slots_sql(160_000).contains("two_phase, conflicting, NULL::float8"));
        let v17 = slots_sql(170_000);
        assert!(
            v17.contains("inactive_since)::float8, invalidation_reason"),
            "{v17}"
        );
        assert_eq!(slots_sql(180_004), v17);
    }

    #[test]
    fn series_per_slot_and_absent_where_unknown() {
        let report = SlotsReport {
            slots: vec![
                Slot {
                    slot_name: "standby_a".into(),
                    slot_type: "physical".into(),
                    retained_bytes: Some(64.0 * 1024.0 * 1024.0),
                    wal_status: Some("extended".into()),
                    xmin_age: Some(12.0),
                    inactive_seconds: Some(300.0),
                    ..Slot::default()
                },
                Slot {
                    slot_name: "cdc".into(),
                    slot_type: "logical".into(),
                    datname: "app".into(),
                    plugin: "pgoutput".into(),
                    active: true,
                    two_phase: Some(false),
                    catalog_xmin_age: Some(40.0),
                    wal_status: Some("unreserved".into()),
                    ..Slot::default()
                },
            ],
        };
        let snap = summarise(&report);
        assert_eq!(snap.get(&metrics::REPLICATION_SLOTS)[0].value, 2.0);
        assert_eq!(snap.get(&metrics::SLOT_RETAINED_BYTES).len(), 1);
        assert_eq!(snap.get(&metrics::SLOT_TWO_PHASE).len(), 1);
        assert!(snap.get(&metrics::SLOT_SAFE_WAL_SIZE).is_empty());
        let ages: Vec<_> = snap
            .get(&metrics::SLOT_XMIN_AGE)
            .iter()
            .map(|s| (s.labels[1].as_str(), s.value))
            .collect();
        assert_eq!(ages, [("xmin", 12.0), ("catalog_xmin", 40.0)]);
        assert!(report.slots[1].losing_wal() && !report.slots[0].losing_wal());
        assert_eq!(
            snap.get(&metrics::SLOT_INFO)[1].labels,
            ["cdc", "logical", "app", "pgoutput", "false"]
        );
    }
}
