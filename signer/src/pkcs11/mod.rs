//! Ed25519 keys held in a PKCS#11 token (an HSM, a smart card, SoftHSM2), named by an RFC 7512
//! `pkcs11:` URI ([`Pkcs11Uri`]) and signing with `CKM_EDDSA` (feature `pkcs11`).
//!
//! The private key never leaves the token. Its public half comes from the token's public key
//! object with the same `CKA_ID` (or label): its `CKA_EC_POINT` gives the key id, and every
//! signature the token makes is verified with it before it is used, so a public key object that
//! belongs to another key is caught instead of producing signatures no node accepts.

mod error;
mod uri;

use std::fmt;
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::keys::{KeyError, PublicKey, Signer};

pub use error::Pkcs11Error;
pub use uri::{PinSource, Pkcs11Uri, SCHEME};

/// `CKA_EC_PARAMS` naming edwards25519: the OID 1.3.101.112 (RFC 8410) in DER.
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// The same as a DER PrintableString "edwards25519" (PKCS#11 3.0), as SoftHSM2 writes it.
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";

/// What applies when the URI does not say: the caller's defaults (the command line fills them
/// from its environment; this library reads none).
#[derive(Default)]
pub struct Pkcs11Defaults {
    /// The PKCS#11 module to load.
    pub module: Option<PathBuf>,
    /// The user PIN.
    pub pin: Option<Zeroizing<String>>,
}

/// An Ed25519 private key in a token, logged in and ready to sign.
pub struct Pkcs11Key {
    /// Keeps the module loaded and the login alive.
    session: Session,
    key: ObjectHandle,
    public: PublicKey,
    uri: String,
}

impl Pkcs11Key {
    /// Loads the module, finds the one token and the one private key `uri` names, logs in,
    /// and checks that the key is Ed25519 with a public key object beside it.
    pub fn open(uri: &Pkcs11Uri, defaults: &Pkcs11Defaults) -> Result<Self, Pkcs11Error> {
        let module = uri
            .module_path
            .as_ref()
            .or(defaults.module.as_ref())
            .ok_or_else(|| Pkcs11Error::NoModule {
                uri: uri.shown().into(),
            })?;
        let ctx = load_module(module)?;
        let (slot, token) = find_token(&ctx, uri)?;
        let session = ctx
            .open_ro_session(slot)
            .map_err(failed(uri, "opening a session"))?;
        login(&session, &token, uri, defaults)?;
        let key = find_private_key(&session, uri, &token)?;
        check_ed25519(&session, key, uri)?;
        let public = public_key(&session, key, uri)?;
        Ok(Pkcs11Key {
            session,
            key,
            public,
            uri: uri.shown().into(),
        })
    }

    fn sign_checked(&self, message: &[u8]) -> Result<[u8; 64], Pkcs11Error> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let sig = self
            .session
            .sign(&mechanism, self.key, message)
            .map_err(|source| Pkcs11Error::Token {
                uri: self.uri.clone(),
                op: "signing",
                source,
            })?;
        let sig: [u8; 64] = sig.try_into().map_err(|s: Vec<u8>| Pkcs11Error::Mismatch {
            uri: self.uri.clone(),
            reason: format!("the token returned a {}-byte signature", s.len()),
        })?;
        if !self.public.verify(message, &sig) {
            return Err(Pkcs11Error::Mismatch {
                uri: self.uri.clone(),
                reason: "its signature does not verify with the public key object beside it".into(),
            });
        }
        Ok(sig)
    }
}

impl Signer for Pkcs11Key {
    fn public(&self) -> &PublicKey {
        &self.public
    }

    fn try_sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        self.sign_checked(message)
            .map_err(|error| KeyError::Token(Box::new(error)))
    }
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Key({}, {})", self.uri, self.public.id().short())
    }
}

/// Loads and initialises the module. Several keys may name the same module: it is loaded
/// once per process, so "already initialised" means a key before this one did it.
fn load_module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let module_err = |reason: String| Pkcs11Error::Module {
        path: path.to_path_buf(),
        reason,
    };
    let ctx = Pkcs11::new(path).map_err(|e| module_err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(module_err(format!("C_Initialize: {e}"))),
    }
}

/// The one slot whose token matches every token filter of the URI.
fn find_token(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<(Slot, TokenInfo), Pkcs11Error> {
    let mut tokens = Vec::new();
    for slot in ctx
        .get_slots_with_initialized_token()
        .map_err(failed(uri, "listing the slots"))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(failed(uri, "reading a token's information"))?;
        tokens.push((slot, info));
    }
    let present: Vec<String> = tokens.iter().map(|(_, t)| label(t).to_owned()).collect();
    let mut matching = tokens.into_iter().filter(|(_, t)| token_matches(uri, t));
    match (matching.next(), matching.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(Pkcs11Error::TokenNotFound {
            uri: uri.shown().into(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        }),
        (Some(_), Some(_)) => Err(Pkcs11Error::AmbiguousToken {
            uri: uri.shown().into(),
        }),
    }
}

fn label(t: &TokenInfo) -> &str {
    t.label().trim_end()
}

fn token_matches(uri: &Pkcs11Uri, t: &TokenInfo) -> bool {
    let is =
        |want: &Option<String>, have: &str| want.as_deref().map_or(true, |w| w == have.trim_end());
    is(&uri.token, t.label())
        && is(&uri.serial, t.serial_number())
        && is(&uri.manufacturer, t.manufacturer_id())
        && is(&uri.model, t.model())
}

/// Logs in with the URI's PIN, else the default one; without either, only a token that needs
/// no login is usable.
fn login(
    session: &Session,
    token: &TokenInfo,
    uri: &Pkcs11Uri,
    defaults: &Pkcs11Defaults,
) -> Result<(), Pkcs11Error> {
    let token_name = || label(token).to_owned();
    let pin = match &uri.pin {
        Some(PinSource::Value(v)) => v.clone(),
        Some(PinSource::File(path)) => read_pin(path)?,
        None => match &defaults.pin {
            Some(v) => v.clone(),
            None if token.login_required() => {
                return Err(Pkcs11Error::NoPin {
                    token: token_name(),
                })
            }
            None => return Ok(()),
        },
    };
    match session.login(UserType::User, Some(&AuthPin::from(pin.as_str()))) {
        // Another key of the same token logged this application in already.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            Err(Pkcs11Error::WrongPin {
                token: token_name(),
            })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked {
            token: token_name(),
        }),
        Err(source) => Err(Pkcs11Error::Token {
            uri: uri.shown().into(),
            op: "logging in",
            source,
        }),
    }
}

