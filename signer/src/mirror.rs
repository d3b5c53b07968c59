//! Copying a repository onto a USB stick for air-gapped nodes (docs/airgap.md): the root
//! chain, the channel documents (and pause files) asked for and the bundles they name, each
//! verified against a trusted root with the same checks a node runs (FORMAT §8: the chain
//! walk, channel signatures and expiry, every bundle's manifest signature and full payload).
//!
//! Everything is written into a temporary directory beside the destination and renamed into
//! place at the end, so a half-written mirror never exists under the destination's name.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::bundle::{verify_contents, BundleHead};
use crate::error::{Error, UsageError};
use crate::limits::Limits;
use crate::repo::{display_path, fetch_capped, repo_error, Repository};
use crate::schema::{Channel, Manifest, Root};
use crate::verify::{
    check_release, parse_root_ignoring_expiry, verify_channel, walk_chain, ChainWalk, Verified,
};

/// What to mirror, from where, to where.
pub struct MirrorOptions<'a> {
    /// The source repository.
    pub from: &'a dyn Repository,
    /// The channels to copy (at least one).
    pub channels: &'a [String],
    /// The destination directory (must not exist unless `replace`).
    pub to: &'a Path,
    /// The trusted root document the whole mirror is checked against.
    pub root: &'a [u8],
    /// Replace an existing destination (renamed aside, then removed once the new one is in place).
    pub replace: bool,
    /// The time now (expiry checks).
    pub now: OffsetDateTime,
    /// Limits.
    pub limits: &'a Limits,
}

/// A channel copied: its verified document, and what the document does not say — whether
/// the unsigned pause file copied beside it stops installs.
#[derive(Debug, Clone)]
pub struct MirroredChannel {
    /// The channel document as verified (its `expires`: carry the stick to the nodes
    /// before then).
    pub channel: Channel,
    /// Whether a pause file was copied that stops installs.
    pub paused: bool,
}

/// One file written into the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredFile {
    /// Path relative to the mirror.
    pub path: String,
    /// Its length.
    pub bytes: u64,
}

/// What [`mirror`] wrote.
#[derive(Debug, Clone)]
pub struct MirrorReport {
    /// The destination.
    pub to: PathBuf,
    /// The root versions copied, oldest first; the last is the current root.
    pub roots: Vec<u64>,
    /// The channels copied.
    pub channels: Vec<MirroredChannel>,
    /// Every file written, in order.
    pub files: Vec<MirroredFile>,
    /// Whether an existing mirror was replaced.
    pub replaced: bool,
}

impl MirrorReport {
    /// Total bytes written.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Copies and verifies the channels of `o.from` into `o.to` (see the module docs). On any
/// error nothing is left: neither the destination (unless it existed before, untouched) nor
/// the temporary directory.
pub fn mirror(o: &MirrorOptions<'_>) -> Result<MirrorReport, Error> {
    let (parent, name) = check_destination(o)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tandem-mirror-"))
        .tempdir_in(&parent)
        .map_err(Error::io(format!(
            "creating a temporary directory in {}",
            parent.display()
        )))?;
    let mut out = Staging {
        dir: tmp.path().to_owned(),
        files: Vec::new(),
        bundles: BTreeMap::new(),
    };
    let (root, roots) = mirror_roots(o, &mut out)?;
    let mut channels = Vec::new();
    for channel in o.channels {
        channels.push(mirror_channel(o, &root, channel, &mut out)?);
    }
    for sub in ["", "channels", "bundles"] {
        sync_dir(&out.dir.join(sub))?;
    }
    let replaced = install(tmp.keep(), o.to, &parent, &name)?;
    Ok(MirrorReport {
        to: o.to.to_owned(),
        roots,
        channels,
        files: out.files,
        replaced,
    })
}

/// The destination's parent and name; refuses an existing destination without `replace`,
/// and no channel at all.
fn check_destination(o: &MirrorOptions<'_>) -> Result<(PathBuf, String), Error> {
    if o.channels.is_empty() {
        return Err(
            UsageError::invalid("no channel to mirror: give at least one --channel").into(),
        );
    }
    for channel in o.channels {
        proto::check_name("channel", channel)
            .map_err(|e| UsageError::invalid(format!("channel `{channel}`: {e}")))?;
    }
    let name = o
        .to
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            UsageError::invalid(format!(
                "{}: the destination must be a directory name (a mount point cannot be renamed: use a directory on the stick, like /media/stick/tandem)",
                o.to.display()
            ))
        })?
        .to_owned();
    let parent = match o.to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if o.to.symlink_metadata().is_ok() && !o.replace {
        return Err(UsageError::invalid(format!(
            "{} already exists: give --replace to replace it (the new mirror is built beside it and renamed in at the end)",
            o.to.display()
        ))
        .into());
    }
    Ok((parent, name))
}

