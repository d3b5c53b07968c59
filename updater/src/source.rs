//! Where bundles come from: a bundle file, or a repository directory (a USB stick laid out
//! as docs/DESIGN.md §4) resolved through the root chain and signed channel metadata.
//!
//! A [`BundleSource`] hands out the bundle's head and byte ranges of its payload; all
//! verification happens in [`resolve`], before the install pipeline sees a single chunk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use bundle::verify::{check_release, Verified};
use bundle::{BundleHead, Channel, Limits, Manifest, Root};

use crate::error::{unknown_source, Error, Result};

/// Where an update comes from, as the operator names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A bundle file.
    File(PathBuf),
    /// A repository directory (a USB stick laid out as the repository).
    Dir(PathBuf),
    /// A repository over HTTP(S).
    Url(String),
}

impl Source {
    /// Reads a command-line argument: an `http(s)://` URL, a directory or a file.
    pub fn parse(arg: &Path) -> Result<Source> {
        if let Some(url) = arg
            .to_str()
            .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
        {
            return Ok(Source::Url(url.to_owned()));
        }
        if arg.is_dir() {
            Ok(Source::Dir(arg.to_owned()))
        } else if arg.is_file() {
            Ok(Source::File(arg.to_owned()))
        } else {
            Err(unknown_source(arg))
        }
    }

    /// Whether this source is a repository, whose updates come through a channel.
    pub fn is_repository(&self) -> bool {
        !matches!(self, Source::File(_))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) | Source::Dir(path) => write!(f, "{}", path.display()),
            Source::Url(url) => f.write_str(url),
        }
    }
}

/// A bundle's bytes, wherever they live.
pub trait BundleSource: Send + Sync {
    /// How errors name this source (a path or a URL).
    fn name(&self) -> String;
    /// The header, manifest and signature block (unverified).
    fn head(&self, limits: &Limits) -> Result<BundleHead>;
    /// A stream of the bundle's bytes in `range` (absolute file offsets).
    fn read_range(&self, range: Range<u64>) -> Result<Box<dyn Read + Send>>;
    /// Fetching costs network bytes: chunks already in the active slot are worth reusing.
    fn is_remote(&self) -> bool {
        false
    }
}

/// A bundle file on a local filesystem or a USB stick.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    /// Whether a link at the path is followed (a path the operator names) or refused (a
    /// file inside a repository directory).
    follow: bool,
}

impl FileSource {
    /// The bundle file the operator names (a link to it is followed).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            follow: true,
        }
    }

    fn open(&self) -> Result<File> {
        open_regular(&self.path, self.follow)?.ok_or_else(|| {
            Error::io(format!("cannot open {}", self.path.display()))(
                std::io::ErrorKind::NotFound.into(),
            )
        })
    }
}

/// [`bundle::files::open_regular`], a refusal (a FIFO, a device node, a link where none is
/// followed) being hostile input naming the path (docs/SECURITY.md).
fn open_regular(path: &Path, follow: bool) -> Result<Option<File>> {
    bundle::files::open_regular(path, follow).map_err(|e| match e {
        bundle::files::OpenError::Refused { reason } => Error::Hostile {
            source_name: path.display().to_string(),
            reason,
        },
        bundle::files::OpenError::Io(e) => Error::io(format!("cannot open {}", path.display()))(e),
    })
}

impl BundleSource for FileSource {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn head(&self, limits: &Limits) -> Result<BundleHead> {
        BundleHead::read(&mut self.open()?, limits).map_err(Error::verify(self.name()))
    }

    fn read_range(&self, range: Range<u64>) -> Result<Box<dyn Read + Send>> {
        let mut file = self.open()?;
        file.seek(SeekFrom::Start(range.start))
            .map_err(Error::io(format!("cannot seek in {}", self.name())))?;
        Ok(Box::new(file.take(range.end.saturating_sub(range.start))))
    }
}

/// A repository (docs/DESIGN.md §4): a directory (a USB stick) or an HTTP(S) base URL
/// (`crate::http::Http`).
pub trait Repository: Send + Sync {
    /// How errors name the repository.
    fn name(&self) -> String;
    /// The file at `path` (relative to the repository), at most `max` bytes; `None` when
    /// it does not exist.
    fn fetch(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>>;
    /// The bundle at `path`, whose exact size the signed metadata gives.
    fn bundle(&self, path: &str, size: u64) -> Result<Box<dyn BundleSource>>;
}

/// A repository directory, e.g. on a USB stick.
#[derive(Debug, Clone)]
pub struct DirRepository {
    dir: PathBuf,
}

impl DirRepository {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirRepository { dir: dir.into() }
    }
}

impl Repository for DirRepository {
    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    fn fetch(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let full = self.dir.join(checked_relative(path)?);
        let Some(file) = open_regular(&full, false)? else {
            return Ok(None);
        };
        bundle::files::read_capped_from(file, &full, max)
            .map(Some)
            .map_err(Error::verify(full.display().to_string()))
    }

    fn bundle(&self, path: &str, _size: u64) -> Result<Box<dyn BundleSource>> {
        Ok(Box::new(FileSource {
            path: self.dir.join(checked_relative(path)?),
            follow: false,
        }))
    }
}

/// Verifies the bundle at `source` against `root` (signatures and structure).
pub fn verify_bundle(
    source: &dyn BundleSource,
    root: &Verified<Root>,
    limits: &Limits,
) -> Result<Verified<Manifest>> {
    let head = source.head(limits)?;
    head.into_verified(root, limits)
        .map_err(Error::verify(source.name()))
}

/// The bundle a verified channel names, verified against the same root and checked to be
/// exactly the one the metadata names (size, manifest hash, product, versions).
pub fn verify_named_bundle(
    repo: &dyn Repository,
    root: &Verified<Root>,
    channel: &Verified<Channel>,
    limits: &Limits,
) -> Result<(Box<dyn BundleSource>, Verified<Manifest>)> {
    let source = repo.bundle(&channel.release.bundle, channel.release.size)?;
    let manifest = verify_bundle(source.as_ref(), root, limits)?;
    check_release(channel, &manifest).map_err(|e| Error::verify(source.name())(e.into()))?;
    Ok((source, manifest))
}

/// `repo`'s name with `path` appended, for messages.
pub fn display_path(repo: &dyn Repository, path: &str) -> String {
    let name = repo.name();
    if name.ends_with('/') {
        format!("{name}{path}")
    } else {
        format!("{name}/{path}")
    }
}

/// A bundle path from signed metadata must stay inside the repository.
pub(crate) fn checked_relative(bundle: &str) -> Result<&Path> {
    let path = Path::new(bundle);
    let mut components = path.components().peekable();
    let inside =
        components.peek().is_some() && components.all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(path)
    } else {
        Err(Error::Hostile {
            source_name: "the channel".into(),
            reason: format!(
                "it names the bundle {bundle:?}, which is not a path inside the repository"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_paths_cannot_leave_the_repository() {
        assert!(checked_relative("bundles/acme-2.0.0.tandem").is_ok());
        for bad in ["../etc/shadow", "/etc/shadow", "bundles/../../x", "./x", ""] {
            assert!(checked_relative(bad).is_err(), "{bad}");
        }
    }
}
