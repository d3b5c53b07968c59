//! Chunks a node already holds (docs/DESIGN.md §8): a delta update fetches only what it cannot
//! find. The active slot is cut with the bundle's own chunking and every chunk hashed, so a
//! chunk is found wherever it moved; a chunk not there may already be in place in the target
//! slot, at its own offset (an interrupted or older install). Nothing found here is trusted:
//! the install pipeline hashes every copied chunk again as it reads it for writing.
//!
//! Nothing here grows in memory with the image: the scan of the slot and the image's wanted
//! chunks are each sorted by key on disk ([`crate::sorted_runs`]), merged, and where each
//! wanted chunk was found is sorted again by chunk index, to be read once, in order, as the
//! install walks the image.

use std::io::BufReader;
use std::path::Path;

use bundle::chunking::Chunking;
use bundle::{Chunk, Sha256Digest};
use partitions::io::{BlockDevice, DeviceCursor};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::sorted_runs::{Limits, Record, Run, RunReader, Sorted, Sorter};

/// Where a held chunk's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// In the active slot at this offset.
    Active(u64),
    /// Already in the target slot, at the chunk's own offset.
    InPlace,
}

/// Every non-zero chunk of a slot, cut by a bundle's chunking: the first 8 bytes of its hash
/// (its key) and the first offset where the slot holds it, one record a key, sorted by key, in
/// an unnamed file in the scratch directory (16 bytes a distinct chunk of the slot).
pub(crate) struct SlotScan {
    run: Run,
}

impl SlotScan {
    /// Reads `device` whole, cut by `chunking`, and hashes every chunk, each also handed to
    /// `observe` with its offset and length (one read of the slot serves the seed and a tree
    /// index's held groups, [`crate::held_groups`]).
    pub(crate) fn new(
        device: &dyn BlockDevice,
        chunking: Chunking,
        scratch: Option<&Path>,
        limits: Limits,
        mut observe: impl FnMut(u64, u32, Sha256Digest) -> Result<()>,
    ) -> Result<SlotScan> {
        let mut sorter = Sorter::new(SCAN, scratch, limits);
        scan_slot(device, chunking, |offset, chunk| {
            let sha256 = Sha256Digest(Sha256::digest(chunk).into());
            observe(offset, chunk.len() as u32, sha256)?;
            if chunk.iter().any(|&b| b != 0) {
                sorter.push((sha256.key(), offset))?;
            }
            Ok(())
        })?;
        SlotScan::keep_first(sorter, scratch)
    }

    /// The first record of each key of `scan`'s records, written in order.
    fn keep_first(scan: Sorter, scratch: Option<&Path>) -> Result<SlotScan> {
        let run = Run::write(SCAN, scratch, first_of_each_key(scan.sorted()?))?;
        Ok(SlotScan { run })
    }

    /// The scan's `(key, first offset)` records, by key.
    pub(crate) fn records(&self) -> Result<RunReader> {
        self.run.reader()
    }
}

/// The stored ones of `chunks` by key, `(key, chunk index)`; `None` when there are none.
fn wanted(
    chunks: impl Iterator<Item = Result<Chunk>>,
    scratch: Option<&Path>,
    limits: Limits,
) -> Result<Option<Sorter>> {
    let mut wanted = Sorter::new("the wanted chunks' keys", scratch, limits);
    let mut any = false;
    for chunk in chunks {
        let chunk = chunk?;
        if !chunk.is_zero() {
            wanted.push((chunk.sha256().key(), chunk.index()))?;
            any = true;
        }
    }
    Ok(any.then_some(wanted))
}

/// What the found chunks' sort holds, as its I/O errors name it.
const FOUND: &str = "the chunks found in the active slot";

/// What the scan's sort and file hold, as its I/O errors name it.
const SCAN: &str = "the active slot's chunk keys";

/// Of records sorted by key then value, the first of each key (the lowest value).
fn first_of_each_key(records: Sorted) -> impl Iterator<Item = Result<Record>> {
    let mut last = None;
    records.filter(move |record| match record {
        Ok((key, _)) => last.replace(*key) != Some(*key),
        Err(_) => true,
    })
}

/// Where the scan of the active slot found the image's stored chunks, read in chunk order as
/// the install walks the image: `(chunk index, offset)` for each chunk whose key it found (16
/// bytes a found chunk, on disk past a few MiB). A short key only finds a candidate:
/// [`Seed::held`] hashes the candidate's bytes whole before it plans to copy them.
pub(crate) struct Seed {
    found: Sorted,
    /// The next record of `found`.
    head: Option<Record>,
}

impl Seed {
    /// Scans `active`, cut by `chunking`, for the stored ones of `chunks` (all-zero chunks
    /// are never copied), its sorted runs in `scratch`.
    pub(crate) fn scan(
        chunks: impl Iterator<Item = Result<Chunk>>,
        chunking: Chunking,
        active: &dyn BlockDevice,
        scratch: Option<&Path>,
    ) -> Result<Seed> {
        Seed::scan_within(chunks, chunking, active, scratch, Limits::default())
    }

