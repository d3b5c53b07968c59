//! The bundle manifest (FORMAT §3): what the image is and where each chunk's zstd frame lies.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::chunking::{Chunking, ALIGN};
use crate::digest::Sha256Digest;
use crate::error::{FormatError, Section};
use crate::header::{FORMAT_VERSION, FORMAT_VERSION_INDEX};
use crate::index::{self, Record};
use crate::keys::KeyId;
use crate::limits::{Limits, MIN_CHUNK_SIZE};
use crate::role::{Role, RoleKind};
use crate::schema::names::{check_name, parse_version};
use crate::time_util::parse_rfc3339;
use crate::BundleHeader;

/// Wire form of the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §3).
#[allow(missing_docs)]
pub struct ManifestDoc {
    /// Boot assets (FORMAT §3.1): present, non-empty, exactly in format version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<Vec<AssetDoc>>,
    pub chunk_size: u32,
    /// Where the image is cut (format version 3; FORMAT §3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<Chunking>,
    /// The image's chunks as JSON entries (format versions 1 and 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<ChunkDoc>>,
    pub created: String,
    /// The zstd dictionary every frame is compressed with (format version 3, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dictionary: Option<BlobDoc>,
    pub image: ImageDoc,
    /// The binary chunk index of the image (format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexDoc>,
    /// The payload's length, so a reader knows the file's before it reads the index (format
    /// version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    pub product: String,
    pub security_version: u64,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §3).
#[allow(missing_docs)]
pub struct ImageDoc {
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// A region stored after the payload, named by its length and hash (FORMAT §3.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §3).
#[allow(missing_docs)]
pub struct BlobDoc {
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// The chunk index: its records and the stored (compressed) bytes (FORMAT §3.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §3).
#[allow(missing_docs)]
pub struct IndexDoc {
    pub count: u64,
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// The dictionary and stored index of a version 3 bundle, as read after its payload, and the
/// length of the file they were read from. Owned bytes are released as the index is
/// decompressed ([`index::decode`]).
#[derive(Debug, Clone)]
pub struct Tail<'a> {
    /// The dictionary, then the index.
    pub bytes: Cow<'a, [u8]>,
    /// The dictionary's length (the index follows it).
    pub dictionary_len: usize,
    /// The length of the whole bundle file.
    pub file_len: u64,
}

impl Tail<'_> {
    fn dictionary(&self) -> &[u8] {
        self.bytes.get(..self.dictionary_len).unwrap_or_default()
    }
    fn index(&self) -> &[u8] {
        self.bytes.get(self.dictionary_len..).unwrap_or_default()
    }
}

/// Wire form of one boot asset (FORMAT §3.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §3).
#[allow(missing_docs)]
pub struct AssetDoc {
    pub chunks: Vec<ChunkDoc>,
    pub kind: AssetKind,
    pub name: String,
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// What a boot asset is (FORMAT §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    /// A Unified Kernel Image (PE binary with `.linux`, `.initrd`, `.osrel` sections).
    Uki,
    /// A kernel image.
    Kernel,
    /// An initramfs.
    Initrd,
    /// The kernel command line, as text ([`proto::check_cmdline`]).
    Cmdline,
    /// Any other partition image.
    Image,
}

impl AssetKind {
    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Uki => "uki",
            AssetKind::Kernel => "kernel",
            AssetKind::Initrd => "initrd",
            AssetKind::Cmdline => "cmdline",
            AssetKind::Image => "image",
        }
    }
}

