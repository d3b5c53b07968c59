//! The image's chunks as the install walks them (docs/DESIGN.md §8 "Memory"): never a list of
//! the whole image, but segments of at most about [`SEGMENT_CHUNKS`] chunks, each ending where
//! a piece does, decoded as the install advances.
//!
//! A bundle whose index the agent left in it (it always does: `Limits::max_index_in_head` is
//! 0) has its stored index copied into an unnamed file in the state directory while hashed,
//! proven whole against the signed manifest, then decoded again segment by segment
//! ([`bundle::index::IndexFile`]); a manifest read with its chunk list (a test's, or one from
//! a library caller) is walked the same way. A partition image (an `image` asset) is walked
//! from its own chunk list, and written by the same pipeline as the root image.

use bundle::chunking::Chunking;
use bundle::index::IndexFile;
use bundle::verify::Verified;
use bundle::{Asset, Chunk, Manifest, Sha256Digest};

use crate::error::{Error, Result};
use crate::seed::SlotScan;

/// Chunks decoded at a time: 64 Ki of 72 bytes, 4.5 MiB (256 MiB of image in 4 KiB chunks),
/// plus the chunks that finish the last piece.
pub(crate) const SEGMENT_CHUNKS: usize = 64 << 10;

/// A verified manifest and where its image's chunks come from, walked as often as the install
/// needs (`install::open_index` makes one for an install).
pub struct ImageIndex<'m> {
    manifest: &'m Verified<Manifest>,
    chunks: Chunks<'m>,
    /// Bytes of the stored index fetched.
    bytes_read: u64,
    /// The partition image these chunks make up; `None`: the root image.
    asset: Option<&'m Asset>,
    /// The running slot's chunks, when it was scanned while the index was read.
    slot_scan: Option<SlotScan>,
}

impl<'m> ImageIndex<'m> {
    /// The chunks of `manifest` from its own list (its index was read with its head).
    pub fn listed(manifest: &'m Verified<Manifest>) -> ImageIndex<'m> {
        ImageIndex {
            manifest,
            chunks: Chunks::Listed(manifest.chunks()),
            bytes_read: 0,
            asset: None,
            slot_scan: None,
        }
    }

    /// The chunks of `manifest` from its stored index, spilled and proven, of which
    /// `bytes_read` were fetched.
    pub fn spilled(
        manifest: &'m Verified<Manifest>,
        file: IndexFile,
        bytes_read: u64,
    ) -> ImageIndex<'m> {
        ImageIndex {
            manifest,
            chunks: Chunks::Spilled(file),
            bytes_read,
            asset: None,
            slot_scan: None,
        }
    }

    /// The chunks of `asset`, a partition image of `manifest`: cut in the manifest's
    /// `chunk_size` blocks, one frame each (FORMAT §3.1).
    pub(crate) fn asset(manifest: &'m Verified<Manifest>, asset: &'m Asset) -> ImageIndex<'m> {
        ImageIndex {
            manifest,
            chunks: Chunks::Listed(asset.chunks()),
            bytes_read: 0,
            asset: Some(asset),
            slot_scan: None,
        }
    }

    /// Bytes of the stored index fetched.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// This index with the scan of the running slot made while it was read.
    pub(crate) fn with_scan(self, scan: SlotScan) -> ImageIndex<'m> {
        ImageIndex {
            slot_scan: Some(scan),
            ..self
        }
    }

    /// The scan of the running slot made while the index was read, if one was.
    pub(crate) fn slot_scan(&self) -> Option<&SlotScan> {
        self.slot_scan.as_ref()
    }

    /// The manifest whose chunks these are.
    pub fn manifest(&self) -> &'m Verified<Manifest> {
        self.manifest
    }

    /// The raw size of what the chunks make up.
    pub(crate) fn size(&self) -> u64 {
        self.asset.map_or(self.manifest.image_size(), Asset::size)
    }

    /// The signed SHA-256 of what the chunks make up.
    pub(crate) fn sha256(&self) -> Sha256Digest {
        self.asset
            .map_or(self.manifest.image_sha256(), Asset::sha256)
    }

    /// How many chunks there are.
    pub(crate) fn chunk_count(&self) -> u64 {
        self.asset
            .map_or(self.manifest.chunk_count(), |a| a.chunks().len() as u64)
    }

    /// Where the chunks are cut, which a scan of the slot holding an older copy cuts alike.
    pub(crate) fn chunking(&self) -> Chunking {
        match self.asset {
            Some(_) => Chunking::fixed(self.manifest.chunk_size()),
            None => self.manifest.chunking(),
        }
    }

    /// Whether a resumed write hashes the chunks an earlier run wrote before going on, even
    /// with the read-back: a partition image is small next to the root image, so reading its
    /// durable part again costs little, and a partition that lost them is written whole from
    /// the start rather than found out at the read-back.
    pub(crate) fn rechecks_resumed(&self) -> bool {
        self.asset.is_some()
    }

    /// The chunks in segments, from the first.
    pub(crate) fn segments(&self) -> Result<Segments<'_>> {
        self.chunks.segments()
    }

    /// The chunks one by one.
    pub(crate) fn chunks(&self) -> Result<impl Iterator<Item = Result<Chunk>> + '_> {
        Ok(self.segments()?.flat_map(|segment| match segment {
            Ok(chunks) => chunks.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }))
    }
}

