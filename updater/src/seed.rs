//! Chunks a node already holds (docs/DESIGN.md §8): a delta update fetches only what it cannot
//! find. The active slot is cut with the bundle's own chunking and every chunk hashed, so a
//! chunk is found wherever it moved; a chunk not there may already be in place in the target
//! slot, at its own offset (an interrupted or older install). Nothing found here is trusted:
//! the install pipeline hashes every copied chunk again as it reads it for writing.

use std::io::BufReader;

use bundle::chunking::Chunking;
use bundle::{Chunk, Sha256Digest};
use partitions::io::{BlockDevice, DeviceCursor};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Where a held chunk's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// In the active slot at this offset.
    Active(u64),
    /// Already in the target slot, at the chunk's own offset.
    InPlace,
}

/// The stored chunks the image wants, by the first 8 bytes of their hash, and where the scan
/// of the active slot found each: 16 bytes per distinct stored chunk, sorted, with no table
/// slack (a hash map of whole digests took about 80). A short key only finds a candidate:
/// [`Seed::held`] hashes the candidate's bytes whole before it plans to copy them.
pub(crate) struct Seed {
    found: Vec<(u64, u64)>,
}

impl Seed {
    /// Lists the stored ones of `chunks` (all-zero chunks are never copied) and scans
    /// `active`, cut by `chunking`, for them.
    pub(crate) fn scan(
        chunks: impl Iterator<Item = Result<Chunk>>,
        chunking: Chunking,
        active: &dyn BlockDevice,
    ) -> Result<Seed> {
        let mut found = Vec::new();
        for chunk in chunks {
            let chunk = chunk?;
            if !chunk.is_zero() {
                found.push((key(chunk.sha256()), NOT_FOUND));
            }
        }
        found.sort_unstable();
        found.dedup();
        found.shrink_to_fit();
        if !found.is_empty() {
            scan(active, chunking, &mut found)?;
        }
        Ok(Seed { found })
    }

    /// Where the scan found a chunk whose hash starts as `sha256`'s.
    fn candidate(&self, sha256: Sha256Digest) -> Option<u64> {
        let at = self
            .found
            .binary_search_by_key(&key(sha256), |e| e.0)
            .ok()?;
        self.found
            .get(at)
            .map(|e| e.1)
            .filter(|&offset| offset != NOT_FOUND)
    }

    /// For each of `chunks`: where the node holds it. A candidate of the scan is checked by
    /// its whole hash; a chunk not found there may be at its own offset in the active slot (a
    /// shorter one, which the scan does not cut) or already in place in `target`.
    pub(crate) fn held(
        &self,
        chunks: &[Chunk],
        active: &dyn BlockDevice,
        target: &dyn BlockDevice,
    ) -> Result<Vec<Option<Held>>> {
        let active = Slot::new(active)?;
        let target = Slot::new(target)?;
        let mut buf = Vec::new();
        chunks
            .iter()
            .map(|chunk| {
                if chunk.is_zero() {
                    return Ok(None);
                }
                for offset in self
                    .candidate(chunk.sha256())
                    .into_iter()
                    .chain([chunk.image_offset()])
                {
                    if active.holds(chunk, offset, &mut buf)? {
                        return Ok(Some(Held::Active(offset)));
                    }
                }
                let in_place = target.holds(chunk, chunk.image_offset(), &mut buf)?;
                Ok(in_place.then_some(Held::InPlace))
            })
            .collect()
    }
}

/// The first 8 bytes of a hash, the seed's key.
fn key(sha256: Sha256Digest) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(sha256.0.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(bytes)
}

/// A slot and its size, asked once.
pub(crate) struct Slot<'a> {
    device: &'a dyn BlockDevice,
    size: u64,
}