/// FORMAT §3.1, the rules on a release's asset kinds, given each asset's kind and size: at most
/// one asset each of kind `uki`, `kernel`, `initrd` and `cmdline`; `kernel` and `initrd`
/// together or not at all; never `uki` with them (a slot boots one or the other); `cmdline`
/// only with a `uki` or a `kernel`; a `cmdline` of at most [`proto::MAX_CMDLINE`] bytes (its text is checked once decoded). The parser and
/// the signer both apply it; the message says which rule broke.
pub fn check_asset_kinds(assets: impl IntoIterator<Item = (AssetKind, u64)>) -> Result<(), String> {
    let mut seen: Vec<AssetKind> = Vec::new();
    for (kind, size) in assets {
        if kind != AssetKind::Image && seen.contains(&kind) {
            return Err(format!(
                "two `{kind}` assets: a release carries at most one each of uki, kernel, initrd and cmdline"
            ));
        }
        if kind == AssetKind::Cmdline && size > proto::MAX_CMDLINE as u64 {
            return Err(format!(
                "the `cmdline` asset is {size} bytes, more than {}",
                proto::MAX_CMDLINE
            ));
        }
        seen.push(kind);
    }
    let has = |kind| seen.contains(&kind);
    if has(AssetKind::Kernel) != has(AssetKind::Initrd) {
        return Err("a `kernel` asset needs an `initrd` asset and the other way round".into());
    }
    if has(AssetKind::Uki) && has(AssetKind::Kernel) {
        return Err(
            "a `uki` asset with `kernel` and `initrd` assets: a slot boots one or the other".into(),
        );
    }
    // A release's boot files replace the slot's as a set: a command line alone would leave
    // the slot with no kernel.
    if has(AssetKind::Cmdline) && !has(AssetKind::Uki) && !has(AssetKind::Kernel) {
        return Err("a `cmdline` asset without a `uki` or `kernel` asset to boot with".into());
    }
    Ok(())
}

impl std::fmt::Display for AssetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named boot asset carried besides the root image, chunked like it (FORMAT §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    name: String,
    kind: AssetKind,
    size: u64,
    sha256: Sha256Digest,
    chunks: Vec<Chunk>,
}

impl Asset {
    /// Its name (unique in the manifest).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// What it is.
    pub fn kind(&self) -> AssetKind {
        self.kind
    }
    /// Raw size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// SHA-256 of its raw bytes.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }
    /// Its chunks, in order (frames in the payload after the image's).
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }
}

/// One chunk entry: `{length, offset, sha256}` for a stored frame, `{sha256, zero: true}` else.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §3).
#[allow(missing_docs)]
pub struct ChunkDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    pub sha256: Sha256Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero: Option<bool>,
}

/// Where a chunk's zstd frame lies, relative to the start of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredFrame {
    /// Offset from the payload start.
    pub offset: u64,
    /// Frame length in bytes.
    pub length: u64,
}

/// One chunk of the raw image or of an asset. A format 3 manifest holds one per 4 KiB or more
/// of image, so the record is kept small: 60 bytes (32-bit index and lengths, a frame length
/// of 0 for "no frame", 4-byte alignment).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct Chunk {
    sha256: Sha256Digest,
    image_offset: u64,
    frame_offset: u64,
    index: u32,
    len: u32,
    /// 0 for an all-zero chunk, which has no frame (a stored frame is never empty).
    frame_length: u32,
}

impl Chunk {
    /// Chunk `index` of its stream, `len` raw bytes at `image_offset`, hashing to `sha256`,
    /// stored in `frame` (`None`: all zeros, not stored). `None` when the index or the frame's
    /// length does not fit in 32 bits, or the frame is empty.
    pub fn new(
        index: u64,
        image_offset: u64,
        len: u32,
        sha256: Sha256Digest,
        frame: Option<StoredFrame>,
    ) -> Option<Chunk> {
        let (frame_offset, frame_length) = match frame {
            Some(f) => (f.offset, u32::try_from(f.length).ok().filter(|&n| n > 0)?),
            None => (0, 0),
        };
        Some(Chunk {
            sha256,
            image_offset,
            frame_offset,
            index: u32::try_from(index).ok()?,
            len,
            frame_length,
        })
    }
    /// Position in its stream (the image's or an asset's chunks).
    pub fn index(&self) -> u64 {
        u64::from(self.index)
    }
    /// Offset of the chunk in the raw image (or asset).
    pub fn image_offset(&self) -> u64 {
        self.image_offset
    }
    /// Raw length in bytes (never 0: no `is_empty`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u32 {
        self.len
    }
    /// SHA-256 of the raw bytes.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }
    /// The frame, or `None` for an all-zero chunk that is not stored.
    pub fn frame(&self) -> Option<StoredFrame> {
        (self.frame_length != 0).then_some(StoredFrame {
            offset: self.frame_offset,
            length: u64::from(self.frame_length),
        })
    }
    /// Whether this is an all-zero chunk (no frame).
    pub fn is_zero(&self) -> bool {
        self.frame_length == 0
    }
    /// Offset just past the chunk in the raw image.
    pub fn end(&self) -> u64 {
        self.image_offset + u64::from(self.len)
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("index", &self.index())
            .field("image_offset", &self.image_offset())
            .field("len", &self.len())
            .field("sha256", &self.sha256())
            .field("frame", &self.frame())
            .finish()
    }
}