    /// The stored ones of `chunks` looked for in a scan already made of the active slot.
    pub(crate) fn of_scan(
        chunks: impl Iterator<Item = Result<Chunk>>,
        scan: &SlotScan,
        scratch: Option<&Path>,
    ) -> Result<Seed> {
        let limits = Limits::default();
        let found = Sorter::new(FOUND, scratch, limits);
        match wanted(chunks, scratch, limits)? {
            Some(wanted) => Seed::join(wanted.sorted()?, scan, found),
            None => Seed::new(found),
        }
    }

    fn scan_within(
        chunks: impl Iterator<Item = Result<Chunk>>,
        chunking: Chunking,
        active: &dyn BlockDevice,
        scratch: Option<&Path>,
        limits: Limits,
    ) -> Result<Seed> {
        let found = Sorter::new(FOUND, scratch, limits);
        let Some(wanted) = wanted(chunks, scratch, limits)? else {
            return Seed::new(found);
        };
        let scan = SlotScan::new(active, chunking, scratch, limits, |_, _, _| Ok(()))?;
        Seed::join(wanted.sorted()?, &scan, found)
    }

    /// Merges the wanted `(key, chunk index)` records, sorted, with the scan's: `found` gets
    /// `(chunk index, offset)` for each wanted chunk whose key the scan holds.
    fn join(
        wanted: impl Iterator<Item = Result<Record>>,
        scan: &SlotScan,
        mut found: Sorter,
    ) -> Result<Seed> {
        let mut scanned = scan.records()?;
        let mut head = scanned.next().transpose()?;
        for record in wanted {
            let (key, index) = record?;
            while head.is_some_and(|(k, _)| k < key) {
                head = scanned.next().transpose()?;
            }
            if let Some((_, offset)) = head.filter(|&(k, _)| k == key) {
                found.push((index, offset))?;
            }
        }
        Seed::new(found)
    }

    fn new(found: Sorter) -> Result<Seed> {
        let mut found = found.sorted()?;
        let head = found.next().transpose()?;
        Ok(Seed { found, head })
    }

    /// Where the scan found a chunk with the key of chunk `index`'s hash. Asked in rising
    /// order of index (the records are read once): a chunk asked for after a later one is
    /// not found here.
    fn candidate(&mut self, index: u64) -> Result<Option<u64>> {
        while self.head.is_some_and(|(i, _)| i < index) {
            self.head = self.found.next().transpose()?;
        }
        Ok(self.head.filter(|&(i, _)| i == index).map(|(_, at)| at))
    }

