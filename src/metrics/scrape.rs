//! `/metrics` bodies: assembled from the process metrics and the published snapshots' cached
//! sample lines, kept per format until something changes, and compressed once per body.
//!
//! # What a scrape costs
//!
//! * Nothing changed since the last scrape of the same format and coding (the store's
//!   [generation](super::SnapshotStore::generation) is the same): the cached body is handed
//!   out as it is (a reference-count increment). Two Prometheus replicas scraping the same
//!   daemon between two polls pay for one body.
//! * Otherwise: the process metrics (a few lines per target and collector) are encoded by
//!   `prometheus-client` in OpenMetrics and, for the classic format, rewritten by
//!   [`crate::exposition::openmetrics_to_classic`]; the snapshot families, nearly all of a
//!   large scrape, are written directly in the format asked for (module `text`), in chunks
//!   that go straight into the compressor when one was asked for, so the plain text of a
//!   compressed body is never held whole.
//! * Compression ([`Encoding`]) is at a fast level (gzip 1, zstd 1): it divides the bytes on
//!   the wire by about ten and, for a large body, costs more CPU than encoding it.
//! * gzip, what Prometheus asks for, is not compressed whole: each published snapshot keeps
//!   its series as pieces compressed apart (module `parts`), built at the first gzip scrape
//!   that sees the snapshot and reused, block by block, from the snapshot before it where its
//!   series did not change; a scrape compresses only the process metrics and the families'
//!   headers and splices the pieces into one gzip member (module `gzip`). The classic and
//!   OpenMetrics bodies of one generation share the pieces; zstd and identity bodies are
//!   written whole as above.
//!
//! The cache holds, per format, the bodies of the last generation in the codings that were
//! asked for, until the next scrape of that format after a change. Sample text is not kept
//! between generations: a poll replaces a target's snapshots at every interval, so text kept
//! per snapshot would be encoded as often as the body is, for as much memory again.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::gzip::{Deflater, GzipWriter};
use super::parts::{Part, Parts};
use super::store::Published;
use super::text::{self, Format};
use super::{MetricDef, Metrics};

/// A content coding of the `/metrics` body, chosen from `Accept-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The body as it is.
    Identity,
    /// gzip (what Prometheus asks for by default).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Encoding {
    /// The `Content-Encoding` header value, if any.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Zstd => Some("zstd"),
        }
    }
}

/// The bodies of one format made for one generation of the store, in the codings asked for.
#[derive(Debug, Default)]
struct Cached {
    generation: u64,
    bodies: Vec<(Encoding, Bytes)>,
}

/// The last bodies of each format.
#[derive(Debug, Default)]
pub(super) struct BodyCache {
    openmetrics: Mutex<Option<Cached>>,
    classic: Mutex<Option<Cached>>,
}

impl Metrics {
    /// The `/metrics` body in `format` and `encoding`: served from the cache when nothing
    /// changed since it was made. What comes back is encoded as `encoding` says.
    pub fn scrape(&self, format: Format, encoding: Encoding) -> Bytes {
        let slot = match format {
            Format::OpenMetrics => &self.cache.openmetrics,
            Format::Classic => &self.cache.classic,
        };
        // Held while encoding: a second scraper waits for this body instead of making its own.
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        // Read before encoding: a change made while encoding moves the generation past this
        // one, so the next scrape encodes again.
        let generation = self.store.generation();
        let cached = match slot.take() {
            Some(cached) if cached.generation == generation => cached,
            // The previous bodies are freed before the new ones are made, not after.
            _ => Cached {
                generation,
                bodies: Vec::new(),
            },
        };
        let cached = slot.insert(cached);
        let find = |c: &Cached, e| {
            c.bodies
                .iter()
                .find(|(x, _)| *x == e)
                .map(|(_, b)| b.clone())
        };
        if let Some(body) = find(cached, encoding) {
            return body;
        }
        // Only what was asked for is made and kept: a compressed body is a tenth of the plain
        // one, and Prometheus only ever asks for that.
        let body = self.assemble(format, encoding);
        cached.bodies.push((encoding, body.clone()));
        body
    }

    /// Encode everything in `format`, in `encoding`.
    fn assemble(&self, format: Format, encoding: Encoding) -> Bytes {
        let mut process = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode_registry(&mut process, &self.registry)
            .expect("writing to a String cannot fail");
        if format == Format::Classic {
            process = crate::exposition::openmetrics_to_classic(&process);
        }
        let published = self.store.all();
        if encoding == Encoding::Gzip {
            return assemble_gzip(format, &process, &published);
        }

        let families = group(published.iter().flat_map(|(target, p)| {
            p.snapshot
                .families()
                .filter(|(_, s)| !s.is_empty())
                .map(move |(def, s)| (target.as_str(), def, s))
        }));
        let series: usize = families
            .iter()
            .flat_map(|(_, by_target)| by_target.iter().map(|(_, s)| s.len()))
            .sum();

        let mut sink = Sink::new(encoding, process.len() + series * 110);
        let mut chunk = process;
        for (def, by_target) in &families {
            text::header(&mut chunk, def, format);
            for (target, s) in by_target {
                text::samples(&mut chunk, target, def, s);
                if chunk.len() >= CHUNK {
                    sink.push(&chunk);
                    chunk.clear();
                }
            }
        }
        if format == Format::OpenMetrics {
            chunk.push_str("# EOF\n");
        }
        sink.push(&chunk);
        sink.finish()
    }
}

