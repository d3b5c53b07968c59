//! The chunk index of an image too large to hold its chunk list in memory (FORMAT §3.2, §8.3),
//! read in a stream instead of with the bundle's head: a node's memory then stays flat
//! whatever the image size.
//!
//! Two passes over a private copy on disk. [`IndexFile::spill`] copies the stored index from
//! the bundle into a file while hashing it, refuses it unless exactly the signed number of
//! bytes hash to the signed digest, then decodes it whole once, checking every record rule
//! and keeping nothing, before any chunk is handed out. [`IndexFile::chunks`] then decodes the
//! proven copy again, record by record, as the caller advances: nothing is taken from index
//! bytes whose hash was not proven first, and memory is one decoder's window and one record.

use std::fs::File;
use std::io::{BufReader, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use super::chunk::{Chunk, StreamedIndex};
use super::record::{decode_stream, Record, RecordForm, Records, FRAME_HEADER_MAX};
use super::stored::{hash_mismatch, Tiler};
use super::tree::{Tree, TreeRecords, HASH_LEN};
use crate::digest::Sha256Digest;
use crate::error::{Error, FormatError, Section};

/// A stored index copied to a file and proven: its hash is the signed one and its records
/// keep every rule. Only [`IndexFile::spill`] makes one.
#[derive(Debug)]
pub struct IndexFile {
    file: File,
    index: StreamedIndex,
}

/// Bytes copied at a time while spilling.
const COPY_STEP: usize = 256 << 10;

impl IndexFile {
    /// Copies the stored index `index` names from `stored` (its bytes from the bundle) into
    /// `file` (empty, and reachable by this process alone: an unnamed temporary file),
    /// hashing as it goes; refused unless exactly the signed length hashes to the signed
    /// digest, then unless every record keeps the rules of FORMAT §3.2, checked in one
    /// decoding pass that keeps nothing.
    ///
    /// A tree index's signed hash covers its lengths and table; its column is proven by the
    /// table in the same decoding pass (FORMAT §3.2.1).
    pub fn spill(index: &StreamedIndex, stored: impl Read, file: File) -> Result<IndexFile, Error> {
        let size = index.range.end - index.range.start;
        let signed = index.tree.map_or(size, |tree| tree.head_len());
        copy_proven(index, stored, &file, 0..size, signed)?;
        IndexFile {
            file,
            index: index.clone(),
        }
        .prove()
    }

    /// Copies a tree index's lengths and table from `head` (the bundle's bytes in
    /// [`StreamedIndex::head_range`]) into `file` (empty, and reachable by this process
    /// alone), refused unless they hash as signed: the column of hashes is then filled in by
    /// the caller from its own slot ([`TreeHead::fill`]) and from the bundle
    /// ([`TreeHead::complete`]).
    pub fn spill_head(
        index: &StreamedIndex,
        head: impl Read,
        file: File,
    ) -> Result<TreeHead, Error> {
        let Some(tree) = index.tree else {
            return Err(Error::Bug(
                "a head spilled from an index that is not a tree",
            ));
        };
        copy_proven(index, head, &file, 0..tree.head_len(), tree.head_len())?;
        let groups = usize::try_from(index.count.div_ceil(u64::from(tree.group)))
            .map_err(|_| Error::Bug("more groups than memory"))?;
        Ok(TreeHead {
            file,
            index: index.clone(),
            tree,
            filled: (0..groups).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// Decodes the whole copy once, checking every rule, keeping nothing.
    fn prove(self) -> Result<IndexFile, Error> {
        for chunk in self.chunks()? {
            chunk?;
        }
        Ok(self)
    }

    /// The image's chunks, in order, decoded from the proven copy as they are taken; the
    /// last item after the last chunk is an error if the records broke a rule (which
    /// [`IndexFile::spill`] already ruled out).
    pub fn chunks(&self) -> Result<ChunkStream<'_>, Error> {
        let size = self.index.range.end - self.index.range.start;
        let (file, count) = (&self.file, self.index.count);
        let store = self.index.store_size.is_some();
        let records: Box<dyn Iterator<Item = Result<Record, FormatError>> + Send + '_> =
            match self.index.tree {
                None => Box::new(records_at(
                    file,
                    size,
                    count,
                    RecordForm::with_store(store),
                )?),
                Some(tree) => {
                    let lengths =
                        records_at(file, tree.lengths, count, RecordForm::lengths(store))?;
                    let table = region(file, tree.lengths, tree.table);
                    let column = region(file, tree.head_len(), size - tree.head_len());
                    Box::new(TreeRecords::new(lengths, column, table, tree.group))
                }
            };
        Ok(ChunkStream {
            records,
            tiler: Some(
                Tiler::new(
                    self.index.count,
                    self.index.chunking,
                    0,
                    self.index.max_frame_raw,
                )
                .with_store(self.index.store_size),
            ),
            index: &self.index,
        })
    }
}

/// Copies the index bytes `range` (relative to the index's start) from `stored` into `file`
/// at the same offsets; refused unless exactly the range's bytes came, and unless the first
/// `signed` bytes of the index (all within the range) hash to the signed digest.
fn copy_proven(
    index: &StreamedIndex,
    stored: impl Read,
    file: &File,
    range: Range<u64>,
    signed: u64,
) -> Result<(), Error> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_STEP];
    let mut at = range.start;
    let mut stored = stored.take(range.end - range.start);
    loop {
        let n = stored
            .read(&mut buf)
            .map_err(Error::io("reading the chunk index"))?;
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            break;
        };
        let hashed = usize::try_from(signed.saturating_sub(at)).map_or(n, |h| h.min(n));
        hasher.update(bytes.get(..hashed).unwrap_or_default());
        file.write_all_at(bytes, at)
            .map_err(Error::io("spilling the chunk index"))?;
        at += n as u64;
    }
    if at != range.end {
        return Err(FormatError::Truncated {
            expected: index.range.start + range.end,
            actual: index.range.start + at,
        }
        .into());
    }
    if range.start == 0 {
        let actual = Sha256Digest(hasher.finalize().into());
        if actual != index.sha256 {
            return Err(hash_mismatch("index", actual, index.sha256).into());
        }
    }
    Ok(())
}

