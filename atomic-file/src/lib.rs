//! The one way the agent, the signer and the server replace a file (docs/DESIGN.md §6,
//! "Temporary files"): write a temporary file beside it, fsync it, rename it over the file,
//! fsync the directory. Readers see the old or the new content, and after a power cut the
//! file is one of them.
//!
//! The temporary file is created where others may be able to write (a node_exporter textfile
//! directory, a repository, an ESP), so it is made safe to create there: a random name,
//! opened `O_CREAT | O_EXCL | O_NOFOLLOW` relative to a descriptor of the directory. A file,
//! FIFO or symbolic link planted under any name is never opened, truncated or written: the
//! create fails instead (and is retried under another random name). The mode is set with
//! `fchmod` on the new file's descriptor, never on a path, so no umask changes it and no
//! planted link redirects it.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// How many random names are tried before giving up (each collision means someone planted
/// a file under a name no one could guess, or 2^64 bad luck).
const ATTEMPTS: usize = 8;

/// What to do when the destination exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it atomically.
    Replace,
    /// Fail (`ErrorKind::AlreadyExists`) if it exists, checked atomically at the rename.
    Refuse,
}

/// A step of a replacement failed on `path`. Displays the step and the path; the I/O error
/// is the `source()`.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}", path.display())]
pub struct Error {
    /// What was being done ("creating a temporary file in", "renaming into", …).
    pub step: &'static str,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

impl Error {
    fn new<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error {
            step,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<Error> for io::Error {
    /// Keeps the cause's kind, with the step and the path in the message.
    fn from(e: Error) -> io::Error {
        io::Error::new(e.source.kind(), format!("{e}: {}", e.source))
    }
}

/// Replaces `path` (its directory is opened as named, following links: it is the caller's
/// choice) with what `fill` writes, the new file having `mode`. See [`write_in`].
pub fn write<E: From<Error>>(
    path: &Path,
    mode: u32,
    overwrite: Overwrite,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::new("replacing", path)(io::ErrorKind::InvalidInput.into()))?;
    let dir_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = rustix::fs::open(
        dir_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::new("opening the directory", dir_path)(e.into()))?;
    write_in(dir.as_fd(), dir_path, name, mode, overwrite, fill)
}

/// Replaces `name` in the directory `dir` (`dir_path` names it in errors) with what `fill`
/// writes: a temporary file `.<name>.tmp-<random>` created exclusively without following
/// links, set to `mode`, filled, fsynced, renamed onto `name`, then `dir` fsynced. On any
/// failure the temporary file is removed and `name` is untouched.
pub fn write_in<E: From<Error>>(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &OsStr,
    mode: u32,
    overwrite: Overwrite,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let path = dir_path.join(name);
    let (mut file, tmp) = create_exclusive(dir, &path, name, mode)?;
    let step = |step| Error::new(step, &path);
    fill(&mut file)?;
    file.sync_all().map_err(step("syncing"))?;
    tmp.persist(overwrite).map_err(step(match overwrite {
        Overwrite::Replace => "renaming into",
        Overwrite::Refuse => "creating",
    }))?;
    rustix::fs::fsync(dir).map_err(|e| Error::new("syncing the directory", dir_path)(e.into()))?;
    Ok(())
}

/// Writes `bytes` as [`write`] does.
pub fn write_bytes(
    path: &Path,
    mode: u32,
    overwrite: Overwrite,
    bytes: &[u8],
) -> Result<(), Error> {
    write(path, mode, overwrite, |f| {
        io::Write::write_all(f, bytes).map_err(Error::new("writing", path))
    })
}

/// A temporary file not yet renamed into place; removed when dropped.
struct Temporary<'a> {
    dir: BorrowedFd<'a>,
    tmp: OsString,
    name: &'a OsStr,
    persisted: bool,
}

impl Temporary<'_> {
    fn persist(mut self, overwrite: Overwrite) -> io::Result<()> {
        let (dir, tmp, name) = (self.dir, self.tmp.as_os_str(), self.name);
        match overwrite {
            Overwrite::Replace => rustix::fs::renameat(dir, tmp, dir, name)?,
            Overwrite::Refuse => {
                match rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::NOREPLACE) {
                    // A filesystem without RENAME_NOREPLACE: a hard link fails when the
                    // name exists, atomically too.
                    Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                        rustix::fs::linkat(dir, tmp, dir, name, AtFlags::empty())?;
                        let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
                    }
                    other => other?,
                }
            }
        }
        self.persisted = true;
        Ok(())
    }
}

