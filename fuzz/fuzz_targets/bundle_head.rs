//! A whole bundle file: header, manifest region, signature block and (format version 3) the
//! dictionary and chunk index at its end, read the way the agent reads a local bundle
//! (`BundleHead::read`), then the manifest parsed without a signature (what `tandem-signer
//! inspect` does). A version 3 head is parsed a second time with its manifest naming the
//! stored dictionary and index (hash and size), so mutated index bytes reach the index
//! decoder and record parser rather than stopping at the hash check. Contract: no panic; the
//! header re-encodes to the bytes it came from; the regions are the file's bytes; a manifest
//! that parses keeps every limit and lays its chunks inside the payload.
#![no_main]

use std::io::Cursor;
use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use signer::bundle::header::FORMAT_VERSION_INDEX;
use signer::{BundleHead, Limits};
use tandem_fuzz::{check_manifest, limits, rehash_tail};

fn slice(data: &[u8], range: Range<u64>) -> &[u8] {
    &data[range.start as usize..range.end as usize]
}

/// `head` again, its manifest rewritten by [`rehash_tail`] and padded to the same length.
fn rehashed(head: &BundleHead, data: &[u8], limits: &Limits) -> Option<BundleHead> {
    let header = *head.header();
    let mut manifest = rehash_tail(
        head.manifest_bytes(),
        head.dictionary_bytes(),
        head.index_bytes(),
    )?;
    if manifest.len() > header.manifest_len as usize {
        return None;
    }
    manifest.resize(header.manifest_len as usize, b' ');
    let file_len = data.len() as u64;
    BundleHead::from_parts(
        header,
        manifest,
        slice(data, header.signature_block_range()),
        slice(data, header.tail_range(file_len)).to_vec(),
        file_len,
        limits,
    )
    .ok()
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let Ok(head) = BundleHead::read(&mut Cursor::new(data), &limits) else {
        return;
    };
    let header = head.header();
    let file_len = data.len() as u64;
    assert_eq!(&header.encode()[..], &data[..header.encoded_len()]);
    assert_eq!(head.manifest_bytes(), slice(data, header.manifest_range()));
    let tail = slice(data, header.tail_range(file_len));
    let (dictionary, index) = tail.split_at(header.dictionary_len as usize);
    assert_eq!(head.dictionary_bytes(), dictionary);
    assert_eq!(head.index_bytes(), index);
    assert!(head.signatures().len() <= limits.max_signatures);
    assert_eq!(head.file_len(), file_len);
    if let Ok(m) = head.manifest_unverified(&limits) {
        check_manifest(&m, file_len, &limits);
    }
    if header.version == FORMAT_VERSION_INDEX {
        if let Some(again) = rehashed(&head, data, &limits) {
            if let Ok(m) = again.manifest_unverified(&limits) {
                check_manifest(&m, file_len, &limits);
            }
        }
    }
});
