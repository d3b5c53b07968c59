//! The install pipeline (docs/DESIGN.md §6 step 2, §8): stream a verified bundle's image into a
//! slot.
//!
//! The image is written piece by piece ([`pieces`]: an all-zero chunk, or the chunks of one
//! frame). Over a network, chunks the node already holds are found first ([`crate::seed`]):
//! a piece whose chunks are all held is copied from the slots, hashed again as it is read;
//! only the other frames are fetched, through byte ranges that cover each run of them (small
//! gaps read through). Pieces are decompressed and hash-checked on all cores and written in
//! order; all-zero chunks are zeroed cheaply (a punched hole, a zero-out). Every
//! `checkpoint_bytes` the slot is synced and the caller records how many chunks are durable,
//! so a cut install resumes there. At the end the slot is synced and the whole image hashed —
//! re-read from the slot by default, which catches a disk that returns what we did not write.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use partitions::io::BlockDevice;
use pipeline::{ordered_map, Shape};
use sha2::{Digest, Sha256};
use signer::bundle::ChunkDecoder;
use signer::schema::pieces;
use signer::verify::Verified;
use signer::{Chunk, Manifest, Sha256Digest};

use crate::error::{Error, Result};
use crate::seed::{find_held, Held};
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
    /// Compressed bytes read from the source (the payload fetched).
    pub bytes_read: u64,
    /// Byte ranges read from the source (HTTP requests, when it is remote).
    pub ranges_read: u64,
    /// Chunks copied from the slots because their hash matched: not fetched at all.
    pub chunks_reused: u64,
    /// Bytes of the reused chunks: what the slots saved the network.
    pub bytes_reused: u64,
    /// Of `bytes_reused`, those found already in place in the target slot (the rest came
    /// from the active slot, from any offset).
    pub bytes_reused_in_place: u64,
    /// The whole bundle's size, to set `bytes_read` against.
    pub bundle_bytes: u64,
}

impl std::fmt::Display for WriteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes fetched of a {}-byte bundle in {} ranges; {} bytes reused ({} from the active slot, {} in place); {} chunks written, {} reused, {} zeroed, {} resumed",
            self.bytes_read,
            self.bundle_bytes,
            self.ranges_read,
            self.bytes_reused,
            self.bytes_reused - self.bytes_reused_in_place,
            self.bytes_reused_in_place,
            self.chunks_written,
            self.chunks_reused,
            self.chunks_zeroed,
            self.chunks_resumed
        )
    }
}

