//! SHA-256 digests: the [`Sha256Digest`] value type, its lowercase-hex form, and helpers.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A SHA-256 digest, shown and serialised as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(data).into())
    }

    /// Hashes the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Sha256Digest(h.finalize().into())
    }

    /// The first 8 bytes, as a number: a short key that finds a candidate among many
    /// chunks (a sorted run, a set), never one that accepts data.
    pub fn key(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.0.get(..8).unwrap_or(&[0; 8]));
        u64::from_be_bytes(bytes)
    }

    /// The digest of `len` zero bytes, without allocating `len` bytes.
    pub fn of_zeros(len: u64) -> Self {
        let block = [0u8; 64 << 10];
        let mut h = Sha256::new();
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
            h.update(block.get(..n).unwrap_or(&block));
            left -= n as u64;
        }
        Sha256Digest(h.finalize().into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

/// Error of [`Sha256Digest::from_str`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHexDigest;

impl fmt::Display for BadHexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected 64 lowercase hex digits")
    }
}

impl FromStr for Sha256Digest {
    type Err = BadHexDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_lower_hex::<32>(s)
            .map(Sha256Digest)
            .ok_or(BadHexDigest)
    }
}

/// Parses exactly `N` bytes of lowercase hex (the only hex form the format allows).
pub fn parse_lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom("expected a sha256 as 64 lowercase hex digits"))
    }
}

/// SHA-256 of `n` zero bytes, computed once per length.
#[derive(Default)]
pub struct ZeroDigests(HashMap<u32, Sha256Digest>);

impl ZeroDigests {
    /// The SHA-256 of `n` zero bytes.
    pub fn of(&mut self, n: u32) -> Sha256Digest {
        *self
            .0
            .entry(n)
            .or_insert_with(|| Sha256Digest::of_zeros(u64::from(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_digest_matches_hashing_a_buffer() {
        for len in [0u64, 1, 4095, 65536, 65537, 200_000] {
            assert_eq!(
                Sha256Digest::of_zeros(len),
                Sha256Digest::of(&vec![0u8; len as usize])
            );
        }
    }

    #[test]
    fn hex_must_be_lowercase_and_exact_length() {
        let h = Sha256Digest::of(b"x").to_hex();
        assert_eq!(h.parse::<Sha256Digest>().unwrap(), Sha256Digest::of(b"x"));
        assert!(h.to_uppercase().parse::<Sha256Digest>().is_err());
        assert!(h[1..].parse::<Sha256Digest>().is_err());
    }
}
