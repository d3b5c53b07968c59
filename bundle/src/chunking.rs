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
    /// The signer's default: 4 KiB blocks, a filesystem's own block size (docs/DESIGN.md §8).
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

    /// FORMAT §3.2: powers of two, `4096 <= min <= avg <= max <= max_size`, and `avg == min`
    /// for fixed blocks. The message says which rule broke.
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

/// A reader cut into chunks ([`Chunking::split`]): holds at most `max` bytes besides the
/// caller's buffer.
pub struct ChunkStream<R> {
    chunking: Chunking,
    reader: R,
    /// Bytes still to read from `reader`.
    left: u64,
    pending: Vec<u8>,
    /// Where the unconsumed bytes of `pending` start.
    start: usize,
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

    /// Tops `pending` up to `max` unconsumed bytes, or to the end of the stream.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.chunking.max as usize;
        if self.start > 0 {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        let want = max.saturating_sub(self.pending.len()) as u64;
        let n = want.min(self.left);
        if n == 0 {
            return Ok(());
        }
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

    #[test]
    fn the_rules_name_what_broke() {
        assert!(Chunking::DEFAULT.check(64 << 20).is_ok());
        let bad = |min, avg, max| Chunking { min, avg, max }.check(64 << 20).unwrap_err();
        assert!(bad(4096, 8192, 4096).contains("min <= avg <= max"));
        assert!(bad(4096, 5000, 65536).contains("powers of two"));
        assert!(bad(2048, 2048, 2048).contains("4096 <="));
        assert!(Chunking::fixed(1 << 20).check(64 << 20).is_ok());
    }
}
