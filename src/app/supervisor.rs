//! The supervisor: owns each source's task by name, each under a child
//! [`CancellationToken`] of the daemon's, and adds, replaces and removes sources at runtime.
//!
//! Removing a source cancels its token, waits for its poll loop to stop (dropping its session
//! closes the connection), and only then forgets its state in the [`Hub`], so nothing of it is
//! published afterwards. Replacing is the same stop followed by a fresh start under the same
//! name; the source's alerts keep their state across it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::alert::ConfiguredRule;
use crate::alert::configure::RuleSets;
use crate::config::{Config, PgbouncerConfig, SourceSettings, TargetConfig};
use crate::hub::Hub;
use crate::status::SourceKind;
use crate::{bouncer, target};

/// One source's configuration, whatever its kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SourceConfig {
    /// A `[[targets]]` entry.
    Postgres(Arc<TargetConfig>),
    /// A `[[pgbouncers]]` entry.
    Pgbouncer(Arc<PgbouncerConfig>),
}

impl SourceConfig {
    /// Every source of `config`, targets first.
    pub(crate) fn all(config: &Config) -> Vec<SourceConfig> {
        config
            .targets
            .iter()
            .map(|t| SourceConfig::Postgres(Arc::new(t.clone())))
            .chain(
                config
                    .pgbouncers
                    .iter()
                    .map(|b| SourceConfig::Pgbouncer(Arc::new(b.clone()))),
            )
            .collect()
    }

    pub(crate) fn settings(&self) -> &SourceSettings {
        match self {
            SourceConfig::Postgres(t) => &t.source,
            SourceConfig::Pgbouncer(b) => &b.source,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.settings().name
    }

    /// Whether `other` (the same source in a new config) can run on this one's session.
    fn same_connection(&self, other: &SourceConfig) -> bool {
        match (self, other) {
            (SourceConfig::Postgres(a), SourceConfig::Postgres(b)) => a.same_connection(b),
            (SourceConfig::Pgbouncer(a), SourceConfig::Pgbouncer(b)) => {
                a.source.same_connection(&b.source)
            }
            _ => false,
        }
    }

    /// Whether `other` polls the same way: the same collectors with the same settings, the
    /// same intervals and backoff. Alert rules and where the entry was written do not count.
    fn same_polling(&self, other: &SourceConfig) -> bool {
        let comparable = |c: &SourceConfig| {
            let mut c = c.clone();
            let settings = match &mut c {
                SourceConfig::Postgres(t) => &mut Arc::make_mut(t).source,
                SourceConfig::Pgbouncer(b) => &mut Arc::make_mut(b).source,
            };
            settings.alerts.clear();
            settings.defined_at = None;
            c
        };
        comparable(self) == comparable(other)
    }

    pub(crate) fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::Postgres(_) => SourceKind::Postgres,
            SourceConfig::Pgbouncer(_) => SourceKind::Pgbouncer,
        }
    }
}

/// What [`Supervisor::apply`] did, by source name.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
    pub(crate) restarted: Vec<String>,
    /// Changed in place (collectors, intervals): same connection, no restart.
    pub(crate) updated: Vec<String>,
}

#[derive(Debug)]
struct Running {
    config: SourceConfig,
    token: CancellationToken,
    task: JoinHandle<()>,
    updates: Updates,
}

/// Where a running source's task takes a new configuration from.
#[derive(Debug)]
enum Updates {
    Postgres(watch::Sender<Arc<TargetConfig>>),
    Pgbouncer(watch::Sender<Arc<PgbouncerConfig>>),
}

impl Running {
    /// Hand the task a new configuration with the same connection; it applies it between
    /// two polls.
    fn update(&mut self, config: SourceConfig) {
        match (&self.updates, &config) {
            (Updates::Postgres(tx), SourceConfig::Postgres(t)) => {
                let _ = tx.send(t.clone());
            }
            (Updates::Pgbouncer(tx), SourceConfig::Pgbouncer(b)) => {
                let _ = tx.send(b.clone());
            }
            _ => return,
        }
        self.config = config;
    }
}

/// Owns the running sources.
#[derive(Debug)]
pub(crate) struct Supervisor {
    hub: Arc<Hub>,
    tracker: TaskTracker,
    /// The daemon's token; each source runs under a child of it.
    root: CancellationToken,
    running: BTreeMap<String, Running>,
    /// How many sources the configuration last applied has: the spread of first polls.
    fleet: usize,
}

