//! The head of a bundle (FORMAT §2–§4): header, manifest bytes and parsed signature block,
//! read from a `Read + Seek` or assembled from byte ranges fetched separately. Nothing here
//! trusts the manifest: [`BundleHead::verify`] is the way to a [`Verified<Manifest>`].

use std::io::{Read, Seek, SeekFrom};

use crate::bundle::header::BundleHeader;
use crate::digest::Sha256Digest;
use crate::error::{Error, FormatError, Section};
use crate::limits::Limits;
use crate::schema::{parse_signature_block, Manifest, Signature};
use crate::verify::Verified;

/// Header, manifest region and signatures of a bundle, not yet verified.
#[derive(Debug, Clone)]
pub struct BundleHead {
    header: BundleHeader,
    manifest: Vec<u8>,
    signatures: Vec<Signature>,
    file_len: u64,
}

impl BundleHead {
    /// Reads the head of a bundle. Lengths are checked against `limits` and the file size
    /// before anything is allocated; the payload is not read.
    pub fn read<R: Read + Seek>(r: &mut R, limits: &Limits) -> Result<Self, Error> {
        let file_len = r
            .seek(SeekFrom::End(0))
            .map_err(Error::io("reading bundle length"))?;
        r.seek(SeekFrom::Start(0))
            .map_err(Error::io("seeking to the bundle start"))?;
        let mut hb = [0u8; BundleHeader::LEN];
        read_exact(r, &mut hb, BundleHeader::LEN as u64, file_len)?;
        let header = BundleHeader::parse(&hb, limits)?;
        header.check_file_len(file_len)?;
        let mut manifest = vec![0u8; header.manifest_len as usize];
        read_exact(r, &mut manifest, header.payload_offset(), file_len)?;
        let mut sig = vec![0u8; header.signature_block_len as usize];
        read_exact(r, &mut sig, header.payload_offset(), file_len)?;
        Ok(Self::from_parts(header, manifest, &sig, file_len, limits)?)
    }

    /// Assembles a head from ranges fetched separately (e.g. HTTP Range requests):
    /// `header.manifest_range()` and `header.signature_block_range()`; `file_len` is the
    /// bundle's total size (e.g. the channel's `release.size`).
    pub fn from_parts(
        header: BundleHeader,
        manifest: Vec<u8>,
        signature_block: &[u8],
        file_len: u64,
        limits: &Limits,
    ) -> Result<Self, FormatError> {
        header.check_file_len(file_len)?;
        if manifest.len() != header.manifest_len as usize {
            return Err(FormatError::field(
                Section::Manifest,
                "",
                "length differs from the header's",
            ));
        }
        if signature_block.len() != header.signature_block_len as usize {
            return Err(FormatError::field(
                Section::SignatureBlock,
                "",
                "length differs from the header's",
            ));
        }
        let signatures = parse_signature_block(signature_block, limits)?;
        Ok(BundleHead {
            header,
            manifest,
            signatures,
            file_len,
        })
    }

    /// The header.
    pub fn header(&self) -> &BundleHeader {
        &self.header
    }

    /// The manifest region exactly as stored (the signed bytes).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest
    }

    /// SHA-256 of the manifest region (compare with the channel's `manifest_sha256` early).
    pub fn manifest_sha256(&self) -> Sha256Digest {
        Sha256Digest::of(&self.manifest)
    }

    /// The signatures found, unverified.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// The total file length this head was read with.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Verifies the manifest's signatures against the root's release role, then parses and
    /// checks the manifest, then checks the file length (FORMAT §8).
    pub fn verify(
        &self,
        root: &Verified<crate::Root>,
        limits: &Limits,
    ) -> Result<Verified<Manifest>, Error> {
        crate::verify::verify_bundle(self, root, limits)
    }

    /// Parses the manifest WITHOUT checking any signature, for display (`inspect`). The result
    /// is not [`Verified`] and cannot be installed.
    pub fn manifest_unverified(&self, limits: &Limits) -> Result<Manifest, Error> {
        let manifest = crate::bundle::parse_manifest(self, limits)?;
        check_total_len(&manifest, self.file_len)?;
        Ok(manifest)
    }
}

/// The file must be exactly header + manifest + signature block + payload (FORMAT §2).
pub(crate) fn check_total_len(manifest: &Manifest, file_len: u64) -> Result<(), FormatError> {
    let expected = manifest.file_len();
    match file_len.cmp(&expected) {
        std::cmp::Ordering::Less => Err(FormatError::Truncated {
            expected,
            actual: file_len,
        }),
        std::cmp::Ordering::Greater => Err(FormatError::TrailingData {
            expected,
            actual: file_len,
        }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

fn read_exact<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    expected: u64,
    file_len: u64,
) -> Result<(), Error> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Format(FormatError::Truncated {
            expected,
            actual: file_len,
        }),
        _ => Error::io("reading the bundle head")(e),
    })
}
