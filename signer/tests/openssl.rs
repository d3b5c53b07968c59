//! OpenSSL interoperability, with the real `openssl` binary (a missing binary fails the test):
//! its Ed25519 keys work everywhere ours do, and it reads ours.

use std::path::Path;
use std::process::Command;

use signer::files::{read_public_key, read_secret_key};
use signer::{KeyId, Sha256Digest};

use crate::util::*;

fn openssl(dir: &Dir, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir.tmp.path())
        .output()
        .expect("the `openssl` binary is required for this test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn openssl_reads_our_keys() {
    let d = Dir::new();
    let id = stdout(&d.ok(&["keygen", "--out", "ours"]))
        .trim()
        .to_owned();
    openssl(&d, &["pkey", "-in", "ours.pem", "-noout"]);
    openssl(&d, &["pkey", "-pubin", "-in", "ours.pub.pem", "-noout"]);
    // OpenSSL derives the same public key from our private key, byte for byte.
    let derived = openssl(&d, &["pkey", "-in", "ours.pem", "-pubout"]);
    assert_eq!(derived, std::fs::read(d.path("ours.pub.pem")).unwrap());
    // The printed key id is sha256 of the raw public key.
    let raw = openssl(
        &d,
        &["pkey", "-in", "ours.pem", "-pubout", "-outform", "DER"],
    );
    assert_eq!(
        raw.len(),
        44,
        "SPKI DER of Ed25519 is 12 header bytes + 32 key bytes"
    );
    assert_eq!(id, Sha256Digest::of(&raw[12..]).to_hex());
    // A signature by OpenSSL with our key verifies with our code.
    std::fs::write(d.path("msg"), b"hello tandem").unwrap();
    openssl(
        &d,
        &[
            "pkeyutl", "-sign", "-rawin", "-inkey", "ours.pem", "-in", "msg", "-out", "sig",
        ],
    );
    let sig: [u8; 64] = std::fs::read(d.path("sig")).unwrap().try_into().unwrap();
    let public = read_public_key(&d.path("ours.pub.pem")).unwrap();
    assert!(public.verify(b"hello tandem", &sig));
}

#[test]
fn openssl_keys_work_everywhere_ours_do() {
    let d = Dir::new();
    for name in ["root", "r1", "r2"] {
        openssl(
            &d,
            &[
                "genpkey",
                "-algorithm",
                "ed25519",
                "-out",
                &format!("{name}.pem"),
            ],
        );
        openssl(
            &d,
            &[
                "pkey",
                "-in",
                &format!("{name}.pem"),
                "-pubout",
                "-out",
                &format!("{name}.pub.pem"),
            ],
        );
    }
    let key = read_secret_key(&d.path("r1.pem")).unwrap();
    assert_eq!(
        key.id(),
        KeyId::of(read_public_key(&d.path("r1.pub.pem")).unwrap().raw())
    );
    d.init_root(&["r1.pub.pem", "r2.pub.pem"], "2", &["--expires", "30d"]);
    std::fs::write(d.path("img"), sparse_image(70_000, 3)).unwrap();
    d.ok(&sign_args("b.tandem", &["r1.pem"], &[]));
    d.ok(&["add-signature", "b.tandem", "--key", "r2.pem"]);
    d.ok(&["verify", "b.tandem", "--root", "root.json"]);
    // And OpenSSL verifies a bundle signature over the documented message.
    let bundle = std::fs::read(d.path("b.tandem")).unwrap();
    let head = signer::bundle::BundleHead::read(
        &mut std::io::Cursor::new(&bundle),
        &signer::Limits::default(),
    )
    .unwrap();
    let mut msg = b"tandem-v1 bundle\n".to_vec();
    msg.extend_from_slice(head.manifest_bytes());
    std::fs::write(d.path("msg"), &msg).unwrap();
    let sig = head
        .signatures()
        .iter()
        .find(|s| s.keyid == key.id())
        .unwrap();
    std::fs::write(d.path("sig"), sig.sig).unwrap();
    openssl(
        &d,
        &[
            "pkeyutl",
            "-verify",
            "-rawin",
            "-pubin",
            "-inkey",
            "r1.pub.pem",
            "-in",
            "msg",
            "-sigfile",
            "sig",
        ],
    );
    assert!(Path::new(&d.path("root.json")).exists());
}
