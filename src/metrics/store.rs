//! The store of published snapshots `/metrics` encodes from.
//!
//! A collector fills a [`Snapshot`] and the poll loop publishes it whole, replacing what that
//! collector published before; a scrape copies the `Arc`s out under a read lock and encodes
//! without holding it. The encoder walks the snapshots themselves (each series carries its
//! [`MetricDef`]), so whatever a collector publishes is exported; families come out in the
//! order of [`super::ALL`].
//!
//! # Encoding once per snapshot
//!
//! A published snapshot never changes, so the text of its sample lines is encoded the first
//! time a scrape needs it and kept beside it ([`Published`]) until the next poll replaces it:
//! a scrape then writes the family headers and copies each target's bytes, and a target that
//! was not polled since the last scrape costs a copy, not a re-encoding. Every change to the
//! store moves its [generation](SnapshotStore::generation), which the `/metrics` body cache
//! (in `registry`) compares against.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use super::MetricDef;
pub use super::snapshot::{Labels, Series, Snapshot};
use super::text;

/// A published snapshot and, once a scrape has needed it, the text of its sample lines.
#[derive(Debug)]
pub(super) struct Published {
    snapshot: Arc<Snapshot>,
    text: OnceLock<Vec<Fragment>>,
}

/// The sample lines of one metric of one published snapshot, with where the family goes.
#[derive(Debug)]
pub(super) struct Fragment {
    /// Position of the metric in [`super::ALL`] (unknown metrics last), then its name: the
    /// exposition order.
    pub(super) order: (usize, &'static str),
    pub(super) def: &'static MetricDef,
    pub(super) lines: String,
}

impl Published {
    /// The sample lines of every metric of the snapshot, for `target`, encoded on first use.
    pub(super) fn fragments(&self, target: &str) -> &[Fragment] {
        self.text.get_or_init(|| {
            self.snapshot
                .families()
                .filter(|(_, series)| !series.is_empty())
                .map(|(def, series)| {
                    let mut lines = String::with_capacity(series.len() * 96);
                    text::samples(&mut lines, target, def, series);
                    Fragment {
                        order: (super::position(def), def.name),
                        def,
                        lines,
                    }
                })
                .collect()
        })
    }
}

/// What a snapshot is of: a collector, and for database-scope collectors the database (`""`
/// for a source-wide snapshot).
type Key = (&'static str, String);

/// The latest snapshot of every (source, collector, database) triple.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    // A std RwLock: it is never held across an await, and scrapes only read.
    inner: RwLock<BTreeMap<String, BTreeMap<Key, Arc<Published>>>>,
    /// Moves on every change to the store and to the process metrics (see [`Self::touch`]).
    generation: AtomicU64,
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
            text: OnceLock::new(),
        });
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let previous = inner
            .entry(target.to_owned())
            .or_default()
            .insert((collector, database.to_owned()), published);
        drop(inner);
        self.touch();
        // Freed outside the lock: a full-fidelity snapshot is 100k+ series.
        drop(previous);
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

    /// Drop everything published for a source (it is down, or no longer watched).
    pub fn clear_target(&self, target: &str) {
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
