//! The signing pipeline (FORMAT §2–§5), writing format version 3. One pass over the image, no
//! second copy of the payload: the header, a manifest region sized from an upper bound and a
//! reserved signature block are laid out first; frames are appended as they come, then the
//! dictionary and the chunk index; then the header, the manifest (padded with spaces to its
//! reserved length) and the signatures are written back in place.
//!
//! Threads ([`pipeline::ordered_map`]): a reader cuts the image into chunks ([`Chunking`]) and
//! hashes the whole image as it goes; workers detect all-zero chunks, hash and compress the
//! others, each with its own zstd context holding the dictionary; this thread writes frames in
//! order. The pipeline's window and recycled buffers bound memory whatever the image size.

use std::collections::HashSet;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::sync::mpsc::{channel, Receiver};

use pipeline::Shape;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::bundle::header::{BundleHeader, FORMAT_VERSION_INDEX};
use crate::bundle::index::{self, Record, TreeFiles, TreeWriter, GROUP};
use crate::bundle::previous::PreviousChunks;
use crate::chunking::{ChunkStream, Chunking};
use crate::digest::Sha256Digest;
use crate::error::{Error, UsageError};
use crate::keys::Signature;
use crate::keys::{check_distinct, sign_bytes, KeyId, Signer};
use crate::limits::{Limits, MIN_CHUNK_SIZE};
use crate::role::RoleKind;
use crate::schema::{
    check_asset_kinds, check_name, encode_signature_block, max_frame_len, parse_version, AssetDoc,
    AssetKind, BlobDoc, ChunkDoc, ImageDoc, IndexDoc, ManifestDoc, TreeDoc,
};
use crate::time_util::format_rfc3339;
use bundle::canonical;

/// What to put in the manifest and how to compress.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// Product (compatible string).
    pub product: String,
    /// Release version.
    pub version: semver::Version,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// Creation time recorded in the manifest.
    pub created: OffsetDateTime,
    /// Where the image is cut (FORMAT §3.2). Default [`Chunking::DEFAULT`], 4 KiB blocks.
    pub chunking: Chunking,
    /// The boot assets' chunk size: a power of two, at least 4 KiB. Default 1 MiB.
    pub chunk_size: u32,
    /// A zstd dictionary for every frame ([`train_dictionary`]), stored in the bundle and
    /// named in the manifest. Default none.
    pub dictionary: Option<Vec<u8>>,
    /// The chunks nodes already hold: those of the releases in the field. The image's chunks among them are compressed together in frames
    /// of up to 1 MiB (nodes reuse them, full installs read them); the others, what an update
    /// from those releases fetches, in frames of their own runs. Default none: every frame
    /// holds up to 1 MiB of chunks.
    pub previous: PreviousChunks,
    /// Most raw bytes of the image's chunks one frame holds (at least one chunk). Default
    /// 1 MiB: about zstd's window at level 3, so sharing frames costs little compression.
    pub frame_bytes: u32,
    /// zstd level. Default 3.
    pub level: i32,
    /// Compression threads; 0 means one per CPU. Default 0.
    pub workers: usize,
    /// Minimum signature block reservation. Default 4096 (room for about 18 signatures).
    pub signature_block_len: u32,
    /// The image's dm-verity parameters, when it ends with its hash area
    /// ([`crate::verity`]; FORMAT §3.3). Default none.
    pub verity: Option<::bundle::verity::VerityDoc>,
}

impl SignOptions {
    /// Options with the defaults above.
    pub fn new(
        product: impl Into<String>,
        version: semver::Version,
        security_version: u64,
        created: OffsetDateTime,
    ) -> Self {
        SignOptions {
            product: product.into(),
            version,
            security_version,
            created,
            chunking: Chunking::DEFAULT,
            chunk_size: 1 << 20,
            dictionary: None,
            previous: PreviousChunks::default(),
            frame_bytes: 1 << 20,
            level: 3,
            workers: 0,
            signature_block_len: 4096,
            verity: None,
        }
    }
}

/// What [`sign_bundle`] wrote.
#[derive(Debug, Clone)]
pub struct SignSummary {
    /// SHA-256 of the manifest region.
    pub manifest_sha256: Sha256Digest,
    /// SHA-256 of the raw image.
    pub image_sha256: Sha256Digest,
    /// Number of the image's chunks.
    pub chunks: u64,
    /// Number of the image's all-zero chunks (not stored).
    pub zero_chunks: u64,
    /// Payload length.
    pub payload_len: u64,
    /// Total bundle length.
    pub file_len: u64,
    /// The chunk store's length, when one was written.
    pub store_len: Option<u64>,
    /// Who signed.
    pub signers: Vec<KeyId>,
}

