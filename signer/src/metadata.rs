//! Writing signed metadata (FORMAT §6): `root.json` and channel documents as canonical JSON
//! in the `{"signatures","signed"}` envelope, signing bytes for any [`RoleKind`], and adding
//! signatures to an existing document without touching its signed bytes.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::digest::Sha256Digest;
use crate::error::{Error, FormatError, KeyError, Section, UsageError};
use crate::keys::{check_distinct, sign_bytes, PublicKey, Signer};
use crate::limits::Limits;
use crate::request::{merge, CheckedSignature};
use crate::role::{RoleKind, Threshold};
use crate::schema::{
    check_bundle_path, check_name, encode_envelope, parse_envelope, ChannelDoc, KeyDoc, ReleaseDoc,
    RoleDoc, RolesDoc, RolloutDoc, RootDoc,
};
use crate::time_util::format_rfc3339;
use crate::verify::{self, Verified};
use bundle::canonical;

/// Wraps signed bytes and their signatures into a document file.
pub fn sign_document<K: Signer>(
    kind: RoleKind,
    signed: &[u8],
    keys: &[K],
) -> Result<Vec<u8>, Error> {
    check_distinct(keys)?;
    encode_envelope(signed, &sign_bytes(kind, signed, keys)?)
}

/// Adds signatures to an existing document, keeping its signed bytes exactly.
pub fn add_document_signatures<K: Signer>(
    kind: RoleKind,
    doc: &[u8],
    keys: &[K],
    limits: &Limits,
) -> Result<Vec<u8>, Error> {
    check_distinct(keys)?;
    let env = parse_envelope(doc, limits)?;
    let mut sigs = env.signatures.clone();
    for k in keys {
        if sigs.iter().any(|s| s.keyid == k.id()) {
            return Err(KeyError::AlreadySigned(k.id()).into());
        }
    }
    sigs.extend(sign_bytes(kind, env.signed, keys)?);
    encode_envelope(env.signed, &sigs)
}

/// Adds signatures checked against this document's signed bytes
/// ([`crate::request::SignatureFile::check`] on [`crate::request::document_signed_bytes`]),
/// keeping those bytes exactly. Refuses a key given twice or one that already signed.
pub fn add_checked_document_signatures(
    doc: &[u8],
    checked: &[CheckedSignature],
    limits: &Limits,
) -> Result<Vec<u8>, Error> {
    let env = parse_envelope(doc, limits)?;
    encode_envelope(env.signed, &merge(&env.signatures, checked)?)
}

/// The content of a new `root.json`.
#[derive(Debug, Clone)]
pub struct RootSpec {
    /// Version: 1 for the first root, then previous + 1.
    pub version: u64,
    /// Expiry.
    pub expires: OffsetDateTime,
    /// Root role keys.
    pub root_keys: Vec<PublicKey>,
    /// Root role threshold.
    pub root_threshold: u32,
    /// Release role keys.
    pub release_keys: Vec<PublicKey>,
    /// Release role threshold.
    pub release_threshold: u32,
}

/// The canonical signed bytes of a root.
pub fn root_signed_bytes(spec: &RootSpec) -> Result<Vec<u8>, Error> {
    if spec.version == 0 {
        return Err(UsageError::invalid("root version must be at least 1").into());
    }
    let mut keys = BTreeMap::new();
    for k in spec.root_keys.iter().chain(&spec.release_keys) {
        keys.insert(
            k.id(),
            KeyDoc {
                keytype: "ed25519".into(),
                public: hex::encode(k.raw()),
            },
        );
    }
    let doc = RootDoc {
        expires: format_rfc3339(spec.expires),
        keys,
        roles: RolesDoc {
            release: role_doc("release", &spec.release_keys, spec.release_threshold)?,
            root: role_doc("root", &spec.root_keys, spec.root_threshold)?,
        },
        version: spec.version,
    };
    canonical::to_vec(&doc)
}

