//! A bundle's manifest (FORMAT §8.3): release-role threshold over the exact manifest region,
//! only then parse and validate it, then check the file is exactly as long as announced.
//! Chunk hashes are checked as chunks are read ([`crate::chunks`]), and a `cmdline`
//! asset's text against the command line rule once its bytes are ([`cmdline_asset_text`]).

use std::borrow::Cow;

use super::{check_threshold, Verified};
use crate::error::{Error, VerifyError};
use crate::head::check_total_len;
use crate::head::{parse_manifest, BundleHead};
use crate::limits::Limits;
use crate::schema::{Asset, AssetKind, Manifest, Root};

/// Verification is the way from a head to a manifest that can be acted on; it lives here, with
/// the only code that builds a [`Verified`] value, so that reading a head needs nothing of it.
impl BundleHead {
    /// Verifies the manifest's signatures against the root's release role, then parses and
    /// checks the manifest, then checks the file length (FORMAT §8).
    pub fn verify(
        &self,
        root: &Verified<Root>,
        limits: &Limits,
    ) -> Result<Verified<Manifest>, Error> {
        verify_bundle(self, root, limits)
    }

    /// [`BundleHead::verify`], consuming the head: its stored index is released as it is
    /// decompressed, so the chunk list is never held beside the whole index (tens of MiB each
    /// for a large image).
    pub fn into_verified(
        self,
        root: &Verified<Root>,
        limits: &Limits,
    ) -> Result<Verified<Manifest>, Error> {
        verify_bundle_owned(self, root, limits)
    }
}

/// Verifies a bundle head against the trusted root's release role.
pub fn verify_bundle(
    head: &BundleHead,
    root: &Verified<Root>,
    limits: &Limits,
) -> Result<Verified<Manifest>, Error> {
    verify_with_tail(head, Cow::Borrowed(head.tail_bytes()), root, limits)
}

/// [`verify_bundle`] on a head given up: its index is released as it is decompressed.
pub(crate) fn verify_bundle_owned(
    mut head: BundleHead,
    root: &Verified<Root>,
    limits: &Limits,
) -> Result<Verified<Manifest>, Error> {
    let tail = head.take_tail();
    verify_with_tail(&head, Cow::Owned(tail), root, limits)
}

/// [`verify_bundle`] of `head` with its dictionary and index, `tail`.
fn verify_with_tail(
    head: &BundleHead,
    tail: Cow<'_, [u8]>,
    root: &Verified<Root>,
    limits: &Limits,
) -> Result<Verified<Manifest>, Error> {
    let signers = check_threshold::<Manifest>(root, head.manifest_bytes(), head.signatures())?;
    let mut manifest = parse_manifest(head, tail, limits)?;
    check_total_len(&manifest, head.file_len())?;
    manifest.set_signers(signers);
    Ok(Verified::new(manifest))
}

/// The text of a `cmdline` asset from its hash-checked bytes, if it follows the one command
/// line rule ([`proto::check_cmdline`], FORMAT §3.1): every reader of a bundle (`verify`,
/// `inspect`, `mirror`, the agent) refuses a signed command line through this check.
pub fn cmdline_asset_text(asset: &Asset, bytes: &[u8]) -> Result<String, VerifyError> {
    proto::cmdline_text(bytes).map_err(|reason| VerifyError::Cmdline {
        asset: asset.name().into(),
        reason,
    })
}

/// The kernel command line an asset of `kind` and `size` bytes carries, read through
/// `read_at` (its raw bytes): a UKI's `.cmdline` section, a `cmdline` asset's text (bytes that
/// are not UTF-8 replaced, so a check still sees every word); `None` for other kinds or an
/// unreadable asset.
pub fn asset_cmdline(
    kind: AssetKind,
    size: u64,
    read_at: &mut crate::uki::ReadAt<'_>,
) -> Option<String> {
    match kind {
        AssetKind::Uki => crate::uki::cmdline_lossy(read_at),
        AssetKind::Cmdline if size <= proto::MAX_CMDLINE as u64 => {
            let bytes = read_at(0, usize::try_from(size).ok()?)?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}