/// A boot asset to sign into the bundle besides the image (FORMAT §3.1).
pub struct AssetSource<'a> {
    /// Its name (a name by `proto::check_name`, unique in the bundle).
    pub name: String,
    /// What it is.
    pub kind: AssetKind,
    /// Exactly how many bytes `reader` yields.
    pub size: u64,
    /// The raw bytes.
    pub reader: Box<dyn Read + Send + 'a>,
}

/// Everything a release carries: the root image and, optionally, boot assets.
pub struct Sources<'a, R> {
    /// The raw root image.
    pub image: R,
    /// Exactly how many bytes `image` yields.
    pub image_size: u64,
    /// Boot assets, in the order they are stored; none makes a format-version-1 bundle.
    pub assets: Vec<AssetSource<'a>>,
}

/// Signs `image` (exactly `image_size` bytes) into a bundle written to `out` from its current
/// start (position 0). `progress` gets the raw bytes done so far.
pub fn sign_bundle<R: Read + Send, W: Write + Seek, K: Signer>(
    image: R,
    image_size: u64,
    out: &mut W,
    opts: &SignOptions,
    keys: &[K],
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<SignSummary, Error> {
    let sources = Sources {
        image,
        image_size,
        assets: Vec::new(),
    };
    sign_release(sources, out, None, opts, keys, limits, progress)
}

/// Signs the image and its boot assets into one bundle (FORMAT §3.1, §3.2): the image's
/// frames first, then each asset's, through the same parallel pipeline. An asset list that breaks
/// §3.1 (names, one asset per boot kind, `kernel` with `initrd`, not with `uki`) or a
/// `cmdline` asset whose text breaks [`proto::check_cmdline`] is a [`UsageError`], refused
/// before anything is written.
///
/// With `store`, the release's chunk store is written there too (FORMAT §3.4):
/// every distinct stored chunk of the image once, in image order of its first occurrence,
/// each its own zstd frame (with the bundle's dictionary, when it has one); the index's
/// records then carry each chunk's store frame length, and the manifest the store's size
/// and SHA-256.
pub fn sign_release<R: Read + Send, W: Write + Seek, K: Signer>(
    mut sources: Sources<'_, R>,
    out: &mut W,
    store: Option<&mut dyn Write>,
    opts: &SignOptions,
    keys: &[K],
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<SignSummary, Error> {
    check_options(opts, keys, limits)?;
    check_assets(&sources, opts.chunk_size, limits)?;
    for source in &mut sources.assets {
        check_cmdline_text(source)?;
    }
    let created = format_rfc3339(opts.created);
    let count = checked_chunk_count(sources.image_size, opts.chunking, limits)?;
    let mut doc = manifest_doc(opts, &created, sources.image_size, &sources.assets, count);
    doc.store = store.is_some().then_some(BlobDoc {
        sha256: Sha256Digest([0; 32]),
        size: u64::MAX,
    });
    let manifest_len = manifest_bound(opts, &doc, asset_chunks(&sources, opts), limits)?;
    let signature_block_len = signature_reserve(keys.len(), opts.signature_block_len, limits)?;
    let mut header = BundleHeader {
        version: FORMAT_VERSION_INDEX,
        manifest_len,
        signature_block_len,
        dictionary_len: 0,
        index_len: 0,
    };
    let io = |what: &'static str| Error::io(format!("writing the bundle {what}"));
    out.seek(SeekFrom::Start(header.payload_offset()))
        .map_err(io("payload"))?;

    // The image's records go to temporary files as its chunks are written, never held (16 Mi
    // chunks would be 640 MiB of records): memory stays flat.
    let mut payload = Payload {
        index: Some(TreeWriter::new(GROUP, store.is_some(), tree_files()?)?),
        store: store.map(StoreWriter::new),
        ..Payload::default()
    };
    // The image's chunks share frames (FORMAT §3.2); an asset's are one frame each (§3.1).
    let mut stream =
        |reader: &mut (dyn Read + Send), size: u64, chunking, payload: &mut Payload| {
            let image = payload.raw == 0;
            let plan = Plan {
                size,
                chunking,
                level: opts.level,
                dictionary: opts.dictionary.as_deref(),
                previous: image.then_some(&opts.previous),
                store: image && payload.store.is_some(),
                frame_bytes: opts.frame_bytes as usize,
                workers: worker_count(opts.workers),
            };
            let base = payload.raw;
            let sha = run_pipeline(reader, &plan, out, payload, &mut |n| progress(base + n))?;
            Ok::<_, Error>((sha, std::mem::take(&mut payload.entries)))
        };
    let mut image = sources.image;
    let (image_sha256, _) = stream(&mut image, sources.image_size, opts.chunking, &mut payload)?;
    let image_zero_chunks = payload.zero_chunks;
    doc.store = payload.store.take().map(StoreWriter::finish).transpose()?;
    let store_len = doc.store.as_ref().map(|s| s.size);
    let index = payload
        .index
        .take()
        .ok_or(Error::Bug("the image's records went nowhere"))?;
    doc.image.sha256 = image_sha256;
    let asset_chunking = Chunking::fixed(opts.chunk_size);
    for (mut src, asset) in sources
        .assets
        .into_iter()
        .zip(doc.assets.iter_mut().flatten())
    {
        let (sha256, entries) = stream(&mut src.reader, src.size, asset_chunking, &mut payload)?;
        asset.sha256 = sha256;
        asset.chunks = entries.iter().map(Entry::chunk_doc).collect();
    }

    let dictionary = opts.dictionary.as_deref().unwrap_or_default();
    out.write_all(dictionary).map_err(io("dictionary"))?;
    let index = index.finish_into(out)?;
    let (count, index_len) = (index.count, index.size);
    header.dictionary_len = region_len(
        dictionary.len() as u64,
        "dictionary",
        limits.max_dictionary_len,
    )?;
    header.index_len = region_len(index_len, "chunk index", limits.max_index_len)?;
    doc.dictionary = opts.dictionary.as_deref().map(|d| BlobDoc {
        sha256: Sha256Digest::of(d),
        size: d.len() as u64,
    });
    doc.payload_size = Some(payload.len);
    doc.index = Some(IndexDoc {
        count,
        sha256: index.sha256,
        size: index_len,
        tree: Some(TreeDoc::of(index.tree)),
    });

    let manifest = pad(canonical::to_vec(&doc)?, manifest_len as usize)?;
    let signatures = sign_bytes(RoleKind::Bundle, &manifest, keys)?;
    let block = encode_signature_block(&signatures, signature_block_len as usize)?
        .ok_or(Error::Bug("signature block reservation too small"))?;
    out.seek(SeekFrom::Start(0)).map_err(io("header"))?;
    out.write_all(&header.encode()).map_err(io("header"))?;
    out.write_all(&manifest).map_err(io("manifest"))?;
    out.write_all(&block).map_err(io("signature block"))?;
    out.flush().map_err(io("end"))?;
    Ok(SignSummary {
        manifest_sha256: Sha256Digest::of(&manifest),
        image_sha256,
        chunks: count,
        zero_chunks: image_zero_chunks,
        payload_len: payload.len,
        file_len: header.payload_offset() + payload.len + header.tail_len(),
        store_len,
        signers: signatures.iter().map(|s| s.keyid).collect(),
    })
}

/// The length of a region stored after the payload, within its limit.
fn region_len(len: u64, what: &str, max: u32) -> Result<u32, Error> {
    match u32::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(UsageError::invalid(format!(
            "the {what} is {len} bytes, above the {max}-byte limit: use larger --chunking sizes"
        ))
        .into()),
    }
}

/// Three unnamed temporary files for a tree index's parts.
fn tree_files() -> Result<TreeFiles, Error> {
    let file = || tempfile::tempfile().map_err(Error::io("creating a file for the chunk index"));
    Ok(TreeFiles {
        lengths: file()?,
        column: file()?,
        table: file()?,
    })
}

/// The manifest with every field but the chunk lists and digests (filled in as streams end);
/// the index and dictionary fields hold placeholders as wide as their final values can be,
/// for [`manifest_bound`].
fn manifest_doc(
    opts: &SignOptions,
    created: &str,
    image_size: u64,
    assets: &[AssetSource<'_>],
    max_chunks: u64,
) -> ManifestDoc {
    let assets = assets
        .iter()
        .map(|a| AssetDoc {
            chunks: Vec::new(),
            kind: a.kind,
            name: a.name.clone(),
            sha256: Sha256Digest([0; 32]),
            size: a.size,
        })
        .collect::<Vec<_>>();
    ManifestDoc {
        assets: (!assets.is_empty()).then_some(assets),
        chunk_size: opts.chunk_size,
        chunking: Some(opts.chunking),
        chunks: None,
        created: created.to_owned(),
        dictionary: opts.dictionary.as_ref().map(|d| BlobDoc {
            sha256: Sha256Digest([0; 32]),
            size: d.len() as u64,
        }),
        image: ImageDoc {
            sha256: Sha256Digest([0; 32]),
            size: image_size,
        },
        index: Some(IndexDoc {
            count: max_chunks,
            sha256: Sha256Digest([0; 32]),
            size: u64::from(u32::MAX),
            tree: Some(TreeDoc {
                group: GROUP,
                lengths: u64::from(u32::MAX),
                table: u64::from(u32::MAX),
            }),
        }),
        payload_size: Some(u64::MAX),
        product: opts.product.clone(),
        security_version: opts.security_version,
        store: None,
        verity: opts.verity.clone(),
        version: opts.version.to_string(),
    }
}

/// How many JSON chunk entries the assets make.
fn asset_chunks<R>(sources: &Sources<'_, R>, opts: &SignOptions) -> u64 {
    let cs = u64::from(opts.chunk_size);
    sources.assets.iter().map(|a| a.size.div_ceil(cs)).sum()
}

/// Asset names valid and unique, within `max_assets` and, with the image, `max_chunk_count`.
fn check_assets<R>(sources: &Sources<'_, R>, cs: u32, limits: &Limits) -> Result<(), Error> {
    if sources.assets.len() > limits.max_assets {
        return Err(UsageError::invalid(format!(
            "{} boot assets, the limit is {}",
            sources.assets.len(),
            limits.max_assets
        ))
        .into());
    }
    for (i, a) in sources.assets.iter().enumerate() {
        check_name("asset name", &a.name).map_err(UsageError::invalid)?;
        if sources.assets.iter().take(i).any(|b| b.name == a.name) {
            return Err(
                UsageError::invalid(format!("asset name `{}` is used twice", a.name)).into(),
            );
        }
    }
    check_asset_kinds(sources.assets.iter().map(|a| (a.kind, a.size)))
        .map_err(UsageError::invalid)?;
    let total = sources.assets.iter().fold(0u64, |n, a| {
        n.saturating_add(a.size.div_ceil(u64::from(cs)))
    });
    if total > limits.max_chunk_count {
        return Err(UsageError::invalid(format!(
            "the assets make {total} chunks, more than the limit of {}: use a larger --chunk-size",
            limits.max_chunk_count
        ))
        .into());
    }
    Ok(())
}

/// A `cmdline` asset's text must pass [`proto::check_cmdline`] (FORMAT §3.1): it is read here,
/// at most [`proto::MAX_CMDLINE`] bytes as [`check_assets`] made sure, and checked before
/// anything is written; the pipeline then reads the checked copy.
fn check_cmdline_text(source: &mut AssetSource<'_>) -> Result<(), Error> {
    if source.kind != AssetKind::Cmdline {
        return Ok(());
    }
    let mut bytes = Vec::new();
    (&mut source.reader)
        .take(source.size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Error::io(format!("reading boot asset `{}`", source.name)))?;
    if bytes.len() as u64 != source.size {
        return Err(UsageError::invalid(format!(
            "boot asset `{}` has {} bytes, not the {} its size says",
            source.name,
            bytes.len(),
            source.size
        ))
        .into());
    }
    let text = proto::cmdline_text(&bytes)
        .map_err(|e| UsageError::invalid(format!("boot asset `{}`: {e}", source.name)))?;
    source.reader = Box::new(Cursor::new(text.into_bytes()));
    Ok(())
}

fn check_options<K: Signer>(opts: &SignOptions, keys: &[K], limits: &Limits) -> Result<(), Error> {
    check_name("product", &opts.product).map_err(UsageError::invalid)?;
    parse_version(&opts.version.to_string()).map_err(UsageError::invalid)?;
    let cs = opts.chunk_size;
    if !cs.is_power_of_two() || !(MIN_CHUNK_SIZE..=limits.max_chunk_size).contains(&cs) {
        return Err(UsageError::invalid(format!(
            "chunk size {cs} must be a power of two between {MIN_CHUNK_SIZE} (4KiB) and {} bytes",
            limits.max_chunk_size
        ))
        .into());
    }
    opts.chunking
        .check(limits.max_chunk_size)
        .map_err(|e| UsageError::invalid(format!("chunking: {e}")))?;
    if !zstd::compression_level_range().contains(&opts.level) {
        return Err(UsageError::invalid(format!(
            "zstd level {} is outside {:?}",
            opts.level,
            zstd::compression_level_range()
        ))
        .into());
    }
    Ok(check_distinct(keys)?)
}

/// The most chunks `chunking` can cut `size` bytes into (every one `min` bytes long), within
/// the limit.
fn checked_chunk_count(size: u64, chunking: Chunking, limits: &Limits) -> Result<u64, Error> {
    let count = size.div_ceil(u64::from(chunking.min));
    if count > limits.max_chunk_count {
        return Err(UsageError::invalid(format!(
            "an image of {size} bytes may make {count} chunks ({chunking}), more than the limit of {}: use larger --chunking sizes",
            limits.max_chunk_count
        ))
        .into());
    }
    Ok(count)
}

/// Upper bound of the manifest's canonical length, from its fixed fields and the widest
/// possible asset chunk entry (FORMAT §3: the manifest region is then padded to exactly this).
fn manifest_bound(
    opts: &SignOptions,
    fixed: &ManifestDoc,
    count: u64,
    limits: &Limits,
) -> Result<u32, Error> {
    let widest = ChunkDoc {
        length: Some(max_frame_len(opts.chunk_size)),
        offset: Some(u64::MAX),
        sha256: Sha256Digest([0; 32]),
        zero: None,
    };
    let zero = ChunkDoc {
        length: None,
        offset: None,
        sha256: Sha256Digest([0; 32]),
        zero: Some(true),
    };
    let entry = canonical::to_vec(&widest)?
        .len()
        .max(canonical::to_vec(&zero)?.len()) as u64
        + 1;
    let bound = canonical::to_vec(fixed)?.len() as u64 + entry * count;
    match u32::try_from(bound) {
        Ok(b) if b <= limits.max_manifest_len => Ok(b),
        _ => Err(UsageError::invalid(format!(
            "the manifest for {count} asset chunks could reach {bound} bytes, above the {}-byte limit: use a larger --chunk-size",
            limits.max_manifest_len
        ))
        .into()),
    }
}

/// Signature block length: the requested minimum, grown in 4 KiB steps to fit `keys` signatures.
fn signature_reserve(keys: usize, min: u32, limits: &Limits) -> Result<u32, Error> {
    let dummy = vec![
        Signature {
            keyid: KeyId([0; 32]),
            sig: [0; 64]
        };
        keys
    ];
    let need = canonical::to_vec(&serde_json::json!({ "signatures": dummy }))?.len() as u64;
    let len = u64::from(min.max(2)).max(need.div_ceil(4096) * 4096);
    match u32::try_from(len) {
        Ok(l) if l <= limits.max_signature_block_len => Ok(l),
        _ => Err(UsageError::invalid(format!(
            "{keys} signatures need a {len}-byte signature block, above the limit"
        ))
        .into()),
    }
}

fn pad(mut bytes: Vec<u8>, len: usize) -> Result<Vec<u8>, Error> {
    if bytes.len() > len {
        return Err(Error::Bug("manifest longer than its computed bound"));
    }
    bytes.resize(len, b' ');
    Ok(bytes)
}

fn worker_count(requested: usize) -> usize {
    match requested {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
}

struct Plan<'a> {
    size: u64,
    chunking: Chunking,
    level: i32,
    dictionary: Option<&'a [u8]>,
    /// For the image: chunks nodes hold, which decides how chunks share frames. `None`: one
    /// frame per chunk (boot assets).
    previous: Option<&'a PreviousChunks>,
    /// Whether each stored chunk is also compressed alone, for the chunk store.
    store: bool,
    /// Most raw bytes in a batch, and so in a frame.
    frame_bytes: usize,
    workers: usize,
}

impl Plan<'_> {
    /// Batches in flight: enough to keep every worker busy, within about 40 MiB.
    fn shape(&self) -> Shape {
        let per_slot = 2 * self.batch_bytes() + 4096;
        let window = (40usize << 20)
            .checked_div(per_slot)
            .unwrap_or(1)
            .min(2 * self.workers + 2)
            .max(self.workers + 1);
        Shape {
            workers: self.workers,
            window,
        }
    }

    /// Raw bytes of a batch: chunks go through the pipeline in batches (a frame never spans
    /// two), so 4 KiB chunks do not pay the threads' hand-over cost each.
    fn batch_bytes(&self) -> usize {
        (self.chunking.max as usize).max(self.frame_bytes)
    }

    fn compressor(&self) -> Result<zstd::bulk::Compressor<'static>, Error> {
        let made = match self.dictionary {
            Some(dictionary) => zstd::bulk::Compressor::with_dictionary(self.level, dictionary),
            None => zstd::bulk::Compressor::new(self.level),
        };
        made.map_err(Error::io("creating a zstd compressor"))
    }
}

