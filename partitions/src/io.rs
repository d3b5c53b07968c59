//! The I/O seam: every durable write Tandem makes goes through these two traits.
//!
//! * [`BlockDevice`]: a disk or a partition of one (read at, write at, zero a range, sync).
//!   Slot data, the GPT boot attributes and anything else that lives at a byte offset.
//! * [`FileStore`]: small files on a filesystem (the ESP's boot entries, the grubenv, the
//!   updater's state file), with whole-file atomic replacement, in-place overwrite, rename and
//!   removal, each durable when it returns.
//!
//! Nothing in this crate (and nothing in the updater) writes boot state or slot data with
//! `std::fs` directly: backends and slot writers only hold an `Arc<dyn BlockDevice>` or an
//! `Arc<dyn FileStore>`. That is what lets a test interpose a disk that, at a simulated power
//! cut, keeps only what was synced plus a seeded subset of the unsynced writes (see
//! [`PowerLossDisk`]), which is what a real power cut does to a page cache and what `kill -9`
//! never shows.
//!
//! Real implementations: [`FileDisk`] (an image file or a block device) and [`RealFs`] (a
//! directory tree). In-memory implementations for tests and simulators: [`MemDisk`],
//! [`MemFs`], and the power-cut simulators [`PowerLossDisk`] and [`PowerLossFs`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A byte-addressed disk: an image file, a block device, a partition of either, or a
/// simulated disk in memory.
///
/// Contract: `write_at` and `zero_range` may sit in a cache until `sync` returns; only what
/// was written before a successful `sync` is guaranteed to survive a power cut. Reads see
/// every completed write. Offsets beyond [`size`](BlockDevice::size) are an error.
pub trait BlockDevice: Send + Sync + fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fill `buf` from `offset` (exactly `buf.len()` bytes, or an error).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make `len` bytes at `offset` read back as zeros, as cheaply as the device allows
    /// (a punched hole in a file, a zero-out on a block device, written zeros otherwise).
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Make every earlier write durable.
    fn sync(&self) -> io::Result<()>;
    /// Forget cached copies of a synced range, so the next read comes from the medium and
    /// a read-back verifies what the disk stored, not what the page cache remembers.
    /// Devices without a cache have nothing to forget.
    fn drop_cache(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

fn out_of_range(offset: u64, len: u64, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("range {offset}+{len} is outside the device (size {size})"),
    )
}

/// Check that `offset..offset+len` lies inside `0..size`.
pub(crate) fn check_range(offset: u64, len: u64, size: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(out_of_range(offset, len, size)),
    }
}

/// An image file or a block device.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    path: PathBuf,
    is_block_device: bool,
}

impl FileDisk {
    /// Open for reading and writing.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with(path.as_ref(), true)
    }

    /// Open read-only (every write returns an error).
    pub fn open_read_only(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, write: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(write).open(path)?;
        let is_block_device = file.metadata()?.file_type().is_block_device();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            is_block_device,
        })
    }

    /// The path this disk was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a block device (rather than a regular file).
    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    fn write_zeros(&self, mut offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; usize::try_from(len.min(CHUNK)).unwrap_or(1 << 20)];
        let end = offset.saturating_add(len);
        while offset < end {
            let n = (end - offset).min(zeros.len() as u64);
            let part = zeros.get(..usize::try_from(n).unwrap_or(0)).unwrap_or(&[]);
            self.file.write_all_at(part, offset)?;
            offset += n;
        }
        Ok(())
    }
}

impl BlockDevice for FileDisk {
    fn size(&self) -> io::Result<u64> {
        if self.is_block_device {
            // A block device reports size 0 in its metadata; its end is its size.
            (&self.file).seek(SeekFrom::End(0))
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size()?)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size()?)?;
        self.file.write_all_at(buf, offset)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        check_range(offset, len, self.size()?)?;
        if len == 0 {
            return Ok(());
        }
        // On a regular file, PUNCH_HOLE|KEEP_SIZE deallocates the range (reads return zeros).
        // On a block device, Linux maps it to a zero-out that must not fall back to writing
        // (BLKZEROOUT without fallback), and ZERO_RANGE to one that may: the same effect as the
        // BLKZEROOUT ioctl, without any `unsafe`. Anything unsupported ends in written zeros.
        let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if fallocate(&self.file, punch, offset, len).is_ok() {
            return Ok(());
        }
        if self.is_block_device
            && fallocate(&self.file, FallocateFlags::ZERO_RANGE, offset, len).is_ok()
        {
            return Ok(());
        }
        self.write_zeros(offset, len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        use rustix::fs::{fadvise, Advice};
        let len = std::num::NonZeroU64::new(len);
        fadvise(&self.file, offset, len, Advice::DontNeed).map_err(io::Error::from)
    }
}

