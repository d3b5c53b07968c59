//! A whole bundle file: header, manifest region and signature block read the way the agent
//! reads a local bundle (`BundleHead::read`), then the manifest parsed without a signature
//! (what `tandem-signer inspect` does). Contract: no panic; the header re-encodes to the
//! bytes it came from; the regions are the file's bytes; a manifest that parses keeps
//! every limit and lays its chunks inside the payload.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use signer::{BundleHead, BundleHeader};
use tandem_fuzz::{check_manifest, limits};

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let Ok(head) = BundleHead::read(&mut Cursor::new(data), &limits) else {
        return;
    };
    let header = head.header();
    assert_eq!(&header.encode()[..], &data[..BundleHeader::LEN]);
    let manifest =
        &data[header.manifest_range().start as usize..header.manifest_range().end as usize];
    assert_eq!(head.manifest_bytes(), manifest);
    assert!(head.signatures().len() <= limits.max_signatures);
    assert_eq!(head.file_len(), data.len() as u64);
    if let Ok(m) = head.manifest_unverified(&limits) {
        check_manifest(&m, data.len() as u64, &limits);
    }
});
