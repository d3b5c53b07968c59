//! The install pipeline (docs/DESIGN.md §6 step 2, §8): stream a verified bundle's image into a
//! slot.
//!
//! The image is written piece by piece ([`pieces`]: an all-zero chunk, or the chunks of one
//! frame). Over a network, chunks the node already holds are found first ([`crate::seed`]):
//! a piece whose chunks are all held is copied from the slots, hashed again as it is read;
//! only the other frames are fetched, in parts planned before the write (byte ranges of up to
//! about 1 MiB that cover runs of them, small gaps read through), four requests in flight (one
//! from a local file), handed on in order. Pieces are decompressed and hash-checked on all
//! cores and written in order; all-zero chunks are zeroed cheaply (a punched hole, a
//! zero-out). Every `checkpoint_bytes` the slot is synced and the caller records how many
//! chunks are durable, so a cut install resumes there. At the end the slot is synced, then by
//! default re-read and the whole image hashed, which catches a disk that returns what we did
//! not write; without the read-back the chunks' own checks stand for the image.

use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use bundle::index::{IndexFile, StreamedIndex};
use bundle::schema::{pieces, StoredFrame};
use bundle::verify::Verified;
use bundle::ChunkDecoder;
use bundle::{Chunk, Manifest, Sha256Digest};
use partitions::io::{BlockDevice, DIRECT_ALIGN};
use pipeline::{ordered_map, Shape};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::held_groups::HeldGroups;
use crate::seed::{Held, Seed, Slot, SlotScan};
use crate::segments::{ImageIndex, Segments};
use crate::sorted_runs::scratch_file;
use crate::sorted_runs::Limits;
use repo_client::BundleBytes;

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
    /// Where the bundle's chunk index is spilled (an unnamed file, gone when the write
    /// ends): the agent's state directory; the system's temporary directory without one.
    pub scratch_dir: Option<std::path::PathBuf>,
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
            scratch_dir: None,
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
    /// Bytes of the chunk index fetched (a node that holds a group of chunks of a tree index
    /// fetches none of its hashes).
    pub index_bytes_read: u64,
}

impl WriteReport {
    /// What a fleet report says of this write: bytes fetched, reused, and the bundle's size.
    pub fn transfer(&self) -> proto::Transfer {
        proto::Transfer {
            bytes_fetched: self.bytes_read,
            bytes_reused: self.bytes_reused,
            bundle_bytes: self.bundle_bytes,
        }
    }
}

impl std::fmt::Display for WriteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes fetched of a {}-byte bundle in {} ranges, and {} of its chunk index; {} bytes reused ({} from the active slot, {} in place); {} chunks written, {} reused, {} zeroed, {} resumed",
            self.bytes_read,
            self.bundle_bytes,
            self.ranges_read,
            self.index_bytes_read,
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
    Data(&'m [Chunk], FrameBytes),
    /// All-zero chunks.
    Zero(&'m [Chunk]),
    /// Copied from the slots, not yet hash-checked; the flags say which were in place.
    Held(&'m [Chunk], Vec<u8>, u64),
    /// One frame's chunks, those the slots hold copied (not yet hash-checked) into their
    /// place in the bytes, the others' own frames fetched from the chunk store.
    Mixed(&'m [Chunk], Vec<u8>, Vec<(usize, FrameBytes)>, Reuse),
}

/// What the slots gave of a piece.
#[derive(Debug, Clone, Copy, Default)]
struct Reuse {
    chunks: u64,
    bytes: u64,
    /// Of `bytes`, those found in place in the target slot.
    in_place: u64,
}

/// A piece written: its chunks, their bytes (`None`: zeros) and what the slots gave.
struct Decoded<'m> {
    chunks: &'m [Chunk],
    bytes: Option<Vec<u8>>,
    reused: Reuse,
}

/// Writes the image of `index` (its manifest's root image, or a partition image) into `slot`,
/// its chunks walked segment by segment ([`ImageIndex`]), starting at chunk `resume_from`
/// (chunks before it are durable from an earlier run). `checkpoint(n)` is called after a sync made the first
/// `n` chunks durable. Returns only when the whole image is on the slot and its hash matched.
///
/// With `active` (the running slot; given for a remote source), chunks the node already
/// holds, in the active slot at any offset or in `slot` at their own, are copied instead of
/// fetched (a delta update with no precomputed diff: bytes fetched follow what changed);
/// with a store in `sources`, the release's chunk store (FORMAT §3.4), a frame holding chunks the node
/// lacks is fetched whole or as those chunks' own frames from the store, whichever costs
/// fewer bytes ([`Plan::fetch_of`]).
pub fn write_image(
    index: &ImageIndex<'_>,
    sources: Sources<'_>,
    slot: &dyn BlockDevice,
    active: Option<&dyn BlockDevice>,
    resume_from: u64,
    options: &WriteOptions,
    mut checkpoint: impl FnMut(u64) -> Result<()>,
) -> Result<WriteReport> {
    let slot_io = |what: &str| Error::io(format!("slot {what}"));
    let manifest = index.manifest();
    let (start, done) = resume_point(
        index.segments()?,
        slot,
        resume_from,
        options.verify_readback && !index.rechecks_resumed(),
    )?;
    let progress = options.progress.as_deref();
    if let Some(progress) = progress {
        progress.start(done, index.size());
    }
    // Over a network, the chunks the node holds are found first, in one scan of the slot.
    let scratch = options.scratch_dir.as_deref();
    let mut seed = match (active, index.slot_scan()) {
        (Some(_), Some(scan)) => Some(Seed::of_scan(index.chunks()?, scan, scratch)?),
        (Some(active), None) => Some(Seed::scan(
            index.chunks()?,
            index.chunking(),
            active,
            scratch,
        )?),
        (None, _) => None,
    };
    let source = sources.bundle;
    let store = sources
        .store
        .filter(|store| seed.is_some() && store_reachable(*store));
    let counters = Counters::default();
    let buffers = Buffers::default();
    let mut writer = Writer {
        buffers: &buffers,
        manifest,
        source,
        store,
        slot,
        active,
        options,
        counters: &counters,
        report: WriteReport {
            chunks_resumed: start,
            bundle_bytes: manifest.file_len(),
            ..WriteReport::default()
        },
        since_checkpoint: 0,
        checkpoint: &mut checkpoint,
    };
    for segment in index.segments()? {
        let segment = segment?;
        let (Some(first), Some(last)) = (segment.first(), segment.last()) else {
            continue;
        };
        if last.index() < start {
            continue;
        }
        let from = piece_start(&segment, start.saturating_sub(first.index()));
        let remaining = segment.get(from..).unwrap_or_default();
        let held = match (&mut seed, active) {
            (Some(seed), Some(active)) => seed.held(remaining, active, slot)?,
            // No chunk is held: an empty plan says so for every chunk.
            _ => Vec::new(),
        };
        writer.write(remaining, &held)?;
    }
    let mut report = writer.report;
    report.bytes_read = counters.bytes.load(Ordering::Relaxed);
    report.ranges_read = counters.ranges.load(Ordering::Relaxed);
    slot.sync().map_err(slot_io("sync"))?;
    checkpoint(index.chunk_count())?;
    if let Some(progress) = progress {
        progress.finish();
    }

    // Every chunk was checked against the signed index before it was written (and the
    // index's chunks tile the image): the read-back adds what the disk stored, not the
    // page cache's copy of what we wrote.
    if !options.verify_readback {
        return Ok(report);
    }
    slot.drop_cache(0, index.size())
        .map_err(slot_io("cache drop"))?;
    let actual = hash_slot(slot, 0, index.size())?;
    if actual != index.sha256() {
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
                    index.sha256().to_hex()
                ),
            ),
        });
    }
    Ok(report)
}

