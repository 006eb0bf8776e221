//! `SHOW POOLS`: per (database, user) pool, clients by state, servers by state, and how long
//! the oldest waiting client has waited.

use super::{
    ADMIN_DATABASE, AdminRow, BouncerContext, micros, number, optional_number, report, show, text,
};
use crate::collect::registry::{CollectorSpec, Scope, Versions};
use crate::collect::{BoxFuture, CollectError, Observations};
use crate::collect::{Collector, Pgbouncer};
use crate::metrics::{self, Snapshot};

const COMMAND: &str = "SHOW POOLS";

/// Client states: (label, column). The cancel-request columns exist since 1.18.
const CLIENT_STATES: [(&str, &str); 4] = [
    ("active", "cl_active"),
    ("waiting", "cl_waiting"),
    ("active_cancel_req", "cl_active_cancel_req"),
    ("waiting_cancel_req", "cl_waiting_cancel_req"),
];

/// Server states: (label, column).
const SERVER_STATES: [(&str, &str); 7] = [
    ("active", "sv_active"),
    ("idle", "sv_idle"),
    ("used", "sv_used"),
    ("tested", "sv_tested"),
    ("login", "sv_login"),
    ("active_cancel", "sv_active_cancel"),
    ("being_canceled", "sv_being_canceled"),
];

/// One PgBouncer pool: a (database, user) pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pool {
    /// PgBouncer database name (the name clients connect to).
    pub datname: String,
    /// User.
    pub usename: String,
    /// Clients linked to a server connection or idle with nothing to do.
    pub clients_active: i64,
    /// Clients that sent a query and wait for a server connection.
    pub clients_waiting: i64,
    /// Server connections linked to a client.
    pub servers_active: i64,
    /// Server connections idle and ready for a client.
    pub servers_idle: i64,
    /// Seconds the oldest waiting client has waited.
    pub max_wait_seconds: f64,
    /// `session`, `transaction` or `statement`.
    pub pool_mode: String,
}

/// The `SHOW POOLS` collector.
#[derive(Debug)]
pub(super) struct Pools;

impl Pools {
    async fn poll(&self, ctx: &BouncerContext<'_>) -> Result<(Snapshot, Vec<Pool>), CollectError> {
        summarise(&show(ctx.client, COMMAND).await?)
    }
}

/// The series and pools of a `SHOW POOLS` answer.
pub(super) fn summarise<R: AdminRow>(rows: &[R]) -> Result<(Snapshot, Vec<Pool>), CollectError> {
    let mut snap = Snapshot::default();
    let mut pools = Vec::with_capacity(rows.len());
    for row in rows {
        let datname = text(row, COMMAND, "database")?;
        if datname == ADMIN_DATABASE {
            continue;
        }
        let usename = text(row, COMMAND, "user")?;
        let labels = |state: &str| vec![datname.to_owned(), usename.to_owned(), state.into()];
        for (state, column) in CLIENT_STATES {
            if let Some(n) = optional_number(row, COMMAND, column)? {
                snap.push(&metrics::PGBOUNCER_CLIENTS, labels(state), n as f64);
            }
        }
        for (state, column) in SERVER_STATES {
            if let Some(n) = optional_number(row, COMMAND, column)? {
                snap.push(&metrics::PGBOUNCER_SERVERS, labels(state), n as f64);
            }
        }
        let max_wait = number(row, COMMAND, "maxwait")? as f64
            + micros(optional_number(row, COMMAND, "maxwait_us")?.unwrap_or(0));
        snap.push(
            &metrics::PGBOUNCER_MAX_WAIT,
            vec![datname.to_owned(), usename.to_owned()],
            max_wait,
        );
        pools.push(Pool {
            datname: datname.to_owned(),
            usename: usename.to_owned(),
            clients_active: number(row, COMMAND, "cl_active")?,
            clients_waiting: number(row, COMMAND, "cl_waiting")?,
            servers_active: number(row, COMMAND, "sv_active")?,
            servers_idle: number(row, COMMAND, "sv_idle")?,
            max_wait_seconds: max_wait,
            pool_mode: text(row, COMMAND, "pool_mode")?.to_owned(),
        });
    }
    Ok((snap, pools))
}

/// The registry's entry (see [`crate::collect::registry`]).
pub(crate) const SPEC: CollectorSpec<Pgbouncer> = CollectorSpec {
    name: "pgbouncer_pools",
    table: "pools",
    reads: "SHOW POOLS",
    scope: Scope::Cluster,
    versions: Versions::ANY,
    grants: &["stats_users"],
    metrics: &[
        &metrics::PGBOUNCER_CLIENTS,
        &metrics::PGBOUNCER_SERVERS,
        &metrics::PGBOUNCER_MAX_WAIT,
    ],
    section: |b| &b.pools,
    build: |_| Box::new(Pools),
    carry: |from, to| report(to).pools = from.pgbouncer.as_ref().and_then(|r| r.pools.clone()),
};

impl Collector<Pgbouncer> for Pools {
    fn name(&self) -> &'static str {
        "pgbouncer_pools"
    }

    fn collect<'a, 'c>(
        &'a mut self,
        ctx: &'a BouncerContext<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        Box::pin(async move {
            let (snapshot, pools) = self.poll(ctx).await?;
            report(observations).pools = Some(pools);
            Ok(snapshot)
        })
    }
}