    /// For each of `chunks` (in chunk order, after those of the calls before): where the node
    /// holds it. A candidate of the scan is checked by its whole hash; a chunk not found there
    /// may be at its own offset in the active slot (a shorter one, which the scan does not
    /// cut) or already in place in `target`.
    pub(crate) fn held(
        &mut self,
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
                let candidate = self.candidate(chunk.index())?;
                for offset in candidate.into_iter().chain([chunk.image_offset()]) {
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

/// Cuts `device` with `chunking` from its start and hands each chunk to `each` with its offset.
fn scan_slot(
    device: &dyn BlockDevice,
    chunking: Chunking,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
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
        each(offset, &chunk)?;
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
    use proptest::prelude::*;
    use std::collections::BTreeMap;

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

    /// The seed of `chunks` in `active`, its runs in a fresh scratch directory.
    fn seed(chunks: &[Chunk], active: &MemDisk, limits: Limits) -> Seed {
        let scratch = tempfile::tempdir().unwrap();
        let chunks = chunks.iter().copied().map(Ok);
        let seed = Seed::scan_within(
            chunks,
            Chunking::DEFAULT,
            active,
            Some(scratch.path()),
            limits,
        )
        .unwrap();
        // Every run is an unnamed file: the directory is left empty.
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
        seed
    }

    /// Runs of one record, merged two at a time.
    const TINY: Limits = Limits {
        run_records: 1,
        fan_in: 2,
    };

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
        let expected = [
            Some(Held::Active(5 * BLOCK as u64)),
            Some(Held::InPlace),
            None,
            Some(Held::Active(3 * BLOCK as u64)),
            None,
        ];
        for limits in [Limits::default(), TINY] {
            let mut seed = seed(&chunks, &active, limits);
            assert_eq!(seed.held(&chunks, &active, &target).unwrap(), expected);
        }
    }

    #[test]
    fn chunks_sharing_a_hash_are_all_found_at_the_first_offset_holding_it() {
        let (twice, once) = (block(6), block(7));
        let active = MemDisk::new(32 * BLOCK as u64);
        for at in [9, 4, 20] {
            active.write_at(&twice, at * BLOCK as u64).unwrap();
        }
        active.write_at(&once, 2 * BLOCK as u64).unwrap();
        let target = MemDisk::new(32 * BLOCK as u64);
        let chunks = [
            chunk(0, &twice),
            chunk(1, &once),
            chunk(2, &twice),
            chunk(3, &twice),
        ];
        for limits in [Limits::default(), TINY] {
            let mut seed = seed(&chunks, &active, limits);
            assert_eq!(
                seed.held(&chunks, &active, &target).unwrap(),
                [
                    Some(Held::Active(4 * BLOCK as u64)),
                    Some(Held::Active(2 * BLOCK as u64)),
                    Some(Held::Active(4 * BLOCK as u64)),
                    Some(Held::Active(4 * BLOCK as u64)),
                ]
            );
        }
    }

    #[test]
    fn the_scan_keeps_the_first_offset_of_each_nonzero_chunk_sorted_by_key() {
        let (a, b) = (block(10), block(11));
        let active = MemDisk::new(8 * BLOCK as u64);
        for (bytes, at) in [(&b, 6), (&a, 5), (&b, 1), (&a, 3)] {
            active.write_at(bytes, at * BLOCK as u64).unwrap();
        }
        let scratch = tempfile::tempdir().unwrap();
        let scan = SlotScan::new(
            &active,
            Chunking::DEFAULT,
            Some(scratch.path()),
            TINY,
            |_, _, _| Ok(()),
        )
        .unwrap();
        let records = scan.records().unwrap().collect::<Result<Vec<_>>>().unwrap();
        let mut expected = vec![
            (Sha256Digest::of(&a).key(), 3 * BLOCK as u64),
            (Sha256Digest::of(&b).key(), BLOCK as u64),
        ];
        expected.sort_unstable();
        assert_eq!(records, expected);
    }

    #[test]
    fn segments_asked_in_turn_find_what_one_call_finds() {
        // Chunk i is block i of the image; the active slot holds them shifted by 3 blocks,
        // every third missing.
        let blocks: Vec<Vec<u8>> = (0..60u8).map(|i| block(i.wrapping_mul(3) + 1)).collect();
        let active = MemDisk::new(64 * BLOCK as u64);
        for (i, bytes) in blocks.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
            active
                .write_at(bytes, (i as u64 + 3) * BLOCK as u64)
                .unwrap();
        }
        let target = MemDisk::new(64 * BLOCK as u64);
        let chunks: Vec<Chunk> = (0..).zip(&blocks).map(|(i, b)| chunk(i, b)).collect();
        let whole = seed(&chunks, &active, Limits::default())
            .held(&chunks, &active, &target)
            .unwrap();
        let mut tiny = seed(&chunks, &active, TINY);
        let in_turn: Vec<_> = chunks
            .chunks(7)
            .flat_map(|segment| tiny.held(segment, &active, &target).unwrap())
            .collect();
        assert_eq!(in_turn, whole);
        let found = whole.iter().filter(|h| h.is_some()).count();
        assert_eq!(found, 40);
        assert_eq!(whole[1], Some(Held::Active(4 * BLOCK as u64)));
    }

    #[test]
    fn a_candidate_whose_key_matches_but_whose_hash_does_not_is_not_held() {
        let (wanted, other) = (block(4), block(5));
        let active = MemDisk::new(8 * BLOCK as u64);
        active.write_at(&other, 2 * BLOCK as u64).unwrap();
        let target = MemDisk::new(8 * BLOCK as u64);
        let chunks = [chunk(0, &wanted)];
        // As if `other`'s hash shared the first 8 bytes of `wanted`'s.
        let key = chunks[0].sha256().key();
        let seeded = || {
            let scan = SlotScan {
                run: Run::write("a scan", None, [Ok((key, 2 * BLOCK as u64))].into_iter()).unwrap(),
            };
            let found = Sorter::new("found", None, Limits::default());
            Seed::join([Ok((key, 0))].into_iter(), &scan, found).unwrap()
        };
        assert_eq!(seeded().held(&chunks, &active, &target).unwrap(), [None]);
        active.write_at(&wanted, 2 * BLOCK as u64).unwrap();
        assert_eq!(
            seeded().held(&chunks, &active, &target).unwrap(),
            [Some(Held::Active(2 * BLOCK as u64))]
        );
    }

    proptest! {
        #[test]
        fn the_join_finds_each_wanted_chunk_at_the_first_offset_of_its_key(
            scanned in proptest::collection::vec((0u64..24, 0u64..1000), 0..60),
            wanted in proptest::collection::vec(0u64..24, 0..60),
        ) {
            let scratch = tempfile::tempdir().unwrap();
            let dir = Some(scratch.path());
            let mut scan = Sorter::new(SCAN, dir, TINY);
            let mut first = BTreeMap::new();
            for &(key, offset) in &scanned {
                scan.push((key, offset)).unwrap();
                first.entry(key).and_modify(|o: &mut u64| *o = (*o).min(offset)).or_insert(offset);
            }
            let scan = SlotScan::keep_first(scan, dir).unwrap();
            let mut keys = Sorter::new("wanted", dir, TINY);
            for (index, &key) in (0..).zip(&wanted) {
                keys.push((key, index)).unwrap();
            }
            let found = Sorter::new("found", dir, TINY);
            let mut seed = Seed::join(keys.sorted().unwrap(), &scan, found).unwrap();
            for (index, key) in (0..).zip(&wanted) {
                prop_assert_eq!(seed.candidate(index).unwrap(), first.get(key).copied());
            }
        }
    }
}