/// The gzip body: the process metrics and the families' headers compressed at every scrape,
/// the snapshots' series spliced in from their pieces (module `parts`), which are built for a
/// snapshot at the first gzip scrape that sees it and reused for every later one.
fn assemble_gzip(format: Format, process: &str, published: &[(String, Arc<Published>)]) -> Bytes {
    let mut deflater = Deflater::default();
    let parts: Vec<(&str, &Parts)> = published
        .iter()
        .map(|(target, p)| (target.as_str(), p.parts(target, &mut deflater)))
        .collect();
    let families = group(parts.iter().flat_map(|(target, parts)| {
        parts
            .families()
            .filter(|(_, part)| !part.is_empty())
            .map(move |(def, part)| (*target, def, part))
    }));
    let compressed: usize = families
        .iter()
        .flat_map(|(_, by_target)| by_target.iter().map(|(_, p)| p.compressed_len()))
        .sum();
    let mut w = GzipWriter::new(compressed + process.len() / 4 + 4096);
    w.text(process);
    let mut header = String::new();
    for (def, by_target) in &families {
        header.clear();
        text::header(&mut header, def, format);
        w.text(&header);
        for (_, part) in by_target {
            match part {
                Part::Text(t) => w.text(t),
                Part::Blocks(blocks) => blocks.iter().for_each(|b| w.piece(&b.deflated)),
            }
        }
    }
    if format == Format::OpenMetrics {
        w.text("# EOF\n");
    }
    Bytes::from(w.finish())
}

