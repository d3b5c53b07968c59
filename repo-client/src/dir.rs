//! A repository directory (a publisher's tree, a USB stick) and a bundle file on a local
//! filesystem. A repository's files are opened as [`open_regular`] opens them: non-blocking,
//! no link followed, nothing but a regular file read — a stick may carry a FIFO that would
//! block a reader for ever, or a link to a file outside the repository.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::{checked_relative, BundleBytes, Repository};

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

/// [`open_regular`], a refusal being hostile input naming the path.
fn open(path: &Path, follow: bool) -> Result<Option<File>> {
    open_regular(path, follow).map_err(|e| match e {
        OpenError::Refused { reason } => Error::Hostile {
            source_name: path.display().to_string(),
            reason,
        },
        OpenError::Io(e) => Error::io(format!("cannot open {}", path.display()))(e),
    })
}

/// A repository directory, e.g. on a USB stick.
#[derive(Debug, Clone)]
pub struct DirRepository {
    dir: PathBuf,
}

impl DirRepository {
    /// Reads the repository at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirRepository { dir: dir.into() }
    }

    /// The names in `sub` ending in `suffix`, without it, sorted; none when `sub` is missing.
    fn list(&self, sub: &str, suffix: &str) -> Result<Vec<String>> {
        let dir = self.dir.join(sub);
        let ctx = || format!("listing {}", dir.display());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(ctx())(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let name = entry.map_err(Error::io(ctx()))?.file_name();
            if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(suffix)) {
                names.push(stem.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

impl Repository for DirRepository {
    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    fn fetch(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let full = self.dir.join(checked_relative(path)?);
        let Some(file) = open(&full, false)? else {
            return Ok(None);
        };
        read_capped(file, &full, max).map(Some)
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let full = self.dir.join(checked_relative(path)?);
        Ok(open(&full, false)?.map(|f| Box::new(f) as Box<dyn Read + Send>))
    }

    fn bundle(&self, path: &str, _size: u64) -> Result<Box<dyn BundleBytes>> {
        Ok(Box::new(FileBundle {
            path: self.dir.join(checked_relative(path)?),
            follow: false,
        }))
    }

    fn channel_names(&self) -> Result<Option<Vec<String>>> {
        self.list("channels", ".json").map(Some)
    }

    fn bundle_files(&self) -> Result<Option<Vec<(String, u64)>>> {
        let mut files = Vec::new();
        for name in self.list("bundles", ".tandem")? {
            let rel = format!("bundles/{name}.tandem");
            let full = self.dir.join(&rel);
            let len = full
                .metadata()
                .map_err(Error::io(format!("reading {}", full.display())))?
                .len();
            files.push((rel, len));
        }
        Ok(Some(files))
    }
}

/// The whole of `file`, at most `max` bytes (its length checked before reading).
fn read_capped(file: File, path: &Path, max: u64) -> Result<Vec<u8>> {
    let ctx = || format!("reading {}", path.display());
    let len = file.metadata().map_err(Error::io(ctx()))?.len();
    if len > max {
        return Err(Error::TooLarge {
            path: path.display().to_string(),
            len,
            max,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(Error::io(ctx()))?;
    Ok(buf)
}

/// A bundle file on a local filesystem: one the operator names, or one inside a repository
/// directory (a link to it refused).
#[derive(Debug, Clone)]
pub struct FileBundle {
    path: PathBuf,
    /// Whether a link at the path is followed (a path the operator names) or refused (a
    /// file inside a repository directory).
    follow: bool,
}

impl FileBundle {
    /// The bundle file the operator names (a link to it is followed).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileBundle {
            path: path.into(),
            follow: true,
        }
    }

    fn open(&self) -> Result<File> {
        open(&self.path, self.follow)?.ok_or_else(|| {
            Error::io(format!("cannot open {}", self.path.display()))(
                io::ErrorKind::NotFound.into(),
            )
        })
    }

    fn open_at(&self, offset: u64) -> Result<File> {
        let mut file = self.open()?;
        file.seek(SeekFrom::Start(offset))
            .map_err(Error::io(format!("cannot seek in {}", self.name())))?;
        Ok(file)
    }
}

impl BundleBytes for FileBundle {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn size(&self) -> Result<u64> {
        let file = self.open()?;
        let meta = file
            .metadata()
            .map_err(Error::io(format!("reading {}", self.name())))?;
        Ok(meta.len())
    }

    fn read_range(&self, range: Range<u64>) -> Result<Box<dyn Read + Send>> {
        let file = self.open_at(range.start)?;
        Ok(Box::new(file.take(range.end.saturating_sub(range.start))))
    }

    fn read_exact(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let len = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| {
            Error::io(format!("reading {}", self.name()))(io::Error::other(
                "a range longer than memory",
            ))
        })?;
        let mut buf = vec![0; len];
        self.open_at(range.start)?
            .read_exact(&mut buf)
            .map_err(Error::io(format!("reading {}", self.name())))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_none_and_one_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("channels")).unwrap();
        std::fs::write(dir.path().join("channels/a.json"), vec![b' '; 100]).unwrap();
        let repo = DirRepository::new(dir.path());
        assert!(repo.fetch("channels/b.json", 100).unwrap().is_none());
        assert_eq!(
            repo.fetch("channels/a.json", 100).unwrap().unwrap().len(),
            100
        );
        let err = repo.fetch("channels/a.json", 99).unwrap_err();
        assert!(
            err.to_string().contains("more than the 99-byte limit"),
            "{err}"
        );
        assert_eq!(repo.channel_names().unwrap().unwrap(), ["a"]);
        assert_eq!(repo.bundle_files().unwrap().unwrap(), []);
    }

    /// A FIFO is refused at once (a blocking open would wait for a writer for ever), and a
    /// link is not followed; each refusal names the file, for every kind of read.
    #[test]
    fn a_fifo_or_a_link_in_a_repository_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("channels")).unwrap();
        let fifo = dir.path().join("channels/a.json");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        std::fs::write(dir.path().join("secret"), "not metadata").unwrap();
        std::os::unix::fs::symlink("../secret", dir.path().join("channels/b.json")).unwrap();
        let repo = DirRepository::new(dir.path());
        for (name, why) in [
            ("a.json", "not a regular file"),
            ("b.json", "a symbolic link"),
        ] {
            let path = format!("channels/{name}");
            let refused = |e: Error| {
                let text = e.to_string();
                assert!(text.contains(&path) && text.contains(why), "{text}");
            };
            refused(repo.fetch(&path, 100).unwrap_err());
            refused(repo.open(&path).err().unwrap());
            refused(repo.bundle(&path, 1).unwrap().read_exact(0..1).unwrap_err());
        }
    }

    /// A bundle's ranges read exactly their bytes; one past the end is an error, not a
    /// short answer.
    #[test]
    fn a_bundle_reads_exactly_its_ranges() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bundles")).unwrap();
        std::fs::write(dir.path().join("bundles/x.tandem"), b"0123456789").unwrap();
        let repo = DirRepository::new(dir.path());
        let bundle = repo.bundle("bundles/x.tandem", 10).unwrap();
        assert_eq!(bundle.size().unwrap(), 10);
        assert_eq!(bundle.read_exact(2..5).unwrap(), b"234");
        let mut rest = Vec::new();
        bundle
            .read_range(7..10)
            .unwrap()
            .read_to_end(&mut rest)
            .unwrap();
        assert_eq!(rest, b"789");
        assert!(bundle.read_exact(8..12).is_err());
        assert!(repo.bundle("../x.tandem", 10).is_err());
    }
}