/// A validated manifest together with the layout of the bundle it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    product: String,
    version: semver::Version,
    security_version: u64,
    created: OffsetDateTime,
    image_size: u64,
    image_sha256: Sha256Digest,
    chunk_size: u32,
    chunking: Chunking,
    chunk_count: u64,
    chunks: Vec<Chunk>,
    dictionary: Option<Arc<[u8]>>,
    assets: Vec<Asset>,
    header: BundleHeader,
    payload_len: u64,
    manifest_sha256: Sha256Digest,
    signers: Vec<KeyId>,
}

impl Role for Manifest {
    const KIND: RoleKind = RoleKind::Bundle;
}

impl Manifest {
    /// Product (compatible string).
    pub fn product(&self) -> &str {
        &self.product
    }
    /// Release version.
    pub fn version(&self) -> &semver::Version {
        &self.version
    }
    /// Anti-rollback counter.
    pub fn security_version(&self) -> u64 {
        self.security_version
    }
    /// When the bundle was made.
    pub fn created(&self) -> OffsetDateTime {
        self.created
    }
    /// Raw image size in bytes.
    pub fn image_size(&self) -> u64 {
        self.image_size
    }
    /// SHA-256 of the whole raw image.
    pub fn image_sha256(&self) -> Sha256Digest {
        self.image_sha256
    }
    /// Chunk size of the boot assets, and of the image before format version 3.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }
    /// Where the image is cut: fixed `chunk_size` blocks before format version 3.
    pub fn chunking(&self) -> Chunking {
        self.chunking
    }
    /// All chunks, in image order (none in a manifest read from a signing request: its index
    /// is not there; [`Manifest::chunk_count`] still says how many).
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }
    /// Number of the image's chunks.
    pub fn chunk_count(&self) -> u64 {
        self.chunk_count
    }
    /// The zstd dictionary the frames are compressed with, hash-checked (format version 3).
    pub fn dictionary(&self) -> Option<&[u8]> {
        self.dictionary.as_deref()
    }
    /// Boot assets, in manifest order (empty for a format-version-1 bundle).
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }
    /// The asset called `name`.
    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|a| a.name == name)
    }
    /// The bundle header.
    pub fn header(&self) -> &BundleHeader {
        &self.header
    }
    /// Absolute file offset of the payload.
    pub fn payload_offset(&self) -> u64 {
        self.header.payload_offset()
    }
    /// Payload length (sum of the frame lengths).
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }
    /// Exact length of the bundle file.
    pub fn file_len(&self) -> u64 {
        self.payload_offset() + self.payload_len + self.header.tail_len()
    }
    /// SHA-256 of the manifest region (what channel metadata names).
    pub fn manifest_sha256(&self) -> Sha256Digest {
        self.manifest_sha256
    }
    /// Key ids whose signature verified (empty when read unverified).
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }
    /// Number of all-zero chunks.
    pub fn zero_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_zero()).count()
    }
    /// Absolute byte range of a chunk's frame in the bundle file (for HTTP Range requests).
    pub fn chunk_file_range(&self, chunk: &Chunk) -> Option<Range<u64>> {
        let f = chunk.frame()?;
        let start = self.payload_offset() + f.offset;
        Some(start..start + f.length)
    }

    /// Records the key ids whose signatures verified (set by the verifier).
    pub(crate) fn set_signers(&mut self, signers: Vec<KeyId>) {
        self.signers = signers;
    }

    /// Validates the wire form against FORMAT §3 and the header; a version 3 manifest also
    /// against its dictionary and index (`tail`), whose records become the image's chunks.
    /// Without `tail` (a signing request carries none) a version 3 manifest has no chunks.
    pub(crate) fn from_doc(
        doc: ManifestDoc,
        header: BundleHeader,
        manifest_sha256: Sha256Digest,
        tail: Option<Tail<'_>>,
        limits: &Limits,
    ) -> Result<Manifest, FormatError> {
        let bad =
            |field: &str, reason: String| FormatError::field(Section::Manifest, field, reason);
        check_name("product", &doc.product).map_err(|e| bad("product", e))?;
        let version = parse_version(&doc.version).map_err(|e| bad("version", e))?;
        let created = parse_rfc3339(&doc.created)
            .ok_or_else(|| bad("created", "not an RFC 3339 time".into()))?;
        check_chunk_size(doc.chunk_size, limits)?;
        let mut next_offset = 0u64;
        let image = if header.version == FORMAT_VERSION_INDEX {
            indexed_image(&doc, &header, tail, &mut next_offset, limits)?
        } else {
            json_image(&doc, &mut next_offset, limits)?
        };
        let assets = build_assets(&doc, header.version, &mut next_offset, limits)?;
        let indexed = image.chunks.len() as u64 == image.count;
        if let Some(size) = doc
            .payload_size
            .filter(|&size| indexed && size != next_offset)
        {
            return Err(bad(
                "payload_size",
                format!("{size}, but the frames take {next_offset} bytes"),
            ));
        }
        Ok(Manifest {
            product: doc.product,
            version,
            security_version: doc.security_version,
            created,
            image_size: doc.image.size,
            image_sha256: doc.image.sha256,
            chunk_size: doc.chunk_size,
            chunking: image.chunking,
            chunk_count: image.count,
            chunks: image.chunks,
            dictionary: image.dictionary,
            assets,
            header,
            payload_len: next_offset,
            manifest_sha256,
            signers: Vec::new(),
        })
    }
}

