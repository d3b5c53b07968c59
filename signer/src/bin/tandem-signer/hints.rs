//! What to do about an error (CONTRIBUTING.md §10): each library error kind paired with a fix.

use signer::error::RequestError;
use signer::pkcs11::Pkcs11Error;
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
        Error::Key(KeyError::Token(e)) => return e.downcast_ref().and_then(pkcs11_hint),
        Error::Request(RequestError::OtherDocument { .. }) => "make the request from this very file (`tandem-signer request FILE -o REQ`) and sign that".into(),
        _ => return None,
    };
    Some(s)
}

/// Token keys (docs/signing.md, "Keys in an HSM"): where the module, PIN or key is named.
fn pkcs11_hint(e: &Pkcs11Error) -> Option<String> {
    use crate::keys::{MODULE_ENV, PIN_ENV};
    let s = match e {
        Pkcs11Error::NoModule { .. } => format!("add ?module-path=/path/to/module.so to the URI or set {MODULE_ENV} (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"),
        Pkcs11Error::Module { .. } => "check the path of your token's PKCS#11 module (a shared library from its vendor; SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)".into(),
        Pkcs11Error::NoPin { .. } => format!("add ?pin-source=file:/path/to/pin to the URI or set {PIN_ENV}"),
        Pkcs11Error::WrongPin { .. } => format!("check the user PIN (pin-source file, pin-value or {PIN_ENV}): tokens lock after a few wrong PINs"),
        Pkcs11Error::TokenNotFound { .. } | Pkcs11Error::AmbiguousToken { .. } => "list the tokens: `pkcs11-tool --module MODULE --list-token-slots`, and name one with token=LABEL".into(),
        Pkcs11Error::KeyNotFound { .. } | Pkcs11Error::AmbiguousKey { .. } => "list the token's keys: `pkcs11-tool --module MODULE --login --list-objects`, and name one with object=LABEL or id=%XX".into(),
        Pkcs11Error::NotEd25519 { .. } => "make an Ed25519 key in the token: `pkcs11-tool --module MODULE --login --keypairgen --key-type EC:edwards25519 --label NAME`".into(),
        _ => return None,
    };
    Some(s)
}
