//! The binary chunk index of a format version 3 bundle (FORMAT §3.2): one fixed-size record
//! per chunk of the image, in image order, stored as one zstd frame after the payload (and
//! after the dictionary). Its length, record count and SHA-256 are in the signed manifest, so
//! it is decompressed only once its hash matched, into exactly `count` records.

use std::borrow::Cow;
use std::io::{BufRead, Read, Write};

use crate::digest::Sha256Digest;
use crate::frame::{check_one_frame, window_log_max};

use crate::error::{Error, FormatError, Section};

/// A record's bytes: SHA-256 (32), raw length (u32 LE), frame length (u32 LE), and with a
/// chunk store the store frame length (u32 LE); the longest form.
const MAX_RECORD_LEN: usize = 44;
/// Where the lengths start in a record with its hash.
const HASH_LEN: usize = 32;

/// The records' form: whether they carry the chunk's hash (a tree index keeps the hashes in
/// a column of their own, FORMAT §3.2.1) and a store frame length (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordForm {
    /// 40 bytes: hash and lengths, no chunk store.
    Plain,
    /// 44 bytes: hash and lengths, and the chunk's frame in the release's chunk store.
    WithStore,
    /// 8 bytes: the lengths of a tree index, no chunk store.
    Lengths,
    /// 12 bytes: the lengths of a tree index, with the store frame length.
    LengthsWithStore,
}

impl RecordForm {
    /// The form of a bundle with (`true`) or without a chunk store.
    pub fn with_store(store: bool) -> Self {
        if store {
            RecordForm::WithStore
        } else {
            RecordForm::Plain
        }
    }

    /// The form of a tree index's lengths with or without a chunk store.
    pub fn lengths(store: bool) -> Self {
        if store {
            RecordForm::LengthsWithStore
        } else {
            RecordForm::Lengths
        }
    }

    /// Bytes per record.
    pub(crate) fn len(self) -> usize {
        match self {
            RecordForm::Plain => 40,
            RecordForm::WithStore => 44,
            RecordForm::Lengths => 8,
            RecordForm::LengthsWithStore => 12,
        }
    }

    /// Where a record of this form starts in [`MAX_RECORD_LEN`] bytes holding every field.
    fn start(self) -> usize {
        match self {
            RecordForm::Plain | RecordForm::WithStore => 0,
            RecordForm::Lengths | RecordForm::LengthsWithStore => HASH_LEN,
        }
    }

    /// This form's bytes of all of a record's.
    fn of(self, all: &[u8; MAX_RECORD_LEN]) -> &[u8] {
        all.get(self.start()..self.start() + self.len())
            .unwrap_or_default()
    }

    fn of_mut(self, all: &mut [u8; MAX_RECORD_LEN]) -> &mut [u8] {
        all.get_mut(self.start()..self.start() + self.len())
            .unwrap_or_default()
    }
}
/// The frame length of a chunk stored in the same frame as the chunk before it.
pub const CONTINUED: u32 = u32::MAX;

/// One chunk's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The chunk's SHA-256.
    pub sha256: Sha256Digest,
    /// The chunk's length in the image.
    pub raw_len: u32,
    /// The length of the frame this chunk starts; 0 for an all-zero chunk, which has no
    /// frame; [`CONTINUED`] when it is in the frame of the chunk before it.
    pub frame_len: u32,
    /// The length of the chunk's own frame in the chunk store (FORMAT §3.4); 0 when the
    /// store does not hold it (an all-zero chunk, a repeat of an earlier chunk, or no store).
    pub store_len: u32,
}

/// zstd level of the stored index: its bulk, the hashes, does not compress, the rest does at
/// any level.
const LEVEL: i32 = 3;

/// The stored form of `records`, in `form`.
pub fn encode(records: &[Record], form: RecordForm) -> Result<Vec<u8>, Error> {
    let mut raw = Vec::with_capacity(records.len() * form.len());
    for r in records {
        raw.extend_from_slice(form.of(&bytes_of(r)));
    }
    zstd::bulk::compress(&raw, LEVEL).map_err(Error::io("compressing the chunk index"))
}

