//! Random access to a boot asset's raw bytes inside a bundle file, for display (`tandem-signer
//! inspect` reads a UKI's `.osrel` section or a kernel's version string without extracting
//! the asset): a read decodes only the chunks it spans, from their frames alone, each checked
//! against the hash the manifest names. The manifest need not be verified: the bytes are the
//! ones it names, which is all a display of it claims.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use crate::chunks::decode_piece;
use crate::schema::{Asset, Chunk, Manifest};

/// A [`crate::uki::ReadAt`] over `asset`'s raw bytes in the bundle file `f` (the one `m` was
/// read from): `len` bytes from `offset`, or `None` when the range is empty or runs past the
/// asset, or a chunk it spans cannot be read or does not match its hash.
pub fn asset_read_at<'a, R: Read + Seek>(
    f: &'a mut R,
    m: &'a Manifest,
    asset: &'a Asset,
) -> impl FnMut(u64, usize) -> Option<Vec<u8>> + 'a {
    asset_read_with(move |range| read_range(f, range), m, asset)
}

/// [`asset_read_at`] over any way of reading a range of the bundle file (`fetch` gives the
/// bytes of an absolute file range, or `None`): a node reads its source's ranges.
pub fn asset_read_with<'a>(
    mut fetch: impl FnMut(Range<u64>) -> Option<Vec<u8>> + 'a,
    m: &'a Manifest,
    asset: &'a Asset,
) -> impl FnMut(u64, usize) -> Option<Vec<u8>> + 'a {
    let cs = u64::from(m.chunk_size());
    move |offset: u64, len: usize| -> Option<Vec<u8>> {
        let end = offset.checked_add(len as u64)?;
        if end > asset.size() || len == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        for index in offset / cs..=(end - 1) / cs {
            let chunk = asset.chunks().get(usize::try_from(index).ok()?)?;
            let bytes = chunk_bytes(&mut fetch, m, chunk)?;
            let from = offset.max(chunk.image_offset()) - chunk.image_offset();
            let to = end.min(chunk.end()) - chunk.image_offset();
            out.extend_from_slice(
                bytes.get(usize::try_from(from).ok()?..usize::try_from(to).ok()?)?,
            );
        }
        Some(out)
    }
}

/// One chunk's raw bytes: zeros for an all-zero chunk, else its frame read through `fetch`,
/// decoded and hash-checked.
fn chunk_bytes(
    fetch: &mut impl FnMut(Range<u64>) -> Option<Vec<u8>>,
    m: &Manifest,
    chunk: &Chunk,
) -> Option<Vec<u8>> {
    let Some(range) = m.chunk_file_range(chunk) else {
        return Some(vec![0; chunk.len() as usize]);
    };
    let frame = fetch(range)?;
    decode_piece(m, std::slice::from_ref(chunk), &frame).ok()
}

/// The bytes of `range` of `f`.
fn read_range<R: Read + Seek>(f: &mut R, range: Range<u64>) -> Option<Vec<u8>> {
    let mut frame = vec![0; usize::try_from(range.end.checked_sub(range.start)?).ok()?];
    f.seek(SeekFrom::Start(range.start)).ok()?;
    f.read_exact(&mut frame).ok()?;
    Some(frame)
}
