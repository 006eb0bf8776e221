//! Transaction ID and multixact wraparound: how old each database's frozen horizon is against
//! `autovacuum_freeze_max_age` (where autovacuum forces a freeze) and 2^31 (where the server
//! stops accepting writes), and *who holds the xmin horizon back* so that vacuum cannot
//! freeze: the oldest backend snapshot or transaction, replication slots' `xmin` and
//! `catalog_xmin`, the oldest prepared transaction, and standbys' feedback.
//!
//! One poll, over the main session:
//!
//! 1. [`AGES_SQL`]: one row per database (templates included: `template0` needs freezing
//!    too) with `age(datfrozenxid)`, `mxid_age(datminmxid)` and both freeze limits;
//! 2. [`HOLDERS_SQL`]: at most one row per kind of holder, the oldest of each (pgvigil's own
//!    sessions left out);
//! 3. [`summarise`] (pure): the series and the report the WraparoundRisk rule reads.
//!
//! Cost: `pg_database` and four small views (`pg_stat_activity`, `pg_replication_slots`,
//! `pg_prepared_xacts`, `pg_stat_replication`), each sorted for its oldest row; no lock on any
//! table, so it runs while a DDL holds ACCESS EXCLUSIVE. Versions: the same SQL on 13 to 18.

use std::collections::BTreeMap;

use serde::Serialize;

use super::registry::{self, CollectorSpec, Scope};
use super::{CollectError, Observations, PollContext, Postgres, ReportCollector};
use crate::metrics::{self, Snapshot};

/// The point of no return: XIDs and multixacts are compared modulo 2^32, so a value more than
/// 2^31 old would look like the future. The server stops assigning new ones a few million
/// before.
pub const WRAPAROUND_LIMIT: f64 = 2_147_483_648.0;

/// Each database's ages and the freeze limits.
pub const AGES_SQL: &str = "
SELECT datname::text, age(datfrozenxid)::float8, mxid_age(datminmxid)::float8,
       current_setting('autovacuum_freeze_max_age')::float8,
       current_setting('autovacuum_multixact_freeze_max_age')::float8
  FROM pg_database";

/// The oldest holder of each kind: kind, who (pid, slot, gid, application), application,
/// state, database, user, age in XIDs, seconds held (where known).
pub const HOLDERS_SQL: &str = "
(SELECT 'backend', pid::text, coalesce(application_name, ''), coalesce(state, ''),
        coalesce(datname::text, ''), coalesce(usename::text, ''),
        greatest(age(backend_xmin), age(backend_xid))::float8,
        extract(epoch FROM clock_timestamp() - xact_start)::float8
   FROM pg_stat_activity
  WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
    AND backend_type <> 'walsender' AND pid <> ALL($1)
  ORDER BY greatest(age(backend_xmin), age(backend_xid)) DESC LIMIT 1)
UNION ALL
(SELECT 'replication_slot', slot_name::text, slot_type, CASE WHEN active THEN 'active' ELSE 'inactive' END,
        coalesce(database::text, ''), '', age(xmin)::float8, NULL::float8
   FROM pg_replication_slots WHERE xmin IS NOT NULL ORDER BY age(xmin) DESC LIMIT 1)
UNION ALL
(SELECT 'replication_slot_catalog', slot_name::text, slot_type, CASE WHEN active THEN 'active' ELSE 'inactive' END,
        coalesce(database::text, ''), '', age(catalog_xmin)::float8, NULL::float8
   FROM pg_replication_slots WHERE catalog_xmin IS NOT NULL ORDER BY age(catalog_xmin) DESC LIMIT 1)
UNION ALL
(SELECT 'prepared_transaction', gid, '', 'prepared', database::text, owner::text,
        age(transaction)::float8, extract(epoch FROM clock_timestamp() - prepared)::float8
   FROM pg_prepared_xacts ORDER BY age(transaction) DESC LIMIT 1)
