//! The PostgreSQL [`Driver`]: how a target's sessions are opened and what the collectors of its
//! main session see. The schedule, backoff and up/down bookkeeping are [`crate::poll`]'s; the
//! collectors are the registry's ([`crate::collect::registry::POSTGRES`]).
//!
//! A target runs two loops side by side in one task: the main session's poll loop
//! (cluster-scope collectors) and the database sessions ([`crate::databases`]), which visit
//! the watched databases for the database-scope ones. Both open their sessions with
//! [`open`], so every session pgvigil holds has the same settings.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_postgres::{AsyncMessage, CancelToken, Client};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::collect::{PollContext, Postgres, Scope, ServerInfo, describe_pg_error, session};
use crate::config::{ConnectionSpec, SourceSettings, TargetConfig};
use crate::hub::Hub;
use crate::poll::{self, Connected, Driver, PollError};
use crate::{databases, tls};

/// The channel NOTIFY payloads of [`IMPORT_CHANNEL`] arrive on: `(datname, payload)`.
pub(crate) type Notices = mpsc::UnboundedSender<(String, String)>;

/// The channel writers NOTIFY after finishing an import (DESIGN.md, the audit table).
pub(crate) const IMPORT_CHANNEL: &str = "pgvigil_import";

/// Run a target until `shutdown` is cancelled: its main poll loop and its database sessions.
pub(crate) async fn run(
    target: Arc<TargetConfig>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    updates: tokio::sync::watch::Receiver<Arc<TargetConfig>>,
    first_poll: std::time::Duration,
) {
    let own = OwnBackends::default();
    let tls = Arc::new(tls::Connector::new(&target.connection));
    let driver = Target {
        hub: hub.clone(),
        privileges_logged: Mutex::default(),
        tls: tls.clone(),
        target: target.clone(),
        tracker: tracker.clone(),
        own: own.clone(),
    };
    let lane = databases::Lane::new(target, hub.clone(), tls, tracker, own, updates.clone());
    let lane = async {
        // The database sessions start with the main session's first poll, not before it.
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(first_poll) => {}
        }
        lane.run(shutdown.clone()).await;
    };
    tokio::join!(
        poll::run(driver, hub, shutdown.clone(), updates, first_poll),
        lane
    );
}

/// What the two loops of a target know of each other's sessions: the backend pids of all of
/// them, so the activity collector does not count them, and the main session's client, over
/// which the database sessions check that a session they closed is gone from the server
/// before they open the next (so the budget holds as the server counts, not only as pgvigil
/// does). A std mutex: held only to copy or change the fields.
#[derive(Debug, Default, Clone)]
pub(crate) struct OwnBackends(Arc<Mutex<Own>>);

#[derive(Debug, Default)]
struct Own {
    main: Option<(i32, Weak<Client>)>,
    databases: Vec<i32>,
}

impl OwnBackends {
    /// The main session.
    fn set_main(&self, pid: i32, client: &Arc<Client>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).main = Some((pid, Arc::downgrade(client)));
    }

    /// The database sessions' pids.
    pub(crate) fn set_databases(&self, pids: Vec<i32>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).databases = pids;
    }

    /// The main session's client, while it is open.
    pub(crate) fn main_client(&self) -> Option<Arc<Client>> {
        let own = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let client = own.main.as_ref()?.1.upgrade()?;
        (!client.is_closed()).then_some(client)
    }

    fn pids(&self) -> Vec<i32> {
        let own = self.0.lock().unwrap_or_else(|e| e.into_inner());
        own.main
            .iter()
            .map(|(pid, _)| *pid)
            .chain(own.databases.iter().copied())
            .collect()
    }
}

/// An open session.
pub(crate) struct Session {
    pub(crate) client: Arc<Client>,
    /// The statements prepared on `client` (see [`crate::collect::prepared`]).
    pub(crate) prepared: crate::collect::prepared::Prepared,
    pub(crate) server: ServerInfo,
    /// Whether it is encrypted; `None` if that cannot be known.
    pub(crate) tls: Option<bool>,
    /// Set when pgvigil closes the session itself, so its connection task does not count
    /// the end as a loss.
    closing: Arc<AtomicBool>,
    /// What cancels the session's running query (a new connection to the server, with the
    /// session's TLS settings).
    cancel: CancelToken,
    tls_connector: Arc<tls::Connector>,
}