/// A tree index whose lengths and table are copied and proven, its column of hashes still to
/// fill (FORMAT §3.2.1): a node fills the groups it holds from its own slot and fetches the
/// rest. Only [`IndexFile::spill_head`] makes one.
#[derive(Debug)]
pub struct TreeHead {
    file: File,
    index: StreamedIndex,
    tree: Tree,
    /// Which groups' hashes are in the file.
    filled: Vec<AtomicBool>,
}

/// One group of a tree index as its lengths and table tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeGroup {
    /// Its number, from 0.
    pub number: u64,
    /// Where its first chunk starts in the image.
    pub image_offset: u64,
    /// Its chunks' raw lengths, and whether each is stored (not all zeros).
    pub chunks: Vec<(u32, bool)>,
    /// The SHA-256 of its stored chunks' hashes, when it has one.
    pub entry: Option<Sha256Digest>,
    /// Where its hashes are in the column, from the column's start.
    pub column: Range<u64>,
}

impl TreeGroup {
    /// Where the group's last chunk ends in the image.
    pub fn end(&self) -> u64 {
        self.image_offset + self.chunks.iter().map(|c| u64::from(c.0)).sum::<u64>()
    }
}

/// Column bytes between two groups to fetch that are read through rather than asked for in a
/// request of their own (a request's headers cost about as much).
const READ_THROUGH: u64 = 512;

