//! Where an image is cut into chunks (FORMAT §3.2): fixed blocks, or content-defined cut
//! points (FastCDC, 2020 variant, normalization level 1) rounded up to the next multiple of
//! 4 KiB. The signer cuts the image with it; a node cuts its own slots the same way to find
//! chunks it already holds, wherever they moved, so both must agree on every cut.
//!
//! Why 4 KiB boundaries: filesystem images (ext4, erofs, FAT) place file data in 4 KiB blocks,
//! so data that moves between two builds moves by whole blocks; cut points on block
//! boundaries find it again as whole chunks.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// Cut points are multiples of this from the chunk start (except at the end of the stream).
pub const ALIGN: u32 = 4096;
/// Largest `max` the chunker allows (FastCDC's own bound).
pub const MAX_CHUNK: u32 = fastcdc::v2020::MAXIMUM_MAX;
/// Largest `max / avg` for content-defined chunks: FastCDC cuts near `avg`, so a `max` far
/// above it only makes every cut look (and a reader buffer) that far ahead for nothing.
pub const MAX_SPREAD: u32 = 8;

/// Chunk size bounds: `min == max` cuts fixed blocks of that size; else FastCDC aims at `avg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    /// Average chunk size FastCDC aims at (equal to `min` and `max` for fixed blocks).
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
    /// Smallest chunk, except the last one of a stream.
    pub min: u32,
}

impl Chunking {
    /// The signer's default: 4 KiB blocks, the block size of a filesystem made with 4 KiB
    /// blocks (`mke2fs -b 4096`; docs/DESIGN.md §8).
    pub const DEFAULT: Chunking = Chunking::fixed(ALIGN);

    /// Fixed blocks of `size` bytes.
    pub const fn fixed(size: u32) -> Chunking {
        Chunking {
            min: size,
            avg: size,
            max: size,
        }
    }

    /// Whether every chunk but the last is exactly `max` bytes.
    pub fn is_fixed(&self) -> bool {
        self.min == self.max
    }

    /// FORMAT §3.2: powers of two, `4096 <= min <= avg <= max <= max_size`, `avg == min` for
    /// fixed blocks, and `max <= MAX_SPREAD * avg`. The message says which rule broke.
    pub fn check(&self, max_size: u32) -> Result<(), String> {
        let top = max_size.min(MAX_CHUNK);
        let Chunking { min, avg, max } = *self;
        if ![min, avg, max].iter().all(|n| n.is_power_of_two()) {
            return Err(format!("{self}: sizes must be powers of two"));
        }
        if !(ALIGN <= min && min <= avg && avg <= max && max <= top) {
            return Err(format!(
                "{self}: sizes must satisfy {ALIGN} <= min <= avg <= max <= {top}"
            ));
        }
        if min == max && avg != min {
            return Err(format!("{self}: fixed blocks have avg = min = max"));
        }
        if max / avg > MAX_SPREAD {
            return Err(format!(
                "{self}: max must be at most {MAX_SPREAD} x avg (content-defined chunks are cut near avg)"
            ));
        }
        Ok(())
    }

    /// Length of the chunk that starts `data`, where `data` holds at least `max` bytes or
    /// reaches the end of the stream. Never 0 for non-empty `data`.
    pub fn next_len(&self, data: &[u8]) -> usize {
        let max = self.max as usize;
        if self.is_fixed() || data.len() <= self.min as usize {
            return data.len().min(max);
        }
        let window = data.get(..data.len().min(max)).unwrap_or(data);
        let bits = fastcdc::v2020::logarithm2(self.avg);
        let mask = |bits: u32| {
            fastcdc::v2020::MASKS
                .get(bits as usize)
                .copied()
                .unwrap_or(0)
        };
        let (mask_s, mask_l) = (mask(bits + 1), mask(bits - 1));
        let (_, cut) = fastcdc::v2020::cut(
            window,
            self.min as usize,
            self.avg as usize,
            max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        cut.div_ceil(ALIGN as usize)
            .saturating_mul(ALIGN as usize)
            .min(window.len())
    }

    /// Cuts `reader` into chunks, reading exactly `size` bytes.
    pub fn split<R: Read>(self, reader: R, size: u64) -> ChunkStream<R> {
        ChunkStream {
            chunking: self,
            reader,
            left: size,
            pending: Vec::new(),
            start: 0,
            moved: 0,
        }
    }
}

impl std::fmt::Display for Chunking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_fixed() {
            write!(f, "fixed {} B blocks", self.max)
        } else {
            write!(f, "FastCDC {}/{}/{} B", self.min, self.avg, self.max)
        }
    }
}