/// Where a write resumes: the first chunk to write (`resume_from` moved back to the first
/// chunk of its frame) and the bytes before it. Without the read-back nothing at the end looks
/// at what an earlier run wrote: its chunks are checked now, and an image that does not match
/// is written again whole.
fn resume_point(
    segments: Segments<'_>,
    slot: &dyn BlockDevice,
    resume_from: u64,
    verify_readback: bool,
) -> Result<(u64, u64)> {
    if resume_from == 0 {
        return Ok((0, 0));
    }
    let (mut done, mut count) = (0u64, 0u64);
    for segment in segments {
        let segment = segment?;
        let Some(first) = segment.first() else {
            continue;
        };
        count += segment.len() as u64;
        let before = segment
            .get(..piece_start(&segment, resume_from.saturating_sub(first.index())))
            .unwrap_or_default();
        if !verify_readback && !slot_holds(slot, before)? {
            return Ok((0, 0));
        }
        done += before.iter().map(|c| u64::from(c.len())).sum::<u64>();
        if before.len() < segment.len() {
            return Ok((first.index() + before.len() as u64, done));
        }
    }
    Ok((count, done))
}

/// The pipeline of one segment, and what every segment shares: the devices, the counters,
/// the report, and the bytes since the last checkpoint.
struct Writer<'w> {
    manifest: &'w Manifest,
    source: &'w dyn BundleBytes,
    store: Option<&'w dyn BundleBytes>,
    slot: &'w dyn BlockDevice,
    active: Option<&'w dyn BlockDevice>,
    options: &'w WriteOptions,
    counters: &'w Counters,
    buffers: &'w Buffers,
    report: WriteReport,
    since_checkpoint: u64,
    checkpoint: &'w mut dyn FnMut(u64) -> Result<()>,
}

impl Writer<'_> {
    /// Writes `chunks` (whole pieces), `held` saying which the slots hold (empty: none).
    fn write(&mut self, chunks: &[Chunk], held: &[Option<Held>]) -> Result<()> {
        let Some(first) = chunks.first() else {
            return Ok(());
        };
        let plan = Plan {
            chunks,
            held,
            base: usize::try_from(first.index()).unwrap_or(usize::MAX),
            store: self.store.is_some(),
        };
        let parts = plan.parts(self.manifest.payload_offset());
        let shape = Shape {
            workers: self.options.workers,
            window: self.options.window,
        };
        let source_name = self.source.name();
        let (manifest, source, slot, active) = (self.manifest, self.source, self.slot, self.active);
        let (counters, buffers) = (self.counters, self.buffers);
        let sources = Sources {
            bundle: source,
            store: self.store,
        };
        with_fetches(sources, &parts, counters, |fetched| {
            let inputs = PieceReader::new(manifest, &plan, (active, slot), fetched, buffers);
            ordered_map(
                inputs,
                shape,
                // One zstd context per worker, kept for every piece it decodes.
                || ChunkDecoder::new(manifest).map_err(Error::verify(source_name.as_str())),
                |decoder, piece| decode(decoder, piece, &source_name, buffers),
                |decoded| self.put(decoded),
            )
        })
    }

    /// Writes one decoded piece, counts it, and checkpoints when due.
    fn put(&mut self, decoded: Decoded<'_>) -> Result<()> {
        let slot_io = |what: &str| Error::io(format!("slot {what}"));
        let Some(first) = decoded.chunks.first() else {
            return Ok(());
        };
        let len: u64 = decoded.chunks.iter().map(|c| u64::from(c.len())).sum();
        let count = decoded.chunks.len() as u64;
        let report = &mut self.report;
        match &decoded.bytes {
            Some(bytes) => {
                self.slot
                    .write_at(bytes, first.image_offset())
                    .map_err(slot_io("write"))?;
                let reused = decoded.reused;
                report.chunks_reused += reused.chunks;
                report.bytes_reused += reused.bytes;
                report.bytes_reused_in_place += reused.in_place;
                report.chunks_written += count - reused.chunks;
            }
            None => {
                zero(self.slot, first.image_offset(), len).map_err(slot_io("zero-out"))?;
                report.chunks_zeroed += count;
            }
        }
        if let Some(bytes) = decoded.bytes {
            self.buffers
                .give(bytes, self.options.window + self.options.workers);
        }
        fail::fail_point!("install::chunk-written");
        if let Some(progress) = self.options.progress.as_deref() {
            progress.advance(len);
        }
        self.since_checkpoint += len;
        if self.since_checkpoint >= self.options.checkpoint_bytes {
            self.slot.sync().map_err(slot_io("sync"))?;
            (self.checkpoint)(first.index() + count)?;
            self.since_checkpoint = 0;
        }
        Ok(())
    }
}

/// The chunks of `manifest`: its own list, or its stored index fetched from `source` into an
/// unnamed file in `scratch` (the system's temporary directory without one), hashed as it is
/// copied, and proven whole before a chunk is handed out ([`bundle::index::IndexFile`]).
/// With `active` (the running slot, for a remote source) and a tree index, the hashes of the
/// groups of chunks the slot holds at their own offsets are taken from it, not fetched
/// ([`crate::held_groups`]).
pub fn open_index<'m>(
    manifest: &'m Verified<Manifest>,
    source: &dyn BundleBytes,
    scratch: Option<&std::path::Path>,
    active: Option<&dyn BlockDevice>,
) -> Result<ImageIndex<'m>> {
    let Some(index) = manifest.streamed_index() else {
        return Ok(ImageIndex::listed(manifest));
    };
    let file = scratch_file(scratch).map_err(Error::io("creating a file for the chunk index"))?;
    if let (Some(_), Some(active)) = (index.tree(), active) {
        return spill_held(manifest, index, source, file, active, scratch);
    }
    let stored = source.read_range(index.range())?;
    let file = IndexFile::spill(index, stored, file).map_err(index_error(source))?;
    let fetched = index.range().end - index.range().start;
    Ok(ImageIndex::spilled(manifest, file, fetched))
}

