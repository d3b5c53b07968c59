//! One agent at a time: every command that changes anything holds an exclusive `flock` on
//! the state directory itself, opened `O_DIRECTORY | O_NOFOLLOW` (docs/SECURITY.md). The lock
//! cannot be removed or replaced by a path: no file has to stay in place for it to hold, and
//! a link planted in the directory is never opened. The holder then notes its pid in `.lock`,
//! replaced through [`atomic_file`] (a link there is replaced, never written through), so the
//! second agent can say who is running. The kernel drops the lock when the holder exits, even
//! on a crash.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{flock, FlockOperation, Mode, OFlags};

use crate::error::{Error, Result};

const HOLDER_FILE: &str = ".lock";

/// The held lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _dir: File,
}

impl StateLock {
    /// Takes the lock of `state_dir`, or fails at once naming the holder.
    pub fn acquire(state_dir: &Path) -> Result<StateLock> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rustix::fs::open(state_dir, flags, Mode::empty())
            .map(File::from)
            .map_err(|e| Error::io(format!("cannot open {}", state_dir.display()))(e.into()))?;
        match flock(&dir, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::Busy {
                    holder: holder(&dir),
                })
            }
            Err(e) => {
                return Err(Error::io(format!("cannot lock {}", state_dir.display()))(
                    e.into(),
                ))
            }
        }
        let pid = format!("{}\n", std::process::id());
        atomic_file::write_in(
            dir.as_fd(),
            state_dir,
            HOLDER_FILE.as_ref(),
            0o644,
            atomic_file::Overwrite::Replace,
            |f| {
                std::io::Write::write_all(f, pid.as_bytes()).map_err(|e| atomic_file::Error {
                    step: "writing",
                    path: state_dir.join(HOLDER_FILE),
                    source: e,
                })
            },
        )
        .map_err(|e| Error::io(e.to_string())(e.source))?;
        Ok(StateLock { _dir: dir })
    }
}

impl StateLock {
    /// Whether an agent holds the lock of `state_dir` now. A probe that writes nothing, for
    /// `status`, which must not write the state directory: a shared lock taken without
    /// waiting and let go at once (an agent that asks for the lock in those microseconds is
    /// turned away as busy, as it would be by any other command).
    pub fn is_held(state_dir: &Path) -> bool {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::open(state_dir, flags, Mode::empty()).is_ok_and(|dir| {
            flock(&dir, FlockOperation::NonBlockingLockShared) == Err(rustix::io::Errno::WOULDBLOCK)
        })
    }
}

/// "pid N" as the holder wrote it, or a plain description. `.lock` is read only when it is
/// a regular file, without following a link or blocking on a FIFO.
fn holder(dir: &File) -> String {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mut text = String::new();
    if let Ok(fd) = rustix::fs::openat(dir, HOLDER_FILE, flags, Mode::empty()) {
        let file = File::from(fd);
        if file.metadata().is_ok_and(|m| m.is_file()) {
            let _ = file.take(32).read_to_string(&mut text);
        }
    }
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("pid {pid}"),
        Err(_) => "another process".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let error = StateLock::acquire(dir.path()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert_eq!(error.exit_code(), 9);
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }

    /// The probe `status` uses sees a holder, writes nothing, and leaves the lock free.
    #[test]
    fn a_probe_sees_the_holder_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!StateLock::is_held(dir.path()));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe wrote"
        );
        let held = StateLock::acquire(dir.path()).unwrap();
        assert!(StateLock::is_held(dir.path()));
        drop(held);
        assert!(!StateLock::is_held(dir.path()));
        StateLock::acquire(dir.path()).unwrap();
        assert!(!StateLock::is_held(&dir.path().join("missing")));
    }

    /// The lock is the directory's: removing or replacing `.lock` does not release it, and a
    /// link planted as `.lock` is replaced, never written through.
    #[test]
    fn the_lock_holds_without_its_file_and_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, state.join(".lock")).unwrap();
        let first = StateLock::acquire(&state).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_file(state.join(".lock")).unwrap();
        let error = StateLock::acquire(&state).unwrap_err();
        assert_eq!(error.exit_code(), 9, "{error}");
        drop(first);
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&state, &linked).unwrap();
        let error = StateLock::acquire(&linked).unwrap_err();
        assert!(error.to_string().contains("linked"), "{error}");
    }
}
