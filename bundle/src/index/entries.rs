//! The JSON chunk entries of format versions 1 and 2 and of every boot asset (FORMAT §3,
//! §3.1): one entry per fixed-size chunk, each naming its frame or saying it is all zeros,
//! turned into the stream's [`Chunk`] list with the frames checked contiguous.

use serde::{Deserialize, Serialize};

use super::chunk::{max_frame_len, Chunk, StoredFrame};
use crate::digest::Sha256Digest;
use crate::error::{FormatError, Section};
use crate::limits::Limits;

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

/// Number of chunks of an image: `ceil(size / chunk_size)`.
pub(crate) fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size))
}

/// Chunks of one stream (the image or an asset) of `size` bytes; frames continue at
/// `next_offset`, which is left at the end of the last frame (FORMAT §3: contiguous).
pub(crate) fn build_chunks(
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