/// Consecutive chunks on their way to the slot.
enum Piece<'m> {
    /// One frame, compressed, from the bundle.
    Data(&'m [Chunk], Vec<u8>),
    /// All-zero chunks.
    Zero(&'m [Chunk]),
    /// Copied from the slots, not yet hash-checked; the flags say which were in place.
    Held(&'m [Chunk], Vec<u8>, u64),
}

/// A piece written: its chunks, their bytes (`None`: zeros) and how they came.
struct Decoded<'m> {
    chunks: &'m [Chunk],
    bytes: Option<Vec<u8>>,
    held: Option<u64>,
}

/// Writes `manifest`'s image into `slot`, starting at chunk `resume_from` (chunks before it
/// are durable from an earlier run). `checkpoint(n)` is called after a sync made the first
/// `n` chunks durable. Returns only when the whole image is on the slot and its hash matched.
///
/// With `active` (the running slot; given for a remote source), chunks the node already
/// holds, in the active slot at any offset or in `slot` at their own, are copied instead of
/// fetched (a delta update with no precomputed diff: bytes fetched follow what changed).
pub fn write_image(
    manifest: &Verified<Manifest>,
    source: &dyn BundleSource,
    slot: &dyn BlockDevice,
    active: Option<&dyn BlockDevice>,
    resume_from: u64,
    options: &WriteOptions,
    mut checkpoint: impl FnMut(u64) -> Result<()>,
) -> Result<WriteReport> {
    let slot_io = |what: &str| Error::io(format!("slot {what}"));
    let chunks = manifest.chunks();
    let start = piece_start(chunks, resume_from);
    let remaining = chunks.get(start..).unwrap_or_default();
    let progress = options.progress.as_deref();
    if let Some(progress) = progress {
        let done: u64 = chunks.iter().take(start).map(|c| u64::from(c.len)).sum();
        progress.start(done, manifest.image_size());
    }
    let held = match active {
        Some(active) => find_held(remaining, manifest.chunking(), active, slot)?,
        None => vec![None; remaining.len()],
    };
    let counters = Counters::default();
    let mut report = WriteReport {
        chunks_resumed: start as u64,
        bundle_bytes: manifest.file_len(),
        ..WriteReport::default()
    };
    let mut stream_hash = (!options.verify_readback)
        .then(|| hash_prefix(slot, chunks, start))
        .transpose()?;
    let mut since_checkpoint = 0u64;
    let source_name = source.name();
    let plan = Plan {
        chunks: remaining,
        held: &held,
        base: start,
    };
    let inputs = PieceReader::new(source, manifest, &plan, active, slot, &counters);
    let shape = Shape {
        workers: options.workers,
        window: options.window,
    };
    ordered_map(
        inputs,
        shape,
        // One zstd context per worker, kept for every piece it decodes.
        || ChunkDecoder::new(manifest).map_err(Error::verify(source_name.as_str())),
        |decoder, piece| decode(decoder, piece, &source_name),
        |decoded| {
            let Some(first) = decoded.chunks.first() else {
                return Ok(());
            };
            let len: u64 = decoded.chunks.iter().map(|c| u64::from(c.len)).sum();
            let count = decoded.chunks.len() as u64;
            match (&decoded.bytes, decoded.held) {
                (Some(bytes), held) => {
                    slot.write_at(bytes, first.image_offset)
                        .map_err(slot_io("write"))?;
                    if let Some(in_place) = held {
                        report.chunks_reused += count;
                        report.bytes_reused += len;
                        report.bytes_reused_in_place += in_place;
                    } else {
                        report.chunks_written += count;
                    }
                }
                (None, _) => {
                    slot.zero_range(first.image_offset, len)
                        .map_err(slot_io("zero-out"))?;
                    report.chunks_zeroed += count;
                }
            }
            if let Some(hasher) = stream_hash.as_mut() {
                feed(hasher, decoded.bytes.as_deref(), len);
            }
            fail::fail_point!("install::chunk-written");
            if let Some(progress) = progress {
                progress.advance(len);
            }
            since_checkpoint += len;
            if since_checkpoint >= options.checkpoint_bytes {
                slot.sync().map_err(slot_io("sync"))?;
                checkpoint(first.index + count)?;
                since_checkpoint = 0;
            }
            Ok(())
        },
    )?;
    slot.sync().map_err(slot_io("sync"))?;
    checkpoint(chunks.len() as u64)?;
    if let Some(progress) = progress {
        progress.finish();
    }
    report.bytes_read = counters.bytes.load(Ordering::Relaxed);
    report.ranges_read = counters.ranges.load(Ordering::Relaxed);

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

/// Where to start: at `resume_from`, moved back to the first chunk of its frame (checkpoints
/// fall between pieces, but a count from an older agent may not).
fn piece_start(chunks: &[Chunk], resume_from: u64) -> usize {
    let mut start = usize::try_from(resume_from)
        .unwrap_or(usize::MAX)
        .min(chunks.len());
    while start > 0
        && chunks
            .get(start)
            .zip(chunks.get(start - 1))
            .is_some_and(|(c, before)| c.frame.is_some() && c.frame == before.frame)
    {
        start -= 1;
    }
    start
}

/// Bytes and ranges read from the source, counted on the reader thread.
#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    ranges: AtomicU64,
}

/// Decompresses and hash-checks a fetched frame, or hash-checks copied chunks, with the
/// worker's decoder; zeros pass through as `None`.
fn decode<'m>(
    decoder: &mut ChunkDecoder,
    piece: Piece<'m>,
    source_name: &str,
) -> Result<Decoded<'m>> {
    match piece {
        Piece::Zero(chunks) => Ok(Decoded {
            chunks,
            bytes: None,
            held: None,
        }),
        Piece::Held(chunks, bytes, in_place) => {
            check_held(chunks, &bytes)?;
            Ok(Decoded {
                chunks,
                bytes: Some(bytes),
                held: Some(in_place),
            })
        }
        Piece::Data(chunks, compressed) => {
            let mut data = Vec::new();
            decoder
                .decode_piece(chunks, &compressed, &mut data)
                .map_err(|e| Error::verify(source_name)(e.into()))?;
            Ok(Decoded {
                chunks,
                bytes: Some(data),
                held: None,
            })
        }
    }
}