impl Session {
    /// Ask the server to cancel what the session is running (shutdown with a poll in flight:
    /// a query waiting on a lock would otherwise go on waiting after pgvigil is gone, up to
    /// its timeouts). Bounded by `limit`; a failure is logged, as nothing more can be done.
    pub(crate) async fn cancel(&self, target: &str, limit: std::time::Duration) {
        let result = match self.tls_connector.get() {
            Ok(tls) => match timeout(limit, self.cancel.cancel_query(tls)).await {
                Ok(result) => result.map_err(|e| describe_pg_error(&e)),
                Err(_) => Err(format!(
                    "no answer within connect_timeout ({})",
                    humantime::format_duration(limit)
                )),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => debug!(
                target,
                pid = self.server.backend_pid,
                "running query cancelled"
            ),
            Err(error) => {
                warn!(
                    target,
                    pid = self.server.backend_pid,
                    "cancelling the running query failed: {error}"
                )
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
    }
}

/// Who a session is for, and where its losses are counted.
#[derive(Clone, Copy)]
pub(crate) struct Purpose<'h> {
    pub(crate) hub: &'h Arc<Hub>,
    /// `main` or `database`, as in `pgvigil_session_losses_total`.
    pub(crate) name: &'static str,
}

/// Open a session to `connection` with the target's session settings; with `notices`, it
/// also `LISTEN`s on [`IMPORT_CHANNEL`] and forwards what arrives, tagged with `datname`.
/// A session that ends without pgvigil closing it (terminated, the server gone) is logged
/// at warn level with its reason and counted in `pgvigil_session_losses_total`.
pub(crate) async fn open(
    target: &TargetConfig,
    connection: &ConnectionSpec,
    tls: &Arc<tls::Connector>,
    tracker: &TaskTracker,
    notices: Option<Notices>,
    purpose: Purpose<'_>,
) -> Result<Session, PollError> {
    let config = connection
        .connect_config(target.connect_timeout)
        .map_err(PollError::Connect)?;
    let (client, mut connection_task) = config
        .connect(tls.get().map_err(PollError::Connect)?)
        .await
        .map_err(|e| PollError::Connect(tls::explain(connection, describe_pg_error(&e))))?;
    let name = target.name.clone();
    let datname = connection.dbname().to_owned();
    let listening = notices.is_some();
    let closing = Arc::new(AtomicBool::new(false));
    let closed_by_us = closing.clone();
    let hub = purpose.hub.clone();
    let purpose = purpose.name;
    tracker.spawn(async move {
        // Drive the connection, forwarding notifications (what `connection.await` would
        // drop).
        let mut ended = None;
        while let Some(message) = poll_fn(|cx| connection_task.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Some(tx) = &notices {
                        let _ = tx.send((datname.clone(), n.payload().to_owned()));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    ended = Some(e);
                    break;
                }
            }
        }
        let error = ended.as_ref().map(describe_pg_error);
        if closed_by_us.load(Ordering::SeqCst) {
            debug!(target = %name, datname, error, "connection closed");
            return;
        }
        let reason = session::loss_reason(ended.as_ref().and_then(|e| e.code()));
        hub.metrics.session_lost(&name, purpose, reason);
        warn!(
            target = %name,
            datname,
            purpose,
            reason,
            "session lost: {}; it will be reopened",
            error.as_deref().unwrap_or("the server closed the connection")
        );
    });
    // Session settings, so a poll can neither run long nor queue behind a lock.
    let session_error = |e: tokio_postgres::Error| PollError::Session(describe_pg_error(&e));
    let listen = if listening {
        format!("; LISTEN {IMPORT_CHANNEL}")
    } else {
        String::new()
    };
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = 0{listen}",
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
    Ok(Session {
        cancel: client.cancel_token(),
        tls_connector: tls.clone(),
        client: Arc::new(client),
        prepared: Default::default(),
        server,
        tls: row.get(3),
        closing,
    })
}

struct Target {
    hub: Arc<Hub>,
    /// Missing privileges already logged (each once).
    privileges_logged: Mutex<std::collections::HashSet<String>>,
    target: Arc<TargetConfig>,
    tls: Arc<tls::Connector>,
    tracker: TaskTracker,
    own: OwnBackends,
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

    /// The main session runs the cluster-scope collectors; the database sessions the others.
    fn scope(&self) -> Option<Scope> {
        Some(Scope::Cluster)
    }

    async fn connect(&self) -> Result<Connected<Session>, PollError> {
        let target = &self.target;
        let purpose = Purpose {
            hub: &self.hub,
            name: "main",
        };
        let session = open(
            target,
            &target.connection,
            &self.tls,
            &self.tracker,
            None,
            purpose,
        )
        .await?;
        crate::privileges::report_missing(
            &self.hub,
            &session.client,
            target,
            Scope::Cluster,
            &self.privileges_logged,
        )
        .await;
        self.own
            .set_main(session.server.backend_pid, &session.client);
        Ok(Connected {
            version: session.server.version.clone(),
            version_num: Some(session.server.version_num),
            tls: session.tls,
            session,
        })
    }

    fn is_closed(session: &Session) -> bool {
        session.client.is_closed()
    }

    async fn cancel(&self, session: &Session) {
        session
            .cancel(&self.target.name, self.target.connect_timeout)
            .await;
    }

    fn context<'s>(&'s self, session: &'s Session) -> PollContext<'s> {
        PollContext {
            client: &session.client,
            prepared: &session.prepared,
            target: &self.target,
            server: &session.server,
            database: self.target.connection.dbname(),
            own_backends: self.own.pids(),
            max_tables: None,
        }
    }
}