UNION ALL
(SELECT 'standby', pid::text, coalesce(application_name, ''), coalesce(state, ''),
        coalesce(host(client_addr), ''), coalesce(usename::text, ''), age(backend_xmin)::float8, NULL::float8
   FROM pg_stat_replication WHERE backend_xmin IS NOT NULL ORDER BY age(backend_xmin) DESC LIMIT 1)";

/// One database's ages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseAge {
    /// `age(datfrozenxid)`.
    pub xid_age: f64,
    /// `mxid_age(datminmxid)`.
    pub mxid_age: f64,
}

/// The oldest holder of one kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Holder {
    /// `backend`, `replication_slot`, `replication_slot_catalog`, `prepared_transaction`,
    /// `standby`.
    pub kind: String,
    /// The pid, slot name or prepared transaction's gid.
    pub id: String,
    /// The application name (backend, standby) or slot type.
    pub application: String,
    /// The backend's state, or the slot's (active, inactive).
    pub state: String,
    /// The database (for a standby: its address).
    pub datname: String,
    /// The user.
    pub usename: String,
    /// Age of the xmin held, in transaction IDs.
    pub xid_age: f64,
    /// Seconds held, where the server says (backend transaction, prepared transaction).
    pub seconds: Option<f64>,
}

impl Holder {
    /// One line naming the holder, for alert annotations.
    pub fn describe(&self) -> String {
        let age = self.xid_age.round();
        let held = self
            .seconds
            .map(|s| format!(", open for {}", crate::alert::rules::human_seconds(s)))
            .unwrap_or_default();
        match self.kind.as_str() {
            "backend" => format!(
                "backend pid {} (application \"{}\", user {}, state {}, database {}) holds an xmin {age} transactions old{held}",
                self.id, self.application, self.usename, self.state, self.datname
            ),
            "replication_slot" | "replication_slot_catalog" => format!(
                "{} replication slot \"{}\" ({}) holds {} {age} transactions old",
                self.application,
                self.id,
                self.state,
                if self.kind == "replication_slot" {
                    "xmin"
                } else {
                    "catalog_xmin"
                }
            ),
            "prepared_transaction" => format!(
                "prepared transaction \"{}\" (database {}, owner {}) holds an xmin {age} transactions old{held}",
                self.id, self.datname, self.usename
            ),
            _ => format!(
                "standby \"{}\" at {} (walsender pid {}) holds an xmin {age} transactions old through hot_standby_feedback",
                self.application, self.datname, self.id
            ),
        }
    }
}

/// What the wraparound collector learnt in one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WraparoundReport {
    /// By database name, templates included.
    pub databases: BTreeMap<String, DatabaseAge>,
    /// `autovacuum_freeze_max_age`.
    pub freeze_max_age: f64,
    /// `autovacuum_multixact_freeze_max_age`.
    pub multixact_freeze_max_age: f64,
    /// The oldest holder of each kind that holds one, oldest first.
    pub holders: Vec<Holder>,
}

impl WraparoundReport {
    /// The holder of the oldest xmin of all.
    pub fn horizon_holder(&self) -> Option<&Holder> {
        self.holders.first()
    }
}

/// The wraparound collector.
#[derive(Debug, Default)]
pub struct Wraparound;

/// Sort the holders oldest first and publish the series.
pub fn summarise(mut report: WraparoundReport) -> (Snapshot, WraparoundReport) {
    report
        .holders
        .sort_by(|a, b| b.xid_age.total_cmp(&a.xid_age));
    let mut snap = Snapshot::default();
    for (datname, age) in &report.databases {
        snap.push(&metrics::DB_XID_AGE, vec![datname.clone()], age.xid_age);
        snap.push(&metrics::DB_MXID_AGE, vec![datname.clone()], age.mxid_age);
    }
    for holder in &report.holders {
        snap.push(
            &metrics::XMIN_HORIZON_AGE,
            vec![holder.kind.clone()],
            holder.xid_age,
        );
        if let Some(seconds) = holder.seconds {
            snap.push(
                &metrics::XMIN_HORIZON_AGE_SECONDS,
                vec![holder.kind.clone()],
                seconds.max(0.0),
            );
        }
    }
    (snap, report)
}