/// Every copied chunk must still hash to the manifest's digest: the slots are not trusted.
fn check_held(chunks: &[Chunk], bytes: &[u8]) -> Result<()> {
    let mut at = 0;
    for chunk in chunks {
        let part = bytes.get(at..at + chunk.len as usize).unwrap_or_default();
        at += chunk.len as usize;
        if Sha256Digest(Sha256::digest(part).into()) != chunk.sha256 {
            return Err(Error::Io {
                context: format!("copying chunk {} from the slots", chunk.index),
                source: std::io::Error::other("a slot changed during the install"),
            });
        }
    }
    Ok(())
}

fn feed(hasher: &mut Sha256, data: Option<&[u8]>, len: u64) {
    match data {
        Some(bytes) => hasher.update(bytes),
        None => {
            let zeros = [0u8; 64 << 10];
            let mut left = usize::try_from(len).unwrap_or(usize::MAX);
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

/// Which chunks from `base` on are held, and where.
struct Plan<'m> {
    chunks: &'m [Chunk],
    held: &'m [Option<Held>],
    /// Index of `chunks[0]` in the manifest.
    base: usize,
}

impl Plan<'_> {
    fn held(&self, chunk: &Chunk) -> Option<Held> {
        let i = usize::try_from(chunk.index).ok()?.checked_sub(self.base)?;
        self.held.get(i).copied().flatten()
    }

    /// Whether the piece's frame must be fetched: some chunk of it is not held.
    fn fetches(&self, piece: &[Chunk]) -> bool {
        piece.first().is_some_and(|c| !c.is_zero()) && piece.iter().any(|c| self.held(c).is_none())
    }
}

/// Gaps between frames to fetch up to this size are read through rather than starting
/// another range: a request and its response headers cost about as much.
const COALESCE_GAP: u64 = 1024;
/// Copied or zeroed pieces are handed on in items of about this many bytes.
const ITEM_BYTES: u64 = 1 << 20;

/// Yields the pieces in order on the pipeline's reader thread: zero runs, runs of held pieces
/// read from the slots, and fetched frames read through one stream per run of frames to fetch
/// (reopened only when the next frame is not where the stream stands).
struct PieceReader<'m> {
    source: &'m dyn BundleSource,
    plan: &'m Plan<'m>,
    pieces: std::iter::Peekable<Box<dyn Iterator<Item = &'m [Chunk]> + Send + 'm>>,
    active: Option<&'m dyn BlockDevice>,
    target: &'m dyn BlockDevice,
    counters: &'m Counters,
    payload_offset: u64,
    payload_end: u64,
    stream: Option<(u64, Box<dyn Read + Send>)>,
}

impl<'m> PieceReader<'m> {
    fn new(
        source: &'m dyn BundleSource,
        manifest: &'m Manifest,
        plan: &'m Plan<'m>,
        active: Option<&'m dyn BlockDevice>,
        target: &'m dyn BlockDevice,
        counters: &'m Counters,
    ) -> Self {
        let pieces: Box<dyn Iterator<Item = &'m [Chunk]> + Send + 'm> =
            Box::new(pieces(plan.chunks));
        PieceReader {
            source,
            plan,
            pieces: pieces.peekable(),
            active,
            target,
            counters,
            payload_offset: manifest.payload_offset(),
            payload_end: manifest.payload_offset() + manifest.payload_len(),
            stream: None,
        }
    }

