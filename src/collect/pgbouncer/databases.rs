//! `SHOW DATABASES`: each PgBouncer database's limits (pool_size, max_db_connections), where
//! it points, and whether it is paused or disabled.

use super::{ADMIN_DATABASE, AdminRow, BouncerContext, number, report, show, text};
use crate::collect::registry::{CollectorSpec, Scope, Versions};
use crate::collect::{BoxFuture, CollectError, Observations};
use crate::collect::{Collector, Pgbouncer};
use crate::metrics::{self, Snapshot};

const COMMAND: &str = "SHOW DATABASES";

/// One PgBouncer database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Database {
    /// The name clients connect to (the `datname` label).
    pub name: String,
    /// Server connections one (database, user) pool may open.
    pub pool_size: i64,
    /// Extra server connections allowed when clients wait too long.
    pub reserve_pool: i64,
    /// Server connections allowed over all users; 0 means no limit.
    pub max_connections: i64,
    /// Server connections open over all users.
    pub current_connections: i64,
    /// PAUSEd.
    pub paused: bool,
    /// DISABLEd.
    pub disabled: bool,
}

/// The `SHOW DATABASES` collector.
#[derive(Debug)]
pub(super) struct Databases;

impl Databases {
    async fn poll(
        &self,
        ctx: &BouncerContext<'_>,
    ) -> Result<(Snapshot, Vec<Database>), CollectError> {
        summarise(&show(ctx.client, COMMAND).await?)
    }
}

/// The series and databases of a `SHOW DATABASES` answer.
pub(super) fn summarise<R: AdminRow>(
    rows: &[R],
) -> Result<(Snapshot, Vec<Database>), CollectError> {
    let mut snap = Snapshot::default();
    let mut databases = Vec::with_capacity(rows.len());
    for row in rows {
        let name = text(row, COMMAND, "name")?;
        if name == ADMIN_DATABASE {
            continue;
        }
        let db = Database {
            name: name.to_owned(),
            pool_size: number(row, COMMAND, "pool_size")?,
            reserve_pool: number(row, COMMAND, "reserve_pool")?,
            max_connections: number(row, COMMAND, "max_connections")?,
            current_connections: number(row, COMMAND, "current_connections")?,
            paused: number(row, COMMAND, "paused")? != 0,
            disabled: number(row, COMMAND, "disabled")? != 0,
        };
        let label = || vec![db.name.clone()];
        snap.push(&metrics::PGBOUNCER_POOL_SIZE, label(), db.pool_size as f64);
        snap.push(
            &metrics::PGBOUNCER_DB_MAX_CONNECTIONS,
            label(),
            db.max_connections as f64,
        );
        snap.push(
            &metrics::PGBOUNCER_DB_CURRENT_CONNECTIONS,
            label(),
            db.current_connections as f64,
        );
        snap.push(
            &metrics::PGBOUNCER_DB_PAUSED,
            label(),
            f64::from(u8::from(db.paused)),
        );
        snap.push(
            &metrics::PGBOUNCER_DB_DISABLED,
            label(),
            f64::from(u8::from(db.disabled)),
        );
        snap.push(
            &metrics::PGBOUNCER_DB_INFO,
            vec![
                db.name.clone(),
                text(row, COMMAND, "database")?.to_owned(),
                text(row, COMMAND, "host")?.to_owned(),
                text(row, COMMAND, "port")?.to_owned(),
            ],
            1.0,
        );
        databases.push(db);
    }
    Ok((snap, databases))
}

/// The registry's entry (see [`crate::collect::registry`]).
pub(crate) const SPEC: CollectorSpec<Pgbouncer> = CollectorSpec {
    name: "pgbouncer_databases",
    table: "databases",
    reads: "SHOW DATABASES",
    scope: Scope::Cluster,
    versions: Versions::ANY,
    grants: &["stats_users"],
    metrics: &[
        &metrics::PGBOUNCER_POOL_SIZE,
        &metrics::PGBOUNCER_DB_MAX_CONNECTIONS,
        &metrics::PGBOUNCER_DB_CURRENT_CONNECTIONS,
        &metrics::PGBOUNCER_DB_PAUSED,
        &metrics::PGBOUNCER_DB_DISABLED,
        &metrics::PGBOUNCER_DB_INFO,
    ],
    section: |b| &b.databases,
    build: |_| Box::new(Databases),
    carry: |from, to| {
        report(to).databases = from.pgbouncer.as_ref().and_then(|r| r.databases.clone());
    },
};

impl Collector<Pgbouncer> for Databases {
    fn name(&self) -> &'static str {
        "pgbouncer_databases"
    }

    fn collect<'a, 'c>(
        &'a mut self,
        ctx: &'a BouncerContext<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        Box::pin(async move {
            let (snapshot, databases) = self.poll(ctx).await?;
            report(observations).databases = Some(databases);
            Ok(snapshot)
        })
    }
}
