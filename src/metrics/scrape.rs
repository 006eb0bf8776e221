//! `/metrics` bodies: the plain text streamed from the published snapshots, the compressed
//! bodies assembled once per change and kept until the next.
//!
//! # What a scrape costs
//!
//! * Every scrape encodes the process metrics (a few lines per target and collector) with
//!   `prometheus-client` in OpenMetrics and, for the classic format, rewrites them with
//!   [`crate::exposition::openmetrics_to_classic`]; the snapshot families, nearly all of a
//!   large scrape, are written directly in the format asked for (module `text`).
//! * Plain text ([`Encoding::Identity`]) is never held whole, nor cached: a scrape takes the
//!   `Arc`s of the published snapshots and the body is written from them chunk by chunk as
//!   the client reads it (module `stream`, [`Scraped::Streamed`]). One such scrape holds one
//!   chunk (~256 KiB) and the list of `Arc`s, whatever the number of series (at full fidelity
//!   the plain body is ~19 MB); a client that stalls mid-body keeps the snapshots of the
//!   generation it started from (one generation per open scrape). Each plain scrape writes
//!   its text again: curl and promtool are not scraped every 15 s by two replicas.
//! * Compressed bodies ([`Scraped::Whole`]) are made whole, once per format and coding for a
//!   [generation](super::SnapshotStore::generation) of the store, and handed out as they are
//!   (a reference-count increment) until something changes: two Prometheus replicas scraping
//!   the same daemon between two polls pay for one body. Compression is at a fast level
//!   (gzip 1, zstd 1): it divides the bytes on the wire by about ten and, for a large body,
//!   costs more CPU than encoding it.
//! * gzip, what Prometheus asks for, is not compressed whole: each published snapshot keeps
//!   its series as pieces compressed apart (module `parts`), reused, block by block, from the
//!   snapshot before it where its series did not change. Once gzip has been scraped they are
//!   built as each snapshot is published, off the scrape path (module `prebuild`); a scrape
//!   builds only what is not ready yet, compresses the process metrics, the families' headers
//!   and the short families, and splices the pieces into one gzip member (module `gzip`). The
//!   classic and OpenMetrics bodies of one generation share the pieces.
//! * zstd is compressed whole from the streamed text, chunk by chunk, so its plain text is
//!   never held whole either; the compressed body (a tenth of the plain one) is cached like
//!   gzip's. Streaming it per client instead would cost a compressor (~1 MB of state at level
//!   1) and the whole compression per open scrape, to save one cached body of that size.
//!
//! The cache holds, per format, the compressed bodies of the last generation in the codings
//! that were asked for, until the next scrape of that format after a change. Sample text is
//! not kept between generations: a poll replaces a target's snapshots at every interval, so
//! text kept per snapshot would be encoded as often as the body is, for as much memory again.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::gzip::{Deflater, GzipWriter};
use super::parts::Parts;
use super::store::Published;
use super::stream::Streamed;
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

/// A `/metrics` body, as [`Metrics::scrape`] hands it out.
#[derive(Debug)]
pub enum Scraped {
    /// A compressed body, made whole and shared by the scrapes of its generation.
    Whole(Bytes),
    /// The plain text, written chunk by chunk as it is read (module `stream`).
    Streamed(Streamed),
}

impl Scraped {
    /// The whole body (for tests and in-process readers: `/metrics` never collects it).
    pub fn into_bytes(self) -> Bytes {
        match self {
            Scraped::Whole(body) => body,
            Scraped::Streamed(body) => Bytes::from(body.into_text()),
        }
    }
}

/// The compressed bodies of one format made for one generation of the store, in the codings
/// asked for.
#[derive(Debug, Default)]
struct Cached {
    generation: u64,
    bodies: Vec<(Encoding, Bytes)>,
}

/// The last compressed bodies of each format.
#[derive(Debug, Default)]
pub(super) struct BodyCache {
    openmetrics: Mutex<Option<Cached>>,
    classic: Mutex<Option<Cached>>,
}

impl Metrics {
    /// The `/metrics` body in `format` and `encoding`: the plain text streamed from the
    /// published snapshots; a compressed body from the cache when nothing changed since it was
    /// made. What comes back is encoded as `encoding` says.
    pub fn scrape(&self, format: Format, encoding: Encoding) -> Scraped {
        match encoding {
            Encoding::Identity => Scraped::Streamed(self.stream(format)),
            Encoding::Gzip | Encoding::Zstd => Scraped::Whole(self.cached(format, encoding)),
        }
    }

    /// The plain body in `format`, to be written as it is read: the process metrics encoded
    /// now, the snapshots published now.
    pub(super) fn stream(&self, format: Format) -> Streamed {
        let process = self.process_text(format);
        let snapshots = self
            .store
            .all()
            .into_iter()
            .map(|(target, p)| (target, p.snapshot.clone()))
            .collect();
        Streamed::new(format, process, snapshots)
    }

