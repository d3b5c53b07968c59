//! Ed25519 keys that sign (FORMAT §6.1): private keys as PKCS#8 PEM, interchangeable with
//! OpenSSL's, and signing with a set of keys ([`sign_bytes`]). Public keys, key ids, the
//! [`Signature`] and [`KeyError`] are the `bundle` crate's, re-exported here.
//!
//! Everything that signs takes any [`Signer`]: a [`SecretKey`] in memory, or a
//! [`crate::key_source::PrivateKey`], which is either that or (feature `pkcs11`) a key held
//! in a token.
//!
//! Secrets stay zeroized end to end: a private key's PEM text only ever lives in a
//! [`Zeroizing`] buffer, and the key itself wipes its bytes when dropped.

use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signer as _, SigningKey};
use zeroize::Zeroizing;

pub use bundle::keys::{KeyError, KeyId, PublicKey, Signature};
use bundle::role::RoleKind;

/// An Ed25519 private key.
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl SecretKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        Self::from_signing(SigningKey::generate(&mut rand_core::OsRng))
    }

    fn from_signing(key: SigningKey) -> Self {
        SecretKey {
            public: PublicKey::from_verifying(key.verifying_key()),
            key,
        }
    }

    /// From PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, v1 or v2), e.g. `openssl genpkey -algorithm ed25519`.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Private(e.to_string()))?;
        Ok(Self::from_signing(key))
    }

    /// PKCS#8 v1 PEM, the form OpenSSL writes; wiped from memory when dropped.
    pub fn to_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        // `KeypairBytes` wipes its copy of the secret when dropped.
        let bytes = KeypairBytes {
            secret_key: *self.key.as_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Private(e.to_string()))
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.public.id()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public.id().short())
    }
}

/// One Ed25519 key that can sign: the interface every signing function takes, so a key file's
/// key and a token's key sign the same documents.
pub trait Signer {
    /// The public half.
    fn public(&self) -> &PublicKey;

    /// The key id.
    fn id(&self) -> KeyId {
        self.public().id()
    }

    /// Signs `message` (pure Ed25519, RFC 8032). Only a key outside this process can fail.
    fn try_sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError>;
}

impl Signer for SecretKey {
    fn public(&self) -> &PublicKey {
        &self.public
    }

    fn try_sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        Ok(self.sign(message))
    }
}

/// Signs `"tandem-v1 <kind>\n" + signed` with each key.
pub fn sign_bytes<K: Signer>(
    kind: RoleKind,
    signed: &[u8],
    keys: &[K],
) -> Result<Vec<Signature>, KeyError> {
    let message = kind.message(signed);
    keys.iter()
        .map(|k| {
            Ok(Signature {
                keyid: k.id(),
                sig: k.try_sign(&message)?,
            })
        })
        .collect()
}

/// Refuses the same key twice.
pub(crate) fn check_distinct<K: Signer>(keys: &[K]) -> Result<(), KeyError> {
    let mut ids: Vec<KeyId> = keys.iter().map(Signer::id).collect();
    ids.sort();
    match ids
        .windows(2)
        .find_map(|w| w.first().filter(|&id| Some(id) == w.get(1)))
    {
        Some(id) => Err(KeyError::Duplicate(*id)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_key_id() {
        let k = SecretKey::generate();
        // The PEM comes back in a buffer that wipes itself when dropped.
        let pem: Zeroizing<String> = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = SecretKey::from_pem(&pem).unwrap();
        assert_eq!(k2.id(), k.id());
        let p = PublicKey::from_pem(&k.public().to_pem()).unwrap();
        assert_eq!(p.id(), KeyId::of(p.raw()));
        assert_eq!(p.id(), KeyId(bundle::Sha256Digest::of(k.public().raw()).0));
        let sig = k.sign(b"m");
        assert!(p.verify(b"m", &sig));
        assert!(!p.verify(b"n", &sig));
    }

    #[test]
    fn public_pem_is_not_a_private_key() {
        let k = SecretKey::generate();
        assert!(matches!(
            SecretKey::from_pem(&k.public().to_pem()),
            Err(KeyError::Private(_))
        ));
        assert!(matches!(
            PublicKey::from_pem(&k.to_pem().unwrap()),
            Err(KeyError::Public(_))
        ));
    }

    #[test]
    fn the_same_key_twice_is_refused() {
        let k = SecretKey::generate();
        let copy = SecretKey::from_pem(&k.to_pem().unwrap()).unwrap();
        assert!(matches!(
            check_distinct(&[k, SecretKey::generate(), copy]),
            Err(KeyError::Duplicate(_))
        ));
    }
}