/// A reader cut into chunks ([`Chunking::split`]): holds at most `2 × max` bytes besides the
/// caller's buffer. The bytes not yet cut are moved to the front of the buffer only when fewer
/// than `max` are left, so each byte is moved at most once per `max` bytes cut: cutting costs
/// O(bytes) whatever `max / avg`, not a buffer of `max` bytes moved per chunk.
pub struct ChunkStream<R> {
    chunking: Chunking,
    reader: R,
    /// Bytes still to read from `reader`.
    left: u64,
    pending: Vec<u8>,
    /// Where the unconsumed bytes of `pending` start.
    start: usize,
    /// Bytes moved to the front of `pending` so far (the cost the buffering bounds).
    moved: u64,
}

impl<R: Read> ChunkStream<R> {
    /// The next chunk's bytes into `out` (replacing its contents); `false` at the end. A reader
    /// that ends before `size` bytes is an `UnexpectedEof` error.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        self.fill()?;
        let data = self.pending.get(self.start..).unwrap_or_default();
        if data.is_empty() {
            return Ok(false);
        }
        let len = self.chunking.next_len(data);
        out.clear();
        out.extend_from_slice(data.get(..len).unwrap_or(data));
        self.start += len;
        Ok(true)
    }

    /// Makes `pending` hold at least `max` unconsumed bytes, or all up to the end of the
    /// stream: when fewer are left, moves them to the front and reads up to `2 × max`.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.chunking.max as usize;
        if self.pending.len() - self.start >= max || self.left == 0 {
            return Ok(());
        }
        if self.start > 0 {
            self.moved += (self.pending.len() - self.start) as u64;
            self.pending.drain(..self.start);
            self.start = 0;
        }
        let want = (2 * max).saturating_sub(self.pending.len()) as u64;
        let n = want.min(self.left);
        let at = self.pending.len();
        self.pending.resize(at + n as usize, 0);
        self.reader
            .read_exact(self.pending.get_mut(at..).unwrap_or_default())?;
        self.left -= n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_reader_is_an_error() {
        let mut stream = Chunking::DEFAULT.split(&[1u8; 100][..], 200);
        assert!(stream.next_into(&mut Vec::new()).is_err());
    }

    /// Cuts `data` in memory, each chunk from the whole rest of the data: the reference the
    /// buffered stream must agree with.
    fn reference_cuts(chunking: Chunking, data: &[u8]) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < data.len() {
            at += chunking.next_len(&data[at..]);
            cuts.push(at);
        }
        cuts
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_stream_cuts_where_the_whole_data_does_and_moves_each_byte_once_per_max() {
        let data = noise(3 << 20);
        for chunking in [
            Chunking::DEFAULT,
            Chunking::fixed(1 << 16),
            Chunking {
                min: 4096,
                avg: 8192,
                max: 65536,
            },
            Chunking {
                min: 4096,
                avg: 16384,
                max: 131072,
            },
        ] {
            let mut stream = chunking.split(&data[..], data.len() as u64);
            let (mut chunk, mut cuts, mut at) = (Vec::new(), Vec::new(), 0);
            while stream.next_into(&mut chunk).unwrap() {
                assert_eq!(chunk, data[at..at + chunk.len()], "{chunking}");
                at += chunk.len();
                cuts.push(at);
            }
            assert_eq!(cuts, reference_cuts(chunking, &data), "{chunking}");
            // Each compaction moves fewer than `max` bytes after at least `max` were cut.
            assert!(
                stream.moved <= data.len() as u64,
                "{chunking}: {} bytes moved to cut {}",
                stream.moved,
                data.len()
            );
        }
    }

    #[test]
    fn the_rules_name_what_broke() {
        assert!(Chunking::DEFAULT.check(64 << 20).is_ok());
        let bad = |min, avg, max| Chunking { min, avg, max }.check(64 << 20).unwrap_err();
        assert!(bad(4096, 8192, 4096).contains("min <= avg <= max"));
        assert!(bad(4096, 5000, 65536).contains("powers of two"));
        assert!(bad(2048, 2048, 2048).contains("4096 <="));
        assert!(bad(4096, 4096, 16 << 20).contains("at most 8 x avg"));
        assert!(Chunking {
            min: 4096,
            avg: 8192,
            max: 65536
        }
        .check(64 << 20)
        .is_ok());
        assert!(Chunking::fixed(1 << 20).check(64 << 20).is_ok());
    }
}
