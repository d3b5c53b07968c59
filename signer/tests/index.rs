//! The chunk index of format version 3 (FORMAT §3.2), written by hand (40-byte records in one
//! zstd frame after the payload) with no help from the library's writer: the example of
//! FORMAT §9.2 verifies and extracts, its frame shared by two chunks included; each record rule broken is refused
//! by the parser, naming the record.

use std::io::Cursor;

use sha2::{Digest, Sha256};
use signer::bundle::{decode_piece, extract, BundleHead};
use signer::schema::pieces;
use signer::verify::trust_root;
use signer::{Error, FormatError, Limits, Manifest, SecretKey, Section};
use time::macros::datetime;

use crate::util::*;

/// The frame length of a record whose chunk continues the frame before it.
const CONTINUED: u32 = u32::MAX;

/// A hand-written version 3 bundle: its records, the image they describe and the manifest
/// fields that frame them.
struct Spec {
    image: Vec<u8>,
    /// `(sha256, raw_len, frame_len)` per chunk.
    records: Vec<([u8; 32], u32, u32)>,
    payload: Vec<u8>,
    /// `(min, avg, max)`.
    chunking: (u32, u32, u32),
    /// The manifest's `index.count` (the records' number unless a test changes it).
    count: usize,
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// 4 KiB blocks `a`, `b`, zeros, then 1808 bytes of `c`: `a` and `b` share one frame
/// (`b` CONTINUED), the zero block has none, `c` has its own.
fn valid() -> Spec {
    let (a, b, zero, c) = (
        vec![b'a'; 4096],
        vec![b'b'; 4096],
        vec![0u8; 4096],
        vec![b'c'; 1808],
    );
    let shared = zstd::bulk::compress(&[a.clone(), b.clone()].concat(), 3).unwrap();
    let last = zstd::bulk::compress(&c, 3).unwrap();
    let records = vec![
        (sha(&a), 4096, shared.len() as u32),
        (sha(&b), 4096, CONTINUED),
        (sha(&zero), 4096, 0),
        (sha(&c), 1808, last.len() as u32),
    ];
    Spec {
        image: [a, b, zero, c].concat(),
        records,
        payload: [shared, last].concat(),
        chunking: (4096, 4096, 4096),
        count: 4,
    }
}

/// The stored index: the records end to end, one zstd frame.
fn stored_index(spec: &Spec) -> Vec<u8> {
    let mut raw = Vec::new();
    for (sha256, raw_len, frame_len) in &spec.records {
        raw.extend_from_slice(sha256);
        raw.extend_from_slice(&raw_len.to_le_bytes());
        raw.extend_from_slice(&frame_len.to_le_bytes());
    }
    zstd::bulk::compress(&raw, 3).unwrap()
}

/// The canonical manifest of `spec` for its stored index `index`.
fn manifest(spec: &Spec, index: &[u8]) -> String {
    let (min, avg, max) = spec.chunking;
    format!(
        concat!(
            r#"{{"chunk_size":4096,"chunking":{{"avg":{avg},"max":{max},"min":{min}}},"#,
            r#""created":"2026-01-01T00:00:00Z","image":{{"sha256":"{image}","size":{size}}},"#,
            r#""index":{{"count":{count},"sha256":"{index_sha}","size":{index_len}}},"#,
            r#""payload_size":{payload},"product":"example","security_version":1,"version":"1.0.0"}}"#
        ),
        payload = spec.payload.len(),
        avg = avg,
        max = max,
        min = min,
        image = hex::encode(sha(&spec.image)),
        size = spec.image.len(),
        count = spec.count,
        index_sha = hex::encode(sha(index)),
        index_len = index.len(),
    )
}

fn bundle(spec: &Spec, key: &SecretKey) -> Vec<u8> {
    let index = stored_index(spec);
    handbuilt_bundle(&manifest(spec, &index), &spec.payload, 3, &index, key)
}

/// Parses `spec`'s bundle without a signature check (the parser's rules are under test).
fn parse(spec: &Spec) -> Result<Manifest, Error> {
    let b = bundle(spec, &SecretKey::generate());
    let head = BundleHead::read(&mut Cursor::new(&b), &Limits::default())?;
    head.manifest_unverified(&Limits::default())
}

/// `spec` is refused by the index rules, at `field`, for a reason containing `why`.
fn refused(spec: &Spec, field: &str, why: &str) {
    match parse(spec) {
        Err(Error::Format(FormatError::Field {
            section: Section::Index,
            field: f,
            reason,
        })) => {
            assert_eq!(f, field, "{reason}");
            assert!(reason.contains(why), "{field}: {reason}");
        }
        other => panic!("expected the index to be refused at {field}: {other:?}"),
    }
}

#[test]
fn a_handwritten_version_3_bundle_verifies_and_extracts() {
    let key = SecretKey::generate();
    let spec = valid();
    let b = bundle(&spec, &key);
    assert_eq!(&b[..8], b"TANDEM\0\x03");
    // The figures of FORMAT §9.2 (zstd 1.5.7, level 3).
    let frames: Vec<u32> = spec.records.iter().map(|r| r.2).collect();
    assert_eq!(frames, [23, CONTINUED, 0, 19]);
    assert_eq!(manifest(&spec, &stored_index(&spec)).len(), 381);
    assert_eq!(stored_index(&spec).len(), 169);
    assert_eq!(b.len(), 24 + 1024 + 512 + 42 + 169);
    assert_eq!(
        b[..24],
        *b"TANDEM\0\x03\x00\x04\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\xa9\x00\x00\x00"
    );
    let index_len = stored_index(&spec).len();
    assert_eq!(b[16..20], [0; 4], "no dictionary");
    assert_eq!(b[20..24], (index_len as u32).to_le_bytes());

    let root_key = SecretKey::generate();
    let expires = datetime!(2099-01-01 0:00 UTC);
    let root_bytes = root_doc(1, expires, &[&root_key], 1, &[&key], 1, &[&root_key]);
    let root = trust_root(&root_bytes, now(), &Limits::default()).unwrap();
    let limits = Limits::default();
    let m = BundleHead::read(&mut Cursor::new(&b), &limits)
        .unwrap()
        .verify(&root, &limits)
        .unwrap();
    assert_eq!(m.payload_offset(), 24 + 1024 + 512);
    assert_eq!(m.file_len(), b.len() as u64);
    assert_eq!(m.chunk_count(), 4);
    assert_eq!(m.zero_chunks(), 1);
    // `a` and `b` share the first frame; `c`'s frame follows it.
    let frames: Vec<_> = m
        .chunks()
        .iter()
        .map(|c| c.frame().map(|f| (f.offset, f.length)))
        .collect();
    let shared = spec.records[0].2 as u64;
    assert_eq!(frames[0], Some((0, shared)));
    assert_eq!(frames[1], frames[0]);
    assert_eq!(frames[2], None);
    assert_eq!(frames[3], Some((shared, spec.records[3].2 as u64)));
    let lens: Vec<usize> = pieces(m.chunks()).map(<[_]>::len).collect();
    assert_eq!(lens, [2, 1, 1]);
    // The shared frame, fetched alone, decodes to both chunks.
    let first = pieces(m.chunks()).next().unwrap();
    let range = m.chunk_file_range(&first[0]).unwrap();
    let bytes = decode_piece(&m, first, &b[range.start as usize..range.end as usize]).unwrap();
    assert_eq!(bytes, spec.image[..8192]);
    let mut out = Vec::new();
    extract(&m, Cursor::new(&b), &mut out, &mut |_| {}).unwrap();
    assert_eq!(out, spec.image);
}

#[test]
fn a_raw_length_that_breaks_the_chunking_is_refused() {
    let mut spec = valid();
    spec.records[1].1 = 4095;
    refused(
        &spec,
        "record 1",
        "raw length 4095 breaks fixed 4096 B blocks",
    );
    // Content-defined: every chunk but the last is a multiple of 4 KiB, at least `min`.
    let mut spec = valid();
    spec.chunking = (4096, 8192, 16384);
    spec.records[0].1 = 5000;
    refused(
        &spec,
        "record 0",
        "raw length 5000 breaks FastCDC 4096/8192/16384 B",
    );
    let mut spec = valid();
    spec.records[3].1 = 0;
    refused(&spec, "record 3", "raw length 0");
}

#[test]
fn continued_as_the_first_record_is_refused() {
    let mut spec = valid();
    spec.records[0].2 = CONTINUED;
    refused(&spec, "record 0", "follows no stored chunk");
}

#[test]
fn continued_after_an_all_zero_chunk_is_refused() {
    let mut spec = valid();
    spec.records[3].2 = CONTINUED;
    refused(&spec, "record 3", "follows no stored chunk");
}

#[test]
fn a_stored_chunk_whose_hash_is_that_of_zeros_is_refused() {
    let mut spec = valid();
    spec.records[2].2 = 20;
    refused(
        &spec,
        "record 2",
        "stored chunk whose sha256 is that of zeros",
    );
}

#[test]
fn an_all_zero_chunk_with_another_hash_is_refused() {
    let mut spec = valid();
    spec.records[2].0 = sha(b"not zeros");
    refused(
        &spec,
        "record 2",
        "zero chunk whose sha256 is not that of zeros",
    );
}

#[test]
fn a_frame_too_long_for_its_raw_bytes_is_refused() {
    let mut spec = valid();
    let bound = zstd::zstd_safe::compress_bound(1808) as u32;
    spec.records[3].2 = bound + 1;
    spec.payload
        .resize(spec.records[0].2 as usize + bound as usize + 1, 0);
    refused(
        &spec,
        "last frame",
        &format!(
            "frame length {} above {bound} for 1808 raw bytes",
            bound + 1
        ),
    );
    // A shared frame is bounded by all its chunks' bytes, checked when the next one starts.
    let mut spec = valid();
    let bound = zstd::zstd_safe::compress_bound(8192) as u32;
    spec.records[0].2 = bound + 1;
    refused(
        &spec,
        "record 2",
        &format!("above {bound} for 8192 raw bytes"),
    );
}

#[test]
fn records_that_do_not_cover_the_image_are_refused() {
    let mut spec = valid();
    spec.image.push(b'c');
    refused(
        &spec,
        "",
        "the chunks cover 14096 bytes, the image has 14097",
    );
    let mut spec = valid();
    spec.records.pop();
    spec.count = 3;
    refused(
        &spec,
        "",
        "the chunks cover 12288 bytes, the image has 14096",
    );
}

#[test]
fn an_index_with_more_or_fewer_records_than_signed_is_refused() {
    for count in [3, 5] {
        let mut spec = valid();
        spec.count = count;
        refused(&spec, "", &format!("{count} records"));
    }
}

#[test]
fn a_dictionary_member_without_a_stored_dictionary_is_refused() {
    let spec = valid();
    let index = stored_index(&spec);
    // FORMAT §3.2: `dictionary` is present exactly when D > 0; here D = 0 and the member
    // names the empty string, whose hash and size the stored (absent) bytes match.
    let manifest = manifest(&spec, &index).replace(
        r#""created":"2026-01-01T00:00:00Z","#,
        &format!(
            r#""created":"2026-01-01T00:00:00Z","dictionary":{{"sha256":"{}","size":0}},"#,
            hex::encode(sha(b""))
        ),
    );
    let key = SecretKey::generate();
    let b = handbuilt_bundle(&manifest, &spec.payload, 3, &index, &key);
    let head = BundleHead::read(&mut Cursor::new(&b), &Limits::default()).unwrap();
    match head.manifest_unverified(&Limits::default()) {
        Err(Error::Format(FormatError::Field {
            section: Section::Manifest,
            field,
            reason,
        })) => {
            assert_eq!(field, "dictionary");
            assert!(reason.contains("exactly when D > 0"), "{reason}");
        }
        other => panic!("expected the dictionary member refused: {other:?}"),
    }
    let err = stderr(&verify_refused(&b, &key));
    assert!(err.contains("dictionary") && err.contains("D = 0"), "{err}");
}

/// `tandem-signer verify` of `bundle`, signed by `key`, under a root whose release key it is:
/// it must fail.
fn verify_refused(bundle: &[u8], key: &SecretKey) -> std::process::Output {
    let d = Dir::new();
    let root_key = SecretKey::generate();
    let expires = datetime!(2099-01-01 0:00 UTC);
    let root = root_doc(1, expires, &[&root_key], 1, &[key], 1, &[&root_key]);
    std::fs::write(d.path("root.json"), root).unwrap();
    std::fs::write(d.path("b.tandem"), bundle).unwrap();
    d.fails(&["verify", "b.tandem", "--root", "root.json"])
}

/// `raw` as one streamed zstd frame (a Window_Descriptor, no single segment) whose descriptor
/// is rewritten to declare a 2 GiB window: its blocks are unchanged, and a one-shot decoder
/// still decodes it.
fn frame_declaring_2_gib_window(raw: &[u8]) -> Vec<u8> {
    let mut frame = zstd::stream::encode_all(raw, 3).unwrap();
    assert_eq!(
        frame[4] & 0x20,
        0,
        "a streamed frame has a Window_Descriptor"
    );
    frame[5] = (31 - 10) << 3;
    assert_eq!(zstd::bulk::decompress(&frame, raw.len()).unwrap(), raw);
    frame
}

#[test]
fn attack_frame_declaring_a_2_gib_window_is_refused() {
    let window = "declares a 2147483648-byte window, more than 134217728";
    // The image's last frame.
    let mut spec = valid();
    let frame = frame_declaring_2_gib_window(&[b'c'; 1808]);
    spec.payload.truncate(spec.records[0].2 as usize);
    spec.payload.extend_from_slice(&frame);
    spec.records[3].2 = frame.len() as u32;
    let key = SecretKey::generate();
    let err = stderr(&verify_refused(&bundle(&spec, &key), &key));
    assert!(err.contains("chunk 3") && err.contains(window), "{err}");
    // The stored index.
    let spec = valid();
    let raw = zstd::bulk::decompress(&stored_index(&spec), 1 << 20).unwrap();
    let index = frame_declaring_2_gib_window(&raw);
    let b = handbuilt_bundle(&manifest(&spec, &index), &spec.payload, 3, &index, &key);
    let err = stderr(&verify_refused(&b, &key));
    assert!(err.contains("index") && err.contains(window), "{err}");
}

#[test]
fn a_chunking_whose_max_is_far_above_its_avg_is_refused() {
    // Content-defined chunks cut near avg: a max 4096 times avg only made every cut (the
    // signer's and a node scanning its slots) hold that much more.
    let mut spec = valid();
    spec.chunking = (4096, 4096, 16 << 20);
    match parse(&spec) {
        Err(Error::Format(FormatError::Field {
            section: Section::Manifest,
            field,
            reason,
        })) => {
            assert_eq!(field, "chunking");
            assert!(reason.contains("max must be at most 8 x avg"), "{reason}");
        }
        other => panic!("expected the chunking refused: {other:?}"),
    }
}
