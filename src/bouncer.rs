//! One task per PgBouncer instance: hold its admin console connection and poll the PgBouncer
//! collectors on schedule ([`crate::poll`] does the schedule, backoff and up/down bookkeeping).
//!
//! The admin console is not PostgreSQL. It speaks only the simple query protocol, knows no
//! `SET`, and rejects startup parameters outside a short list unless PgBouncer's
//! `ignore_startup_parameters` names them. tokio-postgres sends `client_encoding`, `user`,
//! `database` and `application_name` (accepted by every PgBouncer we support) plus `options`
//! only when the DSN sets it, so the session here is opened with no `options`, runs no `SET`,
//! and uses `simple_query` only — no change to PgBouncer's config is needed beyond letting
//! pgvigil's user in (`admin_users` or `stats_users`).

use std::sync::Arc;

use tokio_postgres::Client;
use tokio_postgres::config::SslMode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::Shared;
use crate::collect::pgbouncer::{self, BouncerCollector, BouncerContext};
use crate::collect::{BoxFuture, CollectError, Observations, describe_pg_error};
use crate::config::PgbouncerConfig;
use crate::metrics::Snapshot;
use crate::poll::{self, Collects, Connected, Recorder, Schedule, Source};
use crate::tls;

/// Run a PgBouncer instance's poll loop until `shutdown` is cancelled.
pub(crate) async fn run(
    config: Arc<PgbouncerConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let schedule = Schedule {
        name: config.name.clone(),
        connection: config.connection.describe(),
        poll_interval: config.poll_interval,
        connect_timeout: config.connect_timeout,
        statement_timeout: config.statement_timeout,
        reconnect_max_backoff: config.reconnect_max_backoff,
    };
    let source = Bouncer {
        collectors: pgbouncer::collectors(),
        tls: tls::Connector::new(&config.connection),
        config,
        tracker,
    };
    poll::run(source, schedule, shared, shutdown).await;
}

struct Bouncer {
    config: Arc<PgbouncerConfig>,
    tls: tls::Connector,
    tracker: TaskTracker,
    collectors: Vec<Box<dyn BouncerCollector>>,
}

impl Source for Bouncer {
    type Session = Client;

    async fn connect(&self) -> Result<Connected<Client>, String> {
        let config = &self.config;
        let pg = config.connection.connect_config(config.connect_timeout)?;
        let (client, connection) = pg
            .connect(self.tls.get()?)
            .await
            .map_err(|e| tls::explain(&config.connection, explain(&e)))?;
        let name = config.name.clone();
        self.tracker.spawn(async move {
            if let Err(e) = connection.await {
                debug!(target = %name, error = %describe_pg_error(&e), "connection closed");
            }
        });
        // Proves this is an admin console, not a PostgreSQL server or a pooled database.
        let version = pgbouncer::version(&client).await.map_err(|e| match e {
            CollectError::Query(e) => explain(&e),
            other => other.to_string(),
        })?;
        // The admin console cannot say whether its client is encrypted; sslmode can, except
        // under prefer.
        let tls = match config.connection.ssl_mode() {
            SslMode::Disable => Some(false),
            SslMode::Require => Some(true),
            _ => None,
        };
        Ok(Connected {
            session: client,
            version,
            tls,
        })
    }

    fn is_closed(session: &Client) -> bool {
        session.is_closed()
    }

    async fn poll(&mut self, session: &Client, recorder: &Recorder) -> Result<(), String> {
        let ctx = BouncerContext {
            client: session,
            config: &self.config,
        };
        recorder
            .collect_all(&mut self.collectors, &ctx, || session.is_closed())
            .await
    }
}

/// A connection error with the fix for the mistakes people make with the admin console.
fn explain(e: &tokio_postgres::Error) -> String {
    let text = describe_pg_error(e);
    let hint = if text.contains("not allowed") {
        "; PgBouncer lets only the users listed in admin_users or stats_users into the pgbouncer database: add pgvigil's user to stats_users (read-only SHOW is all pgvigil needs)"
    } else if text.contains("unsupported startup parameter") {
        "; remove options=... from the DSN: the admin console accepts no startup options"
    } else if text.contains("does not exist") || text.contains("syntax error") {
        "; this does not look like a PgBouncer admin console: point the DSN at PgBouncer's listen port and the database pgbouncer"
    } else {
        ""
    };
    format!("{text}{hint}")
}

impl<'c> Collects<BouncerContext<'c>> for Box<dyn BouncerCollector> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn collect<'a>(
        &'a mut self,
        ctx: &'a BouncerContext<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        // A polled PgBouncer always has a report, even if every collector fails: its parts
        // stay None, which the rules read as "unknown" rather than "fine".
        observations.pgbouncer.get_or_insert_with(Default::default);
        (**self).collect(ctx, observations)
    }
}
