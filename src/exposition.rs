//! Content negotiation for `/metrics`: the OpenMetrics text format or the classic Prometheus
//! text format (0.0.4), from `Accept`; gzip, zstd or neither, from `Accept-Encoding`.
//!
//! Prometheus itself asks for OpenMetrics, but curl, `promtool check metrics` and older
//! scrapers read the classic format, where a counter's HELP and TYPE lines name the `_total`
//! series and there is no `# EOF`. The snapshot series (nearly all of a scrape) are written in
//! each format directly (`crate::metrics`, module `text`); `prometheus-client`, which holds
//! the process metrics, encodes OpenMetrics only, so their classic rendering is derived with
//! [`openmetrics_to_classic`] (the formats differ in exactly those places for what pgvigil
//! emits).

use std::collections::HashSet;

use crate::metrics::{Encoding, Format};

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header prefers OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| accept.contains("application/openmetrics-text"))
}

/// The format an `Accept` header asks for.
pub fn format(accept: Option<&str>) -> Format {
    if wants_openmetrics(accept) {
        Format::OpenMetrics
    } else {
        Format::Classic
    }
}

/// The content type of a format.
pub fn content_type(format: Format) -> &'static str {
    match format {
        Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        Format::Classic => CLASSIC_CONTENT_TYPE,
    }
}

/// The coding an `Accept-Encoding` header prefers among those pgvigil serves: the highest
/// `q`, zstd before gzip when they tie; `*` stands for gzip; no header, or nothing acceptable,
/// means the body as it is.
pub fn encoding(accept_encoding: Option<&str>) -> Encoding {
    let mut best = (0.0_f32, Encoding::Identity);
    for item in accept_encoding.unwrap_or_default().split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let candidate = if coding.eq_ignore_ascii_case("zstd") {
            Encoding::Zstd
        } else if coding.eq_ignore_ascii_case("gzip")
            || coding.eq_ignore_ascii_case("x-gzip")
            || coding == "*"
        {
            Encoding::Gzip
        } else {
            continue;
        };
        let better = q > best.0 || (q == best.0 && q > 0.0 && candidate == Encoding::Zstd);
        if better {
            best = (q, candidate);
        }
    }
    best.1
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

    #[test]
    fn accept_encoding_negotiation() {
        assert_eq!(encoding(Some("gzip")), Encoding::Gzip);
        assert_eq!(encoding(Some("deflate, gzip, br, zstd")), Encoding::Zstd);
        assert_eq!(encoding(Some("zstd;q=0.5, gzip")), Encoding::Gzip);
        assert_eq!(encoding(Some("gzip;q=0, zstd;q=0")), Encoding::Identity);
        assert_eq!(encoding(Some("*")), Encoding::Gzip);
        assert_eq!(encoding(Some("br, identity")), Encoding::Identity);
        assert_eq!(encoding(Some("GZIP ; q=0.8")), Encoding::Gzip);
        assert_eq!(encoding(None), Encoding::Identity);
    }
}