/// A tree index whose groups `active` holds are filled from it: the head fetched and proven,
/// the slot scanned once (the scan kept for the seed, [`Seed::of_scan`]), the other groups'
/// hashes fetched.
fn spill_held<'m>(
    manifest: &'m Verified<Manifest>,
    index: &StreamedIndex,
    source: &dyn BundleBytes,
    file: std::fs::File,
    active: &dyn BlockDevice,
    scratch: Option<&std::path::Path>,
) -> Result<ImageIndex<'m>> {
    let head_range = index.head_range();
    let head = source.read_range(head_range.clone())?;
    let head = IndexFile::spill_head(index, head, file).map_err(index_error(source))?;
    let mut held = HeldGroups::new(&head)?;
    let chunking = manifest.chunking();
    let scan = SlotScan::new(
        active,
        chunking,
        scratch,
        Limits::default(),
        |at, len, sha256| held.observe(at, len, sha256),
    )?;
    let (groups, saved) = (held.held, held.bytes_saved);
    let mut fetched = head_range.end - head_range.start;
    let file = head
        .complete(|range| {
            fetched += range.end - range.start;
            source.read_range(range).map_err(std::io::Error::other)
        })
        .map_err(index_error(source))?;
    tracing::info!(
        groups_held = groups,
        hash_bytes_not_fetched = saved,
        index_bytes_fetched = fetched,
        "chunk index: the hashes of groups the running slot holds were taken from it"
    );
    Ok(ImageIndex::spilled(manifest, file, fetched).with_scan(scan))
}

/// An error reading or proving the chunk index of `source`.
fn index_error(source: &dyn BundleBytes) -> impl Fn(bundle::Error) -> Error + '_ {
    move |e| match e {
        bundle::Error::Io { source: error, .. } => source_failure(source, "the chunk index", error),
        e => Error::verify(source.name())(e),
    }
}

/// Zero runs up to this long are written as zeros: a filesystem image has thousands of
/// single all-zero 4 KiB blocks among its data, and a hole punched for each costs more than
/// the write.
const SMALL_ZERO_RUN: usize = 64 << 10;

/// Zeroes `len` bytes of `slot` at `offset`: written when short, else a punched hole or a
/// zero-out ([`BlockDevice::zero_range`]).
fn zero(slot: &dyn BlockDevice, offset: u64, len: u64) -> std::io::Result<()> {
    static ZEROS: [u8; SMALL_ZERO_RUN] = [0; SMALL_ZERO_RUN];
    match usize::try_from(len).ok().and_then(|n| ZEROS.get(..n)) {
        Some(zeros) => slot.write_at(zeros, offset),
        None => slot.zero_range(offset, len),
    }
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
            .is_some_and(|(c, before)| c.frame().is_some() && c.frame() == before.frame())
    {
        start -= 1;
    }
    start
}

/// Buffers of decoded frames the writer handed back, for the workers to fill again: a 1 MiB
/// buffer made on a worker and freed on the writer would otherwise go back to the C library
/// and be asked for again at every frame (an `mmap` and its page faults each time, with the
/// mmap threshold fixed: docs/DESIGN.md §8 "Memory").
#[derive(Default)]
struct Buffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl Buffers {
    /// A buffer handed back, or a new one.
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut held| held.pop())
            .unwrap_or_default()
    }

    /// Keeps `buffer` for a later [`Buffers::take`], unless `keep` are kept already.
    fn give(&self, buffer: Vec<u8>, keep: usize) {
        if let Ok(mut held) = self.0.lock() {
            if held.len() < keep {
                held.push(buffer);
            }
        }
    }
}

/// Bytes and ranges read from the source, counted by the fetch threads.
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
    buffers: &Buffers,
) -> Result<Decoded<'m>> {
    match piece {
        Piece::Zero(chunks) => Ok(Decoded {
            chunks,
            bytes: None,
            reused: Reuse::default(),
        }),
        Piece::Held(chunks, bytes, in_place) => {
            check_held(chunks, &bytes)?;
            let reused = Reuse {
                chunks: chunks.len() as u64,
                bytes: bytes.len() as u64,
                in_place,
            };
            Ok(Decoded {
                chunks,
                bytes: Some(bytes),
                reused,
            })
        }
        Piece::Data(chunks, compressed) => {
            let mut data = buffers.take();
            decoder
                .decode_piece(chunks, compressed.bytes(), &mut data)
                .map_err(|e| Error::verify(source_name)(e.into()))?;
            Ok(Decoded {
                chunks,
                bytes: Some(data),
                reused: Reuse::default(),
            })
        }
        Piece::Mixed(chunks, mut bytes, fetched, reused) => {
            decode_mixed(decoder, chunks, &mut bytes, &fetched, source_name)?;
            Ok(Decoded {
                chunks,
                bytes: Some(bytes),
                reused,
            })
        }
    }
}

/// A mixed piece's bytes: each chunk fetched from the store decoded into its place and
/// checked ([`ChunkDecoder::decode_store_frame`]), then every chunk's hash checked, the
/// copied ones' too ([`check_held`]). `source_name` is the bundle's, whose store it is.
fn decode_mixed(
    decoder: &mut ChunkDecoder,
    chunks: &[Chunk],
    bytes: &mut [u8],
    fetched: &[(usize, FrameBytes)],
    source_name: &str,
) -> Result<()> {
    let store_name = proto::chunk_store_path(source_name);
    let mut fetched = fetched.iter().peekable();
    let mut at = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let len = chunk.len() as usize;
        let out = bytes.get_mut(at..at + len).unwrap_or_default();
        at += len;
        match fetched.next_if(|(j, _)| *j == i) {
            Some((_, frame)) => decoder
                .decode_store_frame(chunk, frame.bytes(), out)
                .map_err(|e| Error::verify(&store_name)(e.into()))?,
            None => check_held(std::slice::from_ref(chunk), out)?,
        }
    }
    Ok(())
}

/// Every copied chunk must still hash to the manifest's digest: the slots are not trusted.
fn check_held(chunks: &[Chunk], bytes: &[u8]) -> Result<()> {
    let mut at = 0;
    for chunk in chunks {
        let part = bytes.get(at..at + chunk.len() as usize).unwrap_or_default();
        at += chunk.len() as usize;
        if Sha256Digest(Sha256::digest(part).into()) != chunk.sha256() {
            return Err(Error::Io {
                context: format!("copying chunk {} from the slots", chunk.index()),
                source: std::io::Error::other("a slot changed during the install"),
            });
        }
    }
    Ok(())
}

