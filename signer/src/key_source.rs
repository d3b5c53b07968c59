//! A private key as the command line names it: a key file's, or (feature `pkcs11`) one held
//! in a token. Both sign through the same [`Signer`] trait, so this is the one place that
//! knows both kinds.

use crate::keys::{KeyError, PublicKey, SecretKey, Signer};

/// A private key from the command line: a key file's, or (feature `pkcs11`) one in a token.
#[derive(Debug)]
pub enum PrivateKey {
    /// Read from a PKCS#8 PEM file.
    File(SecretKey),
    /// Held in a PKCS#11 token, named by a `pkcs11:` URI.
    #[cfg(feature = "pkcs11")]
    Pkcs11(crate::pkcs11::Pkcs11Key),
}

impl Signer for PrivateKey {
    fn public(&self) -> &PublicKey {
        match self {
            PrivateKey::File(k) => k.public(),
            #[cfg(feature = "pkcs11")]
            PrivateKey::Pkcs11(k) => k.public(),
        }
    }

    fn try_sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        match self {
            PrivateKey::File(k) => k.try_sign(message),
            #[cfg(feature = "pkcs11")]
            PrivateKey::Pkcs11(k) => k.try_sign(message),
        }
    }
}
