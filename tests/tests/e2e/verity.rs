//! A verified root (docs/DESIGN.md §5.2): a release whose image ends with its dm-verity hash
//! area, the root hash signed in the manifest and named by the UKI's `roothash=`. On a disk
//! image file with systemd-boot and the reference firmware: the agent writes and checks the
//! tree like any other byte, the slot then passes `veritysetup verify` (and fails it with one
//! byte flipped), `status` shows each slot's root hash, and a release whose UKI names another
//! root hash is refused before any write. The install gives the slot the PARTUUID its root
//! hash derives (read back with `sgdisk -i`; a cut during that write leaves the disk
//! consistent and the running slot booting), refuses a root the running slot holds, and the
//! booted slot is told from that PARTUUID, agreeing with the other witnesses or refused.
//! Through the real `tandem-signer`: its hash file is the one `veritysetup` reads and
//! writes, `verity` prints the PARTUUID and a command line, `inspect` shows them, and `sign`
//! refuses a UKI of another root hash or PARTUUID.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use partitions::io::{FileDisk, FileStore, MemFs, PowerLossDisk};
use partitions::table::GptTable;
use partitions::SlotId::{A, B};
use signer::verity::{format, VerityDoc};
use signer::AssetKind;
use tandem_tests::{
    fake_uki, image, recover, Backend, Release, TestAsset, World, DISK_SIZE, IMAGE_LEN,
};
use updater::{BootCheck, Error, Refusal};

use crate::cli::Sandbox;

/// A root filesystem of `IMAGE_LEN` bytes from `seed` followed by its hash area.
pub(crate) fn verity_image(seed: u64) -> (Vec<u8>, VerityDoc) {
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

/// The PARTUUID systemd derives from `doc`'s root hash.
fn derived(doc: &VerityDoc) -> uuid::Uuid {
    signer::verity::partuuid(&doc.root_hash)
}

/// `sgdisk -i INDEX disk`'s "Partition unique GUID", lower-cased.
fn sgdisk_guid(disk: &Path, index: u32) -> String {
    let out = Command::new("sgdisk")
        .arg("-i")
        .arg(index.to_string())
        .arg(disk)
        .output()
        .expect("sgdisk (Debian package gdisk; scripts/test.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Partition unique GUID: "))
        .unwrap_or_else(|| panic!("no unique GUID in {text}"))
        .trim()
        .to_ascii_lowercase()
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
    let printed = String::from_utf8(out.stdout).unwrap();
    let [hash, partuuid, cmdline] = printed.lines().collect::<Vec<_>>()[..] else {
        panic!("three lines: root hash, PARTUUID, command line: {printed}")
    };
    let hash = hash.to_owned();
    assert_eq!(hash.len(), 64, "{hash}");
    // systemd's derivation, by hand: the first 32 hex digits as 8-4-4-4-12.
    let h = &hash[..32];
    let by_hand = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    assert_eq!(partuuid, by_hand);
    for part in [
        format!("roothash={hash}"),
        format!("systemd.verity_root_data=PARTUUID={partuuid}"),
        format!("systemd.verity_root_hash=PARTUUID={partuuid}"),
        format!("hash-offset={IMAGE_LEN}"),
    ] {
        assert!(cmdline.contains(&part), "{part} not in {cmdline}");
    }
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
    sign("root.verity", cmdline, 0);
    // inspect shows the signed root hash and its PARTUUID.
    let shown = s.run("tandem-signer", &["inspect", "v2.tandem"], 0);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains(&format!("root hash {hash}, PARTUUID {partuuid}")),
        "{shown}"
    );
    let json = s.run("tandem-signer", &["inspect", "--json", "v2.tandem"], 0);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["verity"]["partuuid"], partuuid);
    assert_eq!(json["verity"]["root_hash"], hash.as_str());
    // A UKI whose root is another partition is refused, naming the one it must be.
    let elsewhere = "root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 ro";
    let refused = sign("root.verity", &format!("roothash={hash} {elsewhere}"), 1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(partuuid) && err.contains("0fc63daf"), "{err}");
    let other = "cd".repeat(32);
    let refused = sign("root.verity", &format!("roothash={other}"), 1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(&other) && err.contains(&hash), "{err}");
    // A hash file of another image is refused.
    std::fs::write(s.path("root.img"), image(IMAGE_LEN, 4)).unwrap();
    sign("root.verity", "ro", 1);
}