/// A record's every field; a form stores some of them ([`RecordForm::of`]).
fn bytes_of(r: &Record) -> [u8; MAX_RECORD_LEN] {
    let mut bytes = [0u8; MAX_RECORD_LEN];
    let (sha256, lens) = bytes.split_at_mut(HASH_LEN);
    sha256.copy_from_slice(&r.sha256.0);
    for (field, value) in lens
        .chunks_exact_mut(4)
        .zip([r.raw_len, r.frame_len, r.store_len])
    {
        field.copy_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// The stored form of records written one by one, never held: one zstd frame streamed into
/// `W` (a writer's memory stays flat whatever the image size; the frame does not state its
/// content size, which FORMAT §3.2 allows).
pub struct IndexWriter<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, W>,
    form: RecordForm,
    count: u64,
}

impl<W: Write> IndexWriter<W> {
    /// A writer of a stored index of records in `form` into `out`.
    pub fn new(out: W, form: RecordForm) -> Result<Self, Error> {
        let encoder = zstd::stream::write::Encoder::new(out, LEVEL)
            .map_err(Error::io("compressing the chunk index"))?;
        Ok(IndexWriter {
            encoder,
            form,
            count: 0,
        })
    }

    /// Appends the next record.
    pub fn push(&mut self, record: &Record) -> Result<(), Error> {
        self.count += 1;
        let bytes = bytes_of(record);
        self.encoder
            .write_all(self.form.of(&bytes))
            .map_err(Error::io("compressing the chunk index"))
    }

    /// The records written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ends the frame; returns the writer it went to.
    pub fn finish(self) -> Result<W, Error> {
        self.encoder
            .finish()
            .map_err(Error::io("compressing the chunk index"))
    }
}

/// The `count` records of a stored index whose hash already matched the manifest, in order:
/// exactly one zstd frame holding exactly `count` records of `form`, from byte `from` of
/// `bytes` to their end. Records are decompressed one by one as the caller takes them (the index of a
/// large image is tens of MiB decompressed), and the stream is checked to end exactly after
/// the last. Owned `bytes` are released as they are read ([`Releasing`]).
pub(crate) fn decode(
    bytes: Cow<'_, [u8]>,
    from: usize,
    count: u64,
    form: RecordForm,
) -> Result<Records<Releasing<'_>>, FormatError> {
    let stored = bytes.get(from..).unwrap_or_default();
    check_one_frame(stored).map_err(|e| bad(e.to_string()))?;
    check_content_size(stored, count, form)?;
    Records::new(Releasing { bytes, at: from }, count, form)
}

/// [`decode`] of a stored index read from `stored` (whose hash already matched the manifest),
/// never held whole: `first` holds its first bytes (at least [`FRAME_HEADER_MAX`] of them,
/// or all), checked before any record is; the frame must end exactly where `stored` does,
/// which is checked after the last record.
pub(crate) fn decode_stream<R: BufRead>(
    first: &[u8],
    stored: R,
    count: u64,
    form: RecordForm,
) -> Result<Records<R>, FormatError> {
    if first.get(..4) != Some(&crate::frame::ZSTD_MAGIC[..]) {
        return Err(bad(
            "it does not start with the zstd frame magic number".into()
        ));
    }
    check_content_size(first, count, form)?;
    Records::new(stored, count, form)
}

/// A zstd frame header is at most this long (RFC 8878 §3.1.1.1: magic, descriptor, window,
/// dictionary id, content size).
pub(crate) const FRAME_HEADER_MAX: usize = 18;

/// A frame that states its size (the signer's do) is told wrong before any record.
fn check_content_size(stored: &[u8], count: u64, form: RecordForm) -> Result<(), FormatError> {
    let want = count.saturating_mul(form.len() as u64);
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(stored) {
        if size != want {
            return Err(bad(format!(
                "{size} bytes decompressed, {count} records are {want}"
            )));
        }
    }
    Ok(())
}

