//! Where sources come from besides the config file: `[discovery] files`, Prometheus `file_sd`
//! files ([`file_sd`] reads one).
//!
//! One task watches the directories the globs point into (the `notify` crate: inotify on
//! Linux) and re-reads every matching file on any change there, and every `refresh_interval`
//! regardless, as a fallback for file systems that send no events (NFS, some container
//! mounts). Each file's last good target set is kept: a file that no longer parses is reported
//! (logged once per distinct error, shown on the status page, with its path and position) and
//! its previous targets keep running until it is fixed; a deleted file's targets are removed.
//! The merged set (files in path order; a name already taken by an earlier file is skipped with
//! a warning) is published on a `watch` channel the composition root applies to the
//! supervisor.

pub(crate) mod file_sd;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{DiscoveryConfig, LibpqEnv, TargetConfig};

/// Wait this long after a change event for more of them (an editor writes a file in steps).
const SETTLE: Duration = Duration::from_millis(100);

/// What discovery found.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Discovered {
    /// Every discovered target, files in path order.
    pub(crate) targets: Vec<TargetConfig>,
    /// Files that could not be read, with why and where (their last good targets stay).
    pub(crate) errors: Vec<String>,
}

/// Start watching; the returned receiver sees every new [`Discovered`] set.
pub(crate) fn spawn(
    config: DiscoveryConfig,
    tracker: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) -> watch::Receiver<Discovered> {
    let mut state = State {
        config,
        env: LibpqEnv::from_process(),
        files: BTreeMap::new(),
        logged: BTreeSet::new(),
    };
    let (tx, rx) = watch::channel(state.scan());
    tracker.spawn(state.run(tx, stop));
    rx
}

struct State {
    config: DiscoveryConfig,
    env: LibpqEnv,
    /// Each file's last good targets.
    files: BTreeMap<PathBuf, Vec<TargetConfig>>,
    /// Errors already logged, so a broken file is not reported at every re-read.
    logged: BTreeSet<String>,
}

impl State {
    async fn run(mut self, tx: watch::Sender<Discovered>, stop: CancellationToken) {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let watcher = self.watch(events_tx);
        let mut refresh = tokio::time::interval(self.config.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = refresh.tick() => {}
                Some(()) = events.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while events.try_recv().is_ok() {}
                }
            }
            let found = self.scan();
            tx.send_if_modified(|current| {
                let changed = *current != found;
                *current = found;
                changed
            });
        }
        drop(watcher);
    }

    /// Watch every directory a glob points into; `None` when watching is impossible (the
    /// periodic re-read still works).
    fn watch(&self, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch discovery files; re-reading them every refresh_interval only");
                return None;
            }
        };
        let dirs: BTreeSet<PathBuf> = self.config.files.iter().map(|p| base_dir(p)).collect();
        for dir in dirs {
            if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch discovery directory; re-reading it every refresh_interval only");
            }
        }
        Some(watcher)
    }

    /// Read every matching file; keep the last good set of each broken one.
    fn scan(&mut self) -> Discovered {
        let mut seen = BTreeSet::new();
        let mut errors = Vec::new();
        for pattern in &self.config.files {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.filter_map(Result::ok) {
                seen.insert(path.clone());
                match self.read(&path) {
                    Ok(targets) => {
                        self.files.insert(path, targets);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        self.files.retain(|path, _| seen.contains(path));
        for error in &errors {
            if self.logged.insert(error.clone()) {
                warn!("discovery: {error}; its last good targets keep running");
            }
        }
        self.logged.retain(|e| errors.contains(e));
        let mut names = BTreeSet::new();
        let mut targets = Vec::new();
        for (path, found) in &self.files {
            for target in found {
                if names.insert(target.name.clone()) {
                    targets.push(target.clone());
                } else {
                    warn!(target = %target.name, file = %path.display(), "discovery: target name already taken by another file; skipped");
                }
            }
        }
        Discovered { targets, errors }
    }

    fn read(&self, path: &Path) -> Result<Vec<TargetConfig>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
        let targets = file_sd::parse(path, &text, &self.config, &self.env)?;
        if !self.files.contains_key(path) {
            info!(file = %path.display(), targets = targets.len(), "discovery file read");
        }
        Ok(targets)
    }
}

/// The directory a glob pattern points into: its longest leading part without glob
/// characters, less the file name.
fn base_dir(pattern: &str) -> PathBuf {
    let mut dir = PathBuf::new();
    for part in Path::new(pattern).components() {
        let text = part.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[']) {
            return dir;
        }
        dir.push(part);
    }
    dir.parent().map(Path::to_owned).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watched_directory_is_where_the_glob_starts() {
        assert_eq!(
            base_dir("/etc/pgvigil/targets/*.json"),
            Path::new("/etc/pgvigil/targets")
        );
        assert_eq!(base_dir("/etc/pgvigil/one.json"), Path::new("/etc/pgvigil"));
        assert_eq!(base_dir("/srv/*/targets.json"), Path::new("/srv"));
    }
}
