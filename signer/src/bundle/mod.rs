//! The `.tandem` bundle (FORMAT §2–§5): [`header`] codec, [`BundleHead`] (reading by ranges),
//! [`chunks`] (decoding and hash-checking frames), [`writer`] (the parallel signing pipeline)
//! and [`add_signature`].

pub mod add_signature;
pub mod chunks;
pub mod dictionary;
pub mod head;
pub mod header;
pub(crate) mod index;
pub mod writer;

pub use add_signature::{add_checked_signatures, add_signatures};
pub use chunks::{
    decode_piece, extract, extract_asset, verify_contents, ChunkData, ChunkDecoder, ChunkReader,
    MAX_WINDOW_LOG,
};
pub use dictionary::train_dictionary;
pub use head::BundleHead;
pub use header::BundleHeader;
pub use writer::{sign_bundle, sign_release, AssetSource, SignOptions, SignSummary, Sources};

use std::borrow::Cow;

use crate::digest::Sha256Digest;
use crate::error::{Error, Section};
use crate::limits::Limits;
use crate::schema::envelope_helpers::{check_spaces, parse_padded};
use crate::schema::{Manifest, ManifestDoc, Tail};

/// Parses the manifest region: one canonical JSON object then ASCII spaces (FORMAT §3), with
/// the head's dictionary and index, `tail` (the head's own, or taken from it to be released
/// as the index is decompressed: [`BundleHead::take_tail`]).
/// Callers parse only after the signature verified, except `inspect`.
pub(crate) fn parse_manifest(
    head: &BundleHead,
    tail: Cow<'_, [u8]>,
    limits: &Limits,
) -> Result<Manifest, Error> {
    let tail = Tail {
        bytes: tail,
        dictionary_len: head.header().dictionary_len as usize,
        file_len: head.file_len(),
    };
    parse_manifest_region(head.manifest_bytes(), *head.header(), Some(tail), limits)
}

/// [`parse_manifest`] on a manifest region and the header framing it; a signing request has
/// no `tail` (dictionary and index), and its version 3 manifest then lists no chunks.
pub(crate) fn parse_manifest_region(
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
