//! `pgvigil_poll_*`: how each collector's polls of each target go, published as one snapshot
//! per target once per poll interval.
//!
//! # Why not `prometheus-client` families
//!
//! These are the largest process families by far: a duration histogram (13 lines), an error
//! counter and a last-success gauge per target and collector, 8,500 histograms and 127,500
//! lines (12 MB of text) at 500 targets of 17 collectors. Held as `prometheus-client`
//! families they were encoded and compressed again at every scrape: a third of a 500-target
//! gzip scrape went to encoding them alone. Published as a snapshot of the target (under
//! [`OWN`]), they are encoded and compressed once per publish, off the scrape path, like every
//! other snapshot (modules `parts`, `prebuild`).
//!
//! # When the series move
//!
//! [`Polls::record`] counts a collector's run; [`Polls::take`] gives the target's series as a
//! snapshot if anything was recorded since the last one. The target's poll loop publishes it
//! ([`super::Metrics::publish_polls`]) when a poll fails, and when a poll ends at least nine
//! tenths of a poll interval after the last publish: a collector on a shorter interval
//! (`locks`, every 5 s) ends polls in between, and a snapshot published at each of them would
//! be rebuilt several times per interval, the last time on the scrape path (a snapshot is
//! prebuilt only if a scrape used the one it replaces). A database visit does not publish.
//! So the series are at most one poll interval behind the runs they count (a 5-second
//! collector's last success can look up to one interval older than it is), and a target makes
//! one snapshot of them per interval. A scrape never publishes them (that would build every
//! target's pieces on the scrape path again).
//!
//! # Semantics, as before
//!
//! * The histogram's buckets are `le` (an observation equal to a bound counts in it), as in
//!   `prometheus-client`, and its lines are written as that crate writes them.
//! * `pgvigil_poll_errors_total` starts at 0 with the collector's first run (so the first
//!   failure is an increase Prometheus sees); `pgvigil_last_successful_poll_timestamp_seconds`
//!   appears with its first success.
//! * A target's series survive the target going down or reconnecting (the store keeps
//!   [`OWN`] through `clear_target`), and go when it is forgotten or a collector is dropped.
//! * Collectors come in name order within a target.

use std::collections::HashMap;
use std::sync::Arc;

use super::snapshot::{HistogramLines, Labels, Snapshot};
use super::{LAST_SUCCESS, POLL_DURATION, POLL_ERRORS};

/// The collector name the store keeps a target's own series under: no collector has it.
pub(super) const OWN: &str = "pgvigil";

/// Upper bounds of the poll duration buckets: a healthy poll takes milliseconds, a stuck one
/// hits the statement timeout (seconds).
pub(super) const POLL_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Buckets with `+Inf`.
const BUCKETS: usize = POLL_BUCKETS.len() + 1;

/// Every target's poll counts, and the label sets they are published with.
#[derive(Debug, Default)]
pub(super) struct Polls {
    targets: HashMap<String, Target>,
    /// One collector's label sets, shared by every target (they carry no target).
    labels: HashMap<String, Arc<CollectorLabels>>,
}

/// The label sets of one collector's series.
#[derive(Debug)]
struct CollectorLabels {
    name: String,
    /// `[collector]`: the error counter and the last-success gauge.
    plain: Labels,
    /// The duration histogram's lines.
    duration: HistogramLines,
}

/// One target's collectors, in name order.
#[derive(Debug, Default)]
struct Target {
    collectors: Vec<Collector>,
    /// Whether something changed since the last [`Polls::take`].
    changed: bool,
}

/// How one collector's polls of one target went.
#[derive(Debug)]
struct Collector {
    labels: Arc<CollectorLabels>,
    /// Observations per bucket (not cumulated), `+Inf` last.
    buckets: [u64; BUCKETS],
    sum: f64,
    errors: u64,
    last_success: Option<f64>,
}

impl Polls {
    /// Count one run of `collector` on `target` that took `seconds` and failed or not;
    /// `now` is the Unix time it ended.
    pub(super) fn record(
        &mut self,
        target: &str,
        collector: &str,
        seconds: f64,
        ok: bool,
        now: f64,
    ) {
        let t = match self.targets.get_mut(target) {
            Some(t) => t,
            None => self.targets.entry(target.to_owned()).or_default(),
        };
        t.changed = true;
        let c = match t
            .collectors
            .binary_search_by(|c| c.labels.name.as_str().cmp(collector))
        {
            Ok(i) => &mut t.collectors[i],
            Err(i) => {
                let labels = self
                    .labels
                    .entry(collector.to_owned())
                    .or_insert_with(|| {
                        Arc::new(CollectorLabels {
                            name: collector.to_owned(),
                            plain: Labels::new(vec![collector.to_owned()]),
                            duration: HistogramLines::new(&[collector], &POLL_BUCKETS),
                        })
                    })
                    .clone();
                t.collectors.insert(
                    i,
                    Collector {
                        labels,
                        buckets: [0; BUCKETS],
                        sum: 0.0,
                        errors: 0,
                        last_success: None,
                    },
                );
                &mut t.collectors[i]
            }
        };
        let bucket = POLL_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(POLL_BUCKETS.len());
        c.buckets[bucket] += 1;
        c.sum += seconds;
        if ok {
            c.last_success = Some(now);
        } else {
            c.errors += 1;
        }
    }

