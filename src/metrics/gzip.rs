//! gzip bodies spliced from pieces compressed apart: one gzip member, however many pieces.
//!
//! A deflate stream may be cut wherever the compressor was told to *sync-flush*: the flush
//! ends the output on a byte boundary, and a compressor reset right after it makes sure that
//! nothing later refers back across the cut. Raw-deflate pieces made that way — in any order,
//! by different compressors, at different times — concatenate into one valid deflate stream
//! (what `pigz` does to compress on several cores). The gzip header goes in front; behind
//! the last piece come an empty final block and the trailer: the CRC-32 of the whole plain
//! text, combined from the pieces' own CRCs without reading the text again, and its length.
//!
//! The result is one ordinary gzip member, so every gzip reader takes it (Go's, which
//! Prometheus scrapes with, zlib's, Python's), where a concatenation of members needs a
//! reader that goes on after the first.
//!
//! What it costs: a cut adds the sync flush's 5-byte marker, and a piece cannot refer to text
//! before it, so pieces of a few kilobytes compress a little worse than one stream. Short
//! text between pieces (a family's HELP and TYPE lines) goes in as a stored block, which needs
//! no compressor reset; longer text is compressed in place.

use flate2::{Compress, Compression, FlushCompress};

/// Text shorter than this goes into the body as a stored block, not compressed: a compressor
/// reset costs more than the few bytes compression would save.
const STORED_BELOW: usize = 512;
/// Text between pieces is compressed once this much has gathered.
const PENDING_CHUNK: usize = 256 * 1024;

/// One piece: raw deflate ending on a byte boundary, with the CRC-32 and length of its text.
#[derive(Debug, Clone)]
pub(super) struct Deflated {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl Deflated {
    /// The number of compressed bytes.
    pub(super) fn compressed_len(&self) -> usize {
        self.bytes.len()
    }

    /// The CRC-32 and length of its text.
    pub(super) fn crc(&self) -> &crc32fast::Hasher {
        &self.crc
    }
}

/// A raw-deflate compressor at the fast level, reused from piece to piece, and the buffer
/// pieces are compressed into before they are copied out at their exact size.
pub(super) struct Deflater {
    compress: Compress,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            compress: Compress::new(Compression::fast(), false),
            scratch: Vec::new(),
        }
    }
}

impl Deflater {
    /// Compress `text` as a piece of its own.
    pub(super) fn deflate(&mut self, text: &[u8]) -> Deflated {
        // Compressing reserves a quarter of the text ahead; a piece keeps about a tenth, and
        // pieces live as long as their snapshot (two snapshots' worth at a time), so it is
        // compressed into the reused buffer and copied out at its size.
        self.scratch.clear();
        raw_into(&mut self.compress, text, &mut self.scratch);
        let bytes = self.scratch.clone();
        let mut crc = crc32fast::Hasher::new();
        crc.update(text);
        Deflated { bytes, crc }
    }
}

/// Append `text`, compressed by `compress` from a fresh state and sync-flushed, to `out`.
fn raw_into(compress: &mut Compress, text: &[u8], out: &mut Vec<u8>) {
    compress.reset();
    let mut input = text;
    loop {
        out.reserve(input.len() / 4 + 64);
        let before = compress.total_in();
        compress
            .compress_vec(input, out, FlushCompress::Sync)
            .expect("raw deflate into memory cannot fail");
        let consumed = usize::try_from(compress.total_in() - before)
            .expect("consumed at most the input's length");
        input = &input[consumed..];
        // The flush is complete once the compressor stops short of the space it had.
        if input.is_empty() && out.len() < out.capacity() {
            return;
        }
    }
}

/// A gzip body being written: text and pieces in order.
#[derive(Debug)]
pub(super) struct GzipWriter {
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    pending: Vec<u8>,
    deflater: Deflater,
}

/// The gzip header: deflate, no name or time, "unknown" OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
/// An empty final block (fixed Huffman codes: BFINAL, BTYPE 01, end of block).
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

