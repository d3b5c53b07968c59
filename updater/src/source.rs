//! Where bundles come from: a bundle file, or a repository directory (a USB stick laid out
//! as DESIGN.md §4) resolved through the root chain and signed channel metadata.
//!
//! A [`BundleSource`] hands out the bundle's head and byte ranges of its payload; all
//! verification happens in [`resolve`], before the install pipeline sees a single chunk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use signer::verify::{check_release, load_chain, verify_channel, Verified};
use signer::{BundleHead, Channel, Limits, Manifest, Root};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::http::{Http, HttpBundle, HttpOptions};

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
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into() }
    }

    fn open(&self) -> Result<File> {
        File::open(&self.path).map_err(Error::io(format!("cannot open {}", self.path.display())))
    }
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

/// A verified update, ready for the install pipeline.
pub struct Resolved {
    pub source: Box<dyn BundleSource>,
    pub manifest: Verified<Manifest>,
    /// The channel and its metadata version, when the bundle came through a channel.
    pub channel: Option<(String, u64)>,
    /// A newer root reached through the rotation chain: to be persisted as trusted.
    pub rotated_root: Option<Verified<Root>>,
}

/// What `resolve` needs to know from the device.
pub struct Trust<'a> {
    /// The device's newest trusted root (raw bytes of the signed document).
    pub root_bytes: &'a [u8],
    /// The highest metadata version seen for the channel (0 if never).
    pub min_channel_version: u64,
    pub now: OffsetDateTime,
    pub limits: &'a Limits,
}

/// A repository (DESIGN.md §4): a directory (a USB stick) or an HTTP(S) base URL.
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
        if !full.exists() {
            return Ok(None);
        }
        signer::files::read_capped(&full, max)
            .map(Some)
            .map_err(Error::verify(full.display().to_string()))
    }

    fn bundle(&self, path: &str, _size: u64) -> Result<Box<dyn BundleSource>> {
        Ok(Box::new(FileSource::new(
            self.dir.join(checked_relative(path)?),
        )))
    }
}

impl Repository for Http {
    fn name(&self) -> String {
        self.url("")
    }

    fn fetch(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        self.get(checked_relative(path)?.to_str().unwrap_or(path), max)
    }

    fn bundle(&self, path: &str, size: u64) -> Result<Box<dyn BundleSource>> {
        checked_relative(path)?;
        Ok(Box::new(HttpBundle::new(self.clone(), path, size)))
    }
}

/// Whether a source names a repository over HTTP(S).
pub fn is_url(source: &Path) -> bool {
    source
        .to_str()
        .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// Verifies the update at `source`: a bundle file (signatures against the trusted root's
/// release role), or a repository — a directory or an `http(s)://` URL — with `channel`
/// (DESIGN.md §4: root chain, channel signatures, expiry, version, then the bundle must be
/// the one the metadata names).
pub fn resolve(
    source: &Path,
    channel: Option<&str>,
    trust: &Trust<'_>,
    http: &HttpOptions,
) -> Result<Resolved> {
    let repository: Box<dyn Repository> = if is_url(source) {
        Box::new(Http::new(&source.to_string_lossy(), http.clone())?)
    } else if source.is_dir() {
        Box::new(DirRepository::new(source))
    } else if source.is_file() {
        return resolve_bundle_file(source, trust);
    } else {
        return Err(Error::UnknownSource(source.to_owned()));
    };
    let channel = channel.ok_or_else(|| {
        Error::Refused(format!(
            "{} is a repository: name the channel with --channel",
            source.display()
        ))
    })?;
    resolve_repository(repository.as_ref(), channel, trust)
}

fn resolve_bundle_file(path: &Path, trust: &Trust<'_>) -> Result<Resolved> {
    let root = load_chain(trust.root_bytes, |_| Ok(None), trust.now, trust.limits)
        .map_err(Error::verify("the trusted root"))?;
    let source = FileSource::new(path);
    let manifest = verify_bundle(&source, &root, trust.limits)?;
    Ok(Resolved {
        source: Box::new(source),
        manifest,
        channel: None,
        rotated_root: None,
    })
}

fn verify_bundle(
    source: &dyn BundleSource,
    root: &Verified<Root>,
    limits: &Limits,
) -> Result<Verified<Manifest>> {
    let head = source.head(limits)?;
    head.verify(root, limits)
        .map_err(Error::verify(source.name()))
}

/// Walks the root chain, verifies the channel, then the bundle it names (DESIGN.md §4).
pub fn resolve_repository(
    repo: &dyn Repository,
    channel: &str,
    trust: &Trust<'_>,
) -> Result<Resolved> {
    let (root, metadata) = verify_channel_in(repo, channel, trust)?;
    let source = repo.bundle(&metadata.release.bundle, metadata.release.size)?;
    let manifest = verify_bundle(source.as_ref(), &root, trust.limits)?;
    check_release(&metadata, &manifest).map_err(|e| Error::verify(source.name())(e.into()))?;
    let rotated_root = (root.bytes() != trust.root_bytes).then_some(root);
    Ok(Resolved {
        source,
        manifest,
        channel: Some((channel.to_owned(), metadata.version)),
        rotated_root,
    })
}

/// The root reached through the repository's rotation chain, and the channel metadata
/// verified against it (signatures, expiry, version never lower than seen).
pub fn verify_channel_in(
    repo: &dyn Repository,
    channel: &str,
    trust: &Trust<'_>,
) -> Result<(Verified<Root>, Verified<Channel>)> {
    let limits = trust.limits;
    let mut fetch_error = None;
    let root = load_chain(
        trust.root_bytes,
        |version| {
            repo.fetch(&format!("{version}.root.json"), limits.max_metadata_len)
                .or_else(|e| {
                    fetch_error = Some(e);
                    Ok(None)
                })
        },
        trust.now,
        trust.limits,
    )
    .map_err(Error::verify(format!("{}: root chain", repo.name())))?;
    if let Some(error) = fetch_error {
        return Err(error);
    }
    let channel_path = format!("channels/{channel}.json");
    let channel_name = format!("{}{channel_path}", with_slash(&repo.name()));
    let bytes = repo
        .fetch(&channel_path, limits.max_metadata_len)?
        .ok_or_else(|| Error::Refused(format!("{channel_name} does not exist")))?;
    let metadata = verify_channel(
        &root,
        &bytes,
        channel,
        trust.min_channel_version,
        trust.now,
        limits,
    )
    .map_err(Error::verify(&channel_name))?;
    Ok((root, metadata))
}

fn with_slash(name: &str) -> String {
    if name.ends_with('/') {
        name.to_owned()
    } else {
        format!("{name}/")
    }
}

/// A bundle path from signed metadata must stay inside the repository.
fn checked_relative(bundle: &str) -> Result<&Path> {
    let path = Path::new(bundle);
    let mut components = path.components().peekable();
    let inside =
        components.peek().is_some() && components.all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(path)
    } else {
        Err(Error::Refused(format!(
            "the channel names the bundle {bundle:?}, which is not a path inside the repository"
        )))
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
