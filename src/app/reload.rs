//! Live reload: re-read the configuration (`SIGHUP`, `POST /-/reload`) and apply it without a
//! restart; and apply what file discovery finds.
//!
//! A reload loads the new configuration exactly as start-up and `check-config` do
//! ([`super::load`]); an invalid one is rejected as a whole — the running configuration stays,
//! the error (`FILE:LINE:COL: ...`) is logged, shown on the status page, and
//! `pgvigil_config_last_reload_successful` drops to 0. A valid one is applied in place:
//!
//! * `[alerts]`: receivers, resend interval and runbook URL change in the engine; alerts keep
//!   their state.
//! * sources: the supervisor stops the removed ones (connection closed, series gone, alerts
//!   resolved and the resolutions delivered), starts the added ones, restarts those whose
//!   settings changed, and gives every source its new rules (a changed threshold applies at the
//!   next poll; alerts of unchanged rules are not re-sent).
//! * `[discovery]`: the watcher restarts if its settings changed.
//! * `[server]`, `[logging]`, `[telemetry]` need a restart; a change there is logged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::supervisor::{Changes, SourceConfig, Supervisor};
use crate::alert::configure::{self, RuleSets};
use crate::config::{Config, ConfigError};
use crate::discover::{self, Discovered};
use crate::hub::Hub;
use crate::status::now_rfc3339;

/// Where the configuration comes from, so that it can be read again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// `--config`: a file or a directory of fragments; `None`: the environment.
    pub path: Option<PathBuf>,
    /// `--listen`, which overrides `[server] listen` at every load.
    pub listen: Option<SocketAddr>,
    /// `--web.config.file`, which overrides `[server] web_config_file` at every load.
    pub web_config_file: Option<PathBuf>,
}

impl ConfigSource {
    /// Load the configuration, alert rules included.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.path {
            Some(path) => super::load(path)?,
            None => Config::from_environment()?,
        };
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(web) = &self.web_config_file {
            config
                .server
                .web
                .set_config_file(web.clone())
                .map_err(|e| ConfigError::Environment(e.to_string()))?;
        }
        Ok(config)
    }
}

type Reply = oneshot::Sender<Result<String, String>>;

/// Asks the running daemon to reload; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadTrigger(mpsc::Sender<Reply>);

impl ReloadTrigger {
    /// Reload and wait for the outcome: what changed, or why the new configuration was
    /// rejected (the running one stays).
    pub async fn reload(&self) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(tx)
            .await
            .map_err(|_| "pgvigil is shutting down".to_owned())?;
        rx.await
            .map_err(|_| "pgvigil is shutting down".to_owned())?
    }
}

/// A configuration source and the requests to re-read it.
#[derive(Debug)]
pub struct Reloader {
    source: ConfigSource,
    tx: mpsc::Sender<Reply>,
    rx: mpsc::Receiver<Reply>,
}

impl Reloader {
    /// Reloads of `source`.
    pub fn new(source: ConfigSource) -> Self {
        let (tx, rx) = mpsc::channel(8);
        Reloader { source, tx, rx }
    }

    /// A handle that triggers a reload (for `SIGHUP`, and `POST /-/reload`).
    pub fn trigger(&self) -> ReloadTrigger {
        ReloadTrigger(self.tx.clone())
    }
}

/// The running daemon's configuration and what applies it.
pub(super) struct Daemon {
    pub(super) config: Config,
    pub(super) supervisor: Supervisor,
    pub(super) hub: Arc<Hub>,
    pub(super) tracker: TaskTracker,
    pub(super) root: CancellationToken,
    discovery: Option<(CancellationToken, watch::Receiver<Discovered>)>,
}

impl Daemon {
    pub(super) fn new(
        config: Config,
        supervisor: Supervisor,
        hub: Arc<Hub>,
        tracker: TaskTracker,
        root: CancellationToken,
    ) -> Self {
        let mut daemon = Daemon {
            config,
            supervisor,
            hub,
            tracker,
            root,
            discovery: None,
        };
        daemon.start_discovery();
        daemon
    }

    fn start_discovery(&mut self) {
        if let Some((stop, _)) = self.discovery.take() {
            stop.cancel();
        }
        if let Some(discovery) = self.config.discovery.clone().filter(|d| d.enabled()) {
            let stop = self.root.child_token();
            let rx = discover::spawn(discovery, &self.tracker, stop.clone());
            self.discovery = Some((stop, rx));
        }
    }