/// Whether `slot` holds each of `chunks` at its offset.
fn slot_holds(slot: &dyn BlockDevice, chunks: &[Chunk]) -> Result<bool> {
    let slot = Slot::new(slot)?;
    let mut buf = Vec::new();
    for chunk in chunks {
        if !slot.holds(chunk, chunk.image_offset(), &mut buf)? {
            tracing::warn!(
                chunk = chunk.index(),
                "the slot no longer holds what an earlier run wrote: writing the image again"
            );
            return Ok(false);
        }
    }
    Ok(true)
}

/// SHA-256 of `len` bytes of the slot from `offset`.
pub fn hash_slot(slot: &dyn BlockDevice, offset: u64, len: u64) -> Result<Sha256Digest> {
    let mut hasher = Sha256::new();
    read_slot(slot, offset, len, |block| hasher.update(block))?;
    Ok(Sha256Digest(hasher.finalize().into()))
}

/// The read-back reads the slot in blocks of this size.
const READ_BLOCK: usize = 2 << 20;

/// Hands `f` `len` bytes of the slot from `offset`, block by block, in order, as the medium
/// holds them ([`BlockDevice::read_uncached`]: into buffers aligned for `O_DIRECT`, no copy
/// through the page cache). A thread reads the next block while `f` takes the last (the
/// read-back's time is the disk's and the hash's: overlapped, not added); at most three
/// blocks are alive.
fn read_slot(
    slot: &dyn BlockDevice,
    offset: u64,
    len: u64,
    mut f: impl FnMut(&[u8]),
) -> Result<()> {
    std::thread::scope(|scope| {
        let (to_reader, blocks) = sync_channel::<std::io::Result<(AlignedBlock, usize)>>(1);
        let (recycle, recycled) = std::sync::mpsc::channel::<AlignedBlock>();
        scope.spawn(move || {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(READ_BLOCK as u64) as usize;
                let mut block = recycled.try_recv().unwrap_or_else(|_| AlignedBlock::new());
                let read = slot
                    .read_uncached(block.get_mut(n), offset + done)
                    .map(|()| (block, n));
                let failed = read.is_err();
                if to_reader.send(read).is_err() || failed {
                    return;
                }
                done += n as u64;
            }
        });
        for block in blocks {
            let (mut block, n) = block.map_err(Error::io("reading the slot back"))?;
            f(block.get_mut(n));
            // The reader may be done: a block it no longer needs is just dropped.
            let _ = recycle.send(block);
        }
        Ok(())
    })
}

/// A [`READ_BLOCK`] buffer whose start is aligned to [`DIRECT_ALIGN`].
struct AlignedBlock {
    bytes: Vec<u8>,
    /// Where the aligned bytes start.
    start: usize,
}

impl AlignedBlock {
    fn new() -> Self {
        let bytes = vec![0u8; READ_BLOCK + DIRECT_ALIGN];
        let start = (DIRECT_ALIGN - bytes.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        AlignedBlock { bytes, start }
    }

    /// The first `n` aligned bytes (at most [`READ_BLOCK`]).
    fn get_mut(&mut self, n: usize) -> &mut [u8] {
        let end = self.start + n.min(READ_BLOCK);
        self.bytes.get_mut(self.start..end).unwrap_or_default()
    }
}

/// A read of `what` from `source` that failed: a network failure for a remote source, else
/// I/O (never "damaged input": the bytes did not arrive, they were not wrong).
pub(crate) fn source_failure(source: &dyn BundleBytes, what: &str, error: std::io::Error) -> Error {
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
    /// The release's chunk store can be fetched from.
    store: bool,
}

/// How a piece's chunks the node lacks are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// Nothing to fetch: zeros, or every chunk held.
    Nothing,
    /// The piece's frame from the bundle.
    Frame,
    /// The lacking chunks' own frames from the chunk store.
    Store,
}

/// What a request costs besides the bytes it fetches (its request and response headers),
/// in the plan's choice between a bundle frame and store frames.
const RANGE_OVERHEAD: u64 = 400;

/// Whether fetching the lacking chunks' own `store` frames (offset, length, in order; `None`
/// for a chunk the store does not hold) costs fewer bytes than the piece's `frame_len`-byte
/// frame, each range counted with [`RANGE_OVERHEAD`] and adjacent store frames one range.
fn store_is_cheaper(frame_len: u64, store: impl IntoIterator<Item = Option<StoredFrame>>) -> bool {
    let mut cost = 0u64;
    let mut end: Option<u64> = None;
    for frame in store {
        let Some(frame) = frame else {
            return false;
        };
        if end != Some(frame.offset) {
            cost += RANGE_OVERHEAD;
        }
        cost += frame.length;
        end = Some(frame.offset + frame.length);
    }
    cost < frame_len + RANGE_OVERHEAD
}

