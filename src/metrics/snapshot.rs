//! [`Snapshot`]: the series one collector found in one poll of one source, and [`Labels`], the
//! label values a series carries.
//!
//! # Cost
//!
//! A full-fidelity poll publishes ~130,000 series, so what a series costs matters more than
//! anything else here. A snapshot keeps its metrics in a short `Vec` (a collector publishes
//! a dozen metrics or so) looked up by name with a hint at the metric pushed last, so pushing
//! the 13 counters of a statement in turn hashes nothing. Label values are a [`Labels`]: one
//! shared, immutable allocation that every series of the same label set points to, and that a
//! collector can keep from one poll to the next ([`Snapshot::push_labels`]), so a series that
//! survives a poll costs a reference-count increment instead of fresh strings.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use super::{Kind, MetricDef};

/// The label values of a series, after `target`, in the order of its metric's `labels`.
///
/// Cheap to clone (a shared allocation): build one per label set and push it for every metric
/// that carries it, and keep it across polls while the series lives.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<[String]>);

static NO_LABELS: LazyLock<Labels> = LazyLock::new(|| Labels(Arc::from(Vec::new())));

impl Labels {
    /// A label set of these values.
    pub fn new(values: Vec<String>) -> Self {
        if values.is_empty() {
            return Self::none();
        }
        Labels(Arc::from(values))
    }

    /// The empty label set (a metric with no labels besides `target`); shared, never allocates.
    pub fn none() -> Self {
        NO_LABELS.clone()
    }
}

impl Default for Labels {
    fn default() -> Self {
        Self::none()
    }
}

impl Deref for Labels {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl From<Vec<String>> for Labels {
    fn from(values: Vec<String>) -> Self {
        Self::new(values)
    }
}

impl PartialEq<Vec<String>> for Labels {
    fn eq(&self, other: &Vec<String>) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<[&str]> for Labels {
    fn eq(&self, other: &[&str]) -> bool {
        self.0.len() == other.len() && self.0.iter().zip(other).all(|(a, b)| a == b)
    }
}

impl<const N: usize> PartialEq<[&str; N]> for Labels {
    fn eq(&self, other: &[&str; N]) -> bool {
        *self == other[..]
    }
}

impl PartialEq<Vec<&str>> for Labels {
    fn eq(&self, other: &Vec<&str>) -> bool {
        *self == other[..]
    }
}

/// The label sets of one histogram's exposition lines, built once and shared by every
/// snapshot that pushes a histogram of these label values ([`Snapshot::push_histogram`]).
///
/// A histogram is held as one series per line it is exposed as, in the order
/// `prometheus-client` writes them: `_sum`, `_count`, then one `_bucket` per upper bound,
/// cumulative, `+Inf` last. Each line's label set is the histogram's label values followed
/// by which line it is: [`HistogramLines::SUM`], [`HistogramLines::COUNT`], or the bucket's
/// `le` as the text formats spell it. So every line stands on its own: the text encoder
/// writes any run of them, and the gzip pieces compare and reuse them like any series.
#[derive(Debug, Clone)]
pub struct HistogramLines {
    sum: Labels,
    count: Labels,
    buckets: Vec<Labels>,
}

impl HistogramLines {
    /// The last label value of a `_sum` line.
    pub const SUM: &'static str = "sum";
    /// The last label value of a `_count` line.
    pub const COUNT: &'static str = "count";

    /// The lines of a histogram with these label values (after `target`) and bucket upper
    /// bounds (ascending; `+Inf` is added).
    pub fn new(values: &[&str], bounds: &[f64]) -> Self {
        let with = |last: &str| {
            Labels::new(
                values
                    .iter()
                    .copied()
                    .chain([last])
                    .map(str::to_owned)
                    .collect(),
            )
        };
        let mut le = dtoa::Buffer::new();
        HistogramLines {
            sum: with(Self::SUM),
            count: with(Self::COUNT),
            buckets: bounds
                .iter()
                .map(|b| with(le.format(*b)))
                .chain([with("+Inf")])
                .collect(),
        }
    }
}

/// One series: label values (in the order of the metric's `labels`, after `target`) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label values for the metric's labels other than `target`.
    pub labels: Labels,
    /// The sample value.
    pub value: f64,
}

/// The metrics one collector produced in one poll of one source.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    families: Vec<(&'static MetricDef, Vec<Series>)>,
    /// Where the last push went: consecutive pushes of one metric skip the search.
    last: usize,
}

impl Snapshot {
    /// Add a sample. `labels` are the values for `def.labels` without the leading `target`.
    pub fn push(&mut self, def: &'static MetricDef, labels: Vec<String>, value: f64) {
        self.push_labels(def, &Labels::new(labels), value);
    }

