//! One stored zstd frame (FORMAT §5), checked before it is decoded: exactly one frame of
//! exactly its length, declaring a window no reader refuses. A leaf: the chunk decoder and
//! the index decoder both check their frames here.

use crate::error::ChunkFault;

/// The zstd frame magic number (RFC 8878 §3.1.1), little-endian on the wire.
pub(crate) const ZSTD_MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();

/// FORMAT §5: the largest window a frame may declare, as a power of two (128 MiB): zstd's own
/// streaming decoders refuse more by default, so a bundle every reader can decode stays under
/// it. Every decoder in the workspace is also set to it (`ZSTD_d_windowLogMax`); the one-shot
/// decoder does not enforce that parameter, hence the header check in [`check_one_frame`].
pub const MAX_WINDOW_LOG: u32 = 27;

/// Sets [`MAX_WINDOW_LOG`] on a decoder.
pub(crate) fn window_log_max() -> zstd::zstd_safe::DParameter {
    zstd::zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG)
}

/// The window size a frame header declares (RFC 8878 §3.1.1.1): from its Window_Descriptor,
/// or, in a single-segment frame, its Frame_Content_Size. `None`: the header is cut short.
fn declared_window(frame: &[u8]) -> Option<u64> {
    let descriptor = *frame.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let window = *frame.get(5)?;
        let log = 10 + u32::from(window >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(window & 7));
    }
    let dict_id_len = match descriptor & 3 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let (content_len, add) = match descriptor >> 6 {
        0 => (1, 0),
        1 => (2, 256),
        2 => (4, 0),
        _ => (8, 0),
    };
    let at = 5 + dict_id_len;
    let bytes = frame.get(at..at + content_len)?;
    let value = bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Some(value + add)
}

/// FORMAT §5: a stored chunk is exactly one zstd frame of exactly its length: not several
/// frames, no skippable frame, nothing after the frame (the decoder would accept all three,
/// letting unsigned bytes ride in the payload), declaring a window of at most
/// 2^[`MAX_WINDOW_LOG`] bytes.
pub(crate) fn check_one_frame(compressed: &[u8]) -> Result<(), ChunkFault> {
    if compressed.get(..4) != Some(&ZSTD_MAGIC[..]) {
        return Err(ChunkFault::Frame(
            "it does not start with the zstd frame magic number (a skippable frame or other data)"
                .into(),
        ));
    }
    let max = 1u64 << MAX_WINDOW_LOG;
    match declared_window(compressed) {
        Some(size) if size > max => return Err(ChunkFault::Window { size, max }),
        // A header cut short is told by the frame size check below.
        _ => {}
    }
    match zstd::zstd_safe::find_frame_compressed_size(compressed) {
        Ok(n) if n == compressed.len() => Ok(()),
        Ok(n) => Err(ChunkFault::Frame(format!(
            "its first frame ends at byte {n} of {}",
            compressed.len()
        ))),
        Err(code) => Err(ChunkFault::Frame(
            zstd::zstd_safe::get_error_name(code).to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_declared_window_is_read_from_either_header_form() {
        // Single segment (what the signer's one-shot compressor writes): the content size.
        let one_shot = zstd::bulk::compress(&[7u8; 5000], 3).unwrap();
        assert_ne!(one_shot[4] & 0x20, 0);
        assert_eq!(declared_window(&one_shot), Some(5000));
        // A Window_Descriptor: exponent 17 - 10, mantissa 3 = 2^17 + 3 × 2^14.
        let mut streamed = zstd::stream::encode_all(&[7u8; 5000][..], 3).unwrap();
        streamed[5] = (7 << 3) | 3;
        assert_eq!(declared_window(&streamed), Some((1 << 17) + 3 * (1 << 14)));
        assert!(check_one_frame(&streamed).is_ok());
        // The bound, and one mantissa step past it.
        streamed[5] = ((MAX_WINDOW_LOG - 10) as u8) << 3;
        assert!(check_one_frame(&streamed).is_ok());
        streamed[5] |= 1;
        assert!(matches!(
            check_one_frame(&streamed),
            Err(ChunkFault::Window { max, .. }) if max == 1 << MAX_WINDOW_LOG
        ));
        assert_eq!(declared_window(&streamed[..5]), None);
    }
}
