//! The gzip pieces of one published snapshot, reused from the snapshot before it.
//!
//! # What is built, and when
//!
//! Once gzip is scraped, a snapshot's pieces are built right after it is published (module
//! `prebuild`), or by a scrape that finds them not built yet ([`Parts::build`]); every scrape
//! of the snapshot, whatever its format, splices them (module `gzip`).
//! Per family of the snapshot:
//!
//! * fewer than [`BLOCKS_FROM`] series: its sample text, compressed with the text around it
//!   at every scrape (short, and a piece of its own would compress poorly);
//! * more: its series cut into blocks, each compressed as a piece of its own. A block whose
//!   series are all equal (label values and value bit for bit) to a block of the previous
//!   snapshot's pieces reuses that block's compressed bytes: it is neither encoded nor
//!   compressed again. Between two polls most counters of most statements and tables do not
//!   move, so a poll usually recompresses only the blocks that hold a change.
//!
//! Blocks are cut where the content says, not by position: after a series whose label hash
//! is 0 modulo [`BLOCK_AVERAGE`] (and at [`BLOCK_MAX`] series at the latest), so a statement
//! that joins or leaves the top-K shifts the cut points of its own block only, and the blocks
//! after it are found again by the label hash of their first series. The hash only finds a
//! candidate; the series are compared in full.
//!
//! # Cost
//!
//! Building compares the series of each block with its candidate (a pointer comparison when
//! the collector kept its label sets across polls, as the statements collector does), hashes
//! the label values of every series once, and encodes and compresses the blocks that changed.
//! The pieces of a full-fidelity snapshot (130,000 series) take about a tenth of its plain
//! text (~1.7 MB); the previous snapshot is kept alive until its successor's pieces are built
//! from it, then dropped.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use super::gzip::{Deflated, Deflater, GzipWriter};
use super::text;
use super::{MetricDef, Series, Snapshot};

/// Families with fewer series than this are kept as text.
pub(super) const BLOCKS_FROM: usize = 32;
/// A block ends after a series whose label hash is a multiple of this (on average).
const BLOCK_AVERAGE: u64 = 128;
/// Fewest series in a block (unless the family ends).
const BLOCK_MIN: usize = 16;
/// Most series in a block.
const BLOCK_MAX: usize = 512;

/// The pieces of one snapshot for one target.
#[derive(Debug)]
pub(super) struct Parts {
    snapshot: Arc<Snapshot>,
    /// Aligned with `snapshot.families()`.
    families: Vec<Part>,
}

/// One family's share of the body.
#[derive(Debug)]
pub(super) enum Part {
    /// Sample lines, to be compressed with the text around them.
    Text(String),
    /// Blocks of series, each compressed apart.
    Blocks(Blocks),
}

/// A family's blocks, with what splicing them needs made beforehand: the CRC-32 of their text
/// combined in order, and their compressed length. A scrape then touches each block once, to
/// copy it: at 500 targets a gzip body splices ~25,000 blocks, and combining their CRCs one
/// by one was 5% of the scrape.
#[derive(Debug)]
pub(super) struct Blocks {
    list: Vec<Block>,
    crc: crc32fast::Hasher,
    compressed: usize,
}

impl Blocks {
    fn new(list: Vec<Block>) -> Self {
        let mut crc = crc32fast::Hasher::new();
        let mut compressed = 0;
        for block in &list {
            crc.combine(block.deflated.crc());
            compressed += block.deflated.compressed_len();
        }
        Blocks {
            list,
            crc,
            compressed,
        }
    }
}

impl Part {
    /// Whether the family has no series here.
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Part::Text(t) => t.is_empty(),
            Part::Blocks(b) => b.list.is_empty(),
        }
    }

    /// The compressed bytes it holds (text counts as nothing).
    pub(super) fn compressed_len(&self) -> usize {
        match self {
            Part::Text(_) => 0,
            Part::Blocks(b) => b.compressed,
        }
    }

    /// Append the family's share to a gzip body: text to be compressed with the text around
    /// it, blocks spliced as they are.
    pub(super) fn write_to(&self, w: &mut GzipWriter) {
        match self {
            Part::Text(t) => w.text(t),
            Part::Blocks(b) => w.pieces(b.list.iter().map(|b| &*b.deflated), &b.crc),
        }
    }
}

/// Consecutive series of one family, compressed as one piece.
#[derive(Debug)]
pub(super) struct Block {
    range: Range<usize>,
    /// The hash of the first series' label values (where the next snapshot looks it up).
    first: u64,
    pub(super) deflated: Arc<Deflated>,
}

