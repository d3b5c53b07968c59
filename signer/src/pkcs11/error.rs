//! Why a key in a PKCS#11 token could not be used: one error type for the URI parser and the
//! token session alike, so neither imports the other.

use std::path::PathBuf;

use cryptoki::error::Error as CkError;

/// A key in a token that cannot be found, unlocked or used. Each names the URI (its PIN hidden)
/// or the token, and the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// A URI Tandem cannot use.
    #[error("invalid PKCS#11 URI `{uri}`: {reason}")]
    Uri {
        /// The URI.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// Neither the URI nor the defaults name a module.
    #[error(
        "no PKCS#11 module for `{uri}`: the URI has no module-path= and no default module is set"
    )]
    NoModule {
        /// The URI.
        uri: String,
    },
    /// The module does not load (missing file, not a PKCS#11 library) or initialise.
    #[error("cannot load the PKCS#11 module {path}: {reason}")]
    Module {
        /// The module.
        path: PathBuf,
        /// The loader's or the module's message.
        reason: String,
    },
    /// No token matches the URI's token attributes.
    #[error("no token matches `{uri}` (tokens present: {present})")]
    TokenNotFound {
        /// The URI.
        uri: String,
        /// The labels of the tokens there are.
        present: String,
    },
    /// Several tokens match.
    #[error("several tokens match `{uri}`: add token= or serial= to the URI")]
    AmbiguousToken {
        /// The URI.
        uri: String,
    },
    /// The token needs a login and no PIN was given.
    #[error("token `{token}` needs a PIN and none was given")]
    NoPin {
        /// The token's label.
        token: String,
    },
    /// The `pin-source` file cannot be read (the I/O error is the `source()`).
    #[error("cannot read the PIN file {path}")]
    PinFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The token refused the PIN.
    #[error("wrong PIN for token `{token}` (the token refused the login)")]
    WrongPin {
        /// The token's label.
        token: String,
    },
    /// Too many wrong PINs: the token refuses any login.
    #[error("the user PIN of token `{token}` is locked (too many wrong PINs)")]
    PinLocked {
        /// The token's label.
        token: String,
    },
    /// No private key object matches `object=`/`id=`.
    #[error("no private key matches `{uri}` in token `{token}`")]
    KeyNotFound {
        /// The URI.
        uri: String,
        /// The token's label.
        token: String,
    },
    /// Several private keys match.
    #[error("{count} private keys match `{uri}`: add object= or id= to pick one")]
    AmbiguousKey {
        /// The URI.
        uri: String,
        /// How many matched.
        count: usize,
    },
    /// The key is not an Ed25519 key.
    #[error("`{uri}` is {found}, not an Ed25519 key: Tandem signs with Ed25519 (CKK_EC_EDWARDS on edwards25519) only")]
    NotEd25519 {
        /// The URI.
        uri: String,
        /// What the key is.
        found: String,
    },
    /// The key's public half cannot be read from the token.
    #[error("`{uri}`: no usable Ed25519 public key object beside the private key: {reason}")]
    PublicKey {
        /// The URI.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// The token's signature does not match the public key read from it.
    #[error("`{uri}`: the token's key does not match its public key: {reason}")]
    Mismatch {
        /// The URI.
        uri: String,
        /// What did not match.
        reason: String,
    },
    /// Any other failure the module reports (its error is the `source()`).
    #[error("`{uri}`: {op} failed")]
    Token {
        /// The URI.
        uri: String,
        /// What was being done.
        op: &'static str,
        /// The module's error.
        source: CkError,
    },
}