/// A window `[start, start+len)` of another device, with offsets relative to `start`.
/// Every access is bounds-checked: a slot writer holding one cannot touch its neighbours.
#[derive(Debug, Clone)]
pub struct SubDevice {
    inner: Arc<dyn BlockDevice>,
    start: u64,
    len: u64,
}

impl SubDevice {
    /// A window of `inner`; fails when it does not fit inside `inner`.
    pub fn new(inner: Arc<dyn BlockDevice>, start: u64, len: u64) -> io::Result<Self> {
        check_range(start, len, inner.size()?)?;
        Ok(Self { inner, start, len })
    }

    /// Offset of the window in the underlying device.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl BlockDevice for SubDevice {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.len)?;
        self.inner.read_at(buf, self.start + offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.len)?;
        self.inner.write_at(buf, self.start + offset)
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.len)?;
        self.inner.zero_range(self.start + offset, len)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.len)?;
        self.inner.drop_cache(self.start + offset, len)
    }
}

/// `Read + Write + Seek` over a [`BlockDevice`], for libraries that want a stream
/// (the `gpt` crate when it lays out a new table).
#[derive(Debug)]
pub struct DeviceCursor {
    dev: Arc<dyn BlockDevice>,
    pos: u64,
}

impl DeviceCursor {
    /// A cursor at offset 0.
    pub fn new(dev: Arc<dyn BlockDevice>) -> Self {
        Self { dev, pos: 0 }
    }
}

impl io::Read for DeviceCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.dev.size()?;
        let n = usize::try_from(size.saturating_sub(self.pos))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let part = buf.get_mut(..n).unwrap_or(&mut []);
        self.dev.read_at(part, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Write for DeviceCursor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.dev.write_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.dev.sync()
    }
}