/// The image's chunks and how they were cut and compressed.
struct ImageChunks {
    chunking: Chunking,
    count: u64,
    chunks: Vec<Chunk>,
    dictionary: Option<Arc<[u8]>>,
}

/// Versions 1 and 2: JSON entries of fixed-size chunks (FORMAT §3); no version 3 field.
fn json_image(
    doc: &ManifestDoc,
    next_offset: &mut u64,
    limits: &Limits,
) -> Result<ImageChunks, FormatError> {
    let only_v3 = [
        ("chunking", doc.chunking.is_some()),
        ("dictionary", doc.dictionary.is_some()),
        ("index", doc.index.is_some()),
        ("payload_size", doc.payload_size.is_some()),
    ];
    if let Some((field, _)) = only_v3.iter().find(|(_, present)| *present) {
        return Err(FormatError::field(
            Section::Manifest,
            *field,
            "only allowed in a format version 3 bundle",
        ));
    }
    let entries = doc.chunks.as_deref().ok_or_else(|| {
        FormatError::field(
            Section::Manifest,
            "chunks",
            "missing (format versions 1 and 2)",
        )
    })?;
    let chunks = build_chunks(
        entries,
        doc.image.size,
        doc.chunk_size,
        "chunks",
        next_offset,
        limits,
    )?;
    Ok(ImageChunks {
        chunking: Chunking::fixed(doc.chunk_size),
        count: chunks.len() as u64,
        chunks,
        dictionary: None,
    })
}

