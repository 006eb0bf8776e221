//! A target's last hour as charts, from its [`Ring`] of samples.

use std::collections::BTreeMap;

use super::history::{Ring, Sample};
use super::svg::{self, Series, Track, Unit};
use crate::collect::imports::reconcile::Verdict;

/// The CSS class of a verdict's cells and text.
pub(crate) fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "v-ok",
        Verdict::Shortfall => "v-shortfall",
        Verdict::Surplus => "v-surplus",
        Verdict::Mismatch => "v-mismatch",
        Verdict::Stalled => "v-stalled",
        Verdict::Aborted => "v-aborted",
        Verdict::Invalid => "v-invalid",
        Verdict::Running => "v-running",
        Verdict::Confirming => "v-confirming",
        Verdict::Failed => "v-failed",
        Verdict::Unknown => "v-unknown",
    }
}

/// The window the charts show: from the oldest sample (at most an hour back) to the newest,
/// at least 10 s.
fn window(ring: &Ring) -> Option<(u64, u64)> {
    let first = ring.samples().next()?.at;
    let last = ring.samples().next_back()?.at;
    Some((first.min(last.saturating_sub(10)), last))
}

fn series_of(ring: &Ring, label: &str, f: impl Fn(&Sample) -> Option<f64>) -> Series {
    Series {
        label: label.to_owned(),
        points: ring.samples().filter_map(|s| Some((s.at, f(s)?))).collect(),
    }
}

/// Series keyed by name, in first-seen order of their key, at most [`svg::MAX_SERIES`].
fn keyed<K: Ord + Clone>(
    ring: &Ring,
    points: impl Fn(&Sample) -> Vec<(K, String, f64)>,
) -> Vec<Series> {
    let mut order: Vec<K> = Vec::new();
    let mut by_key: BTreeMap<K, Series> = BTreeMap::new();
    for s in ring.samples() {
        for (key, label, value) in points(s) {
            let series = by_key.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                Series {
                    label: label.clone(),
                    points: Vec::new(),
                }
            });
            series.label = label;
            series.points.push((s.at, value));
        }
    }
    order
        .into_iter()
        .filter_map(|k| by_key.remove(&k))
        .take(svg::MAX_SERIES)
        .collect()
}

/// Every chart of a target, in the order an on-call engineer reads them; charts without data
/// (a collector that never reported) are left out.
pub(crate) fn target_charts(ring: &Ring) -> String {
    let Some(span) = window(ring) else {
        return String::new();
    };
    let mut out = String::from("<div class=\"charts\">");
    connection_charts(ring, span, &mut out);
    out.push_str(&svg::line_chart(
        "Poll duration",
        Unit::Seconds,
        &[series_of(ring, "longest poll of each step", |s| {
            Some(f64::from(s.poll_seconds))
        })],
        None,
        span,
    ));
    let statements = keyed(ring, statement_points);
    if !statements.is_empty() {
        out.push_str(&svg::line_chart(
            "Mean time per call of the top statements",
            Unit::Seconds,
            &statements,
            None,
            span,
        ));
    }
    let tables = keyed(ring, |s| {
        s.tables
            .iter()
            .map(|t| (t.table.clone(), t.table.to_string(), t.live_rows as f64))
            .collect()
    });
    if !tables.is_empty() {
        out.push_str(&svg::line_chart(
            "Live rows of watched tables",
            Unit::Count,
            &tables,
            None,
            span,
        ));
    }
    let tracks = verdict_tracks(ring);
    if !tracks.is_empty() {
        out.push_str(&svg::timeline(
            "Import verdicts",
            &tracks,
            span,
            ring.step_seconds(),
        ));
    }
    out.push_str("</div>");
    out
}

/// Connections by state against the usable limit, and transactions holding writes: the
/// activity collector's two charts, if it ever reported.
fn connection_charts(ring: &Ring, span: (u64, u64), out: &mut String) {
    if !ring.samples().any(|s| s.connections.is_some()) {
        return;
    }
    let usable = ring
        .samples()
        .rev()
        .find_map(|s| s.connections)
        .map(|c| f64::from(c.usable));
    type State = fn(&super::history::Connections) -> u32;
    let states: [(&str, State); 4] = [
        ("active", |c| c.active),
        ("idle", |c| c.idle),
        ("idle in transaction", |c| c.idle_in_transaction),
        ("other", |c| c.other),
    ];
    let mut series: Vec<Series> = states
        .iter()
        .map(|(label, f)| series_of(ring, label, |s| s.connections.map(|c| f64::from(f(&c)))))
        .collect();
    series.push(series_of(ring, "all clients", |s| {
        s.connections
            .map(|c| f64::from(c.active + c.idle + c.idle_in_transaction + c.other))
    }));
    out.push_str(&svg::line_chart(
        "Client connections by state",
        Unit::Count,
        &series,
        usable.map(|u| ("usable limit", u)),
        span,
    ));
    out.push_str(&svg::line_chart(
        "Transactions holding uncommitted writes",
        Unit::Count,
        &[series_of(ring, "open with writes", |s| {
            s.writing_xacts.map(f64::from)
        })],
        None,
        span,
    ));
}

