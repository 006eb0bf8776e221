//! The store of published snapshots `/metrics` encodes from.
//!
//! A collector fills a [`Snapshot`] and the poll loop publishes it whole, replacing what that
//! collector published before; a scrape copies the `Arc`s out under a read lock and encodes
//! without holding it. The encoder walks the snapshots themselves (each series carries its
//! [`MetricDef`](super::MetricDef)), so whatever a collector publishes is exported; families come out in the
//! order of [`super::ALL`].
//!
//! Every change to the store moves its [generation](SnapshotStore::generation), which the
//! `/metrics` body cache (module `scrape`) compares against.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use super::gzip::Deflater;
use super::parts::Parts;
use super::polls::OWN;
use super::prebuild::Prebuild;
pub use super::snapshot::{HistogramLines, Labels, Series, Snapshot};

/// What a snapshot is of: a collector, and for database-scope collectors the database (`""`
/// for a source-wide snapshot).
type Key = (&'static str, String);

/// A published snapshot and, once a gzip scrape asked for them, its compressed pieces
/// (module `parts`).
#[derive(Debug)]
pub(super) struct Published {
    pub(super) snapshot: Arc<Snapshot>,
    parts: OnceLock<Parts>,
    /// The snapshot this one replaced, while its pieces may be reused for this one's; taken
    /// (and so freed) when this one's pieces are built. Only a snapshot whose pieces were
    /// built is kept here, so no chain of old snapshots builds up.
    seed: Mutex<Option<Arc<Published>>>,
    /// Whether a gzip scrape spliced this snapshot's pieces: if not, its successor's are not
    /// built eagerly (scrapes come less often than this collector publishes).
    served: AtomicBool,
}

impl Published {
    /// The pieces of this snapshot for `target` (the target it is published under), built on
    /// first use; a second caller meanwhile waits for them instead of building them too.
    pub(super) fn parts(&self, target: &str, deflater: &mut Deflater) -> &Parts {
        self.parts.get_or_init(|| {
            let seed = self.seed.lock().unwrap_or_else(|e| e.into_inner()).take();
            let previous = seed.as_ref().and_then(|s| s.parts.get());
            Parts::build(target, self.snapshot.clone(), previous, deflater).0
        })
    }

    /// Record that a gzip scrape spliced this snapshot's pieces.
    pub(super) fn served(&self) {
        self.served.store(true, Ordering::Relaxed);
    }

    /// Whether the pieces were built (for tests).
    #[cfg(test)]
    pub(super) fn has_parts(&self) -> bool {
        self.parts.get().is_some()
    }
}

/// The latest snapshot of every (source, collector, database) triple.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    // A std RwLock: it is never held across an await, and scrapes only read.
    inner: RwLock<BTreeMap<String, BTreeMap<Key, Arc<Published>>>>,
    /// Moves on every change to the store and to the process metrics (see [`Self::touch`]).
    generation: AtomicU64,
    /// Builds the gzip pieces of what is published, while gzip is scraped (module `prebuild`).
    prebuild: Prebuild,
}

impl SnapshotStore {
    /// Replace the snapshot a collector published for a source.
    pub fn publish(&self, target: &str, collector: &'static str, snapshot: Snapshot) {
        self.publish_part(target, collector, "", snapshot);
    }

    /// Replace the snapshot a database-scope collector published for one database of a
    /// source.
    pub fn publish_part(
        &self,
        target: &str,
        collector: &'static str,
        database: &str,
        snapshot: Snapshot,
    ) {
        let published = Arc::new(Published {
            snapshot: Arc::new(snapshot),
            parts: OnceLock::new(),
            seed: Mutex::new(None),
            served: AtomicBool::new(false),
        });
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let previous = inner
            .entry(target.to_owned())
            .or_default()
            .insert((collector, database.to_owned()), published.clone());
        // Seeded under the write lock, before any scrape can see the new snapshot.
        if let Some(previous) = &previous {
            let seed = if previous.parts.get().is_some() {
                Some(previous.clone())
            } else {
                previous
                    .seed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
            };
            *published.seed.lock().unwrap_or_else(|e| e.into_inner()) = seed;
        }
        drop(inner);
        self.touch();
        // Built now if a scrape used the snapshot this one replaces (or there was none):
        // when scrapes come less often than this collector publishes, building every
        // snapshot would compress several for each one served.
        if previous
            .as_ref()
            .is_none_or(|p| p.served.load(Ordering::Relaxed))
        {
            self.prebuild.published(target, &published);
        }
        // Freed outside the lock: a full-fidelity snapshot is 100k+ series.
        drop(previous);
    }

    /// A gzip scrape is being served: from now on, pieces are built as snapshots are
    /// published (module `prebuild`).
    pub(super) fn gzip_scraped(&self) {
        self.prebuild.gzip_scraped();
    }

    /// The eager builder (for tests).
    #[cfg(test)]
    pub(super) fn prebuild(&self) -> &Prebuild {
        &self.prebuild
    }

    /// Drop what a collector last published, for every database (it failed; stale values
    /// would mislead).
    pub fn retract(&self, target: &str, collector: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(by_collector) = inner.get_mut(target) {
            by_collector.retain(|(c, _), _| *c != collector);
        }
        drop(inner);
        self.touch();
    }

    /// Drop what a collector last published for one database.
    pub fn retract_part(&self, target: &str, collector: &str, database: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(by_collector) = inner.get_mut(target) {
            by_collector.retain(|(c, d), _| *c != collector || d != database);
        }
        drop(inner);
        self.touch();
    }

    /// Drop everything published for one database of a source (it is no longer watched).
    pub fn clear_database(&self, target: &str, database: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(by_collector) = inner.get_mut(target) {
            by_collector.retain(|(_, d), _| d != database);
        }
        drop(inner);
        self.touch();
    }

    /// Drop everything collected from a source (it reconnects elsewhere): pgvigil's own
    /// series about it (published under `polls::OWN`) stay.
    pub fn clear_target(&self, target: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(by_collector) = inner.get_mut(target) {
            by_collector.retain(|(c, _), _| *c == OWN);
        }
        drop(inner);
        self.touch();
    }

    /// Drop everything published for a source, its own series too (it is no longer watched).
    pub(super) fn remove_target(&self, target: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.remove(target);
        drop(inner);
        self.touch();
    }

    /// The latest source-wide snapshot of one collector for one source.
    pub fn latest(&self, target: &str, collector: &'static str) -> Option<Arc<Snapshot>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .get(target)?
            .get(&(collector, String::new()))
            .map(|p| p.snapshot.clone())
    }

    /// A number that changes whenever what `/metrics` would show may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Record a change that `/metrics` must show (the process metrics call this too).
    pub(super) fn touch(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Every published snapshot, by target name.
    pub(super) fn all(&self) -> Vec<(String, Arc<Published>)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .iter()
            .flat_map(|(target, by_collector)| {
                by_collector
                    .values()
                    .map(move |snap| (target.clone(), snap.clone()))
            })
            .collect()
    }
}
