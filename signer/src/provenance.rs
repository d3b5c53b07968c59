//! What a repository published, and who signed it (`tandem-signer log`, docs/signing.md): per
//! channel its current document (version, expiry, release, rollout, signers) and the head of
//! the bundle it names (created time, signers); for a directory, also the bundles no channel
//! names any more. Publishing replaces `channels/<name>.json`, so a repository keeps only the
//! newest document of each channel: older releases show only as bundles left in `bundles/`.
//!
//! Read for display: with a root, each signature is checked and each channel's verdict is the
//! one a node would reach; without one nothing is verified.

use time::OffsetDateTime;

use crate::error::Error;
use crate::limits::Limits;
use crate::metadata::read_channel_unverified;
use crate::mirror::walk_to_end;
use crate::repo::{display_path, fetch_capped, read_bundle_head, repo_error, Repository};
use crate::role::RoleKind;
use crate::schema::{parse_envelope, Channel, Root, Signature};
use crate::verify::{
    parse_root_ignoring_expiry, signer_statuses, verify_channel, SignerStatus, Verified,
};
use crate::KeyId;

/// What to list.
pub struct LogOptions<'a> {
    /// The repository.
    pub from: &'a dyn Repository,
    /// The channels to list; empty: every channel of a repository that can list them.
    pub channels: &'a [String],
    /// A trusted root: the repository's chain is walked from it and every signature checked.
    pub root: Option<&'a [u8]>,
    /// The time now (expiry).
    pub now: OffsetDateTime,
    /// Limits.
    pub limits: &'a Limits,
}

/// The root a listing checks signatures against, and the earlier roots of its chain (newest
/// first), whose keys check signatures by keys the root no longer lists.
#[derive(Clone, Copy)]
pub struct Trust<'a> {
    /// The root.
    pub root: &'a Root,
    /// Earlier roots, newest first (none: only the root's own keys are known).
    pub earlier: &'a [Verified<Root>],
}

/// A signature as listed: its key id and, when a root was given, how that root sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The key id the signature names.
    pub keyid: KeyId,
    /// With a root: its roles and whether the signature verifies.
    pub status: Option<SignerStatus>,
}

/// A bundle's head, as listed.
#[derive(Debug, Clone)]
pub struct BundleEntry {
    /// Path in the repository.
    pub path: String,
    /// Product, version, security version, created time (from the manifest).
    pub product: String,
    /// Release version.
    pub version: semver::Version,
    /// Security version.
    pub security_version: u64,
    /// The signed creation time.
    pub created: OffsetDateTime,
    /// Its signatures.
    pub signers: Vec<Signer>,
}

/// A channel's current document, as listed: the document and what a listing adds to it (who
/// signed it, whether nodes accept it, the head of the bundle it names).
#[derive(Debug, Clone)]
pub struct ChannelEntry {
    /// The document (read without verifying it: see `verdict`).
    pub channel: Channel,
    /// Its signatures.
    pub signers: Vec<Signer>,
    /// With a root: `Ok` when a node trusting it would accept the document, else why not.
    pub verdict: Option<Result<(), String>>,
    /// The bundle it names, or why its head could not be read.
    pub bundle: Result<BundleEntry, String>,
}

/// What [`log`] found.
#[derive(Debug, Clone)]
pub struct RepoLog {
    /// The repository's current root version, when a root was given.
    pub root_version: Option<u64>,
    /// The channels, by name.
    pub channels: Vec<ChannelEntry>,
    /// Bundles in `bundles/` that no listed channel names (a directory only).
    pub other_bundles: Option<Vec<Result<BundleEntry, String>>>,
}

/// Lists what `o.from` published (see the module docs).
pub fn log(o: &LogOptions<'_>) -> Result<RepoLog, Error> {
    let chain = o.root.map(|bytes| walk_roots(o, bytes)).transpose()?;
    let trust = chain
        .as_ref()
        .map(|(root, earlier)| Trust { root, earlier });
    let names = channel_names(o)?;
    let mut channels = Vec::with_capacity(names.len());
    for name in &names {
        channels.push(channel_entry(
            o,
            chain.as_ref().map(|(r, _)| r),
            trust,
            name,
        )?);
    }
    let other_bundles = o.from.bundle_files().map_err(repo_error)?.map(|files| {
        files
            .into_iter()
            .filter(|(path, _)| !channels.iter().any(|c| &c.channel.release.bundle == path))
            .map(|(path, size)| bundle_entry(o, trust, &path, size))
            .collect()
    });
    Ok(RepoLog {
        root_version: chain.map(|(r, _)| r.version()),
        channels,
        other_bundles,
    })
}