impl io::Seek for DeviceCursor {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let base = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.dev.size()?.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = base.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad seek"))?;
        Ok(self.pos)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these plain maps half-updated in a way
    // that matters to a test; keep going rather than poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const MEM_BLOCK: u64 = 4096;

/// Sparse bytes: 4 KiB blocks in a map, absent blocks read as zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseBytes {
    size: u64,
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl SparseBytes {
    fn new(size: u64) -> Self {
        Self {
            size,
            blocks: BTreeMap::new(),
        }
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        for piece in pieces(offset, buf.len() as u64) {
            let dst = buf
                .get_mut(piece.done..piece.done + piece.len)
                .unwrap_or(&mut []);
            match self
                .blocks
                .get(&piece.block)
                .and_then(|b| b.get(piece.within..piece.within + piece.len))
            {
                Some(src) => dst.copy_from_slice(src),
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    fn write(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        for piece in pieces(offset, buf.len() as u64) {
            let src = buf.get(piece.done..piece.done + piece.len).unwrap_or(&[]);
            let b = self
                .blocks
                .entry(piece.block)
                .or_insert_with(|| vec![0; MEM_BLOCK as usize]);
            if let Some(dst) = b.get_mut(piece.within..piece.within + piece.len) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.size)?;
        for piece in pieces(offset, len) {
            if piece.len == MEM_BLOCK as usize {
                self.blocks.remove(&piece.block);
            } else if let Some(b) = self.blocks.get_mut(&piece.block) {
                if let Some(dst) = b.get_mut(piece.within..piece.within + piece.len) {
                    dst.fill(0);
                }
            }
        }
        Ok(())
    }
}

/// The part of a byte range that falls in one memory block.
struct Piece {
    block: u64,
    /// Offset inside the block.
    within: usize,
    /// Bytes of the range before this piece.
    done: usize,
    len: usize,
}

/// Splits `offset..offset+len` at memory-block boundaries.
fn pieces(offset: u64, len: u64) -> impl Iterator<Item = Piece> {
    let end = offset + len;
    let mut pos = offset;
    std::iter::from_fn(move || {
        (pos < end).then(|| {
            let (block, within) = (pos / MEM_BLOCK, pos % MEM_BLOCK);
            let n = (MEM_BLOCK - within).min(end - pos);
            let piece = Piece {
                block,
                within: within as usize,
                done: (pos - offset) as usize,
                len: n as usize,
            };
            pos += n;
            piece
        })
    })
}

/// A disk in memory (sparse: a 2 GiB `MemDisk` costs only the blocks written).
/// `sync` does nothing: everything is "durable" at once. Clones share the same bytes.
#[derive(Debug, Clone)]
pub struct MemDisk {
    bytes: Arc<Mutex<SparseBytes>>,
}

impl MemDisk {
    /// A zeroed disk of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            bytes: Arc::new(Mutex::new(SparseBytes::new(size))),
        }
    }

    /// A disk holding a copy of `data`.
    pub fn from_bytes(data: &[u8]) -> Self {
        let disk = Self::new(data.len() as u64);
        // In range by construction.
        let _ = lock(&disk.bytes).write(data, 0);
        disk
    }

    /// An independent copy (cheap: only written blocks are copied).
    pub fn deep_clone(&self) -> MemDisk {
        Self {
            bytes: Arc::new(Mutex::new(lock(&self.bytes).clone())),
        }
    }

    /// Copy of the whole content (for small test disks).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let g = lock(&self.bytes);
        let len = usize::try_from(g.size)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "disk too large"))?;
        let mut v = vec![0u8; len];
        g.read(&mut v, 0)?;
        Ok(v)
    }
}

