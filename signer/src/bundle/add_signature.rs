//! Adding signatures to an existing bundle (FORMAT §4): only the reserved signature block is
//! rewritten, in place; the payload is never read or moved, so k-of-n signers can sign one
//! after another on different machines, with their keys or with signature files made from a
//! signing request ([`crate::request`]).

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};

use crate::bundle::head::BundleHead;
use crate::error::{Error, KeyError, UsageError};
use crate::keys::{check_distinct, sign_bytes, KeyId, SecretKey, Signature};
use crate::limits::Limits;
use crate::request::CheckedSignature;
use crate::role::RoleKind;
use crate::schema::encode_signature_block;

/// Signs the bundle's manifest with `keys` and rewrites its signature block. Refuses a key
/// that already signed, and a block that would overflow its reservation.
pub fn add_signatures<F: Read + Write + Seek>(
    file: &mut F,
    keys: &[SecretKey],
    limits: &Limits,
) -> Result<Vec<KeyId>, Error> {
    check_distinct(keys)?;
    let head = BundleHead::read(file, limits)?;
    let new = sign_bytes(RoleKind::Bundle, head.manifest_bytes(), keys);
    write_signatures(file, &head, new, limits)
}

/// Attaches signatures already checked against this bundle's head (`head` must have been read
/// from `file`, which is not modified in between). Same refusals as [`add_signatures`].
pub fn add_checked_signatures<F: Write + Seek>(
    file: &mut F,
    head: &BundleHead,
    checked: &[CheckedSignature],
    limits: &Limits,
) -> Result<Vec<KeyId>, Error> {
    let new: Vec<Signature> = checked.iter().map(|c| c.signature().clone()).collect();
    let mut seen = BTreeSet::new();
    if let Some(s) = new.iter().find(|s| !seen.insert(s.keyid)) {
        return Err(KeyError::Duplicate(s.keyid).into());
    }
    write_signatures(file, head, new, limits)
}

/// Appends `new` to the head's signatures and rewrites the block.
fn write_signatures<F: Write + Seek>(
    file: &mut F,
    head: &BundleHead,
    new: Vec<Signature>,
    limits: &Limits,
) -> Result<Vec<KeyId>, Error> {
    let mut signatures = head.signatures().to_vec();
    if let Some(s) = new
        .iter()
        .find(|n| signatures.iter().any(|s| s.keyid == n.keyid))
    {
        return Err(KeyError::AlreadySigned(s.keyid).into());
    }
    let added = new.iter().map(|s| s.keyid).collect();
    signatures.extend(new);
    if signatures.len() > limits.max_signatures {
        return Err(
            UsageError::invalid(format!("more than {} signatures", limits.max_signatures)).into(),
        );
    }
    let len = head.header().signature_block_len as usize;
    let block = encode_signature_block(&signatures, len)?.ok_or_else(|| {
        UsageError::invalid(format!(
            "the signature block is full ({len} bytes reserved): re-sign the image with more keys at once"
        ))
    })?;
    let io = Error::io("rewriting the signature block");
    file.seek(SeekFrom::Start(head.header().signature_block_range().start))
        .map_err(Error::io("seeking to the signature block"))?;
    file.write_all(&block).map_err(io)?;
    file.flush().map_err(Error::io("flushing the bundle"))?;
    Ok(added)
}
