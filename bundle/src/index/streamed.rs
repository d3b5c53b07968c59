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
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::chunk::{Chunk, StreamedIndex};
use super::record::{decode_stream, RecordForm, Records, FRAME_HEADER_MAX};
use super::stored::{hash_mismatch, Tiler};
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
    pub fn spill(index: &StreamedIndex, stored: impl Read, file: File) -> Result<IndexFile, Error> {
        let size = index.range.end - index.range.start;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; COPY_STEP];
        let mut copied = 0u64;
        let mut stored = stored.take(size);
        loop {
            let n = stored
                .read(&mut buf)
                .map_err(Error::io("reading the chunk index"))?;
            let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
                break;
            };
            hasher.update(bytes);
            file.write_all_at(bytes, copied)
                .map_err(Error::io("spilling the chunk index"))?;
            copied += n as u64;
        }
        if copied != size {
            return Err(FormatError::Truncated {
                expected: index.range.end,
                actual: index.range.start + copied,
            }
            .into());
        }
        let actual = Sha256Digest(hasher.finalize().into());
        if actual != index.sha256 {
            return Err(hash_mismatch("index", actual, index.sha256).into());
        }
        let proven = IndexFile {
            file,
            index: index.clone(),
        };
        for chunk in proven.chunks()? {
            chunk?;
        }
        Ok(proven)
    }

    /// The image's chunks, in order, decoded from the proven copy as they are taken; the
    /// last item after the last chunk is an error if the records broke a rule (which
    /// [`IndexFile::spill`] already ruled out).
    pub fn chunks(&self) -> Result<ChunkStream<'_>, Error> {
        let mut first = [0u8; FRAME_HEADER_MAX];
        let size = self.index.range.end - self.index.range.start;
        let head = first
            .get_mut(..usize::try_from(size).map_or(FRAME_HEADER_MAX, |n| n.min(FRAME_HEADER_MAX)))
            .unwrap_or_default();
        self.file
            .read_exact_at(head, 0)
            .map_err(Error::io("reading the spilled chunk index"))?;
        let reader = BufReader::with_capacity(
            COPY_STEP,
            FileAt {
                file: &self.file,
                at: 0,
            },
        );
        let form = RecordForm::with_store(self.index.store_size.is_some());
        let records = decode_stream(head, reader, self.index.count, form)?;
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
    records: Records<BufReader<FileAt<'a>>>,
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

    fn file_chunks(file: &IndexFile) -> usize {
        file.chunks().unwrap().map(Result::unwrap).count()
    }
}
