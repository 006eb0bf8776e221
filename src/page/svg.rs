//! Small charts drawn on the server as inline SVG: no script, no external resource, so the
//! page works offline and under a script-free Content-Security-Policy. Colours come from the
//! page's CSS classes (`c0`..`c7`, `v-<verdict>`), so the dark mode applies to them too.

use std::fmt::Write as _;

use super::html::escape;

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 18.0;
/// Series drawn per chart (each gets a colour class).
pub(crate) const MAX_SERIES: usize = 8;

/// How a chart's values read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    /// A count (connections, rows).
    Count,
    /// Seconds, shown as ms or s.
    Seconds,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Count if v >= 1e9 => format!("{:.1}G", v / 1e9),
            Unit::Count if v >= 1e6 => format!("{:.1}M", v / 1e6),
            Unit::Count if v >= 1e4 => format!("{:.0}k", v / 1e3),
            Unit::Count => format!("{v:.0}"),
            Unit::Seconds if v == 0.0 => "0".to_owned(),
            Unit::Seconds if v >= 1.0 => format!("{v:.1}s"),
            Unit::Seconds if v >= 0.01 => format!("{:.0}ms", v * 1e3),
            Unit::Seconds => format!("{:.2}ms", v * 1e3),
        }
    }
}

/// One line of a chart: `(unix seconds, value)` points, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Legend text (escaped when drawn).
    pub(crate) label: String,
    /// The points.
    pub(crate) points: Vec<(u64, f64)>,
}

/// A line chart over `[from, to]` (Unix seconds) with an optional dashed limit line, and its
/// legend (each series' latest value beside its label).
pub(crate) fn line_chart(
    title: &str,
    unit: Unit,
    series: &[Series],
    limit: Option<(&str, f64)>,
    (from, to): (u64, u64),
) -> String {
    let span = to.saturating_sub(from).max(1) as f64;
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(limit.map(|l| l.1))
        .fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let x = |t: u64| LEFT + (t.saturating_sub(from) as f64 / span) * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - (v / top).clamp(0.0, 1.0)) * (HEIGHT - TOP - BOTTOM);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg role=\"img\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\"><title>{}</title>",
        escape(title),
        escape(title)
    );
    axes(&mut svg, unit, top, span, &x, &y, to);
    if let Some((label, value)) = limit {
        let _ = write!(
            svg,
            "<line class=\"lim\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"><title>{}</title></line>",
            WIDTH - RIGHT,
            y(value),
            y(value),
            escape(label)
        );
    }
    for (i, s) in series.iter().take(MAX_SERIES).enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        if points.len() == 1 {
            // One sample: a dot, since a one-point polyline draws nothing.
            let (t, v) = s.points[0];
            let _ = write!(
                svg,
                "<circle class=\"c{i}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"/>",
                x(t),
                y(v)
            );
        } else if !points.is_empty() {
            let _ = write!(
                svg,
                "<polyline class=\"c{i}\" points=\"{}\"/>",
                points.join(" ")
            );
        }
    }
    svg.push_str("</svg><ul class=\"legend\">");
    for (i, s) in series.iter().take(MAX_SERIES).enumerate() {
        let latest = s
            .points
            .last()
            .map_or_else(String::new, |p| unit.format(p.1));
        let _ = write!(
            svg,
            "<li><span class=\"sw c{i}\"></span>{} <b>{latest}</b></li>",
            escape(&s.label)
        );
    }
    if let Some((label, value)) = limit {
        let _ = write!(
            svg,
            "<li><span class=\"sw c4\"></span>{} <b>{}</b> (dashed)</li>",
            escape(label),
            unit.format(value)
        );
    }
    svg.push_str("</ul></figure>");
    svg
}

fn axes(
    svg: &mut String,
    unit: Unit,
    top: f64,
    span: f64,
    x: &impl Fn(u64) -> f64,
    y: &impl Fn(f64) -> f64,
    to: u64,
) {
    let mut labels: Vec<String> = Vec::new();
    for frac in [0.0, 0.5, 1.0] {
        let v = top / 1.1 * frac;
        let label = unit.format(v);
        // A count's half-way mark between 0 and 1 would read "0" or "1" twice.
        if labels.contains(&label) {
            continue;
        }
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            WIDTH - RIGHT,
            y(v),
            y(v),
            LEFT - 4.0,
            y(v) + 3.0,
        );
        labels.push(label);
    }
    let span_secs = span as u64;
    for (t, label) in [
        (to.saturating_sub(span_secs), ago(span_secs)),
        (to.saturating_sub(span_secs / 2), ago(span_secs / 2)),
        (to, "now".to_owned()),
    ] {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            x(t).clamp(LEFT + 10.0, WIDTH - RIGHT - 10.0),
            HEIGHT - 4.0
        );
    }
}

