//! In-memory implementations of the seam for tests and simulators: a sparse disk
//! ([`MemDisk`]) and a file store ([`MemFs`]). Built with the `sim` feature only.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::beneath::checked_relative;
use super::block::{check_range, BlockDevice};
use super::fs::{FileStore, NewFile};
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these plain maps half-updated in a way
    // that matters to a test; keep going rather than poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const MEM_BLOCK: u64 = 4096;

/// Sparse bytes: 4 KiB blocks in a map, absent blocks read as zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SparseBytes {
    pub(super) size: u64,
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl SparseBytes {
    pub(super) fn new(size: u64) -> Self {
        Self {
            size,
            blocks: BTreeMap::new(),
        }
    }

    pub(super) fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
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

    pub(super) fn write(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
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

    pub(super) fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
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
    /// A copy of the bytes (for the power-cut simulator).
    pub(super) fn sparse_bytes(&self) -> SparseBytes {
        lock(&self.bytes).clone()
    }

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

/// An in-memory [`FileStore`] (directories are implied by file paths). Clones share content.
///
/// It holds at most its capacity in file bytes (unlimited by default; see
/// [`with_capacity`](Self::with_capacity)): a write that does not fit fails with
/// `ErrorKind::StorageFull`, as `ENOSPC` does, so tests can fill it.
#[derive(Debug, Clone)]
pub struct MemFs {
    files: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
    capacity: u64,
}

impl Default for MemFs {
    fn default() -> Self {
        Self::from_files(BTreeMap::new(), u64::MAX)
    }
}

impl MemFs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `bytes` bytes of file content.
    pub fn with_capacity(bytes: u64) -> Self {
        Self::from_files(BTreeMap::new(), bytes)
    }

    /// A store holding `files`, with room for `capacity` bytes.
    pub(super) fn from_files(files: BTreeMap<PathBuf, Vec<u8>>, capacity: u64) -> Self {
        Self {
            files: Arc::new(Mutex::new(files)),
            capacity,
        }
    }

    /// Every file and its content (a snapshot).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        lock(&self.files).clone()
    }

    /// An independent copy with the same files and `capacity` (clones share content).
    pub fn copy_with_capacity(&self, capacity: u64) -> MemFs {
        Self::from_files(self.snapshot(), capacity)
    }

    /// An independent copy (clones share content).
    pub fn deep_clone(&self) -> MemFs {
        self.copy_with_capacity(self.capacity)
    }

    /// Bytes of file content held.
    pub fn used(&self) -> u64 {
        lock(&self.files).values().map(|d| d.len() as u64).sum()
    }

    /// The capacity in bytes.
    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes left for new content in `files`.
    fn room(&self, files: &BTreeMap<PathBuf, Vec<u8>>) -> u64 {
        let used: u64 = files.values().map(|d| d.len() as u64).sum();
        self.capacity.saturating_sub(used)
    }

    /// Append to an existing file as much of `buf` as fits (`write(2)` on a nearly full
    /// filesystem): the bytes appended, or `StorageFull` when none fit.
    pub(super) fn append(&self, path: &Path, buf: &[u8]) -> io::Result<usize> {
        let mut files = lock(&self.files);
        let room = usize::try_from(self.room(&files)).unwrap_or(usize::MAX);
        if room == 0 && !buf.is_empty() {
            return Err(storage_full(path));
        }
        let fits = buf.get(..room).unwrap_or(buf);
        let file = files.get_mut(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: removed or renamed while written", path.display()),
            )
        })?;
        file.extend_from_slice(fits);
        Ok(fits.len())
    }
}

/// A file of a [`MemFs`] being written: every write lands at once (nothing to sync).
struct MemNewFile {
    fs: MemFs,
    path: PathBuf,
}

impl Write for MemNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.fs.append(&self.path, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl NewFile for MemNewFile {
    fn finish(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

/// `ENOSPC` naming the file: `ErrorKind::StorageFull`, as a real filesystem reports it
/// (the kind is taken from the errno because naming it needs a newer Rust than our MSRV).
fn storage_full(path: &Path) -> io::Error {
    io::Error::new(
        io::Error::from(rustix::io::Errno::NOSPC).kind(),
        format!("{}: no space left on the store", path.display()),
    )
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

pub(super) fn normalize(path: &Path) -> io::Result<PathBuf> {
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
        let path = normalize(path)?;
        let mut files = lock(&self.files);
        // The temporary copy needs room while the old file still exists.
        if data.len() as u64 > self.room(&files) {
            return Err(storage_full(&path));
        }
        files.insert(path, data.to_vec());
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
    fn create(&self, path: &Path) -> io::Result<Box<dyn NewFile>> {
        let path = normalize(path)?;
        lock(&self.files).insert(path.clone(), Vec::new());
        Ok(Box::new(MemNewFile {
            fs: self.clone(),
            path,
        }))
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let path = normalize(path)?;
        let files = lock(&self.files);
        let data = files.get(&path).ok_or_else(|| not_found(&path))?;
        let start = usize::try_from(offset).map_or(data.len(), |o| o.min(data.len()));
        let rest = data.get(start..).unwrap_or(&[]);
        Ok(rest.get(..len).unwrap_or(rest).to_vec())
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        let path = normalize(path)?;
        let files = lock(&self.files);
        let data = files.get(&path).ok_or_else(|| not_found(&path))?;
        Ok(data.len() as u64)
    }
    fn free_space(&self) -> io::Result<u64> {
        Ok(self.room(&lock(&self.files)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::io::fs::tests::exercise_store;

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
    fn mem_fs_store() {
        exercise_store(&MemFs::new());
    }

    #[test]
    fn a_full_mem_fs_refuses_writes_like_enospc() {
        let fs = MemFs::with_capacity(100);
        fs.write_atomic(Path::new("a"), &[1; 60]).unwrap();
        assert_eq!(fs.free_space().unwrap(), 40);
        // Replacing needs room for the new copy while the old one exists.
        let err = fs.write_atomic(Path::new("a"), &[2; 50]).unwrap_err();
        assert_eq!(format!("{:?}", err.kind()), "StorageFull");
        assert_eq!(fs.read(Path::new("a"), 100).unwrap(), [1; 60]);
        let mut f = fs.create(Path::new("b")).unwrap();
        let err = f.write_all(&[3; 50]).unwrap_err();
        assert_eq!(format!("{:?}", err.kind()), "StorageFull");
        assert_eq!(
            fs.len(Path::new("b")).unwrap(),
            40,
            "what fitted was written"
        );
        assert_eq!(fs.free_space().unwrap(), 0);
        fs.remove(Path::new("b")).unwrap();
        assert_eq!(fs.free_space().unwrap(), 40);
    }
}