/// What a build did (for tests and the profile): blocks compressed and blocks reused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Built {
    pub(super) compressed: usize,
    pub(super) reused: usize,
}

impl Parts {
    /// Build the pieces of `snapshot` for `target`, reusing the blocks of `previous` (the same
    /// target's snapshot before) whose series did not change.
    pub(super) fn build(
        target: &str,
        snapshot: Arc<Snapshot>,
        previous: Option<&Parts>,
        deflater: &mut Deflater,
    ) -> (Parts, Built) {
        let mut built = Built::default();
        let mut families = Vec::new();
        let mut buf = String::new();
        for (def, series) in snapshot.families() {
            if series.len() < BLOCKS_FROM {
                let mut out = String::new();
                text::samples(&mut out, target, def, series);
                families.push(Part::Text(out));
                continue;
            }
            let before = previous.and_then(|p| p.blocks_of(def));
            let blocks = cut(series)
                .map(|(range, first)| {
                    let reused = before.as_ref().and_then(|(old_series, by_first)| {
                        let old = by_first.get(&first)?;
                        let same = old.range.len() == range.len()
                            && old_series[old.range.clone()]
                                .iter()
                                .zip(&series[range.clone()])
                                .all(|(a, b)| same_series(a, b));
                        same.then(|| old.deflated.clone())
                    });
                    let deflated = match reused {
                        Some(d) => {
                            built.reused += 1;
                            d
                        }
                        None => {
                            built.compressed += 1;
                            buf.clear();
                            text::samples(&mut buf, target, def, &series[range.clone()]);
                            Arc::new(deflater.deflate(buf.as_bytes()))
                        }
                    };
                    Block {
                        range,
                        first,
                        deflated,
                    }
                })
                .collect();
            families.push(Part::Blocks(Blocks::new(blocks)));
        }
        (Parts { snapshot, families }, built)
    }

    /// Every family with its part, in the snapshot's order.
    pub(super) fn families(&self) -> impl Iterator<Item = (&'static MetricDef, &Part)> + '_ {
        self.snapshot
            .families()
            .map(|(def, _)| def)
            .zip(&self.families)
    }

    /// One family's series and blocks by the hash of their first series.
    fn blocks_of(&self, def: &MetricDef) -> Option<(&[Series], HashMap<u64, &Block>)> {
        let (series, part) = self
            .snapshot
            .families()
            .zip(&self.families)
            .find(|((d, _), _)| d.name == def.name)
            .map(|((_, s), p)| (s, p))?;
        let Part::Blocks(blocks) = part else {
            return None;
        };
        Some((series, blocks.list.iter().map(|b| (b.first, b)).collect()))
    }
}

/// Whether two series encode to the same text (for one target and metric).
fn same_series(a: &Series, b: &Series) -> bool {
    a.value.to_bits() == b.value.to_bits() && a.labels == b.labels
}

/// Cut a family's series into blocks: each range with the label hash of its first series.
fn cut(series: &[Series]) -> impl Iterator<Item = (Range<usize>, u64)> + '_ {
    let mut start = 0;
    let mut first = series.first().map(label_hash).unwrap_or_default();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < series.len() {
            let h = if i == start {
                first
            } else {
                label_hash(&series[i])
            };
            i += 1;
            let len = i - start;
            let at_cut = h % BLOCK_AVERAGE == 0 && len >= BLOCK_MIN;
            if at_cut || len >= BLOCK_MAX || i == series.len() {
                let block = (start..i, first);
                start = i;
                if let Some(next) = series.get(i) {
                    first = label_hash(next);
                }
                return Some(block);
            }
        }
        None
    })
}

