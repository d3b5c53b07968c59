//! docs/FORMAT.md against the parser, with hostile bytes: each MUST a writer could break,
//! broken on purpose in an otherwise valid and validly signed file, which must be refused
//! (by the library, and by `tandem-signer verify` for the payload rules).

use std::io::Cursor;

use sha2::{Digest, Sha256};
use signer::bundle::{extract, BundleHead};
use signer::metadata::sign_document;
use signer::verify::trust_root;
use signer::{
    ChunkFault, Error, FormatError, Limits, Manifest, RoleKind, SecretKey, Verified, VerifyError,
};
use time::macros::datetime;

use crate::util::*;

/// A root (expiring in 2099) whose one release key signs the hand-built bundles.
struct Keys {
    release: SecretKey,
    root_bytes: Vec<u8>,
}

fn keys() -> Keys {
    let root = SecretKey::generate();
    let release = SecretKey::generate();
    let expires = datetime!(2099-01-01 0:00 UTC);
    let root_bytes = root_doc(1, expires, &[&root], 1, &[&release], 1, &[&root]);
    Keys {
        release,
        root_bytes,
    }
}

/// One chunk of 4096 raw bytes: what is stored for it (`None`: the zero form).
struct Part {
    raw: Vec<u8>,
    stored: Option<Vec<u8>>,
}

fn frame(raw: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(raw, 3).unwrap()
}

