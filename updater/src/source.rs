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
use signer::{BundleHead, Limits, Manifest, Root};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// A bundle's bytes, wherever they live.
pub trait BundleSource: Send + Sync {
    /// How errors name this source (a path or a URL).
    fn name(&self) -> String;
    /// The header, manifest and signature block (unverified).
    fn head(&self, limits: &Limits) -> Result<BundleHead>;
    /// A stream of the bundle's bytes in `range` (absolute file offsets).
    fn read_range(&self, range: Range<u64>) -> Result<Box<dyn Read + Send>>;
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

/// Verifies the update at `path`: a bundle file (signatures against the trusted root's
/// release role), or a repository directory with `channel` (DESIGN.md §4: root chain,
/// channel signatures, expiry, version, then the bundle must match the metadata).
pub fn resolve(path: &Path, channel: Option<&str>, trust: &Trust<'_>) -> Result<Resolved> {
    if path.is_dir() {
        let channel = channel.ok_or_else(|| {
            Error::Refused(format!(
                "{} is a repository: name the channel with --channel",
                path.display()
            ))
        })?;
        return resolve_repository(path, channel, trust);
    }
    if !path.is_file() {
        return Err(Error::UnknownSource(path.to_owned()));
    }
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
    head.verify(root, limits).map_err(Error::verify(source.name()))
}

fn resolve_repository(repo: &Path, channel: &str, trust: &Trust<'_>) -> Result<Resolved> {
    let limits = trust.limits;
    let root = load_chain(
        trust.root_bytes,
        |version| read_optional(&repo.join(format!("{version}.root.json")), limits.max_metadata_len),
        trust.now,
        trust.limits,
    )
    .map_err(Error::verify(format!("{}: root chain", repo.display())))?;
    let channel_path = repo.join("channels").join(format!("{channel}.json"));
    let bytes = read_capped(&channel_path, limits.max_metadata_len)?;
    let metadata = verify_channel(
        &root,
        &bytes,
        channel,
        trust.min_channel_version,
        trust.now,
        limits,
    )
    .map_err(Error::verify(channel_path.display().to_string()))?;
    let bundle_path = repo.join(checked_relative(&metadata.release.bundle)?);
    let source = FileSource::new(&bundle_path);
    let manifest = verify_bundle(&source, &root, limits)?;
    check_release(&metadata, &manifest)
        .map_err(|e| Error::verify(bundle_path.display().to_string())(e.into()))?;
    let rotated_root = (root.bytes() != trust.root_bytes).then_some(root);
    Ok(Resolved {
        source: Box::new(source),
        manifest,
        channel: Some((channel.to_owned(), metadata.version)),
        rotated_root,
    })
}

/// A bundle path from signed metadata must stay inside the repository.
fn checked_relative(bundle: &str) -> Result<&Path> {
    let path = Path::new(bundle);
    let mut components = path.components().peekable();
    let inside = components.peek().is_some()
        && components.all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(path)
    } else {
        Err(Error::Refused(format!(
            "the channel names the bundle {bundle:?}, which is not a path inside the repository"
        )))
    }
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    signer::files::read_capped(path, max).map_err(Error::verify(path.display().to_string()))
}

fn read_optional(path: &Path, max: u64) -> std::result::Result<Option<Vec<u8>>, signer::Error> {
    if path.exists() {
        signer::files::read_capped(path, max).map(Some)
    } else {
        Ok(None)
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
