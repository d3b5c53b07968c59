//! [`FileStore`]: files under one root directory, each change durable when it returns (a
//! streamed [`NewFile`] once finished), and its real implementation over a directory
//! ([`RealFs`]).

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, OFlags};

use super::beneath::{self, OpenDir};
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

/// A [`FileStore`] over a real directory. Nothing beneath the root is reached through a
/// symbolic link, and only regular files are read or written (the `beneath` module): a link
/// or a FIFO planted on the boot filesystem fails the operation, naming its path.
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

    fn open(&self, path: &Path) -> io::Result<File> {
        beneath::open(&self.root, path, OFlags::RDONLY)
    }
}

fn sync_dir(dir: &OpenDir) -> io::Result<()> {
    rustix::fs::fsync(&dir.fd).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("syncing {}: {e}", dir.path.display()),
        )
    })
}

/// A file of a [`RealFs`] being written.
struct RealNewFile {
    file: File,
    dir: OpenDir,
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
        sync_dir(&self.dir)
    }
}

impl FileStore for RealFs {
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let full = self.root.join(path);
        let file = self.open(path)?;
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
        let (dir, name) = beneath::parent(&self.root, path)?;
        // A random, exclusive, unfollowed temporary name: two writers never share (or
        // delete) each other's file, a planted link is never written through, and one that
        // fails midway leaves nothing behind.
        atomic_file::write_in(
            dir.fd.as_fd(),
            &dir.path,
            name,
            0o600,
            atomic_file::Overwrite::Replace,
            |f| {
                f.write_all(data).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("writing {}: {e}", dir.path.join(name).display()),
                    )
                })
            },
        )
    }

    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let full = self.root.join(path);
        let f = beneath::open(&self.root, path, OFlags::WRONLY)?;
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
        let (from_dir, from_name) = beneath::parent(&self.root, from)?;
        let (to_dir, to_name) = beneath::parent(&self.root, to)?;
        rustix::fs::renameat(&from_dir.fd, from_name, &to_dir.fd, to_name)?;
        sync_dir(&to_dir)?;
        if from.parent() != to.parent() {
            sync_dir(&from_dir)?;
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = beneath::parent(&self.root, path)?;
        rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty())?;
        sync_dir(&dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let dir = beneath::dir(&self.root, dir)?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir.fd)? {
            if let Ok(name) = entry?.file_name().to_str() {
                if name != "." && name != ".." {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        beneath::create_dir_all(&self.root, dir).map(drop)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn NewFile>> {
        let (dir, name) = beneath::parent(&self.root, path)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC;
        let file = beneath::file(&dir, name, flags, 0o644)?;
        Ok(Box::new(RealNewFile { file, dir }))
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.open(path)?;
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
        Ok(self.open(path)?.metadata()?.len())
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

    /// A link beneath the root is never followed, by any operation, and only regular files
    /// are opened: each refusal names the path, and the link's target is untouched.
    #[test]
    fn real_fs_follows_no_link_and_opens_no_fifo() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("esp"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("tandem/a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("tandem/a/vmlinuz"), b"kernel a").unwrap();
        std::fs::write(outside.join("vmlinuz"), b"precious").unwrap();
        symlink("a", root.join("tandem/b")).unwrap();
        symlink(&outside, root.join("tandem/c")).unwrap();
        symlink(outside.join("vmlinuz"), root.join("tandem/a/cmdline")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("grubenv"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let store = RealFs::new(&root);
        let refused = |e: io::Error, path: &str, why: &str| {
            let text = e.to_string();
            let named = format!("{}: {why}", root.join(path).display());
            assert!(text.contains(&named), "{text}");
        };
        let link = |e: io::Error, path: &str| refused(e, path, "a symbolic link");
        for slot in ["tandem/b", "tandem/c"] {
            let file = Path::new(slot).join("vmlinuz");
            link(store.list(Path::new(slot)).unwrap_err(), slot);
            link(store.create_dir_all(Path::new(slot)).unwrap_err(), slot);
            link(store.read(&file, 100).unwrap_err(), slot);
            link(store.len(&file).unwrap_err(), slot);
            link(store.read_at(&file, 0, 10).unwrap_err(), slot);
            link(store.create(&file).err().unwrap(), slot);
            link(store.write_atomic(&file, b"x").unwrap_err(), slot);
            link(store.remove(&file).unwrap_err(), slot);
            link(
                store.rename(&file, Path::new("tandem/a/x")).unwrap_err(),
                slot,
            );
            link(store.overwrite(&file, b"precious").unwrap_err(), slot);
        }
        link(
            store.read(Path::new("tandem/a/cmdline"), 100).unwrap_err(),
            "tandem/a/cmdline",
        );
        link(
            store.create(Path::new("tandem/a/cmdline")).err().unwrap(),
            "tandem/a/cmdline",
        );
        for fifo in [
            store.read(Path::new("grubenv"), 1024).unwrap_err(),
            store.overwrite(Path::new("grubenv"), b"x").unwrap_err(),
        ] {
            refused(fifo, "grubenv", "not a regular file");
        }
        assert_eq!(std::fs::read(outside.join("vmlinuz")).unwrap(), b"precious");
        assert_eq!(
            std::fs::read(root.join("tandem/a/vmlinuz")).unwrap(),
            b"kernel a"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        assert_eq!(
            store.list(Path::new("tandem/a")).unwrap(),
            ["cmdline", "vmlinuz"]
        );
    }
}