impl Drop for Temporary<'_> {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = rustix::fs::unlinkat(self.dir, self.tmp.as_os_str(), AtFlags::empty());
        }
    }
}

/// Creates the temporary file under a fresh random name, refusing anything already there.
fn create_exclusive<'a>(
    dir: BorrowedFd<'a>,
    path: &Path,
    name: &'a OsStr,
    mode: u32,
) -> Result<(File, Temporary<'a>), Error> {
    let step = |step| Error::new(step, path);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(mode);
    let mut last = Errno::EXIST;
    for _ in 0..ATTEMPTS {
        let tmp = temporary_name(name).map_err(step("naming a temporary file for"))?;
        match rustix::fs::openat(dir, tmp.as_os_str(), flags, mode) {
            Ok(fd) => {
                let temporary = Temporary {
                    dir,
                    tmp,
                    name,
                    persisted: false,
                };
                // The umask may have taken bits away: set them on this file, by descriptor.
                rustix::fs::fchmod(&fd, mode)
                    .map_err(|e| step("setting the mode of a temporary file for")(e.into()))?;
                return Ok((File::from(fd), temporary));
            }
            Err(e @ Errno::EXIST) => last = e,
            Err(e) => return Err(step("creating a temporary file for")(e.into())),
        }
    }
    Err(step("creating a temporary file for")(last.into()))
}

/// `.<name>.tmp-<16 random hex digits>`.
fn temporary_name(name: &OsStr) -> io::Result<OsString> {
    let mut random = [0u8; 8];
    rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())?;
    let mut suffix = String::from(".tmp-");
    for byte in random {
        let _ = write!(suffix, "{byte:02x}");
    }
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(suffix);
    if tmp.as_bytes().len() > 255 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the file name is too long for a temporary name beside it",
        ));
    }
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_with_the_mode_whatever_the_umask_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tandem.prom");
        write_bytes(&path, 0o644, Overwrite::Replace, b"old\n").unwrap();
        write_bytes(&path, 0o644, Overwrite::Replace, b"new\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        write_bytes(&dir.path().join("key"), 0o600, Overwrite::Replace, b"k").unwrap();
        let mode = fs::metadata(dir.path().join("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert_eq!(entries(dir.path()), ["key", "tandem.prom"]);
    }

    #[test]
    fn refuse_keeps_an_existing_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.tandem");
        write_bytes(&path, 0o644, Overwrite::Refuse, b"first").unwrap();
        let err = write_bytes(&path, 0o644, Overwrite::Refuse, b"second").unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert!(err.to_string().contains("v1.tandem"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(entries(dir.path()), ["v1.tandem"]);
    }

    #[test]
    fn a_failing_fill_leaves_the_old_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_bytes(&path, 0o644, Overwrite::Replace, b"old").unwrap();
        let err = write(&path, 0o644, Overwrite::Replace, |f| {
            io::Write::write_all(f, b"half").map_err(Error::new("writing", &path))?;
            Err(Error::new("filling", &path)(io::ErrorKind::Other.into()))
        })
        .unwrap_err();
        assert_eq!(err.step, "filling");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["state.json"]);
    }

    #[test]
    fn temporary_names_are_random_and_hidden() {
        let a = temporary_name(OsStr::new("tandem.prom")).unwrap();
        let b = temporary_name(OsStr::new("tandem.prom")).unwrap();
        assert_ne!(a, b);
        let a = a.into_string().unwrap();
        assert!(
            a.starts_with(".tandem.prom.tmp-") && a.len() == 17 + 16,
            "{a}"
        );
    }

    /// A link planted where the temporary file is created is never followed: the exclusive
    /// create refuses it, and another random name is used.
    #[test]
    fn a_planted_link_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let sub = dir.path().join("textfile");
        fs::create_dir(&sub).unwrap();
        let dir_fd = File::open(&sub).unwrap();
        let name = OsStr::new("tandem.prom");
        // Every name this process will try next cannot be known; plant the link under a
        // name and create at that exact name, as an attacker who guessed it would meet.
        let planted = temporary_name(name).unwrap();
        symlink(&victim, sub.join(&planted)).unwrap();
        let err = rustix::fs::openat(
            dir_fd.as_fd(),
            planted.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .unwrap_err();
        assert_eq!(err, Errno::EXIST);
        write_in(dir_fd.as_fd(), &sub, name, 0o644, Overwrite::Replace, |f| {
            io::Write::write_all(f, b"metrics\n").map_err(Error::new("writing", &sub))
        })
        .unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(sub.join(name)).unwrap(), b"metrics\n");
    }
}
