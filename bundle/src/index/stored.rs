//! The image's chunks of a format version 3 bundle (FORMAT §3.2): the dictionary and stored
//! index read after the payload, checked against the sizes and hashes the signed manifest
//! names, and the index's records turned into the image's [`Chunk`] list.

use std::borrow::Cow;
use std::sync::Arc;

use super::chunk::{max_frame_len_u64, Chunk, ImageChunks, StoredFrame, StreamedIndex};
use super::record::{self, Record, RecordForm, CONTINUED};
use super::tree::{Tree, TreeRecords};
use crate::chunking::{Chunking, ALIGN};
use crate::digest::Sha256Digest;
use crate::digest::ZeroDigests;
use crate::error::{FormatError, Section};

/// The dictionary and stored index of a version 3 bundle, as read after its payload, and the
/// length of the file they were read from. Owned bytes are released as the index is
/// decompressed ([`record::decode`]).
#[derive(Debug, Clone)]
pub struct Tail<'a> {
    /// The dictionary, then the index.
    pub bytes: Cow<'a, [u8]>,
    /// The dictionary's length (the index follows it).
    pub dictionary_len: usize,
    /// The length of the whole bundle file.
    pub file_len: u64,
    /// The index was left in the bundle, to be streamed ([`super::IndexFile`]): `bytes`
    /// hold the dictionary alone.
    pub index_streamed: bool,
}

impl Tail<'_> {
    fn dictionary(&self) -> &[u8] {
        self.bytes.get(..self.dictionary_len).unwrap_or_default()
    }
    fn index(&self) -> &[u8] {
        self.bytes.get(self.dictionary_len..).unwrap_or_default()
    }
}

/// What the signed manifest says of a version 3 image, its fields already checked (FORMAT
/// §3.2): how it is cut, how many chunks its index holds, and the hashes of the stored index
/// and dictionary.
pub(crate) struct IndexedImage {
    pub(crate) image_size: u64,
    pub(crate) chunking: Chunking,
    pub(crate) count: u64,
    pub(crate) index_sha256: Sha256Digest,
    /// The stored index's signed length.
    pub(crate) index_len: u64,
    /// A tree index's signed layout (FORMAT §3.2.1).
    pub(crate) tree: Option<Tree>,
    pub(crate) dictionary_sha256: Option<Sha256Digest>,
    /// The chunk store's signed size, when the release has one (FORMAT §3.4).
    pub(crate) store_size: Option<u64>,
}

/// The image's chunks and dictionary from `tail`, whose length was checked: the stored bytes
/// must hash to what the manifest names before the index is decompressed, and its records
/// must tile the image ([`indexed_chunks`]); frames continue at `next_offset`.
pub(crate) fn image_chunks(
    image: &IndexedImage,
    tail: Tail<'_>,
    next_offset: &mut u64,
    max_frame_raw: u64,
) -> Result<ImageChunks, FormatError> {
    if let Some(sha256) = image.dictionary_sha256 {
        check_region_hash("dictionary", sha256, tail.dictionary())?;
    }
    let dictionary = image
        .dictionary_sha256
        .map(|_| Arc::from(tail.dictionary()));
    if tail.index_streamed {
        return Ok(streamed_image(
            image,
            &tail,
            dictionary,
            *next_offset,
            max_frame_raw,
        ));
    }
    let mut tiler = Tiler::new(image.count, image.chunking, *next_offset, max_frame_raw)
        .with_store(image.store_size);
    let store = image.store_size.is_some();
    let chunks = match image.tree {
        None => {
            check_region_hash("index", image.index_sha256, tail.index())?;
            let form = RecordForm::with_store(store);
            let records = record::decode(tail.bytes, tail.dictionary_len, image.count, form)?;
            indexed_chunks(records, &mut tiler, image.count)?
        }
        Some(tree) => {
            let (head, column) = split_at(tail.index(), tree.head_len());
            check_region_hash("index", image.index_sha256, head)?;
            let (lengths, table) = split_at(head, tree.lengths);
            let form = RecordForm::lengths(store);
            let lengths = record::decode(Cow::Borrowed(lengths), 0, image.count, form)?;
            let records = TreeRecords::new(lengths, column, table, tree.group);
            indexed_chunks(records, &mut tiler, image.count)?
        }
    };
    *next_offset = tiler.finish(image.image_size)?;
    Ok(ImageChunks {
        chunking: image.chunking,
        count: image.count,
        chunks,
        dictionary,
        streamed: None,
    })
}

