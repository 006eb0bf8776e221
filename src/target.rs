//! One task per target: hold its single monitoring connection and poll its collectors on
//! schedule. The schedule, backoff and up/down bookkeeping are [`crate::poll`]'s; this module
//! says how a PostgreSQL session is opened and which collectors run on it.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::Shared;
use crate::collect::{
    self, BoxFuture, CollectError, Collector, Observations, PollContext, ServerInfo,
    describe_pg_error,
};
use crate::config::TargetConfig;
use crate::metrics::Snapshot;
use crate::poll::{self, Collects, Connected, Recorder, Schedule, Source};
use crate::tls;

/// Run a target until `shutdown` is cancelled.
pub(crate) async fn run(
    target: Arc<TargetConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let schedule = Schedule {
        name: target.name.clone(),
        connection: target.connection.describe(),
        poll_interval: target.poll_interval,
        connect_timeout: target.connect_timeout,
        statement_timeout: target.statement_timeout,
        reconnect_max_backoff: target.reconnect_max_backoff,
    };
    let source = Target {
        collectors: collect::for_target(&target),
        tls: tls::Connector::new(&target.connection),
        target,
        tracker,
    };
    poll::run(source, schedule, shared, shutdown).await;
}

struct Session {
    client: Client,
    server: ServerInfo,
}

struct Target {
    target: Arc<TargetConfig>,
    tls: tls::Connector,
    tracker: TaskTracker,
    collectors: Vec<Box<dyn Collector>>,
}

impl Source for Target {
    type Session = Session;

    async fn connect(&self) -> Result<Connected<Session>, String> {
        let target = &self.target;
        let config = target.connection.connect_config(target.connect_timeout)?;
        let (client, connection) = config
            .connect(self.tls.get()?)
            .await
            .map_err(|e| tls::explain(&target.connection, describe_pg_error(&e)))?;
        let name = target.name.clone();
        self.tracker.spawn(async move {
            if let Err(e) = connection.await {
                debug!(target = %name, error = %describe_pg_error(&e), "connection closed");
            }
        });
        // Session settings, so a poll can neither run long nor queue behind a lock.
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = 0",
                target.statement_timeout.as_millis(),
                target.lock_timeout.as_millis()
            ))
            .await
            .map_err(|e| describe_pg_error(&e))?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version'), pg_backend_pid(), \
                        (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
                &[],
            )
            .await
            .map_err(|e| describe_pg_error(&e))?;
        let server = ServerInfo {
            version_num: row.get(0),
            version: row.get(1),
            backend_pid: row.get(2),
        };
        let tls: Option<bool> = row.get(3);
        Ok(Connected {
            version: server.version.clone(),
            tls,
            session: Session { client, server },
        })
    }

    fn is_closed(session: &Session) -> bool {
        session.client.is_closed()
    }

    async fn poll(&mut self, session: &Session, recorder: &Recorder) -> Result<(), String> {
        let ctx = PollContext {
            client: &session.client,
            target: &self.target,
            server: &session.server,
        };
        recorder
            .collect_all(&mut self.collectors, &ctx, || session.client.is_closed())
            .await
    }
}

impl<'c> Collects<PollContext<'c>> for Box<dyn Collector> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn time_limit(&self, default: Duration) -> Duration {
        (**self).time_limit(default)
    }

    fn collect<'a>(
        &'a mut self,
        ctx: &'a PollContext<'c>,
        observations: &'a mut Observations,
    ) -> BoxFuture<'a, Result<Snapshot, CollectError>> {
        (**self).collect(ctx, observations)
    }
}
