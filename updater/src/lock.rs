//! One agent at a time: every command that changes anything holds an exclusive `flock` on
//! `.lock` in the state directory. The holder writes its pid there, so the second agent
//! can say who is running. The kernel drops the lock when the holder exits, even on a crash.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use crate::error::{Error, Result};

const LOCK_FILE: &str = ".lock";

/// The held lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock of `state_dir`, or fails at once naming the holder.
    pub fn acquire(state_dir: &Path) -> Result<StateLock> {
        let path = state_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io(format!("cannot open {}", path.display())))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::Busy {
                    holder: holder(&mut file),
                })
            }
            Err(e) => {
                return Err(Error::io(format!("cannot lock {}", path.display()))(
                    e.into(),
                ))
            }
        }
        let record = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())
        };
        record(&mut file).map_err(Error::io(format!("cannot write {}", path.display())))?;
        Ok(StateLock { _file: file })
    }
}

/// "pid N" as the holder wrote it, or a plain description.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.take(32).read_to_string(&mut text);
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
}
