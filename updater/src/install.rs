//! The install pipeline (docs/DESIGN.md §6 step 2): stream a verified bundle's chunks into a slot.
//!
//! Chunks are read in order, decompressed and hash-checked on all cores, and written in
//! order at their offsets; all-zero chunks are not decompressed at all but zeroed cheaply
//! (a punched hole, a zero-out). Every `checkpoint_bytes` the slot is synced and the caller
//! records how many chunks are durable, so a cut install resumes there. At the end the slot
//! is synced and the whole image hashed — re-read from the slot by default, which catches a
//! disk that returns what we did not write.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use partitions::io::BlockDevice;
use pipeline::{ordered_map, Shape};
use sha2::{Digest, Sha256};
use signer::bundle::ChunkDecoder;
use signer::verify::Verified;
use signer::{Chunk, Manifest, Sha256Digest};

use crate::error::{Error, Result};
use crate::source::BundleSource;

/// Tuning of the pipeline; the defaults suit a node.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Decompression threads (default: every core).
    pub workers: usize,
    /// Chunks alive at once anywhere in the pipeline: bounds memory to about
    /// `window × chunk_size` whatever the image size.
    pub window: usize,
    /// Sync and record progress after about this many bytes.
    pub checkpoint_bytes: u64,
    /// Re-read the written image from the slot and hash it.
    pub verify_readback: bool,
    /// Told of the bytes written (the binary draws a progress bar with it).
    pub progress: Option<Arc<dyn Progress>>,
}

/// Follows a write: `start` once (bytes already done of the total), then `advance` per
/// chunk written, then `finish`.
pub trait Progress: Send + Sync {
    fn start(&self, done: u64, total: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

impl std::fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        WriteOptions {
            workers,
            window: workers * 4,
            checkpoint_bytes: 64 << 20,
            verify_readback: true,
            progress: None,
        }
    }
}

/// What the pipeline did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteReport {
    /// Chunks decompressed and written in this run.
    pub chunks_written: u64,
    /// Chunks zeroed without decompression.
    pub chunks_zeroed: u64,
    /// Chunks already durable from an interrupted run, not written again.
    pub chunks_resumed: u64,
    /// Compressed bytes read from the source.
    pub bytes_read: u64,
    /// Chunks copied from the active slot because their hash matched: not fetched at all.
    pub chunks_reused: u64,
    /// Bytes of the reused chunks: what the active slot saved the network.
    pub bytes_reused: u64,
}

/// A chunk on its way to the slot.
enum Piece {
    /// Compressed, from the bundle.
    Data(Chunk, Vec<u8>),
    Zero(Chunk),
    /// Already raw and hash-checked: read from the active slot.
    Reused(Chunk, Vec<u8>),
}