/// The repository's chain walked from `start`: the newest root, and the earlier ones newest
/// first.
fn walk_roots(
    o: &LogOptions<'_>,
    start: &[u8],
) -> Result<(Verified<Root>, Vec<Verified<Root>>), Error> {
    let fetch = |v: u64| fetch_capped(o.from, &format!("{v}.root.json"), o.limits.max_metadata_len);
    let mut seen = std::collections::BTreeMap::new();
    let root = walk_to_end(start, fetch, o.limits, &mut seen)?.root;
    let earlier = seen
        .range(..root.version())
        .rev()
        .filter_map(|(_, bytes)| parse_root_ignoring_expiry(bytes, o.limits).ok())
        .collect();
    Ok((root, earlier))
}

fn channel_names(o: &LogOptions<'_>) -> Result<Vec<String>, Error> {
    if !o.channels.is_empty() {
        return Ok(o.channels.to_vec());
    }
    o.from.channel_names().map_err(repo_error)?.ok_or_else(|| {
        crate::UsageError::invalid(format!(
            "{} cannot list its channels (an HTTP server): name them with --channel",
            o.from.name()
        ))
        .into()
    })
}

fn channel_entry(
    o: &LogOptions<'_>,
    root: Option<&Verified<Root>>,
    trust: Option<Trust<'_>>,
    name: &str,
) -> Result<ChannelEntry, Error> {
    proto::check_name("channel", name)
        .map_err(|e| crate::UsageError::invalid(format!("channel `{name}`: {e}")))?;
    let rel = format!("channels/{name}.json");
    let doc = fetch_capped(o.from, &rel, o.limits.max_metadata_len)?.ok_or_else(|| {
        crate::UsageError::invalid(format!("{} does not exist", display_path(o.from, &rel)))
    })?;
    let channel = read_channel_unverified(&doc, o.limits)?;
    let env = parse_envelope(&doc, o.limits)?;
    let signers = signers_of(trust, RoleKind::Channel, env.signed, &env.signatures);
    let verdict = root.map(|root| {
        verify_channel(root, &doc, name, 0, o.now, o.limits)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let release = &channel.release;
    let bundle = bundle_entry(o, trust, &release.bundle, release.size);
    Ok(ChannelEntry {
        channel,
        signers,
        verdict,
        bundle,
    })
}

/// The head of the bundle at `path` (`size` bytes); an error is kept as text, for display.
fn bundle_entry(
    o: &LogOptions<'_>,
    trust: Option<Trust<'_>>,
    path: &str,
    size: u64,
) -> Result<BundleEntry, String> {
    let head = read_bundle_head(o.from, path, size, o.limits).map_err(|e| e.to_string())?;
    let m = head
        .manifest_unverified(o.limits)
        .map_err(|e| e.to_string())?;
    Ok(BundleEntry {
        path: path.to_owned(),
        product: m.product().to_owned(),
        version: m.version().clone(),
        security_version: m.security_version(),
        created: m.created(),
        signers: signers_of(
            trust,
            RoleKind::Bundle,
            head.manifest_bytes(),
            head.signatures(),
        ),
    })
}

/// The signatures over `signed` (of `kind`), each with how `trust` sees it when there is one.
pub fn signers_of(
    trust: Option<Trust<'_>>,
    kind: RoleKind,
    signed: &[u8],
    signatures: &[Signature],
) -> Vec<Signer> {
    match trust {
        Some(t) => signer_statuses(t.root, t.earlier, kind, signed, signatures)
            .into_iter()
            .map(|s| Signer {
                keyid: s.keyid,
                status: Some(s),
            })
            .collect(),
        None => signatures
            .iter()
            .map(|s| Signer {
                keyid: s.keyid,
                status: None,
            })
            .collect(),
    }
}