/// Where the chunks come from.
enum Chunks<'m> {
    /// The manifest's own list.
    Listed(&'m [Chunk]),
    /// The stored index, spilled from the bundle and proven.
    Spilled(IndexFile),
}

impl Chunks<'_> {
    fn segments(&self) -> Result<Segments<'_>> {
        let file = match self {
            Chunks::Listed(chunks) => return Ok(listed_segments(chunks)),
            Chunks::Spilled(file) => file,
        };
        let chunks: Box<dyn Iterator<Item = Result<Chunk>> + Send + '_> = Box::new(
            file.chunks()
                .map_err(Error::verify("the chunk index"))?
                .map(|c| c.map_err(|e| Error::verify("the chunk index")(e.into()))),
        );
        Ok(Segments {
            chunks: chunks.peekable(),
        })
    }
}

/// The segments of a list of chunks.
pub(crate) fn listed_segments(chunks: &[Chunk]) -> Segments<'_> {
    let chunks: Box<dyn Iterator<Item = Result<Chunk>> + Send + '_> =
        Box::new(chunks.iter().copied().map(Ok));
    Segments {
        chunks: chunks.peekable(),
    }
}

/// Consecutive runs of chunks, each ending where a piece ends.
pub(crate) struct Segments<'a> {
    chunks: std::iter::Peekable<Box<dyn Iterator<Item = Result<Chunk>> + Send + 'a>>,
}

impl Iterator for Segments<'_> {
    type Item = Result<Vec<Chunk>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut segment: Vec<Chunk> = Vec::new();
        loop {
            let full = segment.len() >= SEGMENT_CHUNKS;
            // A full segment still takes the chunks that continue its last frame.
            let next = match segment.last().copied() {
                Some(last) if full => self.chunks.next_if(|c| {
                    c.as_ref()
                        .is_ok_and(|c| c.frame().is_some() && c.frame() == last.frame())
                }),
                _ => self.chunks.next(),
            };
            match next {
                Some(Ok(chunk)) => segment.push(chunk),
                Some(Err(e)) => return Some(Err(e)),
                None if segment.is_empty() => return None,
                None => return Some(Ok(segment)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use bundle::schema::StoredFrame;
    use bundle::Sha256Digest;

    /// Chunks whose frames hold `frame_of[i]`'s run (`None`: all zeros).
    fn chunks(frame_of: &[Option<u64>]) -> Vec<Chunk> {
        frame_of
            .iter()
            .enumerate()
            .map(|(i, frame)| {
                let frame = frame.map(|f| StoredFrame {
                    offset: f * 10,
                    length: 10,
                });
                let sha256 = Sha256Digest::of(&(i as u64).to_le_bytes());
                Chunk::new(i as u64, i as u64 * 4096, 4096, sha256, frame).unwrap()
            })
            .collect()
    }

    #[test]
    fn segments_cover_every_chunk_in_order_and_never_split_a_frame() {
        // Frames of three chunks, so a segment boundary falls inside one; zeros between.
        let frame_of: Vec<Option<u64>> = (0..3 * SEGMENT_CHUNKS as u64 + 7)
            .map(|i| (i % 5 != 0).then_some(i / 3))
            .collect();
        let all = chunks(&frame_of);
        let segments: Vec<Vec<Chunk>> = listed_segments(&all).collect::<Result<_>>().unwrap();
        assert!(segments.len() >= 3);
        assert_eq!(segments.concat(), all, "every chunk once, in order");
        for pair in segments.windows(2) {
            let (last, first) = (pair[0].last().unwrap(), pair[1][0]);
            assert!(pair[0].len() >= SEGMENT_CHUNKS);
            assert!(
                first.frame().is_none() || first.frame() != last.frame(),
                "a frame split at chunk {}",
                first.index()
            );
        }
    }
}