#[test]
fn the_install_gives_the_slot_the_partuuid_of_its_root_hash() {
    let dir = tempfile::tempdir().unwrap();
    let w = node(dir.path());
    let disk = dir.path().join("disk.img");
    let (a, b) = (w.pair().slot(A).clone(), w.pair().slot(B).clone());
    let (v2, doc) = verity_release(&w, None);
    let uuid = derived(&doc);
    assert_ne!(b.partuuid, uuid);
    w.install(A, &v2, false).unwrap();
    assert_eq!(sgdisk_guid(&disk, b.index), uuid.to_string());
    assert_eq!(sgdisk_guid(&disk, a.index), a.partuuid.to_string());
    // The trial's entry names the partition by its new PARTUUID (read when it was written).
    let esp = w.boot_fs.as_ref().unwrap();
    let entries = esp.list(Path::new("loader/entries")).unwrap();
    let entry = entries.iter().find(|n| n.starts_with("tandem-b")).unwrap();
    let body = esp
        .read(&Path::new("loader/entries").join(entry), 1 << 16)
        .unwrap();
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains(&format!("root=PARTUUID={uuid}")), "{body}");
    assert_eq!(w.boot(), B);
    assert!(matches!(
        w.agent_for(B).boot_check().unwrap(),
        BootCheck::Committed { .. }
    ));
}

/// The agent of a node that booted with the fixed command line `cmdline` and whose
/// systemd-boot says it booted `entry`: no `booted_slot` in its configuration.
fn witnessed(
    w: &World,
    dir: &Path,
    cmdline: &str,
    entry: &str,
) -> updater::Result<partitions::SlotId> {
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    let efivars = dir.join("efivars");
    std::fs::create_dir_all(&efivars).unwrap();
    let mut bytes = vec![6, 0, 0, 0];
    for unit in entry.encode_utf16().chain([0]) {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    std::fs::write(efivars.join(updater::cmdline::LOADER_ENTRY_SELECTED), bytes).unwrap();
    let text = w.config_text(B).replace(
        "booted_slot = \"b\"",
        &format!(
            "cmdline = {:?}\nefivars = {:?}",
            dir.join("cmdline").display().to_string(),
            efivars.display().to_string()
        ),
    );
    let config = updater::config::AgentConfig::parse(&text).unwrap();
    updater::Agent::with_io(config, w.io())?.booted_slot()
}

#[test]
fn the_booted_slot_is_told_from_the_partuuid_of_the_root_hash() {
    let dir = tempfile::tempdir().unwrap();
    let w = node(dir.path());
    let (v2, doc) = verity_release(&w, None);
    w.install(A, &v2, false).unwrap();
    assert_eq!(w.boot(), B);
    let line = format!("roothash={} ro", doc.root_hash.to_hex());
    // The boot files, the partition and the loader agree.
    assert_eq!(
        witnessed(&w, dir.path(), &line, "tandem-b+2-1.conf").unwrap(),
        B
    );
    // The loader says A: refused, the PARTUUID witness named.
    let err = witnessed(&w, dir.path(), &line, "tandem-a.conf")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&derived(&doc).to_string()) && err.contains("refusing"),
        "{err}"
    );
    // The partition alone (slot B's boot files gone, as on a node whose ESP was rebuilt):
    // it still names B.
    let esp = w.boot_fs.as_ref().unwrap();
    for name in esp.list(Path::new("tandem/b")).unwrap() {
        esp.remove(&Path::new("tandem/b").join(name)).unwrap();
    }
    assert_eq!(witnessed(&w, dir.path(), &line, "debian.conf").unwrap(), B);
}

#[test]
fn the_root_the_running_slot_holds_is_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let w = node(dir.path());
    let (v2, doc) = verity_release(&w, None);
    w.install(A, &v2, false).unwrap();
    assert_eq!(w.boot(), B);
    w.agent_for(B).boot_check().unwrap();
    let (a, before) = (w.pair().slot(A).clone(), w.slot_bytes(A));
    let boot_a = w.boot_state(A);
    // The same release again, onto A: both slots would need one PARTUUID.
    let err = w.install(B, &v2, true).unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::RootHashOnOtherSlot { .. })),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&derived(&doc).to_string()) && text.contains("root-b"),
        "{text}"
    );
    assert_eq!(w.slot_bytes(A), before, "the target slot was written");
    assert_eq!(w.pair().slot(A).partuuid, a.partuuid);
    assert_eq!(w.boot_state(A), boot_a);
    assert_eq!(w.boot(), B);
}