/// The registry's entry (see [`super::registry`]).
pub(crate) const SPEC: CollectorSpec<Postgres> = CollectorSpec {
    name: "wraparound",
    table: "wraparound",
    reads: "XID and multixact age of every database against autovacuum_freeze_max_age and 2^31, and the xmin horizon's holders (oldest backend, slot xmin and catalog_xmin, prepared transaction, standby feedback)",
    scope: Scope::Cluster,
    versions: registry::PG13,
    grants: &["pg_monitor"],
    metrics: metrics::WRAPAROUND_METRICS,
    section: |t| &t.wraparound,
    build: |_| Box::new(Wraparound),
    carry: |from, to| to.wraparound = from.wraparound.clone(),
};

impl ReportCollector for Wraparound {
    const NAME: &'static str = SPEC.name;
    type Report = WraparoundReport;

    async fn poll(
        &mut self,
        ctx: &PollContext<'_>,
    ) -> Result<(Snapshot, WraparoundReport), CollectError> {
        let mut own = ctx.own_backends.clone();
        own.push(ctx.server.backend_pid);
        let ages = ctx.query(AGES_SQL, &[]).await?;
        let holders = ctx.query(HOLDERS_SQL, &[&own]).await?;
        let mut report = WraparoundReport::default();
        for row in ages {
            report.databases.insert(
                row.try_get(0)?,
                DatabaseAge {
                    xid_age: row.try_get(1)?,
                    mxid_age: row.try_get(2)?,
                },
            );
            report.freeze_max_age = row.try_get(3)?;
            report.multixact_freeze_max_age = row.try_get(4)?;
        }
        for row in holders {
            let xid_age: Option<f64> = row.try_get(6)?;
            let Some(xid_age) = xid_age else { continue };
            report.holders.push(Holder {
                kind: row.try_get(0)?,
                id: row.try_get(1)?,
                application: row.try_get(2)?,
                state: row.try_get(3)?,
                datname: row.try_get(4)?,
                usename: row.try_get(5)?,
                xid_age,
                seconds: row.try_get(7)?,
            });
        }
        Ok(summarise(report))
    }

    fn store(report: WraparoundReport, _ctx: &PollContext<'_>, observations: &mut Observations) {
        observations.wraparound = Some(report);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn holder(kind: &str, id: &str, xid_age: f64) -> Holder {
        Holder {
            kind: kind.into(),
            id: id.into(),
            application: "app".into(),
            state: "idle in transaction".into(),
            datname: "shop".into(),
            usename: "u".into(),
            xid_age,
            seconds: Some(65.0),
        }
    }

    #[test]
    fn holders_oldest_first_with_series_per_kind() {
        let report = WraparoundReport {
            databases: BTreeMap::from([(
                "shop".to_owned(),
                DatabaseAge {
                    xid_age: 1000.0,
                    mxid_age: 3.0,
                },
            )]),
            freeze_max_age: 200e6,
            multixact_freeze_max_age: 400e6,
            holders: vec![
                holder("backend", "42", 10.0),
                holder("prepared_transaction", "tx1", 500.0),
            ],
        };
        let (snap, report) = summarise(report);
        assert_eq!(
            report.horizon_holder().unwrap().kind,
            "prepared_transaction"
        );
        assert_eq!(snap.get(&metrics::DB_XID_AGE)[0].value, 1000.0);
        assert_eq!(snap.get(&metrics::XMIN_HORIZON_AGE).len(), 2);
        assert_eq!(snap.get(&metrics::XMIN_HORIZON_AGE_SECONDS)[0].value, 65.0);
    }

    #[test]
    fn descriptions_name_the_holder() {
        let text = holder("backend", "42", 10.0).describe();
        assert!(
            text.contains("pid 42") && text.contains("\"app\""),
            "{text}"
        );
        let slot = Holder {
            seconds: None,
            ..holder("replication_slot_catalog", "cdc", 7.0)
        };
        assert!(
            slot.describe().contains("catalog_xmin"),
            "{}",
            slot.describe()
        );
    }
}
