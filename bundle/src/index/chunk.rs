//! One chunk of a stream (the image or a boot asset) as the decoders hand it on: where its
//! raw bytes lie, their hash, and the zstd frame they are stored in; and how a stream's chunks
//! group into the pieces a reader decompresses one by one.

use std::ops::Range;
use std::sync::Arc;

use crate::chunking::Chunking;
use crate::digest::Sha256Digest;

/// Where a chunk's zstd frame lies, relative to the start of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredFrame {
    /// Offset from the payload start.
    pub offset: u64,
    /// Frame length in bytes.
    pub length: u64,
}

/// One chunk of the raw image or of an asset. A format 3 manifest holds one per 4 KiB or more
/// of image, so the record is kept small: 72 bytes (32-bit index and lengths, a frame length
/// of 0 for "no frame", 4-byte alignment), 12 of them where the chunk store holds it.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct Chunk {
    sha256: Sha256Digest,
    image_offset: u64,
    frame_offset: u64,
    store_offset: u64,
    index: u32,
    len: u32,
    /// 0 for an all-zero chunk, which has no frame (a stored frame is never empty).
    frame_length: u32,
    /// 0 when the chunk store does not hold the chunk's own frame.
    store_length: u32,
}

impl Chunk {
    /// Chunk `index` of its stream, `len` raw bytes at `image_offset`, hashing to `sha256`,
    /// stored in `frame` (`None`: all zeros, not stored). `None` when the index or the frame's
    /// length does not fit in 32 bits, or the frame is empty.
    pub fn new(
        index: u64,
        image_offset: u64,
        len: u32,
        sha256: Sha256Digest,
        frame: Option<StoredFrame>,
    ) -> Option<Chunk> {
        let (frame_offset, frame_length) = match frame {
            Some(f) => (f.offset, u32::try_from(f.length).ok().filter(|&n| n > 0)?),
            None => (0, 0),
        };
        Some(Chunk {
            sha256,
            image_offset,
            frame_offset,
            store_offset: 0,
            index: u32::try_from(index).ok()?,
            len,
            frame_length,
            store_length: 0,
        })
    }

    /// The chunk, held alone in `store` of the release's chunk store too (FORMAT §3.4);
    /// `None` when the frame's length does not fit in 32 bits or is empty.
    pub fn with_store(self, store: StoredFrame) -> Option<Chunk> {
        let store_length = u32::try_from(store.length).ok().filter(|&n| n > 0)?;
        Some(Chunk {
            store_offset: store.offset,
            store_length,
            ..self
        })
    }

    /// The chunk's own frame in the release's chunk store (offset from the store's start),
    /// when the store holds it.
    pub fn store(&self) -> Option<StoredFrame> {
        (self.store_length != 0).then_some(StoredFrame {
            offset: self.store_offset,
            length: u64::from(self.store_length),
        })
    }
    /// Position in its stream (the image's or an asset's chunks).
    pub fn index(&self) -> u64 {
        u64::from(self.index)
    }
    /// Offset of the chunk in the raw image (or asset).
    pub fn image_offset(&self) -> u64 {
        self.image_offset
    }
    /// Raw length in bytes (never 0: no `is_empty`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u32 {
        self.len
    }
    /// SHA-256 of the raw bytes.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }
    /// The frame, or `None` for an all-zero chunk that is not stored.
    pub fn frame(&self) -> Option<StoredFrame> {
        (self.frame_length != 0).then_some(StoredFrame {
            offset: self.frame_offset,
            length: u64::from(self.frame_length),
        })
    }
    /// Whether this is an all-zero chunk (no frame).
    pub fn is_zero(&self) -> bool {
        self.frame_length == 0
    }
    /// Offset just past the chunk in the raw image.
    pub fn end(&self) -> u64 {
        self.image_offset + u64::from(self.len)
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("index", &self.index())
            .field("image_offset", &self.image_offset())
            .field("len", &self.len())
            .field("sha256", &self.sha256())
            .field("frame", &self.frame())
            .field("store", &self.store())
            .finish()
    }
}

