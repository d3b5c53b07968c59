//! The binary chunk index of a format version 3 bundle (FORMAT §3.2): one fixed-size record
//! per chunk of the image, in image order, stored as one zstd frame after the payload (and
//! after the dictionary). Its length, record count and SHA-256 are in the signed manifest, so
//! it is decompressed only once its hash matched, into exactly `count` records.

use crate::bundle::chunks::check_one_frame;
use crate::digest::Sha256Digest;
use crate::error::{Error, FormatError, Section};

/// Bytes per record: SHA-256 (32), raw length (u32 LE), frame length (u32 LE).
pub(crate) const RECORD_LEN: usize = 40;
/// The frame length of a chunk stored in the same frame as the chunk before it.
pub(crate) const CONTINUED: u32 = u32::MAX;

/// One chunk's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub sha256: Sha256Digest,
    pub raw_len: u32,
    /// The length of the frame this chunk starts; 0 for an all-zero chunk, which has no
    /// frame; [`CONTINUED`] when it is in the frame of the chunk before it.
    pub frame_len: u32,
}

/// zstd level of the stored index: its bulk, the hashes, does not compress, the rest does at
/// any level.
const LEVEL: i32 = 3;

/// The stored form of `records`.
pub(crate) fn encode(records: &[Record]) -> Result<Vec<u8>, Error> {
    let mut raw = Vec::with_capacity(records.len() * RECORD_LEN);
    for r in records {
        raw.extend_from_slice(&r.sha256.0);
        raw.extend_from_slice(&r.raw_len.to_le_bytes());
        raw.extend_from_slice(&r.frame_len.to_le_bytes());
    }
    zstd::bulk::compress(&raw, LEVEL).map_err(Error::io("compressing the chunk index"))
}

/// The `count` records of a stored index whose hash already matched the manifest: exactly one
/// zstd frame holding exactly `count × 40` bytes (the output is capped there).
pub(crate) fn decode(stored: &[u8], count: u64) -> Result<Vec<Record>, FormatError> {
    let bad = |reason: String| FormatError::field(Section::Index, "", reason);
    check_one_frame(stored).map_err(|e| bad(e.to_string()))?;
    let want = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(RECORD_LEN))
        .ok_or_else(|| bad(format!("{count} records do not fit in memory")))?;
    // One byte of room more than expected, so a longer index is told from an exact one.
    let raw = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress(stored, want + 1))
        .map_err(|e| bad(format!("does not decompress to {count} records: {e}")))?;
    if raw.len() != want {
        return Err(bad(format!(
            "{} bytes, {count} records are {want}",
            raw.len()
        )));
    }
    Ok(raw.chunks_exact(RECORD_LEN).map(record).collect())
}

fn record(bytes: &[u8]) -> Record {
    let field = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(bytes.get(at..at + 4).unwrap_or(&[0; 4]));
        u32::from_le_bytes(b)
    };
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(bytes.get(..32).unwrap_or(&[0; 32]));
    Record {
        sha256: Sha256Digest(sha256),
        raw_len: field(32),
        frame_len: field(36),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_count() {
        let records: Vec<Record> = (0..1000u32)
            .map(|i| Record {
                sha256: Sha256Digest::of(&i.to_le_bytes()),
                raw_len: 4096,
                frame_len: i % 7,
            })
            .collect();
        let stored = encode(&records).unwrap();
        assert_eq!(decode(&stored, 1000).unwrap(), records);
        let err = decode(&stored, 999).unwrap_err().to_string();
        assert!(err.contains("999 records"), "{err}");
        assert!(decode(&stored, 1001).is_err());
        let mut two = stored.clone();
        two.extend_from_slice(&stored);
        assert!(decode(&two, 2000).is_err(), "two frames are refused");
    }
}