/// The image of `tail` whose index was left in the bundle: its chunks are streamed later
/// from a proven copy ([`super::IndexFile`]), its frames must end at `frames_end` (where the
/// boot assets' start, from the signed `payload_size`).
fn streamed_image(
    image: &IndexedImage,
    tail: &Tail<'_>,
    dictionary: Option<Arc<[u8]>>,
    frames_end: u64,
    max_frame_raw: u64,
) -> ImageChunks {
    let end = tail.file_len;
    let start = end.saturating_sub(image.index_len);
    ImageChunks {
        chunking: image.chunking,
        count: image.count,
        chunks: Vec::new(),
        dictionary,
        streamed: Some(StreamedIndex {
            range: start..end,
            count: image.count,
            sha256: image.index_sha256,
            image_size: image.image_size,
            chunking: image.chunking,
            frames_end,
            max_frame_raw,
            store_size: image.store_size,
            tree: image.tree,
        }),
    }
}

/// `bytes` cut at `at` (the whole of them before it, when shorter: a signed layout was
/// checked against the index's signed size, and its hash is checked next).
fn split_at(bytes: &[u8], at: u64) -> (&[u8], &[u8]) {
    bytes.split_at(usize::try_from(at).map_or(bytes.len(), |at| at.min(bytes.len())))
}

/// A region after the payload: its signed size (none: 0) must be the header's length.
pub(crate) fn check_region_size(
    field: &str,
    signed_size: Option<u64>,
    header_len: u32,
) -> Result<(), FormatError> {
    let size = signed_size.unwrap_or(0);
    if size != u64::from(header_len) {
        return Err(FormatError::field(
            Section::Manifest,
            field,
            format!("size {size}, but the header says {header_len} bytes are stored"),
        ));
    }
    Ok(())
}

/// FORMAT §3.2: the `dictionary` member is present exactly when the header's D > 0, and then
/// names D bytes (a member of size 0 over no stored bytes is refused, not taken for none).
pub(crate) fn check_dictionary_size(
    signed_size: Option<u64>,
    header_len: u32,
) -> Result<(), FormatError> {
    if signed_size.is_some() && header_len == 0 {
        return Err(FormatError::field(
            Section::Manifest,
            "dictionary",
            "present, but the header stores none (D = 0): the member is present exactly when D > 0",
        ));
    }
    check_region_size("dictionary", signed_size, header_len)
}

/// A region after the payload: its stored bytes must hash to the signed digest.
fn check_region_hash(field: &str, sha256: Sha256Digest, bytes: &[u8]) -> Result<(), FormatError> {
    let actual = Sha256Digest::of(bytes);
    if actual != sha256 {
        return Err(hash_mismatch(field, actual, sha256));
    }
    Ok(())
}

/// A region after the payload whose bytes hash to `actual`, not the signed `sha256`.
pub(crate) fn hash_mismatch(
    field: &str,
    actual: Sha256Digest,
    sha256: Sha256Digest,
) -> FormatError {
    FormatError::field(
        Section::Manifest,
        field,
        format!(
            "the stored bytes hash to {}, the manifest says {}",
            actual.to_hex(),
            sha256.to_hex()
        ),
    )
}