impl BlockDevice for MemDisk {
    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.bytes).size)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        lock(&self.bytes).read(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        lock(&self.bytes).write(buf, offset)
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        lock(&self.bytes).zero(offset, len)
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// One write not yet made durable by a sync.
#[derive(Debug, Clone)]
enum Pending {
    Data(u64, Vec<u8>),
    Zero(u64, u64),
}

#[derive(Debug)]
struct LossState {
    durable: SparseBytes,
    view: SparseBytes,
    pending: Vec<Pending>,
    writes_done: u64,
    cut_after: Option<u64>,
    powered: bool,
}

/// A simulated disk with a page cache that loses data on a power cut.
///
/// Writes go to a cache (`read_at` sees them); `sync` makes them durable. After
/// [`cut_after_writes`](Self::cut_after_writes)`(k)`, the `k+1`-th write (and everything after)
/// fails as if the power went off. [`after_power_cut`](Self::after_power_cut)`(seed)` returns
/// the disk as it would be found at the next boot: everything synced, plus a seeded pseudo-random
/// subset of the writes made after the last sync (applied in their original order).
/// Writes are never torn inside one call: one `write_at` is kept whole or lost whole.
#[derive(Debug, Clone)]
pub struct PowerLossDisk {
    state: Arc<Mutex<LossState>>,
}

impl PowerLossDisk {
    /// A zeroed disk of `size` bytes, power on.
    pub fn new(size: u64) -> Self {
        Self::from_durable(SparseBytes::new(size))
    }

    /// A disk whose durable content is a copy of `disk`'s content.
    pub fn from_mem(disk: &MemDisk) -> Self {
        Self::from_durable(lock(&disk.bytes).clone())
    }

    fn from_durable(durable: SparseBytes) -> Self {
        Self {
            state: Arc::new(Mutex::new(LossState {
                view: durable.clone(),
                durable,
                pending: Vec::new(),
                writes_done: 0,
                cut_after: None,
                powered: true,
            })),
        }
    }

    /// Cut the power when `k` more writes (`write_at` or `zero_range`) have completed.
    pub fn cut_after_writes(&self, k: u64) {
        let mut s = lock(&self.state);
        s.cut_after = Some(s.writes_done + k);
        if k == 0 {
            s.powered = false;
        }
    }

    /// Cut the power now: every later call fails.
    pub fn cut_now(&self) {
        lock(&self.state).powered = false;
    }

    /// Whether the power is still on.
    pub fn powered(&self) -> bool {
        lock(&self.state).powered
    }

    /// Writes completed so far (for choosing cut points).
    pub fn writes_done(&self) -> u64 {
        lock(&self.state).writes_done
    }

    /// Writes made since the last sync (what a cut could lose).
    pub fn unsynced_writes(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// The disk found after the power comes back: synced data plus the seeded subset of
    /// unsynced writes. The result is a fresh, powered-on disk.
    pub fn after_power_cut(&self, seed: u64) -> PowerLossDisk {
        let s = lock(&self.state);
        let mut durable = s.durable.clone();
        let mut rng = SplitMix64(seed);
        for p in &s.pending {
            if rng.next() & 1 == 1 {
                // In range: each pending write was checked when it was made.
                let _ = match p {
                    Pending::Data(off, data) => durable.write(data, *off),
                    Pending::Zero(off, len) => durable.zero(*off, *len),
                };
            }
        }
        Self::from_durable(durable)
    }

    fn record(&self, p: Pending) -> io::Result<()> {
        let mut s = lock(&self.state);
        if !s.powered {
            return Err(power_off());
        }
        if s.cut_after.is_some_and(|k| s.writes_done >= k) {
            s.powered = false;
            return Err(power_off());
        }
        match &p {
            Pending::Data(off, data) => s.view.write(data, *off)?,
            Pending::Zero(off, len) => s.view.zero(*off, *len)?,
        }
        s.pending.push(p);
        s.writes_done += 1;
        Ok(())
    }
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut: the disk is off")
}

/// A tiny deterministic generator (SplitMix64), so simulations are reproducible from a seed
/// without pulling a random-number crate into the library.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 pseudo-random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl BlockDevice for PowerLossDisk {
    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.state).view.size)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = lock(&self.state);
        if !s.powered {
            return Err(power_off());
        }
        s.view.read(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size()?)?;
        self.record(Pending::Data(offset, buf.to_vec()))
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.size()?)?;
        self.record(Pending::Zero(offset, len))
    }
    fn sync(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        if !s.powered {
            return Err(power_off());
        }
        s.durable = s.view.clone();
        s.pending.clear();
        Ok(())
    }
}

/// Small files under one root directory (an ESP, `/var/lib/tandem`, …).
///
/// Paths are relative to the store's root; absolute paths and `..` are refused. Every
/// mutating call is durable when it returns (file data and the directory entry fsynced).
pub trait FileStore: Send + Sync + fmt::Debug {
    /// The whole file; `ErrorKind::NotFound` when absent, `InvalidData` when larger than
    /// `max_len` (checked before reading).
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>>;
    /// Create or replace `path` atomically: write a temporary file next to it, fsync it,
    /// rename it over `path`, fsync the directory. Readers see the old or the new content.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Overwrite an existing file in place, without changing its length or its blocks
    /// (GRUB's `save_env` needs the grubenv never to move), then fsync it. Fails when the
    /// file's length differs from `data.len()`.
    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Rename (replacing `to` if it exists), then fsync the directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file, then fsync the directory.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (sorted); `NotFound` when it does not exist.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Create a directory and its parents (durable).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
}

fn checked_relative(path: &Path) -> io::Result<&Path> {
    let ok = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: store paths must be relative, without ..",
                path.display()
            ),
        ))
    }
}

/// A [`FileStore`] over a real directory.
#[derive(Debug, Clone)]
pub struct RealFs {
    root: PathBuf,
}

impl RealFs {
    /// A store rooted at `root` (which should exist).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, path: &Path) -> io::Result<PathBuf> {
        Ok(self.root.join(checked_relative(path)?))
    }

    fn sync_parent(full: &Path) -> io::Result<()> {
        let parent = match full.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()
    }
}