/// A skippable frame (RFC 8878 §3.1.2) carrying `data`.
fn skippable(data: &[u8]) -> Vec<u8> {
    let mut out = 0x184D_2A50u32.to_le_bytes().to_vec();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A bundle of 4096-byte chunks written by hand (FORMAT §2–§4), signed by `key`.
fn bundle(parts: &[Part], created: &str, version: &str, key: &SecretKey) -> Vec<u8> {
    let image: Vec<u8> = parts.iter().flat_map(|p| p.raw.clone()).collect();
    let mut entries = Vec::new();
    let mut payload = Vec::new();
    for part in parts {
        entries.push(match &part.stored {
            Some(bytes) => {
                let entry = format!(
                    r#"{{"length":{},"offset":{},"sha256":"{}"}}"#,
                    bytes.len(),
                    payload.len(),
                    sha(&part.raw)
                );
                payload.extend_from_slice(bytes);
                entry
            }
            None => format!(r#"{{"sha256":"{}","zero":true}}"#, sha(&part.raw)),
        });
    }
    let manifest = format!(
        r#"{{"chunk_size":4096,"chunks":[{}],"created":"{created}","image":{{"sha256":"{}","size":{}}},"product":"example","security_version":1,"version":"{version}"}}"#,
        entries.join(","),
        sha(&image),
        image.len()
    );
    handbuilt_bundle(&manifest, &payload, 1, &[], key)
}

fn verify(bundle: &[u8], keys: &Keys) -> Result<Verified<Manifest>, Error> {
    let limits = Limits::default();
    let root = trust_root(&keys.root_bytes, now(), &limits)?;
    BundleHead::read(&mut Cursor::new(bundle), &limits)?.verify(&root, &limits)
}

fn extracted(bundle: &[u8], keys: &Keys) -> Result<Vec<u8>, Error> {
    let manifest = verify(bundle, keys)?;
    let mut out = Vec::new();
    extract(&manifest, Cursor::new(bundle), &mut out, &mut |_| {})?;
    Ok(out)
}

fn data(byte: u8) -> Vec<u8> {
    (0..4096u32).map(|i| byte ^ (i % 7) as u8).collect()
}

fn stored(raw: Vec<u8>, stored: Vec<u8>) -> Part {
    Part {
        raw,
        stored: Some(stored),
    }
}

const CREATED: &str = "2026-01-01T00:00:00Z";

#[test]
fn the_hand_built_bundle_is_valid_as_built() {
    let keys = keys();
    let parts = [
        stored(data(b'a'), frame(&data(b'a'))),
        Part {
            raw: vec![0; 4096],
            stored: None,
        },
    ];
    let image = extracted(&bundle(&parts, CREATED, "1.0.0", &keys.release), &keys).unwrap();
    assert_eq!(image.len(), 8192);
}

fn refused_frame(stored_bytes: Vec<u8>) -> String {
    let keys = keys();
    let raw = data(b'a');
    let file = bundle(
        &[stored(raw, stored_bytes)],
        CREATED,
        "1.0.0",
        &keys.release,
    );
    // The manifest is signed and well formed: the head verifies; the payload is refused.
    verify(&file, &keys).unwrap();
    match extracted(&file, &keys) {
        Err(Error::Verify(VerifyError::Chunk {
            index: 0,
            fault: ChunkFault::Frame(reason),
        })) => reason,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_chunk_stored_as_two_frames_is_refused() {
    let raw = data(b'a');
    let mut two = frame(&raw[..2048]);
    two.extend(frame(&raw[2048..]));
    let reason = refused_frame(two);
    assert!(reason.contains("first frame ends"), "{reason}");
}

#[test]
fn unsigned_bytes_in_a_skippable_frame_are_refused() {
    let raw = data(b'a');
    let mut after = frame(&raw);
    after.extend(skippable(b"unsigned bytes riding in the payload"));
    let reason = refused_frame(after);
    assert!(reason.contains("first frame ends"), "{reason}");
    let mut before = skippable(b"unsigned");
    before.extend(frame(&raw));
    let reason = refused_frame(before);
    assert!(reason.contains("magic number"), "{reason}");
}

#[test]
fn tandem_signer_verify_refuses_a_chunk_of_two_frames() {
    let keys = keys();
    let raw = data(b'a');
    let mut two = frame(&raw[..2048]);
    two.extend(frame(&raw[2048..]));
    let d = Dir::new();
    let file = bundle(&[stored(raw, two)], CREATED, "1.0.0", &keys.release);
    std::fs::write(d.path("b.tandem"), file).unwrap();
    std::fs::write(d.path("root.json"), &keys.root_bytes).unwrap();
    let err = stderr(&d.fails(&["verify", "b.tandem", "--root", "root.json"]));
    assert!(
        err.contains("chunk 0") && err.contains("one zstd frame"),
        "{err}"
    );
}

#[test]
fn an_all_zero_chunk_stored_as_a_frame_is_refused() {
    let keys = keys();
    let zeros = vec![0u8; 4096];
    let file = bundle(
        &[stored(zeros.clone(), frame(&zeros))],
        CREATED,
        "1.0.0",
        &keys.release,
    );
    match verify(&file, &keys) {
        Err(Error::Format(FormatError::Field { field, reason, .. })) => {
            assert_eq!(field, "chunks[0]");
            assert!(reason.contains("zero form"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn times_outside_the_grammar_are_refused() {
    let keys = keys();
    let part = || stored(data(b'a'), frame(&data(b'a')));
    for created in ["2027-12-02 19:00:15Z", "2027-12-02T19:00:60Z"] {
        let file = bundle(&[part()], created, "1.0.0", &keys.release);
        match verify(&file, &keys) {
            Err(Error::Format(FormatError::Field { field, .. })) => assert_eq!(field, "created"),
            other => panic!("{created}: {other:?}"),
        }
    }
    let root = SecretKey::generate();
    let release = hex::encode(root.public().raw());
    let leap = hand_root(&root, "2099-12-31T23:59:60Z", &release);
    match trust_root(&leap, now(), &Limits::default()) {
        Err(Error::Format(FormatError::Field { field, .. })) => assert_eq!(field, "expires"),
        other => panic!("{other:?}"),
    }
    let fine = hand_root(&root, "2099-12-31T23:59:59Z", &release);
    trust_root(&fine, now(), &Limits::default()).unwrap();
}

/// A root written by hand: `root` holds the root role, the key `release_hex` (raw public
/// key, hex) the release role; signed by `root`.
fn hand_root(root: &SecretKey, expires: &str, release_hex: &str) -> Vec<u8> {
    let root_hex = hex::encode(root.public().raw());
    let root_id = root.id();
    let release_id = sha(&hex::decode(release_hex).unwrap());
    let mut keys = vec![(root_id.to_hex(), root_hex)];
    if release_id != root_id.to_hex() {
        keys.push((release_id.clone(), release_hex.to_owned()));
    }
    let keys: Vec<String> = keys
        .iter()
        .map(|(id, public)| format!(r#""{id}":{{"keytype":"ed25519","public":"{public}"}}"#))
        .collect();
    let signed = format!(
        r#"{{"expires":"{expires}","keys":{{{}}},"roles":{{"release":{{"keyids":["{release_id}"],"threshold":1}},"root":{{"keyids":["{root_id}"],"threshold":1}}}},"version":1}}"#,
        keys.join(",")
    );
    sign_document(RoleKind::Root, signed.as_bytes(), &[clone_key(root)]).unwrap()
}

#[test]
fn small_order_keys_in_a_root_are_refused() {
    let root = SecretKey::generate();
    // The identity point (y = 1), and the point of order 2 (y = -1): both small order.
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for weak in [identity, minus_one] {
        let doc = hand_root(&root, "2099-01-01T00:00:00Z", &hex::encode(weak));
        match trust_root(&doc, now(), &Limits::default()) {
            Err(Error::Format(FormatError::Field { field, reason, .. })) => {
                assert_eq!(field, format!("keys.{}", sha(&weak)));
                assert!(reason.contains("small order"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_version_too_long_for_the_bundle_file_name_is_refused() {
    let keys = keys();
    let version = format!("1.0.0-{}", "r".repeat(60));
    let file = bundle(
        &[stored(data(b'a'), frame(&data(b'a')))],
        CREATED,
        &version,
        &keys.release,
    );
    match verify(&file, &keys) {
        Err(Error::Format(FormatError::Field { field, reason, .. })) => {
            assert_eq!(field, "version");
            assert!(reason.contains("longer than 64"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_shorter_than_the_header_is_truncated() {
    for len in [0, 5, 15] {
        let bytes = &b"TANDEM\0\x01\0\x02\0\0\0\x02\0\0"[..len];
        match BundleHead::read(&mut Cursor::new(bytes), &Limits::default()) {
            Err(Error::Format(FormatError::Truncated {
                expected: 16,
                actual,
            })) => assert_eq!(actual, len as u64),
            other => panic!("{len}: {other:?}"),
        }
    }
}
