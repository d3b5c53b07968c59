//! The bundle header (FORMAT §2), read through a bounded [`Reader`] and written by the same
//! codec: magic `TANDEM\0`, format version, manifest length, signature block length; from format
//! version 3 also the lengths of the dictionary and the chunk index stored after the payload.

use std::ops::Range;

use crate::error::{FormatError, Section};
use crate::limits::Limits;

/// `TANDEM\0`.
pub const MAGIC: [u8; 7] = *b"TANDEM\0";
/// The format version of a bundle without boot assets (FORMAT §2).
pub const FORMAT_VERSION: u8 = 1;
/// The format version of a bundle that carries boot assets (FORMAT §2, §3.1).
pub const FORMAT_VERSION_ASSETS: u8 = 2;
/// The format version with content-defined chunks, a binary chunk index and a compression
/// dictionary (FORMAT §3.2): what the signer writes.
pub const FORMAT_VERSION_INDEX: u8 = 3;

/// A cursor over untrusted bytes that cannot read past its end (CONTRIBUTING.md §3).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next `n` bytes, or `None` if fewer are left.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u32_le(&mut self) -> Option<u32> {
        self.array::<4>().map(u32::from_le_bytes)
    }
}

/// The fixed header at the start of every bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleHeader {
    /// Format version: [`FORMAT_VERSION`], [`FORMAT_VERSION_ASSETS`] or [`FORMAT_VERSION_INDEX`].
    pub version: u8,
    /// Length of the manifest region (canonical JSON + space padding).
    pub manifest_len: u32,
    /// Length of the signature block (JSON + space padding).
    pub signature_block_len: u32,
    /// Length of the compression dictionary after the payload (0 before version 3, or none).
    pub dictionary_len: u32,
    /// Length of the compressed chunk index after the dictionary (0 before version 3).
    pub index_len: u32,
}

impl BundleHeader {
    /// Length of a version 1 or 2 header, and of the part that says the version.
    pub const LEN: usize = 16;
    /// Length of a version 3 header.
    pub const LEN_INDEX: usize = 24;

    /// This header's length in bytes.
    pub fn encoded_len(&self) -> usize {
        if self.version == FORMAT_VERSION_INDEX {
            Self::LEN_INDEX
        } else {
            Self::LEN
        }
    }

    /// Parses and bounds-checks a header from the first bytes of a bundle (at least 16, and 24
    /// for version 3: more are ignored); refuses oversized sections before anything is
    /// allocated for them (FORMAT §7).
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        let short = |expected: usize| FormatError::Truncated {
            expected: expected as u64,
            actual: bytes.len() as u64,
        };
        let magic = r.array::<7>().ok_or_else(|| short(Self::LEN))?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let version = r.u8().ok_or_else(|| short(Self::LEN))?;
        if ![FORMAT_VERSION, FORMAT_VERSION_ASSETS, FORMAT_VERSION_INDEX].contains(&version) {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let manifest_len = r.u32_le().ok_or_else(|| short(Self::LEN))?;
        let signature_block_len = r.u32_le().ok_or_else(|| short(Self::LEN))?;
        let (dictionary_len, index_len) = if version == FORMAT_VERSION_INDEX {
            let dictionary = r.u32_le().ok_or_else(|| short(Self::LEN_INDEX))?;
            (
                dictionary,
                r.u32_le().ok_or_else(|| short(Self::LEN_INDEX))?,
            )
        } else {
            (0, 0)
        };
        let header = BundleHeader {
            version,
            manifest_len,
            signature_block_len,
            dictionary_len,
            index_len,
        };
        header.check_limits(limits)?;
        Ok(header)
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), FormatError> {
        let sections = [
            (
                Section::Manifest,
                self.manifest_len,
                limits.max_manifest_len,
            ),
            (
                Section::SignatureBlock,
                self.signature_block_len,
                limits.max_signature_block_len,
            ),
            (
                Section::Dictionary,
                self.dictionary_len,
                limits.max_dictionary_len,
            ),
            (Section::Index, self.index_len, limits.max_index_len),
        ];
        if let Some((section, len, max)) = sections.into_iter().find(|(_, len, max)| len > max) {
            return Err(FormatError::TooLarge {
                section,
                len: len.into(),
                max: max.into(),
            });
        }
        if self.version == FORMAT_VERSION_INDEX && self.index_len == 0 {
            return Err(FormatError::field(
                Section::Header,
                "index length",
                "0: a version 3 bundle carries a chunk index",
            ));
        }
        if self.manifest_len < 2 || self.signature_block_len < 2 {
            return Err(FormatError::field(
                Section::Header,
                "lengths",
                "a section is shorter than `{}`",
            ));
        }
        Ok(())
    }