/// The first line of a PIN file.
fn read_pin(path: &Path) -> Result<Zeroizing<String>, Pkcs11Error> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| Pkcs11Error::PinFile {
                path: path.to_path_buf(),
                source,
            })?,
        );
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or_default().to_owned(),
    ))
}

fn find_private_key(
    session: &Session,
    uri: &Pkcs11Uri,
    token: &TokenInfo,
) -> Result<ObjectHandle, Pkcs11Error> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(object) = &uri.object {
        template.push(Attribute::Label(object.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session
        .find_objects(&template)
        .map_err(failed(uri, "searching the token"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::KeyNotFound {
            uri: uri.shown().into(),
            token: label(token).to_owned(),
        }),
        many => Err(Pkcs11Error::AmbiguousKey {
            uri: uri.shown().into(),
            count: many.len(),
        }),
    }
}

/// One attribute of an object, or an error naming what was read.
fn attribute(
    session: &Session,
    object: ObjectHandle,
    kind: AttributeType,
    uri: &Pkcs11Uri,
) -> Result<Attribute, Pkcs11Error> {
    session
        .get_attributes(object, &[kind])
        .map_err(failed(uri, "reading a key attribute"))?
        .pop()
        .ok_or_else(|| Pkcs11Error::Token {
            uri: uri.shown().into(),
            op: "reading a key attribute",
            source: CkError::InvalidValue,
        })
}

/// Refuses anything but an Edwards-curve key on edwards25519 (not Ed448, RSA or ECDSA).
fn check_ed25519(session: &Session, key: ObjectHandle, uri: &Pkcs11Uri) -> Result<(), Pkcs11Error> {
    let not_ed25519 = |found: String| Pkcs11Error::NotEd25519 {
        uri: uri.shown().into(),
        found,
    };
    match attribute(session, key, AttributeType::KeyType, uri)? {
        Attribute::KeyType(t) if t == KeyType::EC_EDWARDS => {}
        Attribute::KeyType(t) => return Err(not_ed25519(format!("a {t} key"))),
        _ => return Err(not_ed25519("a key of unknown type".into())),
    }
    match attribute(session, key, AttributeType::EcParams, uri)? {
        Attribute::EcParams(p) if p == ED25519_OID || p == ED25519_NAME => Ok(()),
        _ => Err(not_ed25519(
            "an Edwards-curve key on another curve than edwards25519 (Ed448?)".into(),
        )),
    }
}

/// The public key object paired with `key` (same `CKA_ID`, else same label), decoded from its
/// `CKA_EC_POINT`.
fn public_key(
    session: &Session,
    key: ObjectHandle,
    uri: &Pkcs11Uri,
) -> Result<PublicKey, Pkcs11Error> {
    let missing = |reason: String| Pkcs11Error::PublicKey {
        uri: uri.shown().into(),
        reason,
    };
    let pairing = match attribute(session, key, AttributeType::Id, uri)? {
        Attribute::Id(id) if !id.is_empty() => Attribute::Id(id),
        _ => attribute(session, key, AttributeType::Label, uri)?,
    };
    let template = [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        pairing,
    ];
    let found = session
        .find_objects(&template)
        .map_err(failed(uri, "searching the token"))?;
    let [public] = found.as_slice() else {
        return Err(missing(format!(
            "{} public key objects share the private key's id (or label), expected one",
            found.len()
        )));
    };
    match attribute(session, *public, AttributeType::EcPoint, uri)? {
        Attribute::EcPoint(point) => {
            let raw = ec_point(&point).ok_or_else(|| {
                missing("CKA_EC_POINT is not 32 bytes (raw or in a DER OCTET STRING)".into())
            })?;
            PublicKey::from_raw(&raw).map_err(|e| missing(e.to_string()))
        }
        _ => Err(missing("it has no CKA_EC_POINT".into())),
    }
}

/// The 32 bytes of an Ed25519 `CKA_EC_POINT`: a DER OCTET STRING (PKCS#11 3.0) or, as some
/// tokens store it, the raw bytes.
fn ec_point(point: &[u8]) -> Option<[u8; 32]> {
    match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        raw => raw.try_into().ok(),
    }
}

fn failed<'a>(uri: &'a Pkcs11Uri, op: &'static str) -> impl Fn(CkError) -> Pkcs11Error + 'a {
    move |source| Pkcs11Error::Token {
        uri: uri.shown().into(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_forms() {
        let raw = [7u8; 32];
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&raw);
        assert_eq!(ec_point(&der), Some(raw));
        assert_eq!(ec_point(&raw), Some(raw));
        assert_eq!(ec_point(&der[..33]), None);
        assert_eq!(ec_point(&[0x04, 0x41, 1, 2]), None);
    }
}