/// `-5m`, or `-40s` under two minutes.
fn ago(secs: u64) -> String {
    if secs < 120 {
        format!("-{secs}s")
    } else {
        format!("-{}m", (secs + 30) / 60)
    }
}

/// One row of a [`timeline`]: a label and `(unix seconds, CSS class)` cells, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct Track {
    /// Row label (escaped when drawn).
    pub(crate) label: String,
    /// Each sample's class, e.g. `v-shortfall`.
    pub(crate) cells: Vec<(u64, &'static str)>,
}

/// Coloured strips, one per track, each cell lasting until the next sample (at most `step`).
pub(crate) fn timeline(title: &str, tracks: &[Track], (from, to): (u64, u64), step: u64) -> String {
    const ROW: f64 = 16.0;
    const LABEL: f64 = 150.0;
    let height = TOP + ROW * tracks.len() as f64 + BOTTOM;
    let span = to.saturating_sub(from).max(1) as f64;
    let x = |t: u64| LABEL + (t.saturating_sub(from) as f64 / span) * (WIDTH - LABEL - RIGHT);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg role=\"img\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\"><title>{}</title>",
        escape(title),
        escape(title)
    );
    for (row, track) in tracks.iter().enumerate() {
        let top = TOP + ROW * row as f64;
        let label: String = track.label.chars().take(24).collect();
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\">{}</text>",
            top + ROW * 0.7,
            escape(&label)
        );
        for (i, &(t, class)) in track.cells.iter().enumerate() {
            let end = track
                .cells
                .get(i + 1)
                .map_or(t + step, |next| next.0.min(t + step))
                .min(to.max(t + 1));
            let width = (x(end) - x(t)).max(1.0);
            let _ = write!(
                svg,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{:.1}\"/>",
                x(t),
                top + 2.0,
                ROW - 4.0
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{LABEL}\" y=\"{:.1}\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">now</text></svg></figure>",
        height - 4.0,
        ago(span as u64),
        WIDTH - RIGHT,
        height - 4.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_escapes_labels_and_scales_to_its_limit() {
        let series = [Series {
            label: "<script>x</script>".into(),
            points: vec![(0, 10.0), (60, 20.0)],
        }];
        let svg = line_chart("t<", Unit::Count, &series, Some(("usable", 100.0)), (0, 60));
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        // The limit line sits at 100 / 110 of the height above the x axis.
        let y_limit = TOP + (1.0 - 100.0 / 110.0) * (HEIGHT - TOP - BOTTOM);
        assert!(svg.contains(&format!("y1=\"{y_limit:.1}\"")), "{svg}");
        assert!(svg.contains("<polyline class=\"c0\""));
        assert!(
            svg.contains("<b>20</b>"),
            "latest value in the legend: {svg}"
        );
    }

    #[test]
    fn one_point_is_a_dot_and_units_read() {
        let series = [Series {
            label: "x".into(),
            points: vec![(30, 0.25)],
        }];
        let svg = line_chart("t", Unit::Seconds, &series, None, (0, 60));
        assert!(svg.contains("<circle"), "{svg}");
        assert_eq!(Unit::Seconds.format(0.25), "250ms");
        assert_eq!(Unit::Seconds.format(2.0), "2.0s");
        assert_eq!(Unit::Count.format(12_345.0), "12k");
        assert_eq!((ago(40), ago(3600)), ("-40s".to_owned(), "-60m".to_owned()));
        let ones = [Series {
            label: "x".into(),
            points: vec![(0, 1.0), (60, 1.0)],
        }];
        let svg = line_chart("t", Unit::Count, &ones, None, (0, 60));
        assert_eq!(svg.matches("text-anchor=\"end\">1<").count(), 1, "{svg}");
    }

    #[test]
    fn timeline_cells_take_their_verdict_class() {
        let tracks = [Track {
            label: "id".into(),
            cells: vec![(0, "v-confirming"), (15, "v-shortfall")],
        }];
        let svg = timeline("verdicts", &tracks, (0, 30), 15);
        assert!(svg.contains("class=\"v-confirming\"") && svg.contains("class=\"v-shortfall\""));
    }
}