/// Group every target's share of every metric by metric: families in catalogue order
/// ([`super::ALL`]), within a family the targets in the order given (by name).
fn group<'a, T>(
    items: impl Iterator<Item = (&'a str, &'static MetricDef, T)>,
) -> Vec<(&'static MetricDef, Vec<(&'a str, T)>)> {
    let mut positions: HashMap<&'static str, usize> = HashMap::new();
    let mut families: BTreeMap<(usize, &'static str), Family<'a, T>> = BTreeMap::new();
    for (target, def, item) in items {
        let position = *positions
            .entry(def.name)
            .or_insert_with(|| super::position(def));
        families
            .entry((position, def.name))
            .or_insert_with(|| (def, Vec::new()))
            .1
            .push((target, item));
    }
    families.into_values().collect()
}

/// One family's share of the body, by target.
type Family<'a, T> = (&'static MetricDef, Vec<(&'a str, T)>);

/// Text is handed to the sink in chunks of about this size.
const CHUNK: usize = 256 * 1024;

/// Where the body goes as it is written: a string, or a compressor.
enum Sink {
    Plain(Vec<u8>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::Encoder<'static, Vec<u8>>),
}

impl Sink {
    fn new(encoding: Encoding, plain_size: usize) -> Self {
        match encoding {
            Encoding::Identity => Sink::Plain(Vec::with_capacity(plain_size)),
            Encoding::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(
                Vec::with_capacity(plain_size / 10),
                flate2::Compression::fast(),
            )),
            Encoding::Zstd => Sink::Zstd(
                zstd::stream::Encoder::new(Vec::with_capacity(plain_size / 10), 1)
                    .expect("level 1 is a valid zstd level"),
            ),
        }
    }

    fn push(&mut self, text: &str) {
        let written = match self {
            Sink::Plain(out) => {
                out.extend_from_slice(text.as_bytes());
                Ok(())
            }
            Sink::Gzip(e) => e.write_all(text.as_bytes()),
            Sink::Zstd(e) => e.write_all(text.as_bytes()),
        };
        written.expect("compressing into memory cannot fail");
    }

    fn finish(self) -> Bytes {
        let out = match self {
            Sink::Plain(out) => Ok(out),
            Sink::Gzip(e) => e.finish(),
            Sink::Zstd(e) => e.finish(),
        };
        Bytes::from(out.expect("compressing into memory cannot fail"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::metrics::{Labels, MAX_CONNECTIONS, STATEMENT_CALLS, STATEMENT_ROWS, Snapshot};

    fn gunzip(body: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_body_is_reused_until_something_changes_and_compresses_to_the_same_text() {
        let metrics = Metrics::new();
        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 100.0);
        metrics.store().publish("main", "activity", snap);

        let first = metrics.scrape(Format::OpenMetrics, Encoding::Identity);
        let again = metrics.scrape(Format::OpenMetrics, Encoding::Identity);
        assert_eq!(first.as_ptr(), again.as_ptr(), "nothing changed: same body");
        let gz = metrics.scrape(Format::OpenMetrics, Encoding::Gzip);
        let gz_again = metrics.scrape(Format::OpenMetrics, Encoding::Gzip);
        assert_eq!(
            gz.as_ptr(),
            gz_again.as_ptr(),
            "nothing changed: same gzip body"
        );
        let text = std::str::from_utf8(&first).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("pgvigil_connections_max{target=\"main\"} 100.0\n"));

        assert_eq!(gunzip(&gz), text);
        let zst = metrics.scrape(Format::OpenMetrics, Encoding::Zstd);
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), first);

        // A poll publishes: the next scrape shows it.
        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 50.0);
        metrics.store().publish("main", "activity", snap);
        let after = metrics.scrape(Format::OpenMetrics, Encoding::Gzip);
        assert!(gunzip(&after).contains("pgvigil_connections_max{target=\"main\"} 50.0\n"));

        // A process metric changes: the next scrape shows it too.
        metrics.set_up("main", true);
        let up = metrics.scrape(Format::Classic, Encoding::Identity);
        let up = std::str::from_utf8(&up).unwrap();
        assert!(up.contains("pgvigil_up{target=\"main\"} 1\n"), "{up}");
        assert!(!up.contains("# EOF"), "{up}");
    }

    /// A statements-like snapshot: `n` label sets, kept across polls, 2 counters each.
    fn statements(n: usize, bump: usize) -> Snapshot {
        let mut snap = Snapshot::default();
        for i in 0..n {
            let labels = Labels::new(vec!["app".into(), "u".into(), i.to_string(), "true".into()]);
            snap.push_labels(
                &STATEMENT_CALLS,
                &labels,
                (i + usize::from(i == bump)) as f64,
            );
            snap.push_labels(&STATEMENT_ROWS, &labels, 1.0);
        }
        snap.set(&MAX_CONNECTIONS, n as f64);
        snap
    }

    #[test]
    fn gzip_bodies_spliced_from_pieces_decode_to_exactly_the_plain_body_across_polls() {
        let metrics = Metrics::new();
        metrics.set_up("b", true);
        for poll in 0..4 {
            // Target b's statements change one counter a poll; a's database parts come and go.
            metrics
                .store()
                .publish("b", "statements", statements(3000, poll * 100));
            metrics
                .store()
                .publish_part("a", "tables", "db1", statements(40 + poll, 0));
            if poll % 2 == 0 {
                metrics
                    .store()
                    .publish_part("a", "tables", "db2", statements(500, poll));
            } else {
                metrics.store().retract_part("a", "tables", "db2");
            }
            for format in [Format::OpenMetrics, Format::Classic] {
                let plain = metrics.scrape(format, Encoding::Identity);
                let gz = metrics.scrape(format, Encoding::Gzip);
                assert_eq!(
                    gunzip(&gz).as_bytes(),
                    &plain[..],
                    "poll {poll}, {format:?}"
                );
                assert!(
                    gz.len() * 5 < plain.len(),
                    "{} of {}",
                    gz.len(),
                    plain.len()
                );
            }
        }
        let last = gunzip(&metrics.scrape(Format::Classic, Encoding::Gzip));
        assert!(
            last.contains(
                "{target=\"b\",datname=\"app\",usename=\"u\",queryid=\"300\",toplevel=\"true\"} 301.0\n"
            ),
            "{last}"
        );
        assert_eq!(
            last.matches("# TYPE pgvigil_statement_calls_total counter\n")
                .count(),
            1
        );
    }

    #[test]
    fn counters_are_headed_by_format_and_targets_come_in_name_order() {
        let metrics = Metrics::new();
        for target in ["b", "a"] {
            let mut snap = Snapshot::default();
            snap.push(
                &STATEMENT_CALLS,
                vec!["app".into(), "u".into(), "1".into(), "true".into()],
                3.0,
            );
            metrics.store().publish(target, "statements", snap);
        }
        let om = metrics.encode_openmetrics();
        let family = STATEMENT_CALLS.family_name();
        let a = om.find("{target=\"a\"").unwrap();
        let b = om.find("{target=\"b\"").unwrap();
        assert!(a < b, "{om}");
        assert!(om.contains(&format!("# TYPE {family} counter\n")), "{om}");
        let classic = metrics.encode_classic();
        assert!(
            classic.contains("# TYPE pgvigil_statement_calls_total counter\n"),
            "{classic}"
        );
        assert_eq!(
            classic.matches("pgvigil_statement_calls_total{").count(),
            2,
            "{classic}"
        );
    }
}