/// Version 3 (FORMAT §3.2): `chunking`, `index` and maybe `dictionary`, no `chunks`; the
/// stored dictionary and index must be exactly what the signed manifest names.
fn indexed_image(
    doc: &ManifestDoc,
    header: &BundleHeader,
    tail: Option<Tail<'_>>,
    next_offset: &mut u64,
    limits: &Limits,
) -> Result<ImageChunks, FormatError> {
    let bad = |field: &str, reason: String| FormatError::field(Section::Manifest, field, reason);
    if doc.chunks.is_some() {
        return Err(bad(
            "chunks",
            "not allowed in a format version 3 bundle (the index lists the chunks)".into(),
        ));
    }
    let chunking = doc
        .chunking
        .ok_or_else(|| bad("chunking", "missing (format version 3)".into()))?;
    chunking
        .check(limits.max_chunk_size)
        .map_err(|e| bad("chunking", e))?;
    let index = doc
        .index
        .as_ref()
        .ok_or_else(|| bad("index", "missing (format version 3)".into()))?;
    if index.count > limits.max_chunk_count {
        return Err(bad(
            "index.count",
            format!(
                "{} chunks, the limit is {}",
                index.count, limits.max_chunk_count
            ),
        ));
    }
    check_region_size("index", Some(index.size), header.index_len)?;
    check_dictionary_size(
        doc.dictionary.as_ref().map(|d| d.size),
        header.dictionary_len,
    )?;
    let payload_size = doc
        .payload_size
        .ok_or_else(|| bad("payload_size", "missing (format version 3)".into()))?;
    let Some(tail) = tail else {
        *next_offset = image_frames_end(doc, payload_size)?;
        return Ok(ImageChunks {
            chunking,
            count: index.count,
            chunks: Vec::new(),
            dictionary: None,
        });
    };
    // A short or long file is told as such, before its last bytes are taken for the index.
    let expected = header.payload_offset() + payload_size + header.tail_len();
    check_file_len(expected, tail.file_len)?;
    // Sizes were checked above; the bytes now, before the index is decompressed.
    check_region_hash("index", index.sha256, tail.index())?;
    if let Some(d) = &doc.dictionary {
        check_region_hash("dictionary", d.sha256, tail.dictionary())?;
    }
    let dictionary = doc
        .dictionary
        .as_ref()
        .map(|_| Arc::from(tail.dictionary()));
    let records = index::decode(tail.bytes, tail.dictionary_len, index.count)?;
    let max_frame_raw = u64::from(limits.max_chunk_size);
    let chunks = indexed_chunks(
        records,
        index.count,
        doc.image.size,
        chunking,
        next_offset,
        max_frame_raw,
    )?;
    Ok(ImageChunks {
        chunking,
        count: index.count,
        chunks,
        dictionary,
    })
}

/// Where the image's frames end when its index is not at hand (a signing request carries only
/// the manifest): the boot assets' frames follow them and end the payload (FORMAT §3.1, §3.2),
/// so it is `payload_size` less the assets' frame lengths.
fn image_frames_end(doc: &ManifestDoc, payload_size: u64) -> Result<u64, FormatError> {
    let assets = doc
        .assets
        .iter()
        .flatten()
        .flat_map(|a| &a.chunks)
        .filter_map(|c| c.length)
        .try_fold(0u64, u64::checked_add);
    assets
        .and_then(|len| payload_size.checked_sub(len))
        .ok_or_else(|| {
            FormatError::field(
                Section::Manifest,
                "payload_size",
                format!("{payload_size}, less than the boot assets' frames take"),
            )
        })
}

