//! The PgBouncer [`Driver`]: how an instance's admin console session is opened and what its
//! collectors see ([`crate::poll`] does the schedule, backoff and up/down bookkeeping).
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
use tracing::{debug, warn};

use crate::collect::pgbouncer::{self, BouncerContext};
use crate::collect::{CollectError, Pgbouncer, describe_pg_error, session};
use crate::config::{PgbouncerConfig, SourceSettings};
use crate::hub::Hub;
use crate::poll::{self, Connected, Driver, PollError};
use crate::privileges::pgbouncer as privileges;
use crate::tls;

/// Run a PgBouncer instance's poll loop until `shutdown` is cancelled.
pub(crate) async fn run(
    config: Arc<PgbouncerConfig>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    updates: tokio::sync::watch::Receiver<Arc<PgbouncerConfig>>,
    first_poll: std::time::Duration,
) {
    let driver = Bouncer {
        tls: tls::Connector::new(&config.connection),
        config,
        tracker,
        hub: hub.clone(),
        privileges_logged: std::sync::Mutex::default(),
    };
    poll::run(driver, hub, shutdown, updates, first_poll).await;
}

struct Bouncer {
    config: Arc<PgbouncerConfig>,
    tls: tls::Connector,
    tracker: TaskTracker,
    /// Where a lost admin console session is counted (`pgvigil_session_losses_total`).
    hub: Arc<Hub>,
    /// Missing privileges already logged (each once).
    privileges_logged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Driver for Bouncer {
    type Source = Pgbouncer;
    type Session = Client;

    fn config(&self) -> &PgbouncerConfig {
        &self.config
    }

    fn update(&mut self, config: Arc<PgbouncerConfig>) {
        self.config = config;
    }

    fn settings(&self) -> &SourceSettings {
        &self.config.source
    }

    async fn connect(&self) -> Result<Connected<Client>, PollError> {
        let config = &self.config;
        let pg = config
            .connection
            .connect_config(config.connect_timeout)
            .map_err(PollError::Connect)?;
        let user = config.connection.user();
        let (client, connection) = pg
            .connect(self.tls.get().map_err(PollError::Connect)?)
            .await
            .map_err(|e| {
                if privileges::refused_as_not_allowed(&e) {
                    let checks =
                        privileges::all_missing(config, &privileges::stats_users_fix(user));
                    privileges::report(&self.hub, &config.name, &checks, &self.privileges_logged);
                }
                PollError::Connect(tls::explain(&config.connection, explain(&e, user)))
            })?;
        self.watch(connection);
        // Proves this is an admin console, not a PostgreSQL server or a pooled database.
        let version = pgbouncer::version(&client).await.map_err(|e| {
            PollError::Session(match e {
                CollectError::Query(e) => explain(&e, user),
                other => other.to_string(),
            })
        })?;
        // What the user may run, once per session: the collectors keep running either way.
        let checks = privileges::check_session(&client, config).await;
        privileges::report(&self.hub, &config.name, &checks, &self.privileges_logged);
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
            version_num: None,
            tls,
        })
    }

    fn is_closed(session: &Client) -> bool {
        session.is_closed()
    }

    fn context<'s>(&'s self, session: &'s Client) -> BouncerContext<'s> {
        BouncerContext {
            client: session,
            config: &self.config,
        }
    }
}

impl Bouncer {
    /// Drive the session's connection; count and log its loss if it ends with an error.
    fn watch<S, T>(&self, connection: tokio_postgres::Connection<S, T>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let name = self.config.name.clone();
        let hub = self.hub.clone();
        self.tracker.spawn(async move {
            // A session pgvigil closes (the client dropped) ends with `Ok`; one that ends with
            // an error was lost (PgBouncer shut down or restarted, the connection broke).
            match connection.await {
                Ok(()) => debug!(target = %name, "connection closed"),
                Err(e) => {
                    let reason = session::loss_reason(e.code());
                    hub.metrics.session_lost(&name, "main", reason);
                    warn!(
                        target = %name,
                        purpose = "main",
                        reason,
                        "admin console session lost: {}; it will be reopened",
                        describe_pg_error(&e)
                    );
                }
            }
        });
    }
}

/// A connection error with the fix for the mistakes people make with the admin console.
fn explain(e: &tokio_postgres::Error, user: &str) -> String {
    let text = describe_pg_error(e);
    if text.contains("password authentication failed") {
        return privileges::explain_login(&text, user);
    }
    let hint = if text.contains("not allowed") {
        "; PgBouncer lets only the users listed in admin_users or stats_users into the pgbouncer database: add pgvigil's user to stats_users (read-only SHOW is all pgvigil needs), then RELOAD (or SIGHUP) PgBouncer"
    } else if text.contains("unsupported startup parameter") {
        "; remove options=... from the DSN: the admin console accepts no startup options"
    } else if text.contains("does not exist") || text.contains("syntax error") {
        "; this does not look like a PgBouncer admin console: point the DSN at PgBouncer's listen port and the database pgbouncer"
    } else {
        ""
    };
    format!("{text}{hint}")
}