impl TreeHead {
    /// The groups in order, decoded from the proven copy.
    pub fn groups(&self) -> Result<TreeGroups<'_>, Error> {
        let (file, lengths) = (&self.file, self.tree.lengths);
        let form = RecordForm::lengths(self.index.store_size.is_some());
        Ok(TreeGroups {
            lengths: records_at(file, lengths, self.index.count, form)?,
            table: region(file, lengths, self.tree.table),
            group: self.tree.group,
            number: 0,
            image_offset: 0,
            column: 0,
        })
    }

    /// Puts `hashes`, found by the caller for `group` (in its slot, at the group's offset,
    /// hashing to its entry), in the column. A wrong one is caught when the index is proven.
    pub fn fill(&self, group: &TreeGroup, hashes: &[Sha256Digest]) -> Result<(), Error> {
        let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
        if bytes.len() as u64 != group.column.end - group.column.start {
            return Err(Error::Bug("a group filled with another number of hashes"));
        }
        self.file
            .write_all_at(&bytes, self.tree.head_len() + group.column.start)
            .map_err(Error::io("spilling the chunk index"))?;
        if let Some(filled) = usize::try_from(group.number)
            .ok()
            .and_then(|n| self.filled.get(n))
        {
            filled.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The column's byte ranges still to fetch (relative to the index's start), small gaps
    /// read through.
    pub fn missing(&self) -> Result<Vec<Range<u64>>, Error> {
        let base = self.tree.head_len();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for group in self.groups()? {
            let group = group?;
            let filled = usize::try_from(group.number)
                .ok()
                .and_then(|n| self.filled.get(n))
                .is_some_and(|f| f.load(Ordering::Relaxed));
            if filled || group.column.is_empty() {
                continue;
            }
            let range = base + group.column.start..base + group.column.end;
            match ranges.last_mut() {
                Some(last) if range.start - last.end <= READ_THROUGH => last.end = range.end,
                _ => ranges.push(range),
            }
        }
        Ok(ranges)
    }

    /// Fetches the column's missing bytes with `fetch` (given a range of the bundle file),
    /// then proves the whole index as [`IndexFile::spill`] does.
    pub fn complete<R: Read>(
        self,
        mut fetch: impl FnMut(Range<u64>) -> std::io::Result<R>,
    ) -> Result<IndexFile, Error> {
        let start = self.index.range.start;
        for range in self.missing()? {
            let stored = fetch(start + range.start..start + range.end)
                .map_err(Error::io("reading the chunk index"))?;
            copy_proven(&self.index, stored, &self.file, range, 0)?;
        }
        IndexFile {
            file: self.file,
            index: self.index,
        }
        .prove()
    }
}

/// The groups of a [`TreeHead`], decoded as they are taken.
pub struct TreeGroups<'a> {
    lengths: Records<Region<'a>>,
    table: Region<'a>,
    group: u32,
    number: u64,
    image_offset: u64,
    column: u64,
}

impl TreeGroups<'_> {
    fn next_group(&mut self) -> Result<Option<TreeGroup>, Error> {
        let mut chunks = Vec::new();
        for record in self.lengths.by_ref().take(self.group as usize) {
            let record = record?;
            chunks.push((record.raw_len, record.frame_len != 0));
        }
        if chunks.is_empty() {
            return Ok(None);
        }
        let stored = chunks.iter().filter(|c| c.1).count() as u64;
        let entry = if stored > 0 {
            let mut hash = [0u8; 32];
            self.table.read_exact(&mut hash).map_err(|e| {
                FormatError::field(
                    Section::Index,
                    format!("group {}", self.number),
                    format!("the table has no entry for it: {e}"),
                )
            })?;
            Some(Sha256Digest(hash))
        } else {
            None
        };
        let group = TreeGroup {
            number: self.number,
            image_offset: self.image_offset,
            chunks,
            entry,
            column: self.column..self.column + stored * HASH_LEN,
        };
        self.number += 1;
        self.image_offset = group.end();
        self.column = group.column.end;
        Ok(Some(group))
    }
}

impl Iterator for TreeGroups<'_> {
    type Item = Result<TreeGroup, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_group().transpose()
    }
}

/// `len` bytes of a spilled index from byte `at`, buffered.
fn region(file: &File, at: u64, len: u64) -> Region<'_> {
    BufReader::with_capacity(COPY_STEP, FileAt { file, at }.take(len))
}

/// A part of a spilled index, read from its own position.
type Region<'a> = BufReader<std::io::Take<FileAt<'a>>>;

