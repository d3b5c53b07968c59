//! Adding signatures to an existing bundle (FORMAT §4): only the reserved signature block is
//! rewritten, in place; the payload is never read or moved, so k-of-n signers can sign one
//! after another on different machines, with their keys or with signature files made from a
//! signing request ([`crate::request`]).

use std::io::{Read, Seek, SeekFrom, Write};

use crate::bundle::head::BundleHead;
use crate::error::{Error, KeyError, UsageError};
use crate::keys::{check_distinct, sign_bytes, KeyId, Signature, Signer};
use crate::limits::Limits;
use crate::request::{merge, CheckedSignature};
use crate::role::RoleKind;
use crate::schema::encode_signature_block;

/// Signs the bundle's manifest with `keys` and rewrites its signature block. Refuses a key
/// that already signed, and a block that would overflow its reservation.
pub fn add_signatures<F: Read + Write + Seek, K: Signer>(
    file: &mut F,
    keys: &[K],
    limits: &Limits,
) -> Result<Vec<KeyId>, Error> {
    check_distinct(keys)?;
    let head = BundleHead::read(file, limits)?;
    let mut signatures = head.signatures().to_vec();
    for key in keys {
        if signatures.iter().any(|s| s.keyid == key.id()) {
            return Err(KeyError::AlreadySigned(key.id()).into());
        }
    }
    signatures.extend(sign_bytes(RoleKind::Bundle, head.manifest_bytes(), keys)?);
    write_block(file, &head, &signatures, limits)?;
    Ok(keys.iter().map(Signer::id).collect())
}

/// Attaches signatures checked against this bundle's manifest (`head` must have been read
/// from `file`, unmodified since). Same refusals as [`add_signatures`].
pub fn add_checked_signatures<F: Write + Seek>(
    file: &mut F,
    head: &BundleHead,
    checked: &[CheckedSignature],
    limits: &Limits,
) -> Result<Vec<KeyId>, Error> {
    let signatures = merge(head.signatures(), checked)?;
    write_block(file, head, &signatures, limits)?;
    Ok(checked.iter().map(|c| c.signature().keyid).collect())
}

/// Rewrites the signature block with `signatures`.
fn write_block<F: Write + Seek>(
    file: &mut F,
    head: &BundleHead,
    signatures: &[Signature],
    limits: &Limits,
) -> Result<(), Error> {
    if signatures.len() > limits.max_signatures {
        return Err(
            UsageError::invalid(format!("more than {} signatures", limits.max_signatures)).into(),
        );
    }
    let len = head.header().signature_block_len as usize;
    let block = encode_signature_block(signatures, len)?.ok_or_else(|| {
        UsageError::invalid(format!(
            "the signature block is full ({len} bytes reserved): re-sign the image with more keys at once"
        ))
    })?;
    let io = Error::io("rewriting the signature block");
    file.seek(SeekFrom::Start(head.header().signature_block_range().start))
        .map_err(Error::io("seeking to the signature block"))?;
    file.write_all(&block).map_err(io)?;
    file.flush().map_err(Error::io("flushing the bundle"))?;
    Ok(())
}