#[test]
fn a_cut_during_the_partuuid_write_leaves_the_running_slot_booting() {
    let scenario = fail::FailScenario::setup();
    let factory = PowerLossDisk::new(DISK_SIZE);
    let mut w = World::with_disk(Backend::Gpt, Arc::new(factory.clone()));
    let v1 = w.release("1.0.0", 1, 1);
    let (bytes, doc) = verity_image(2);
    let verity = doc.clone();
    let v2 = w.release_signed("2.0.0", 2, bytes, tandem_tests::PRODUCT, &[], |o| {
        o.verity = Some(verity)
    });
    w.provision(A, &v1);
    let (old, uuid) = (w.pair().slot(B).partuuid, derived(&doc));

    // A dry run: the disk's write count before and after the PARTUUID's writes.
    let disk = factory.after_power_cut(0);
    w.disk = Arc::new(disk.clone());
    let counts = Arc::new(std::sync::Mutex::new(Vec::new()));
    for name in ["install::after-writing-state", "install::after-partuuid"] {
        let (counts, disk) = (counts.clone(), disk.clone());
        fail::cfg_callback(name, move || {
            counts.lock().unwrap().push(disk.writes_done())
        })
        .unwrap();
    }
    w.install(A, &v2, false).unwrap();
    let [before, after] = counts.lock().unwrap()[..] else {
        panic!("{counts:?}")
    };
    assert_eq!(after - before, 4, "two entry arrays and two headers");
    assert_eq!(w.pair().slot(B).partuuid, uuid);

    // A cut when 0..4 more writes have completed after the writing state: inside the
    // PARTUUID's writes, each seeded subset of the unsynced ones kept.
    for k in 0..after - before {
        for seed in 0..6 {
            let disk = factory.after_power_cut(0);
            let armed = disk.clone();
            fail::cfg_callback("install::after-writing-state", move || {
                armed.cut_after_writes(k)
            })
            .unwrap();
            w.disk = Arc::new(disk.clone());
            w.state_fs = MemFs::new();
            assert!(w.install(A, &v2, false).is_err(), "cut after write {k}");
            fail::remove("install::after-writing-state");
            w.disk = Arc::new(disk.after_power_cut(seed));
            let context = format!("cut after write {k} of the PARTUUID's 4, seed {seed}");
            let table = GptTable::read(w.disk.as_ref()).unwrap();
            let got = table.entry(w.pair().slot(B).index).unwrap().unique_guid;
            assert!(got == old || got == uuid, "{context}: {got}");
            assert_eq!(w.boot(), A, "{context}: the running slot must boot");
            recover(&w, &v1, &v2, &context);
            assert_eq!(w.pair().slot(B).partuuid, uuid, "{context}");
        }
    }
    drop(scenario);
}

#[test]
fn a_factory_slot_is_given_the_partuuid_its_uki_names() {
    let s = Sandbox::new();
    s.create_disk();
    std::fs::write(s.path("root.img"), image(1 << 20, 5)).unwrap();
    let out = s.run(
        "tandem-signer",
        &["verity", "root.img", "-o", "root.verity"],
        0,
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let partuuid = printed.lines().nth(1).unwrap().to_owned();
    let mut raw = std::fs::read(s.path("root.img")).unwrap();
    raw.extend(std::fs::read(s.path("root.verity")).unwrap());
    std::fs::write(s.path("root.raw"), raw).unwrap();
    let write = |slot: &str, expect| {
        let args = [
            "write-slot",
            "disk.img",
            slot,
            "root.raw",
            "--partuuid",
            &partuuid,
        ];
        s.run("tandem-disk", &args, expect)
    };
    write("a", 0);
    let disk = s.path("disk.img");
    let pair = partitions::Disk::open_read_only(&disk)
        .unwrap()
        .slots("root")
        .unwrap();
    assert_eq!(sgdisk_guid(&disk, pair.slot(A).index), partuuid);
    // The other slot cannot take it as well.
    let refused = write("b", 1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(&partuuid) && err.contains("root-a"), "{err}");
    assert_eq!(
        sgdisk_guid(&disk, pair.slot(B).index),
        pair.slot(B).partuuid.to_string()
    );
}