/// A batch of consecutive chunks: their raw bytes end to end, each one's length, and once
/// compressed their frames end to end with each chunk's place in them. Recycled through the
/// pipeline, so the signer allocates at most one per item of the window whatever the image
/// size.
#[derive(Default)]
struct Batch {
    raw: Vec<u8>,
    lens: Vec<usize>,
    frames: Vec<u8>,
    /// Per chunk: its hash and where its bytes are.
    done: Vec<(Sha256Digest, Place)>,
    /// With a chunk store: each stored chunk's own frame, end to end, and per chunk its
    /// length (0 for an all-zero chunk).
    store_frames: Vec<u8>,
    store_lens: Vec<u32>,
}

/// Where a chunk's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Nowhere: all zeros.
    Zero,
    /// At the start of a frame of this many bytes.
    Starts(u32),
    /// In the frame of the chunk before it.
    Continues,
}

/// One chunk written: its hash, raw length, place and its frame's payload offset.
struct Entry {
    sha256: Sha256Digest,
    raw_len: u32,
    place: Place,
    frame_offset: u64,
    /// Its own frame's length in the chunk store (0: not there).
    store_len: u32,
}

impl Entry {
    fn record(&self) -> Record {
        Record {
            sha256: self.sha256,
            raw_len: self.raw_len,
            frame_len: match self.place {
                Place::Zero => 0,
                Place::Starts(n) => n,
                Place::Continues => index::CONTINUED,
            },
            store_len: self.store_len,
        }
    }

