//! Reading a published repository (docs/DESIGN.md §4, FORMAT §10) from the tool side: a
//! directory, or (in the binary) an HTTP base URL, behind one trait. Every read is bounded
//! by the caller's limit; nothing read here is trusted until [`crate::verify`] checked it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::bundle::BundleHead;
use crate::error::Error;
use crate::limits::Limits;

/// A repository whose files can be read by their path relative to its root (a path from
/// signed metadata or built from a checked name: no `..`, no leading `/`).
pub trait RepoReader {
    /// How messages name the repository (a directory or a base URL).
    fn name(&self) -> String;
    /// The file at `path` as a stream, or `None` when the repository has no such file.
    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + '_>>, Error>;
    /// Exactly the bytes of `range` of the file at `path`.
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, Error>;
    /// The channel names the repository has, when it can list them (a directory can, an
    /// HTTP server cannot).
    fn channel_names(&self) -> Result<Option<Vec<String>>, Error>;
    /// The bundle files under `bundles/` with their lengths, when the repository can list
    /// them.
    fn bundle_files(&self) -> Result<Option<Vec<(String, u64)>>, Error>;
}

/// `repo`'s name with `path` appended, for messages.
pub fn display_path(repo: &dyn RepoReader, path: &str) -> String {
    format!("{}/{path}", repo.name().trim_end_matches('/'))
}

/// Reads the whole file at `path`, at most `max` bytes; `None` when it does not exist.
pub fn fetch_capped(repo: &dyn RepoReader, path: &str, max: u64) -> Result<Option<Vec<u8>>, Error> {
    let Some(reader) = repo.open(path)? else {
        return Ok(None);
    };
    let ctx = || format!("reading {}", display_path(repo, path));
    let mut bytes = Vec::new();
    reader
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io(ctx()))?;
    if bytes.len() as u64 > max {
        return Err(Error::io(ctx())(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than the {max}-byte limit"),
        )));
    }
    Ok(Some(bytes))
}

/// Reads the head of the bundle at `path` (`size` bytes long) by ranges
/// ([`BundleHead::fetch`]): each region checked against `limits` before it is fetched. The
/// payload is not read.
pub fn read_bundle_head(
    repo: &dyn RepoReader,
    path: &str,
    size: u64,
    limits: &Limits,
) -> Result<BundleHead, Error> {
    BundleHead::fetch(size, limits, Error::Format, |range| {
        repo.read_range(path, range)
    })
}

/// A repository directory (a publisher's tree, or a USB stick).
#[derive(Debug, Clone)]
pub struct DirReader {
    dir: PathBuf,
}

impl DirReader {
    /// Reads the repository at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirReader { dir: dir.into() }
    }

    fn list(&self, sub: &str, suffix: &str) -> Result<Option<Vec<String>>, Error> {
        let dir = self.dir.join(sub);
        let ctx = || format!("listing {}", dir.display());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(Vec::new())),
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
        Ok(Some(names))
    }
}

impl RepoReader for DirReader {
    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + '_>>, Error> {
        let full = self.dir.join(path);
        Ok(open_unfollowed(&full)?.map(|f| Box::new(f) as Box<dyn Read>))
    }

    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, Error> {
        let full = self.dir.join(path);
        read_file_range(&full, range)
    }

    fn channel_names(&self) -> Result<Option<Vec<String>>, Error> {
        self.list("channels", ".json")
    }

    fn bundle_files(&self) -> Result<Option<Vec<(String, u64)>>, Error> {
        let Some(names) = self.list("bundles", ".tandem")? else {
            return Ok(None);
        };
        let mut files = Vec::with_capacity(names.len());
        for name in names {
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

/// A repository file, opened as the agent opens one ([`crate::files::open_regular`]: no FIFO,
/// device node or link).
fn open_unfollowed(path: &Path) -> Result<Option<File>, Error> {
    crate::files::open_regular(path, false).map_err(|e| {
        let source = match e {
            crate::files::OpenError::Refused { reason } => {
                io::Error::new(io::ErrorKind::InvalidData, reason)
            }
            crate::files::OpenError::Io(e) => e,
        };
        Error::io(format!("opening {}", path.display()))(source)
    })
}

fn read_file_range(path: &Path, range: Range<u64>) -> Result<Vec<u8>, Error> {
    let ctx = || format!("reading {}", path.display());
    let mut f =
        open_unfollowed(path)?.ok_or_else(|| Error::io(ctx())(io::ErrorKind::NotFound.into()))?;
    let len = usize::try_from(range.end.saturating_sub(range.start))
        .map_err(|_| Error::Bug("range longer than memory"))?;
    let mut buf = vec![0; len];
    f.seek(SeekFrom::Start(range.start))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(Error::io(ctx()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_none_and_one_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("channels")).unwrap();
        std::fs::write(dir.path().join("channels/a.json"), vec![b' '; 100]).unwrap();
        let repo = DirReader::new(dir.path());
        assert!(fetch_capped(&repo, "channels/b.json", 100)
            .unwrap()
            .is_none());
        assert_eq!(
            fetch_capped(&repo, "channels/a.json", 100)
                .unwrap()
                .unwrap()
                .len(),
            100
        );
        let err = fetch_capped(&repo, "channels/a.json", 99).unwrap_err();
        assert!(
            format!("{err:?}").contains("more than the 99-byte limit"),
            "{err:?}"
        );
        assert_eq!(repo.channel_names().unwrap().unwrap(), ["a"]);
        assert_eq!(repo.bundle_files().unwrap().unwrap(), []);
    }

    /// A FIFO is refused at once (a blocking open would wait for a writer for ever), and a
    /// link is not followed; each refusal names the file.
    #[test]
    fn a_fifo_or_a_link_in_a_repository_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("channels")).unwrap();
        let fifo = dir.path().join("channels/a.json");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        std::fs::write(dir.path().join("secret"), "not metadata").unwrap();
        std::os::unix::fs::symlink("../secret", dir.path().join("channels/b.json")).unwrap();
        let repo = DirReader::new(dir.path());
        for (name, why) in [
            ("a.json", "not a regular file"),
            ("b.json", "a symbolic link"),
        ] {
            let path = format!("channels/{name}");
            let err = fetch_capped(&repo, &path, 100).unwrap_err();
            let text = format!("{err}: {:?}", std::error::Error::source(&err));
            assert!(text.contains(&path) && text.contains(why), "{text}");
            assert!(repo.read_range(&path, 0..1).is_err());
        }
    }
}
