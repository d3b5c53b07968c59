//! Publishing to a repository directory (FORMAT §10): copy the bundle to
//! `bundles/<product>-<version>.tandem` (never changing published content), write
//! `channels/<name>.json` signed by release keys with version previous + 1 and a stable
//! salt. Mistakes every node would refuse are caught first: a channel document below the
//! release threshold, a downgrade, a given root older than the repository's, and, when a new
//! root is placed, channels it would refuse.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::bundle::{verify_contents, BundleHead};
use crate::digest::Sha256Digest;
use crate::error::{Error, UsageError, VerifyError};
use crate::files::{read_capped, write_atomic, write_bytes_atomic, Overwrite};
use crate::keys::{SecretKey, Signer};
use crate::limits::Limits;
use crate::metadata::{channel_signed_bytes, read_channel_unverified, sign_document, ChannelSpec};
use crate::role::RoleKind;
use crate::schema::{Channel, Manifest, Root};
use crate::verify::{trust_root, verify_channel, Verified};

/// What to publish.
#[derive(Debug)]
pub struct PublishOptions<'a, K = SecretKey> {
    /// Repository root directory (created if missing).
    pub repo: &'a Path,
    /// Channel name.
    pub channel: &'a str,
    /// The bundle file.
    pub bundle: &'a Path,
    /// Release keys signing the channel document.
    pub keys: &'a [K],
    /// Expiry of the channel document.
    pub expires: OffsetDateTime,
    /// Rollout share, 0–100.
    pub percent: u8,
    /// The current `root.json`, copied into the repository. Without it the repository's
    /// own `root.json` is used for the checks (the bundle fully verified, the channel
    /// document's threshold), which run before anything is written.
    pub root: Option<&'a Path>,
    /// The time now.
    pub now: OffsetDateTime,
    /// Limits.
    pub limits: &'a Limits,
}

/// Checks of [`publish_allowing`] that an operator may waive; all off by default (CONTRIBUTING.md §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    /// Write a channel document whose keys do not meet the root's release threshold, or
    /// that no root can check (no `root`, no `root.json` in the repository).
    pub below_threshold: bool,
    /// Offer a lower version or security version than the channel's current release.
    pub downgrade: bool,
}

/// Something published that nodes may refuse, for the operator to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishWarning {
    /// No root was at hand: the channel's signature threshold was not checked.
    ThresholdUnchecked,
    /// The channel document does not meet the release threshold (`allow.below_threshold`).
    BelowThreshold(String),
    /// Another channel of the repository that nodes trusting the given root will refuse
    /// (signed by keys the root no longer lists, too few of them, or expired).
    StaleChannel {
        /// The channel name.
        channel: String,
        /// Why it is refused.
        reason: String,
    },
    /// The bundle signs a chunk store that was not beside it: published without one.
    NoChunkStore(String),
}

impl fmt::Display for PublishWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishWarning::ThresholdUnchecked => f.write_str(
                "no root given or in the repository: the channel's signature threshold was not checked",
            ),
            PublishWarning::BelowThreshold(report) => {
                write!(f, "published below threshold, every node will refuse it: {report}")
            }
            PublishWarning::StaleChannel { channel, reason } => write!(
                f,
                "channel `{channel}` will be refused by nodes trusting this root (publish it again): {reason}"
            ),
            PublishWarning::NoChunkStore(path) => write!(
                f,
                "the bundle signs a chunk store, but {path} is missing: published without it (nodes fetch whole frames)"
            ),
        }
    }
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
    /// What nodes may refuse.
    pub warnings: Vec<PublishWarning>,
}

/// Publishes a bundle to a channel with every check on (see [`publish_allowing`]).
pub fn publish<K: Signer>(o: &PublishOptions<'_, K>) -> Result<PublishReport, Error> {
    publish_allowing(o, Allow::default())
}