    /// The JSON entry of an asset chunk, always a frame of its own.
    fn chunk_doc(&self) -> ChunkDoc {
        let frame = match self.place {
            Place::Starts(n) => Some(u64::from(n)),
            Place::Zero | Place::Continues => None,
        };
        ChunkDoc {
            length: frame,
            offset: frame.map(|_| self.frame_offset),
            sha256: self.sha256,
            zero: frame.is_none().then_some(true),
        }
    }
}

/// What the streams wrote so far: the current stream's chunks, the payload length (where the
/// next frame goes), all-zero chunks and raw bytes done in all.
#[derive(Default)]
struct Payload<'s> {
    entries: Vec<Entry>,
    /// Where the image's records go as its chunks are written (the assets' stay in
    /// `entries`, for their JSON chunk entries).
    index: Option<TreeWriter>,
    /// Where the image's distinct chunks go, each its own frame (with a chunk store).
    store: Option<StoreWriter<'s>>,
    len: u64,
    zero_chunks: u64,
    raw: u64,
}

/// The chunk store as it is written (FORMAT §3.4): each distinct chunk's frame once, in the
/// order chunks first occur, hashed as it goes. A chunk is known by the first 8 bytes of its
/// hash (8 bytes a distinct chunk, not 32): two chunks that share them keep the first one's
/// frame only, and the second's record says 0, "fetch its bundle frame" — a cost, never a
/// wrong byte, as every store frame is checked against its own record's hash.
struct StoreWriter<'s> {
    out: &'s mut dyn Write,
    hasher: Sha256,
    len: u64,
    seen: HashSet<u64>,
}

