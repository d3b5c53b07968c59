//! Chunk decoding (FORMAT §5): each frame is exactly one zstd frame holding one chunk, or from
//! format version 3 several consecutive chunks (a *piece*, [`pieces`]); it is decompressed with
//! an output cap of the chunks' raw length and released only after every chunk's SHA-256
//! matched the verified manifest. [`ChunkDecoder::decode_piece`] is pure so callers can decode
//! in parallel or fetch single frames by range; [`ChunkReader`] walks the image or one boot
//! asset; [`extract`] and [`extract_asset`] add the whole-stream hash check.

use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::digest::Sha256Digest;
use crate::error::{ChunkFault, Error, FormatError, UsageError, VerifyError};
use crate::schema::{pieces, Asset, AssetKind, Chunk, Manifest};
use crate::verify::{cmdline_asset_text, Verified};

/// A reusable zstd decompression context, holding the bundle's dictionary if it has one.
pub struct ChunkDecoder {
    dctx: zstd::bulk::Decompressor<'static>,
}

impl ChunkDecoder {
    /// A decoder for `manifest`'s frames.
    pub fn new(manifest: &Manifest) -> Result<Self, Error> {
        let dctx = match manifest.dictionary() {
            Some(dictionary) => zstd::bulk::Decompressor::with_dictionary(dictionary),
            None => zstd::bulk::Decompressor::new(),
        }
        .and_then(|mut dctx| dctx.set_parameter(window_log_max()).map(|()| dctx))
        .map_err(Error::io("creating a zstd decoder"))?;
        Ok(ChunkDecoder { dctx })
    }

    /// Decodes `compressed` (the frame of `piece`, exactly) into `out` and checks every
    /// chunk's hash; `piece` is one of [`pieces`]: an all-zero chunk yields zeros.
    /// Decompression never writes more than the piece's raw length.
    pub fn decode_piece(
        &mut self,
        piece: &[Chunk],
        compressed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), VerifyError> {
        let first = piece.first().map_or(0, |c| c.index());
        let len: usize = piece.iter().map(|c| c.len() as usize).sum();
        out.clear();
        out.resize(len, 0);
        let Some(frame) = piece.first().and_then(|c| c.frame()) else {
            return Ok(());
        };
        self.decode_frame(first, frame.length, compressed, out)?;
        check_hashes(piece, out)
    }

    /// Decodes `compressed`, the chunk's own frame in the release's chunk store (FORMAT
    /// §3.4), exactly, into `out` (the chunk's length) and checks the chunk's hash: the
    /// bytes are the ones the manifest names, or an error.
    pub fn decode_store_frame(
        &mut self,
        chunk: &Chunk,
        compressed: &[u8],
        out: &mut [u8],
    ) -> Result<(), VerifyError> {
        let expected = chunk.store().map_or(0, |s| s.length);
        if out.len() != chunk.len() as usize {
            return Err(chunk_fault(
                chunk.index(),
                ChunkFault::Length {
                    expected: u64::from(chunk.len()),
                    actual: out.len() as u64,
                },
            ));
        }
        self.decode_frame(chunk.index(), expected, compressed, out)?;
        check_hashes(std::slice::from_ref(chunk), out)
    }

    /// Decompresses `compressed`, which must be exactly one frame of `expected` bytes, to
    /// exactly `out.len()` bytes (never more).
    fn decode_frame(
        &mut self,
        first: u64,
        expected: u64,
        compressed: &[u8],
        out: &mut [u8],
    ) -> Result<(), VerifyError> {
        let len = out.len();
        if compressed.len() as u64 != expected {
            return Err(chunk_fault(
                first,
                ChunkFault::CompressedLength {
                    expected,
                    actual: compressed.len() as u64,
                },
            ));
        }
        check_one_frame(compressed).map_err(|f| chunk_fault(first, f))?;
        let n = self
            .dctx
            .decompress_to_buffer(compressed, out)
            .map_err(|e| {
                chunk_fault(
                    first,
                    ChunkFault::Decompress {
                        max: len as u64,
                        reason: e.to_string(),
                    },
                )
            })?;
        if n != len {
            return Err(chunk_fault(
                first,
                ChunkFault::Length {
                    expected: len as u64,
                    actual: n as u64,
                },
            ));
        }
        Ok(())
    }
}

fn chunk_fault(index: u64, fault: ChunkFault) -> VerifyError {
    VerifyError::Chunk { index, fault }
}