/// FORMAT §3.2: the records, checked in order by `tiler` (which the caller then finishes),
/// into the image's chunks.
pub(crate) fn indexed_chunks(
    records: impl Iterator<Item = Result<Record, FormatError>>,
    tiler: &mut Tiler,
    count: u64,
) -> Result<Vec<Chunk>, FormatError> {
    // Within the limit the manifest's count was checked against.
    let mut chunks: Vec<Chunk> = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for record in records {
        chunks.push(tiler.push(record?)?);
    }
    Ok(chunks)
}

/// The record rules of FORMAT §3.2 checked one record at a time, so an index is checked and
/// turned into chunks as it streams, holding nothing but the frame open at the moment: every
/// chunk but the last is a multiple of 4 KiB between `min` and `max` (the last at most
/// `max`). A record's frame length says where its bytes are: 0, nowhere (all zeros);
/// [`CONTINUED`], in the frame the record before it is in; any other, in a new frame of that
/// length, contiguous from the first frame's offset. A frame's chunks decompress to at most
/// `max_frame_raw` bytes, from a frame within zstd's bound. With a chunk store (FORMAT
/// §3.4), a record's store frame length places the chunk's own frame in the store, frames
/// contiguous from its start and ending exactly at its signed size.
pub(crate) struct Tiler {
    count: u64,
    chunking: Chunking,
    max_frame_raw: u64,
    /// The chunk store's signed size, and where its next frame starts.
    store: Option<(u64, u64)>,
    zeros: ZeroDigests,
    /// Records taken so far.
    taken: u64,
    image_offset: u64,
    next_offset: u64,
    /// The open frame and the raw bytes of its chunks so far.
    open: Option<(StoredFrame, u64)>,
}

impl Tiler {
    /// Checks `count` records of chunks cut by `chunking`, frames starting at payload offset
    /// `first_frame`.
    pub(crate) fn new(
        count: u64,
        chunking: Chunking,
        first_frame: u64,
        max_frame_raw: u64,
    ) -> Self {
        Tiler {
            count,
            chunking,
            max_frame_raw,
            store: None,
            zeros: ZeroDigests::default(),
            taken: 0,
            image_offset: 0,
            next_offset: first_frame,
            open: None,
        }
    }

    /// The tiler of records that carry a store frame length, when `store_size` is given.
    pub(crate) fn with_store(self, store_size: Option<u64>) -> Self {
        Tiler {
            store: store_size.map(|size| (size, 0)),
            ..self
        }
    }

    /// The store frame of `record` (none without a store, or a length of 0): within zstd's
    /// bound of the chunk, never for an all-zero chunk, within the store's signed size.
    fn store_frame(&mut self, record: &Record) -> Result<Option<StoredFrame>, String> {
        let Some((size, next)) = self.store.as_mut() else {
            return Ok(None);
        };
        let length = u64::from(record.store_len);
        if length == 0 {
            return Ok(None);
        }
        if record.frame_len == 0 {
            return Err("an all-zero chunk with a store frame".into());
        }
        let bound = max_frame_len_u64(u64::from(record.raw_len));
        if length > bound {
            return Err(format!(
                "store frame length {length} above {bound} for {} raw bytes",
                record.raw_len
            ));
        }
        let frame = StoredFrame {
            offset: *next,
            length,
        };
        *next += length;
        if *next > *size {
            return Err(format!(
                "its store frame ends past the store's {size} bytes"
            ));
        }
        Ok(Some(frame))
    }

