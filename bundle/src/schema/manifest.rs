//! The bundle manifest (FORMAT §3): what the image is and where each chunk's zstd frame lies.

use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::chunking::Chunking;
use crate::digest::Sha256Digest;
use crate::error::{FormatError, Section};
use crate::header::{FORMAT_VERSION, FORMAT_VERSION_INDEX};
use crate::index::{
    build_chunks, check_dictionary_size, check_region_size, image_chunks, Chunk, ChunkDoc,
    ImageChunks, IndexedImage, StreamedIndex, Tail, Tree,
};
use crate::keys::KeyId;
use crate::limits::{Limits, MIN_CHUNK_SIZE};
use crate::role::{Role, RoleKind};
use crate::schema::names::{check_name, parse_version};
use crate::time_util::parse_rfc3339;
use crate::verity::{Verity, VerityDoc};
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
    /// The release's chunk store beside the bundle (format version 3, optional; FORMAT
    /// §3.4): the index's records then carry each chunk's store frame length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<BlobDoc>,
    /// The image's dm-verity tree (format version 3, optional; FORMAT §3.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<VerityDoc>,
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
    /// A tree index's layout (FORMAT §3.2.1): `sha256` then covers its lengths and table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeDoc>,
}

/// The layout of a tree index (FORMAT §3.2.1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §3).
#[allow(missing_docs)]
pub struct TreeDoc {
    pub group: u32,
    pub lengths: u64,
    pub table: u64,
}

impl TreeDoc {
    /// The layout this names.
    pub fn tree(&self) -> Tree {
        Tree {
            group: self.group,
            lengths: self.lengths,
            table: self.table,
        }
    }

    /// The wire form of `tree`.
    pub fn of(tree: Tree) -> TreeDoc {
        TreeDoc {
            group: tree.group,
            lengths: tree.lengths,
            table: tree.table,
        }
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
    streamed_index: Option<StreamedIndex>,
    assets: Vec<Asset>,
    verity: Option<Verity>,
    store: Option<ChunkStore>,
    header: BundleHeader,
    payload_len: u64,
    manifest_sha256: Sha256Digest,
    signers: Vec<KeyId>,
}

/// What the signed manifest says of a release's chunk store (FORMAT §3.4): a file beside
/// the bundle, every distinct stored chunk of the image once, each its own zstd frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkStore {
    /// Its exact length.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256Digest,
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
    /// is not there, nor when the index was left in the bundle to be streamed:
    /// [`Manifest::streamed_index`]; [`Manifest::chunk_count`] still says how many).
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }
    /// The image's index when it was left in the bundle (a head read with
    /// [`Limits::max_index_in_head`] below its length): its chunks come from an
    /// [`crate::index::IndexFile`] spilled from the bundle, not from [`Manifest::chunks`].
    pub fn streamed_index(&self) -> Option<&StreamedIndex> {
        self.streamed_index.as_ref()
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
    /// The image's dm-verity parameters, when it carries its hash tree (FORMAT §3.3).
    pub fn verity(&self) -> Option<&Verity> {
        self.verity.as_ref()
    }
    /// The release's chunk store, when it has one: the image's chunks then also name their
    /// own frame in it ([`Chunk::store`]).
    pub fn store(&self) -> Option<ChunkStore> {
        self.store
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
        let verity = doc
            .verity
            .as_ref()
            .map(|v| Verity::from_doc(v, doc.image.size))
            .transpose()
            .map_err(|e| bad("verity", e))?;
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
            streamed_index: image.streamed,
            assets,
            verity,
            store: doc.store.as_ref().map(|s| ChunkStore {
                size: s.size,
                sha256: s.sha256,
            }),
            header,
            payload_len: next_offset,
            manifest_sha256,
            signers: Vec::new(),
        })
    }
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
        ("verity", doc.verity.is_some()),
        ("store", doc.store.is_some()),
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
        streamed: None,
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
    let tree = index.tree.map(|t| t.tree());
    if let Some(tree) = tree {
        tree.check(index.size).map_err(|e| bad("index.tree", e))?;
    }
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
            streamed: None,
        });
    };
    // A short or long file is told as such, before its last bytes are taken for the index.
    let expected = header.payload_offset() + payload_size + header.tail_len();
    check_file_len(expected, tail.file_len)?;
    // Sizes were checked above; the bytes now, before the index is decompressed.
    let image = IndexedImage {
        image_size: doc.image.size,
        chunking,
        count: index.count,
        index_sha256: index.sha256,
        index_len: index.size,
        tree,
        dictionary_sha256: doc.dictionary.as_ref().map(|d| d.sha256),
        store_size: doc.store.as_ref().map(|s| s.size),
    };
    let max_frame_raw = u64::from(limits.max_chunk_size);
    if tail.index_streamed {
        // The boot assets' frames follow the image's: the signed payload size says where
        // the image's end, which the streamed records are held to.
        *next_offset = image_frames_end(doc, payload_size)?;
    }
    image_chunks(&image, tail, next_offset, max_frame_raw)
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
