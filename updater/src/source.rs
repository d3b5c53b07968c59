//! Where bundles come from: a bundle file, or a repository directory (a USB stick laid out
//! as docs/DESIGN.md §4) resolved through the root chain and signed channel metadata.
//!
//! Reading is `repo_client`'s ([`Repository`]: a directory or HTTP; [`BundleBytes`]: a
//! bundle's byte ranges); verification happens here, in [`verify_bundle`] and
//! [`verify_named_bundle`], before the install pipeline sees a single chunk.

use std::path::{Path, PathBuf};

use bundle::verify::{check_release, Verified};
use bundle::{BundleHead, Channel, Limits, Manifest, Root};
use repo_client::{BundleBytes, Repository};

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

/// The head of the bundle `source` holds (unverified), read by ranges: each region checked
/// against `limits` before it is read ([`BundleHead::fetch`]), within the bundle's length
/// (a local file's own, over HTTP the signed size).
pub fn bundle_head(source: &dyn BundleBytes, limits: &Limits) -> Result<BundleHead> {
    let name = source.name();
    BundleHead::fetch(
        source.size()?,
        limits,
        |e| Error::verify(&name)(e.into()),
        |range| Ok(source.read_exact(range)?),
    )
}

/// Verifies the bundle at `source` against `root` (signatures and structure).
pub fn verify_bundle(
    source: &dyn BundleBytes,
    root: &Verified<Root>,
    limits: &Limits,
) -> Result<Verified<Manifest>> {
    let head = bundle_head(source, limits)?;
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
) -> Result<(Box<dyn BundleBytes>, Verified<Manifest>)> {
    let source = repo.bundle(&channel.release.bundle, channel.release.size)?;
    let manifest = verify_bundle(source.as_ref(), root, limits)?;
    check_release(channel, &manifest).map_err(|e| Error::verify(source.name())(e.into()))?;
    Ok((source, manifest))
}
