//! The plain `/metrics` body, written as it is read.
//!
//! A [`Streamed`] body owns what it is written from: the process metrics' text (encoded when
//! the scrape starts, a few kilobytes) and the `Arc`s of every snapshot published then. Each
//! [`Iterator::next`] writes the next ~[`CHUNK`] bytes of sample lines from those snapshots
//! and hands them out, so the plain body is never held whole: a scrape costs one chunk (plus
//! what the HTTP connection buffers of the one before) and the list of `Arc`s, whatever the
//! number of series. The text is the same bytes the whole body was; a family's series for one
//! target may be split between chunks at a line boundary.
//!
//! The snapshots are those of one instant: a poll that publishes while a body is read
//! replaces the store's `Arc`s, not this body's, so the body stays the exposition of the
//! generation it started from. The price is that a reader who stalls keeps that generation's
//! snapshots alive (one generation per open scrape, at most; scrapes of the same generation
//! share them) until it reads on or hangs up.

use std::sync::Arc;

use bytes::Bytes;

use super::MetricDef;
use super::scrape::group;
use super::snapshot::Snapshot;
use super::text::{self, Format};

/// Text is handed out in chunks of about this size (a chunk may overrun it by one batch of
/// [`BATCH`] lines).
pub(super) const CHUNK: usize = 256 * 1024;

/// Sample lines are written this many series at a time between size checks.
const BATCH: usize = 256;

/// A plain body in `format`, written chunk by chunk from the snapshots it owns.
#[derive(Debug)]
pub struct Streamed {
    format: Format,
    /// The process metrics, the start of the first chunk until it is taken.
    process: String,
    /// Every published snapshot, by target name.
    snapshots: Vec<(String, Arc<Snapshot>)>,
    /// Per family (catalogue order), the snapshots that hold its series, in target order.
    families: Vec<(&'static MetricDef, Vec<usize>)>,
    /// Where the next chunk starts.
    at: Cursor,
    /// Whether the last chunk (with `# EOF` in OpenMetrics) has been handed out.
    done: bool,
}

/// A position in [`Streamed::families`]: family, entry of the family, series of the entry.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    family: usize,
    entry: usize,
    series: usize,
}

impl Streamed {
    /// The body of `snapshots` after the process metrics' text `process`, both in `format`.
    pub(super) fn new(
        format: Format,
        process: String,
        snapshots: Vec<(String, Arc<Snapshot>)>,
    ) -> Self {
        let families = group(snapshots.iter().enumerate().flat_map(|(i, (target, s))| {
            s.families()
                .filter(|(_, series)| !series.is_empty())
                .map(move |(def, _)| (target.as_str(), def, i))
        }))
        .into_iter()
        .map(|(def, by_target)| (def, by_target.into_iter().map(|(_, i)| i).collect()))
        .collect();
        Streamed {
            format,
            process,
            snapshots,
            families,
            at: Cursor::default(),
            done: false,
        }
    }

    /// How many series the body holds.
    pub(super) fn series(&self) -> usize {
        self.families
            .iter()
            .flat_map(|(def, entries)| entries.iter().map(|&i| self.snapshots[i].1.get(def).len()))
            .sum()
    }

    /// The whole body as one string (tests and in-process readers; `/metrics` streams it).
    pub fn into_text(self) -> String {
        let mut out = String::new();
        for chunk in self {
            out.push_str(std::str::from_utf8(&chunk).expect("the encoder writes UTF-8"));
        }
        out
    }

    /// Append sample lines to `out` from the cursor on, until `out` holds [`CHUNK`] bytes or
    /// the series run out; the cursor moves past what was written.
    fn fill(&mut self, out: &mut String) {
        while out.len() < CHUNK {
            let Some((def, entries)) = self.families.get(self.at.family) else {
                return;
            };
            if self.at.entry == 0 && self.at.series == 0 {
                text::header(out, def, self.format);
            }
            let (target, snapshot) = &self.snapshots[entries[self.at.entry]];
            let series = snapshot.get(def);
            let end = series.len().min(self.at.series + BATCH);
            text::samples(out, target, def, &series[self.at.series..end]);
            self.at.series = end;
            if end == series.len() {
                self.at.series = 0;
                self.at.entry += 1;
                if self.at.entry == entries.len() {
                    self.at.entry = 0;
                    self.at.family += 1;
                }
            }
        }
    }
}

