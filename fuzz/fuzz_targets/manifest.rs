//! The manifest region alone (canonical JSON + space padding), placed in a bundle head with
//! an empty signature block: `manifest_unverified` parses it before checking the file
//! length, so every input reaches the manifest parser. The first byte picks the format
//! version (its value modulo 3: 1, 2 or 3). For versions 1 and 2 the rest is the manifest
//! region. For version 3 it is a u32 LE manifest length, the manifest region, then the chunk
//! index records raw (40 bytes each, FORMAT §3.2): the target compresses them into the stored
//! index and names it in the manifest (hash and size), so mutated records reach the record
//! parser rather than stopping at the hash check. Contract: no panic; when the complaint is
//! the file length, the same head with the announced length is not refused for its length
//! (the index it then reads may still be refused), and a manifest that parses keeps every
//! limit and lays its chunks inside the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signer::bundle::header::{FORMAT_VERSION, FORMAT_VERSION_ASSETS, FORMAT_VERSION_INDEX};
use signer::{BundleHead, BundleHeader, Error, FormatError};
use tandem_fuzz::{check_manifest, limits, rehash_tail};

const SIGNATURE_BLOCK: &[u8] = br#"{"signatures":[]}"#;

/// The manifest region and stored index of a version 3 input, the index named in the
/// manifest when it is a JSON object.
fn indexed(data: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    let manifest = rest.get(..len)?;
    let records = rest.get(len..)?;
    let index = zstd::bulk::compress(records, 3).ok()?;
    let manifest = rehash_tail(manifest, &[], &index).unwrap_or_else(|| manifest.to_vec());
    Some((manifest, index))
}

fuzz_target!(|input: &[u8]| {
    let limits = limits();
    let Some((flag, data)) = input.split_first() else {
        return;
    };
    let version = [FORMAT_VERSION, FORMAT_VERSION_ASSETS, FORMAT_VERSION_INDEX][*flag as usize % 3];
    let (manifest, index) = if version == FORMAT_VERSION_INDEX {
        let Some(parts) = indexed(data) else {
            return;
        };
        parts
    } else {
        (data.to_vec(), Vec::new())
    };
    let (Ok(manifest_len), Ok(index_len)) =
        (u32::try_from(manifest.len()), u32::try_from(index.len()))
    else {
        return;
    };
    let header = BundleHeader {
        version,
        manifest_len,
        signature_block_len: SIGNATURE_BLOCK.len() as u32,
        dictionary_len: 0,
        index_len,
    };
    let head = |file_len| {
        BundleHead::from_parts(
            header,
            manifest.clone(),
            SIGNATURE_BLOCK,
            index.clone(),
            file_len,
            &limits,
        )
    };
    let Ok(first) = head(header.payload_offset() + header.tail_len()) else {
        return;
    };
    let file_len = match first.manifest_unverified(&limits) {
        Ok(m) => m.file_len(),
        Err(Error::Format(FormatError::TrailingData { expected, .. }))
        | Err(Error::Format(FormatError::Truncated { expected, .. })) => expected,
        Err(_) => return,
    };
    let second = head(file_len).expect("the announced length is at least the head's");
    match second.manifest_unverified(&limits) {
        Ok(m) => check_manifest(&m, file_len, &limits),
        Err(Error::Format(FormatError::TrailingData { .. } | FormatError::Truncated { .. })) => {
            panic!("the length the manifest announced is refused as a length")
        }
        // The stored index is read only from a file of the announced length, so what it
        // lists (frames against `payload_size`, hashes) is judged only now.
        Err(_) => {}
    }
});
