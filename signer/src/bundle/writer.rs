//! The signing pipeline (FORMAT §2–§5). One pass over the image, no second copy of the
//! payload: the header, a manifest region sized from an upper bound and a reserved signature
//! block are laid out first; frames are appended as they come; then the manifest (padded with
//! spaces to its reserved length) and the signatures are written back in place.
//!
//! Threads ([`pipeline::ordered_map`]): a reader streams fixed-size chunks and hashes the
//! whole image as it goes; workers detect all-zero chunks, hash and compress the others, each
//! with its own zstd context; this thread writes frames in order. The pipeline's window and
//! recycled buffers bound memory whatever the image size.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::sync::mpsc::{channel, Receiver};

use pipeline::Shape;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::bundle::header::{BundleHeader, FORMAT_VERSION, FORMAT_VERSION_ASSETS};
use crate::canonical;
use crate::digest::Sha256Digest;
use crate::error::{Error, UsageError};
use crate::keys::Signature;
use crate::keys::{check_distinct, sign_bytes, KeyId, Signer};
use crate::limits::{Limits, MIN_CHUNK_SIZE};
use crate::role::RoleKind;
use crate::schema::{
    check_asset_kinds, check_name, encode_signature_block, max_frame_len, parse_version, AssetDoc,
    AssetKind, ChunkDoc, ImageDoc, ManifestDoc,
};
use crate::time_util::format_rfc3339;

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
    /// Chunk size: a power of two, at least 4 KiB. Default 1 MiB.
    pub chunk_size: u32,
    /// zstd level. Default 3.
    pub level: i32,
    /// Compression threads; 0 means one per CPU. Default 0.
    pub workers: usize,
    /// Minimum signature block reservation. Default 4096 (room for about 18 signatures).
    pub signature_block_len: u32,
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
            chunk_size: 1 << 20,
            level: 3,
            workers: 0,
            signature_block_len: 4096,
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
    sign_release(sources, out, opts, keys, limits, progress)
}

/// Signs the image and its boot assets into one bundle (FORMAT §3.1): the image's frames
/// first, then each asset's, through the same parallel pipeline. Without assets the result
/// is byte for byte what [`sign_bundle`] writes (format version 1). An asset list that breaks
/// §3.1 (names, one asset per boot kind, `kernel` with `initrd`, not with `uki`) or a
/// `cmdline` asset whose text breaks [`proto::check_cmdline`] is a [`UsageError`], refused
/// before anything is written.
pub fn sign_release<R: Read + Send, W: Write + Seek, K: Signer>(
    mut sources: Sources<'_, R>,
    out: &mut W,
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
    let count = checked_chunk_count(sources.image_size, opts.chunk_size, limits)?;
    let mut fixed = manifest_doc(opts, &created, sources.image_size, &sources.assets);
    let manifest_len = manifest_bound(opts, &fixed, total_chunks(&sources, opts), limits)?;
    let signature_block_len = signature_reserve(keys.len(), opts.signature_block_len, limits)?;
    let header = BundleHeader {
        version: if sources.assets.is_empty() {
            FORMAT_VERSION
        } else {
            FORMAT_VERSION_ASSETS
        },
        manifest_len,
        signature_block_len,
    };
    let io = |what: &'static str| Error::io(format!("writing the bundle {what}"));
    out.seek(SeekFrom::Start(0)).map_err(io("header"))?;
    out.write_all(&header.encode()).map_err(io("header"))?;
    out.seek(SeekFrom::Start(header.payload_offset()))
        .map_err(io("payload"))?;

    let mut payload = Payload::default();
    let mut stream = |reader: &mut (dyn Read + Send), size: u64, payload: &mut Payload| {
        let plan = Plan {
            size,
            chunk_size: opts.chunk_size,
            count: size.div_ceil(u64::from(opts.chunk_size)),
            level: opts.level,
            workers: worker_count(opts.workers),
        };
        let base = payload.raw;
        let sha = run_pipeline(reader, &plan, out, payload, &mut |n| progress(base + n))?;
        Ok::<_, Error>((sha, std::mem::take(&mut payload.chunks)))
    };
    let mut image = sources.image;
    let (image_sha256, chunks) = stream(&mut image, sources.image_size, &mut payload)?;
    let image_zero_chunks = payload.zero_chunks;
    fixed.chunks = chunks;
    fixed.image.sha256 = image_sha256;
    for (mut src, doc) in sources
        .assets
        .into_iter()
        .zip(fixed.assets.iter_mut().flatten())
    {
        (doc.sha256, doc.chunks) = stream(&mut src.reader, src.size, &mut payload)?;
    }

    let manifest = pad(canonical::to_vec(&fixed)?, manifest_len as usize)?;
    let signatures = sign_bytes(RoleKind::Bundle, &manifest, keys)?;
    let block = encode_signature_block(&signatures, signature_block_len as usize)?
        .ok_or(Error::Bug("signature block reservation too small"))?;
    out.seek(SeekFrom::Start(BundleHeader::LEN as u64))
        .map_err(io("manifest"))?;
    out.write_all(&manifest).map_err(io("manifest"))?;
    out.write_all(&block).map_err(io("signature block"))?;
    out.flush().map_err(io("end"))?;
    Ok(SignSummary {
        manifest_sha256: Sha256Digest::of(&manifest),
        image_sha256,
        chunks: count,
        zero_chunks: image_zero_chunks,
        payload_len: payload.len,
        file_len: header.payload_offset() + payload.len,
        signers: signatures.iter().map(|s| s.keyid).collect(),
    })
}

