//! Chunks a node already holds (docs/DESIGN.md §8): a delta update fetches only what it cannot
//! find. The active slot is cut with the bundle's own chunking and every chunk hashed, so a
//! chunk is found wherever it moved; a chunk not there may already be in place in the target
//! slot, at its own offset (an interrupted or older install). Nothing found here is trusted:
//! the install pipeline hashes every copied chunk again as it reads it for writing.

use std::collections::HashMap;
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

/// For each of `chunks` (stored ones only; all-zero chunks are never copied): where the node
/// holds it. Memory: one map entry per distinct stored chunk (its hash and where it was
/// found, about 80 bytes with the table's slack), whatever the slots' size.
pub(crate) fn find_held(
    chunks: &[Chunk],
    chunking: Chunking,
    active: &dyn BlockDevice,
    target: &dyn BlockDevice,
) -> Result<Vec<Option<Held>>> {
    // Sized once from the count: a table grown by doubling holds its old and new arrays at
    // once (1.5 times the final size).
    let stored = chunks.iter().filter(|c| !c.is_zero());
    let mut found: HashMap<Sha256Digest, u64> = HashMap::with_capacity(stored.clone().count());
    found.extend(stored.map(|c| (c.sha256(), NOT_FOUND)));
    if found.is_empty() {
        return Ok(vec![None; chunks.len()]);
    }
    scan(active, chunking, &mut found)?;
    let active = Slot::new(active)?;
    let target = Slot::new(target)?;
    let mut buf = Vec::new();
    chunks
        .iter()
        .map(|chunk| {
            if chunk.is_zero() {
                return Ok(None);
            }
            if let Some(&offset) = found.get(&chunk.sha256()).filter(|&&o| o != NOT_FOUND) {
                return Ok(Some(Held::Active(offset)));
            }
            // The scan cuts whole chunks of the slot: a shorter one (the image's last, or one
            // cut at the image's end) can still be at its own offset.
            if active.holds(chunk, chunk.image_offset(), &mut buf)? {
                return Ok(Some(Held::Active(chunk.image_offset())));
            }
            let in_place = target.holds(chunk, chunk.image_offset(), &mut buf)?;
            Ok(in_place.then_some(Held::InPlace))
        })
        .collect()
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

/// In `found`, what a wanted hash maps to until the scan finds it.
const NOT_FOUND: u64 = u64::MAX;

/// Sets each wanted hash of `found` (those mapped to [`NOT_FOUND`]) to the offset of the first
/// chunk of `device` (cut by `chunking`) with that hash.
fn scan(
    device: &dyn BlockDevice,
    chunking: Chunking,
    found: &mut HashMap<Sha256Digest, u64>,
) -> Result<()> {
    let size = device.size().map_err(Error::io("sizing the active slot"))?;
    let reader = BufReader::with_capacity(4 << 20, DeviceCursor::new(device));
    let mut stream = chunking.split(reader, size);
    let mut chunk = Vec::new();
    let mut offset = 0u64;
    while stream
        .next_into(&mut chunk)
        .map_err(Error::io("reading the active slot"))?
    {
        let sha256 = Sha256Digest(Sha256::digest(&chunk).into());
        if let Some(at) = found.get_mut(&sha256).filter(|at| **at == NOT_FOUND) {
            *at = offset;
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
        let held = find_held(&chunks, Chunking::DEFAULT, &active, &target).unwrap();
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
}
