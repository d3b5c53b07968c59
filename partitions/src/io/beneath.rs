//! Opening directories and files beneath a store's root without following links
//! (docs/DESIGN.md §5.1, "No links beneath the boot filesystem"): every component under the root is
//! opened relative to its parent's descriptor with `O_NOFOLLOW`, and a directory must be a
//! real directory, a file a regular file. A symbolic link planted as `tandem/b` (possible on
//! an ext4 `/boot`, not on FAT) therefore fails the operation naming the path, instead of
//! sending an install's writes and removals into the other slot or anywhere else.
//!
//! The root itself is opened as configured (following links): it is the operator's choice.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// A directory opened beneath the root, with its full path for messages.
pub(super) struct OpenDir {
    pub(super) fd: OwnedFd,
    pub(super) path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the root directory.
fn root(root: &Path) -> io::Result<OpenDir> {
    let fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refusal(root, e))?;
    Ok(OpenDir {
        fd,
        path: root.to_path_buf(),
    })
}

/// Opens the directory `names` leads to beneath `root`, every component unfollowed.
fn walk(root: &Path, names: &[&OsStr]) -> io::Result<OpenDir> {
    let mut at = self::root(root)?;
    for name in names {
        at = child_dir(&at, name)?;
    }
    Ok(at)
}

/// Opens the directory `rel` beneath `root`.
pub(super) fn dir(root: &Path, rel: &Path) -> io::Result<OpenDir> {
    walk(root, &names(rel)?)
}

/// Opens the directory holding `rel` and returns it with the file's name.
pub(super) fn parent<'a>(root: &Path, rel: &'a Path) -> io::Result<(OpenDir, &'a OsStr)> {
    let names = names(rel)?;
    let Some((last, dirs)) = names.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", root.join(rel).display()),
        ));
    };
    Ok((walk(root, dirs)?, last))
}

/// Creates the directory `rel` and its parents beneath `root` (each new one made durable in
/// its parent), refusing a link or a file where a directory belongs.
pub(super) fn create_dir_all(root: &Path, rel: &Path) -> io::Result<OpenDir> {
    // The root is the directory the operator configured (an ESP, a grubenv's directory): made
    // when missing and taken as configured; only what lies beneath it is never reached
    // through a link.
    std::fs::create_dir_all(root)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
    let mut at = self::root(root)?;
    for name in names(rel)? {
        match rustix::fs::mkdirat(&at.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => rustix::fs::fsync(&at.fd).map_err(|e| refusal(&at.path, e))?,
            Err(Errno::EXIST) => {}
            Err(e) => return Err(refusal(&at.path.join(name), e)),
        }
        at = child_dir(&at, name)?;
    }
    Ok(at)
}

/// Opens the regular file `name` in `dir` with `flags` (plus `O_NOFOLLOW | O_NONBLOCK`, so a
/// FIFO cannot block the open); anything but a regular file is refused, naming it.
pub(super) fn file(dir: &OpenDir, name: &OsStr, flags: OFlags, mode: u32) -> io::Result<File> {
    let path = dir.path.join(name);
    let flags = flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir.fd, name, flags, Mode::from_raw_mode(mode))
        .map_err(|e| refusal(&path, e))?;
    let kind = FileType::from_raw_mode(
        rustix::fs::fstat(&fd)
            .map_err(|e| refusal(&path, e))?
            .st_mode,
    );
    if kind != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file ({kind:?}), refused", path.display()),
        ));
    }
    // `O_NONBLOCK` changes nothing for a regular file's reads and writes.
    Ok(File::from(fd))
}

/// Opens the regular file `rel` beneath `root`.
pub(super) fn open(root: &Path, rel: &Path, flags: OFlags) -> io::Result<File> {
    let (dir, name) = parent(root, rel)?;
    file(&dir, name, flags, 0)
}

fn child_dir(at: &OpenDir, name: &OsStr) -> io::Result<OpenDir> {
    let path = at.path.join(name);
    let fd = rustix::fs::openat(&at.fd, name, DIR_FLAGS, Mode::empty()).map_err(|e| {
        // `O_DIRECTORY | O_NOFOLLOW` on a link fails with ENOTDIR: say which it was.
        let link = rustix::fs::statat(&at.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        refusal(&path, if link { Errno::LOOP } else { e })
    })?;
    Ok(OpenDir { fd, path })
}

/// The path's names (`.` dropped), after [`checked_relative`].
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    Ok(checked_relative(rel)?
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect())
}

/// An open's failure naming the path; a link or a non-directory said as such.
fn refusal(path: &Path, e: Errno) -> io::Error {
    let kind = io::Error::from(e).kind();
    let why = match e {
        Errno::LOOP => "a symbolic link, not followed beneath the store's root".to_string(),
        Errno::NOTDIR => "not a directory".to_string(),
        // A non-blocking open for writing of a FIFO without a reader, or of a device.
        Errno::NXIO => "not a regular file (a FIFO or a device), refused".to_string(),
        e => io::Error::from(e).to_string(),
    };
    io::Error::new(kind, format!("{}: {why}", path.display()))
}

/// A store path: relative and without `..`, so nothing outside the store's root is named.
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