    /// The target's series, if anything changed since they were last taken.
    pub(super) fn take(&mut self, target: &str) -> Option<Snapshot> {
        let t = self.targets.get_mut(target)?;
        if !std::mem::take(&mut t.changed) {
            return None;
        }
        Some(snapshot(&t.collectors))
    }

    /// Forget a target.
    pub(super) fn forget(&mut self, target: &str) {
        self.targets.remove(target);
    }

    /// Forget one collector of a target (it no longer runs there); whether it had any series.
    pub(super) fn forget_collector(&mut self, target: &str, collector: &str) -> bool {
        let Some(t) = self.targets.get_mut(target) else {
            return false;
        };
        let before = t.collectors.len();
        t.collectors.retain(|c| c.labels.name != collector);
        let removed = t.collectors.len() != before;
        t.changed |= removed;
        removed
    }
}

/// The snapshot of one target's collectors.
fn snapshot(collectors: &[Collector]) -> Snapshot {
    let mut snap = Snapshot::default();
    for c in collectors {
        snap.push_histogram(&POLL_DURATION, &c.labels.duration, c.sum, &c.buckets);
    }
    for c in collectors {
        snap.push_labels(&POLL_ERRORS, &c.labels.plain, c.errors as f64);
    }
    for c in collectors {
        if let Some(at) = c.last_success {
            snap.push_labels(&LAST_SUCCESS, &c.labels.plain, at);
        }
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'s>(snap: &'s Snapshot, def: &crate::metrics::MetricDef) -> Vec<(Vec<&'s str>, f64)> {
        snap.get(def)
            .iter()
            .map(|s| (s.labels.iter().map(String::as_str).collect(), s.value))
            .collect()
    }

    #[test]
    fn runs_are_counted_per_collector_and_taken_once_per_change() {
        let mut polls = Polls::default();
        assert!(polls.take("main").is_none());
        polls.record("main", "tables", 0.003, true, 100.0);
        polls.record("main", "activity", 0.001, true, 100.0);
        polls.record("main", "tables", 20.0, false, 101.0);
        polls.record("other", "tables", 0.5, true, 102.0);

        let snap = polls.take("main").expect("recorded");
        assert!(polls.take("main").is_none(), "nothing new");
        assert_eq!(
            values(&snap, &POLL_ERRORS),
            [(vec!["activity"], 0.0), (vec!["tables"], 1.0)]
        );
        assert_eq!(
            values(&snap, &LAST_SUCCESS),
            [(vec!["activity"], 100.0), (vec!["tables"], 100.0)]
        );
        let duration = values(&snap, &POLL_DURATION);
        assert_eq!(duration.len(), 2 * (BUCKETS + 2));
        // activity: 1 ms is in the first bucket (le); tables: 3 ms and 20 s (+Inf).
        let tables = &duration[BUCKETS + 2..];
        assert_eq!(tables[0], (vec!["tables", "sum"], 20.003));
        assert_eq!(tables[1], (vec!["tables", "count"], 2.0));
        assert_eq!(tables[2], (vec!["tables", "0.001"], 0.0));
        assert_eq!(tables[3], (vec!["tables", "0.0025"], 0.0));
        assert_eq!(tables[4], (vec!["tables", "0.005"], 1.0));
        assert_eq!(tables[BUCKETS], (vec!["tables", "10.0"], 1.0));
        assert_eq!(tables[BUCKETS + 1], (vec!["tables", "+Inf"], 2.0));
        assert_eq!(duration[2], (vec!["activity", "0.001"], 1.0));

        // Label sets are shared between targets.
        let other = polls.take("other").unwrap();
        assert!(std::ptr::eq(
            other.get(&POLL_ERRORS)[0].labels.as_ptr(),
            snap.get(&POLL_ERRORS)[1].labels.as_ptr()
        ));
    }

    #[test]
    fn a_dropped_collector_and_a_forgotten_target_lose_their_series() {
        let mut polls = Polls::default();
        polls.record("main", "tables", 0.003, true, 100.0);
        polls.record("main", "locks", 0.003, false, 100.0);
        polls.take("main");
        assert!(!polls.forget_collector("main", "imports"));
        assert!(polls.take("main").is_none(), "nothing was dropped");
        assert!(polls.forget_collector("main", "locks"));
        let snap = polls.take("main").expect("a collector went");
        assert_eq!(values(&snap, &POLL_ERRORS), [(vec!["tables"], 0.0)]);
        polls.forget("main");
        assert!(polls.take("main").is_none());
        polls.record("main", "tables", 0.003, true, 100.0);
        let snap = polls.take("main").unwrap();
        assert_eq!(
            values(&snap, &POLL_DURATION)[1],
            (vec!["tables", "count"], 1.0)
        );
    }
}