/// Every chunk of `piece`, end to end in `bytes`, must hash to the manifest's digest.
fn check_hashes(piece: &[Chunk], bytes: &[u8]) -> Result<(), VerifyError> {
    let mut at = 0;
    for chunk in piece {
        let part = bytes.get(at..at + chunk.len() as usize).unwrap_or_default();
        at += chunk.len() as usize;
        let actual = Sha256Digest(Sha256::digest(part).into());
        if actual != chunk.sha256() {
            return Err(chunk_fault(
                chunk.index(),
                ChunkFault::Hash {
                    expected: chunk.sha256(),
                    actual,
                },
            ));
        }
    }
    Ok(())
}

pub use crate::frame::MAX_WINDOW_LOG;
use crate::frame::{check_one_frame, window_log_max};

/// Decodes one of `manifest`'s pieces ([`pieces`]) from its frame and checks every chunk's
/// hash: the bytes are returned only if they are the ones the manifest names. The output is
/// capped at the piece's raw length.
pub fn decode_piece(
    manifest: &Manifest,
    piece: &[Chunk],
    compressed: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    ChunkDecoder::new(manifest)?.decode_piece(piece, compressed, &mut out)?;
    Ok(out)
}

/// One piece of the image ([`pieces`]), yielded by [`ChunkReader`] after its hashes matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkData {
    /// The verified bytes of a frame's chunks.
    Data {
        /// Index of its first chunk.
        index: u64,
        /// Offset in the raw image.
        image_offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// An all-zero chunk (no buffer): write zeros or discard.
    Zero {
        /// Chunk index.
        index: u64,
        /// Offset in the raw image.
        image_offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

/// Iterates over a verified bundle's pieces in order (the image's, or one asset's), reading
/// frames from `reader`.
pub struct ChunkReader<'m, R> {
    manifest: &'m Manifest,
    pieces: Box<dyn Iterator<Item = &'m [Chunk]> + 'm>,
    asset: Option<&'m Asset>,
    reader: R,
    pos: Option<u64>,
    compressed: Vec<u8>,
    decoder: ChunkDecoder,
}

impl<'m, R: Read + Seek> ChunkReader<'m, R> {
    /// A reader over the bundle file that `manifest` was verified from.
    pub fn new(manifest: &'m Verified<Manifest>, reader: R) -> Result<Self, Error> {
        Self::over(manifest, manifest.chunks(), None, reader)
    }

    /// A reader over the chunks of the boot asset called `name` (FORMAT §3.1).
    pub fn asset(manifest: &'m Verified<Manifest>, name: &str, reader: R) -> Result<Self, Error> {
        let asset = find_asset(manifest, name)?;
        Self::over(manifest, asset.chunks(), Some(asset), reader)
    }

    fn over(
        manifest: &'m Manifest,
        chunks: &'m [Chunk],
        asset: Option<&'m Asset>,
        reader: R,
    ) -> Result<Self, Error> {
        Ok(ChunkReader {
            manifest,
            pieces: Box::new(pieces(chunks)),
            asset,
            reader,
            pos: None,
            compressed: Vec::new(),
            decoder: ChunkDecoder::new(manifest)?,
        })
    }

    fn read_piece(&mut self, piece: &[Chunk]) -> Result<ChunkData, Error> {
        let Some(chunk) = piece.first() else {
            return Err(Error::Bug("an empty piece"));
        };
        let Some(range) = self.manifest.chunk_file_range(chunk) else {
            return Ok(ChunkData::Zero {
                index: chunk.index(),
                image_offset: chunk.image_offset(),
                len: chunk.len().into(),
            });
        };
        if self.pos != Some(range.start) {
            self.reader
                .seek(SeekFrom::Start(range.start))
                .map_err(Error::io("seeking in the bundle"))?;
        }
        // Bounded by the manifest check: a frame is at most zstd's bound of its raw bytes.
        self.compressed
            .resize((range.end - range.start) as usize, 0);
        self.reader
            .read_exact(&mut self.compressed)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::Format(FormatError::Truncated {
                    expected: self.manifest.file_len(),
                    actual: range.start,
                }),
                _ => Error::io(format!("reading chunk {}", chunk.index()))(e),
            })?;
        self.pos = Some(range.end);
        let mut bytes = Vec::new();
        self.decoder
            .decode_piece(piece, &self.compressed, &mut bytes)
            .map_err(|e| in_asset(self.asset, e))?;
        Ok(ChunkData::Data {
            index: chunk.index(),
            image_offset: chunk.image_offset(),
            bytes,
        })
    }
}

impl<R: Read + Seek> Iterator for ChunkReader<'_, R> {
    type Item = Result<ChunkData, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let piece = self.pieces.next()?;
        Some(self.read_piece(piece))
    }
}