impl Plan<'_> {
    fn held(&self, chunk: &Chunk) -> Option<Held> {
        let i = usize::try_from(chunk.index())
            .ok()?
            .checked_sub(self.base)?;
        self.held.get(i).copied().flatten()
    }

    /// Whether the piece's frame must be fetched: some chunk of it is not held.
    fn fetches(&self, piece: &[Chunk]) -> bool {
        piece.first().is_some_and(|c| !c.is_zero()) && piece.iter().any(|c| self.held(c).is_none())
    }

    /// The chunks of `piece` the node lacks.
    fn lacking<'p>(&'p self, piece: &'p [Chunk]) -> impl Iterator<Item = &'p Chunk> + 'p {
        piece.iter().filter(|c| self.held(c).is_none())
    }

    /// How `piece` is fetched: not at all, its frame, or with a store the lacking chunks'
    /// own frames when they cost fewer bytes ([`store_is_cheaper`]).
    fn fetch_of(&self, piece: &[Chunk]) -> Fetch {
        let Some(frame) = piece.first().and_then(|c| c.frame()) else {
            return Fetch::Nothing;
        };
        if !self.fetches(piece) {
            return Fetch::Nothing;
        }
        if self.store && store_is_cheaper(frame.length, self.lacking(piece).map(|c| c.store())) {
            Fetch::Store
        } else {
            Fetch::Frame
        }
    }

    /// The parts that fetch what the pieces need ([`plan_parts`]): bundle frames at file
    /// offsets (the payload starts at `payload_offset`), store frames at store offsets.
    fn parts(&self, payload_offset: u64) -> Vec<Part> {
        let wanted = pieces(self.chunks).flat_map(|piece| {
            let frames: Vec<FrameAt> = match (self.fetch_of(piece), piece.first()) {
                (Fetch::Frame, Some(first)) => first
                    .frame()
                    .map(|frame| FrameAt {
                        file: File::Bundle,
                        chunk: first.index(),
                        offset: payload_offset + frame.offset,
                        length: frame.length,
                        fetch: true,
                    })
                    .into_iter()
                    .collect(),
                (Fetch::Store, _) => self
                    .lacking(piece)
                    .filter_map(|c| {
                        let frame = c.store()?;
                        Some(FrameAt {
                            file: File::Store,
                            chunk: c.index(),
                            offset: frame.offset,
                            length: frame.length,
                            fetch: true,
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            frames
        });
        plan_parts(wanted)
    }
}

/// Gaps between frames to fetch up to this size are read through rather than starting
/// another range: a request and its response headers cost about as much.
const COALESCE_GAP: u64 = 1024;
/// A part (one request) covers frames up to about this many bytes (a frame holds at most
/// 1 MiB of chunks): large enough that a full install costs few requests, small enough that
/// the parts in flight hold little memory.
const PART_BYTES: u64 = 1 << 20;
/// Parts fetched at once. Over a network each request costs a round trip, and a delta may
/// need thousands of small ones (one per changed 4 KiB chunk): four in flight hide most of the
/// latency without opening many connections to one server. A local file has no round trip
/// to hide: one read at a time keeps up with decompression, with fewer parts in memory.
const FETCHES_IN_FLIGHT: usize = 4;
/// A fetch reads its part in steps of this many bytes, checking between them whether the
/// install stopped.
const READ_STEP: u64 = 64 << 10;
/// Copied or zeroed pieces are handed on in items of about this many bytes.
const ITEM_BYTES: u64 = 1 << 20;

/// The file a part is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    /// The bundle.
    Bundle,
    /// The release's chunk store.
    Store,
}

/// One request: a byte range of the bundle file or the chunk store (absolute offsets)
/// covering frames to fetch and the gaps between them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    file: File,
    range: Range<u64>,
    /// The first chunk whose frame it holds (named in errors).
    chunk: u64,
}

/// A frame of the payload or the store, in order: where it lies in its file and whether to
/// fetch it.
#[derive(Debug, Clone, Copy)]
struct FrameAt {
    file: File,
    /// The first chunk of the frame.
    chunk: u64,
    offset: u64,
    length: u64,
    fetch: bool,
}

/// The parts that fetch every frame marked `fetch`, in order: a frame joins the part before
/// it when the gap between them is at most [`COALESCE_GAP`] and the part stays within
/// [`PART_BYTES`]. A frame is never split: a larger one is a part alone.
fn plan_parts(frames: impl IntoIterator<Item = FrameAt>) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    for frame in frames.into_iter().filter(|f| f.fetch) {
        let end = frame.offset + frame.length;
        match parts.last_mut() {
            Some(part)
                if part.file == frame.file
                    && frame.offset >= part.range.end
                    && frame.offset - part.range.end <= COALESCE_GAP
                    && end - part.range.start <= PART_BYTES =>
            {
                part.range.end = end;
            }
            _ => parts.push(Part {
                file: frame.file,
                range: frame.offset..end,
                chunk: frame.chunk,
            }),
        }
    }
    parts
}

/// A fetched part: its file, the offset of its first byte, and its bytes.
type Fetched = (File, u64, Vec<u8>);

/// The files an image is read from: its bundle, and the release's chunk store when it has
/// one (FORMAT §3.4; it may be missing on the server).
#[derive(Clone, Copy)]
pub struct Sources<'s> {
    /// The bundle.
    pub bundle: &'s dyn BundleBytes,
    /// The chunk store.
    pub store: Option<&'s dyn BundleBytes>,
}

impl<'s> Sources<'s> {
    /// The source of `file` (the bundle when there is no store: no part names it then).
    fn of(&self, file: File) -> &'s dyn BundleBytes {
        match (file, self.store) {
            (File::Store, Some(store)) => store,
            _ => self.bundle,
        }
    }
}

/// Whether the chunk store can be read (its first byte, one small request): a repository
/// that has none, or a server that does not answer for it, is fetched from as without one.
fn store_reachable(store: &dyn BundleBytes) -> bool {
    match store.read_exact(0..1) {
        Ok(_) => true,
        Err(error) => {
            tracing::info!(
                store = store.name(),
                %error,
                "no chunk store: fetching whole frames"
            );
            false
        }
    }
}

/// Runs `read` with the parts [`fetch_parts`] fetches on a thread of its own (scoped: it
/// borrows `parts`), in order; once `read` returns and drops them, the fetch winds down.
fn with_fetches<T>(
    source: Sources<'_>,
    parts: &[Part],
    counters: &Counters,
    read: impl FnOnce(Receiver<Result<Fetched>>) -> T,
) -> T {
    std::thread::scope(|scope| {
        // A rendezvous: a part fetched waits in the fetch pipeline until the reader needs it.
        let (to_reader, fetched) = sync_channel(0);
        scope.spawn(move || fetch_parts(source, parts, counters, &to_reader));
        read(fetched)
    })
}

/// Fetches `parts` in order, [`FETCHES_IN_FLIGHT`] at a time (one from a local source), and
/// sends each to the reader;
/// a part that failed is sent with the bytes read before the failure (the frames in them are
/// written, as a stream would have), then the failure, which ends the fetch. Returns when
/// every part is sent, after a failure, or once the reader hung up (the install stopped);
/// fetches still under way then end at their next step.
fn fetch_parts(
    source: Sources<'_>,
    parts: &[Part],
    counters: &Counters,
    to_reader: &SyncSender<Result<Fetched>>,
) {
    let stop = AtomicBool::new(false);
    // Parts alive at once: those in flight, one fetched ahead, and the reader's.
    let in_flight = if source.bundle.is_remote() {
        FETCHES_IN_FLIGHT
    } else {
        1
    };
    let shape = Shape {
        workers: in_flight,
        window: in_flight + 1,
    };
    // Failures travel as items, so the reader gets the first in order as soon as it is
    // next; the map's own error only says the fetch ended.
    let _ = ordered_map(
        parts.iter().map(Ok::<_, ()>),
        shape,
        || Ok(()),
        |(), part| Ok(fetch_part(source.of(part.file), part, counters, &stop)),
        |(fetched, failure)| {
            let delivered = to_reader.send(Ok(fetched)).is_ok();
            if delivered && failure.is_none() {
                return Ok(());
            }
            if let Some(error) = failure.filter(|_| delivered) {
                let _ = to_reader.send(Err(error));
            }
            stop.store(true, Ordering::Relaxed);
            Err(())
        },
    );
}

