//! Reading local files: a length checked against a cap before reading, and opening a
//! repository's file so that nothing but a regular file (no FIFO, device node or link) is read.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::Error;

/// Reads a whole file of at most `max` bytes (checked before reading).
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(Error::io(format!("reading {}", path.display())))?;
    read_capped_from(file, path, max)
}

/// Reads the whole of `file`, already open, at most `max` bytes (checked before reading);
/// `path` names it in errors.
pub fn read_capped_from(file: File, path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let ctx = || format!("reading {}", path.display());
    let len = file.metadata().map_err(Error::io(ctx()))?.len();
    if len > max {
        return Err(invalid_data(
            ctx(),
            format!("{len} bytes, more than the {max}-byte limit"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(Error::io(ctx()))?;
    Ok(buf)
}

/// Why [`open_regular`] did not open a file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Something that is not a regular file (a FIFO, a device node, a directory), or a link
    /// where none is followed: hostile or damaged input.
    #[error("{reason}")]
    Refused {
        /// What was found there.
        reason: String,
    },
    /// The open itself failed (permissions, I/O).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Opens the regular file at `path` read-only; `None` when nothing is there. Opened
/// `O_NONBLOCK`, so a FIFO or a device node (which a USB stick may carry) cannot block the
/// caller; anything but a regular file is refused, and with `follow` false a symbolic link
/// too.
pub fn open_regular(path: &Path, follow: bool) -> Result<Option<File>, OpenError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) if !follow => {
            return Err(OpenError::Refused {
                reason: "a symbolic link, never followed in a repository".into(),
            })
        }
        Err(e) => return Err(OpenError::Io(e.into())),
    };
    let kind = FileType::from_raw_mode(
        rustix::fs::fstat(&fd)
            .map_err(std::io::Error::from)?
            .st_mode,
    );
    if kind != FileType::RegularFile {
        return Err(OpenError::Refused {
            reason: format!("not a regular file ({kind:?}), refused"),
        });
    }
    Ok(Some(File::from(fd)))
}

/// An I/O error of kind `InvalidData` with what was being done: a file that is not what it
/// should be (too long, not text).
pub fn invalid_data(context: String, message: String) -> Error {
    Error::Io {
        context,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    }
}