impl<'a> Slot<'a> {
    pub(crate) fn new(device: &'a dyn BlockDevice) -> Result<Slot<'a>> {
        let size = device.size().map_err(Error::io("sizing a slot"))?;
        Ok(Slot { device, size })
    }

    /// Whether the slot holds `chunk`'s bytes at `offset` (into `buf`). Past the slot's end is
    /// not an error: the chunk is just not there.
    pub(crate) fn holds(&self, chunk: &Chunk, offset: u64, buf: &mut Vec<u8>) -> Result<bool> {
        if offset.saturating_add(u64::from(chunk.len())) > self.size {
            return Ok(false);
        }
        buf.resize(chunk.len() as usize, 0);
        self.device.read_at(buf, offset).map_err(Error::io(format!(
            "reading chunk {} from a slot",
            chunk.index()
        )))?;
        Ok(Sha256Digest(Sha256::digest(&buf[..]).into()) == chunk.sha256())
    }
}

/// In the seed, where a wanted chunk is until the scan finds it.
const NOT_FOUND: u64 = u64::MAX;

/// Sets each wanted key of `found` (those mapped to [`NOT_FOUND`]) to the offset of the first
/// chunk of `device` (cut by `chunking`) whose hash has that key.
fn scan(device: &dyn BlockDevice, chunking: Chunking, found: &mut [(u64, u64)]) -> Result<()> {
    let size = device.size().map_err(Error::io("sizing the active slot"))?;
    let reader = BufReader::with_capacity(4 << 20, DeviceCursor::new(device));
    let mut stream = chunking.split(reader, size);
    let mut chunk = Vec::new();
    let mut offset = 0u64;
    while stream
        .next_into(&mut chunk)
        .map_err(Error::io("reading the active slot"))?
    {
        let wanted = key(Sha256Digest(Sha256::digest(&chunk).into()));
        if let Ok(at) = found.binary_search_by_key(&wanted, |e| e.0) {
            if let Some(entry) = found.get_mut(at).filter(|e| e.1 == NOT_FOUND) {
                entry.1 = offset;
            }
        }
        offset += chunk.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use bundle::schema::StoredFrame;
    use partitions::io::MemDisk;

    const BLOCK: usize = 4096;

    fn block(byte: u8) -> Vec<u8> {
        (0..BLOCK).map(|i| byte ^ (i as u8)).collect()
    }

    fn chunk(index: u64, bytes: &[u8]) -> Chunk {
        let zero = bytes.iter().all(|&b| b == 0);
        let frame = (!zero).then_some(StoredFrame {
            offset: index * 100,
            length: 100,
        });
        let len = bytes.len() as u32;
        Chunk::new(
            index,
            index * BLOCK as u64,
            len,
            Sha256Digest::of(bytes),
            frame,
        )
        .unwrap()
    }

    #[test]
    fn chunks_are_found_moved_in_the_active_slot_or_in_place_in_the_target() {
        let (moved, in_place, missing, short) = (block(1), block(2), block(3), vec![9u8; 100]);
        let active = MemDisk::new(16 * BLOCK as u64);
        active.write_at(&moved, 5 * BLOCK as u64).unwrap();
        active.write_at(&short, 3 * BLOCK as u64).unwrap();
        let target = MemDisk::new(16 * BLOCK as u64);
        target.write_at(&in_place, BLOCK as u64).unwrap();
        let chunks = [
            chunk(0, &moved),
            chunk(1, &in_place),
            chunk(2, &missing),
            chunk(3, &short),
            chunk(4, &[0; BLOCK]),
        ];
        let seed = Seed::scan(chunks.iter().copied().map(Ok), Chunking::DEFAULT, &active).unwrap();
        let held = seed.held(&chunks, &active, &target).unwrap();
        assert_eq!(
            held,
            [
                Some(Held::Active(5 * BLOCK as u64)),
                Some(Held::InPlace),
                None,
                Some(Held::Active(3 * BLOCK as u64)),
                None,
            ]
        );
    }

    #[test]
    fn a_candidate_whose_key_matches_but_whose_hash_does_not_is_not_held() {
        let (wanted, other) = (block(4), block(5));
        let active = MemDisk::new(8 * BLOCK as u64);
        active.write_at(&other, 2 * BLOCK as u64).unwrap();
        let target = MemDisk::new(8 * BLOCK as u64);
        let chunks = [chunk(0, &wanted)];
        // As if `other`'s hash shared the first 8 bytes of `wanted`'s.
        let seed = Seed {
            found: vec![(key(chunks[0].sha256()), 2 * BLOCK as u64)],
        };
        assert_eq!(seed.held(&chunks, &active, &target).unwrap(), [None]);
        active.write_at(&wanted, 2 * BLOCK as u64).unwrap();
        assert_eq!(
            seed.held(&chunks, &active, &target).unwrap(),
            [Some(Held::Active(2 * BLOCK as u64))]
        );
    }
}