/// Reads `part`: all its bytes, or those before a failure and the failure (naming the part's
/// first chunk and bytes). Gives up early (short) once `stop` is set.
fn fetch_part(
    source: &dyn BundleBytes,
    part: &Part,
    counters: &Counters,
    stop: &AtomicBool,
) -> (Fetched, Option<Error>) {
    let len = part.range.end - part.range.start;
    counters.ranges.fetch_add(1, Ordering::Relaxed);
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let failure = match source.read_range(part.range.clone()) {
        Err(error) => Some(error.into()),
        Ok(stream) => {
            let read = read_steps(stream.take(len), &mut bytes, stop);
            counters
                .bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let short = (bytes.len() as u64) < len;
            match read {
                Ok(()) if short => Some(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(()) => None,
                Err(error) => Some(error),
            }
            .map(|error| {
                let what = format!(
                    "the frames from chunk {} (bytes {}..{} of the {}, {} read)",
                    part.chunk,
                    part.range.start,
                    part.range.end,
                    match part.file {
                        File::Bundle => "bundle",
                        File::Store => "chunk store",
                    },
                    bytes.len()
                );
                source_failure(source, &what, error)
            })
        }
    };
    ((part.file, part.range.start, bytes), failure)
}

/// Reads `stream` to its end into `bytes`, [`READ_STEP`] at a time; stops early once `stop`
/// is set.
fn read_steps(
    mut stream: impl Read,
    bytes: &mut Vec<u8>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        if (&mut stream).take(READ_STEP).read_to_end(bytes)? == 0 {
            break;
        }
    }
    Ok(())
}

/// A fetched part once the reader took it: shared by the frames cut out of it, so a frame on
/// its way to a worker keeps its part alive rather than holding a copy.
type SharedPart = (File, u64, Arc<Vec<u8>>);

/// A compressed frame: a range of a fetched part.
struct FrameBytes {
    part: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl FrameBytes {
    fn bytes(&self) -> &[u8] {
        self.part.get(self.range.clone()).unwrap_or_default()
    }
}

/// The bytes at offsets `range` of `file`, if the fetched part holds them all.
fn cut(part: &SharedPart, file: File, range: Range<u64>) -> Option<FrameBytes> {
    let (part_file, at, bytes) = part;
    if *part_file != file {
        return None;
    }
    let from = usize::try_from(range.start.checked_sub(*at)?).ok()?;
    let to = usize::try_from(range.end.checked_sub(*at)?).ok()?;
    bytes.get(from..to)?;
    Some(FrameBytes {
        part: Arc::clone(bytes),
        range: from..to,
    })
}

/// A chunk the plan fetches from the store holds no frame there: a bug of the plan.
fn no_frame(chunk: &Chunk) -> Error {
    Error::io(format!("fetching chunk {}", chunk.index()))(std::io::Error::other(
        "the chunk store holds no frame of it (a bug of the fetch plan)",
    ))
}

/// Yields the pieces in order on the pipeline's reader thread: zero runs, runs of held pieces
/// read from the slots, and fetched frames cut out of the parts [`fetch_parts`] hands on.
struct PieceReader<'m> {
    plan: &'m Plan<'m>,
    pieces: std::iter::Peekable<Box<dyn Iterator<Item = &'m [Chunk]> + Send + 'm>>,
    active: Option<&'m dyn BlockDevice>,
    target: &'m dyn BlockDevice,
    payload_offset: u64,
    /// The fetched parts, in order.
    parts: Receiver<Result<Fetched>>,
    /// The part frames are being cut from.
    part: SharedPart,
    /// The buffers of copied and mixed pieces, handed back by the writer.
    buffers: &'m Buffers,
}

impl<'m> PieceReader<'m> {
    fn new(
        manifest: &'m Manifest,
        plan: &'m Plan<'m>,
        (active, target): (Option<&'m dyn BlockDevice>, &'m dyn BlockDevice),
        parts: Receiver<Result<Fetched>>,
        buffers: &'m Buffers,
    ) -> Self {
        let pieces: Box<dyn Iterator<Item = &'m [Chunk]> + Send + 'm> =
            Box::new(pieces(plan.chunks));
        PieceReader {
            plan,
            pieces: pieces.peekable(),
            active,
            target,
            payload_offset: manifest.payload_offset(),
            parts,
            part: (File::Bundle, 0, Arc::new(Vec::new())),
            buffers,
        }
    }

    /// `len` zero bytes in a buffer the writer handed back, when there is one.
    fn buffer(&self, len: usize) -> Vec<u8> {
        let mut bytes = self.buffers.take();
        bytes.clear();
        bytes.resize(len, 0);
        bytes
    }