impl GzipWriter {
    /// A body expected to be about `capacity` compressed bytes.
    pub(super) fn new(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity.max(HEADER.len() + 64));
        out.extend_from_slice(&HEADER);
        GzipWriter {
            out,
            crc: crc32fast::Hasher::new(),
            pending: Vec::new(),
            deflater: Deflater::default(),
        }
    }

    /// Append plain text (compressed with the text around it, up to the next piece).
    pub(super) fn text(&mut self, text: &str) {
        self.pending.extend_from_slice(text.as_bytes());
        if self.pending.len() >= PENDING_CHUNK {
            self.flush_pending();
        }
    }

    /// Append a piece compressed apart.
    #[cfg(test)]
    pub(super) fn piece(&mut self, piece: &Deflated) {
        self.pieces([piece], &piece.crc);
    }

    /// Append pieces compressed apart that follow one another, `crc` being the CRCs of their
    /// texts combined in order (made once with the pieces, not at every body).
    pub(super) fn pieces<'a>(
        &mut self,
        pieces: impl IntoIterator<Item = &'a Deflated>,
        crc: &crc32fast::Hasher,
    ) {
        self.flush_pending();
        for piece in pieces {
            self.out.extend_from_slice(&piece.bytes);
        }
        self.crc.combine(crc);
    }

    /// Close the stream: the final block and the trailer.
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.flush_pending();
        self.out.extend_from_slice(&FINAL_BLOCK);
        let len = self.crc.total_len();
        self.out
            .extend_from_slice(&self.crc.finalize().to_le_bytes());
        // ISIZE is the length modulo 2^32.
        self.out.extend_from_slice(&(len as u32).to_le_bytes());
        self.out
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.crc.update(&self.pending);
        if self.pending.len() < STORED_BELOW {
            // A stored block: header byte (not final, type 00), LEN, NLEN, the bytes.
            let len = u16::try_from(self.pending.len()).expect("shorter than STORED_BELOW");
            self.out.push(0);
            self.out.extend_from_slice(&len.to_le_bytes());
            self.out.extend_from_slice(&(!len).to_le_bytes());
            self.out.extend_from_slice(&self.pending);
        } else {
            // Into the deflater's buffer, not straight into `out`: flate2 zero-fills all of a
            // `Vec`'s spare capacity before every call, and `out` is reserved for the whole
            // body (~10 MB at 500 targets), so each run of text cost a memset of the rest of
            // the body (15% of a 500-target scrape).
            let scratch = &mut self.deflater.scratch;
            scratch.clear();
            raw_into(&mut self.deflater.compress, &self.pending, scratch);
            self.out.extend_from_slice(scratch);
        }
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        // The single-member reader: a body that were several members would stop at the first.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn text(seed: u64, len: usize) -> String {
        let mut out = String::with_capacity(len + 80);
        let mut i = seed;
        while out.len() < len {
            i = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.push_str(&format!(
                "pgvigil_statement_calls_total{{target=\"t\",queryid=\"{}\"}} {}\n",
                i >> 40,
                i % 1000
            ));
        }
        out
    }

    #[test]
    fn pieces_and_text_in_any_order_decode_to_exactly_the_plain_text() {
        let mut deflater = Deflater::default();
        let a = text(1, 100_000);
        let b = text(2, 3_000);
        let pa = deflater.deflate(a.as_bytes());
        let pb = deflater.deflate(b.as_bytes());
        let short = "# HELP x y\n# TYPE x gauge\n";
        let long = text(3, PENDING_CHUNK + 10_000);

        let mut w = GzipWriter::new(0);
        w.text(short);
        w.piece(&pb);
        w.piece(&pa);
        w.text(&long);
        w.text(short);
        w.piece(&pb);
        w.text("# EOF\n");
        let body = w.finish();
        let expected = [short, &b, &a, &long, short, &b, "# EOF\n"].concat();
        assert_eq!(gunzip(&body), expected.as_bytes());
        assert!(
            body.len() * 5 < expected.len(),
            "compressed: {} of {}",
            body.len(),
            expected.len()
        );
    }

    #[test]
    fn an_empty_body_and_an_empty_piece_are_valid_gzip() {
        assert_eq!(gunzip(&GzipWriter::new(0).finish()), b"");
        let mut deflater = Deflater::default();
        let empty = deflater.deflate(b"");
        let mut w = GzipWriter::new(0);
        w.piece(&empty);
        w.text("x\n");
        w.piece(&empty);
        assert_eq!(gunzip(&w.finish()), b"x\n");
    }

    #[test]
    fn a_piece_is_the_same_bytes_whatever_was_compressed_before_it() {
        let mut deflater = Deflater::default();
        let a = text(4, 50_000);
        let first = deflater.deflate(a.as_bytes());
        deflater.deflate(text(5, 70_000).as_bytes());
        let again = deflater.deflate(a.as_bytes());
        assert_eq!(first.bytes, again.bytes);
        assert!(first.compressed_len() > 0);
    }

    #[test]
    fn a_piece_keeps_no_room_to_spare() {
        // Kept for a snapshot's life, twice over: what the compressor reserved ahead (a
        // quarter of the text) would be most of the pieces' memory.
        let mut deflater = Deflater::default();
        let piece = deflater.deflate(text(6, 40_000).as_bytes());
        assert!(
            piece.compressed_len() < 40_000 / 4,
            "{}",
            piece.compressed_len()
        );
        assert_eq!(piece.bytes.capacity(), piece.bytes.len());
    }
}