impl FileStore for RealFs {
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let full = self.full(path)?;
        let file = File::open(&full)?;
        let len = file.metadata()?.len();
        if len > max_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {len} bytes, more than {max_len}", full.display()),
            ));
        }
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(max_len + 1).read_to_end(&mut data)?;
        if data.len() as u64 > max_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: grew past {max_len} bytes while read", full.display()),
            ));
        }
        Ok(data)
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let full = self.full(path)?;
        let name = full
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(".tandem-tmp");
        let tmp = full.with_file_name(tmp_name);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &full)?;
        Self::sync_parent(&full)
    }

    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let full = self.full(path)?;
        let f = OpenOptions::new().write(true).open(&full)?;
        let len = f.metadata()?.len();
        if len != data.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: is {len} bytes, refusing an in-place overwrite with {} bytes",
                    full.display(),
                    data.len()
                ),
            ));
        }
        f.write_all_at(data, 0)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (self.full(from)?, self.full(to)?);
        fs::rename(&from, &to)?;
        Self::sync_parent(&to)?;
        if from.parent() != to.parent() {
            Self::sync_parent(&from)?;
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let full = self.full(path)?;
        fs::remove_file(&full)?;
        Self::sync_parent(&full)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let full = self.full(dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(full)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let full = self.full(dir)?;
        fs::create_dir_all(&full)?;
        Self::sync_parent(&full)
    }
}

/// An in-memory [`FileStore`] (directories are implied by file paths). Clones share content.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    files: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
}

impl MemFs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every file and its content (a snapshot).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        lock(&self.files).clone()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn normalize(path: &Path) -> io::Result<PathBuf> {
    Ok(checked_relative(path)?
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

impl FileStore for MemFs {
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
        let path = normalize(path)?;
        let files = lock(&self.files);
        let data = files.get(&path).ok_or_else(|| not_found(&path))?;
        if data.len() as u64 > max_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: more than {max_len} bytes", path.display()),
            ));
        }
        Ok(data.clone())
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        lock(&self.files).insert(normalize(path)?, data.to_vec());
        Ok(())
    }
    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let path = normalize(path)?;
        let mut files = lock(&self.files);
        let cur = files.get_mut(&path).ok_or_else(|| not_found(&path))?;
        if cur.len() != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "in-place overwrite must keep the length",
            ));
        }
        cur.copy_from_slice(data);
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (normalize(from)?, normalize(to)?);
        let mut files = lock(&self.files);
        let data = files.remove(&from).ok_or_else(|| not_found(&from))?;
        files.insert(to, data);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        lock(&self.files)
            .remove(&path)
            .map(|_| ())
            .ok_or_else(|| not_found(&path))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let dir = normalize(dir)?;
        let files = lock(&self.files);
        let mut names: Vec<String> = files
            .keys()
            .filter_map(|p| p.strip_prefix(&dir).ok())
            .filter_map(|rest| rest.components().next())
            .filter_map(|c| c.as_os_str().to_str().map(str::to_owned))
            .collect();
        names.dedup();
        if names.is_empty() && !dir.as_os_str().is_empty() {
            return Err(not_found(&dir));
        }
        Ok(names)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        normalize(dir).map(|_| ())
    }
}

/// A [`FileStore`] that loses power: after [`cut_after_ops`](Self::cut_after_ops)`(k)`, the
/// `k+1`-th mutating call fails and so does everything after it.
///
/// Every completed call was durable (that is the [`FileStore`] contract), so the files found
/// at the next boot ([`after_power_cut`](Self::after_power_cut)) are those of the completed
/// calls, plus the interrupted one: an atomic call (`write_atomic`, `rename`, `remove`) is
/// applied whole or not at all (seeded), and an interrupted in-place `overwrite` is torn: a
/// seeded subset of its 512-byte sectors is kept, as a disk may do.
#[derive(Debug, Clone, Default)]
pub struct PowerLossFs {
    state: Arc<Mutex<LossFsState>>,
}

#[derive(Debug, Default)]
struct LossFsState {
    files: MemFs,
    ops_done: u64,
    cut_after: Option<u64>,
    powered_off: bool,
    interrupted: Option<FsOp>,
}