    fn next_piece(&mut self) -> Option<Result<Piece<'m>>> {
        let piece = self.pieces.next()?;
        let first = piece.first()?;
        if first.is_zero() {
            return Some(Ok(Piece::Zero(self.extend(piece, |c| c.is_zero()))));
        }
        match self.plan.fetch_of(piece) {
            Fetch::Frame => return Some(self.fetch(piece)),
            Fetch::Store => return Some(self.mixed(piece)),
            Fetch::Nothing => {}
        }
        let plan = self.plan;
        let run = self.extend(piece, |c| !c.is_zero() && plan.held(c).is_some());
        Some(self.copy(run))
    }

    /// `piece` extended over the following pieces whose chunks all pass `like`, up to about
    /// [`ITEM_BYTES`] (pieces are consecutive, so the run is one slice of the plan).
    fn extend(&mut self, piece: &'m [Chunk], like: impl Fn(&Chunk) -> bool) -> &'m [Chunk] {
        let mut count = piece.len();
        let mut bytes: u64 = piece.iter().map(|c| u64::from(c.len())).sum();
        while bytes < ITEM_BYTES {
            let Some(next) = self.pieces.next_if(|p| p.iter().all(&like)) else {
                break;
            };
            count += next.len();
            bytes += next.iter().map(|c| u64::from(c.len())).sum::<u64>();
        }
        let start = piece
            .first()
            .and_then(|c| usize::try_from(c.index()).ok())
            .map_or(0, |i| i - self.plan.base);
        self.plan.chunks.get(start..start + count).unwrap_or(piece)
    }

    /// The held chunks' bytes, read from where the plan found them (not yet hash-checked).
    fn copy(&self, run: &'m [Chunk]) -> Result<Piece<'m>> {
        let len: usize = run.iter().map(|c| c.len() as usize).sum();
        let mut bytes = self.buffer(len);
        let mut in_place = 0u64;
        let mut at = 0;
        for chunk in run {
            let out = bytes
                .get_mut(at..at + chunk.len() as usize)
                .unwrap_or_default();
            at += chunk.len() as usize;
            in_place += self.read_held(chunk, out)?;
        }
        Ok(Piece::Held(run, bytes, in_place))
    }

    /// Reads held `chunk` into `out` from where the plan found it: the bytes read in place
    /// in the target slot (0 when they came from the active slot).
    fn read_held(&self, chunk: &Chunk, out: &mut [u8]) -> Result<u64> {
        let (device, offset, in_place) = match self.plan.held(chunk) {
            Some(Held::Active(offset)) => (self.active.unwrap_or(self.target), offset, 0),
            _ => (self.target, chunk.image_offset(), u64::from(chunk.len())),
        };
        device.read_at(out, offset).map_err(Error::io(format!(
            "copying chunk {} from the slots",
            chunk.index()
        )))?;
        Ok(in_place)
    }

    /// A piece fetched from the store: its held chunks read from the slots into their place,
    /// the lacking ones' own frames cut out of the store's parts.
    fn mixed(&mut self, piece: &'m [Chunk]) -> Result<Piece<'m>> {
        let len: usize = piece.iter().map(|c| c.len() as usize).sum();
        let mut bytes = self.buffer(len);
        let mut fetched = Vec::new();
        let mut reused = Reuse::default();
        let mut at = 0;
        for (i, chunk) in piece.iter().enumerate() {
            let out = bytes
                .get_mut(at..at + chunk.len() as usize)
                .unwrap_or_default();
            at += chunk.len() as usize;
            match (self.plan.held(chunk), chunk.store()) {
                (Some(_), _) => {
                    reused.in_place += self.read_held(chunk, out)?;
                    reused.chunks += 1;
                    reused.bytes += u64::from(chunk.len());
                }
                (None, Some(frame)) => {
                    let range = frame.offset..frame.offset + frame.length;
                    fetched.push((i, self.take(File::Store, range, chunk)?));
                }
                (None, None) => return Err(no_frame(chunk)),
            }
        }
        Ok(Piece::Mixed(piece, bytes, fetched, reused))
    }

    /// The bytes at `range` of `file`, cut out of the current part or of the next ones
    /// (parts hold what the pieces need in order; gap bytes are skipped).
    fn take(&mut self, file: File, range: Range<u64>, chunk: &Chunk) -> Result<FrameBytes> {
        loop {
            if let Some(bytes) = cut(&self.part, file, range.clone()) {
                return Ok(bytes);
            }
            let (file, at, bytes) = self.parts.recv().map_err(|_| {
                Error::io(format!("fetching chunk {}", chunk.index()))(std::io::Error::other(
                    "no fetched part holds its frame",
                ))
            })??;
            self.part = (file, at, Arc::new(bytes));
        }
    }

    /// The frame of `piece`, cut out of the current part or of the next ones (parts hold
    /// the frames to fetch in order; gap bytes are skipped).
    fn fetch(&mut self, piece: &'m [Chunk]) -> Result<Piece<'m>> {
        let Some((chunk, frame)) = piece.first().and_then(|c| Some((c, c.frame()?))) else {
            return Err(Error::io("fetching a frame")(std::io::Error::other(
                "a piece without a frame",
            )));
        };
        let start = self.payload_offset + frame.offset;
        let bytes = self.take(File::Bundle, start..start + frame.length, chunk)?;
        Ok(Piece::Data(piece, bytes))
    }
}

impl<'m> Iterator for PieceReader<'m> {
    type Item = Result<Piece<'m>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_piece()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_write_reports_its_transfer() {
        let report = WriteReport {
            bytes_read: 10,
            bytes_reused: 90,
            bytes_reused_in_place: 40,
            bundle_bytes: 100,
            chunks_written: 3,
            ..WriteReport::default()
        };
        let expected = proto::Transfer {
            bytes_fetched: 10,
            bytes_reused: 90,
            bundle_bytes: 100,
        };
        assert_eq!(report.transfer(), expected);
    }

    fn frame(chunk: u64, offset: u64, length: u64, fetch: bool) -> FrameAt {
        FrameAt {
            file: File::Bundle,
            chunk,
            offset,
            length,
            fetch,
        }
    }

    fn part(chunk: u64, range: Range<u64>) -> Part {
        Part {
            file: File::Bundle,
            range,
            chunk,
        }
    }

    fn only(bundle: &dyn BundleBytes) -> Sources<'_> {
        Sources {
            bundle,
            store: None,
        }
    }

    #[test]
    fn parts_of_the_bundle_and_of_the_store_never_merge() {
        let store = |chunk, offset, length| FrameAt {
            file: File::Store,
            ..frame(chunk, offset, length, true)
        };
        let frames = [
            frame(0, 100, 50, true),
            // At the bundle part's end, but in the store: a part of its own.
            store(1, 150, 40),
            store(2, 190, 40),
            frame(3, 150, 10, true),
        ];
        let parts = plan_parts(frames);
        let files: Vec<(File, Range<u64>)> = parts.into_iter().map(|p| (p.file, p.range)).collect();
        assert_eq!(
            files,
            [
                (File::Bundle, 100..150),
                (File::Store, 150..230),
                (File::Bundle, 150..160),
            ]
        );
    }

    fn at(offset: u64, length: u64) -> Option<StoredFrame> {
        Some(StoredFrame { offset, length })
    }

    #[test]
    fn the_store_is_chosen_only_when_its_frames_cost_fewer_bytes() {
        // One lacking 4 KiB chunk of a 1 MiB frame: its own frame.
        assert!(store_is_cheaper(1 << 20, [at(0, 4100)]));
        // Every chunk of a frame lacking, alone in the store: each range costs its headers.
        let lacking: Vec<_> = (0..256).map(|i| at(i * 10_000, 4100)).collect();
        assert!(!store_is_cheaper(256 * 4100, lacking));
        // Adjacent store frames are one range: the same bytes, one overhead.
        let adjacent: Vec<_> = (0..256).map(|i| at(i * 4100, 4100)).collect();
        assert!(store_is_cheaper(256 * 4100 + 1, adjacent));
        // A frame of one chunk costs what its store frame does: the bundle's is kept.
        assert!(!store_is_cheaper(4100, [at(0, 4100)]));
        // A lacking chunk the store does not hold (a repeat): the frame.
        assert!(!store_is_cheaper(1 << 20, [at(0, 4100), None]));
        // The overhead counts: 10 scattered chunks of 4 KiB in a 44 000-byte frame.
        let scattered: Vec<_> = (0..10).map(|i| at(i * 9000, 4000)).collect();
        assert!(!store_is_cheaper(
            40_000 + 9 * RANGE_OVERHEAD,
            scattered.clone()
        ));
        assert!(store_is_cheaper(40_000 + 9 * RANGE_OVERHEAD + 1, scattered));
    }

    #[test]
    fn parts_read_through_small_gaps_only() {
        let frames = [
            frame(0, 100, 4000, true),
            // Held: a gap of exactly COALESCE_GAP, read through.
            frame(1, 4100, COALESCE_GAP, false),
            frame(2, 4100 + COALESCE_GAP, 500, true),
            frame(3, 4600 + COALESCE_GAP, 10, true),
            // A gap of one byte more: a new part.
            frame(4, 4610 + COALESCE_GAP, COALESCE_GAP + 1, false),
            frame(5, 4611 + 2 * COALESCE_GAP, 300, true),
            frame(6, 4911 + 2 * COALESCE_GAP, 5000, false),
        ];
        assert_eq!(
            plan_parts(frames),
            [
                part(0, 100..4610 + COALESCE_GAP),
                part(5, 4611 + 2 * COALESCE_GAP..4911 + 2 * COALESCE_GAP),
            ]
        );
        assert_eq!(plan_parts([frame(0, 0, 10, false)]), []);
    }

    #[test]
    fn parts_are_cut_at_part_bytes_and_a_large_frame_is_a_part_alone() {
        let (p, half) = (PART_BYTES, PART_BYTES / 2);
        let frames = [
            frame(0, 0, half, true),
            frame(1, half, half, true),
            // Would make the part PART_BYTES + 1: the next part starts here.
            frame(2, p, 1, true),
            frame(3, p + 1, p + half, true),
            frame(7, 2 * p + half + 1, 10, true),
            frame(8, 2 * p + half + 11, 10, true),
        ];
        assert_eq!(
            plan_parts(frames),
            [
                part(0, 0..p),
                part(2, p..p + 1),
                part(3, p + 1..2 * p + half + 1),
                part(7, 2 * p + half + 1..2 * p + half + 21),
            ]
        );
    }

    /// A bundle in memory, of which only the first `len` bytes can be read.
    struct Memory {
        bytes: Vec<u8>,
        len: usize,
    }

    impl BundleBytes for Memory {
        fn name(&self) -> String {
            "memory".into()
        }

        fn size(&self) -> repo_client::Result<u64> {
            Ok(self.len as u64)
        }

        fn read_exact(&self, _: Range<u64>) -> repo_client::Result<Vec<u8>> {
            Err(repo_client::Error::io("head")(std::io::Error::other(
                "not in these tests",
            )))
        }

        fn read_range(&self, range: Range<u64>) -> repo_client::Result<Box<dyn Read + Send>> {
            let end = (range.end as usize).min(self.len);
            let bytes = self
                .bytes
                .get(range.start as usize..end)
                .unwrap_or_default();
            Ok(Box::new(std::io::Cursor::new(bytes.to_vec())))
        }
    }

    fn memory(len: usize) -> Memory {
        Memory {
            bytes: (0..100_000u32).map(|i| i as u8).collect(),
            len,
        }
    }

    #[test]
    fn parts_arrive_in_order_and_a_short_one_with_its_bytes_then_the_error() {
        let parts: Vec<Part> = (0..20)
            .map(|i| part(i, i * 3000..i * 3000 + 2000))
            .collect();
        let counters = Counters::default();
        let source = memory(100_000);
        let got: Vec<Result<Fetched>> =
            with_fetches(only(&source), &parts, &counters, |r| r.iter().collect());
        assert_eq!(got.len(), 20);
        for (part, fetched) in parts.iter().zip(&got) {
            let (_, at, bytes) = fetched.as_ref().unwrap();
            assert_eq!(*at, part.range.start);
            assert_eq!(
                bytes[..],
                source.bytes[part.range.start as usize..part.range.end as usize]
            );
        }
        assert_eq!(counters.ranges.load(Ordering::Relaxed), 20);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 20 * 2000);

        // The source ends inside part 5: parts 0-4, part 5's first 500 bytes, the error.
        let source = memory(5 * 3000 + 500);
        let got: Vec<Result<Fetched>> =
            with_fetches(only(&source), &parts, &Counters::default(), |r| {
                r.iter().collect()
            });
        assert_eq!(got.len(), 7, "nothing after the failure");
        assert_eq!(got[5].as_ref().unwrap().2.len(), 500);
        let error = got[6].as_ref().unwrap_err().to_string();
        assert!(
            error.contains("the frames from chunk 5 (bytes 15000..17000 of the bundle, 500 read)"),
            "{error}"
        );
    }

    #[test]
    fn the_fetch_winds_down_when_the_reader_stops() {
        let parts: Vec<Part> = (0..30)
            .map(|i| part(i, i * 3000..i * 3000 + 3000))
            .collect();
        let counters = Counters::default();
        let memory = memory(100_000);
        let first = with_fetches(only(&memory), &parts, &counters, |r| r.recv().unwrap());
        assert_eq!(first.unwrap().1, 0);
        // Returned (the scope joined the fetch) without fetching every part.
        assert!(counters.ranges.load(Ordering::Relaxed) < 30);
    }

    #[test]
    fn a_slot_that_changed_after_the_scan_is_caught_before_the_write() {
        let bytes = vec![7u8; 4096];
        let chunk = Chunk::new(3, 0, 4096, Sha256Digest::of(&bytes), None).unwrap();
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

    #[test]
    fn the_read_back_hashes_exactly_the_range_asked_in_order() {
        let disk = partitions::io::MemDisk::new(3 * READ_BLOCK as u64 + 10_000);
        let bytes: Vec<u8> = (0..disk.size().unwrap()).map(|i| (i % 253) as u8).collect();
        disk.write_at(&bytes, 0).unwrap();
        for (offset, len) in [
            (0, bytes.len()),
            (7, 2 * READ_BLOCK + 1),
            (100, 0),
            (5, 4096),
        ] {
            assert_eq!(
                hash_slot(&disk, offset as u64, len as u64).unwrap(),
                Sha256Digest::of(&bytes[offset..offset + len]),
                "{len} bytes from {offset}"
            );
        }
        // Past the end: the failure, not a hash.
        assert!(hash_slot(&disk, 10, bytes.len() as u64).is_err());
    }

    #[test]
    fn a_resume_lands_on_a_piece_start_in_any_segment() {
        use crate::segments::{listed_segments, SEGMENT_CHUNKS};
        // Frames of two chunks: chunk 2k + 1 continues chunk 2k's frame.
        let n = 2 * SEGMENT_CHUNKS as u64 + 10;
        let chunks: Vec<Chunk> = (0..n)
            .map(|i| {
                let frame = bundle::schema::StoredFrame {
                    offset: i / 2 * 10,
                    length: 10,
                };
                let sha256 = Sha256Digest::of(&i.to_le_bytes());
                Chunk::new(i, i * 4096, 4096, sha256, Some(frame)).unwrap()
            })
            .collect();
        let slot = partitions::io::MemDisk::new(4096);
        let at = |resume| resume_point(listed_segments(&chunks), &slot, resume, true).unwrap();
        assert_eq!(at(0), (0, 0));
        for resume in [
            2,
            3,
            SEGMENT_CHUNKS as u64 + 1,
            2 * SEGMENT_CHUNKS as u64 + 7,
        ] {
            let start = resume / 2 * 2;
            assert_eq!(at(resume), (start, start * 4096), "resume at {resume}");
        }
        assert_eq!(at(n), (n, n * 4096), "everything durable");
        assert_eq!(at(n + 5), (n, n * 4096), "a count past the end");
        // Without the read-back, chunks the slot no longer holds are written again.
        assert_eq!(
            resume_point(listed_segments(&chunks), &slot, 4, false).unwrap(),
            (0, 0)
        );
    }
}
