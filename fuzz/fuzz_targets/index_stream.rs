//! The chunk index streamed from a proven copy on disk (what the agent does) against the same
//! index decoded whole with the head (what every other reader does). The input is the
//! `manifest` target's version 3 form: a u32 LE manifest length, the manifest region, then the
//! index records raw, compressed by the target and named in the manifest (hash and size), so
//! mutated records reach the record rules. Contract: no panic; the streamed copy is accepted
//! exactly when the whole index is, and then yields exactly the same chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signer::bundle::header::FORMAT_VERSION_INDEX;
use signer::bundle::index::IndexFile;
use signer::{BundleHead, BundleHeader, Limits};
use tandem_fuzz::{limits, rehash_tail, scratch};

const SIGNATURE_BLOCK: &[u8] = br#"{"signatures":[]}"#;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = u32::from_le_bytes(*len) as usize;
    let (Some(manifest), Some(records)) = (rest.get(..len), rest.get(len..)) else {
        return;
    };
    let Ok(index) = zstd::bulk::compress(records, 3) else {
        return;
    };
    let manifest = rehash_tail(manifest, &[], &index).unwrap_or_else(|| manifest.to_vec());
    let (Ok(manifest_len), Ok(index_len)) =
        (u32::try_from(manifest.len()), u32::try_from(index.len()))
    else {
        return;
    };
    let header = BundleHeader {
        version: FORMAT_VERSION_INDEX,
        manifest_len,
        signature_block_len: SIGNATURE_BLOCK.len() as u32,
        dictionary_len: 0,
        index_len,
    };
    let whole_limits = limits();
    let streamed_limits = Limits {
        max_index_in_head: 0,
        ..limits()
    };
    let head = |tail: Vec<u8>, limits: &Limits| {
        let file_len = header.payload_offset() + header.tail_len();
        BundleHead::from_parts(
            header,
            manifest.clone(),
            SIGNATURE_BLOCK,
            tail,
            file_len,
            limits,
        )
        .ok()?
        .manifest_unverified(limits)
        .ok()
    };
    let Some(streamed) = head(Vec::new(), &streamed_limits) else {
        return;
    };
    let whole = head(index.clone(), &whole_limits);
    let Some(stored) = streamed.streamed_index() else {
        assert!(
            streamed.chunk_count() == 0 || whole.is_none(),
            "an index not streamed"
        );
        return;
    };
    let chunks = IndexFile::spill(stored, &index[..], scratch()).map(|file| {
        file.chunks()
            .expect("a proven copy opens")
            .collect::<Result<Vec<_>, _>>()
            .expect("a proven copy decodes")
    });
    match (whole, chunks) {
        (Some(whole), Ok(chunks)) => assert_eq!(whole.chunks(), &chunks[..]),
        (None, Err(_)) => {}
        (whole, chunks) => panic!(
            "whole: {}, streamed: {:?}",
            if whole.is_some() {
                "accepted"
            } else {
                "refused"
            },
            chunks.map(|c| c.len())
        ),
    }
});
