//! Ed25519 public keys (FORMAT §6.1) as SPKI PEM, interchangeable with OpenSSL's; the key id
//! is the lowercase hex SHA-256 of the raw 32-byte public key; the [`Signature`] a document
//! carries, and [`KeyError`]. This module depends on no other error or document type. Keys
//! that sign are the `signer` crate's.
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::VerifyingKey;

use serde::{Deserialize, Serialize};

use crate::digest::{parse_lower_hex, Sha256Digest};

/// A key id: SHA-256 of the raw 32-byte Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of a raw public key.
    pub fn of(public: &[u8; 32]) -> Self {
        KeyId(Sha256Digest::of(public).0)
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits followed by `…`, for messages.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s.push('…');
        s
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_lower_hex::<32>(s)
            .map(KeyId)
            .ok_or_else(|| KeyError::KeyId(s.chars().take(80).collect()))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl PublicKey {
    /// From the raw 32 bytes (as stored in `root.json`).
    /// Refuses what FORMAT §6.1 refuses: a point that does not decode, a non-canonical
    /// encoding, a point of small order.
    pub fn from_raw(raw: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(raw).map_err(|e| KeyError::Public(e.to_string()))?;
        Self::checked(key)
    }

    /// A key whose encoding is canonical and whose point is not of small order.
    fn checked(key: VerifyingKey) -> Result<Self, KeyError> {
        if key.to_edwards().compress().as_bytes() != key.as_bytes() {
            return Err(KeyError::Public(
                "the public key is not canonically encoded".into(),
            ));
        }
        if key.is_weak() {
            return Err(KeyError::Public(
                "the public key is a point of small order".into(),
            ));
        }
        Ok(Self::from_verifying(key))
    }

    /// The key of a signing key that the `signer` crate generated or read (checked there).
    pub fn from_verifying(key: VerifyingKey) -> Self {
        PublicKey {
            id: KeyId::of(key.as_bytes()),
            key,
        }
    }

    /// From SPKI PEM (`-----BEGIN PUBLIC KEY-----`), e.g. `openssl pkey -pubout`'s output.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key =
            VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::Public(e.to_string()))?;
        Self::checked(key)
    }

    /// SPKI PEM.
    pub fn to_pem(&self) -> String {
        // Encoding a 32-byte key into a fixed ASN.1 structure cannot fail.
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The raw 32 bytes.
    pub fn raw(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Verifies a signature over `message` strictly (FORMAT §6.1): S < L, R canonical and not
    /// of small order, and `[S]B = R + [k]A` with `k = SHA-512(R || A || message)`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.key.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id.short())
    }
}

/// One signature: the signer's key id and the 64-byte Ed25519 signature (hex in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signer's key id.
    pub keyid: KeyId,
    /// The Ed25519 signature.
    #[serde(with = "sig_hex")]
    pub sig: [u8; 64],
}

mod sig_hex {
    use super::parse_lower_hex;
    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(sig))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_lower_hex::<64>(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 128 lowercase hex digits"))
    }
}

/// A key file or key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a PKCS#8 Ed25519 private key in PEM.
    #[error("not an Ed25519 PKCS#8 PEM private key (\"-----BEGIN PRIVATE KEY-----\"): {0}")]
    Private(String),
    /// Not an SPKI Ed25519 public key in PEM, or a public key FORMAT §6.1 refuses.
    #[error("not an Ed25519 SPKI PEM public key (\"-----BEGIN PUBLIC KEY-----\"): {0}")]
    Public(String),
    /// Not a valid hex key id.
    #[error("invalid key id `{0}`: expected 64 lowercase hex digits")]
    KeyId(String),
    /// Signing keys given twice.
    #[error("key {0} given more than once")]
    Duplicate(KeyId),
    /// The key already signed this document.
    #[error("key {0} has already signed this document")]
    AlreadySigned(KeyId),
    /// A key held outside this process (a PKCS#11 token) that cannot be found, unlocked or
    /// used; the source says why.
    #[error(transparent)]
    Token(Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `2^255 - 19 + y` in little-endian: a non-canonical encoding of the point with `y`.
    fn non_canonical(y: u8) -> [u8; 32] {
        let mut raw = [0xff; 32];
        raw[0] = 0xed + y;
        raw[31] = 0x7f;
        raw
    }

    #[test]
    fn small_order_and_non_canonical_public_keys_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let refused = |raw: &[u8; 32]| matches!(PublicKey::from_raw(raw), Err(KeyError::Public(_)));
        assert!(VerifyingKey::from_bytes(&identity).is_ok());
        assert!(refused(&identity), "the identity point has small order");
        // Some encodings of y >= p decode in the library: each must still be refused.
        let decodable: Vec<[u8; 32]> = (0..18)
            .map(non_canonical)
            .filter(|raw| VerifyingKey::from_bytes(raw).is_ok())
            .collect();
        let not_small = |raw: &[u8; 32]| VerifyingKey::from_bytes(raw).is_ok_and(|k| !k.is_weak());
        assert!(
            decodable.iter().any(not_small),
            "the canonical check itself is exercised"
        );
        for raw in &decodable {
            assert!(refused(raw), "{}", hex::encode(raw));
        }
        // The base point, canonically encoded: a genuine key.
        let mut base = [0x66u8; 32];
        base[0] = 0x58;
        assert!(PublicKey::from_raw(&base).is_ok());
    }
}