/// Writes `manifest`'s image into `slot`, starting at chunk `resume_from` (chunks before it
/// are durable from an earlier run). `checkpoint(n)` is called after a sync made the first
/// `n` chunks durable. Returns only when the whole image is on the slot and its hash matched.
///
/// With `reuse`, the active slot: a stored chunk whose bytes are already there, at the same
/// offset with the same hash, is copied from it instead of fetched (a delta update with no
/// precomputed diff: bytes fetched follow what changed).
pub fn write_image(
    manifest: &Verified<Manifest>,
    source: &dyn BundleSource,
    slot: &dyn BlockDevice,
    reuse: Option<&dyn BlockDevice>,
    resume_from: u64,
    options: &WriteOptions,
    mut checkpoint: impl FnMut(u64) -> Result<()>,
) -> Result<WriteReport> {
    let slot_io = |what: &str| Error::io(format!("slot {what}"));
    let chunks = manifest.chunks();
    let start = usize::try_from(resume_from)
        .unwrap_or(usize::MAX)
        .min(chunks.len());
    let remaining = chunks.get(start..).unwrap_or_default();
    let progress = options.progress.as_deref();
    if let Some(progress) = progress {
        let done: u64 = chunks.iter().take(start).map(|c| u64::from(c.len)).sum();
        progress.start(done, manifest.image_size());
    }
    let bytes_read = AtomicU64::new(0);
    let mut report = WriteReport {
        chunks_resumed: start as u64,
        ..WriteReport::default()
    };
    let mut stream_hash = (!options.verify_readback)
        .then(|| hash_prefix(slot, chunks, start))
        .transpose()?;
    let mut since_checkpoint = 0u64;
    let mut done = start as u64;

    let source_name = source.name();
    let reusable = reuse.map_or_else(Vec::new, |active| plan_reuse(active, chunks, start));
    let mut payload = PayloadReader::new(source, manifest, &reusable);
    let inputs = remaining.iter().map(|chunk| {
        if let Some(active) = reuse.filter(|_| is_reusable(&reusable, chunk)) {
            let bytes = matching_chunk(active, chunk).ok_or_else(|| Error::Io {
                context: format!("reusing chunk {} from the active slot", chunk.index),
                source: std::io::Error::other("the active slot changed during the install"),
            })?;
            return Ok(Piece::Reused(chunk.clone(), bytes));
        }
        let piece = payload.next_piece(chunk)?;
        if let Piece::Data(_, bytes) = &piece {
            bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(piece)
    });
    let shape = Shape {
        workers: options.workers,
        window: options.window,
    };
    ordered_map(
        inputs,
        shape,
        // One zstd context per worker, kept for every chunk it decodes.
        || ChunkDecoder::new().map_err(Error::verify(source_name.as_str())),
        |decoder, piece| decode(decoder, piece, &source_name),
        |(chunk, data, reused)| {
            match &data {
                Some(bytes) => {
                    slot.write_at(bytes, chunk.image_offset)
                        .map_err(slot_io("write"))?;
                    if reused {
                        report.chunks_reused += 1;
                        report.bytes_reused += bytes.len() as u64;
                    } else {
                        report.chunks_written += 1;
                    }
                }
                None => {
                    slot.zero_range(chunk.image_offset, u64::from(chunk.len))
                        .map_err(slot_io("zero-out"))?;
                    report.chunks_zeroed += 1;
                }
            }
            if let Some(hasher) = stream_hash.as_mut() {
                feed(hasher, data.as_deref(), chunk.len);
            }
            fail::fail_point!("install::chunk-written");
            done += 1;
            if let Some(progress) = progress {
                progress.advance(u64::from(chunk.len));
            }
            since_checkpoint += u64::from(chunk.len);
            if since_checkpoint >= options.checkpoint_bytes {
                slot.sync().map_err(slot_io("sync"))?;
                checkpoint(done)?;
                since_checkpoint = 0;
            }
            Ok(())
        },
    )?;
    slot.sync().map_err(slot_io("sync"))?;
    checkpoint(done)?;
    if let Some(progress) = progress {
        progress.finish();
    }
    report.bytes_read = bytes_read.load(Ordering::Relaxed);

    let actual = match stream_hash {
        Some(hasher) => Sha256Digest(hasher.finalize().into()),
        None => {
            // Read what the disk stored, not the page cache's copy of what we wrote.
            slot.drop_cache(0, manifest.image_size())
                .map_err(slot_io("cache drop"))?;
            hash_slot(slot, 0, manifest.image_size())?
        }
    };
    if actual != manifest.image_sha256() {
        // Nothing on the slot can be trusted now: the next attempt must rewrite the image,
        // not resume after the chunks this run believed durable.
        checkpoint(0)?;
        return Err(Error::Io {
            context: "verifying the written slot".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the slot reads back with SHA-256 {}, the manifest says {}: the disk did not store what was written",
                    actual.to_hex(),
                    manifest.image_sha256().to_hex()
                ),
            ),
        });
    }
    Ok(report)
}

/// Decompresses and hash-checks a stored chunk with the worker's decoder; zero chunks pass
/// through as `None`; the flag says the bytes came from the active slot.
fn decode(
    decoder: &mut ChunkDecoder,
    piece: Piece,
    source_name: &str,
) -> Result<(Chunk, Option<Vec<u8>>, bool)> {
    match piece {
        Piece::Zero(chunk) => Ok((chunk, None, false)),
        Piece::Reused(chunk, bytes) => Ok((chunk, Some(bytes), true)),
        Piece::Data(chunk, compressed) => {
            let mut data = Vec::new();
            decoder
                .decode_into(&chunk, &compressed, &mut data)
                .map_err(|e| Error::verify(source_name)(e.into()))?;
            Ok((chunk, Some(data), false))
        }
    }
}

/// Which chunks (by index) the active slot already holds: decided once, up front, so the
/// payload can be fetched in ranges that cover exactly the runs of chunks still needed.
fn plan_reuse(active: &dyn BlockDevice, chunks: &[Chunk], start: usize) -> Vec<bool> {
    let mut reusable = vec![false; chunks.len()];
    for (flag, chunk) in reusable.iter_mut().zip(chunks).skip(start) {
        *flag = matching_chunk(active, chunk).is_some();
    }
    reusable
}

fn is_reusable(reusable: &[bool], chunk: &Chunk) -> bool {
    usize::try_from(chunk.index)
        .ok()
        .and_then(|i| reusable.get(i))
        .copied()
        .unwrap_or(false)
}

/// The chunk's bytes from the active slot when they hash to what the manifest says.
fn matching_chunk(active: &dyn BlockDevice, chunk: &Chunk) -> Option<Vec<u8>> {
    chunk.frame?;
    let mut bytes = vec![0u8; chunk.len as usize];
    active.read_at(&mut bytes, chunk.image_offset).ok()?;
    (Sha256Digest(Sha256::digest(&bytes).into()) == chunk.sha256).then_some(bytes)
}

