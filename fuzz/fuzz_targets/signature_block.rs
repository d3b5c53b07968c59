//! A bundle's signature block (`{"signatures":[…]}` + space padding) behind a minimal
//! manifest region. Contract: no panic; a block that parses holds at most
//! `max_signatures` signatures, and re-encoding them and padding to the same length parses
//! back to the same list; verifying them against the fuzz root never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signer::bundle::header::FORMAT_VERSION;
use signer::{BundleHead, BundleHeader, Signature};
use tandem_fuzz::{limits, trust};

const MANIFEST: &[u8] = b"{}";

#[derive(serde::Serialize)]
struct Block<'a> {
    signatures: &'a [Signature],
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let Ok(signature_block_len) = u32::try_from(data.len()) else {
        return;
    };
    let header = BundleHeader {
        version: FORMAT_VERSION,
        manifest_len: MANIFEST.len() as u32,
        signature_block_len,
        dictionary_len: 0,
        index_len: 0,
    };
    let from = |block: &[u8]| {
        BundleHead::from_parts(
            header,
            MANIFEST.to_vec(),
            block,
            Vec::new(),
            header.payload_offset(),
            &limits,
        )
    };
    let Ok(head) = from(data) else {
        return;
    };
    let sigs = head.signatures();
    assert!(sigs.len() <= limits.max_signatures);
    let mut again = serde_json::to_vec(&Block { signatures: sigs }).expect("encodes");
    if again.len() <= data.len() {
        again.resize(data.len(), b' ');
        let back = from(&again).expect("a re-encoded block parses");
        assert_eq!(back.signatures(), sigs);
    }
    assert!(
        head.verify(&trust().root, &limits).is_err(),
        "nothing signed `{{}}`"
    );
});