    /// The next record as a chunk, if it keeps the rules.
    pub(crate) fn push(&mut self, record: Record) -> Result<Chunk, FormatError> {
        let i = self.taken;
        let bad =
            |reason: String| FormatError::field(Section::Index, format!("record {i}"), reason);
        if i >= self.count {
            return Err(bad(format!("beyond the {} records signed", self.count)));
        }
        let len = record.raw_len;
        let last = i + 1 == self.count;
        let chunking = self.chunking;
        let sized =
            len >= 1 && len <= chunking.max && (last || (len >= chunking.min && len % ALIGN == 0));
        if !sized {
            return Err(bad(format!("raw length {len} breaks {chunking}")));
        }
        let zero = self.zeros.of(len);
        if record.frame_len != CONTINUED {
            close_frame(self.open.take()).map_err(bad)?;
        }
        let frame = match record.frame_len {
            0 if record.sha256 != zero => {
                return Err(bad("zero chunk whose sha256 is not that of zeros".into()))
            }
            0 => None,
            _ if record.sha256 == zero => {
                return Err(bad("stored chunk whose sha256 is that of zeros".into()))
            }
            CONTINUED => {
                let (frame, raw) = self
                    .open
                    .as_mut()
                    .ok_or_else(|| bad("continues a frame, but follows no stored chunk".into()))?;
                *raw += u64::from(len);
                Some(*frame)
            }
            n => {
                let frame = StoredFrame {
                    offset: self.next_offset,
                    length: u64::from(n),
                };
                self.next_offset += u64::from(n);
                self.open = Some((frame, u64::from(len)));
                Some(frame)
            }
        };
        if self.open.is_some_and(|(_, raw)| raw > self.max_frame_raw) {
            return Err(bad(format!(
                "its frame holds more than {} raw bytes",
                self.max_frame_raw
            )));
        }
        let store = self.store_frame(&record).map_err(bad)?;
        let chunk = Chunk::new(i, self.image_offset, len, record.sha256, frame)
            .and_then(|c| match store {
                Some(store) => c.with_store(store),
                None => Some(c),
            })
            .ok_or_else(|| {
                bad(format!(
                    "beyond the {} chunks a manifest can list",
                    u32::MAX
                ))
            })?;
        self.taken += 1;
        self.image_offset += u64::from(len);
        Ok(chunk)
    }

    /// After the last record: every record was taken, the last frame is within its bound and
    /// the chunks cover exactly `image_size` bytes. Returns where the image's frames end.
    pub(crate) fn finish(self, image_size: u64) -> Result<u64, FormatError> {
        close_frame(self.open)
            .map_err(|reason| FormatError::field(Section::Index, "last frame", reason))?;
        if self.taken != self.count {
            return Err(FormatError::field(
                Section::Index,
                "",
                format!("{} records, the manifest signed {}", self.taken, self.count),
            ));
        }
        if let Some((size, end)) = self.store.filter(|(size, end)| size != end) {
            return Err(FormatError::field(
                Section::Index,
                "",
                format!(
                    "the store frames take {end} bytes, the manifest signed a {size}-byte store"
                ),
            ));
        }
        if self.image_offset != image_size {
            return Err(FormatError::field(
                Section::Index,
                "",
                format!(
                    "the chunks cover {} bytes, the image has {image_size}",
                    self.image_offset
                ),
            ));
        }
        Ok(self.next_offset)
    }
}

