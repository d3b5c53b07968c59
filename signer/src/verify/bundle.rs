//! A bundle's manifest (FORMAT §8.3): release-role threshold over the exact manifest region,
//! only then parse and validate it, then check the file is exactly as long as announced.
//! Chunk hashes are checked as chunks are read ([`crate::bundle::chunks`]).

use super::{check_threshold, Verified};
use crate::bundle::head::check_total_len;
use crate::bundle::{parse_manifest, BundleHead};
use crate::error::Error;
use crate::limits::Limits;
use crate::schema::{Manifest, Root};

/// Verifies a bundle head against the trusted root's release role.
pub fn verify_bundle(
    head: &BundleHead,
    root: &Verified<Root>,
    limits: &Limits,
) -> Result<Verified<Manifest>, Error> {
    let signers = check_threshold::<Manifest>(root, head.manifest_bytes(), head.signatures())?;
    let mut manifest = parse_manifest(head, limits)?;
    check_total_len(&manifest, head.file_len())?;
    manifest.set_signers(signers);
    Ok(Verified::new(manifest))
}