impl Supervisor {
    pub(crate) fn new(hub: Arc<Hub>, tracker: TaskTracker, root: CancellationToken) -> Self {
        Supervisor {
            hub,
            tracker,
            root,
            running: BTreeMap::new(),
            fleet: 0,
        }
    }

    /// Make the running sources what `sources` says: stop those it no longer lists, start the
    /// new ones, restart those whose settings changed, and give every source its rules from
    /// `rules` (a kept source's alerts keep their state; alerts of rules it lost resolve).
    pub(crate) async fn apply(
        &mut self,
        sources: Vec<SourceConfig>,
        mut rules: RuleSets,
    ) -> Changes {
        let mut changes = Changes::default();
        self.fleet = sources.len();
        let wanted: BTreeSet<String> = sources.iter().map(|s| s.name().to_owned()).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|name| !wanted.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name).await;
            changes.removed.push(name);
        }
        for source in sources {
            let name = source.name().to_owned();
            let source_rules = rules.remove(&name).unwrap_or_default();
            match self.running.get_mut(&name) {
                None => {
                    self.add(source, source_rules);
                    changes.added.push(name);
                }
                Some(running) if running.config.same_connection(&source) => {
                    if !running.config.same_polling(&source) {
                        running.update(source);
                        changes.updated.push(name.clone());
                    } else {
                        running.config = source;
                    }
                    self.hub.alerts.set_rules(&name, source_rules);
                }
                Some(_) => {
                    self.replace(source, source_rules).await;
                    changes.restarted.push(name);
                }
            }
        }
        changes
    }

    /// How many sources run.
    pub(crate) fn len(&self) -> usize {
        self.running.len()
    }

    /// Start a source that is not running: register it in the hub, then spawn its task.
    fn add(&mut self, config: SourceConfig, rules: Vec<ConfiguredRule>) {
        let name = config.name().to_owned();
        if self.running.contains_key(&name) {
            warn!(target = %name, "source is already running; not starting it twice");
            return;
        }
        self.hub.register(
            &name,
            config.kind(),
            config.settings().connection.describe(),
            rules,
        );
        self.spawn(config);
    }

    /// Stop a source and forget everything about it. Returns once its task has stopped.
    async fn remove(&mut self, name: &str) {
        let Some(running) = self.running.remove(name) else {
            return;
        };
        stop(running).await;
        self.hub.forget(name);
        info!(target = %name, "source removed");
    }

    /// Restart a running source with a new configuration (a new connection): stop it, then
    /// start it again under the same name. Its alerts keep their state.
    async fn replace(&mut self, config: SourceConfig, rules: Vec<ConfiguredRule>) {
        let name = config.name().to_owned();
        let Some(running) = self.running.remove(&name) else {
            self.add(config, rules);
            return;
        };
        stop(running).await;
        self.hub.restart(
            &name,
            config.kind(),
            config.settings().connection.describe(),
        );
        self.hub.alerts.set_rules(&name, rules);
        self.spawn(config);
        info!(target = %name, "source restarted with its new connection settings");
    }

    fn spawn(&mut self, config: SourceConfig) {
        let token = self.root.child_token();
        let hub = self.hub.clone();
        let tracker = self.tracker.clone();
        let settings = config.settings();
        // Spread over the fleet (a source added alone to a big fleet waits its slot too).
        let first_poll =
            crate::poll::first_poll_delay(&settings.name, settings.poll_interval, self.fleet);
        let (task, updates) = match &config {
            SourceConfig::Postgres(t) => {
                let (tx, rx) = watch::channel(t.clone());
                let task = target::run(t.clone(), hub, token.clone(), tracker, rx, first_poll);
                (self.tracker.spawn(task), Updates::Postgres(tx))
            }
            SourceConfig::Pgbouncer(b) => {
                let (tx, rx) = watch::channel(b.clone());
                let task = bouncer::run(b.clone(), hub, token.clone(), tracker, rx, first_poll);
                (self.tracker.spawn(task), Updates::Pgbouncer(tx))
            }
        };
        let name = config.name().to_owned();
        self.running.insert(
            name,
            Running {
                config,
                token,
                task,
                updates,
            },
        );
    }
}

async fn stop(running: Running) {
    running.token.cancel();
    if let Err(e) = running.task.await {
        warn!(target = %running.config.name(), error = %e, "source task ended abnormally");
    }
}
