//! Content negotiation between the OpenMetrics text format and the classic Prometheus text
//! format (0.0.4).
//!
//! `prometheus-client` encodes OpenMetrics only. Prometheus itself asks for OpenMetrics, but
//! curl, `promtool check metrics` and older scrapers read the classic format, where a counter's
//! HELP and TYPE lines name the `_total` series and there is no `# EOF`. The two formats differ
//! in exactly those places for what pgvigil emits, so the classic rendering is derived from the
//! OpenMetrics one instead of keeping a second encoder.

use std::collections::HashSet;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header prefers OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| accept.contains("application/openmetrics-text"))
}

/// Rewrite OpenMetrics text into the classic text format.
pub fn openmetrics_to_classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();

    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str("# HELP ");
            push_family_name(&mut out, name, &counters);
            out.push(' ');
            out.push_str(help);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            out.push_str("# TYPE ");
            push_family_name(&mut out, name, &counters);
            out.push(' ');
            out.push_str(match kind {
                "info" | "stateset" => "gauge",
                "gaugehistogram" => "histogram",
                "unknown" => "untyped",
                other => other,
            });
        } else if line.starts_with('#') {
            out.push_str(line);
        } else {
            let sample = strip_exemplar(line);
            if is_created_series(sample, &counters) {
                continue;
            }
            out.push_str(sample);
        }
        out.push('\n');
    }
    out
}

fn push_family_name(out: &mut String, name: &str, counters: &HashSet<&str>) {
    out.push_str(name);
    if counters.contains(name) {
        out.push_str("_total");
    }
}

/// `_created` series of counters have no classic equivalent.
fn is_created_series(sample: &str, counters: &HashSet<&str>) -> bool {
    let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
    sample[..name_end]
        .strip_suffix("_created")
        .is_some_and(|base| counters.contains(base))
}

/// Cut an exemplar (` # {...} value`) off a sample line. Label values may contain anything, so
/// the label block is scanned with its quoting rules rather than searched for `#`.
fn strip_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut in_labels = false;
    let mut in_quotes = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' if in_labels => in_quotes = !in_quotes,
            b'{' if !in_quotes => in_labels = true,
            b'}' if !in_quotes => in_labels = false,
            b'#' if !in_labels => return line[..i].trim_end(),
            _ => {}
        }
        i += 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_name_their_total_series_and_eof_goes() {
        let om = "# HELP x_errors Errors.\n# TYPE x_errors counter\nx_errors_total{a=\"b\"} 1\nx_errors_created{a=\"b\"} 1.7e9\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        let classic = openmetrics_to_classic(om);
        assert_eq!(
            classic,
            "# HELP x_errors_total Errors.\n# TYPE x_errors_total counter\nx_errors_total{a=\"b\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }

    #[test]
    fn exemplars_are_dropped_but_hashes_in_label_values_survive() {
        assert_eq!(
            strip_exemplar("x_total{q=\"select 1 # {a} \\\" }\"} 3 # {trace_id=\"abc\"} 1.0"),
            "x_total{q=\"select 1 # {a} \\\" }\"} 3"
        );
        assert_eq!(strip_exemplar("x 1"), "x 1");
    }

    #[test]
    fn accept_header_negotiation() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
