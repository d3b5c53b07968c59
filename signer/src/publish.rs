//! Publishing to a repository directory (DESIGN §4): copy the bundle to
//! `bundles/<product>-<version>.tandem` (never changing published content), write
//! `channels/<name>.json` signed by release keys with version previous + 1 and a stable
//! salt, and, given a root, check the threshold first and place `root.json` / `<N>.root.json`.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::bundle::{extract, BundleHead};
use crate::digest::Sha256Digest;
use crate::error::{Error, UsageError};
use crate::files::{read_capped, write_atomic, write_bytes_atomic, Overwrite};
use crate::keys::SecretKey;
use crate::limits::Limits;
use crate::metadata::{channel_signed_bytes, read_channel_unverified, sign_document, ChannelSpec};
use crate::role::RoleKind;
use crate::schema::Manifest;
use crate::verify::{trust_root, verify_channel};

/// What to publish.
#[derive(Debug)]
pub struct PublishOptions<'a> {
    /// Repository root directory (created if missing).
    pub repo: &'a Path,
    /// Channel name.
    pub channel: &'a str,
    /// The bundle file.
    pub bundle: &'a Path,
    /// Release keys signing the channel document.
    pub keys: &'a [SecretKey],
    /// Expiry of the channel document.
    pub expires: OffsetDateTime,
    /// Rollout share, 0–100.
    pub percent: u8,
    /// The current `root.json`: when given, the bundle is fully verified and the channel
    /// document's threshold is checked before anything is written, and the root is copied in.
    pub root: Option<&'a Path>,
    /// The time now.
    pub now: OffsetDateTime,
    /// Limits.
    pub limits: &'a Limits,
}

/// What [`publish`] did.
#[derive(Debug, Clone)]
pub struct PublishReport {
    /// Where the bundle is in the repository.
    pub bundle_path: PathBuf,
    /// False when an identical bundle was already there.
    pub bundle_copied: bool,
    /// The channel document written.
    pub channel_path: PathBuf,
    /// Its version.
    pub channel_version: u64,
    /// The root version placed in the repository, if a root was given.
    pub root_version: Option<u64>,
}

/// Publishes a bundle to a channel.
pub fn publish(o: &PublishOptions<'_>) -> Result<PublishReport, Error> {
    let manifest = read_bundle(o)?;
    let rel = format!(
        "bundles/{}-{}.tandem",
        manifest.product(),
        manifest.version()
    );
    let bundle_path = o.repo.join(&rel);
    let channel_path = o.repo.join("channels").join(format!("{}.json", o.channel));
    for dir in ["bundles", "channels"] {
        std::fs::create_dir_all(o.repo.join(dir)).map_err(Error::io(format!(
            "creating {}",
            o.repo.join(dir).display()
        )))?;
    }
    let (version, salt) = next_channel_state(&channel_path, o.limits)?;
    let spec = ChannelSpec {
        channel: o.channel.to_owned(),
        version,
        expires: o.expires,
        product: manifest.product().to_owned(),
        release_version: manifest.version().clone(),
        security_version: manifest.security_version(),
        bundle: rel,
        size: manifest.file_len(),
        manifest_sha256: manifest.manifest_sha256(),
        percent: o.percent,
        salt,
    };
    let doc = sign_document(RoleKind::Channel, &channel_signed_bytes(&spec)?, o.keys)?;
    if let Some(root) = o.root {
        let root = trust_root(
            &read_capped(root, o.limits.max_metadata_len)?,
            o.now,
            o.limits,
        )?;
        verify_channel(&root, &doc, o.channel, version, o.now, o.limits)?;
    }
    let bundle_copied = copy_bundle(o.bundle, &bundle_path)?;
    let root_version = o
        .root
        .map(|r| place_root(o.repo, r, o.now, o.limits))
        .transpose()?;
    write_bytes_atomic(&channel_path, 0o644, Overwrite::Replace, &doc)?;
    Ok(PublishReport {
        bundle_path,
        bundle_copied,
        channel_path,
        channel_version: version,
        root_version,
    })
}

/// Reads the bundle: fully verified (every chunk) against the root if one is given, else
/// structurally (header, manifest, length) only.
fn read_bundle(o: &PublishOptions<'_>) -> Result<Manifest, Error> {
    let mut f =
        File::open(o.bundle).map_err(Error::io(format!("opening {}", o.bundle.display())))?;
    let head = BundleHead::read(&mut f, o.limits)?;
    let Some(root_path) = o.root else {
        return head.manifest_unverified(o.limits);
    };
    let root = trust_root(
        &read_capped(root_path, o.limits.max_metadata_len)?,
        o.now,
        o.limits,
    )?;
    let manifest = head.verify(&root, o.limits)?;
    extract(&manifest, BufReader::new(&mut f), io::sink(), &mut |_| {})?;
    Ok(manifest.into_inner())
}

/// Version previous + 1 and the previous salt, or version 1 and a fresh random salt.
fn next_channel_state(path: &Path, limits: &Limits) -> Result<(u64, Vec<u8>), Error> {
    if !path.exists() {
        let mut salt = vec![0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        return Ok((1, salt));
    }
    let old = read_channel_unverified(&read_capped(path, limits.max_metadata_len)?, limits)?;
    let next = old
        .version
        .checked_add(1)
        .ok_or_else(|| UsageError::invalid("channel version overflow"))?;
    Ok((next, old.rollout.salt))
}

/// Copies the bundle unless an identical one is there; refuses to replace a different one.
fn copy_bundle(src: &Path, dst: &Path) -> Result<bool, Error> {
    if dst.exists() {
        if file_digest(src)? == file_digest(dst)? {
            return Ok(false);
        }
        return Err(UsageError::invalid(format!(
            "{} already exists with different content: published bundles never change; publish a new version",
            dst.display()
        ))
        .into());
    }
    let mut input = File::open(src).map_err(Error::io(format!("opening {}", src.display())))?;
    write_atomic(dst, 0o644, Overwrite::Refuse, |f| {
        io::copy(&mut input, f)
            .map(drop)
            .map_err(Error::io(format!("copying to {}", dst.display())))
    })?;
    Ok(true)
}

fn file_digest(path: &Path) -> Result<(u64, Sha256Digest), Error> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    let len = f
        .seek(SeekFrom::End(0))
        .and_then(|l| f.seek(SeekFrom::Start(0)).map(|_| l))
        .map_err(Error::io(format!("reading {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok((len, Sha256Digest(h.finalize().into())))
}

/// Writes `<N>.root.json` (never changed once there) and `root.json` when not older.
fn place_root(
    repo: &Path,
    root_path: &Path,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<u64, Error> {
    let bytes = read_capped(root_path, limits.max_metadata_len)?;
    let root = trust_root(&bytes, now, limits)?;
    let numbered = repo.join(format!("{}.root.json", root.version()));
    if numbered.exists() {
        if read_capped(&numbered, limits.max_metadata_len)? != bytes {
            return Err(UsageError::invalid(format!(
                "{} exists with different content: a root version is published once; rotate to a new version",
                numbered.display()
            ))
            .into());
        }
    } else {
        write_bytes_atomic(&numbered, 0o644, Overwrite::Refuse, &bytes)?;
    }
    let current = repo.join("root.json");
    let older = match read_capped(&current, limits.max_metadata_len) {
        Ok(existing) => crate::metadata::next_root_version(&existing, limits)
            .map(|v| v - 1 <= root.version())
            .unwrap_or(true),
        Err(_) => true,
    };
    if older {
        write_bytes_atomic(&current, 0o644, Overwrite::Replace, &bytes)?;
    }
    Ok(root.version())
}
