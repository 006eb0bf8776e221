//! Snapshots: the series one collector found in one poll of one source, and the store
//! `/metrics` encodes them from.
//!
//! A collector fills a [`Snapshot`] and the poll loop publishes it whole, replacing what that
//! collector published before; a scrape copies the `Arc`s out under a read lock and encodes
//! without holding it. The encoder walks the snapshots themselves (each series carries its
//! [`MetricDef`]), so whatever a collector publishes is exported; families come out in the
//! order of [`super::ALL`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{Kind, MetricDef};

/// One series: label values (in the order of the metric's `labels`, after `target`) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label values for the metric's labels other than `target`.
    pub labels: Vec<String>,
    /// The sample value.
    pub value: f64,
}

/// The metrics one collector produced in one poll of one source.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    series: HashMap<&'static str, (&'static MetricDef, Vec<Series>)>,
}

impl Snapshot {
    /// Add a sample. `labels` are the values for `def.labels` without the leading `target`.
    pub fn push(&mut self, def: &'static MetricDef, labels: Vec<String>, value: f64) {
        debug_assert_eq!(
            def.labels.first(),
            Some(&"target"),
            "snapshot metric {} must carry a target label",
            def.name
        );
        debug_assert_eq!(
            labels.len() + 1,
            def.labels.len(),
            "wrong label count for {}",
            def.name
        );
        debug_assert!(def.kind != Kind::Histogram, "snapshots hold no histograms");
        self.series
            .entry(def.name)
            .or_insert_with(|| (def, Vec::new()))
            .1
            .push(Series { labels, value });
    }

    /// Add a sample with no labels besides `target`.
    pub fn set(&mut self, def: &'static MetricDef, value: f64) {
        self.push(def, Vec::new(), value);
    }

    /// The series recorded for one metric.
    pub fn get(&self, def: &MetricDef) -> &[Series] {
        self.series
            .get(def.name)
            .map(|(_, s)| s.as_slice())
            .unwrap_or(&[])
    }

    /// The metrics this snapshot holds series of.
    pub fn metrics(&self) -> impl Iterator<Item = &'static MetricDef> + '_ {
        self.series.values().map(|(def, _)| *def)
    }

    /// Number of series in the snapshot.
    pub fn len(&self) -> usize {
        self.series.values().map(|(_, s)| s.len()).sum()
    }

    /// Whether the snapshot holds no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The latest snapshot of every (source, collector) pair.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    // A std RwLock: it is never held across an await, and scrapes only read.
    inner: RwLock<BTreeMap<String, BTreeMap<&'static str, Arc<Snapshot>>>>,
}

impl SnapshotStore {
    /// Replace the snapshot a collector published for a source.
    pub fn publish(&self, target: &str, collector: &'static str, snapshot: Snapshot) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner
            .entry(target.to_owned())
            .or_default()
            .insert(collector, Arc::new(snapshot));
    }

    /// Drop what a collector last published (it failed; stale values would mislead).
    pub fn retract(&self, target: &str, collector: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(by_collector) = inner.get_mut(target) {
            by_collector.remove(collector);
        }
    }

    /// Drop everything published for a source (it is down, or no longer watched).
    pub fn clear_target(&self, target: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.remove(target);
    }

    /// The latest snapshot of one collector for one source.
    pub fn latest(&self, target: &str, collector: &str) -> Option<Arc<Snapshot>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.get(target)?.get(collector).cloned()
    }

    fn all(&self) -> Vec<(String, Arc<Snapshot>)> {
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

/// Encodes the store's snapshots at scrape time.
#[derive(Debug)]
pub(super) struct SnapshotCollector(pub(super) Arc<SnapshotStore>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Copy the Arcs out so the lock is not held while encoding.
        let snapshots = self.0.all();
        // Group every series by its metric, families in catalogue order, sources by name.
        let mut families: BTreeMap<(usize, &'static str), (&'static MetricDef, Vec<_>)> =
            BTreeMap::new();
        for (target, snap) in &snapshots {
            for def in snap.metrics() {
                let series = snap.get(def);
                if series.is_empty() {
                    continue;
                }
                families
                    .entry((super::position(def), def.name))
                    .or_insert_with(|| (def, Vec::new()))
                    .1
                    .push((target.as_str(), series));
            }
        }
        for (def, by_target) in families.into_values() {
            let mut family =
                encoder.encode_descriptor(def.family_name(), def.help, None, def.metric_type())?;
            for (target, series) in by_target {
                for series in series {
                    let labels: Vec<(&str, &str)> = std::iter::once(("target", target))
                        .chain(
                            def.labels[1..]
                                .iter()
                                .copied()
                                .zip(series.labels.iter().map(String::as_str)),
                        )
                        .collect();
                    let encoder = family.encode_family(&labels)?;
                    match def.kind {
                        Kind::Counter => ConstCounter::new(series.value).encode(encoder)?,
                        _ => ConstGauge::new(series.value).encode(encoder)?,
                    }
                }
            }
        }
        Ok(())
    }
}
