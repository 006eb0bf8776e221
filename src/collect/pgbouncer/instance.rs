//! Instance-wide facts: `SHOW VERSION`, `SHOW LISTS` (how many clients are connected) and
//! `SHOW CONFIG` (the limits they are measured against).

use super::{BouncerContext, number, report, show, text};
use crate::collect::registry::{CollectorSpec, Scope, Versions};
use crate::collect::{BoxFuture, CollectError, Observations};
use crate::collect::{Collector, Pgbouncer};
use crate::metrics::{self, Snapshot};

/// The instance collector.
#[derive(Debug)]
pub(super) struct Instance;

/// `SHOW CONFIG` keys exported: (key, metric).
const SETTINGS: [(&str, &metrics::MetricDef); 2] = [
    ("max_client_conn", &metrics::PGBOUNCER_MAX_CLIENT_CONN),
    ("default_pool_size", &metrics::PGBOUNCER_DEFAULT_POOL_SIZE),
];

/// Facts read by the instance collector.
#[derive(Debug, Default)]
struct Facts {
    version: String,
    client_connections: Option<i64>,
    max_client_conn: Option<i64>,
}

impl Instance {
    async fn poll(&self, ctx: &BouncerContext<'_>) -> Result<(Snapshot, Facts), CollectError> {
        let mut snap = Snapshot::default();
        let mut facts = Facts {
            version: version(ctx.client).await?,
            ..Facts::default()
        };
        snap.push(&metrics::PGBOUNCER_INFO, vec![facts.version.clone()], 1.0);

        for row in show(ctx.client, "SHOW LISTS").await? {
            let list = text(&row, "SHOW LISTS", "list")?;
            let items = number(&row, "SHOW LISTS", "items")?;
            if list == "used_clients" {
                facts.client_connections = Some(items);
                snap.set(&metrics::PGBOUNCER_CLIENT_CONNECTIONS, items as f64);
            }
            snap.push(
                &metrics::PGBOUNCER_LIST_ITEMS,
                vec![list.to_owned()],
                items as f64,
            );
        }

        for row in show(ctx.client, "SHOW CONFIG").await? {
            let key = text(&row, "SHOW CONFIG", "key")?;
            let Some((_, def)) = SETTINGS.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let value = number(&row, "SHOW CONFIG", "value")?;
            if key == "max_client_conn" {
                facts.max_client_conn = Some(value);
            }
            snap.set(def, value as f64);
        }
        Ok((snap, facts))
    }
}

/// `SHOW VERSION` without the `PgBouncer ` prefix, e.g. `1.18.0`.
pub(crate) async fn version(client: &tokio_postgres::Client) -> Result<String, CollectError> {
    let rows = show(client, "SHOW VERSION").await?;
    let row = rows.first().ok_or_else(|| {
        CollectError::Unavailable(
            "SHOW VERSION returned no row; pgvigil supports PgBouncer 1.18 and later".into(),
        )
    })?;
    Ok(parse_version(text(row, "SHOW VERSION", "version")?))
}

fn parse_version(text: &str) -> String {
    let text = text.trim();
    text.strip_prefix("PgBouncer ")
        .unwrap_or(text)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// The registry's entry (see [`crate::collect::registry`]).
pub(crate) const SPEC: CollectorSpec<Pgbouncer> = CollectorSpec {
    name: "pgbouncer_instance",
    table: "instance",
    reads: "SHOW VERSION, SHOW LISTS, SHOW CONFIG",
    scope: Scope::Cluster,
    versions: Versions::ANY,
    grants: &["stats_users"],
    metrics: &[
        &metrics::PGBOUNCER_INFO,
        &metrics::PGBOUNCER_LIST_ITEMS,
        &metrics::PGBOUNCER_CLIENT_CONNECTIONS,
        &metrics::PGBOUNCER_MAX_CLIENT_CONN,
        &metrics::PGBOUNCER_DEFAULT_POOL_SIZE,
    ],
    section: |b| &b.instance,
    build: |_| Box::new(Instance),
    carry: |from, to| {
        let from = from.pgbouncer.as_ref();
        let to = report(to);
        to.version = from.and_then(|r| r.version.clone());
        to.client_connections = from.and_then(|r| r.client_connections);
        to.max_client_conn = from.and_then(|r| r.max_client_conn);
    },
};

impl Collector<Pgbouncer> for Instance {
    fn name(&self) -> &'static str {
        "pgbouncer_instance"
    }

    fn collect<'a, 'c>(
        &'a mut self,
        ctx: &'a BouncerContext<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        Box::pin(async move {
            let (snapshot, facts) = self.poll(ctx).await?;
            let report = report(observations);
            report.version = Some(facts.version);
            report.client_connections = facts.client_connections;
            report.max_client_conn = facts.max_client_conn;
            Ok(snapshot)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_drops_the_product_name() {
        assert_eq!(parse_version("PgBouncer 1.18.0"), "1.18.0");
        assert_eq!(parse_version("PgBouncer 1.23.1 "), "1.23.1");
        assert_eq!(parse_version("1.24.0"), "1.24.0");
    }
}