/// A frame's length must be within zstd's bound of the raw bytes it holds.
fn close_frame(open: Option<(StoredFrame, u64)>) -> Result<(), String> {
    match open {
        Some((frame, raw)) if frame.length > max_frame_len_u64(raw) => Err(format!(
            "frame length {} above {} for {raw} raw bytes",
            frame.length,
            max_frame_len_u64(raw)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_dictionary_member_is_present_exactly_when_one_is_stored() {
        assert!(check_dictionary_size(None, 0).is_ok());
        assert!(check_dictionary_size(Some(100), 100).is_ok());
        for (signed, stored) in [(Some(0), 0), (Some(100), 0), (None, 100), (Some(99), 100)] {
            match check_dictionary_size(signed, stored) {
                Err(FormatError::Field { field, .. }) => assert_eq!(field, "dictionary"),
                other => panic!("{signed:?} over D = {stored}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_tail_becomes_the_image_chunks_only_when_its_bytes_hash_as_signed() {
        let record = Record {
            sha256: Sha256Digest::of(&[7u8; 4096]),
            raw_len: 4096,
            frame_len: 100,
            store_len: 0,
        };
        let index = record::encode(&[record], RecordForm::Plain).unwrap();
        let mut bytes = b"dict".to_vec();
        bytes.extend_from_slice(&index);
        let image = IndexedImage {
            image_size: 4096,
            chunking: Chunking::fixed(4096),
            count: 1,
            index_sha256: Sha256Digest::of(&index),
            index_len: index.len() as u64,
            tree: None,
            dictionary_sha256: Some(Sha256Digest::of(b"dict")),
            store_size: None,
        };
        let chunks_of = |bytes: &[u8], next_offset: &mut u64| {
            let tail = Tail {
                bytes: Cow::Owned(bytes.to_vec()),
                dictionary_len: 4,
                file_len: 0,
                index_streamed: false,
            };
            image_chunks(&image, tail, next_offset, 1 << 20)
        };
        let mut next_offset = 0;
        let image_chunks = chunks_of(&bytes, &mut next_offset).unwrap();
        let frame = StoredFrame {
            offset: 0,
            length: 100,
        };
        let chunk = Chunk::new(0, 0, 4096, record.sha256, Some(frame)).unwrap();
        assert_eq!(image_chunks.chunks, [chunk]);
        assert_eq!(image_chunks.dictionary.as_deref(), Some(&b"dict"[..]));
        assert_eq!(
            (image_chunks.count, image_chunks.chunking, next_offset),
            (1, Chunking::fixed(4096), 100)
        );
        // Each region's bytes are held to the hash the manifest signed.
        for (at, field) in [(bytes.len() - 1, "index"), (0, "dictionary")] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1;
            match chunks_of(&flipped, &mut 0) {
                Err(FormatError::Field { field: f, .. }) => assert_eq!(f, field),
                Err(other) => panic!("byte {at} flipped: {other:?}"),
                Ok(_) => panic!("byte {at} flipped, and the tail was taken"),
            }
        }
    }

    #[test]
    fn store_frames_follow_one_another_and_end_at_the_signed_size() {
        let zero = Sha256Digest::of_zeros(4096);
        let record = |n: u8, frame_len, store_len| Record {
            sha256: if frame_len == 0 {
                zero
            } else {
                Sha256Digest::of(&[n; 4096])
            },
            raw_len: 4096,
            frame_len,
            store_len,
        };
        let tile = |records: &[Record], store_size| {
            let count = records.len() as u64;
            let mut tiler =
                Tiler::new(count, Chunking::fixed(4096), 0, 1 << 20).with_store(Some(store_size));
            let chunks = indexed_chunks(records.iter().copied().map(Ok), &mut tiler, count)?;
            tiler.finish(count * 4096).map(|_| chunks)
        };
        // A frame of two chunks, a zero, a repeat the store does not hold again.
        let records = [
            record(1, 5000, 4100),
            record(2, CONTINUED, 30),
            record(0, 0, 0),
            record(1, 4100, 0),
        ];
        let chunks = tile(&records, 4130).unwrap();
        let stores: Vec<_> = chunks.iter().map(Chunk::store).collect();
        let at = |offset, length| Some(StoredFrame { offset, length });
        assert_eq!(stores, [at(0, 4100), at(4100, 30), None, None]);

        let error = |records: &[Record], size| match tile(records, size) {
            Err(FormatError::Field { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(error(&records, 4131).contains("the store frames take 4130 bytes"));
        assert!(error(&records, 4129).contains("past the store's 4129 bytes"));
        let zero_stored = [record(0, 0, 10)];
        assert!(error(&zero_stored, 10).contains("all-zero chunk with a store frame"));
        let too_long = [record(1, 100, 5000)];
        assert!(error(&too_long, 5000).contains("above"));
    }
}