/// The `count` records of the zstd frame of `len` bytes that starts a spilled index, in
/// `form`: its first bytes are checked before any record ([`decode_stream`]).
fn records_at(
    file: &File,
    len: u64,
    count: u64,
    form: RecordForm,
) -> Result<Records<Region<'_>>, Error> {
    let mut first = [0u8; FRAME_HEADER_MAX];
    let head = first
        .get_mut(..usize::try_from(len).map_or(FRAME_HEADER_MAX, |n| n.min(FRAME_HEADER_MAX)))
        .unwrap_or_default();
    file.read_exact_at(head, 0)
        .map_err(Error::io("reading the spilled chunk index"))?;
    Ok(decode_stream(head, region(file, 0, len), count, form)?)
}

/// A file read from a position of its own (the descriptor's offset is never used).
struct FileAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The image's chunks from a proven [`IndexFile`], decoded one record at a time.
pub struct ChunkStream<'a> {
    records: Box<dyn Iterator<Item = Result<Record, FormatError>> + Send + 'a>,
    /// `None` once the end was checked.
    tiler: Option<Tiler>,
    index: &'a StreamedIndex,
}

impl ChunkStream<'_> {
    /// After the last record: the tiling and the frames' end.
    fn finish(&mut self) -> Option<Result<Chunk, FormatError>> {
        let end = self.tiler.take()?.finish(self.index.image_size);
        match end {
            Ok(end) if end == self.index.frames_end => None,
            Ok(end) => Some(Err(FormatError::field(
                Section::Manifest,
                "payload_size",
                format!(
                    "the image's frames end at payload byte {end}, the boot assets' start at {}",
                    self.index.frames_end
                ),
            ))),
            Err(e) => Some(Err(e)),
        }
    }
}