/// The temporary directory being filled, and what was written to it.
struct Staging {
    dir: PathBuf,
    files: Vec<MirroredFile>,
    /// The bundles copied and verified so far, by path (two channels may name one).
    bundles: BTreeMap<String, Verified<Manifest>>,
}

impl Staging {
    /// Writes `bytes` at `rel`, fsynced.
    fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.create_path(rel)?;
        let mut f =
            File::create(&path).map_err(Error::io(format!("creating {}", path.display())))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(Error::io(format!("writing {}", path.display())))?;
        self.files.push(MirroredFile {
            path: rel.to_owned(),
            bytes: bytes.len() as u64,
        });
        Ok(())
    }

    fn create_path(&self, rel: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        Ok(path)
    }
}

/// Walks the root chain from the trusted root through the source's `<N>.root.json` files;
/// the newest must not have expired. Older numbered roots the source has are copied too (for
/// nodes that still trust them), once each is shown to rotate to the next up to the trusted
/// root: a source whose older roots do not chain is refused.
fn mirror_roots(
    o: &MirrorOptions<'_>,
    out: &mut Staging,
) -> Result<(Verified<Root>, Vec<u64>), Error> {
    let fetch_root = |version: u64| {
        fetch_capped(
            o.from,
            &format!("{version}.root.json"),
            o.limits.max_metadata_len,
        )
    };
    let mut chain: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let newest = walk_to_end(o.root, &fetch_root, o.limits, &mut chain)?.fresh(o.now)?;
    let trusted = chain
        .keys()
        .next()
        .copied()
        .ok_or(Error::Bug("the chain walk recorded no root"))?;
    let mut older = BTreeMap::new();
    for version in (1..trusted).rev() {
        match fetch_root(version)? {
            Some(bytes) => older.insert(version, bytes),
            None => break,
        };
    }
    if let Some((_, oldest)) = older.iter().next() {
        let known = |v: u64| Ok::<_, Error>(older.get(&v).or_else(|| chain.get(&v)).cloned());
        walk_to_end(oldest, known, o.limits, &mut BTreeMap::new())?;
    }
    chain.append(&mut older);
    for (version, bytes) in &chain {
        out.write(&format!("{version}.root.json"), bytes)?;
    }
    out.write("root.json", newest.bytes())?;
    Ok((newest, chain.keys().copied().collect()))
}

/// [`walk_chain`] until no newer root is left (it pauses every `max_root_rotations` steps),
/// recording every root's bytes by version in `seen`, the start included.
pub(crate) fn walk_to_end(
    start: &[u8],
    mut fetch: impl FnMut(u64) -> Result<Option<Vec<u8>>, Error>,
    limits: &Limits,
    seen: &mut BTreeMap<u64, Vec<u8>>,
) -> Result<ChainWalk, Error> {
    let first = parse_root_ignoring_expiry(start, limits)?;
    seen.insert(first.version(), start.to_vec());
    let mut from = start.to_vec();
    loop {
        let walk = walk_chain::<Error>(
            &from,
            &mut fetch,
            |root| {
                seen.insert(root.version(), root.bytes().to_vec());
                Ok(())
            },
            limits,
        )?;
        if walk.complete {
            return Ok(walk);
        }
        from = walk.root.bytes().to_vec();
    }
}

/// Copies one channel: its document (verified, not expired), its pause file if any, and the
/// bundle it names (copied, then verified in full from the copy).
fn mirror_channel(
    o: &MirrorOptions<'_>,
    root: &Verified<Root>,
    name: &str,
    out: &mut Staging,
) -> Result<MirroredChannel, Error> {
    let rel = format!("channels/{name}.json");
    let doc = fetch_capped(o.from, &rel, o.limits.max_metadata_len)?.ok_or_else(|| {
        Error::io(format!("reading {}", display_path(o.from, &rel)))(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the repository has no channel `{name}`"),
        ))
    })?;
    let channel = verify_channel(root, &doc, name, 0, o.now, o.limits)?;
    out.write(&rel, &doc)?;
    let pause_rel = format!("channels/{name}.pause");
    let paused = match fetch_capped(o.from, &pause_rel, proto::pause::MAX_PAUSE_FILE)? {
        Some(pause) => {
            out.write(&pause_rel, &pause)?;
            proto::pause::Pause::parse(&pause).paused
        }
        None => false,
    };
    match out.bundles.get(&channel.release.bundle) {
        Some(manifest) => check_release(&channel, manifest)?,
        None => mirror_bundle(o, root, &channel, out)?,
    }
    Ok(MirroredChannel {
        channel: channel.into_inner(),
        paused,
    })
}