impl Iterator for Streamed {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = std::mem::take(&mut self.process);
        out.reserve((CHUNK + CHUNK / 4).saturating_sub(out.len()));
        self.fill(&mut out);
        if self.at.family == self.families.len() {
            self.done = true;
            // The snapshots are not needed any more: free them before the last chunk is sent.
            self.snapshots = Vec::new();
            if self.format == Format::OpenMetrics {
                out.push_str("# EOF\n");
            }
        }
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::scrape::tests::{gunzip, statements};
    use crate::metrics::{Encoding, Metrics, Scraped};

    /// Two targets, thousands of series each, one of them in two database parts: a body of
    /// several chunks.
    fn metrics() -> Metrics {
        let metrics = Metrics::new();
        metrics.set_up("b", true);
        let store = metrics.store();
        store.publish("b", "statements", statements(3000, 1));
        store.publish_part("a", "tables", "db1", statements(1500, 2));
        store.publish_part("a", "tables", "db2", statements(800, 3));
        metrics
    }

    fn stream(metrics: &Metrics, format: Format) -> Streamed {
        match metrics.scrape(format, Encoding::Identity) {
            Scraped::Streamed(body) => body,
            Scraped::Whole(_) => panic!("a plain body is streamed"),
        }
    }

    #[test]
    fn a_streamed_body_comes_in_chunks_of_whole_lines_and_is_the_gzip_bodys_text() {
        for format in [Format::OpenMetrics, Format::Classic] {
            let metrics = metrics();
            let chunks: Vec<Bytes> = stream(&metrics, format).collect();
            assert!(chunks.len() >= 3, "{format:?}: {} chunks", chunks.len());
            for chunk in &chunks {
                assert!(chunk.len() <= CHUNK + CHUNK / 4, "{}", chunk.len());
                assert!(chunk.ends_with(b"\n"), "{format:?}: a chunk ends a line");
            }
            let streamed = chunks.concat();
            // The gzip body is spliced from pieces encoded apart (module `parts`): the same
            // text from another writer, byte for byte.
            let gz = metrics.scrape(format, Encoding::Gzip).into_bytes();
            assert_eq!(gunzip(&gz).as_bytes(), &streamed[..], "{format:?}");
            let text = std::str::from_utf8(&streamed).unwrap();
            assert_eq!(text.matches("# TYPE pgvigil_connections_max ").count(), 1);
            assert_eq!(
                text.ends_with("# EOF\n"),
                format == Format::OpenMetrics,
                "{format:?}"
            );
            assert!(text.contains("pgvigil_up{target=\"b\"} 1\n"), "{format:?}");
        }
    }

    #[test]
    fn a_body_streamed_while_a_poll_publishes_is_the_generation_it_started_from() {
        for format in [Format::OpenMetrics, Format::Classic] {
            let metrics = metrics();
            let before = gunzip(&metrics.scrape(format, Encoding::Gzip).into_bytes());
            let mut body = stream(&metrics, format);
            let mut streamed = body.next().unwrap().to_vec();
            assert!(streamed.len() < before.len(), "more than one chunk");
            // A poll replaces b's statements and a's first database, drops the second; a
            // process metric changes.
            let store = metrics.store();
            store.publish("b", "statements", statements(3000, 5));
            store.publish_part("a", "tables", "db1", statements(10, 0));
            store.retract_part("a", "tables", "db2");
            metrics.set_up("b", false);
            streamed.extend(body.flat_map(|chunk| chunk.to_vec()));
            assert_eq!(
                std::str::from_utf8(&streamed).unwrap(),
                before,
                "{format:?}"
            );
            // The next scrape shows the new generation.
            let after = stream(&metrics, format).into_text();
            assert_ne!(after, before);
            assert!(after.contains("pgvigil_up{target=\"b\"} 0\n"), "{after}");
            let gz = metrics.scrape(format, Encoding::Gzip).into_bytes();
            assert_eq!(gunzip(&gz), after, "{format:?}");
        }
    }
}