fn role_doc(name: &str, keys: &[PublicKey], threshold: u32) -> Result<RoleDoc, Error> {
    let mut keyids: Vec<_> = keys.iter().map(PublicKey::id).collect();
    keyids.sort();
    keyids.dedup();
    if keyids.len() != keys.len() {
        return Err(UsageError::invalid(format!("a {name} key is given twice")).into());
    }
    match Threshold::new(threshold) {
        Some(t) if threshold as usize <= keyids.len() => Ok(RoleDoc {
            keyids,
            threshold: t,
        }),
        _ => Err(UsageError::invalid(format!(
            "{name} threshold {threshold} must be between 1 and the number of {name} keys ({})",
            keyids.len()
        ))
        .into()),
    }
}

/// The version a rotation of `trusted` must have (its version + 1). The trusted root must be
/// validly self-signed; its expiry does not matter (an expired root can still be rotated).
pub fn next_root_version(trusted: &[u8], limits: &Limits) -> Result<u64, Error> {
    Ok(verify::parse_root_ignoring_expiry(trusted, limits)?.version() + 1)
}

/// Whether a root document is valid now: self-signed and fresh, or, when `trusted` is given,
/// a valid successor of it (old and new root thresholds, version + 1).
pub fn check_root(
    doc: &[u8],
    trusted: Option<&[u8]>,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Verified<crate::Root>, Error> {
    match trusted {
        None => verify::trust_root(doc, now, limits),
        Some(old) => {
            let old = verify::parse_root_ignoring_expiry(old, limits)?;
            verify::verify_root_update(&old, doc, now, limits)
        }
    }
}

/// The content of a channel document, as an author gives it to [`channel_signed_bytes`],
/// which checks it and writes it as the wire form, `proto`'s [`ChannelDoc`].
///
/// It exists beside [`crate::Channel`] (the same fields, typed) because a `Channel` is what
/// the parser makes of a document, every field validated, and only the parser builds one;
/// this is the unchecked input of the writer, refused there when a field is wrong.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    /// Channel name.
    pub channel: String,
    /// Version (previous + 1).
    pub version: u64,
    /// Expiry.
    pub expires: OffsetDateTime,
    /// Product.
    pub product: String,
    /// Release version.
    pub release_version: semver::Version,
    /// Security version.
    pub security_version: u64,
    /// Bundle path relative to the repository.
    pub bundle: String,
    /// Bundle file size.
    pub size: u64,
    /// SHA-256 of the bundle's manifest region.
    pub manifest_sha256: Sha256Digest,
    /// Rollout share, 0–100.
    pub percent: u8,
    /// Rollout salt.
    pub salt: Vec<u8>,
}

/// The canonical signed bytes of a channel document.
pub fn channel_signed_bytes(spec: &ChannelSpec) -> Result<Vec<u8>, Error> {
    check_name("channel", &spec.channel).map_err(UsageError::invalid)?;
    check_bundle_path(&spec.bundle).map_err(UsageError::invalid)?;
    if spec.percent > 100 || spec.salt.is_empty() || spec.salt.len() > 64 {
        return Err(UsageError::invalid("percent must be 0–100 and the salt 1–64 bytes").into());
    }
    let doc = ChannelDoc {
        channel: spec.channel.clone(),
        expires: format_rfc3339(spec.expires),
        release: ReleaseDoc {
            bundle: spec.bundle.clone(),
            manifest_sha256: spec.manifest_sha256.to_hex(),
            product: spec.product.clone(),
            security_version: spec.security_version,
            size: spec.size,
            version: spec.release_version.to_string(),
        },
        rollout: RolloutDoc {
            percent: spec.percent,
            salt: hex::encode(&spec.salt),
        },
        version: spec.version,
    };
    canonical::to_vec(&doc)
}

/// Reads a channel document WITHOUT verifying it (the publisher's own previous document:
/// its version and salt carry over). Never use this on the device.
pub fn read_channel_unverified(doc: &[u8], limits: &Limits) -> Result<crate::Channel, Error> {
    let env = parse_envelope(doc, limits)?;
    let doc: ChannelDoc =
        serde_json::from_slice(env.signed).map_err(|source| FormatError::Json {
            section: Section::Metadata,
            source,
        })?;
    Ok(crate::Channel::from_doc(doc)?)
}