/// The records of one zstd frame read from `R`, exactly `count` of them, then nothing: not a
/// byte more from the frame, nor after it.
pub(crate) struct Records<R: BufRead> {
    decoder: Option<zstd::stream::read::Decoder<'static, R>>,
    form: RecordForm,
    count: u64,
    left: u64,
}

impl<R: BufRead> Records<R> {
    fn new(stored: R, count: u64, form: RecordForm) -> Result<Self, FormatError> {
        let decoder = zstd::stream::read::Decoder::with_buffer(stored)
            .and_then(|mut d| d.set_parameter(window_log_max()).map(|()| d))
            .map_err(|e| bad(format!("cannot decompress: {e}")))?
            .single_frame();
        Ok(Records {
            decoder: Some(decoder),
            form,
            count,
            left: count,
        })
    }

    /// After the last record: the frame ends, and nothing follows it.
    fn end(&mut self) -> Option<Result<Record, FormatError>> {
        let mut decoder = self.decoder.take()?;
        let count = self.count;
        match decoder.read(&mut [0u8; 1]) {
            Ok(0) => {}
            Ok(_) => return Some(Err(bad(format!("longer than {count} records")))),
            Err(e) => return Some(Err(bad(format!("cannot decompress: {e}")))),
        }
        match decoder.finish().fill_buf() {
            Ok([]) => None,
            Ok(_) => Some(Err(bad("data after its zstd frame".into()))),
            Err(e) => Some(Err(bad(format!("cannot read: {e}")))),
        }
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Record, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return self.end();
        }
        let decoder = self.decoder.as_mut()?;
        self.left -= 1;
        let mut bytes = [0u8; MAX_RECORD_LEN];
        let count = self.count;
        let read = decoder
            .read_exact(self.form.of_mut(&mut bytes))
            .map(|()| record(&bytes))
            .map_err(|e| bad(format!("shorter than {count} records: {e}")));
        if read.is_err() {
            self.decoder = None;
        }
        Some(read)
    }
}

/// Bytes read once, front to back: owned ones are released as they are consumed, once a
/// quarter of those held (and at least [`RELEASE_MIN`]) is read (the rest moved to the front),
/// so a large stored index is not held whole beside the chunk list it is decompressed into.
pub(crate) struct Releasing<'a> {
    bytes: Cow<'a, [u8]>,
    at: usize,
}

/// Consumed bytes are released once there are at least this many.
const RELEASE_MIN: usize = 1 << 20;

impl Read for Releasing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.read(buf)?;
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Releasing<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Ok(self.bytes.get(self.at..).unwrap_or_default())
    }

    fn consume(&mut self, n: usize) {
        self.at = self.bytes.len().min(self.at + n);
        if let Cow::Owned(bytes) = &mut self.bytes {
            let left = bytes.len() - self.at;
            if self.at >= RELEASE_MIN && self.at >= left / 3 {
                bytes.drain(..self.at);
                bytes.shrink_to_fit();
                self.at = 0;
            }
        }
    }
}

fn bad(reason: String) -> FormatError {
    FormatError::field(Section::Index, "", reason)
}

