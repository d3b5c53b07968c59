//! The 16-byte bundle header (FORMAT §2), read through a bounded [`Reader`] and written by the
//! same codec: magic `TANDEM\0`, format version, manifest length, signature block length.

use std::ops::Range;

use crate::error::{FormatError, Section};
use crate::limits::Limits;

/// `TANDEM\0`.
pub const MAGIC: [u8; 7] = *b"TANDEM\0";
/// The format version of a bundle without boot assets (FORMAT §2).
pub const FORMAT_VERSION: u8 = 1;
/// The format version of a bundle that carries boot assets (FORMAT §2, §3.1).
pub const FORMAT_VERSION_ASSETS: u8 = 2;

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

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The fixed header at the start of every bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleHeader {
    /// Format version: [`FORMAT_VERSION`], or [`FORMAT_VERSION_ASSETS`] with boot assets.
    pub version: u8,
    /// Length of the manifest region (canonical JSON + space padding).
    pub manifest_len: u32,
    /// Length of the signature block (JSON + space padding).
    pub signature_block_len: u32,
}

impl BundleHeader {
    /// Header length in bytes.
    pub const LEN: usize = 16;

    /// Parses and bounds-checks a header; refuses oversized sections before anything is
    /// allocated for them (FORMAT §7).
    pub fn parse(bytes: &[u8; Self::LEN], limits: &Limits) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        let short = || FormatError::Truncated {
            expected: Self::LEN as u64,
            actual: 0,
        };
        let magic = r.array::<7>().ok_or_else(short)?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let version = r.u8().ok_or_else(short)?;
        if version != FORMAT_VERSION && version != FORMAT_VERSION_ASSETS {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let manifest_len = r.u32_le().ok_or_else(short)?;
        let signature_block_len = r.u32_le().ok_or_else(short)?;
        if !r.is_empty() {
            return Err(FormatError::field(
                Section::Header,
                "",
                "header longer than 16 bytes",
            ));
        }
        let header = BundleHeader {
            version,
            manifest_len,
            signature_block_len,
        };
        header.check_limits(limits)?;
        Ok(header)
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), FormatError> {
        let too_large = |section, len: u32, max: u32| FormatError::TooLarge {
            section,
            len: len.into(),
            max: max.into(),
        };
        if self.manifest_len > limits.max_manifest_len {
            return Err(too_large(
                Section::Manifest,
                self.manifest_len,
                limits.max_manifest_len,
            ));
        }
        if self.signature_block_len > limits.max_signature_block_len {
            return Err(too_large(
                Section::SignatureBlock,
                self.signature_block_len,
                limits.max_signature_block_len,
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

    /// Checks the file is at least as long as header, manifest and signature block.
    pub fn check_file_len(&self, file_len: u64) -> Result<(), FormatError> {
        if file_len < self.payload_offset() {
            return Err(FormatError::Truncated {
                expected: self.payload_offset(),
                actual: file_len,
            });
        }
        Ok(())
    }

    /// The 16 bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let parts: [&[u8]; 4] = [
            &MAGIC,
            &[self.version],
            &self.manifest_len.to_le_bytes(),
            &self.signature_block_len.to_le_bytes(),
        ];
        let mut pos = 0;
        for p in parts {
            if let Some(dst) = out.get_mut(pos..pos + p.len()) {
                dst.copy_from_slice(p);
            }
            pos += p.len();
        }
        out
    }

    /// Absolute byte range of the manifest region.
    pub fn manifest_range(&self) -> Range<u64> {
        let start = Self::LEN as u64;
        start..start + u64::from(self.manifest_len)
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
        };
        let bytes = h.encode();
        assert_eq!(&bytes[..8], b"TANDEM\0\x01");
        assert_eq!(BundleHeader::parse(&bytes, &Limits::default()).unwrap(), h);
        assert_eq!(h.payload_offset(), 16 + 1234 + 4096);
    }

    #[test]
    fn bad_magic_and_version() {
        let mut b = BundleHeader {
            version: FORMAT_VERSION,
            manifest_len: 10,
            signature_block_len: 10,
        }
        .encode();
        b[7] = 3;
        assert!(matches!(
            BundleHeader::parse(&b, &Limits::default()),
            Err(FormatError::UnsupportedVersion(3))
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
