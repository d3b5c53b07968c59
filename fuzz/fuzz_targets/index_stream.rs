//! The chunk index streamed from a proven copy on disk (what the agent does) against the same
//! index decoded whole with the head (what every other reader does). The input is the
//! `manifest` target's version 3 form: a u32 LE manifest length, the manifest region, then the
//! index records raw, compressed by the target and named in the manifest (hash and size), so
//! mutated records reach the record rules. Contract: no panic; the streamed copy is accepted
//! exactly when the whole index is, and then yields exactly the same chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signer::bundle::index::IndexFile;
use tandem_fuzz::{assert_same, decoded, left_in_bundle, read_both, rehash_tail, scratch};

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
    let Some((streamed, whole)) = read_both(&manifest, &index) else {
        return;
    };
    let Some(stored) = left_in_bundle(&streamed, &whole) else {
        return;
    };
    assert_same(
        whole,
        IndexFile::spill(stored, &index[..], scratch()).map(decoded),
    );
});