#[derive(Debug, Clone)]
enum FsOp {
    WriteAtomic(PathBuf, Vec<u8>),
    Overwrite(PathBuf, Vec<u8>),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

impl PowerLossFs {
    /// A store holding a copy of `files`' content, power on.
    pub fn from_mem(files: &MemFs) -> Self {
        let copy = MemFs::new();
        *lock(&copy.files) = files.snapshot();
        Self {
            state: Arc::new(Mutex::new(LossFsState {
                files: copy,
                ..LossFsState::default()
            })),
        }
    }

    /// Cut the power when `k` more mutating calls have completed.
    pub fn cut_after_ops(&self, k: u64) {
        let mut s = lock(&self.state);
        s.cut_after = Some(s.ops_done + k);
    }

    /// Mutating calls completed so far.
    pub fn ops_done(&self) -> u64 {
        lock(&self.state).ops_done
    }

    /// Whether the power is still on.
    pub fn powered(&self) -> bool {
        !lock(&self.state).powered_off
    }

    /// The files found after the power comes back (a fresh, powered-on store).
    pub fn after_power_cut(&self, seed: u64) -> MemFs {
        let s = lock(&self.state);
        let out = MemFs::new();
        *lock(&out.files) = s.files.snapshot();
        let mut rng = SplitMix64(seed);
        // Ignoring errors: an interrupted call on a missing file simply did nothing.
        let _ = match &s.interrupted {
            None => Ok(()),
            Some(FsOp::Overwrite(p, data)) => {
                let mut cur = out.read(p, u64::MAX).unwrap_or_default();
                for (i, sector) in data.chunks(512).enumerate() {
                    if rng.next() & 1 == 1 {
                        if let Some(dst) = cur.get_mut(i * 512..i * 512 + sector.len()) {
                            dst.copy_from_slice(sector);
                        }
                    }
                }
                out.write_atomic(p, &cur)
            }
            Some(_) if rng.next() & 1 == 0 => Ok(()),
            Some(FsOp::WriteAtomic(p, d)) => out.write_atomic(p, d),
            Some(FsOp::Rename(f, t)) => out.rename(f, t),
            Some(FsOp::Remove(p)) => out.remove(p),
        };
        out
    }

