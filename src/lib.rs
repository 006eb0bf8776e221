//! pgvigil: a PostgreSQL observability sidecar.
//!
//! pgvigil polls each configured database over one connection of its own, exports what it finds
//! as Prometheus metrics, and watches for the problems operators care about (connection
//! exhaustion, transactions left open with uncommitted writes, ...). The binary in `main.rs` only
//! parses arguments, loads the configuration, sets up telemetry and calls [`run`].
//!
//! # Layout
//!
//! * [`config`]: TOML in, validated [`Config`] out; errors carry `FILE:LINE:COL` and the fix.
//! * `target` (private): one task per target holding its connection, polling collectors on
//!   schedule, reconnecting with backoff.
//! * `bouncer` (private): the same for each PgBouncer admin console (`[[pgbouncers]]`).
//! * `poll` (private): what both loops share: schedule, backoff, `pgvigil_up`, status,
//!   publishing each collector's snapshot.
//! * [`collect`]: one module per data source (`activity`, `statements`, `tables`, `imports`,
//!   `pgbouncer`), each producing a metrics snapshot and typed observations.
//! * [`alert`]: rules over observations, the alert lifecycle, delivery sinks.
//! * [`metrics`]: every exported metric defined once, the snapshot store `/metrics` reads.
//! * [`exposition`]: OpenMetrics vs. classic text format negotiation.
//! * [`status`]: per-target state for the API and the status page.
//! * `http` (private): `/metrics`, `/healthz`, `/readyz`, `/api/v1/targets`,
//!   `/api/v1/alerts`, `/api/v1/imports`, status page.
//! * `tls` (private): the TLS connector of each target and PgBouncer.
//! * [`web`]: HTTPS and basic authentication of the endpoints (exporter-toolkit web config).
//! * [`telemetry`]: logging, and OpenTelemetry span export behind the `otel` feature.
//!
//! Collection is decoupled from scraping: `/metrics` serves the latest published snapshots
//! and never waits on a database.

pub mod alert;
mod bouncer;
pub mod collect;
pub mod config;
pub mod exposition;
mod http;
pub mod metrics;
mod poll;
#[cfg(test)]
mod readme;
pub mod status;
mod target;
pub mod telemetry;
mod tls;
pub mod web;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;

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
}

/// State shared by the target tasks and the HTTP server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) metrics: metrics::Metrics,
    pub(crate) status: status::Status,
    observations: RwLock<BTreeMap<String, Arc<collect::Observations>>>,
    pub(crate) alerts: alert::engine::AlertHub,
}

impl Shared {
    fn new(config: &Config, alerts: alert::engine::AlertHub) -> Self {
        let shared = Shared {
            metrics: metrics::Metrics::new(),
            status: status::Status::default(),
            observations: RwLock::default(),
            alerts,
        };
        for target in &config.targets {
            shared
                .status
                .add_target(&target.name, target.connection.describe());
            shared.metrics.set_up(&target.name, false);
        }
        for bouncer in &config.pgbouncers {
            shared.status.add_source(
                &bouncer.name,
                bouncer.connection.describe(),
                status::SourceKind::Pgbouncer,
            );
            shared.metrics.set_up(&bouncer.name, false);
        }
        shared
    }

    /// Accept the observations of a finished poll (or of a failed connection attempt) and
    /// hand them to the alert engine without waiting for it.
    pub(crate) fn observe(&self, target: &str, observations: collect::Observations) {
        let observations = Arc::new(observations);
        {
            let mut latest = self.observations.write().unwrap_or_else(|e| e.into_inner());
            latest.insert(target.to_owned(), observations.clone());
        }
        if !self.alerts.offer(target, observations) {
            self.metrics.alert_observations_dropped(target);
        }
    }

    /// The latest observations of every target.
    pub(crate) fn latest_observations(&self) -> BTreeMap<String, Arc<collect::Observations>> {
        self.observations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Run the daemon until `shutdown` completes: bind `[server] listen`, then [`serve`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let addr = config.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    serve(config, listener, shutdown).await
}

/// Run the daemon on an already bound listener until `shutdown` completes. Tests bind port 0
/// and pass the listener in.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let (alert_hub, alert_inbox) = alert::engine::AlertHub::new();
    let shared = Arc::new(Shared::new(&config, alert_hub));
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    alert::engine::spawn(&config, shared.clone(), alert_inbox, &tracker, &token);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, targets = config.targets.len(), "pgvigil listening");
    }

    for target in config.targets {
        tracker.spawn(target::run(
            Arc::new(target),
            shared.clone(),
            token.clone(),
            tracker.clone(),
        ));
    }
    for bouncer in config.pgbouncers {
        tracker.spawn(bouncer::run(
            Arc::new(bouncer),
            shared.clone(),
            token.clone(),
            tracker.clone(),
        ));
    }
    tracker.spawn(http::serve(
        listener,
        config.server.web,
        shared.clone(),
        token.clone(),
    ));

    shutdown.await;
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
