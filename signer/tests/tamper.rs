//! Tampering: each modification of a signed bundle is rejected with the specific error that
//! names it, and nothing of a tampered bundle's payload is released.

use std::io::Cursor;

use signer::bundle::BundleHead;
use signer::{ChunkFault, Error, FormatError, Limits, Section, VerifyError};

use crate::util::*;

struct Case {
    f: Fixture,
    bundle: Vec<u8>,
    head: BundleHead,
}

fn case() -> Case {
    let f = fixture();
    let bundle = sign_image(
        &sparse_image(40_000, 5),
        4096,
        &[&f.release[0], &f.release[1]],
    );
    let head = BundleHead::read(&mut Cursor::new(&bundle), &Limits::default()).unwrap();
    assert!(extract_bytes(&bundle, &f.root).is_ok());
    Case { f, bundle, head }
}

fn threshold_report(e: Error) -> Box<signer::ThresholdReport> {
    match e {
        Error::Verify(VerifyError::ThresholdNotMet(r)) => r,
        other => panic!("expected ThresholdNotMet, got {other:?}"),
    }
}

#[test]
fn attack_header_magic_flipped() {
    let mut c = case();
    c.bundle[0] ^= 1;
    assert!(matches!(
        extract_bytes(&c.bundle, &c.f.root),
        Err(Error::Format(FormatError::BadMagic { .. }))
    ));
}

#[test]
fn attack_header_version_changed() {
    let mut c = case();
    c.bundle[7] = 3;
    assert!(matches!(
        extract_bytes(&c.bundle, &c.f.root),
        Err(Error::Format(FormatError::UnsupportedVersion(3)))
    ));
}

#[test]
fn attack_header_version_raised_to_assets_is_refused_by_the_signed_manifest() {
    // The header is not signed, but the version must agree with the signed manifest: a
    // version-2 bundle without `assets` is refused after the signature check.
    let mut c = case();
    c.bundle[7] = 2;
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Format(FormatError::Field {
            section: Section::Manifest,
            field,
            ..
        })) => assert_eq!(field, "assets"),
        other => panic!("expected a refused `assets` field, got {other:?}"),
    }
}

#[test]
fn attack_header_manifest_length_changed() {
    let mut c = case();
    c.bundle[8] = c.bundle[8].wrapping_add(1);
    // The signature block now starts one byte late, at `"signatures"` instead of `{`: refused
    // before the manifest is parsed or any payload is read.
    assert!(matches!(
        extract_bytes(&c.bundle, &c.f.root),
        Err(Error::Format(FormatError::Field {
            section: Section::SignatureBlock,
            ..
        }))
    ));
}

#[test]
fn attack_manifest_byte_flipped() {
    let mut c = case();
    let pos = 16 + 5; // inside the JSON text
    c.bundle[pos] ^= 0x20;
    let r = threshold_report(extract_bytes(&c.bundle, &c.f.root).unwrap_err());
    assert!(r.valid.is_empty());
    assert_eq!(
        r.invalid.len(),
        2,
        "both signatures fail over the changed bytes"
    );
}

#[test]
fn attack_manifest_padding_changed() {
    let mut c = case();
    let last = 16 + c.head.header().manifest_len as usize - 1;
    assert_eq!(
        c.bundle[last], b' ',
        "the manifest region ends with padding"
    );
    c.bundle[last] = b'\n';
    let r = threshold_report(extract_bytes(&c.bundle, &c.f.root).unwrap_err());
    assert_eq!(r.invalid.len(), 2, "padding is inside the signed bytes");
}

#[test]
fn attack_signature_bytes_flipped() {
    let mut c = case();
    let start = c.head.header().signature_block_range().start as usize;
    let block = &c.bundle[start..start + c.head.header().signature_block_len as usize];
    let sig_pos = start + block.windows(7).position(|w| w == b"\"sig\":\"").unwrap() + 7;
    c.bundle[sig_pos] = if c.bundle[sig_pos] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let r = threshold_report(extract_bytes(&c.bundle, &c.f.root).unwrap_err());
    assert_eq!(r.valid.len(), 1);
    assert_eq!(r.invalid.len(), 1);
    assert!(!r.missing.is_empty());
}

#[test]
fn attack_signature_block_json_broken() {
    let mut c = case();
    let start = c.head.header().signature_block_range().start as usize;
    c.bundle[start] = b'[';
    assert!(matches!(
        extract_bytes(&c.bundle, &c.f.root),
        Err(Error::Format(FormatError::Field {
            section: Section::SignatureBlock,
            ..
        }))
    ));
    c.bundle[start] = b'{';
    c.bundle[start + 2] ^= 0x01; // `"signatures"` misspelt
    assert!(matches!(
        extract_bytes(&c.bundle, &c.f.root),
        Err(Error::Format(FormatError::Json {
            section: Section::SignatureBlock,
            ..
        }))
    ));
}