/// Distinct chunks the store remembers, to store a repeat of them once: about 9 MiB of set
/// (2 GiB of 4 KiB chunks). A repeat of a chunk first seen later is stored again: a few more
/// store bytes, never memory that grows with the image.
const SEEN_MAX: usize = 512 << 10;

impl<'s> StoreWriter<'s> {
    fn new(out: &'s mut dyn Write) -> Self {
        StoreWriter {
            out,
            hasher: Sha256::new(),
            len: 0,
            seen: HashSet::new(),
        }
    }

    /// Stores `frame`, the chunk `sha256`'s own, unless an earlier chunk was that one:
    /// the length stored (0: not stored).
    fn put(&mut self, sha256: Sha256Digest, frame: &[u8]) -> Result<u32, Error> {
        let key = sha256.key();
        if self.seen.contains(&key) {
            return Ok(0);
        }
        if self.seen.len() < SEEN_MAX {
            self.seen.insert(key);
        }
        self.out
            .write_all(frame)
            .map_err(Error::io("writing the chunk store"))?;
        self.hasher.update(frame);
        self.len += frame.len() as u64;
        // One chunk's frame, within zstd's bound of at most 16 MiB.
        Ok(frame.len() as u32)
    }

    /// The store's size and hash, for the manifest.
    fn finish(self) -> Result<BlobDoc, Error> {
        self.out
            .flush()
            .map_err(Error::io("writing the chunk store"))?;
        Ok(BlobDoc {
            sha256: Sha256Digest(self.hasher.finalize().into()),
            size: self.len,
        })
    }
}