/// Copies exactly the channel's `size` bytes of its bundle, then verifies the copy: manifest
/// signatures against the root, the release the channel names, every chunk and hash.
fn mirror_bundle(
    o: &MirrorOptions<'_>,
    root: &Verified<Root>,
    channel: &Verified<Channel>,
    out: &mut Staging,
) -> Result<(), Error> {
    let rel = &channel.release.bundle;
    let size = channel.release.size;
    let shown = display_path(o.from, rel);
    let path = out.create_path(rel)?;
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(Error::io(format!("creating {}", path.display())))?;
    let reader = o.from.open(rel).map_err(repo_error)?.ok_or_else(|| {
        Error::io(format!("reading {shown}"))(io::Error::new(
            io::ErrorKind::NotFound,
            "the bundle the channel names is missing",
        ))
    })?;
    let copied = io::copy(&mut reader.take(size + 1), &mut f)
        .map_err(Error::io(format!("copying {shown}")))?;
    if copied != size {
        return Err(Error::io(format!("copying {shown}"))(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{copied} bytes or more, the channel says {size}"),
        )));
    }
    f.sync_all()
        .map_err(Error::io(format!("syncing {}", path.display())))?;
    let head = BundleHead::read(&mut f, o.limits)?;
    let manifest = head.verify(root, o.limits)?;
    check_release(channel, &manifest)?;
    f.seek(SeekFrom::Start(0))
        .map_err(Error::io(format!("reading {}", path.display())))?;
    verify_contents(&manifest, &mut io::BufReader::new(&mut f), &mut |_| {})?;
    out.files.push(MirroredFile {
        path: rel.clone(),
        bytes: size,
    });
    if let Some(store) = manifest.store() {
        mirror_store(o, rel, store, out)?;
    }
    out.bundles.insert(rel.clone(), manifest);
    Ok(())
}

/// Copies the chunk store beside the bundle at `bundle` (FORMAT §3.4) when the source has
/// one: exactly its signed size, refused unless it hashes to the signed digest. A source
/// without it makes a mirror without it (nodes then fetch whole frames).
fn mirror_store(
    o: &MirrorOptions<'_>,
    bundle: &str,
    store: bundle::schema::ChunkStore,
    out: &mut Staging,
) -> Result<(), Error> {
    let rel = proto::chunk_store_path(bundle);
    let shown = display_path(o.from, &rel);
    let Some(reader) = o.from.open(&rel).map_err(repo_error)? else {
        return Ok(());
    };
    let path = out.create_path(&rel)?;
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(Error::io(format!("creating {}", path.display())))?;
    let mut hashed = HashingWriter {
        inner: &mut f,
        hasher: sha2::Digest::new(),
    };
    let copied = io::copy(&mut reader.take(store.size + 1), &mut hashed)
        .map_err(Error::io(format!("copying {shown}")))?;
    let sha256 = crate::digest::Sha256Digest(sha2::Digest::finalize(hashed.hasher).into());
    if (copied, sha256) != (store.size, store.sha256) {
        return Err(Error::io(format!("copying {shown}"))(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{copied} bytes hashing to {}, the manifest signs a chunk store of {} bytes hashing to {}",
                sha256.to_hex(),
                store.size,
                store.sha256.to_hex()
            ),
        )));
    }
    f.sync_all()
        .map_err(Error::io(format!("syncing {}", path.display())))?;
    out.files.push(MirroredFile {
        path: rel,
        bytes: copied,
    });
    Ok(())
}

/// A writer that hashes what passes through it.
struct HashingWriter<'a> {
    inner: &'a mut File,
    hasher: sha2::Sha256,
}

impl io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Renames the finished mirror into place. An existing destination is renamed aside first
/// and removed once the new one is in place (`true`).
fn install(tmp: PathBuf, to: &Path, parent: &Path, name: &str) -> Result<bool, Error> {
    let rename = |from: &Path, dest: &Path| {
        fs::rename(from, dest).map_err(Error::io(format!(
            "renaming {} to {}",
            from.display(),
            dest.display()
        )))
    };
    let aside = parent.join(format!(".{name}.tandem-old-{}", std::process::id()));
    let replaced = to.symlink_metadata().is_ok();
    let result = (|| {
        if replaced {
            rename(to, &aside)?;
        }
        rename(&tmp, to)?;
        sync_dir(parent)
    })();
    if let Err(e) = result {
        // Put the old mirror back if it was moved, and leave no temporary directory.
        if replaced && !to.exists() {
            let _ = fs::rename(&aside, to);
        }
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if replaced {
        fs::remove_dir_all(&aside).map_err(Error::io(format!("removing {}", aside.display())))?;
        sync_dir(parent)?;
    }
    Ok(replaced)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("syncing directory {}", dir.display())))
}