    /// Serve reload requests and discovery changes until `shutdown`.
    pub(super) async fn run(
        mut self,
        mut reloads: Option<Reloader>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(reply) = next_request(&mut reloads) => {
                    let source = reloads.as_ref().map(|r| r.source.clone());
                    let result = self.reload(source).await;
                    let _ = reply.send(result);
                }
                Some(()) = discovery_changed(&mut self.discovery) => {
                    self.apply_sources().await;
                }
            }
        }
    }

    /// Re-read the configuration and apply it; the error message when it is rejected.
    async fn reload(&mut self, source: Option<ConfigSource>) -> Result<String, String> {
        let Some(source) = source else {
            return Err("this daemon was started without a configuration source to re-read".into());
        };
        let new = match source.load() {
            Ok(new) => new,
            Err(e) => {
                let message = e.to_string();
                error!("configuration reload rejected, the running configuration stays: {message}");
                self.hub.metrics.config_loaded(false);
                self.hub
                    .set_reload_error(Some((now_rfc3339(), message.clone())));
                return Err(message);
            }
        };
        for (what, changed) in [
            // max_concurrent_connects applies at once (below); the rest of [server] does not.
            (
                "[server]",
                crate::config::ServerConfig {
                    max_concurrent_connects: self.config.server.max_concurrent_connects,
                    ..new.server.clone()
                } != self.config.server,
            ),
            ("[logging]", new.logging != self.config.logging),
            ("[telemetry]", new.telemetry != self.config.telemetry),
        ] {
            if changed {
                warn!("{what} changed; it takes effect when pgvigil restarts");
            }
        }
        let alerts_changed = new.alerts != self.config.alerts;
        let discovery_changed = new.discovery != self.config.discovery;
        self.config = new;
        self.hub.lifecycle.store(
            self.config.server.enable_lifecycle,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.hub
            .connects
            .resize(self.config.server.max_concurrent_connects);
        if alerts_changed {
            self.hub.alerts.reconfigure(self.config.alerts.clone());
        }
        if discovery_changed {
            self.start_discovery();
        }
        let changes = self.apply_sources().await;
        self.hub.metrics.config_loaded(true);
        self.hub.set_reload_error(None);
        let summary = format!(
            "configuration reloaded: {} added, {} removed, {} restarted, {} changed in place",
            changes.added.len(),
            changes.removed.len(),
            changes.restarted.len(),
            changes.updated.len()
        );
        info!(
            added = ?changes.added,
            removed = ?changes.removed,
            restarted = ?changes.restarted,
            updated = ?changes.updated,
            "{summary}"
        );
        Ok(summary)
    }

    /// Start the sources of the configuration the daemon starts with.
    pub(super) async fn start_sources(&mut self) {
        self.apply_sources().await;
    }

    /// Run exactly the configured and discovered sources, each with its rules.
    async fn apply_sources(&mut self) -> Changes {
        let (sources, rules) = self.sources();
        self.supervisor.apply(sources, rules).await
    }

    /// The static sources, then the discovered targets whose names are free.
    fn sources(&mut self) -> (Vec<SourceConfig>, RuleSets) {
        let mut rules = configure::rule_sets(&self.config).unwrap_or_else(|e| {
            // load() built them already; this cannot fail for a loaded configuration.
            error!("alert rules: {e}");
            RuleSets::new()
        });
        let mut sources = SourceConfig::all(&self.config);
        let Some((_, rx)) = &mut self.discovery else {
            self.hub.set_discovery_errors(Vec::new());
            return (sources, rules);
        };
        let found = rx.borrow_and_update().clone();
        self.hub.set_discovery_errors(found.errors);
        for target in found.targets {
            if sources.iter().any(|s| s.name() == target.name) {
                warn!(target = %target.name, "a discovered target has the name of a configured source; the configured one is kept");
                continue;
            }
            match configure::source_rules(&self.config.alerts.rules, &target.source) {
                Ok(source_rules) => {
                    rules.insert(target.name.clone(), source_rules);
                    sources.push(SourceConfig::Postgres(Arc::new(target)));
                }
                Err(e) => warn!(target = %target.name, "discovered target skipped: {e}"),
            }
        }
        (sources, rules)
    }
}

async fn next_request(reloads: &mut Option<Reloader>) -> Option<Reply> {
    match reloads {
        Some(r) => r.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn discovery_changed(
    discovery: &mut Option<(CancellationToken, watch::Receiver<Discovered>)>,
) -> Option<()> {
    match discovery {
        Some((_, rx)) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}