/// Cuts the image into chunks on the pipeline's reader thread, hashing the whole image on the
/// way, and hands them on in batches, in buffers the sink gave back when there are some.
struct ImageChunks<'a, R> {
    stream: ChunkStream<R>,
    plan: &'a Plan<'a>,
    hasher: &'a mut Sha256,
    recycled: Receiver<Batch>,
    chunk: Vec<u8>,
}

impl<R: Read> ImageChunks<'_, R> {
    fn read(&mut self) -> Result<Option<Batch>, Error> {
        let mut batch = self.recycled.try_recv().unwrap_or_default();
        batch.raw.clear();
        batch.lens.clear();
        while batch.raw.len() < self.plan.frame_bytes && self.next_chunk()? {
            batch.raw.extend_from_slice(&self.chunk);
            batch.lens.push(self.chunk.len());
        }
        Ok((!batch.lens.is_empty()).then_some(batch))
    }

    fn next_chunk(&mut self) -> Result<bool, Error> {
        let more = self.stream.next_into(&mut self.chunk).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Usage(UsageError::invalid(format!(
                    "the image ended before its announced size of {} bytes (did it change while signing?)",
                    self.plan.size
                )))
            } else {
                Error::io("reading the image")(e)
            }
        })?;
        if more {
            self.hasher.update(&self.chunk);
        }
        Ok(more)
    }
}