    /// Checks the file is at least as long as header, manifest, signature block, dictionary
    /// and index.
    pub fn check_file_len(&self, file_len: u64) -> Result<(), FormatError> {
        let least = self.payload_offset() + self.tail_len();
        if file_len < least {
            return Err(FormatError::Truncated {
                expected: least,
                actual: file_len,
            });
        }
        Ok(())
    }

    /// The header's bytes: 16, or 24 in version 3.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN_INDEX);
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.extend_from_slice(&self.manifest_len.to_le_bytes());
        out.extend_from_slice(&self.signature_block_len.to_le_bytes());
        if self.version == FORMAT_VERSION_INDEX {
            out.extend_from_slice(&self.dictionary_len.to_le_bytes());
            out.extend_from_slice(&self.index_len.to_le_bytes());
        }
        out
    }

    /// Absolute byte range of the manifest region.
    pub fn manifest_range(&self) -> Range<u64> {
        let start = self.encoded_len() as u64;
        start..start + u64::from(self.manifest_len)
    }

    /// Length of what follows the payload: the dictionary and the index (FORMAT §2).
    pub fn tail_len(&self) -> u64 {
        u64::from(self.dictionary_len) + u64::from(self.index_len)
    }

    /// Absolute byte range of the dictionary and index at the end of a `file_len`-byte bundle.
    pub fn tail_range(&self, file_len: u64) -> Range<u64> {
        file_len.saturating_sub(self.tail_len())..file_len
    }

    /// Absolute byte range of the signature block.
    pub fn signature_block_range(&self) -> Range<u64> {
        let start = self.manifest_range().end;
        start..start + u64::from(self.signature_block_len)
    }

    /// Absolute offset of the payload.
    pub fn payload_offset(&self) -> u64 {
        self.signature_block_range().end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = BundleHeader {
            version: FORMAT_VERSION,
            manifest_len: 1234,
            signature_block_len: 4096,
            dictionary_len: 0,
            index_len: 0,
        };
        let bytes = h.encode();
        assert_eq!(&bytes[..8], b"TANDEM\0\x01");
        assert_eq!(BundleHeader::parse(&bytes, &Limits::default()).unwrap(), h);
        assert_eq!(h.payload_offset(), 16 + 1234 + 4096);
        let v3 = BundleHeader {
            version: FORMAT_VERSION_INDEX,
            dictionary_len: 7,
            index_len: 99,
            ..h
        };
        let bytes = v3.encode();
        assert_eq!(bytes.len(), 24);
        assert_eq!(BundleHeader::parse(&bytes, &Limits::default()).unwrap(), v3);
        assert_eq!(v3.payload_offset(), 24 + 1234 + 4096);
        assert!(matches!(
            BundleHeader::parse(&bytes[..20], &Limits::default()),
            Err(FormatError::Truncated { expected: 24, .. })
        ));
    }

    #[test]
    fn bad_magic_and_version() {
        let mut b = BundleHeader {
            version: FORMAT_VERSION,
            manifest_len: 10,
            signature_block_len: 10,
            dictionary_len: 0,
            index_len: 0,
        }
        .encode();
        b[7] = 4;
        assert!(matches!(
            BundleHeader::parse(&b, &Limits::default()),
            Err(FormatError::UnsupportedVersion(4))
        ));
        b[0] = b'X';
        assert!(matches!(
            BundleHeader::parse(&b, &Limits::default()),
            Err(FormatError::BadMagic { .. })
        ));
    }

    #[test]
    fn four_gib_manifest_is_refused_by_the_header_alone() {
        let b = BundleHeader {
            version: FORMAT_VERSION,
            manifest_len: u32::MAX,
            signature_block_len: 4096,
            dictionary_len: 0,
            index_len: 0,
        }
        .encode();
        match BundleHeader::parse(&b, &Limits::default()) {
            Err(FormatError::TooLarge {
                section: Section::Manifest,
                len,
                max,
            }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, 16 << 20);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
