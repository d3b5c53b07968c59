//! Loading the private keys named on the command line: PKCS#8 PEM files, or keys in a PKCS#11
//! token (`pkcs11:` URIs), whose module and PIN may come from the environment.

use std::path::PathBuf;

use anyhow::{Context, Result};
use signer::files::read_secret_key;
use signer::pkcs11::{Pkcs11Defaults, Pkcs11Key, Pkcs11Uri};
use signer::{KeyError, PrivateKey};
use zeroize::Zeroizing;

use crate::cli::KeyArg;

/// The PKCS#11 module for URIs without `module-path=`.
pub const MODULE_ENV: &str = "TANDEM_PKCS11_MODULE";
/// The token PIN for URIs without `pin-source=` or `pin-value=`.
pub const PIN_ENV: &str = "TANDEM_PKCS11_PIN";

/// Loads every key, in order.
pub fn private_keys(args: &[KeyArg]) -> Result<Vec<PrivateKey>> {
    args.iter().map(private_key).collect()
}

/// Loads one key; the error names the file or the URI.
pub fn private_key(arg: &KeyArg) -> Result<PrivateKey> {
    match arg {
        KeyArg::File(path) => read_secret_key(path)
            .map(PrivateKey::File)
            .with_context(|| format!("private key {}", path.display())),
        KeyArg::Pkcs11(uri) => {
            let token_key = |e| signer::Error::Key(KeyError::Token(Box::new(e)));
            let uri: Pkcs11Uri = uri.parse().map_err(token_key)?;
            let key = Pkcs11Key::open(&uri, &defaults()).map_err(token_key)?;
            Ok(PrivateKey::Pkcs11(key))
        }
    }
}

fn defaults() -> Pkcs11Defaults {
    Pkcs11Defaults {
        module: std::env::var_os(MODULE_ENV)
            .filter(|m| !m.is_empty())
            .map(PathBuf::from),
        pin: std::env::var(PIN_ENV).ok().map(Zeroizing::new),
    }
}
