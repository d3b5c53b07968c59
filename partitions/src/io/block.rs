//! [`BlockDevice`]: a disk or a partition of one, and the real implementations: an image
//! file or a block device ([`FileDisk`]), a bounds-checked window on a device
//! ([`SubDevice`]), and [`DeviceCursor`] for code that wants `Read + Write + Seek`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Deref;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Fill `buf` from `offset` with what the medium holds, past any cache (the read-back),
    /// after [`drop_cache`](BlockDevice::drop_cache) of the range. A device that can read
    /// around its cache does so when `buf`'s address, its length and `offset` are multiples
    /// of [`DIRECT_ALIGN`] (an image file or block device: `O_DIRECT`, no copy through the
    /// page cache); otherwise, and by default, this is [`read_at`](BlockDevice::read_at).
    fn read_uncached(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_at(buf, offset)
    }
}

/// The alignment [`BlockDevice::read_uncached`] reads around the cache at: 4 KiB, a multiple of
/// every logical block size.
pub const DIRECT_ALIGN: usize = 4096;

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
    /// The same file opened `O_DIRECT`, for [`BlockDevice::read_uncached`] (none where the
    /// filesystem refuses it).
    direct: Option<File>,
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
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok();
        Ok(Self {
            file,
            direct,
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

    fn read_uncached(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size()?)?;
        let aligned = (buf.as_ptr() as usize) % DIRECT_ALIGN == 0
            && buf.len() % DIRECT_ALIGN == 0
            && offset % DIRECT_ALIGN as u64 == 0;
        match &self.direct {
            Some(direct) if aligned => direct.read_exact_at(buf, offset),
            _ => self.file.read_exact_at(buf, offset),
        }
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
    fn read_uncached(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.len)?;
        self.inner.read_uncached(buf, self.start + offset)
    }
}

/// `Read + Write + Seek` over a [`BlockDevice`] (owned in an `Arc`, or borrowed), for
/// libraries that want a stream (the `gpt` crate when it lays out a new table) and for
/// reading a slot front to back.
#[derive(Debug)]
pub struct DeviceCursor<D = Arc<dyn BlockDevice>> {
    dev: D,
    pos: u64,
}

impl<D> DeviceCursor<D> {
    /// A cursor at offset 0.
    pub fn new(dev: D) -> Self {
        Self { dev, pos: 0 }
    }
}

impl<D: Deref<Target = T>, T: BlockDevice + ?Sized> io::Read for DeviceCursor<D> {
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

impl<D: Deref<Target = T>, T: BlockDevice + ?Sized> io::Write for DeviceCursor<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.dev.write_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.dev.sync()
    }
}

impl<D: Deref<Target = T>, T: BlockDevice + ?Sized> io::Seek for DeviceCursor<D> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::io::MemDisk;

    #[test]
    fn an_uncached_read_returns_what_was_written_aligned_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 64 << 10]).unwrap();
        let disk = FileDisk::open(&path).unwrap();
        let bytes: Vec<u8> = (0..(64u32 << 10)).map(|i| (i % 251) as u8).collect();
        disk.write_at(&bytes, 0).unwrap();
        disk.sync().unwrap();
        disk.drop_cache(0, bytes.len() as u64).unwrap();
        let window = SubDevice::new(Arc::new(disk), 8192, 48 << 10).unwrap();
        let mut buf = vec![0u8; 3 * DIRECT_ALIGN];
        let skip = (DIRECT_ALIGN - buf.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        // Aligned (read around the cache where the filesystem allows), then not.
        for (at, range) in [(4096u64, skip..skip + 2 * DIRECT_ALIGN), (100, 1..5000)] {
            let part = &mut buf[range];
            window.read_uncached(part, at).unwrap();
            let from = 8192 + at as usize;
            assert_eq!(part, &bytes[from..from + part.len()], "at {at}");
        }
        assert!(
            window.read_uncached(&mut buf[..4096], 46 << 10).is_err(),
            "past the end"
        );
    }

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
}
