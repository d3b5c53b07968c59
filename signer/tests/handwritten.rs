//! A bundle, a root.json and a channel document written byte by byte from the example in
//! docs/FORMAT.md §9, with no help from the library's writers (only `zstd::bulk::compress`,
//! `ed25519_dalek` and `sha2`), must verify and extract with the library.

use std::io::Cursor;

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use signer::bundle::{decode_piece, extract, BundleHead};
use signer::verify::{check_release, trust_root, verify_channel};
use signer::Limits;
use time::macros::datetime;

/// FORMAT §9: the RFC 8032 test key 1.
const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn key() -> SigningKey {
    SigningKey::from_bytes(&hex::decode(SEED).unwrap().try_into().unwrap())
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn sign(prefix: &str, signed: &[u8]) -> String {
    let mut msg = prefix.as_bytes().to_vec();
    msg.extend_from_slice(signed);
    hex::encode(key().sign(&msg).to_bytes())
}

fn image() -> Vec<u8> {
    let mut img = vec![b'a'; 4096];
    img.extend(vec![0u8; 4096]);
    img.extend(vec![b'b'; 1808]);
    img
}

struct Example {
    bundle: Vec<u8>,
    root: Vec<u8>,
    keyid: String,
    manifest_len: usize,
}

fn build() -> Example {
    let public = key().verifying_key().to_bytes();
    let keyid = sha(&public);
    let img = image();
    let frame0 = zstd::bulk::compress(&img[..4096], 3).unwrap();
    let frame2 = zstd::bulk::compress(&img[8192..], 3).unwrap();

    // §3 manifest: canonical JSON (keys sorted, no whitespace), padded with spaces to 1024.
    let manifest_json = format!(
        concat!(
            r#"{{"chunk_size":4096,"chunks":["#,
            r#"{{"length":{l0},"offset":0,"sha256":"{h0}"}},"#,
            r#"{{"sha256":"{h1}","zero":true}},"#,
            r#"{{"length":{l2},"offset":{l0},"sha256":"{h2}"}}],"#,
            r#""created":"2026-01-01T00:00:00Z","image":{{"sha256":"{hi}","size":10000}},"#,
            r#""product":"example","security_version":1,"version":"1.0.0"}}"#
        ),
        l0 = frame0.len(),
        l2 = frame2.len(),
        h0 = sha(&img[..4096]),
        h1 = sha(&img[4096..8192]),
        h2 = sha(&img[8192..]),
        hi = sha(&img),
    );
    let mut manifest = manifest_json.into_bytes();
    let manifest_len = manifest.len();
    manifest.resize(1024, b' ');

    // §4 signature block: JSON, padded with spaces to 512.
    let sig = sign("tandem-v1 bundle\n", &manifest);
    let mut block =
        format!(r#"{{"signatures":[{{"keyid":"{keyid}","sig":"{sig}"}}]}}"#).into_bytes();
    block.resize(512, b' ');

    // §2 header: magic, version 1, u32 LE manifest length, u32 LE signature block length.
    let mut bundle = b"TANDEM\0\x01".to_vec();
    bundle.extend_from_slice(&1024u32.to_le_bytes());
    bundle.extend_from_slice(&512u32.to_le_bytes());
    bundle.extend_from_slice(&manifest);
    bundle.extend_from_slice(&block);
    bundle.extend_from_slice(&frame0);
    bundle.extend_from_slice(&frame2);

    // §6.2 root.json: the same key holds both roles.
    let pk = hex::encode(public);
    let root_signed = format!(
        r#"{{"expires":"2030-01-01T00:00:00Z","keys":{{"{keyid}":{{"keytype":"ed25519","public":"{pk}"}}}},"roles":{{"release":{{"keyids":["{keyid}"],"threshold":1}},"root":{{"keyids":["{keyid}"],"threshold":1}}}},"version":1}}"#
    );
    let root_sig = sign("tandem-v1 root\n", root_signed.as_bytes());
    let root = format!(
        r#"{{"signatures":[{{"keyid":"{keyid}","sig":"{root_sig}"}}],"signed":{root_signed}}}"#
    )
    .into_bytes();
    Example {
        bundle,
        root,
        keyid,
        manifest_len,
    }
}

#[test]
fn handwritten_bundle_verifies_and_extracts() {
    let ex = build();
    let now = datetime!(2026-06-01 0:00 UTC);
    let limits = Limits::default();
    let root = trust_root(&ex.root, now, &limits).unwrap();
    let head = BundleHead::read(&mut Cursor::new(&ex.bundle), &limits).unwrap();
    let m = head.verify(&root, &limits).unwrap();
    assert_eq!(m.signers()[0].to_hex(), ex.keyid);
    assert_eq!(
        (m.product(), m.version().to_string(), m.security_version()),
        ("example", "1.0.0".into(), 1)
    );
    assert_eq!(m.payload_offset(), 16 + 1024 + 512);
    assert_eq!(m.file_len(), ex.bundle.len() as u64);
    assert_eq!(m.zero_chunks(), 1);
    let mut out = Vec::new();
    extract(&m, Cursor::new(&ex.bundle), &mut out, &mut |_| {}).unwrap();
    assert_eq!(out, image());
    // Each chunk's file range, fetched alone, decodes on its own.
    let c2 = &m.chunks()[2];
    let r = m.chunk_file_range(c2).unwrap();
    assert_eq!(
        decode_piece(
            &m,
            std::slice::from_ref(c2),
            &ex.bundle[r.start as usize..r.end as usize]
        )
        .unwrap(),
        vec![b'b'; 1808]
    );
    println!(
        "FORMAT §9 figures: keyid {} manifest JSON {} bytes, frames {:?}, file {} bytes",
        ex.keyid,
        ex.manifest_len,
        m.chunks()
            .iter()
            .map(|c| c.frame().map(|f| (f.offset, f.length)))
            .collect::<Vec<_>>(),
        ex.bundle.len()
    );
}

#[test]
fn handwritten_channel_document_verifies_and_matches_the_bundle() {
    let ex = build();
    let manifest_sha = sha(&ex.bundle[16..16 + 1024]);
    let size = ex.bundle.len();
    let signed = format!(
        r#"{{"channel":"stable","expires":"2030-01-01T00:00:00Z","release":{{"bundle":"bundles/example-1.0.0.tandem","manifest_sha256":"{manifest_sha}","product":"example","security_version":1,"size":{size},"version":"1.0.0"}},"rollout":{{"percent":100,"salt":"00112233445566778899aabbccddeeff"}},"version":1}}"#
    );
    let sig = sign("tandem-v1 channel\n", signed.as_bytes());
    let doc = format!(
        r#"{{"signatures":[{{"keyid":"{}","sig":"{sig}"}}],"signed":{signed}}}"#,
        ex.keyid
    );
    let now = datetime!(2026-06-01 0:00 UTC);
    let limits = Limits::default();
    let root = trust_root(&ex.root, now, &limits).unwrap();
    let channel = verify_channel(&root, doc.as_bytes(), "stable", 1, now, &limits).unwrap();
    let head = BundleHead::read(&mut Cursor::new(&ex.bundle), &limits).unwrap();
    check_release(&channel, &head.verify(&root, &limits).unwrap()).unwrap();
}