    fn next_piece(&mut self) -> Option<Result<Piece<'m>>> {
        let piece = self.pieces.next()?;
        let first = piece.first()?;
        if first.is_zero() {
            return Some(Ok(Piece::Zero(self.extend(piece, |c| c.is_zero()))));
        }
        if self.plan.fetches(piece) {
            return Some(self.fetch(piece));
        }
        let plan = self.plan;
        let run = self.extend(piece, |c| !c.is_zero() && plan.held(c).is_some());
        Some(self.copy(run))
    }

    /// `piece` extended over the following pieces whose chunks all pass `like`, up to about
    /// [`ITEM_BYTES`] (pieces are consecutive, so the run is one slice of the plan).
    fn extend(&mut self, piece: &'m [Chunk], like: impl Fn(&Chunk) -> bool) -> &'m [Chunk] {
        let mut count = piece.len();
        let mut bytes: u64 = piece.iter().map(|c| u64::from(c.len)).sum();
        while bytes < ITEM_BYTES {
            let Some(next) = self.pieces.next_if(|p| p.iter().all(&like)) else {
                break;
            };
            count += next.len();
            bytes += next.iter().map(|c| u64::from(c.len)).sum::<u64>();
        }
        let start = piece
            .first()
            .and_then(|c| usize::try_from(c.index).ok())
            .map_or(0, |i| i - self.plan.base);
        self.plan.chunks.get(start..start + count).unwrap_or(piece)
    }

    /// The held chunks' bytes, read from where the plan found them (not yet hash-checked).
    fn copy(&self, run: &'m [Chunk]) -> Result<Piece<'m>> {
        let len: usize = run.iter().map(|c| c.len as usize).sum();
        let mut bytes = Vec::with_capacity(len);
        let mut in_place = 0u64;
        let mut buf = Vec::new();
        for chunk in run {
            let (device, offset) = match self.plan.held(chunk) {
                Some(Held::Active(offset)) => (self.active.unwrap_or(self.target), offset),
                _ => {
                    in_place += u64::from(chunk.len);
                    (self.target, chunk.image_offset)
                }
            };
            buf.resize(chunk.len as usize, 0);
            device.read_at(&mut buf, offset).map_err(Error::io(format!(
                "copying chunk {} from the slots",
                chunk.index
            )))?;
            bytes.extend_from_slice(&buf);
        }
        Ok(Piece::Held(run, bytes, in_place))
    }

    /// Where the run of frames to fetch that starts at `from` (a payload offset) ends: after
    /// the last frame to fetch before a gap wider than [`COALESCE_GAP`], or at the payload's
    /// end.
    fn run_end(&self, piece: &[Chunk]) -> u64 {
        let after = piece
            .last()
            .and_then(|c| usize::try_from(c.index).ok())
            .map_or(0, |i| i + 1 - self.plan.base);
        let mut end = frame_end(piece, self.payload_offset);
        for next in pieces(self.plan.chunks.get(after..).unwrap_or_default()) {
            let Some(frame) = next.first().and_then(|c| c.frame) else {
                continue;
            };
            let start = self.payload_offset + frame.offset;
            if start.saturating_sub(end) > COALESCE_GAP {
                break;
            }
            if self.plan.fetches(next) {
                end = start + frame.length;
            }
        }
        end.min(self.payload_end)
    }

    fn read_failed(&self, chunk: &Chunk, error: std::io::Error) -> Error {
        source_failure(self.source, &format!("chunk {}", chunk.index), error)
    }

    fn fetch(&mut self, piece: &'m [Chunk]) -> Result<Piece<'m>> {
        let Some((chunk, frame)) = piece.first().and_then(|c| Some((c, c.frame?))) else {
            return Err(Error::io("fetching a frame")(std::io::Error::other(
                "a piece without a frame",
            )));
        };
        let start = self.payload_offset + frame.offset;
        let mut stream = match self.stream.take() {
            Some((position, stream)) if position <= start && start - position <= COALESCE_GAP => {
                let mut stream = stream;
                let gap = start - position;
                std::io::copy(&mut (&mut stream).take(gap), &mut std::io::sink())
                    .map_err(|e| self.read_failed(chunk, e))?;
                self.counters.bytes.fetch_add(gap, Ordering::Relaxed);
                stream
            }
            _ => {
                self.counters.ranges.fetch_add(1, Ordering::Relaxed);
                self.source.read_range(start..self.run_end(piece))?
            }
        };
        let mut bytes = Vec::with_capacity(frame.length as usize);
        (&mut stream)
            .take(frame.length)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_failed(chunk, e))?;
        if bytes.len() as u64 != frame.length {
            return Err(self.read_failed(chunk, std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.counters
            .bytes
            .fetch_add(frame.length, Ordering::Relaxed);
        self.stream = Some((start + frame.length, stream));
        Ok(Piece::Data(piece, bytes))
    }
}

impl<'m> Iterator for PieceReader<'m> {
    type Item = Result<Piece<'m>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_piece()
    }
}

/// The file offset where a piece's frame ends (its start for a zero piece).
fn frame_end(piece: &[Chunk], payload_offset: u64) -> u64 {
    piece
        .first()
        .and_then(|c| c.frame)
        .map_or(payload_offset, |f| payload_offset + f.offset + f.length)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_slot_that_changed_after_the_scan_is_caught_before_the_write() {
        let bytes = vec![7u8; 4096];
        let chunk = Chunk {
            index: 3,
            image_offset: 0,
            len: 4096,
            sha256: Sha256Digest::of(&bytes),
            frame: None,
        };
        let chunks = [chunk];
        assert!(check_held(&chunks, &bytes).is_ok());
        let mut changed = bytes;
        changed[100] ^= 1;
        let error = check_held(&chunks, &changed).unwrap_err().to_string();
        assert!(
            error.contains("chunk 3") && error.contains("changed"),
            "{error}"
        );
    }
}