/// A record from its fields (those its form does not store are zero: no store frame, or a
/// hash a tree index's column gives).
fn record(bytes: &[u8; MAX_RECORD_LEN]) -> Record {
    let field = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(bytes.get(at..at + 4).unwrap_or(&[0; 4]));
        u32::from_le_bytes(b)
    };
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(bytes.get(..32).unwrap_or(&[0; 32]));
    Record {
        sha256: Sha256Digest(sha256),
        raw_len: field(32),
        frame_len: field(36),
        store_len: field(40),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records of 4 KiB chunks, record i's frame and store lengths `lens(i)`.
    fn numbered(n: u32, lens: impl Fn(u32) -> (u32, u32)) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                sha256: Sha256Digest::of(&i.to_le_bytes()),
                raw_len: 4096,
                frame_len: lens(i).0,
                store_len: lens(i).1,
            })
            .collect()
    }

    #[test]
    fn round_trip_and_exact_count() {
        let records = numbered(1000, |i| (i % 7, 0));
        let stored = encode(&records, RecordForm::Plain).unwrap();
        let all = |count| {
            decode(Cow::Borrowed(&stored), 0, count, RecordForm::Plain)?
                .collect::<Result<Vec<_>, _>>()
        };
        assert_eq!(all(1000).unwrap(), records);
        let err = all(999).unwrap_err().to_string();
        assert!(
            err.contains("40000 bytes decompressed, 999 records"),
            "{err}"
        );
        // A frame that does not state its size is held to the count as it is read.
        let raw = zstd::bulk::decompress(&stored, 40_000).unwrap();
        let streamed = zstd::stream::encode_all(&raw[..], 3).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        let records_of = |count| {
            decode(Cow::Owned(streamed.clone()), 0, count, RecordForm::Plain)?
                .collect::<Result<Vec<_>, _>>()
        };
        assert_eq!(records_of(1000).unwrap(), records);
        let err = records_of(999).unwrap_err().to_string();
        assert!(err.contains("longer than 999 records"), "{err}");
        let err = records_of(1001).unwrap_err().to_string();
        assert!(err.contains("shorter than 1001 records"), "{err}");
        let mut two = stored.clone();
        two.extend_from_slice(&stored);
        assert!(
            decode(Cow::Borrowed(&two), 0, 2000, RecordForm::Plain).is_err(),
            "two frames are refused"
        );
    }

    #[test]
    fn records_with_a_store_column_round_trip_and_keep_their_length() {
        let records = numbered(100, |i| (i % 7, 4000 + i));
        let stored = encode(&records, RecordForm::WithStore).unwrap();
        let raw = zstd::bulk::decompress(&stored, 1 << 20).unwrap();
        assert_eq!(raw.len(), 100 * RecordForm::WithStore.len());
        let all =
            |form| decode(Cow::Borrowed(&stored), 0, 100, form)?.collect::<Result<Vec<_>, _>>();
        assert_eq!(all(RecordForm::WithStore).unwrap(), records);
        // Read as plain records, the same bytes are another count: refused.
        let err = all(RecordForm::Plain).unwrap_err().to_string();
        assert!(err.contains("4400 bytes decompressed"), "{err}");
    }

    #[test]
    fn records_written_one_by_one_decode_as_encoded_whole() {
        let records = numbered(5000, |i| (i % 3, i % 5));
        let mut writer = IndexWriter::new(Vec::new(), RecordForm::WithStore).unwrap();
        for r in &records {
            writer.push(r).unwrap();
        }
        assert_eq!(writer.count(), 5000);
        let stored = writer.finish().unwrap();
        let decoded = decode(Cow::Borrowed(&stored), 0, 5000, RecordForm::WithStore)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(decoded, records);
    }

    #[test]
    fn owned_bytes_are_released_as_they_are_read() {
        let bytes: Vec<u8> = (0..8 * RELEASE_MIN as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut reader = Releasing {
            bytes: Cow::Owned(bytes.clone()),
            at: 10,
        };
        let mut read = Vec::new();
        let mut step = vec![0u8; 64 << 10];
        let mut held = Vec::new();
        loop {
            let n = reader.read(&mut step).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&step[..n]);
            held.push(reader.bytes.len());
        }
        assert_eq!(read, bytes[10..], "every byte, in order");
        assert!(held.windows(2).all(|w| w[1] <= w[0]), "never more held");
        assert!(
            held.last().copied().unwrap() <= 2 * RELEASE_MIN,
            "released as read: {held:?}"
        );
        // Borrowed bytes are only read.
        let mut borrowed = Releasing {
            bytes: Cow::Borrowed(&bytes),
            at: 0,
        };
        let mut all = Vec::new();
        borrowed.read_to_end(&mut all).unwrap();
        assert_eq!(all, bytes);
    }
}