impl<R: Read> Iterator for ImageChunks<'_, R> {
    type Item = Result<Batch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read().transpose()
    }
}

/// Reads one stream, compresses on `plan.workers` threads (each keeping its zstd context) and
/// writes frames in chunk order after those already in `payload`; returns the stream's hash.
fn run_pipeline<R: Read + Send, W: Write>(
    image: R,
    plan: &Plan<'_>,
    out: &mut W,
    payload: &mut Payload<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Sha256Digest, Error> {
    let mut hasher = Sha256::new();
    let (recycle, recycled) = channel::<Batch>();
    let chunks = ImageChunks {
        stream: plan.chunking.split(image, plan.size),
        plan,
        hasher: &mut hasher,
        recycled,
        chunk: Vec::with_capacity(plan.chunking.max as usize),
    };
    let zero_full = Sha256Digest::of_zeros(u64::from(plan.chunking.max));
    let mut bytes_done = 0u64;
    pipeline::ordered_map(
        chunks,
        plan.shape(),
        || Ok((plan.compressor()?, Vec::new())),
        |(cctx, scratch), batch| compress_batch(cctx, scratch, batch, plan, zero_full),
        |batch| {
            bytes_done += batch.raw.len() as u64;
            append(out, payload, &batch)?;
            progress(bytes_done);
            // The reader may have finished: then the buffer is simply dropped.
            let _ = recycle.send(batch);
            Ok(())
        },
    )?;
    payload.raw += bytes_done;
    Ok(Sha256Digest(hasher.finalize().into()))
}

/// How a chunk is stored, as far as sharing a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// All zeros: not stored.
    Zero,
    /// A frame of its own (a boot asset's chunk).
    Alone,
    /// A frame shared with the next chunks of the same kind: those the previous releases
    /// hold (`true`), or those they lack.
    Shared(bool),
}

/// Per chunk of the batch: zero check and hash; then each run of chunks of one shared group
/// compressed into one frame, every other chunk alone. `zero_full` is the digest of `max`
/// zeros; `scratch` is the worker's frame buffer.
fn compress_batch(
    cctx: &mut zstd::bulk::Compressor<'static>,
    scratch: &mut Vec<u8>,
    mut batch: Batch,
    plan: &Plan<'_>,
    zero_full: Sha256Digest,
) -> Result<Batch, Error> {
    batch.frames.clear();
    batch.done.clear();
    batch.store_lens.clear();
    let chunks = classify(&batch, plan, zero_full);
    if plan.store {
        compress_alone(cctx, scratch, &mut batch, &chunks)?;
    }
    let mut at = 0;
    let shares = |a: &(Sha256Digest, usize, Group), b: &(Sha256Digest, usize, Group)| {
        matches!(a.2, Group::Shared(_)) && a.2 == b.2
    };
    for run in chunks.chunk_by(shares) {
        let len: usize = run.iter().map(|c| c.1).sum();
        let raw = batch.raw.get(at..at + len).unwrap_or_default();
        at += len;
        let Some(((sha256, _, group), rest)) = run.split_first() else {
            continue;
        };
        if *group == Group::Zero {
            batch.done.push((*sha256, Place::Zero));
            continue;
        }
        let frame = Place::Starts(compress_into(cctx, scratch, raw, &mut batch.frames)?);
        batch.done.push((*sha256, frame));
        batch.done.extend(
            rest.iter()
                .map(|(sha256, _, _)| (*sha256, Place::Continues)),
        );
    }
    Ok(batch)
}

