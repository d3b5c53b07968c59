//! Reading local files: a length checked against a cap before reading. (A repository's
//! files are opened by `repo_client`, regular files only.)

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

/// An I/O error of kind `InvalidData` with what was being done: a file that is not what it
/// should be (too long, not text).
pub fn invalid_data(context: String, message: String) -> Error {
    Error::Io {
        context,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    }
}