    /// The compressed body in `format` and `encoding`, from the cache or made now.
    fn cached(&self, format: Format, encoding: Encoding) -> Bytes {
        if encoding == Encoding::Gzip {
            self.store.gzip_scraped();
        }
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
        if let Some((_, body)) = cached.bodies.iter().find(|(e, _)| *e == encoding) {
            return body.clone();
        }
        // Only what was asked for is made and kept: Prometheus only ever asks for gzip.
        let body = match encoding {
            Encoding::Gzip => assemble_gzip(format, &self.process_text(format), &self.store.all()),
            _ => compress_zstd(self.stream(format)),
        };
        cached.bodies.push((encoding, body.clone()));
        body
    }

    /// The process metrics in `format`.
    fn process_text(&self, format: Format) -> String {
        let mut process = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode_registry(&mut process, &self.registry)
            .expect("writing to a String cannot fail");
        if format == Format::Classic {
            process = crate::exposition::openmetrics_to_classic(&process);
        }
        process
    }
}

/// The zstd body of a streamed one: each chunk goes into the compressor as it is written.
fn compress_zstd(body: Streamed) -> Bytes {
    // About a tenth of the plain text, which is ~110 bytes a series.
    let mut zstd = zstd::stream::Encoder::new(Vec::with_capacity(body.series() * 11), 1)
        .expect("level 1 is a valid zstd level");
    for chunk in body {
        zstd.write_all(&chunk)
            .expect("compressing into memory cannot fail");
    }
    Bytes::from(zstd.finish().expect("compressing into memory cannot fail"))
}

/// The gzip body: the process metrics and the families' headers compressed at every scrape,
/// the snapshots' series spliced in from their pieces (module `parts`), built here for a
/// snapshot whose pieces the builder (module `prebuild`) has not made yet, and reused for
/// every later scrape.
fn assemble_gzip(format: Format, process: &str, published: &[(String, Arc<Published>)]) -> Bytes {
    let mut deflater = Deflater::default();
    let parts: Vec<(&str, &Parts)> = published
        .iter()
        .map(|(target, p)| {
            p.served();
            (target.as_str(), p.parts(target, &mut deflater))
        })
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
            part.write_to(&mut w);
        }
    }
    if format == Format::OpenMetrics {
        w.text("# EOF\n");
    }
    Bytes::from(w.finish())
}

/// Group every target's share of every metric by metric: families in catalogue order
/// ([`super::ALL`]), within a family the targets in the order given (by name).
///
/// Every target's snapshots list their families in the same order, so each item is first
/// tried against the family after the one the item before it went to (one comparison of
/// names); only a miss looks the name up. At 500 targets a gzip body groups ~30,000 shares,
/// and hashing each one's name into ordered maps was a tenth of the scrape.
pub(super) fn group<'a, T>(
    items: impl Iterator<Item = (&'a str, &'static MetricDef, T)>,
) -> Vec<(&'static MetricDef, Vec<(&'a str, T)>)> {
    let mut families: Vec<Family<'a, T>> = Vec::new();
    let mut by_name: HashMap<&'static str, usize> = HashMap::new();
    let mut next = 0;
    for (target, def, item) in items {
        let at = match families.get(next) {
            Some((d, _)) if d.name == def.name => next,
            _ => *by_name.entry(def.name).or_insert_with(|| {
                families.push((def, Vec::new()));
                families.len() - 1
            }),
        };
        families[at].1.push((target, item));
        next = at + 1;
    }
    // By position, then name: metrics not in the catalogue all share the last position.
    families.sort_by_cached_key(|(def, _)| (super::position(def), def.name));
    families
}