/// Publishes a bundle to a channel. The root is `o.root`, else the repository's `root.json`:
/// the bundle is verified against it and the channel document must meet its release
/// threshold (without any root, publishing is refused unless `allow.below_threshold`). A
/// release older than the channel's current one is refused unless `allow.downgrade`. With
/// `o.root`, the other channels that root would refuse are listed as warnings; an `o.root`
/// older than the repository's `root.json` is refused.
pub fn publish_allowing<K: Signer>(
    o: &PublishOptions<'_, K>,
    allow: Allow,
) -> Result<PublishReport, Error> {
    let root = resolve_root(o)?;
    let manifest = read_bundle(o, root.as_ref())?;
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
    let current = read_current(&channel_path, o.limits)?;
    if !allow.downgrade {
        check_not_downgrade(current.as_ref(), &manifest, &channel_path)?;
    }
    let (version, salt) = next_channel_state(current)?;
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
    let mut warnings = check_channel(o, root.as_ref(), &doc, version, allow)?
        .into_iter()
        .collect::<Vec<_>>();
    // The store first: a node that finds the bundle finds its store beside it.
    let store_copied = copy_store(&manifest, o.bundle, &bundle_path)?;
    if store_copied.is_none() && manifest.store().is_some() {
        warnings.push(PublishWarning::NoChunkStore(proto::chunk_store_path(
            &o.bundle.display().to_string(),
        )));
    }
    let bundle_copied = copy_bundle(o.bundle, &bundle_path)?;
    let root_version = o
        .root
        .map(|r| place_root(o.repo, r, o.now, o.limits))
        .transpose()?;
    write_bytes_atomic(&channel_path, 0o644, Overwrite::Replace, &doc)?;
    if let (Some(root), Some(_)) = (&root, o.root) {
        warnings.extend(stale_channels(o, root)?);
    }
    Ok(PublishReport {
        bundle_path,
        bundle_copied,
        channel_path,
        channel_version: version,
        root_version,
        warnings,
    })
}

/// The root to check against: the one given, else the repository's own, else none.
fn resolve_root<K>(o: &PublishOptions<'_, K>) -> Result<Option<Verified<Root>>, Error> {
    let repo_root = o.repo.join("root.json");
    let path = match o.root {
        Some(path) => path,
        None if repo_root.exists() => &repo_root,
        None => return Ok(None),
    };
    let root = trust_root(
        &read_capped(path, o.limits.max_metadata_len)?,
        o.now,
        o.limits,
    )?;
    if o.root.is_some() {
        check_not_older_root(o.repo, path, &root, o.limits)?;
    }
    Ok(Some(root))
}

/// A root older than the repository's signs with keys the repository's root may have
/// revoked, and nodes that walked to the newer root refuse what it accepts: publishing with
/// it is refused, naming both versions.
fn check_not_older_root(
    repo: &Path,
    given: &Path,
    root: &Verified<Root>,
    limits: &Limits,
) -> Result<(), Error> {
    let current = repo.join("root.json");
    if !current.exists() {
        return Ok(());
    }
    let bytes = read_capped(&current, limits.max_metadata_len)?;
    // A root.json that does not parse is no newer root: placing the given one replaces it.
    let held = crate::metadata::next_root_version(&bytes, limits).map_or(0, |next| next - 1);
    if held > root.version() {
        return Err(UsageError::invalid(format!(
            "{} is root version {}, older than the repository's {} (root version {held}): publish with the current root",
            given.display(),
            root.version(),
            current.display(),
        ))
        .into());
    }
    Ok(())
}

/// The new channel document must meet the root's release threshold (or be allowed not to).
fn check_channel<K>(
    o: &PublishOptions<'_, K>,
    root: Option<&Verified<Root>>,
    doc: &[u8],
    version: u64,
    allow: Allow,
) -> Result<Option<PublishWarning>, Error> {
    let Some(root) = root else {
        if allow.below_threshold {
            return Ok(Some(PublishWarning::ThresholdUnchecked));
        }
        return Err(UsageError::invalid(format!(
            "cannot check the channel's signature threshold: no root given and no {} (give --root root.json, or --allow-below-threshold to publish unchecked)",
            o.repo.join("root.json").display()
        ))
        .into());
    };
    match verify_channel(root, doc, o.channel, version, o.now, o.limits) {
        Ok(_) => Ok(None),
        Err(Error::Verify(VerifyError::ThresholdNotMet(report))) if allow.below_threshold => {
            Ok(Some(PublishWarning::BelowThreshold(report.to_string())))
        }
        Err(e) => Err(e),
    }
}

/// The channel's current document, read WITHOUT verifying it (the publisher's own previous
/// document: its version, salt and release carry over). Never use this on the device.
fn read_current(path: &Path, limits: &Limits) -> Result<Option<Channel>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_capped(path, limits.max_metadata_len)?;
    read_channel_unverified(&bytes, limits).map(Some)
}

