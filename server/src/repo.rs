//! The repository root and safe opening of files beneath it.
//!
//! Files are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to a
//! directory descriptor held since start-up: the kernel refuses any resolution — `..`, an
//! absolute symlink, a symlink pointing outside — that would leave the repository, in the same
//! system call that opens the file (no check-then-use race, no per-request `realpath`).
//! Relative symlinks that stay inside are followed. On kernels without `openat2` (< 5.6) or
//! where a seccomp filter refuses it, the fallback canonicalises the path and checks its
//! prefix. Files are opened non-blocking so a FIFO cannot hang a worker; anything but a
//! regular file is "not found".
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::ConfigError;
use crate::known::{Known, Version};

/// Why a file could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// No such regular file (missing, a directory, a FIFO…).
    NotFound,
    /// The path resolves outside the repository.
    Outside,
    /// Any other failure (permissions, I/O).
    Io(io::Error),
}

/// The served directory.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    dir: File,
    no_openat2: AtomicBool,
    known: Known,
}

impl Repo {
    /// Opens the repository directory (canonicalised; it stays pinned until restart).
    pub fn open(path: &Path) -> Result<Repo, ConfigError> {
        let err = |source| ConfigError::Repo {
            path: path.to_owned(),
            source,
        };
        let canonical = std::fs::canonicalize(path).map_err(err)?;
        if !canonical.is_dir() {
            return Err(ConfigError::RepoNotDir(canonical));
        }
        let dir = File::open(&canonical).map_err(err)?;
        Ok(Repo {
            path: canonical,
            dir,
            no_openat2: AtomicBool::new(false),
            known: Known::default(),
        })
    }

    /// The canonical repository path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files opened so far and their validators.
    pub fn known(&self) -> &Known {
        &self.known
    }

    /// The version of the file `rel` leads to now, by a `statx` of the path that follows
    /// symlinks without confining them: only meaningful compared with a file opened beneath
    /// the repository ([`Known::get`]). `None` when it cannot be stat'ed (open it to learn why).
    pub fn stat(&self, rel: &Path) -> Option<Version> {
        let st = rustix::fs::statat(&self.dir, rel, rustix::fs::AtFlags::empty()).ok()?;
        Some(Version::of_stat(&st))
    }

    /// Opens the regular file `rel` (relative, already validated) beneath the root.
    pub fn open_file(&self, rel: &Path) -> Result<(File, Metadata), OpenError> {
        let file = if self.no_openat2.load(Ordering::Relaxed) {
            self.open_checked(rel)?
        } else {
            match self.open_beneath(rel) {
                Err(OpenError::Io(e)) if unsupported(&e) => {
                    tracing::warn!("openat2 unavailable; falling back to realpath checks");
                    self.no_openat2.store(true, Ordering::Relaxed);
                    self.open_checked(rel)?
                }
                other => other?,
            }
        };
        let meta = file.metadata().map_err(OpenError::Io)?;
        if !meta.is_file() {
            return Err(OpenError::NotFound);
        }
        Ok((file, meta))
    }

    fn open_beneath(&self, rel: &Path) -> Result<File, OpenError> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.dir, rel, flags, Mode::empty(), resolve) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::XDEV) | Err(Errno::LOOP) => Err(OpenError::Outside),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Err(OpenError::NotFound),
            Err(e) => Err(OpenError::Io(e.into())),
        }
    }

    /// Fallback: canonicalise, check the prefix, then open (non-blocking).
    fn open_checked(&self, rel: &Path) -> Result<File, OpenError> {
        let real = std::fs::canonicalize(self.path.join(rel)).map_err(classify)?;
        if !real.starts_with(&self.path) {
            return Err(OpenError::Outside);
        }
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(OFlags::NONBLOCK.bits() as i32)
            .open(real)
            .map_err(classify)
    }
}

fn classify(e: io::Error) -> OpenError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::NotFound,
        _ => OpenError::Io(e),
    }
}

/// `openat2` missing (old kernel) or filtered (seccomp answering ENOSYS or EPERM).
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == Errno::NOSYS.raw_os_error() || code == Errno::PERM.raw_os_error()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn both_strategies_agree() {
        let root = tempfile::tempdir().unwrap();
        let repo_dir = root.path().join("repo");
        std::fs::create_dir_all(repo_dir.join("channels")).unwrap();
        std::fs::write(repo_dir.join("root.json"), "{}").unwrap();
        std::fs::write(root.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink("../root.json", repo_dir.join("channels/in.json")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), repo_dir.join("channels/abs"))
            .unwrap();
        std::os::unix::fs::symlink("../../secret", repo_dir.join("channels/rel")).unwrap();
        let repo = Repo::open(&repo_dir).unwrap();
        for fallback in [false, true] {
            repo.no_openat2.store(fallback, Ordering::Relaxed);
            assert!(repo.open_file(Path::new("root.json")).is_ok());
            assert!(repo.open_file(Path::new("channels/in.json")).is_ok());
            assert!(matches!(
                repo.open_file(Path::new("channels/abs")),
                Err(OpenError::Outside)
            ));
            assert!(matches!(
                repo.open_file(Path::new("channels/rel")),
                Err(OpenError::Outside)
            ));
            assert!(matches!(
                repo.open_file(Path::new("nope")),
                Err(OpenError::NotFound)
            ));
            assert!(matches!(
                repo.open_file(Path::new("channels")),
                Err(OpenError::NotFound)
            ));
        }
    }
}
