//! A verified root (docs/DESIGN.md §5.2): a release whose image ends with its dm-verity hash
//! area, the root hash signed in the manifest and named by the UKI's `roothash=`. On a disk
//! image file with systemd-boot and the reference firmware: the agent writes and checks the
//! tree like any other byte, the slot then passes `veritysetup verify` (and fails it with one
//! byte flipped), `status` shows each slot's root hash, and a release whose UKI names another
//! root hash is refused before any write. Through the real `tandem-signer`: its hash file is
//! the one `veritysetup` reads and writes, and `sign` refuses a UKI of another root hash.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use partitions::io::FileDisk;
use partitions::SlotId::{A, B};
use signer::verity::{format, VerityDoc};
use signer::AssetKind;
use tandem_tests::{fake_uki, image, Backend, Release, TestAsset, World, DISK_SIZE, IMAGE_LEN};
use updater::{BootCheck, Error, Refusal};

use crate::cli::Sandbox;

/// A root filesystem of `IMAGE_LEN` bytes from `seed` followed by its hash area.
fn verity_image(seed: u64) -> (Vec<u8>, VerityDoc) {
    let data = image(IMAGE_LEN, seed);
    let area = format(
        &data[..],
        data.len() as u64,
        4096,
        &[seed as u8; 32],
        [1; 16],
    )
    .unwrap();
    let mut bytes = data;
    bytes.extend_from_slice(&area.bytes);
    (bytes, area.verity.to_doc())
}

/// A systemd-boot node on a disk image file in `dir`, running v1 from slot A.
fn node(dir: &Path) -> World {
    let path = dir.join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    let w = World::with_disk(
        Backend::SystemdBoot,
        Arc::new(FileDisk::open(&path).unwrap()),
    );
    let v1 = w.release("1.0.0", 1, 1);
    w.provision(A, &v1);
    w
}

/// v2 with a verity root and a UKI whose command line says `roothash=` `named` (the image's
/// own when `None`).
fn verity_release(w: &World, named: Option<String>) -> (Release, VerityDoc) {
    let (bytes, doc) = verity_image(2);
    let hash = named.unwrap_or_else(|| doc.root_hash.to_hex());
    let uki = fake_uki("2.0.0", &format!("ro roothash={hash} quiet"));
    let assets = [TestAsset::new(AssetKind::Uki, uki)];
    let verity = doc.clone();
    let release = w.release_signed("2.0.0", 2, bytes, tandem_tests::PRODUCT, &assets, |o| {
        o.verity = Some(verity)
    });
    (release, doc)
}

/// Runs `veritysetup verify` on a slot image file whose hash area starts at `offset`.
fn veritysetup_verify(slot: &Path, root_hash: &str, offset: u64) -> bool {
    let out = Command::new("veritysetup")
        .arg("verify")
        .arg(slot)
        .arg(slot)
        .arg(root_hash)
        .arg(format!("--hash-offset={offset}"))
        .output()
        .expect("veritysetup (Debian package cryptsetup-bin; scripts/test.sh installs it)");
    out.status.success()
}

#[test]
fn a_verity_root_installs_boots_commits_and_passes_veritysetup() {
    let dir = tempfile::tempdir().unwrap();
    let w = node(dir.path());
    let (v2, doc) = verity_release(&w, None);
    let hash = doc.root_hash.to_hex();
    w.install(A, &v2, false).unwrap();
    assert_eq!(w.boot(), B);
    let check = w.agent_for(B).boot_check().unwrap();
    assert!(matches!(check, BootCheck::Committed { .. }), "{check:?}");

    let status = w.agent_for(B).status().unwrap();
    assert_eq!(status.slots[1].root_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(status.slots[0].root_hash, None);

    // The slot as the kernel would read it: data, then the hash area at --hash-offset.
    let slot = w.slot_bytes(B);
    let file = dir.path().join("slot-b.img");
    std::fs::write(&file, &slot).unwrap();
    assert!(veritysetup_verify(&file, &hash, doc.data_size));
    for (what, at) in [
        ("data", 5000),
        ("hash tree", doc.data_size as usize + 4096 + 7),
    ] {
        let mut flipped = slot.clone();
        flipped[at] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        assert!(
            !veritysetup_verify(&file, &hash, doc.data_size),
            "one flipped byte in the {what} passed veritysetup"
        );
    }
}

#[test]
fn a_uki_naming_another_root_hash_is_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let w = node(dir.path());
    let before = w.slot_bytes(B);
    let (v2, _) = verity_release(&w, Some("ab".repeat(32)));
    let err = w.install(A, &v2, false).unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::RootHashMismatch { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&"ab".repeat(32)), "{err}");
    assert_eq!(w.slot_bytes(B), before, "the target slot was written");
    assert_eq!(w.state().slots.get(&B), None);
    assert_eq!(w.boot(), A);
}

#[test]
fn the_signers_hash_file_is_veritysetups() {
    let s = Sandbox::new();
    std::fs::write(s.path("root.img"), image(IMAGE_LEN, 3)).unwrap();
    let out = s.run(
        "tandem-signer",
        &["verity", "root.img", "-o", "root.verity", "--salt", "0a0b"],
        0,
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(hash.len(), 64, "{hash}");
    let verify = Command::new("veritysetup")
        .current_dir(s.path(""))
        .args(["verify", "root.img", "root.verity", &hash])
        .status()
        .expect("veritysetup (Debian package cryptsetup-bin)");
    assert!(verify.success());

    // veritysetup's own hash file (same salt) signs, and gives the same root hash.
    let format = Command::new("veritysetup")
        .current_dir(s.path(""))
        .args(["format", "root.img", "vs.verity", "--salt", "0a0b"])
        .output()
        .expect("veritysetup (Debian package cryptsetup-bin)");
    assert!(format.status.success());
    assert!(String::from_utf8_lossy(&format.stdout).contains(&hash));
    s.run("tandem-signer", &["keygen", "--out", "rel"], 0);
    let sign = |hashfile: &str, cmdline: &str, expect| {
        std::fs::write(s.path("uki.efi"), fake_uki("2.0.0", cmdline)).unwrap();
        let args = [
            "sign",
            "--image",
            "root.img",
            "--verity",
            hashfile,
            "--uki",
            "uki.efi",
            "--product",
            "acme-edge",
            "--version",
            "2.0.0",
            "--security-version",
            "1",
            "--key",
            "rel.pem",
            "-o",
            "v2.tandem",
        ];
        s.run("tandem-signer", &args, expect)
    };
    sign("vs.verity", &format!("roothash={hash}"), 0);
    sign("root.verity", "ro quiet", 0);
    let other = "cd".repeat(32);
    let refused = sign("root.verity", &format!("roothash={other}"), 1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(&other) && err.contains(&hash), "{err}");
    // A hash file of another image is refused.
    std::fs::write(s.path("root.img"), image(IMAGE_LEN, 4)).unwrap();
    sign("root.verity", "ro", 1);
}
