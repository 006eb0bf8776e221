//! The composition root: load a configuration, build the shared state, start every task, and
//! stop them on shutdown.
//!
//! * [`load`] / [`parse`]: the one way a configuration is read — the config itself, then each
//!   source's alert rules built from it — used by `pgvigil run`, `pgvigil check-config` and
//!   reload alike, so all reject a bad file with the same `FILE:LINE:COL` message.
//! * [`run`] / [`serve`]: the daemon. `serve` builds the hub (`crate::hub`), hands each
//!   source to the supervisor (one task per source, under a child cancellation token), starts
//!   the alert engine and the HTTP server, and waits for shutdown.
//!
//! Shutdown cancels the root token; every task stops within [`SHUTDOWN_GRACE`] or is left
//! behind with a warning.

mod reload;
pub(crate) mod supervisor;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::alert::configure;
use crate::alert::engine::AlertHub;
use crate::config::{Config, ConfigError, LibpqEnv};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::{alert, http};
pub use reload::{ConfigSource, ReloadTrigger, Reloader};
use supervisor::Supervisor;

/// How long shutdown waits for tasks to finish before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; pick a free address with [server] listen = \"host:port\""
    )]
    Bind {
        /// The address from the config.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configuration's alert rules do not build (a config that did not come through
    /// [`load`] or [`parse`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Read and validate a config file, alert rules included: what every entry point calls.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    configure::rule_sets(&config)?;
    Ok(config)
}

/// [`load`] on config text; `path` is only used in error messages, `env` fills DSN gaps.
pub fn parse(path: &Path, text: &str, env: &LibpqEnv) -> Result<Config, ConfigError> {
    let config = Config::parse(path, text, env)?;
    configure::rule_sets(&config)?;
    Ok(config)
}

/// Run the daemon until `shutdown` completes: bind `[server] listen`, then [`serve`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    run_with(config, None, shutdown).await
}

/// [`run`], reloading from `reloader` when asked (`SIGHUP`, `POST /-/reload`).
pub async fn run_with(
    config: Config,
    reloader: Option<Reloader>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let addr = config.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    serve_with(config, reloader, listener, shutdown).await
}

/// Run the daemon on an already bound listener until `shutdown` completes. Tests bind port 0
/// and pass the listener in.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    serve_with(config, None, listener, shutdown).await
}

/// [`serve`], reloading from `reloader` when asked.
pub async fn serve_with(
    config: Config,
    reloader: Option<Reloader>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    configure::rule_sets(&config)?;
    let metrics = Arc::new(Metrics::new());
    metrics.config_loaded(true);
    let (alert_hub, alert_inbox) = AlertHub::new();
    let hub = Arc::new(Hub::new(metrics.clone(), alert_hub));
    hub.lifecycle.store(
        config.server.enable_lifecycle,
        std::sync::atomic::Ordering::Relaxed,
    );
    hub.connects.resize(config.server.max_concurrent_connects);
    if let Some(reloader) = &reloader {
        let _ = hub.reload.set(reloader.trigger());
    }
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let supervisor = Supervisor::new(hub.clone(), tracker.clone(), token.clone());
    let alerts = config.alerts.clone();
    let web = config.server.web.clone();
    let mut daemon = reload::Daemon::new(
        config,
        supervisor,
        hub.clone(),
        tracker.clone(),
        token.clone(),
    );
    daemon.start_sources().await;
    // After the sources' rules are set: restored alerts without a rule resolve at start.
    alert::engine::spawn(&alerts, metrics, alert_inbox, &tracker, &token);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, sources = daemon.supervisor.len(), "pgvigil listening");
    }
    tracker.spawn(http::serve(listener, web, hub.clone(), token.clone()));

    daemon.run(reloader, shutdown).await;
    info!("shutting down");
    token.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            unfinished = tracker.len(),
            "tasks did not stop within {}s; exiting anyway",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}