/// FORMAT §2: the file must be exactly as long as the manifest says.
pub(crate) fn check_file_len(expected: u64, actual: u64) -> Result<(), FormatError> {
    match actual.cmp(&expected) {
        std::cmp::Ordering::Less => Err(FormatError::Truncated { expected, actual }),
        std::cmp::Ordering::Greater => Err(FormatError::TrailingData { expected, actual }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// A region after the payload: its signed size (none: 0) must be the header's length.
fn check_region_size(
    field: &str,
    signed_size: Option<u64>,
    header_len: u32,
) -> Result<(), FormatError> {
    let size = signed_size.unwrap_or(0);
    if size != u64::from(header_len) {
        return Err(FormatError::field(
            Section::Manifest,
            field,
            format!("size {size}, but the header says {header_len} bytes are stored"),
        ));
    }
    Ok(())
}

/// FORMAT §3.2: the `dictionary` member is present exactly when the header's D > 0, and then
/// names D bytes (a member of size 0 over no stored bytes is refused, not taken for none).
fn check_dictionary_size(signed_size: Option<u64>, header_len: u32) -> Result<(), FormatError> {
    if signed_size.is_some() && header_len == 0 {
        return Err(FormatError::field(
            Section::Manifest,
            "dictionary",
            "present, but the header stores none (D = 0): the member is present exactly when D > 0",
        ));
    }
    check_region_size("dictionary", signed_size, header_len)
}

/// A region after the payload: its stored bytes must hash to the signed digest.
fn check_region_hash(field: &str, sha256: Sha256Digest, bytes: &[u8]) -> Result<(), FormatError> {
    let actual = Sha256Digest::of(bytes);
    if actual != sha256 {
        return Err(FormatError::field(
            Section::Manifest,
            field,
            format!(
                "the stored bytes hash to {}, the manifest says {}",
                actual.to_hex(),
                sha256.to_hex()
            ),
        ));
    }
    Ok(())
}

/// FORMAT §3.2: the records tile the image in order; every chunk but the last is a multiple of
/// 4 KiB between `min` and `max` (the last at most `max`). A record's frame length says where
/// its bytes are: 0, nowhere (all zeros); [`index::CONTINUED`], in the frame the record before
/// it is in; any other, in a new frame of that length, contiguous from `next_offset`. A frame's
/// chunks decompress to at most `max_frame_raw` bytes, from a frame within zstd's bound.
fn indexed_chunks(
    records: impl Iterator<Item = Result<Record, FormatError>>,
    count: u64,
    image_size: u64,
    chunking: Chunking,
    next_offset: &mut u64,
    max_frame_raw: u64,
) -> Result<Vec<Chunk>, FormatError> {
    let mut zeros = ZeroDigests::default();
    // Within the limit the manifest's count was checked against.
    let mut chunks: Vec<Chunk> = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut image_offset = 0u64;
    // The open frame and the raw bytes of its chunks so far.
    let mut open: Option<(StoredFrame, u64)> = None;
    for (i, record) in records.enumerate() {
        let record = record?;
        let bad =
            |reason: String| FormatError::field(Section::Index, format!("record {i}"), reason);
        let len = record.raw_len;
        let last = i as u64 + 1 == count;
        let sized =
            len >= 1 && len <= chunking.max && (last || (len >= chunking.min && len % ALIGN == 0));
        if !sized {
            return Err(bad(format!("raw length {len} breaks {chunking}")));
        }
        let zero = zeros.of(len);
        if record.frame_len != index::CONTINUED {
            close_frame(open.take()).map_err(bad)?;
        }
        let frame = match record.frame_len {
            0 if record.sha256 != zero => {
                return Err(bad("zero chunk whose sha256 is not that of zeros".into()))
            }
            0 => None,
            _ if record.sha256 == zero => {
                return Err(bad("stored chunk whose sha256 is that of zeros".into()))
            }
            index::CONTINUED => {
                let (frame, raw) = open
                    .as_mut()
                    .ok_or_else(|| bad("continues a frame, but follows no stored chunk".into()))?;
                *raw += u64::from(len);
                Some(*frame)
            }
            n => {
                let frame = StoredFrame {
                    offset: *next_offset,
                    length: u64::from(n),
                };
                *next_offset += u64::from(n);
                open = Some((frame, u64::from(len)));
                Some(frame)
            }
        };
        if open.is_some_and(|(_, raw)| raw > max_frame_raw) {
            return Err(bad(format!(
                "its frame holds more than {max_frame_raw} raw bytes"
            )));
        }
        let chunk =
            Chunk::new(i as u64, image_offset, len, record.sha256, frame).ok_or_else(|| {
                bad(format!(
                    "beyond the {} chunks a manifest can list",
                    u32::MAX
                ))
            })?;
        chunks.push(chunk);
        image_offset += u64::from(len);
    }
    close_frame(open).map_err(|reason| FormatError::field(Section::Index, "last frame", reason))?;
    if image_offset != image_size {
        return Err(FormatError::field(
            Section::Index,
            "",
            format!("the chunks cover {image_offset} bytes, the image has {image_size}"),
        ));
    }
    Ok(chunks)
}

/// A frame's length must be within zstd's bound of the raw bytes it holds.
fn close_frame(open: Option<(StoredFrame, u64)>) -> Result<(), String> {
    match open {
        Some((frame, raw)) if frame.length > max_frame_len_u64(raw) => Err(format!(
            "frame length {} above {} for {raw} raw bytes",
            frame.length,
            max_frame_len_u64(raw)
        )),
        _ => Ok(()),
    }
}

/// The consecutive chunks of one piece of a stream: one all-zero chunk, or every chunk of
/// one frame (FORMAT §3.2: several in version 3, one before). A frame's chunks are contiguous
/// in the image, so a piece decompresses to one contiguous range of it.
pub fn pieces(chunks: &[Chunk]) -> impl Iterator<Item = &[Chunk]> {
    chunks.chunk_by(|a, b| !a.is_zero() && a.frame() == b.frame())
}

/// SHA-256 of `n` zero bytes, computed once per length.
#[derive(Default)]
struct ZeroDigests(HashMap<u32, Sha256Digest>);

impl ZeroDigests {
    fn of(&mut self, n: u32) -> Sha256Digest {
        *self
            .0
            .entry(n)
            .or_insert_with(|| Sha256Digest::of_zeros(u64::from(n)))
    }
}

fn check_chunk_size(cs: u32, limits: &Limits) -> Result<(), FormatError> {
    if !cs.is_power_of_two() || cs < MIN_CHUNK_SIZE || cs > limits.max_chunk_size {
        return Err(FormatError::field(
            Section::Manifest,
            "chunk_size",
            format!(
                "{cs} is not a power of two between {MIN_CHUNK_SIZE} and {}",
                limits.max_chunk_size
            ),
        ));
    }
    Ok(())
}

/// Number of chunks of an image: `ceil(size / chunk_size)`.
pub(crate) fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size))
}

