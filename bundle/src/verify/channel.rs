//! Channel metadata (docs/DESIGN.md §4, FORMAT §8.2): release-role threshold over the exact signed
//! bytes, then parse; right channel, not expired (freeze), not older than the last version
//! seen (rollback). [`check_release`] ties a verified bundle to the channel (mix-and-match).

use time::OffsetDateTime;

use super::{check_expiry, check_threshold, Verified};
use crate::error::{Error, FormatError, Section, VerifyError};
use crate::limits::Limits;
use crate::role::RoleKind;
use crate::schema::{parse_envelope, Channel, ChannelDoc, Manifest, Root};

/// Verifies channel metadata for `channel` against the trusted root. `min_version` is the
/// highest version this device has accepted before (0 if none): an equal version is
/// accepted (the same document fetched again), a lower one is a rollback.
pub fn verify_channel(
    root: &Verified<Root>,
    bytes: &[u8],
    channel: &str,
    min_version: u64,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Verified<Channel>, Error> {
    let env = parse_envelope(bytes, limits)?;
    check_threshold::<Channel>(root, env.signed, &env.signatures)?;
    let doc: ChannelDoc =
        serde_json::from_slice(env.signed).map_err(|source| FormatError::Json {
            section: Section::Metadata,
            source,
        })?;
    let parsed = Channel::from_doc(doc)?;
    if parsed.channel != channel {
        return Err(VerifyError::WrongChannel {
            expected: channel.to_owned(),
            found: parsed.channel,
        }
        .into());
    }
    check_expiry(RoleKind::Channel, parsed.expires, now)?;
    if parsed.version < min_version {
        return Err(VerifyError::ChannelRollback {
            min: min_version,
            found: parsed.version,
        }
        .into());
    }
    Ok(Verified::new(parsed))
}

/// Checks that a verified bundle is the one the channel names: product, version,
/// security version, manifest hash and exact file size.
pub fn check_release(
    channel: &Verified<Channel>,
    manifest: &Verified<Manifest>,
) -> Result<(), VerifyError> {
    let r = &channel.release;
    let mismatch = |field, expected: String, actual: String| VerifyError::ReleaseMismatch {
        field,
        expected,
        actual,
    };
    if r.manifest_sha256 != manifest.manifest_sha256() {
        return Err(mismatch(
            "manifest_sha256",
            r.manifest_sha256.to_hex(),
            manifest.manifest_sha256().to_hex(),
        ));
    }
    if r.size != manifest.file_len() {
        return Err(mismatch(
            "size",
            r.size.to_string(),
            manifest.file_len().to_string(),
        ));
    }
    if r.product != manifest.product() {
        return Err(mismatch(
            "product",
            r.product.clone(),
            manifest.product().to_owned(),
        ));
    }
    if &r.version != manifest.version() {
        return Err(mismatch(
            "version",
            r.version.to_string(),
            manifest.version().to_string(),
        ));
    }
    if r.security_version != manifest.security_version() {
        return Err(mismatch(
            "security_version",
            r.security_version.to_string(),
            manifest.security_version().to_string(),
        ));
    }
    Ok(())
}