/// A multiply-rotate hash (FxHash's) of a series' label values.
fn label_hash(series: &Series) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0;
    let mut add = |w: u64| h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    for value in series.labels.iter() {
        let bytes = value.as_bytes();
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        add(u64::from_le_bytes(last));
        add(bytes.len() as u64);
    }
    // Mix the low bits, which the cut rule reads.
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::super::gzip::GzipWriter;
    use super::*;
    use crate::metrics::{Labels, STATEMENT_CALLS, STATEMENT_ROWS, WRITING_XACTS};

    fn labels(i: usize) -> Labels {
        Labels::new(vec![
            "app".into(),
            format!("user{}", i % 3),
            (i * 7919).to_string(),
            "true".into(),
        ])
    }

    fn snapshot(ids: &[usize], labels: &HashMap<usize, Labels>, bump: usize) -> Snapshot {
        let mut snap = Snapshot::default();
        for &i in ids {
            let l = &labels[&i];
            snap.push_labels(&STATEMENT_CALLS, l, (i + usize::from(i == bump)) as f64);
            snap.push_labels(&STATEMENT_ROWS, l, 2.0 * i as f64);
        }
        snap.push(&WRITING_XACTS, vec!["app".into()], 1.0);
        snap
    }

    /// The body as the scrape writes it, and the plain text it must decode to.
    fn bodies(target: &str, parts: &Parts) -> (String, String) {
        let mut plain = String::new();
        let mut w = GzipWriter::new(0);
        for ((def, series), (_, part)) in parts.snapshot.families().zip(parts.families()) {
            text::samples(&mut plain, target, def, series);
            part.write_to(&mut w);
        }
        let mut out = String::new();
        flate2::read::GzDecoder::new(&w.finish()[..])
            .read_to_string(&mut out)
            .unwrap();
        (out, plain)
    }

    #[test]
    fn unchanged_blocks_are_reused_and_the_body_stays_exact() {
        let all: HashMap<usize, Labels> = (0..3000).map(|i| (i, labels(i))).collect();
        let ids: Vec<usize> = (0..2000).collect();
        let mut deflater = Deflater::default();

        let (first, built) = Parts::build(
            "t",
            Arc::new(snapshot(&ids, &all, usize::MAX)),
            None,
            &mut deflater,
        );
        assert_eq!(built.reused, 0);
        assert!(built.compressed > 10, "{built:?}");
        let (got, plain) = bodies("t", &first);
        assert_eq!(got, plain);

        // Nothing changed: every block is reused.
        let (same, built_same) = Parts::build(
            "t",
            Arc::new(snapshot(&ids, &all, usize::MAX)),
            Some(&first),
            &mut deflater,
        );
        assert_eq!(built_same.compressed, 0, "{built_same:?}");
        assert_eq!(built_same.reused, built.compressed);

        // One counter moved, a statement left and another joined in the middle: a few blocks
        // are compressed again, the rest reused, and the body is still exactly the text.
        let mut changed: Vec<usize> = ids.iter().copied().filter(|&i| i != 700).collect();
        changed.insert(1200, 2500);
        let (next, built_next) = Parts::build(
            "t",
            Arc::new(snapshot(&changed, &all, 1500)),
            Some(&same),
            &mut deflater,
        );
        assert!(built_next.compressed >= 3, "{built_next:?}");
        assert!(
            built_next.compressed * 3 < built_next.reused,
            "{built_next:?}"
        );
        let (got, plain) = bodies("t", &next);
        assert_eq!(got, plain);
        assert!(
            plain.contains("queryid=\"19797500\",toplevel=\"true\"} 2500.0\n"),
            "{plain}"
        );
    }

    #[test]
    fn a_changed_value_is_never_served_from_an_old_block() {
        let all: HashMap<usize, Labels> = (0..200).map(|i| (i, labels(i))).collect();
        let ids: Vec<usize> = (0..200).collect();
        let mut deflater = Deflater::default();
        let (first, _) = Parts::build(
            "t",
            Arc::new(snapshot(&ids, &all, usize::MAX)),
            None,
            &mut deflater,
        );
        for bump in [0, 57, 199] {
            let (next, built) = Parts::build(
                "t",
                Arc::new(snapshot(&ids, &all, bump)),
                Some(&first),
                &mut deflater,
            );
            assert!(built.compressed >= 1, "{built:?}");
            let (got, plain) = bodies("t", &next);
            assert_eq!(got, plain);
            let line = format!(
                "queryid=\"{}\",toplevel=\"true\"}} {}.0\n",
                bump * 7919,
                bump + 1
            );
            assert!(got.contains(&line), "{line}");
        }
    }

    #[test]
    fn blocks_cover_the_series_in_order_within_their_bounds() {
        let series: Vec<Series> = (0..5000)
            .map(|i| Series {
                labels: labels(i),
                value: 0.0,
            })
            .collect();
        let blocks: Vec<_> = cut(&series).collect();
        let mut next = 0;
        for (range, first) in &blocks {
            assert_eq!(range.start, next);
            assert!(range.len() <= BLOCK_MAX);
            assert!(range.len() >= BLOCK_MIN || range.end == series.len());
            assert_eq!(*first, label_hash(&series[range.start]));
            next = range.end;
        }
        assert_eq!(next, series.len());
        assert!(blocks.len() > 5000 / BLOCK_MAX, "{}", blocks.len());
        assert!(cut(&[]).next().is_none());
    }
}
