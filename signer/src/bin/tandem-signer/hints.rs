//! What to do about an error (CONTRIBUTING.md §10): each library error kind paired with a fix.

use signer::request::RequestError;
use signer::{Error, FormatError, KeyError, VerifyError};

/// A suggested fix for the first library error in the chain, if there is one.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    let e = err.chain().find_map(|c| c.downcast_ref::<Error>())?;
    let s = match e {
        Error::Verify(VerifyError::ThresholdNotMet(r)) => format!(
            "have {} more trusted {} key(s) sign (bundles: `tandem-signer add-signature FILE --key K.pem`; roots: `tandem-signer root sign FILE --key K.pem`), or check that --root is the current root",
            (r.threshold as usize).saturating_sub(r.valid.len()),
            r.role
        ),
        Error::Verify(VerifyError::Expired { kind: signer::RoleKind::Channel, .. }) => "publish the channel again with a later --expires (for a USB stick: long enough to reach every node, docs/airgap.md), then mirror again".into(),
        Error::Verify(VerifyError::Expired { .. }) => "rotate or re-sign the document with a later --expires, or fetch the newest root/metadata".into(),
        Error::Verify(VerifyError::Chunk { .. } | VerifyError::ImageHash { .. }) => "the bundle's payload is corrupt: copy or download it again".into(),
        Error::Format(FormatError::Truncated { .. }) => "the file is incomplete: copy or download it again".into(),
        Error::Format(FormatError::TrailingData { .. }) => "bytes were appended to the bundle: get the original file again".into(),
        Error::Format(FormatError::BadMagic { .. }) => "this is not a .tandem bundle".into(),
        Error::Key(KeyError::Private(_)) => "use a key from `tandem-signer keygen` or `openssl genpkey -algorithm ed25519` (the .pem, not the .pub.pem)".into(),
        Error::Key(KeyError::Public(_)) => "use a public key (.pub.pem) from `tandem-signer keygen` or `openssl pkey -pubout`".into(),
        Error::Key(KeyError::AlreadySigned(_)) => "this key already signed: sign with another key".into(),
        Error::Request(RequestError::OtherDocument { .. }) => "make the request from this very file (`tandem-signer request FILE -o REQ`) and sign that".into(),
        _ => return None,
    };
    Some(s)
}
