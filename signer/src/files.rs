//! Tool-side file handling: key files and atomic writes (temporary file in
//! the destination directory, fsync, rename, fsync of the directory), so a reader never sees
//! a half-written key, bundle or document.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use bundle::files::invalid_data;
pub use bundle::files::{read_capped, read_capped_from};
pub use repo_client::dir::{open_regular, OpenError};

use crate::error::Error;
use crate::keys::{PublicKey, SecretKey};

/// Longest key file read.
const MAX_PEM: u64 = 64 << 10;

/// Reads a PEM file into a buffer wiped when dropped, allocated once for the largest file
/// accepted so that no copy of a private key is left behind by a reallocation.
fn read_pem(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    let ctx = || format!("reading {}", path.display());
    let file = File::open(path).map_err(Error::io(ctx()))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PEM as usize + 1));
    file.take(MAX_PEM + 1)
        .read_to_end(&mut buf)
        .map_err(Error::io(ctx()))?;
    if buf.len() as u64 > MAX_PEM {
        return Err(invalid_data(
            ctx(),
            format!("more than {MAX_PEM} bytes: not a key file"),
        ));
    }
    Ok(buf)
}

fn pem_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, Error> {
    std::str::from_utf8(bytes).map_err(|_| {
        invalid_data(
            format!("reading {}", path.display()),
            "not a text (PEM) file".into(),
        )
    })
}

/// Reads a PKCS#8 PEM private key.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, Error> {
    let pem = read_pem(path)?;
    Ok(SecretKey::from_pem(pem_text(path, &pem)?)?)
}

/// Reads an SPKI PEM public key.
pub fn read_public_key(path: &Path) -> Result<PublicKey, Error> {
    let pem = read_pem(path)?;
    Ok(PublicKey::from_pem(pem_text(path, &pem)?)?)
}

/// How [`write_atomic`] treats an existing file.
pub use atomic_file::Overwrite;

/// Writes `path` atomically with `mode` (e.g. 0o600) through [`atomic_file::write`]: `fill`
/// writes a temporary file of a random name in the same directory (created exclusively,
/// never through a link), which is fsynced and renamed over `path` only if `fill` succeeded.
pub fn write_atomic(
    path: &Path,
    mode: u32,
    overwrite: Overwrite,
    fill: impl FnOnce(&mut File) -> Result<(), Error>,
) -> Result<(), Error> {
    atomic_file::write(path, mode, overwrite, fill)
}

/// Writes bytes atomically ([`atomic_file::write_bytes`]).
pub fn write_bytes_atomic(
    path: &Path,
    mode: u32,
    overwrite: Overwrite,
    bytes: &[u8],
) -> Result<(), Error> {
    Ok(atomic_file::write_bytes(path, mode, overwrite, bytes)?)
}

/// Writes a new key pair: `<base>.pem` (private, mode 0600) and `<base>.pub.pem`. Refuses to
/// overwrite either.
pub fn write_key_pair(base: &Path, key: &SecretKey) -> Result<(PathBuf, PathBuf), Error> {
    let private = with_suffix(base, ".pem");
    let public = with_suffix(base, ".pub.pem");
    for p in [&private, &public] {
        if p.exists() {
            return Err(Error::Io {
                context: format!("creating {}", p.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "file exists; choose another --out or remove it",
                ),
            });
        }
    }
    write_bytes_atomic(&private, 0o600, Overwrite::Refuse, key.to_pem()?.as_bytes())?;
    write_bytes_atomic(
        &public,
        0o644,
        Overwrite::Refuse,
        key.public().to_pem().as_bytes(),
    )?;
    Ok((private, public))
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Removes a file if it exists (cleanup on error paths).
pub fn remove_if_exists(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_oversized_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let (private, public) = write_key_pair(&dir.path().join("k"), &key).unwrap();
        assert_eq!(read_secret_key(&private).unwrap().id(), key.id());
        assert_eq!(read_public_key(&public).unwrap().id(), key.id());
        let big = dir.path().join("big.pem");
        let mut text = key.to_pem().unwrap().to_string();
        text.push_str(&" ".repeat(MAX_PEM as usize));
        fs::write(&big, text).unwrap();
        let error = read_secret_key(&big).unwrap_err().to_string();
        assert!(error.contains("big.pem"), "{error}");
        fs::write(&big, [0xff, 0xfe, b'\n']).unwrap();
        let error = format!("{:?}", read_secret_key(&big).unwrap_err());
        assert!(error.contains("not a text (PEM) file"), "{error}");
    }
}