#[test]
fn attack_data_hidden_in_signature_padding() {
    let mut c = case();
    let end = c.head.header().signature_block_range().end as usize;
    c.bundle[end - 1] = b'X';
    assert!(matches!(
        extract_bytes(&c.bundle, &c.f.root),
        Err(Error::Format(FormatError::BadPadding {
            section: Section::SignatureBlock,
            ..
        }))
    ));
}

#[test]
fn attack_payload_byte_flipped() {
    let mut c = case();
    let m = open(&c.bundle, &c.f.root).unwrap();
    let chunk = m.chunks().iter().find(|ch| !ch.is_zero()).unwrap().clone();
    let range = m.chunk_file_range(&chunk).unwrap();
    let mid = (range.start + range.end) as usize / 2;
    c.bundle[mid] ^= 0x55;
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Verify(VerifyError::Chunk { index, fault })) => {
            assert_eq!(index, chunk.index);
            assert!(
                matches!(
                    fault,
                    ChunkFault::Hash { .. }
                        | ChunkFault::Decompress { .. }
                        | ChunkFault::Length { .. }
                ),
                "{fault:?}"
            );
        }
        other => panic!("expected a chunk error, got {other:?}"),
    }
}

#[test]
fn attack_truncated_payload() {
    let mut c = case();
    let full = c.bundle.len() as u64;
    c.bundle.pop();
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Format(FormatError::Truncated { expected, actual })) => {
            assert_eq!((expected, actual), (full, full - 1));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn attack_truncated_inside_head() {
    let mut c = case();
    c.bundle.truncate(100);
    assert!(matches!(
        extract_bytes(&c.bundle, &c.f.root),
        Err(Error::Format(FormatError::Truncated { actual: 100, .. }))
    ));
    c.bundle.truncate(10);
    assert!(matches!(
        extract_bytes(&c.bundle, &c.f.root),
        Err(Error::Format(FormatError::Truncated { actual: 10, .. }))
    ));
}

#[test]
fn attack_appended_tail() {
    let mut c = case();
    let full = c.bundle.len() as u64;
    c.bundle.extend_from_slice(b"extra");
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Format(FormatError::TrailingData { expected, actual })) => {
            assert_eq!((expected, actual), (full, full + 5))
        }
        other => panic!("expected TrailingData, got {other:?}"),
    }
}

/// Two bundles of random images of the same size: their payloads have the same length, so a
/// swapped manifest passes every length check and must be caught by the chunk hashes.
fn two_bundles() -> (Fixture, Vec<u8>, Vec<u8>) {
    let f = fixture();
    let random = |seed: u64| {
        let mut x = seed;
        (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect::<Vec<u8>>()
    };
    let a = sign_image(&random(1), 4096, &[&f.release[0], &f.release[1]]);
    let b = sign_image(&random(2), 4096, &[&f.release[0], &f.release[1]]);
    assert_eq!(
        a.len(),
        b.len(),
        "incompressible chunks give equal-length frames"
    );
    (f, a, b)
}

#[test]
fn attack_manifest_swapped_from_another_bundle() {
    let (f, a, b) = two_bundles();
    let head_len = BundleHead::read(&mut Cursor::new(&a), &Limits::default())
        .unwrap()
        .header()
        .payload_offset() as usize;
    // A's signed head (header, manifest, signatures) in front of B's payload.
    let mut mixed = a[..head_len].to_vec();
    mixed.extend_from_slice(&b[head_len..]);
    match extract_bytes(&mixed, &f.root) {
        Err(Error::Verify(VerifyError::Chunk {
            index: 0,
            fault: ChunkFault::Hash { .. },
        })) => {}
        other => panic!("expected chunk 0 hash mismatch, got {other:?}"),
    }
}

#[test]
fn attack_manifest_swapped_keeping_the_signatures() {
    let (f, a, b) = two_bundles();
    let hb = BundleHead::read(&mut Cursor::new(&b), &Limits::default()).unwrap();
    let m = hb.header().manifest_range();
    // B's manifest with A's header, signatures and payload.
    let mut mixed = a.clone();
    mixed[m.start as usize..m.end as usize].copy_from_slice(&b[m.start as usize..m.end as usize]);
    let r = threshold_report(extract_bytes(&mixed, &f.root).unwrap_err());
    assert_eq!(r.invalid.len(), 2);
}