impl Iterator for ChunkStream<'_> {
    type Item = Result<Chunk, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        let tiler = self.tiler.as_mut()?;
        match self.records.next() {
            Some(Ok(record)) => {
                let chunk = tiler.push(record);
                if chunk.is_err() {
                    self.tiler = None;
                }
                Some(chunk)
            }
            Some(Err(e)) => {
                self.tiler = None;
                Some(Err(e))
            }
            None => self.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::chunking::Chunking;
    use crate::index::record::{encode, Record, CONTINUED};
    use crate::index::stored::indexed_chunks;
    use crate::index::stored::Tiler;
    use proptest::prelude::*;

    const BLOCK: u32 = 4096;

    /// Records of `kinds` (0: zeros, 1: a new frame, 2: continued where it may be).
    fn records(kinds: &[u8]) -> Vec<Record> {
        let mut stored_before = false;
        kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| {
                let frame_len = match kind {
                    0 => 0,
                    2 if stored_before => CONTINUED,
                    _ => 100 + i as u32,
                };
                stored_before = frame_len != 0;
                let sha256 = match frame_len {
                    0 => Sha256Digest::of_zeros(u64::from(BLOCK)),
                    _ => Sha256Digest::of(&(i as u64).to_le_bytes()),
                };
                Record {
                    sha256,
                    raw_len: BLOCK,
                    frame_len,
                    store_len: 0,
                }
            })
            .collect()
    }

    fn index_of(stored: &[u8], records: &[Record], frames_end: u64) -> StreamedIndex {
        StreamedIndex {
            range: 1000..1000 + stored.len() as u64,
            count: records.len() as u64,
            sha256: Sha256Digest::of(stored),
            image_size: records.len() as u64 * u64::from(BLOCK),
            chunking: Chunking::fixed(BLOCK),
            frames_end,
            max_frame_raw: 1 << 20,
            store_size: None,
            tree: None,
        }
    }

    fn spill(index: &StreamedIndex, stored: &[u8]) -> Result<IndexFile, Error> {
        IndexFile::spill(index, stored, tempfile::tempfile().unwrap())
    }

    proptest! {
        #[test]
        fn a_streamed_index_yields_the_chunks_the_whole_one_does(
            kinds in proptest::collection::vec(0u8..3, 0..300)
        ) {
            let records = records(&kinds);
            let stored = encode(&records, RecordForm::Plain).unwrap();
            let count = records.len() as u64;
            let mut tiler = Tiler::new(count, Chunking::fixed(BLOCK), 0, 1 << 20);
            let whole = indexed_chunks(records.iter().copied().map(Ok), &mut tiler, count).unwrap();
            let frames_end = tiler.finish(count * u64::from(BLOCK)).unwrap();
            let file = spill(&index_of(&stored, &records, frames_end), &stored).unwrap();
            let streamed: Vec<Chunk> = file.chunks().unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(streamed, whole);
        }
    }

    #[test]
    fn a_spilled_index_is_refused_unless_it_hashes_and_tiles_as_signed() {
        let records = records(&[1, 2, 0, 1, 2, 2]);
        let stored = encode(&records, RecordForm::Plain).unwrap();
        let frames_end = 100 + 103;
        let index = index_of(&stored, &records, frames_end);
        assert_eq!(file_chunks(&spill(&index, &stored).unwrap()), 6);

        let mut flipped = stored.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let error = spill(&index, &flipped).unwrap_err().to_string();
        assert!(error.contains("index") && error.contains("hash"), "{error}");

        let error = spill(&index, &stored[..stored.len() - 1]).unwrap_err();
        assert!(
            matches!(error, Error::Format(FormatError::Truncated { .. })),
            "{error}"
        );

        // Signed, but its frames end elsewhere than where the assets' start.
        let elsewhere = StreamedIndex {
            frames_end: frames_end + 1,
            ..index.clone()
        };
        let error = spill(&elsewhere, &stored).unwrap_err().to_string();
        assert!(error.contains("payload_size"), "{error}");

        // Signed, but covering another image size: refused before a chunk is handed out.
        let shorter = StreamedIndex {
            image_size: index.image_size - 1,
            ..index.clone()
        };
        let error = spill(&shorter, &stored).unwrap_err().to_string();
        assert!(error.contains("the chunks cover"), "{error}");

        // More than one frame, or bytes after the frame.
        let mut two = stored.clone();
        two.extend_from_slice(&stored);
        let two_index = StreamedIndex {
            range: 0..two.len() as u64,
            sha256: Sha256Digest::of(&two),
            ..index
        };
        let error = spill(&two_index, &two).unwrap_err().to_string();
        assert!(error.contains("after its zstd frame"), "{error}");
    }

    /// `records` written as a tree index in groups of 8, and what a manifest signs of it.
    fn tree_of(records: &[Record], frames_end: u64) -> (Vec<u8>, StreamedIndex) {
        let files = crate::index::TreeFiles {
            lengths: tempfile::tempfile().unwrap(),
            column: tempfile::tempfile().unwrap(),
            table: tempfile::tempfile().unwrap(),
        };
        let mut writer = crate::index::TreeWriter::new(8, false, files).unwrap();
        for r in records {
            writer.push(r).unwrap();
        }
        let mut stored = Vec::new();
        let summary = writer.finish_into(&mut stored).unwrap();
        let index = StreamedIndex {
            range: 1000..1000 + stored.len() as u64,
            sha256: summary.sha256,
            tree: Some(summary.tree),
            ..index_of(&stored, records, frames_end)
        };
        (stored, index)
    }

    /// The bytes of `stored` (the index, from byte 1000 of a bundle) in `range` of the bundle.
    fn bundle_range(stored: &[u8], range: Range<u64>) -> std::io::Result<&[u8]> {
        Ok(&stored[range.start as usize - 1000..range.end as usize - 1000])
    }

    proptest! {
        #[test]
        fn a_tree_index_yields_the_chunks_a_whole_one_does_spilled_or_filled(
            kinds in proptest::collection::vec(0u8..3, 0..300),
            held in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let records = records(&kinds);
            let count = records.len() as u64;
            let mut tiler = Tiler::new(count, Chunking::fixed(BLOCK), 0, 1 << 20);
            let whole = indexed_chunks(records.iter().copied().map(Ok), &mut tiler, count).unwrap();
            let frames_end = tiler.finish(count * u64::from(BLOCK)).unwrap();
            let (stored, index) = tree_of(&records, frames_end);
            let file = spill(&index, &stored).unwrap();
            let streamed: Vec<Chunk> = file.chunks().unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(&streamed, &whole);

            // A node holding some groups fills them and fetches only the others' hashes.
            let head = bundle_range(&stored, index.head_range()).unwrap();
            let tree = IndexFile::spill_head(&index, head, tempfile::tempfile().unwrap()).unwrap();
            let groups: Vec<TreeGroup> = tree.groups().unwrap().map(Result::unwrap).collect();
            for group in groups.iter().filter(|g| held[g.number as usize % 40]) {
                let first = group.number as usize * 8;
                let hashes: Vec<Sha256Digest> = records[first..first + group.chunks.len()]
                    .iter().filter(|r| r.frame_len != 0).map(|r| r.sha256).collect();
                tree.fill(group, &hashes).unwrap();
            }
            let mut fetched = 0;
            let filled = tree.complete(|range| {
                fetched += range.end - range.start;
                bundle_range(&stored, range)
            }).unwrap();
            let column = index.range.end - index.head_range().end;
            let held_column: u64 = groups.iter().filter(|g| held[g.number as usize % 40])
                .map(|g| g.column.end - g.column.start).sum();
            prop_assert!(fetched <= column - held_column + READ_THROUGH * groups.len() as u64);
            let streamed: Vec<Chunk> = filled.chunks().unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(streamed, whole);
        }
    }

    #[test]
    fn a_tree_index_is_refused_when_its_head_or_a_filled_or_fetched_group_is_wrong() {
        let kinds: Vec<u8> = (0..64).map(|i| [1, 2, 2, 0][i % 4]).collect();
        let records = records(&kinds);
        let frames_end = 16 * 100 + (0..16).map(|g| g * 4).sum::<u64>();
        let (stored, index) = tree_of(&records, frames_end);
        assert_eq!(file_chunks(&spill(&index, &stored).unwrap()), 64);

        let head_end = (index.head_range().end - 1000) as usize;
        let mut flipped = stored.clone();
        flipped[head_end - 1] ^= 1; // the table's last byte
        let error = spill(&index, &flipped).unwrap_err().to_string();
        assert!(error.contains("index") && error.contains("hash"), "{error}");
        let error =
            IndexFile::spill_head(&index, &flipped[..head_end], tempfile::tempfile().unwrap())
                .unwrap_err()
                .to_string();
        assert!(error.contains("hash"), "{error}");

        // A hash flipped in the column: the group it is in is refused, fetched or filled.
        flipped = stored.clone();
        flipped[head_end + 32 * 6] ^= 1; // group 1's first hash (6 stored chunks a group)
        let error = spill(&index, &flipped).unwrap_err().to_string();
        assert!(error.contains("group 1"), "{error}");
        let tree =
            IndexFile::spill_head(&index, &stored[..head_end], tempfile::tempfile().unwrap())
                .unwrap();
        // Every group filled (nothing read through), group 2 with wrong hashes.
        let groups: Vec<TreeGroup> = tree.groups().unwrap().map(Result::unwrap).collect();
        for group in &groups {
            let first = group.number as usize * 8;
            let mut hashes: Vec<Sha256Digest> = records[first..first + 8]
                .iter()
                .filter(|r| r.frame_len != 0)
                .map(|r| r.sha256)
                .collect();
            if group.number == 2 {
                hashes[0] = Sha256Digest([7; 32]);
            }
            tree.fill(group, &hashes).unwrap();
        }
        let error = tree
            .complete(|range| bundle_range(&stored, range))
            .unwrap_err()
            .to_string();
        assert!(error.contains("group 2"), "{error}");
    }

    fn file_chunks(file: &IndexFile) -> usize {
        file.chunks().unwrap().map(Result::unwrap).count()
    }
}
