//! Ed25519 keys (DESIGN §2, FORMAT §6): private keys as PKCS#8 PEM, public keys as SPKI PEM,
//! both interchangeable with OpenSSL's; the key id is the lowercase hex SHA-256 of the raw
//! 32-byte public key.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::digest::{parse_lower_hex, Sha256Digest};
use crate::error::KeyError;

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
    pub fn from_raw(raw: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(raw).map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(Self::from_verifying(key))
    }

    fn from_verifying(key: VerifyingKey) -> Self {
        PublicKey {
            id: KeyId::of(key.as_bytes()),
            key,
        }
    }

    /// From SPKI PEM (`-----BEGIN PUBLIC KEY-----`), e.g. `openssl pkey -pubout`'s output.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key =
            VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(Self::from_verifying(key))
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

    /// Verifies a signature over `message` (strict: rejects malleable and small-order forms).
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

    /// PKCS#8 v1 PEM, the form OpenSSL writes.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let bytes = KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        let pem = bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Private(e.to_string()))?;
        Ok(pem.to_string())
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.public.id
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public.id.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_key_id() {
        let k = SecretKey::generate();
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = SecretKey::from_pem(&pem).unwrap();
        assert_eq!(k2.id(), k.id());
        let p = PublicKey::from_pem(&k.public().to_pem()).unwrap();
        assert_eq!(p.id(), KeyId::of(p.raw()));
        assert_eq!(p.id(), KeyId(Sha256Digest::of(k.public().raw()).0));
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
}
