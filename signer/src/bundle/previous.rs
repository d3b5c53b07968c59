//! The chunks an earlier release already stores, read from its bundle (`sign --previous`,
//! [`SignOptions::previous`](super::SignOptions::previous)): the signer frames a new release's
//! chunks found there apart from those it lacks, so a node holding the earlier release fetches
//! the new ones in frames of their own runs. Read without verifying: these hashes only decide
//! how the new bundle's frames are laid out, never what a node trusts.
//!
//! A chunk is known by the first 8 bytes of its hash, and the earlier bundle's index is
//! streamed from a copy on disk, never held: the set costs about 16 bytes a stored chunk (it
//! was 48 with whole hashes, and the earlier release's chunk list, 72 bytes a chunk, was held
//! while it was read). Two chunks sharing a key only put a new chunk in a shared frame: a
//! node lacking it fetches that frame, a cost in bytes, never a wrong write.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

use crate::bundle::index::IndexFile;
use crate::error::Error;
use crate::{BundleHead, Chunk, Limits, Sha256Digest};

/// The chunks of earlier releases, by the first 8 bytes of their hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreviousChunks(HashSet<u64>);

impl PreviousChunks {
    /// Whether an earlier release stores a chunk whose hash starts as `sha256` does.
    pub fn contains(&self, sha256: &Sha256Digest) -> bool {
        self.0.contains(&sha256.key())
    }

    /// No earlier release.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the stored (not all-zero) chunks of the bundle `r` reads.
    pub fn add_bundle<R: Read + Seek>(&mut self, r: &mut R, limits: &Limits) -> Result<(), Error> {
        let streamed = Limits {
            max_index_in_head: 0,
            ..limits.clone()
        };
        let manifest = BundleHead::read(r, &streamed)?.manifest_unverified(&streamed)?;
        let Some(index) = manifest.streamed_index() else {
            // A version 1 or 2 bundle: its chunks are listed in its manifest.
            return self.add(manifest.chunks().iter().copied().map(Ok));
        };
        let range = index.range();
        r.seek(SeekFrom::Start(range.start))
            .map_err(Error::io("reading the earlier bundle's chunk index"))?;
        let file =
            tempfile::tempfile().map_err(Error::io("creating a file for the chunk index"))?;
        let file = IndexFile::spill(index, r.take(range.end - range.start), file)?;
        let chunks = file.chunks()?.map(|c| c.map_err(Error::from));
        self.add(chunks)
    }

    fn add(&mut self, chunks: impl Iterator<Item = Result<Chunk, Error>>) -> Result<(), Error> {
        for chunk in chunks {
            let chunk = chunk?;
            if !chunk.is_zero() {
                self.0.insert(chunk.sha256().key());
            }
        }
        Ok(())
    }
}

impl FromIterator<Sha256Digest> for PreviousChunks {
    fn from_iter<I: IntoIterator<Item = Sha256Digest>>(hashes: I) -> Self {
        PreviousChunks(hashes.into_iter().map(|h| h.key()).collect())
    }
}