/// Largest frame a chunk of `len` raw bytes may have (zstd's compress bound).
pub fn max_frame_len(len: u32) -> u64 {
    max_frame_len_u64(u64::from(len))
}

/// [`max_frame_len`] of `raw` bytes, saturating where `usize` ends.
fn max_frame_len_u64(raw: u64) -> u64 {
    usize::try_from(raw).map_or(u64::MAX, |n| zstd::zstd_safe::compress_bound(n) as u64)
}

/// Chunks of one stream (the image or an asset) of `size` bytes; frames continue at
/// `next_offset`, which is left at the end of the last frame (FORMAT §3: contiguous).
fn build_chunks(
    entries: &[ChunkDoc],
    size: u64,
    cs: u32,
    field: &str,
    next_offset: &mut u64,
    limits: &Limits,
) -> Result<Vec<Chunk>, FormatError> {
    let count = chunk_count(size, cs);
    if count > limits.max_chunk_count || count != entries.len() as u64 {
        return Err(FormatError::field(
            Section::Manifest,
            field,
            format!(
                "{} entries; {size} bytes in chunks of {cs} need {count} (limit {})",
                entries.len(),
                limits.max_chunk_count
            ),
        ));
    }
    let zero_full = Sha256Digest::of_zeros(u64::from(cs));
    let mut chunks = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let index = i as u64;
        let image_offset = index * u64::from(cs);
        // Fits in u32: at most `cs`.
        let len = (size - image_offset).min(u64::from(cs)) as u32;
        let zero = if len == cs {
            zero_full
        } else {
            Sha256Digest::of_zeros(u64::from(len))
        };
        let at = format!("{field}[{index}]");
        let frame = chunk_frame(&at, entry, len, next_offset, &zero)?;
        let chunk = Chunk::new(index, image_offset, len, entry.sha256, frame).ok_or_else(|| {
            FormatError::field(
                Section::Manifest,
                at,
                "its index or frame length does not fit in 32 bits",
            )
        })?;
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// FORMAT §3.1: `assets` absent in version 1, present and non-empty in version 2; names
/// unique and valid; at most `max_assets`; the kind rules ([`check_asset_kinds`]); all chunks
/// together within `max_chunk_count`.
fn build_assets(
    doc: &ManifestDoc,
    version: u8,
    next_offset: &mut u64,
    limits: &Limits,
) -> Result<Vec<Asset>, FormatError> {
    let bad = |reason: String| FormatError::field(Section::Manifest, "assets", reason);
    let docs = match (version, &doc.assets) {
        (FORMAT_VERSION | FORMAT_VERSION_INDEX, None) => return Ok(Vec::new()),
        (FORMAT_VERSION_INDEX, Some(a)) if !a.is_empty() => a,
        (FORMAT_VERSION_INDEX, Some(_)) => {
            return Err(bad(
                "empty: a release without assets leaves the field out".into()
            ))
        }
        (FORMAT_VERSION, Some(_)) => {
            return Err(bad(format!(
                "not allowed in a format version {FORMAT_VERSION} bundle"
            )))
        }
        (_, Some(a)) if !a.is_empty() => a,
        _ => {
            return Err(bad(format!(
                "a format version {version} bundle must carry at least one asset"
            )))
        }
    };
    if docs.len() > limits.max_assets {
        return Err(bad(format!(
            "{} assets, the limit is {}",
            docs.len(),
            limits.max_assets
        )));
    }
    check_asset_kinds(docs.iter().map(|a| (a.kind, a.size))).map_err(bad)?;
    let mut total =
        doc.chunks.as_ref().map_or(0, Vec::len) as u64 + doc.index.as_ref().map_or(0, |i| i.count);
    let mut assets: Vec<Asset> = Vec::with_capacity(docs.len());
    for (i, a) in docs.iter().enumerate() {
        let field = format!("assets[{i}]");
        check_name("asset name", &a.name)
            .map_err(|e| FormatError::field(Section::Manifest, format!("{field}.name"), e))?;
        if assets.iter().any(|b| b.name == a.name) {
            return Err(bad(format!("asset name `{}` appears twice", a.name)));
        }
        total += a.chunks.len() as u64;
        if total > limits.max_chunk_count {
            return Err(bad(format!(
                "more than {} chunks in all",
                limits.max_chunk_count
            )));
        }
        let chunks = build_chunks(
            &a.chunks,
            a.size,
            doc.chunk_size,
            &format!("{field}.chunks"),
            next_offset,
            limits,
        )?;
        assets.push(Asset {
            name: a.name.clone(),
            kind: a.kind,
            size: a.size,
            sha256: a.sha256,
            chunks,
        });
    }
    Ok(assets)
}

fn chunk_frame(
    at: &str,
    e: &ChunkDoc,
    len: u32,
    next_offset: &mut u64,
    zero: &Sha256Digest,
) -> Result<Option<StoredFrame>, FormatError> {
    let bad = |reason: String| FormatError::field(Section::Manifest, at, reason);
    match (e.offset, e.length, e.zero) {
        (None, None, Some(true)) => {
            if e.sha256 != *zero {
                return Err(bad("zero chunk whose sha256 is not that of zeros".into()));
            }
            Ok(None)
        }
        (Some(_), Some(_), None) if e.sha256 == *zero => Err(bad(
            "stored chunk whose sha256 is that of zeros: an all-zero chunk MUST use the zero form"
                .into(),
        )),
        (Some(offset), Some(length), None) => {
            if offset != *next_offset {
                return Err(bad(format!(
                    "offset {offset}, frames must be contiguous: expected {next_offset}"
                )));
            }
            if length == 0 || length > max_frame_len(len) {
                return Err(bad(format!(
                    "frame length {length} outside 1..={}",
                    max_frame_len(len)
                )));
            }
            *next_offset = offset
                .checked_add(length)
                .ok_or_else(|| bad("offset overflows".into()))?;
            Ok(Some(StoredFrame { offset, length }))
        }
        _ => Err(bad(
            "needs either `offset` and `length`, or `zero: true`".into()
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_dictionary_member_is_present_exactly_when_one_is_stored() {
        assert!(check_dictionary_size(None, 0).is_ok());
        assert!(check_dictionary_size(Some(100), 100).is_ok());
        for (signed, stored) in [(Some(0), 0), (Some(100), 0), (None, 100), (Some(99), 100)] {
            match check_dictionary_size(signed, stored) {
                Err(FormatError::Field { field, .. }) => assert_eq!(field, "dictionary"),
                other => panic!("{signed:?} over D = {stored}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_chunk_is_60_bytes_and_keeps_what_it_was_given() {
        assert_eq!(std::mem::size_of::<Chunk>(), 60);
        let sha256 = Sha256Digest::of(b"x");
        let frame = StoredFrame {
            offset: 1 << 40,
            length: 300,
        };
        let c = Chunk::new(7, 1 << 33, 4096, sha256, Some(frame)).unwrap();
        assert_eq!(
            (c.index(), c.image_offset(), c.len(), c.sha256(), c.frame()),
            (7, 1 << 33, 4096, sha256, Some(frame))
        );
        assert_eq!(c.end(), (1 << 33) + 4096);
        assert!(!c.is_zero());
        let zero = Chunk::new(8, 0, 4096, sha256, None).unwrap();
        assert!(zero.is_zero() && zero.frame().is_none());
        let big = |index, length| {
            Chunk::new(index, 0, 1, sha256, Some(StoredFrame { offset: 0, length }))
        };
        assert!(big(1 << 32, 1).is_none(), "index past 32 bits");
        assert!(big(0, 1 << 32).is_none(), "frame length past 32 bits");
        assert!(big(0, 0).is_none(), "an empty frame");
    }
}