/// Refuses a release older (version or security version) than the channel's current one.
fn check_not_downgrade(
    current: Option<&Channel>,
    manifest: &Manifest,
    path: &Path,
) -> Result<(), Error> {
    let Some(current) = current else {
        return Ok(());
    };
    let old = &current.release;
    if manifest.version() < &old.version || manifest.security_version() < old.security_version {
        return Err(UsageError::invalid(format!(
            "{} offers {} {} (security version {}); publishing {} (security version {}) would be a downgrade, which nodes refuse (use --allow-downgrade to publish it anyway)",
            path.display(),
            old.product,
            old.version,
            old.security_version,
            manifest.version(),
            manifest.security_version()
        ))
        .into());
    }
    Ok(())
}

/// The repository's other channels that `root` does not accept now.
fn stale_channels<K>(
    o: &PublishOptions<'_, K>,
    root: &Verified<Root>,
) -> Result<Vec<PublishWarning>, Error> {
    let dir = o.repo.join("channels");
    let entries =
        std::fs::read_dir(&dir).map_err(Error::io(format!("listing {}", dir.display())))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("listing {}", dir.display())))?;
        let file = entry.file_name();
        match file.to_str().and_then(|f| f.strip_suffix(".json")) {
            Some(name) if name != o.channel => names.push(name.to_owned()),
            _ => {}
        }
    }
    names.sort();
    let mut stale = Vec::new();
    for channel in names {
        let doc = read_capped(
            &dir.join(format!("{channel}.json")),
            o.limits.max_metadata_len,
        )?;
        if let Err(e) = verify_channel(root, &doc, &channel, 0, o.now, o.limits) {
            stale.push(PublishWarning::StaleChannel {
                channel,
                reason: e.to_string(),
            });
        }
    }
    Ok(stale)
}

/// Reads the bundle: fully verified (every chunk of the image and boot assets) against the
/// root if there is one, else
/// structurally (header, manifest, length) only.
fn read_bundle<K>(
    o: &PublishOptions<'_, K>,
    root: Option<&Verified<Root>>,
) -> Result<Manifest, Error> {
    let mut f =
        File::open(o.bundle).map_err(Error::io(format!("opening {}", o.bundle.display())))?;
    let head = BundleHead::read(&mut f, o.limits)?;
    let Some(root) = root else {
        return head.manifest_unverified(o.limits);
    };
    let manifest = head.verify(root, o.limits)?;
    verify_contents(&manifest, &mut BufReader::new(&mut f), &mut |_| {})?;
    Ok(manifest.into_inner())
}

/// Version previous + 1 and the previous salt, or version 1 and a fresh random salt.
fn next_channel_state(current: Option<Channel>) -> Result<(u64, Vec<u8>), Error> {
    let Some(old) = current else {
        let mut salt = vec![0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        return Ok((1, salt));
    };
    let next = old
        .version
        .checked_add(1)
        .ok_or_else(|| UsageError::invalid("channel version overflow"))?;
    Ok((next, old.rollout.salt))
}

/// Copies the chunk store beside `bundle` (FORMAT §3.4) to beside `published`, when the
/// manifest signs one and it is there: refused unless its length and SHA-256 are the signed
/// ones. Returns whether it was there (`None`: no store to copy).
fn copy_store(manifest: &Manifest, bundle: &Path, published: &Path) -> Result<Option<bool>, Error> {
    let Some(signed) = manifest.store() else {
        return Ok(None);
    };
    let src = PathBuf::from(proto::chunk_store_path(&bundle.to_string_lossy()));
    if !src.exists() {
        return Ok(None);
    }
    let (len, sha256) = file_digest(&src)?;
    if (len, sha256) != (signed.size, signed.sha256) {
        return Err(UsageError::invalid(format!(
            "{} is not the chunk store its bundle signs: {len} bytes hashing to {}, the manifest says {} bytes hashing to {}",
            src.display(),
            sha256.to_hex(),
            signed.size,
            signed.sha256.to_hex()
        ))
        .into());
    }
    let dst = PathBuf::from(proto::chunk_store_path(&published.to_string_lossy()));
    copy_bundle(&src, &dst).map(Some)
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
