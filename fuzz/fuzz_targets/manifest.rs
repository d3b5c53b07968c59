//! The manifest region alone (canonical JSON + space padding), placed in a bundle head with
//! an empty signature block: `manifest_unverified` parses it before checking the file
//! length, so every input reaches the manifest parser. Contract: no panic; when the only
//! complaint is the file length, the same head with the announced length parses, and the
//! manifest keeps every limit and lays its chunks inside the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signer::bundle::header::{FORMAT_VERSION, FORMAT_VERSION_ASSETS};
use signer::{BundleHead, BundleHeader, Error, FormatError};
use tandem_fuzz::{check_manifest, limits};

const SIGNATURE_BLOCK: &[u8] = br#"{"signatures":[]}"#;

fuzz_target!(|input: &[u8]| {
    let limits = limits();
    // The first byte picks the format version (with or without boot assets).
    let Some((flag, data)) = input.split_first() else {
        return;
    };
    let Ok(manifest_len) = u32::try_from(data.len()) else {
        return;
    };
    let header = BundleHeader {
        version: if flag & 1 == 1 {
            FORMAT_VERSION_ASSETS
        } else {
            FORMAT_VERSION
        },
        manifest_len,
        signature_block_len: SIGNATURE_BLOCK.len() as u32,
    };
    let head = |file_len| {
        BundleHead::from_parts(header, data.to_vec(), SIGNATURE_BLOCK, file_len, &limits)
    };
    let Ok(first) = head(header.payload_offset()) else {
        return;
    };
    let file_len = match first.manifest_unverified(&limits) {
        Ok(m) => m.file_len(),
        Err(Error::Format(FormatError::TrailingData { expected, .. }))
        | Err(Error::Format(FormatError::Truncated { expected, .. })) => expected,
        Err(_) => return,
    };
    let second = head(file_len).expect("the announced length is at least the head's");
    let m = second
        .manifest_unverified(&limits)
        .expect("a manifest refused only for the file length parses at that length");
    check_manifest(&m, file_len, &limits);
});