fn feed(hasher: &mut Sha256, data: Option<&[u8]>, len: u32) {
    match data {
        Some(bytes) => hasher.update(bytes),
        None => {
            let zeros = [0u8; 64 << 10];
            let mut left = len as usize;
            while left > 0 {
                let n = left.min(zeros.len());
                hasher.update(zeros.get(..n).unwrap_or_default());
                left -= n;
            }
        }
    }
}

/// The stream hash of the chunks an earlier run already made durable, read from the slot.
fn hash_prefix(slot: &dyn BlockDevice, chunks: &[Chunk], start: usize) -> Result<Sha256> {
    let end = chunks.get(start).map_or_else(
        || {
            chunks
                .last()
                .map_or(0, |c| c.image_offset + u64::from(c.len))
        },
        |c| c.image_offset,
    );
    let mut hasher = Sha256::new();
    read_slot(slot, 0, end, |block| hasher.update(block))?;
    Ok(hasher)
}

/// SHA-256 of `len` bytes of the slot from `offset`.
pub fn hash_slot(slot: &dyn BlockDevice, offset: u64, len: u64) -> Result<Sha256Digest> {
    let mut hasher = Sha256::new();
    read_slot(slot, offset, len, |block| hasher.update(block))?;
    Ok(Sha256Digest(hasher.finalize().into()))
}

fn read_slot(
    slot: &dyn BlockDevice,
    offset: u64,
    len: u64,
    mut f: impl FnMut(&[u8]),
) -> Result<()> {
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let block = buf.get_mut(..n).unwrap_or_default();
        slot.read_at(block, offset + done)
            .map_err(Error::io("reading the slot back"))?;
        f(block);
        done += n as u64;
    }
    Ok(())
}

/// A read of `what` from `source` that failed: a network failure for a remote source, else
/// I/O (never "damaged input": the bytes did not arrive, they were not wrong).
pub(crate) fn source_failure(
    source: &dyn BundleSource,
    what: &str,
    error: std::io::Error,
) -> Error {
    if source.is_remote() {
        Error::Network {
            method: "GET",
            url: source.name(),
            reason: format!("{what}: {}", crate::error::chain(&error)),
        }
    } else {
        Error::io(format!("reading {what} from {}", source.name()))(error)
    }
}

/// Reads stored chunks' frames in payload order through one stream, reopened only when the
/// next frame is not where the stream stands (a resumed install, a skipped gap).
struct PayloadReader<'a> {
    source: &'a dyn BundleSource,
    chunks: &'a [Chunk],
    /// Chunks taken from the active slot: a fetched range ends where the next one starts.
    reusable: &'a [bool],
    payload_offset: u64,
    payload_end: u64,
    stream: Option<(u64, Box<dyn Read + Send>)>,
}

impl<'a> PayloadReader<'a> {
    fn new(source: &'a dyn BundleSource, manifest: &'a Manifest, reusable: &'a [bool]) -> Self {
        PayloadReader {
            source,
            chunks: manifest.chunks(),
            reusable,
            payload_offset: manifest.payload_offset(),
            payload_end: manifest.file_len(),
            stream: None,
        }
    }

    /// Where the run of needed frames starting after `chunk` ends: at the frame of the next
    /// reused chunk, else at the end of the payload.
    fn run_end(&self, chunk: &Chunk) -> u64 {
        let after = usize::try_from(chunk.index).map_or(usize::MAX, |i| i.saturating_add(1));
        self.chunks
            .iter()
            .skip(after)
            .filter(|c| is_reusable(self.reusable, c))
            .find_map(|c| c.frame)
            .map_or(self.payload_end, |frame| self.payload_offset + frame.offset)
    }

    fn read_failed(&self, chunk: &Chunk, error: std::io::Error) -> Error {
        source_failure(self.source, &format!("chunk {}", chunk.index), error)
    }

    fn next_piece(&mut self, chunk: &Chunk) -> Result<Piece> {
        let Some(frame) = chunk.frame else {
            return Ok(Piece::Zero(chunk.clone()));
        };
        let start = self.payload_offset + frame.offset;
        let stream = match self.stream.take() {
            Some((position, stream)) if position == start => stream,
            _ => self.source.read_range(start..self.run_end(chunk))?,
        };
        let mut bytes = Vec::with_capacity(frame.length as usize);
        let mut taken = stream.take(frame.length);
        taken
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_failed(chunk, e))?;
        if bytes.len() as u64 != frame.length {
            return Err(self.read_failed(chunk, std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.stream = Some((start + frame.length, taken.into_inner()));
        Ok(Piece::Data(chunk.clone(), bytes))
    }
}