    /// Add a sample with a shared label set (see [`Labels`]): the way to publish many metrics
    /// of one label set, or a series that lives across polls, without copying strings.
    pub fn push_labels(&mut self, def: &'static MetricDef, labels: &Labels, value: f64) {
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
        debug_assert!(
            def.kind != Kind::Histogram,
            "{}: a histogram is pushed whole (push_histogram)",
            def.name
        );
        let index = self.index_of(def);
        self.families[index].1.push(Series {
            labels: labels.clone(),
            value,
        });
    }

    /// Add one histogram: `sum`, and per bucket of `lines` (in its order, `+Inf` last) the
    /// observations in it (not cumulated). It becomes one series per exposition line (see
    /// [`HistogramLines`]).
    pub fn push_histogram(
        &mut self,
        def: &'static MetricDef,
        lines: &HistogramLines,
        sum: f64,
        buckets: &[u64],
    ) {
        debug_assert_eq!(def.kind, Kind::Histogram, "{} is not a histogram", def.name);
        debug_assert_eq!(
            lines.sum.len(),
            def.labels.len(),
            "wrong label count for {}",
            def.name
        );
        debug_assert_eq!(buckets.len(), lines.buckets.len(), "{}", def.name);
        let index = self.index_of(def);
        let family = &mut self.families[index].1;
        family.reserve(lines.buckets.len() + 2);
        let count: u64 = buckets.iter().sum();
        family.push(Series {
            labels: lines.sum.clone(),
            value: sum,
        });
        family.push(Series {
            labels: lines.count.clone(),
            value: count as f64,
        });
        let mut cumulative = 0;
        for (labels, n) in lines.buckets.iter().zip(buckets) {
            cumulative += n;
            family.push(Series {
                labels: labels.clone(),
                value: cumulative as f64,
            });
        }
    }

    /// Add a sample with no labels besides `target`.
    pub fn set(&mut self, def: &'static MetricDef, value: f64) {
        self.push_labels(def, &Labels::none(), value);
    }

    fn index_of(&mut self, def: &'static MetricDef) -> usize {
        // Collectors push in a pattern (the 13 counters of a statement, in turn, then the
        // next statement's): the metric pushed last, or the one after it, is the likely one.
        for index in [self.last, self.last + 1] {
            if self
                .families
                .get(index)
                .is_some_and(|(d, _)| d.name == def.name)
            {
                self.last = index;
                return index;
            }
        }
        let index = match self.families.iter().position(|(d, _)| d.name == def.name) {
            Some(index) => index,
            None => {
                self.families.push((def, Vec::new()));
                self.families.len() - 1
            }
        };
        self.last = index;
        index
    }

    /// The series recorded for one metric.
    pub fn get(&self, def: &MetricDef) -> &[Series] {
        self.families
            .iter()
            .find(|(d, _)| d.name == def.name)
            .map(|(_, s)| s.as_slice())
            .unwrap_or(&[])
    }

    /// The metrics this snapshot holds series of.
    pub fn metrics(&self) -> impl Iterator<Item = &'static MetricDef> + '_ {
        self.families.iter().map(|(def, _)| *def)
    }

    /// Every metric with its series, in the order they were first pushed.
    pub(crate) fn families(&self) -> impl Iterator<Item = (&'static MetricDef, &[Series])> + '_ {
        self.families.iter().map(|(def, s)| (*def, s.as_slice()))
    }

    /// Number of series in the snapshot.
    pub fn len(&self) -> usize {
        self.families.iter().map(|(_, s)| s.len()).sum()
    }

    /// Whether the snapshot holds no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{CONNECTIONS_WAITING, MAX_CONNECTIONS, WRITING_XACTS};

    #[test]
    fn pushes_group_by_metric_in_any_order_and_share_label_sets() {
        let mut snap = Snapshot::default();
        let app = Labels::new(vec!["app".into()]);
        snap.push_labels(&WRITING_XACTS, &app, 1.0);
        snap.set(&MAX_CONNECTIONS, 100.0);
        snap.push(&WRITING_XACTS, vec!["crm".into()], 2.0);
        snap.push(&CONNECTIONS_WAITING, vec!["app".into(), "Lock".into()], 3.0);
        snap.push_labels(&WRITING_XACTS, &app, 4.0);

        assert_eq!(snap.len(), 5);
        let writing = snap.get(&WRITING_XACTS);
        assert_eq!(
            writing.iter().map(|s| s.value).collect::<Vec<_>>(),
            [1.0, 2.0, 4.0]
        );
        assert_eq!(writing[1].labels, ["crm"]);
        assert_eq!(writing[0].labels, vec!["app".to_string()]);
        // The same label set, not a copy.
        assert!(std::ptr::eq(writing[0].labels.as_ptr(), app.as_ptr()));
        assert!(std::ptr::eq(writing[2].labels.as_ptr(), app.as_ptr()));
        assert_eq!(snap.get(&MAX_CONNECTIONS)[0].labels, Labels::none());
        assert_eq!(
            snap.metrics().map(|d| d.name).collect::<Vec<_>>(),
            [
                WRITING_XACTS.name,
                MAX_CONNECTIONS.name,
                CONNECTIONS_WAITING.name
            ]
        );
    }
}