    fn mutate(&self, op: FsOp) -> io::Result<()> {
        let mut s = lock(&self.state);
        if s.powered_off {
            return Err(power_off());
        }
        if s.cut_after.is_some_and(|k| s.ops_done >= k) {
            s.powered_off = true;
            s.interrupted = Some(op);
            return Err(power_off());
        }
        match &op {
            FsOp::WriteAtomic(p, d) => s.files.write_atomic(p, d)?,
            FsOp::Overwrite(p, d) => s.files.overwrite(p, d)?,
            FsOp::Rename(f, t) => s.files.rename(f, t)?,
            FsOp::Remove(p) => s.files.remove(p)?,
        }
        s.ops_done += 1;
        Ok(())
    }
}

impl FileStore for PowerLossFs {
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
        let s = lock(&self.state);
        if s.powered_off {
            return Err(power_off());
        }
        s.files.read(path, max_len)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.mutate(FsOp::WriteAtomic(normalize(path)?, data.to_vec()))
    }
    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.mutate(FsOp::Overwrite(normalize(path)?, data.to_vec()))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate(FsOp::Rename(normalize(from)?, normalize(to)?))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.mutate(FsOp::Remove(normalize(path)?))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        if s.powered_off {
            return Err(power_off());
        }
        s.files.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        normalize(dir).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn file_disk_punches_holes_and_reads_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let d = FileDisk::open(&path).unwrap();
        assert!(!d.is_block_device());
        d.write_at(&[7u8; 8192], 4096).unwrap();
        d.zero_range(4096, 4096).unwrap();
        let mut buf = [1u8; 8192];
        d.read_at(&mut buf, 4096).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert!(buf[4096..].iter().all(|&b| b == 7));
        assert!(d.write_at(&[0], 1 << 20).is_err(), "write past the end");
        d.sync().unwrap();
        // After a cache drop the data comes back from the file itself, unchanged.
        let slot = SubDevice::new(Arc::new(d), 4096, 8192).unwrap();
        slot.drop_cache(0, 8192).unwrap();
        assert!(slot.drop_cache(0, 8193).is_err(), "outside the window");
        let mut again = [1u8; 8192];
        slot.read_at(&mut again, 0).unwrap();
        assert_eq!(again, buf);
    }

    #[test]
    fn sub_device_cannot_escape_its_window() {
        let disk: Arc<dyn BlockDevice> = Arc::new(MemDisk::new(10_000));
        let sub = SubDevice::new(disk.clone(), 1000, 100).unwrap();
        sub.write_at(&[1; 100], 0).unwrap();
        assert!(sub.write_at(&[1], 100).is_err());
        assert!(sub.zero_range(50, 51).is_err());
        assert!(SubDevice::new(disk.clone(), 9950, 100).is_err());
        let mut b = [0u8; 2];
        disk.read_at(&mut b, 999).unwrap();
        assert_eq!(b, [0, 1]);
    }

    #[test]
    fn mem_disk_sparse_read_write_zero() {
        let d = MemDisk::new(3 * 4096 + 10);
        d.write_at(&[9; 5000], 4000).unwrap();
        d.zero_range(4096, 4096).unwrap();
        let v = d.to_vec().unwrap();
        assert!(v[4000..4096].iter().all(|&b| b == 9));
        assert!(v[4096..8192].iter().all(|&b| b == 0));
        assert!(v[8192..9000].iter().all(|&b| b == 9));
        assert!(v[9000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn power_loss_keeps_synced_and_a_seeded_subset() {
        let d = PowerLossDisk::new(4096);
        d.write_at(&[1], 0).unwrap();
        d.sync().unwrap();
        for i in 1..=32u8 {
            d.write_at(&[i], u64::from(i)).unwrap();
        }
        assert_eq!(d.unsynced_writes(), 32);
        let after = d.after_power_cut(42);
        let again = d.after_power_cut(42);
        let mut a = [0u8; 33];
        let mut b = [0u8; 33];
        after.read_at(&mut a, 0).unwrap();
        again.read_at(&mut b, 0).unwrap();
        assert_eq!(a, b, "same seed, same disk");
        assert_eq!(a[0], 1, "synced write kept");
        let kept = a[1..].iter().filter(|&&x| x != 0).count();
        assert!(kept > 0 && kept < 32, "a strict subset is kept ({kept})");
    }

    #[test]
    fn power_loss_cut_after_k_writes() {
        let d = PowerLossDisk::new(100);
        d.cut_after_writes(2);
        d.write_at(&[1], 0).unwrap();
        d.write_at(&[1], 1).unwrap();
        assert!(d.write_at(&[1], 2).is_err());
        assert!(!d.powered());
        assert!(d.sync().is_err());
    }

    fn exercise_store(store: &dyn FileStore) {
        store.create_dir_all(Path::new("loader/entries")).unwrap();
        store
            .write_atomic(Path::new("loader/entries/x.conf"), b"hello")
            .unwrap();
        assert_eq!(
            store.read(Path::new("loader/entries/x.conf"), 100).unwrap(),
            b"hello"
        );
        assert!(store.read(Path::new("loader/entries/x.conf"), 4).is_err());
        store
            .overwrite(Path::new("loader/entries/x.conf"), b"HELLO")
            .unwrap();
        assert!(store
            .overwrite(Path::new("loader/entries/x.conf"), b"HELLO!")
            .is_err());
        store
            .rename(
                Path::new("loader/entries/x.conf"),
                Path::new("loader/entries/y.conf"),
            )
            .unwrap();
        assert_eq!(
            store.list(Path::new("loader/entries")).unwrap(),
            vec!["y.conf".to_string()]
        );
        let err = store
            .read(Path::new("loader/entries/x.conf"), 10)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        store.remove(Path::new("loader/entries/y.conf")).unwrap();
        assert!(store.read(Path::new("../etc/passwd"), 10).is_err());
        assert!(store.read(Path::new("/etc/passwd"), 10).is_err());
    }

    #[test]
    fn real_fs_store() {
        let dir = tempfile::tempdir().unwrap();
        exercise_store(&RealFs::new(dir.path()));
        assert!(dir.path().join("loader/entries").is_dir());
    }

    #[test]
    fn mem_fs_store() {
        exercise_store(&MemFs::new());
    }
}
