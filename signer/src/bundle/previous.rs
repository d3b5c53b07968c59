//! The chunks an earlier release already stores, read from its bundle (`sign --previous`,
//! [`SignOptions::previous`](super::SignOptions::previous)): the signer frames a new release's
//! chunks found there apart from those it lacks, so a node holding the earlier release fetches
//! the new ones in frames of their own runs. Read without verifying: these hashes only decide
//! how the new bundle's frames are laid out, never what a node trusts.

use std::collections::HashSet;
use std::io::{Read, Seek};

use crate::error::Error;
use crate::{BundleHead, Limits, Sha256Digest};

/// The hashes of the stored (not all-zero) chunks of the bundle `r` reads.
pub fn stored_chunks<R: Read + Seek>(
    r: &mut R,
    limits: &Limits,
) -> Result<HashSet<Sha256Digest>, Error> {
    let manifest = BundleHead::read(r, limits)?.manifest_unverified(limits)?;
    Ok(manifest
        .chunks()
        .iter()
        .filter(|c| !c.is_zero())
        .map(|c| c.sha256())
        .collect())
}
