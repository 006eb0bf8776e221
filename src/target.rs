//! The PostgreSQL [`Driver`]: how a target's single monitoring session is opened and what its
//! collectors see of it. The schedule, backoff and up/down bookkeeping are [`crate::poll`]'s;
//! the collectors are the registry's ([`crate::collect::registry::POSTGRES`]).

use std::sync::Arc;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::collect::{PollContext, Postgres, ServerInfo, describe_pg_error};
use crate::config::{SourceSettings, TargetConfig};
use crate::hub::Hub;
use crate::poll::{self, Connected, Driver, PollError};
use crate::tls;

/// Run a target until `shutdown` is cancelled.
pub(crate) async fn run(
    target: Arc<TargetConfig>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    updates: tokio::sync::watch::Receiver<Arc<TargetConfig>>,
) {
    let driver = Target {
        tls: tls::Connector::new(&target.connection),
        target,
        tracker,
    };
    poll::run(driver, hub, shutdown, updates).await;
}

/// An open monitoring session.
pub(crate) struct Session {
    client: Client,
    server: ServerInfo,
}

struct Target {
    target: Arc<TargetConfig>,
    tls: tls::Connector,
    tracker: TaskTracker,
}

impl Driver for Target {
    type Source = Postgres;
    type Session = Session;

    fn config(&self) -> &TargetConfig {
        &self.target
    }

    fn update(&mut self, config: Arc<TargetConfig>) {
        self.target = config;
    }

    fn settings(&self) -> &SourceSettings {
        &self.target.source
    }

    async fn connect(&self) -> Result<Connected<Session>, PollError> {
        let target = &self.target;
        let config = target
            .connection
            .connect_config(target.connect_timeout)
            .map_err(PollError::Connect)?;
        let (client, connection) = config
            .connect(self.tls.get().map_err(PollError::Connect)?)
            .await
            .map_err(|e| {
                PollError::Connect(tls::explain(&target.connection, describe_pg_error(&e)))
            })?;
        let name = target.name.clone();
        self.tracker.spawn(async move {
            if let Err(e) = connection.await {
                debug!(target = %name, error = %describe_pg_error(&e), "connection closed");
            }
        });
        // Session settings, so a poll can neither run long nor queue behind a lock.
        let session_error = |e: tokio_postgres::Error| PollError::Session(describe_pg_error(&e));
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = 0",
                target.statement_timeout.as_millis(),
                target.lock_timeout.as_millis()
            ))
            .await
            .map_err(session_error)?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version'), pg_backend_pid(), \
                        (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
                &[],
            )
            .await
            .map_err(session_error)?;
        let server = ServerInfo {
            version_num: row.get(0),
            version: row.get(1),
            backend_pid: row.get(2),
        };
        let tls: Option<bool> = row.get(3);
        Ok(Connected {
            version: server.version.clone(),
            version_num: Some(server.version_num),
            tls,
            session: Session { client, server },
        })
    }

    fn is_closed(session: &Session) -> bool {
        session.client.is_closed()
    }

    fn context<'s>(&'s self, session: &'s Session) -> PollContext<'s> {
        PollContext {
            client: &session.client,
            target: &self.target,
            server: &session.server,
            database: self.target.connection.dbname(),
        }
    }
}