/// Writes the verified image to `out` (zeros included), checking every chunk's hash and, at
/// the end, the whole-image hash. `progress` gets the raw bytes done so far.
/// On error the output holds unverified partial data: write it to a temporary place.
pub fn extract<R: Read + Seek, W: Write>(
    manifest: &Verified<Manifest>,
    reader: R,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    let actual = copy_chunks(ChunkReader::new(manifest, reader)?, out, progress)?;
    if actual != manifest.image_sha256() {
        return Err(VerifyError::ImageHash {
            expected: manifest.image_sha256(),
            actual,
        }
        .into());
    }
    Ok(())
}

/// Writes the verified boot asset `name` to `out`, checking every chunk's hash and, at the
/// end, the asset's hash (FORMAT §3.1); a `cmdline` asset is checked whole and against the
/// command line rule ([`cmdline_asset_text`]) before any of it is written. Same caveat as
/// [`extract`] on error.
pub fn extract_asset<R: Read + Seek, W: Write>(
    manifest: &Verified<Manifest>,
    name: &str,
    reader: R,
    mut out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    let asset = find_asset(manifest, name)?;
    if asset.kind() != AssetKind::Cmdline {
        return copy_asset_checked(manifest, asset, reader, out, progress);
    }
    // At most proto::MAX_CMDLINE bytes: the manifest's asset rules bound its size.
    let mut bytes = Vec::new();
    copy_asset_checked(manifest, asset, reader, &mut bytes, progress)?;
    cmdline_asset_text(asset, &bytes)?;
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(Error::io("writing the output"))
}

/// Writes `asset`'s chunks to `out` and checks the asset's whole hash.
fn copy_asset_checked<R: Read + Seek, W: Write>(
    manifest: &Verified<Manifest>,
    asset: &Asset,
    reader: R,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    let chunks = ChunkReader::over(manifest, asset.chunks(), Some(asset), reader)?;
    let actual = copy_chunks(chunks, out, progress)?;
    if actual != asset.sha256() {
        return Err(VerifyError::AssetHash {
            asset: asset.name().into(),
            expected: asset.sha256(),
            actual,
        }
        .into());
    }
    Ok(())
}

/// Checks everything a bundle's payload holds against its verified manifest: the image, then
/// each boot asset, every chunk and whole hash (what `verify` and `mirror` prove before
/// trusting a copy). `progress` gets the raw bytes checked so far, across all of them.
pub fn verify_contents<R: Read + Seek>(
    manifest: &Verified<Manifest>,
    reader: &mut R,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    extract(manifest, &mut *reader, io::sink(), progress)?;
    let mut base = manifest.image_size();
    for asset in manifest.assets() {
        let mut from_base = |done: u64| progress(base + done);
        extract_asset(
            manifest,
            asset.name(),
            &mut *reader,
            io::sink(),
            &mut from_base,
        )?;
        base += asset.size();
    }
    Ok(())
}

fn find_asset<'m>(manifest: &'m Manifest, name: &str) -> Result<&'m Asset, Error> {
    manifest.asset(name).ok_or_else(|| {
        UsageError::Invalid(format!("the bundle carries no asset named `{name}`")).into()
    })
}

/// Names the asset in a chunk error.
fn in_asset(asset: Option<&Asset>, e: VerifyError) -> VerifyError {
    match (asset, e) {
        (Some(a), VerifyError::Chunk { index, fault }) => VerifyError::AssetChunk {
            asset: a.name().into(),
            index,
            fault: Box::new(fault),
        },
        (_, e) => e,
    }
}

/// Writes every chunk (zeros included) and returns the SHA-256 of all bytes written.
fn copy_chunks<R: Read + Seek, W: Write>(
    chunks: ChunkReader<'_, R>,
    mut out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<Sha256Digest, Error> {
    let zeros = vec![0u8; 1 << 16];
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    for item in chunks {
        match item? {
            ChunkData::Data { bytes, .. } => {
                hasher.update(&bytes);
                out.write_all(&bytes)
                    .map_err(Error::io("writing the output"))?;
                done += bytes.len() as u64;
            }
            ChunkData::Zero { len, .. } => {
                write_zeros(&mut out, &mut hasher, &zeros, len)?;
                done += len;
            }
        }
        progress(done);
    }
    out.flush().map_err(Error::io("writing the output"))?;
    Ok(Sha256Digest(hasher.finalize().into()))
}

fn write_zeros<W: Write>(
    out: &mut W,
    hasher: &mut Sha256,
    zeros: &[u8],
    len: u64,
) -> Result<(), Error> {
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        let block = zeros.get(..n).unwrap_or(zeros);
        hasher.update(block);
        out.write_all(block)
            .map_err(Error::io("writing the image"))?;
        left -= n as u64;
    }
    Ok(())
}
