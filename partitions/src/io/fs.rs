//! [`FileStore`]: files under one root directory, each change durable when it returns (a
//! streamed [`NewFile`] once finished), and its real implementation over a directory
//! ([`RealFs`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
/// Small files under one root directory (an ESP, `/var/lib/tandem`, …).
///
/// Paths are relative to the store's root; absolute paths and `..` are refused. Every
/// mutating call is durable when it returns (file data and the directory entry fsynced),
/// except the writes to a streamed file ([`create`](Self::create)), which are durable once
/// [`NewFile::finish`] returns.
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
    /// Create or truncate `path` for a streamed write (not atomic: callers write under a
    /// temporary name and rename). Durable only after [`NewFile::finish`].
    fn create(&self, path: &Path) -> io::Result<Box<dyn NewFile>>;
    /// Up to `len` bytes at `offset` (fewer at the end of the file, none past it).
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The length of a file.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Bytes available for new files on the store's filesystem.
    fn free_space(&self) -> io::Result<u64>;
}

/// A file being written in a stream ([`FileStore::create`]); durable only after `finish`.
/// Dropped without `finish`, it keeps what the page cache happens to keep.
pub trait NewFile: Write + Send {
    /// fsync the file, then its directory.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

pub(super) fn checked_relative(path: &Path) -> io::Result<&Path> {
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

/// A file of a [`RealFs`] being written.
struct RealNewFile {
    file: File,
    path: PathBuf,
}

impl Write for RealNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl NewFile for RealNewFile {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.file.sync_all()?;
        RealFs::sync_parent(&self.path)
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
        let dir = full
            .parent()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
        // A unique temporary name: two writers never share (or delete) each other's file, and
        // one that fails midway leaves nothing behind (the temporary file removes itself).
        let mut tmp = tempfile::Builder::new()
            .prefix(".tandem-tmp-")
            .tempfile_in(dir)?;
        tmp.write_all(data)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&full).map_err(|e| e.error)?;
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

    fn create(&self, path: &Path) -> io::Result<Box<dyn NewFile>> {
        let path = self.full(path)?;
        let file = File::create(&path)?;
        Ok(Box::new(RealNewFile { file, path }))
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = File::open(self.full(path)?)?;
        let available = file.metadata()?.len().saturating_sub(offset);
        // Never allocate more than the file holds, whatever `len` asks for.
        let want = usize::try_from(available).map_or(len, |a| a.min(len));
        let mut data = vec![0u8; want];
        let mut done = 0;
        while let Some(rest) = data.get_mut(done..).filter(|r| !r.is_empty()) {
            match file.read_at(rest, offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        data.truncate(done);
        Ok(data)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(self.full(path)?)?.len())
    }

    fn free_space(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(&self.root)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    pub(crate) fn exercise_store(store: &dyn FileStore) {
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
        exercise_streams(store);
    }

    /// Streamed writes, ranged reads, lengths and free space.
    fn exercise_streams(store: &dyn FileStore) {
        let path = Path::new("loader/big.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let free = store.free_space().unwrap();
        assert!(free >= data.len() as u64, "{free}");
        let mut f = store.create(path).unwrap();
        for piece in data.chunks(3000) {
            f.write_all(piece).unwrap();
        }
        f.finish().unwrap();
        assert_eq!(store.len(path).unwrap(), 10_000);
        assert_eq!(store.read(path, 10_000).unwrap(), data);
        assert_eq!(
            store.read_at(path, 9_000, 500).unwrap(),
            &data[9_000..9_500]
        );
        assert_eq!(store.read_at(path, 9_900, 500).unwrap(), &data[9_900..]);
        assert!(store.read_at(path, 20_000, 10).unwrap().is_empty());
        // `create` truncates an existing file.
        let mut f = store.create(path).unwrap();
        f.write_all(b"short").unwrap();
        f.finish().unwrap();
        assert_eq!(store.read(path, 100).unwrap(), b"short");
        assert_eq!(store.len(path).unwrap(), 5);
        store.remove(path).unwrap();
        for err in [
            store.len(path).unwrap_err(),
            store.read_at(path, 0, 1).unwrap_err(),
        ] {
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        }
        assert!(store.create(Path::new("../escape")).is_err());
    }

    #[test]
    fn real_fs_store() {
        let dir = tempfile::tempdir().unwrap();
        exercise_store(&RealFs::new(dir.path()));
        assert!(dir.path().join("loader/entries").is_dir());
    }
}
