//! The head of a bundle (FORMAT §2–§4): header, manifest bytes and parsed signature block,
//! and from format version 3 the dictionary and chunk index stored after the payload; read
//! from a `Read + Seek` or from byte ranges fetched separately. Nothing here trusts the
//! manifest: [`BundleHead::verify`] (in [`crate::verify`]) is the way to a
//! [`Verified<Manifest>`](crate::Verified).

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use crate::digest::Sha256Digest;
use crate::error::{Error, FormatError, Section};
use crate::header::BundleHeader;
use crate::limits::Limits;
use crate::schema::envelope_helpers::{check_spaces, parse_padded};
use crate::schema::{
    check_file_len, parse_signature_block, Manifest, ManifestDoc, Signature, Tail,
};

/// Header, manifest region, signatures, dictionary and index of a bundle, not yet verified.
#[derive(Debug, Clone)]
pub struct BundleHead {
    header: BundleHeader,
    manifest: Vec<u8>,
    signatures: Vec<Signature>,
    tail: Vec<u8>,
    /// The index was left in the bundle ([`Limits::max_index_in_head`]): `tail` holds the
    /// dictionary alone.
    index_streamed: bool,
    file_len: u64,
}

impl BundleHead {
    /// Reads the head of a bundle. Lengths are checked against `limits` and the file size
    /// before anything is allocated; the payload is not read.
    pub fn read<R: Read + Seek>(r: &mut R, limits: &Limits) -> Result<Self, Error> {
        let file_len = r
            .seek(SeekFrom::End(0))
            .map_err(Error::io("reading bundle length"))?;
        Self::fetch(file_len, limits, Error::Format, |range| {
            r.seek(SeekFrom::Start(range.start))
                .map_err(Error::io("seeking in the bundle head"))?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            read_exact(r, &mut buf, range.end, file_len)?;
            Ok(buf)
        })
    }

    /// Reads the head of a `file_len`-byte bundle through `read_range` (e.g. HTTP Range
    /// requests): the header's first bytes, then the manifest region and signature block it
    /// announces, then the dictionary and index at the end, each length checked against
    /// `limits` and `file_len` before it is asked for. `format` turns a refusal into `E`.
    pub fn fetch<E>(
        file_len: u64,
        limits: &Limits,
        format: impl Fn(FormatError) -> E,
        mut read_range: impl FnMut(Range<u64>) -> Result<Vec<u8>, E>,
    ) -> Result<Self, E> {
        if file_len < BundleHeader::LEN as u64 {
            return Err(format(FormatError::Truncated {
                expected: BundleHeader::LEN as u64,
                actual: file_len,
            }));
        }
        let first = read_range(0..file_len.min(BundleHeader::LEN_INDEX as u64))?;
        let header = BundleHeader::parse(&first, limits).map_err(&format)?;
        header.check_file_len(file_len).map_err(&format)?;
        let manifest = read_range(header.manifest_range())?;
        let signatures = read_range(header.signature_block_range())?;
        let mut tail_range = header.tail_range(file_len);
        if streams_index(&header, limits) {
            tail_range.end -= u64::from(header.index_len);
        }
        let tail = match tail_range.is_empty() {
            true => Vec::new(),
            false => read_range(tail_range)?,
        };
        Self::from_parts(header, manifest, &signatures, tail, file_len, limits).map_err(format)
    }

    /// Assembles a head from ranges fetched separately: `header.manifest_range()`,
    /// `header.signature_block_range()` and `header.tail_range(file_len)` (the dictionary and
    /// index, empty before format version 3, without the index when `limits` leave it in the
    /// bundle: [`Limits::max_index_in_head`]); `file_len` is the bundle's total size (e.g.
    /// the channel's `release.size`).
    pub fn from_parts(
        header: BundleHeader,
        manifest: Vec<u8>,
        signature_block: &[u8],
        tail: Vec<u8>,
        file_len: u64,
        limits: &Limits,
    ) -> Result<Self, FormatError> {
        header.check_file_len(file_len)?;
        let index_streamed = streams_index(&header, limits);
        let mut tail_len = header.tail_len();
        if index_streamed {
            tail_len -= u64::from(header.index_len);
        }
        if tail.len() as u64 != tail_len {
            return Err(FormatError::field(
                Section::Index,
                "",
                "dictionary and index length differs from the header's",
            ));
        }
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
            tail,
            index_streamed,
            file_len,
        })
    }

    /// The compression dictionary as stored (empty when there is none), unverified.
    pub fn dictionary_bytes(&self) -> &[u8] {
        self.tail
            .get(..self.header.dictionary_len as usize)
            .unwrap_or_default()
    }

    /// The dictionary and the compressed chunk index as stored, unverified.
    pub(crate) fn tail_bytes(&self) -> &[u8] {
        &self.tail
    }

    /// Takes the dictionary and index out of the head (which then has none).
    pub(crate) fn take_tail(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tail)
    }

    /// The compressed chunk index as stored (empty before format version 3, and when it was
    /// left in the bundle: [`Limits::max_index_in_head`]), unverified.
    pub fn index_bytes(&self) -> &[u8] {
        self.tail
            .get(self.header.dictionary_len as usize..)
            .unwrap_or_default()
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

    /// Parses the manifest WITHOUT checking any signature, for display (`inspect`). The result
    /// is not [`crate::Verified`] and cannot be installed.
    pub fn manifest_unverified(&self, limits: &Limits) -> Result<Manifest, Error> {
        let manifest = parse_manifest(self, Cow::Borrowed(self.tail_bytes()), limits)?;
        check_total_len(&manifest, self.file_len)?;
        Ok(manifest)
    }
}

/// Whether `limits` leave `header`'s stored index in the bundle, to be streamed.
fn streams_index(header: &BundleHeader, limits: &Limits) -> bool {
    header.index_len > limits.max_index_in_head
}

/// The file must be exactly header + manifest + signature block + payload + dictionary +
/// index (FORMAT §2).
pub(crate) fn check_total_len(manifest: &Manifest, file_len: u64) -> Result<(), FormatError> {
    check_file_len(manifest.file_len(), file_len)
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

/// Parses the manifest region: one canonical JSON object then ASCII spaces (FORMAT §3), with
/// the head's dictionary and index, `tail` (the head's own, or taken from it to be released
/// as the index is decompressed: [`BundleHead::take_tail`]).
/// Callers parse only after the signature verified, except `inspect`.
pub fn parse_manifest(
    head: &BundleHead,
    tail: Cow<'_, [u8]>,
    limits: &Limits,
) -> Result<Manifest, Error> {
    let tail = Tail {
        bytes: tail,
        dictionary_len: head.header().dictionary_len as usize,
        file_len: head.file_len(),
        index_streamed: head.index_streamed,
    };
    parse_manifest_region(head.manifest_bytes(), *head.header(), Some(tail), limits)
}

/// [`parse_manifest`] on a manifest region and the header framing it; a signing request has
/// no `tail` (dictionary and index), and its version 3 manifest then lists no chunks.
pub fn parse_manifest_region(
    bytes: &[u8],
    header: BundleHeader,
    tail: Option<Tail<'_>>,
    limits: &Limits,
) -> Result<Manifest, Error> {
    let (doc, end) = parse_padded::<ManifestDoc>(bytes, Section::Manifest)?;
    check_spaces(bytes, end, Section::Manifest)?;
    Ok(Manifest::from_doc(
        doc,
        header,
        Sha256Digest::of(bytes),
        tail,
        limits,
    )?)
}