type StatementKey = (std::sync::Arc<str>, i64);

/// A sample's statements: keyed by database and queryid, labelled by their text.
fn statement_points(s: &Sample) -> Vec<(StatementKey, String, f64)> {
    s.statements
        .iter()
        .map(|st| {
            let text: String = st
                .query
                .as_deref()
                .unwrap_or("(text not fetched)")
                .chars()
                .take(70)
                .collect();
            (
                (st.datname.clone(), st.queryid),
                format!("{text} ({}, {})", st.datname, st.queryid),
                f64::from(st.mean_seconds),
            )
        })
        .collect()
}

/// One track per import seen in the window, newest imports last.
fn verdict_tracks(ring: &Ring) -> Vec<Track> {
    let mut order = Vec::new();
    let mut tracks: BTreeMap<(std::sync::Arc<str>, std::sync::Arc<str>), Track> = BTreeMap::new();
    for s in ring.samples() {
        for i in s.imports.iter() {
            let key = (i.datname.clone(), i.import_id.clone());
            tracks
                .entry(key.clone())
                .or_insert_with(|| {
                    order.push(key);
                    Track {
                        label: i.import_id.to_string(),
                        cells: Vec::new(),
                    }
                })
                .cells
                .push((s.at, verdict_class(i.verdict)));
        }
    }
    let skip = order.len().saturating_sub(super::history::MAX_IMPORTS);
    order
        .into_iter()
        .skip(skip)
        .filter_map(|k| tracks.remove(&k))
        .collect()
}

/// When pgvigil's verdict on one import changed, within the ring: `(unix seconds, verdict)`.
pub(crate) fn verdict_changes(ring: &Ring, datname: &str, import_id: &str) -> Vec<(u64, Verdict)> {
    let mut changes: Vec<(u64, Verdict)> = Vec::new();
    for s in ring.samples() {
        let found = s
            .imports
            .iter()
            .find(|i| &*i.import_id == import_id && &*i.datname == datname);
        if let Some(i) = found {
            if changes.last().is_none_or(|last| last.1 != i.verdict) {
                changes.push((s.at, i.verdict));
            }
        }
    }
    changes
}

/// The verdict strip of one import.
pub(crate) fn verdict_strip(ring: &Ring, datname: &str, import_id: &str) -> Option<String> {
    let cells: Vec<(u64, &'static str)> = ring
        .samples()
        .filter_map(|s| {
            let i = s
                .imports
                .iter()
                .find(|i| &*i.import_id == import_id && &*i.datname == datname)?;
            Some((s.at, verdict_class(i.verdict)))
        })
        .collect();
    let span = window(ring)?;
    (!cells.is_empty()).then(|| {
        svg::timeline(
            "pgvigil's verdict over time",
            &[Track {
                label: "verdict".into(),
                cells,
            }],
            span,
            ring.step_seconds(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Observations;
    use crate::collect::imports::ImportsReport;
    use crate::collect::imports::reconcile::ImportVerdict;

    fn with_verdict(v: Verdict) -> Observations {
        let mut o = Observations {
            up: true,
            ..Observations::default()
        };
        let mut iv = ImportVerdict::invalid("import_audit", "abc", "committed", String::new());
        iv.verdict = v;
        o.database_mut("app").imports = Some(ImportsReport {
            datname: "app".into(),
            imports: vec![iv],
            ..ImportsReport::default()
        });
        o
    }

    #[test]
    fn verdict_changes_are_listed_once_each() {
        let mut ring = Ring::new(std::time::Duration::from_secs(1));
        for (at, v) in [
            (10, Verdict::Confirming),
            (11, Verdict::Confirming),
            (12, Verdict::Shortfall),
            (13, Verdict::Shortfall),
        ] {
            ring.record(&with_verdict(v), 0.01, at);
        }
        assert_eq!(
            verdict_changes(&ring, "app", "abc"),
            [(10, Verdict::Confirming), (12, Verdict::Shortfall)]
        );
        assert!(verdict_changes(&ring, "other", "abc").is_empty());
        let charts = target_charts(&ring);
        assert!(charts.contains("Import verdicts") && charts.contains("v-shortfall"));
        assert!(charts.contains("Poll duration"));
        // No activity report, no connection chart (never an empty placeholder).
        assert!(!charts.contains("Client connections"));
        assert!(verdict_strip(&ring, "app", "abc").is_some());
    }
}