/// The manifest with every field but the chunk lists and digests (filled in as streams end).
fn manifest_doc(
    opts: &SignOptions,
    created: &str,
    image_size: u64,
    assets: &[AssetSource<'_>],
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
        chunks: Vec::new(),
        created: created.to_owned(),
        image: ImageDoc {
            sha256: Sha256Digest([0; 32]),
            size: image_size,
        },
        product: opts.product.clone(),
        security_version: opts.security_version,
        version: opts.version.to_string(),
    }
}

fn total_chunks<R>(sources: &Sources<'_, R>, opts: &SignOptions) -> u64 {
    let cs = u64::from(opts.chunk_size);
    sources
        .assets
        .iter()
        .map(|a| a.size.div_ceil(cs))
        .sum::<u64>()
        + sources.image_size.div_ceil(cs)
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
    let total = sources
        .assets
        .iter()
        .fold(sources.image_size.div_ceil(u64::from(cs)), |n, a| {
            n.saturating_add(a.size.div_ceil(u64::from(cs)))
        });
    if total > limits.max_chunk_count {
        return Err(UsageError::invalid(format!(
            "the image and its assets make {total} chunks, more than the limit of {}: use a larger --chunk-size",
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

fn checked_chunk_count(size: u64, cs: u32, limits: &Limits) -> Result<u64, Error> {
    let count = size.div_ceil(u64::from(cs));
    if count > limits.max_chunk_count {
        return Err(UsageError::invalid(format!(
            "an image of {size} bytes makes {count} chunks of {cs} bytes, more than the limit of {}: use a larger --chunk-size",
            limits.max_chunk_count
        ))
        .into());
    }
    Ok(count)
}

/// Upper bound of the manifest's canonical length, from its fixed fields and the widest
/// possible chunk entry (FORMAT §3: the manifest region is then padded to exactly this).
fn manifest_bound(
    opts: &SignOptions,
    fixed: &ManifestDoc,
    count: u64,
    limits: &Limits,
) -> Result<u32, Error> {
    let max_frame = max_frame_len(opts.chunk_size);
    let widest = ChunkDoc {
        length: Some(max_frame),
        offset: Some(max_frame.saturating_mul(count)),
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
            "the manifest for {count} chunks could reach {bound} bytes, above the {}-byte limit: use a larger --chunk-size",
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

struct Plan {
    size: u64,
    chunk_size: u32,
    count: u64,
    level: i32,
    workers: usize,
}

impl Plan {
    fn chunk_len(&self, index: u64) -> usize {
        (self.size - index * u64::from(self.chunk_size)).min(u64::from(self.chunk_size)) as usize
    }

    /// Chunks in flight: enough to keep every worker busy, within about 40 MiB.
    fn shape(&self) -> Shape {
        let per_slot = 2 * self.chunk_size as usize + 4096;
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
}

/// One chunk's buffers: its raw bytes and its frame. Recycled through the pipeline, so the
/// signer allocates at most one per item of the window whatever the image size.
struct Slot {
    raw: Vec<u8>,
    frame: Vec<u8>,
}

struct Done {
    slot: Slot,
    sha256: Sha256Digest,
    zero: bool,
}

/// What the streams wrote so far: the current stream's chunk entries, the payload length
/// (where the next frame goes), all-zero chunks and raw bytes done in all.
#[derive(Default)]
struct Payload {
    chunks: Vec<ChunkDoc>,
    len: u64,
    zero_chunks: u64,
    raw: u64,
}

/// Reads the image into fixed-size chunks on the pipeline's reader thread, hashing the whole
/// image on the way, in buffers the sink gave back when there are some.
struct ImageChunks<'a, R> {
    image: R,
    plan: &'a Plan,
    hasher: &'a mut Sha256,
    recycled: Receiver<Slot>,
    next: u64,
}

impl<R: Read> ImageChunks<'_, R> {
    fn read(&mut self, index: u64) -> Result<Slot, Error> {
        let mut slot = self.recycled.try_recv().unwrap_or_else(|_| Slot {
            raw: Vec::with_capacity(self.plan.chunk_size as usize),
            frame: Vec::with_capacity(max_frame_len(self.plan.chunk_size) as usize),
        });
        slot.raw.resize(self.plan.chunk_len(index), 0);
        self.image.read_exact(&mut slot.raw).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Usage(UsageError::invalid(format!(
                "the image ended before its announced size of {} bytes (did it change while signing?)",
                self.plan.size
            ))),
            _ => Error::io("reading the image")(e),
        })?;
        self.hasher.update(&slot.raw);
        Ok(slot)
    }
}

impl<R: Read> Iterator for ImageChunks<'_, R> {
    type Item = Result<Slot, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.next;
        if index >= self.plan.count {
            return None;
        }
        self.next += 1;
        Some(self.read(index))
    }
}

/// Reads one stream, compresses on `plan.workers` threads (each keeping its zstd context) and
/// writes frames in chunk order after those already in `payload`; returns the stream's hash.
fn run_pipeline<R: Read + Send, W: Write>(
    image: R,
    plan: &Plan,
    out: &mut W,
    payload: &mut Payload,
    progress: &mut dyn FnMut(u64),
) -> Result<Sha256Digest, Error> {
    let mut hasher = Sha256::new();
    let (recycle, recycled) = channel::<Slot>();
    let chunks = ImageChunks {
        image,
        plan,
        hasher: &mut hasher,
        recycled,
        next: 0,
    };
    let zero_full = Sha256Digest::of_zeros(u64::from(plan.chunk_size));
    let mut bytes_done = 0u64;
    pipeline::ordered_map(
        chunks,
        plan.shape(),
        || zstd::bulk::Compressor::new(plan.level).map_err(Error::io("creating a zstd compressor")),
        |cctx, slot| compress_one(cctx, slot, plan.chunk_size, zero_full),
        |done| {
            bytes_done += done.slot.raw.len() as u64;
            append(out, payload, &done)?;
            progress(bytes_done);
            // The reader may have finished: then the buffer is simply dropped.
            let _ = recycle.send(done.slot);
            Ok(())
        },
    )?;
    payload.raw += bytes_done;
    Ok(Sha256Digest(hasher.finalize().into()))
}

/// Zero check, chunk hash, zstd frame. `zero_full` is the digest of a full chunk of zeros.
fn compress_one(
    cctx: &mut zstd::bulk::Compressor<'static>,
    mut slot: Slot,
    chunk_size: u32,
    zero_full: Sha256Digest,
) -> Result<Done, Error> {
    if is_zero(&slot.raw) {
        let sha256 = if slot.raw.len() == chunk_size as usize {
            zero_full
        } else {
            Sha256Digest::of_zeros(slot.raw.len() as u64)
        };
        return Ok(Done {
            slot,
            sha256,
            zero: true,
        });
    }
    let sha256 = Sha256Digest(Sha256::digest(&slot.raw).into());
    cctx.compress_to_buffer(&slot.raw, &mut slot.frame)
        .map_err(Error::io("compressing a chunk"))?;
    Ok(Done {
        slot,
        sha256,
        zero: false,
    })
}

/// Whether every byte is zero (checked in 4 KiB blocks so a data chunk bails out early).
fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(4096)
        .all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

fn append<W: Write>(out: &mut W, payload: &mut Payload, d: &Done) -> Result<(), Error> {
    if d.zero {
        payload.zero_chunks += 1;
        payload.chunks.push(ChunkDoc {
            length: None,
            offset: None,
            sha256: d.sha256,
            zero: Some(true),
        });
        return Ok(());
    }
    out.write_all(&d.slot.frame)
        .map_err(Error::io("writing the bundle payload"))?;
    let length = d.slot.frame.len() as u64;
    payload.chunks.push(ChunkDoc {
        length: Some(length),
        offset: Some(payload.len),
        sha256: d.sha256,
        zero: None,
    });
    payload.len += length;
    Ok(())
}