/// Each stored chunk of the batch compressed alone, for the chunk store (FORMAT §3.4).
fn compress_alone(
    cctx: &mut zstd::bulk::Compressor<'static>,
    scratch: &mut Vec<u8>,
    batch: &mut Batch,
    chunks: &[(Sha256Digest, usize, Group)],
) -> Result<(), Error> {
    batch.store_frames.clear();
    batch.store_lens.clear();
    let mut at = 0;
    for &(_, len, group) in chunks {
        let raw = batch.raw.get(at..at + len).unwrap_or_default();
        at += len;
        if group == Group::Zero {
            batch.store_lens.push(0);
            continue;
        }
        let len = compress_into(cctx, scratch, raw, &mut batch.store_frames)?;
        batch.store_lens.push(len);
    }
    Ok(())
}

/// Compresses `raw` into one frame appended to `out`, through the worker's `scratch`: the
/// frame's length.
fn compress_into(
    cctx: &mut zstd::bulk::Compressor<'static>,
    scratch: &mut Vec<u8>,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<u32, Error> {
    scratch.clear();
    scratch.reserve(max_frame_len(raw.len() as u32) as usize);
    cctx.compress_to_buffer(raw, scratch)
        .map_err(Error::io("compressing a chunk"))?;
    out.extend_from_slice(scratch);
    // At most zstd's bound of a batch (a few MiB): fits in u32.
    Ok(scratch.len() as u32)
}

/// Each chunk of the batch: its hash, length and [`Group`].
fn classify(
    batch: &Batch,
    plan: &Plan<'_>,
    zero_full: Sha256Digest,
) -> Vec<(Sha256Digest, usize, Group)> {
    let mut at = 0;
    batch
        .lens
        .iter()
        .map(|&len| {
            let raw = batch.raw.get(at..at + len).unwrap_or_default();
            at += len;
            if is_zero(raw) {
                let sha256 = if len == plan.chunking.max as usize {
                    zero_full
                } else {
                    Sha256Digest::of_zeros(len as u64)
                };
                return (sha256, len, Group::Zero);
            }
            let sha256 = Sha256Digest(Sha256::digest(raw).into());
            let group = match plan.previous {
                Some(previous) => Group::Shared(previous.contains(&sha256)),
                None => Group::Alone,
            };
            (sha256, len, group)
        })
        .collect()
}

/// Whether every byte is zero (checked in 4 KiB blocks so a data chunk bails out early).
fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(4096)
        .all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

fn append<W: Write>(out: &mut W, payload: &mut Payload<'_>, batch: &Batch) -> Result<(), Error> {
    out.write_all(&batch.frames)
        .map_err(Error::io("writing the bundle payload"))?;
    let mut frame_offset = payload.len;
    let mut store_at = 0usize;
    for (i, (&len, &(sha256, place))) in batch.lens.iter().zip(&batch.done).enumerate() {
        let store_len = match (payload.store.as_mut(), batch.store_lens.get(i)) {
            (Some(store), Some(&n)) if n > 0 => {
                let frame = batch.store_frames.get(store_at..store_at + n as usize);
                store_at += n as usize;
                store.put(sha256, frame.unwrap_or_default())?
            }
            _ => 0,
        };
        if let Place::Starts(n) = place {
            frame_offset = payload.len;
            payload.len += u64::from(n);
        }
        payload.zero_chunks += u64::from(place == Place::Zero);
        // At most the chunking's `max` (16 MiB) or the assets' chunk size (64 MiB).
        payload.entries.push(Entry {
            sha256,
            raw_len: len as u32,
            place,
            frame_offset,
            store_len,
        });
    }
    if let Some(index) = payload.index.as_mut() {
        for entry in payload.entries.drain(..) {
            index.push(&entry.record())?;
        }
    }
    Ok(())
}
