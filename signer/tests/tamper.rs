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
    assert_eq!(c.bundle[7], 3, "the signer writes format version 3");
    c.bundle[7] = 4;
    let e = extract_bytes(&c.bundle, &c.f.root).unwrap_err();
    assert!(
        matches!(e, Error::Format(FormatError::UnsupportedVersion(4))),
        "{e:?}"
    );
    assert!(e.to_string().contains("versions 1, 2 and 3"), "{e}");
}

#[test]
fn attack_header_version_lowered_to_2_is_refused() {
    // The header is not signed: read as version 2 its last 8 bytes (dictionary and index
    // lengths) become the manifest's first and every later region moves, so the signatures
    // no longer cover what is read as the manifest.
    let mut c = case();
    c.bundle[7] = 2;
    let e = extract_bytes(&c.bundle, &c.f.root).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Format(FormatError::Field {
                section: Section::SignatureBlock,
                ..
            }) | Error::Format(FormatError::Json {
                section: Section::SignatureBlock,
                ..
            })
        ),
        "{e:?}"
    );
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
    let pos = c.head.header().manifest_range().start as usize + 5; // inside the JSON text
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
    let last = c.head.header().manifest_range().end as usize - 1;
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
    let chunk = m.chunks().iter().find(|ch| !ch.is_zero()).copied().unwrap();
    let range = m.chunk_file_range(&chunk).unwrap();
    let mid = (range.start + range.end) as usize / 2;
    c.bundle[mid] ^= 0x55;
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Verify(VerifyError::Chunk { index, fault })) => {
            assert_eq!(index, chunk.index());
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
    // A byte cut out of the payload: the dictionary and index, read from the end, still match.
    c.bundle
        .remove(c.head.header().payload_offset() as usize + 3);
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Format(FormatError::Truncated { expected, actual })) => {
            assert_eq!((expected, actual), (full, full - 1));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

/// `e` is the signed manifest's `field` (`index` or `dictionary`) refusing what is stored.
fn assert_refused_region(e: &Error, field: &str, why: &str) {
    match e {
        Error::Format(FormatError::Field {
            section: Section::Manifest,
            field: f,
            reason,
        }) => {
            assert_eq!(f, field, "{e}");
            assert!(reason.contains(why), "{e}");
        }
        other => panic!("expected the `{field}` field to refuse, got {other:?}"),
    }
}

#[test]
fn attack_truncated_index() {
    let mut c = case();
    let full = c.bundle.len() as u64;
    c.bundle.pop();
    // The signed payload size tells a short file as such, before its last bytes are read as
    // the index.
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Format(FormatError::Truncated { expected, actual })) => {
            assert_eq!((expected, actual), (full, full - 1));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn attack_index_byte_flipped() {
    let mut c = case();
    // Inside the zstd frame of the index's lengths, its first part (FORMAT §3.2.1): the
    // signed hash covers it.
    let index_start = c.bundle.len() - c.head.header().index_len as usize;
    c.bundle[index_start + 8] ^= 0x01;
    let e = extract_bytes(&c.bundle, &c.f.root).unwrap_err();
    assert_refused_region(&e, "index", "hash to");
    assert!(e.to_string().contains("chunk index") || e.to_string().contains("`index`"));
}

#[test]
fn attack_index_hash_column_byte_flipped() {
    let mut c = case();
    // The last chunk hash of the column: its group's table entry refuses it.
    let last = c.bundle.len() - 1;
    c.bundle[last] ^= 0x01;
    let e = extract_bytes(&c.bundle, &c.f.root).unwrap_err();
    match &e {
        Error::Format(FormatError::Field {
            section: Section::Index,
            field,
            reason,
        }) => assert!(
            field.starts_with("group ") && reason.contains("the table says"),
            "{e}"
        ),
        other => panic!("expected a group of the index to refuse, got {other:?}"),
    }
}

#[test]
fn attack_header_index_length_changed() {
    let mut c = case();
    // Bytes 20..24: the index length. One more takes the payload's last byte into the index.
    let len = u32::from_le_bytes(c.bundle[20..24].try_into().unwrap());
    assert_eq!(len, c.head.header().index_len);
    c.bundle[20..24].copy_from_slice(&(len + 1).to_le_bytes());
    let e = extract_bytes(&c.bundle, &c.f.root).unwrap_err();
    assert_refused_region(&e, "index", &format!("the header says {} bytes", len + 1));
}

#[test]
fn attack_dictionary_byte_flipped() {
    let f = fixture();
    let image = text_image(1 << 20, 3);
    let mut opts = test_options();
    opts.dictionary = Some(dictionary_for(&image));
    let mut bundle = sign_image_with(&image, &opts, &[&f.release[0], &f.release[1]]);
    assert_eq!(extract_bytes(&bundle, &f.root).unwrap(), image);
    let head = BundleHead::read(&mut Cursor::new(&bundle), &Limits::default()).unwrap();
    let header = *head.header();
    assert!(header.dictionary_len > 1000);
    let dictionary_start = bundle.len() - header.tail_len() as usize;
    bundle[dictionary_start + 100] ^= 0x01;
    let e = extract_bytes(&bundle, &f.root).unwrap_err();
    assert_refused_region(&e, "dictionary", "hash to");
}

#[test]
fn attack_dictionary_length_changed() {
    let mut c = case();
    // A bundle without a dictionary that claims one: its signed manifest names none.
    assert_eq!(&c.bundle[16..20], &[0; 4]);
    c.bundle[16] = 1;
    let e = extract_bytes(&c.bundle, &c.f.root).unwrap_err();
    assert_refused_region(&e, "dictionary", "the header says 1 bytes");
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
fn attack_data_inserted_before_the_dictionary_and_index() {
    let mut c = case();
    let full = c.bundle.len() as u64;
    let tail_start = c.bundle.len() - c.head.header().tail_len() as usize;
    c.bundle.splice(tail_start..tail_start, *b"extra");
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Format(FormatError::TrailingData { expected, actual })) => {
            assert_eq!((expected, actual), (full, full + 5))
        }
        other => panic!("expected TrailingData, got {other:?}"),
    }
}

#[test]
fn attack_appended_tail() {
    let mut c = case();
    let full = c.bundle.len() as u64;
    c.bundle.extend_from_slice(b"extra");
    // The signed payload size tells trailing bytes as such.
    match extract_bytes(&c.bundle, &c.f.root) {
        Err(Error::Format(FormatError::TrailingData { expected, actual })) => {
            assert_eq!((expected, actual), (full, full + 5));
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
    let header = *BundleHead::read(&mut Cursor::new(&a), &Limits::default())
        .unwrap()
        .header();
    let head_len = header.payload_offset() as usize;
    let tail_len = header.tail_len() as usize;
    // A's signed head (header, manifest, signatures) and A's index around B's payload.
    let mut mixed = a[..head_len].to_vec();
    mixed.extend_from_slice(&b[head_len..b.len() - tail_len]);
    mixed.extend_from_slice(&a[a.len() - tail_len..]);
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
