//! The text exposition of snapshot series, written directly in both formats.
//!
//! For what snapshots hold (gauges and counters without `_created` or exemplars) the
//! OpenMetrics and the classic text format differ only in a family's HELP and TYPE lines: a
//! counter's are named after the family in OpenMetrics (`pgvigil_x`) and after the `_total`
//! series in the classic format. Sample lines are the same bytes in both, so they are encoded
//! once per published snapshot ([`samples`]) and each scrape only writes the headers
//! ([`header`]) around them.
//!
//! A histogram's series are its lines (see [`super::HistogramLines`]): the last label value
//! of each says which (`sum`, `count`, or a bucket's `le`), and is written as the line's
//! suffix, and for a bucket as its leading `le` label, as `prometheus-client` writes them.
//!
//! Label values are escaped as both formats want (`\\`, `\"`, `\n`); values are written as
//! `prometheus-client` writes them (shortest round-trip decimal), with `+Inf`, `-Inf` and
//! `NaN` spelled as the formats spell them.

use super::{HistogramLines, Kind, MetricDef, Series};

/// The two text formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (what Prometheus asks for).
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (curl, promtool, older scrapers).
    Classic,
}

/// Write a family's `# HELP` and `# TYPE` lines.
pub(crate) fn header(out: &mut String, def: &MetricDef, format: Format) {
    let name = match format {
        Format::OpenMetrics => def.family_name(),
        Format::Classic => def.name,
    };
    let kind = def.metric_type();
    let kind = kind.as_str();
    out.reserve(name.len() * 2 + def.help.len() + 24);
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(def.help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Write the sample lines of one metric's series for one target.
pub(crate) fn samples(out: &mut String, target: &str, def: &MetricDef, series: &[Series]) {
    if def.kind == Kind::Histogram {
        return histogram_lines(out, target, def, series);
    }
    let names = def.labels.get(1..).unwrap_or_default();
    let mut value = dtoa::Buffer::new();
    for s in series {
        out.push_str(def.name);
        out.push('{');
        push_labels(out, target, names, &s.labels);
        out.push_str("} ");
        push_value(out, &mut value, s.value);
        out.push('\n');
    }
}

/// Write a histogram's lines (any run of them): sums as floats, counts as integers.
fn histogram_lines(out: &mut String, target: &str, def: &MetricDef, series: &[Series]) {
    let names = def.labels.get(1..).unwrap_or_default();
    let mut value = dtoa::Buffer::new();
    let mut count = itoa::Buffer::new();
    for s in series {
        let Some((line, values)) = s.labels.split_last() else {
            debug_assert!(false, "{}: a histogram line names its part", def.name);
            continue;
        };
        out.push_str(def.name);
        let sum = match line.as_str() {
            HistogramLines::SUM => {
                out.push_str("_sum{");
                true
            }
            HistogramLines::COUNT => {
                out.push_str("_count{");
                false
            }
            le => {
                out.push_str("_bucket{le=\"");
                out.push_str(le);
                out.push_str("\",");
                false
            }
        };
        push_labels(out, target, names, values);
        out.push_str("} ");
        if sum {
            push_value(out, &mut value, s.value);
        } else {
            // Counts are whole numbers held as f64 (exact below 2^53).
            out.push_str(count.format(s.value as u64));
        }
        out.push('\n');
    }
}

/// `target="…"` and each further label as `,name="value"`, values escaped.
#[inline]
fn push_labels(out: &mut String, target: &str, names: &[&str], values: &[String]) {
    out.push_str("target=\"");
    escape_into(out, target);
    out.push('"');
    for (name, v) in names.iter().zip(values) {
        out.push(',');
        out.push_str(name);
        out.push_str("=\"");
        escape_into(out, v);
        out.push('"');
    }
}

fn push_value(out: &mut String, buf: &mut dtoa::Buffer, v: f64) {
    if v.is_finite() {
        out.push_str(buf.format_finite(v));
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v > 0.0 {
        out.push_str("+Inf");
    } else {
        out.push_str("-Inf");
    }
}

/// Append a label value with `\`, `"` and newlines escaped; most values need none and are
/// copied whole.
fn escape_into(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    let mut last = 0;
    for (i, b) in value.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            b'\n' => "\\n",
            _ => continue,
        };
        out.push_str(&value[last..i]);
        out.push_str(escaped);
        last = i + 1;
    }
    out.push_str(&value[last..]);
}

#[cfg(test)]
mod tests {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::metrics::{Kind, Labels, STATEMENT_CALLS, STATEMENT_INFO, WRITING_XACTS};

    /// The encoding pgvigil used before this module: prometheus-client's, as the oracle.
    #[derive(Debug)]
    struct Oracle(Vec<(&'static MetricDef, Vec<Series>)>);

    impl Collector for Oracle {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            for (def, series) in &self.0 {
                let mut family = encoder.encode_descriptor(
                    def.family_name(),
                    def.help,
                    None,
                    def.metric_type(),
                )?;
                for s in series {
                    let labels: Vec<(&str, &str)> = std::iter::once(("target", "t\"1\\\n"))
                        .chain(
                            def.labels[1..]
                                .iter()
                                .copied()
                                .zip(s.labels.iter().map(String::as_str)),
                        )
                        .collect();
                    let e = family.encode_family(&labels)?;
                    match def.kind {
                        Kind::Counter => ConstCounter::new(s.value).encode(e)?,
                        _ => ConstGauge::new(s.value).encode(e)?,
                    }
                }
            }
            Ok(())
        }
    }

    fn series(labels: &[&str], value: f64) -> Series {
        Series {
            labels: Labels::new(labels.iter().map(|s| s.to_string()).collect()),
            value,
        }
    }

    #[test]
    fn both_formats_match_prometheus_client_byte_for_byte() {
        let families = vec![
            (
                &STATEMENT_CALLS,
                vec![
                    series(&["app", "u", "42", "true"], 12.0),
                    series(&["a\"pp", "u\\x", "-7", "false"], 0.000125),
                    series(&["", "", "other", ""], 1.5e21),
                ],
            ),
            (
                &STATEMENT_INFO,
                vec![series(&["42", "select 1\nfrom \"t\" where x = '\\'"], 1.0)],
            ),
            (&WRITING_XACTS, vec![series(&["app"], 3.0)]),
        ];
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Oracle(families.clone())));
        let mut expected = String::new();
        prometheus_client::encoding::text::encode_registry(&mut expected, &registry).unwrap();

        let mut ours = String::new();
        for (def, s) in &families {
            header(&mut ours, def, Format::OpenMetrics);
            samples(&mut ours, "t\"1\\\n", def, s);
        }
        assert_eq!(ours, expected);

        let mut classic = String::new();
        for (def, s) in &families {
            header(&mut classic, def, Format::Classic);
            samples(&mut classic, "t\"1\\\n", def, s);
        }
        assert_eq!(
            classic,
            crate::exposition::openmetrics_to_classic(&expected)
        );
    }

    #[test]
    fn histograms_match_prometheus_client_byte_for_byte() {
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::histogram::Histogram;

        use crate::metrics::{HistogramLines, POLL_DURATION, Snapshot};

        const BOUNDS: [f64; 5] = [0.001, 0.25, 1.0, 2.5, 10.0];
        let observed = [0.0005, 0.001, 0.2, 0.7, 3.0, 11.0, 0.3];
        for (target, collector) in [("main", "statements"), ("t\"1\\\n", "a\"b")] {
            let family: Family<Vec<(String, String)>, Histogram, _> =
                Family::new_with_constructor(|| Histogram::new(BOUNDS));
            let key = vec![
                ("target".to_owned(), target.to_owned()),
                ("collector".to_owned(), collector.to_owned()),
            ];
            let mut buckets = [0u64; BOUNDS.len() + 1];
            for v in observed {
                family.get_or_create(&key).observe(v);
                buckets[BOUNDS.iter().position(|b| v <= *b).unwrap_or(BOUNDS.len())] += 1;
            }
            let mut registry = Registry::default();
            registry.register(
                POLL_DURATION.name,
                POLL_DURATION.help.trim_end_matches('.'),
                family,
            );
            let mut expected = String::new();
            prometheus_client::encoding::text::encode_registry(&mut expected, &registry).unwrap();

            let lines = HistogramLines::new(&[collector], &BOUNDS);
            let mut snap = Snapshot::default();
            snap.push_histogram(&POLL_DURATION, &lines, observed.iter().sum(), &buckets);
            let mut ours = String::new();
            header(&mut ours, &POLL_DURATION, Format::OpenMetrics);
            samples(&mut ours, target, &POLL_DURATION, snap.get(&POLL_DURATION));
            assert_eq!(ours, expected);

            // Any run of the lines is written the same (the gzip pieces cut where they like).
            let series = snap.get(&POLL_DURATION);
            let mut split = String::new();
            header(&mut split, &POLL_DURATION, Format::Classic);
            samples(&mut split, target, &POLL_DURATION, &series[..3]);
            samples(&mut split, target, &POLL_DURATION, &series[3..]);
            assert_eq!(split, crate::exposition::openmetrics_to_classic(&expected));
        }
    }

    #[test]
    fn non_finite_values_are_spelled_as_the_formats_spell_them() {
        let mut out = String::new();
        let s = [
            series(&["a"], f64::INFINITY),
            series(&["b"], f64::NEG_INFINITY),
            series(&["c"], f64::NAN),
        ];
        samples(&mut out, "m", &WRITING_XACTS, &s);
        assert_eq!(
            out,
            "pgvigil_transactions_with_writes{target=\"m\",datname=\"a\"} +Inf\n\
             pgvigil_transactions_with_writes{target=\"m\",datname=\"b\"} -Inf\n\
             pgvigil_transactions_with_writes{target=\"m\",datname=\"c\"} NaN\n"
        );
    }
}
