//! A tree index (FORMAT §3.2.1) read three ways: decoded whole with the head (every reader
//! but the agent), spilled whole to a proven copy (an agent installing from a file), and
//! spilled head first with some groups filled by the caller before the rest is fetched (an
//! agent over HTTP holding those groups in its running slot). The input: a u32 LE manifest
//! length, the manifest region, a u32 LE length and the lengths records raw (compressed here),
//! a flag byte, then the rest. Flag bit 0 clear: the rest is the column of hashes and the
//! table is made here from it (right entries, so mutated records reach the record rules); set:
//! the rest is the table (as long as the manifest's `index.tree.table` says) then the column.
//! The other bits choose the groups filled. The manifest's `index` is rewritten to name the
//! three parts. Contract: no panic; the three ways accept alike and yield the same chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use signer::bundle::index::{IndexFile, StreamedIndex};
use tandem_fuzz::{
    assert_same, decoded, left_in_bundle, read_both, rehash_tree, scratch, tree_group,
};

/// Input cut in its parts: manifest, lengths records raw, flags, rest.
fn parts(data: &[u8]) -> Option<(&[u8], &[u8], u8, &[u8])> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let (manifest, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (lengths, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
    let (&flags, rest) = rest.split_first()?;
    Some((manifest, lengths, flags, rest))
}

/// The table a writer makes of `column` for `records` (lengths records of `record_len`
/// bytes, frame length at bytes 4..8) in groups of `group`: each group with a stored chunk,
/// the SHA-256 of its hashes.
fn table_of(records: &[u8], record_len: usize, group: usize, column: &[u8]) -> Vec<u8> {
    let mut table = Vec::new();
    let mut at = 0;
    for records in records.chunks(record_len * group.max(1)) {
        let stored = records
            .chunks_exact(record_len)
            .filter(|r| r.get(4..8).is_some_and(|f| f != [0; 4]))
            .count();
        if stored == 0 {
            continue;
        }
        let hashes = column
            .get(at..(at + 32 * stored).min(column.len()))
            .unwrap_or_default();
        table.extend_from_slice(&Sha256::digest(hashes));
        at += 32 * stored;
    }
    table
}

fuzz_target!(|data: &[u8]| {
    let Some((manifest, records, flags, rest)) = parts(data) else {
        return;
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(
        manifest.split(|&b| b == 0).next().unwrap_or_default(),
    ) else {
        return;
    };
    let group = tree_group(&doc).unwrap_or(64).clamp(1, 4096) as usize;
    let record_len = if doc.get("store").is_some() { 12 } else { 8 };
    let Ok(lengths) = zstd::bulk::compress(records, 3) else {
        return;
    };
    let (table, column) = if flags & 1 == 0 {
        (table_of(records, record_len, group, rest), rest)
    } else {
        let signed = doc["index"]["tree"]["table"].as_u64().unwrap_or(0) as usize;
        let (table, column) = rest.split_at(signed.min(rest.len()));
        (table.to_vec(), column)
    };
    let Some(manifest) = rehash_tree(manifest, &lengths, &table, column) else {
        return;
    };
    let index = [&lengths[..], &table, column].concat();
    let Some((streamed, whole)) = read_both(&manifest, &index) else {
        return;
    };
    let Some(stored) = left_in_bundle(&streamed, &whole) else {
        return;
    };
    let spilled = IndexFile::spill(stored, &index[..], scratch()).map(decoded);
    let filled = filled(stored, &index, flags >> 1).map(decoded);
    assert_eq!(
        spilled.as_ref().ok(),
        filled.as_ref().ok(),
        "spilled whole and filled disagree: {:?} / {:?}",
        spilled.as_ref().err(),
        filled.as_ref().err()
    );
    assert_same(whole, spilled);
});

/// The index spilled head first, the groups `mask` picks (group g when bit g % 7 is set)
/// filled from the column's own bytes, the rest fetched from `index`.
fn filled(stored: &StreamedIndex, index: &[u8], mask: u8) -> Result<IndexFile, signer::Error> {
    let start = stored.range().start;
    let slice = |range: std::ops::Range<u64>| {
        index
            .get((range.start - start) as usize..(range.end - start) as usize)
            .ok_or_else(|| std::io::Error::other("outside the index"))
    };
    let head_bytes = slice(stored.head_range()).map_err(signer::Error::io("reading the head"))?;
    let head = IndexFile::spill_head(stored, head_bytes, scratch())?;
    let column_start = stored.head_range().end;
    for group in head.groups()? {
        let group = group?;
        if mask & (1 << (group.number % 7)) == 0 {
            continue;
        }
        let Ok(bytes) = slice(column_start + group.column.start..column_start + group.column.end)
        else {
            continue;
        };
        let hashes: Vec<signer::Sha256Digest> = bytes
            .chunks_exact(32)
            .map(|h| signer::Sha256Digest(h.try_into().expect("32 bytes")))
            .collect();
        head.fill(&group, &hashes)?;
    }
    head.complete(slice)
}