/// What the signed manifest says of an image whose index was left in the bundle: where it
/// lies, its signed length, record count and hash, and what its records must tile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedIndex {
    pub(crate) range: Range<u64>,
    pub(crate) count: u64,
    pub(crate) sha256: Sha256Digest,
    pub(crate) image_size: u64,
    pub(crate) chunking: Chunking,
    /// Where the image's frames must end: where the boot assets' frames start.
    pub(crate) frames_end: u64,
    pub(crate) max_frame_raw: u64,
    /// The chunk store's signed size, when the release has one: the records then carry a
    /// store frame length, whose sum it must be.
    pub(crate) store_size: Option<u64>,
    /// A tree index's layout (FORMAT §3.2.1).
    pub(crate) tree: Option<super::Tree>,
}

impl StreamedIndex {
    /// The stored index's absolute byte range in the bundle file.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The number of the image's chunks.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The absolute byte range of a tree index's lengths and table (the whole index when it
    /// is not a tree).
    pub fn head_range(&self) -> Range<u64> {
        let head = self
            .tree
            .map_or(self.range.end - self.range.start, |t| t.head_len());
        self.range.start..self.range.start + head
    }

    /// A tree index's layout, when the index is one (FORMAT §3.2.1).
    pub fn tree(&self) -> Option<super::Tree> {
        self.tree
    }
}

/// The image's chunks and how they were cut and compressed.
pub(crate) struct ImageChunks {
    pub(crate) chunking: Chunking,
    pub(crate) count: u64,
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) dictionary: Option<Arc<[u8]>>,
    /// The index left in the bundle, its chunks to be streamed (`chunks` is then empty).
    pub(crate) streamed: Option<StreamedIndex>,
}

/// The consecutive chunks of one piece of a stream: one all-zero chunk, or every chunk of
/// one frame (FORMAT §3.2: several in version 3, one before). A frame's chunks are contiguous
/// in the image, so a piece decompresses to one contiguous range of it.
pub fn pieces(chunks: &[Chunk]) -> impl Iterator<Item = &[Chunk]> {
    chunks.chunk_by(|a, b| !a.is_zero() && a.frame() == b.frame())
}

/// Largest frame a chunk of `len` raw bytes may have (zstd's compress bound).
pub fn max_frame_len(len: u32) -> u64 {
    max_frame_len_u64(u64::from(len))
}

/// [`max_frame_len`] of `raw` bytes, saturating where `usize` ends.
pub(crate) fn max_frame_len_u64(raw: u64) -> u64 {
    usize::try_from(raw).map_or(u64::MAX, |n| zstd::zstd_safe::compress_bound(n) as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_chunk_is_72_bytes_and_keeps_what_it_was_given() {
        assert_eq!(std::mem::size_of::<Chunk>(), 72);
        let sha256 = Sha256Digest::of(b"x");
        let frame = StoredFrame {
            offset: 1 << 40,
            length: 300,
        };
        let c = Chunk::new(7, 1 << 33, 4096, sha256, Some(frame)).unwrap();
        assert_eq!(
            (c.index(), c.image_offset(), c.len(), c.sha256(), c.frame()),
            (7, 1 << 33, 4096, sha256, Some(frame))
        );
        assert_eq!(c.end(), (1 << 33) + 4096);
        assert!(!c.is_zero());
        let zero = Chunk::new(8, 0, 4096, sha256, None).unwrap();
        assert!(zero.is_zero() && zero.frame().is_none());
        let big = |index, length| {
            Chunk::new(index, 0, 1, sha256, Some(StoredFrame { offset: 0, length }))
        };
        assert!(big(1 << 32, 1).is_none(), "index past 32 bits");
        assert!(big(0, 1 << 32).is_none(), "frame length past 32 bits");
        assert!(big(0, 0).is_none(), "an empty frame");
        assert_eq!(c.store(), None);
        let store = StoredFrame {
            offset: 1 << 36,
            length: 4000,
        };
        let stored = c.with_store(store).unwrap();
        assert_eq!((stored.store(), stored.frame()), (Some(store), Some(frame)));
        let empty = StoredFrame {
            offset: 0,
            length: 0,
        };
        assert!(c.with_store(empty).is_none(), "an empty store frame");
    }
}
