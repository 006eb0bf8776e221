//! `/metrics` bodies: assembled from the process metrics and the published snapshots' cached
//! sample lines, kept per format until something changes, and compressed once per body.
//!
//! # What a scrape costs
//!
//! * Nothing changed since the last scrape of the same format (the store's
//!   [generation](super::SnapshotStore::generation) is the same): the cached body is handed
//!   out as it is (a reference-count increment), compressed or not. Two Prometheus replicas
//!   scraping the same daemon pay for one body.
//! * Otherwise: the process metrics (a few lines per target and collector) are encoded by
//!   `prometheus-client` in OpenMetrics and, for the classic format, rewritten by
//!   [`crate::exposition::openmetrics_to_classic`]; the snapshot families, nearly all of a
//!   large scrape, are written directly in the format asked for: each family's header, then
//!   the sample lines of every target, each encoded once per published snapshot (see
//!   [`super::store`]) and copied.
//! * Compression ([`Encoding`]) runs at most once per body, format and coding, at a fast
//!   level (gzip 1, zstd 1): it divides the bytes on the wire by about ten.
//!
//! The cache holds, per format, the bodies of the last generation in the codings that were
//! asked for (not the plain body when only a compressed one was), until the next scrape of
//! that format after a change.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Mutex;

use bytes::Bytes;

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
        let plain =
            find(cached, Encoding::Identity).unwrap_or_else(|| Bytes::from(self.assemble(format)));
        // Only what was asked for is kept: a compressed body is a tenth of the plain one, and
        // Prometheus only ever asks for that.
        let body = match encoding {
            Encoding::Identity => plain,
            Encoding::Gzip => gzip(&plain),
            Encoding::Zstd => zstd(&plain),
        };
        cached.bodies.push((encoding, body.clone()));
        body
    }

    /// Encode everything in `format`.
    fn assemble(&self, format: Format) -> String {
        let mut process = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode_registry(&mut process, &self.registry)
            .expect("writing to a String cannot fail");
        if format == Format::Classic {
            process = crate::exposition::openmetrics_to_classic(&process);
        }

        let snapshots = self.store.all();
        // Group the fragments by metric, families in catalogue order, targets by name.
        let mut families: BTreeMap<(usize, &'static str), (&'static MetricDef, Vec<&str>)> =
            BTreeMap::new();
        let mut size = process.len() + 8;
        for (target, published) in &snapshots {
            for fragment in published.fragments(target) {
                size += fragment.lines.len();
                families
                    .entry(fragment.order)
                    .or_insert_with(|| (fragment.def, Vec::new()))
                    .1
                    .push(&fragment.lines);
            }
        }
        size += families.len() * 256;

        let mut out = String::with_capacity(size);
        out.push_str(&process);
        for (def, parts) in families.values() {
            text::header(&mut out, def, format);
            for part in parts {
                out.push_str(part);
            }
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn gzip(plain: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 8),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(plain)
        .and_then(|()| encoder.finish())
        .map(Bytes::from)
        .expect("compressing into memory cannot fail")
}

fn zstd(plain: &[u8]) -> Bytes {
    zstd::bulk::compress(plain, 1)
        .map(Bytes::from)
        .expect("compressing into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::metrics::{MAX_CONNECTIONS, STATEMENT_CALLS, Snapshot};

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