/// One family's share of the body, by target.
type Family<'a, T> = (&'static MetricDef, Vec<(&'a str, T)>);

#[cfg(test)]
pub(super) mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::metrics::{Labels, MAX_CONNECTIONS, STATEMENT_CALLS, STATEMENT_ROWS, Snapshot};

    #[test]
    fn shares_are_grouped_by_family_in_catalogue_order_whatever_order_targets_list_them() {
        use crate::metrics::{MAX_CONNECTIONS as M, MetricDef, STATEMENT_CALLS as C};
        use crate::metrics::{STATEMENT_ROWS as R, UP};
        const UNKNOWN_B: MetricDef = MetricDef { name: "zz_b", ..UP };
        const UNKNOWN_A: MetricDef = MetricDef { name: "zz_a", ..UP };
        // Targets that agree on the order (the common case), one that lists families in
        // another order, one missing some, unknown metrics, and a def copied (another address).
        let copy = C;
        let items: Vec<(&str, &'static MetricDef, usize)> = vec![
            ("a", &C, 0),
            ("a", &R, 1),
            ("a", &M, 2),
            ("b", &C, 3),
            ("b", &R, 4),
            ("b", &M, 5),
            ("c", &M, 6),
            ("c", &UNKNOWN_B, 7),
            ("c", &C, 8),
            ("d", &R, 9),
            ("d", &UNKNOWN_A, 10),
            ("e", Box::leak(Box::new(copy)), 11),
            ("e", &UP, 12),
        ];
        let grouped = group(items.iter().copied());
        // What a reference grouping gives: ordered by (position, name), shares in input order.
        let mut expected: Vec<(&str, Vec<(&str, usize)>)> = Vec::new();
        let mut names: Vec<&MetricDef> = items.iter().map(|(_, d, _)| *d).collect();
        names.sort_by_key(|d| (crate::metrics::position(d), d.name));
        names.dedup_by_key(|d| d.name);
        for def in names {
            let shares = items
                .iter()
                .filter(|(_, d, _)| d.name == def.name)
                .map(|(t, _, i)| (*t, *i))
                .collect();
            expected.push((def.name, shares));
        }
        let got: Vec<(&str, Vec<(&str, usize)>)> =
            grouped.into_iter().map(|(d, v)| (d.name, v)).collect();
        assert_eq!(got, expected);
        assert_eq!(got.iter().filter(|(n, _)| n.starts_with("zz_")).count(), 2);
        assert_eq!(
            got.last().unwrap().0,
            "zz_b",
            "unknown metrics last, by name"
        );
    }

    pub(crate) fn gunzip(body: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn compressed_bodies_are_reused_until_something_changes_and_the_plain_one_is_streamed() {
        let metrics = Metrics::new();
        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 100.0);
        metrics.store().publish("main", "activity", snap);

        // Plain text is written for each scrape, never cached.
        let Scraped::Streamed(first) = metrics.scrape(Format::OpenMetrics, Encoding::Identity)
        else {
            panic!("a plain body is streamed");
        };
        let first = first.into_text();
        let gz = metrics.scrape(Format::OpenMetrics, Encoding::Gzip);
        let gz_again = metrics.scrape(Format::OpenMetrics, Encoding::Gzip);
        let (Scraped::Whole(gz), Scraped::Whole(gz_again)) = (gz, gz_again) else {
            panic!("a gzip body is whole");
        };
        assert_eq!(
            gz.as_ptr(),
            gz_again.as_ptr(),
            "nothing changed: same gzip body"
        );
        assert!(first.ends_with("# EOF\n"), "{first}");
        assert!(first.contains("pgvigil_connections_max{target=\"main\"} 100.0\n"));
        assert_eq!(gunzip(&gz), first);

        let zst = metrics
            .scrape(Format::OpenMetrics, Encoding::Zstd)
            .into_bytes();
        let zst_again = metrics
            .scrape(Format::OpenMetrics, Encoding::Zstd)
            .into_bytes();
        assert_eq!(
            zst.as_ptr(),
            zst_again.as_ptr(),
            "nothing changed: same zstd body"
        );
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), first.as_bytes());

        // A poll publishes: the next scrape shows it.
        let mut snap = Snapshot::default();
        snap.set(&MAX_CONNECTIONS, 50.0);
        metrics.store().publish("main", "activity", snap);
        let after = metrics
            .scrape(Format::OpenMetrics, Encoding::Gzip)
            .into_bytes();
        assert_ne!(after.as_ptr(), gz.as_ptr(), "a change makes a new body");
        assert!(gunzip(&after).contains("pgvigil_connections_max{target=\"main\"} 50.0\n"));
        let zst = metrics
            .scrape(Format::OpenMetrics, Encoding::Zstd)
            .into_bytes();
        let text = String::from_utf8(zstd::decode_all(&zst[..]).unwrap()).unwrap();
        assert!(text.contains("pgvigil_connections_max{target=\"main\"} 50.0\n"));

        // A process metric changes: the next scrape shows it too.
        metrics.set_up("main", true);
        let up = metrics
            .scrape(Format::Classic, Encoding::Identity)
            .into_bytes();
        let up = std::str::from_utf8(&up).unwrap();
        assert!(up.contains("pgvigil_up{target=\"main\"} 1\n"), "{up}");
        assert!(!up.contains("# EOF"), "{up}");
    }

    /// A statements-like snapshot: `n` label sets, kept across polls, 2 counters each.
    pub(crate) fn statements(n: usize, bump: usize) -> Snapshot {
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
                let plain = metrics.scrape(format, Encoding::Identity).into_bytes();
                let gz = metrics.scrape(format, Encoding::Gzip).into_bytes();
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
        let last = gunzip(&metrics.scrape(Format::Classic, Encoding::Gzip).into_bytes());
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
