//! Secure Boot on the real OS (systemd-boot): OVMF's Secure Boot build with Debian's snakeoil
//! key enrolled in PK, KEK and db (for tests only: its private key ships in the same package),
//! systemd-boot and each release's UKI signed with `sbsign`, each release's root carrying its
//! dm-verity tree (`scripts/build-os.sh` with `VERITY=yes`, which runs `tandem-signer verity`)
//! and signed into a bundle with `sign --verity`. The UKI's `.cmdline` is fixed: it names the
//! root hash and the PARTUUID that hash derives, never the slot.
//!
//! Cached like the real OS (`target/realboot/os-secureboot/KEY/`), keyed by the real OS's key,
//! the releases below and the firmware and key files.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::artefacts::{keys, publish, signer};
use super::cache;
use super::env::{run, Env, OVMF_CODE_SECBOOT, OVMF_VARS_SNAKEOIL, SYSTEMD_BOOT};
use super::node::{partition, Node, Part, Provision, Signed};
use super::os::Backend;
use super::realos::{
    base, bundle_name, config, hex16, key, release_command, FACTORY, PRODUCT, REPORT_TOKEN,
    SLOT_SIZE,
};
use super::uki::{self, UkiParts};

/// The snakeoil key pair (the key's passphrase is `snakeoil`): what db trusts.
const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
/// Bump when the artefacts change in a way the key does not see.
const SECUREBOOT_VERSION: &str = "secureboot-1";

/// Tries the loader gives a new release: one, as each failure the test provokes costs a boot
/// per try under TCG (the busybox runs, `main.rs`, spend two on each of theirs).
pub const TRIES: u8 = 1;
/// A verity release that boots and commits.
pub const VERIFIED: &str = "2.0.0";
/// A verity release whose UKI is signed by a key not in db: the firmware refuses it.
pub const NOT_IN_DB: &str = "3.0.0";
/// A verity release whose slot the test damages before its first boot: one data byte.
pub const DATA_FLIPPED: &str = "4.0.0";
/// A verity release whose slot the test damages before its first boot: one hash-tree byte.
pub const TREE_FLIPPED: &str = "5.0.0";
/// A verity release, correctly signed, whose workload unit fails: boot-check marks it bad.
pub const UNHEALTHY: &str = "6.0.0";

/// How a release is signed and whether its root carries a verity tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The factory's: no verity, its fixed command line names slot A (`tandem.slot=a`).
    Factory,
    /// Verity root, UKI signed with the db key.
    Verified,
    /// Verity root, UKI signed with a key db does not hold.
    Rogue,
    /// Verity root, UKI signed with the db key, a workload that fails.
    Unhealthy,
}

const RELEASES: &[(&str, Kind)] = &[
    (FACTORY, Kind::Factory),
    (VERIFIED, Kind::Verified),
    (NOT_IN_DB, Kind::Rogue),
    (DATA_FLIPPED, Kind::Verified),
    (TREE_FLIPPED, Kind::Verified),
    (UNHEALTHY, Kind::Unhealthy),
];

/// The releases of the Secure Boot OS, built.
pub struct SecureOs {
    pub dir: PathBuf,
}

impl SecureOs {
    /// The releases, built first if the cache does not hold them.
    pub fn get(env: &Env) -> SecureOs {
        let base = base(env);
        let mut h = Sha256::new();
        h.update(key(env, Backend::SystemdBoot, &base));
        h.update(format!("{SECUREBOOT_VERSION} {RELEASES:?}"));
        h.update(config(Backend::SystemdBoot, TRIES));
        for file in [
            SYSTEMD_BOOT,
            OVMF_CODE_SECBOOT,
            OVMF_VARS_SNAKEOIL,
            SNAKEOIL_CERT,
        ] {
            h.update(fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}")));
        }
        let started = Instant::now();
        let mut built = false;
        let dir = cache::entry(
            &env.work.join("os-secureboot"),
            &hex16(h.finalize().as_slice()),
            |dir| {
                build(env, &base, dir);
                built = true;
            },
        );
        if built {
            eprintln!(
                "realboot: the Secure Boot OS built in {:.1?} into {}",
                started.elapsed(),
                dir.display()
            );
        }
        SecureOs { dir }
    }

    /// A new node: the factory's root in slot A, its signed UKI as A's boot file, the signed
    /// systemd-boot as the loader.
    pub fn node(&self, env: &Env) -> Node {
        let factory = self.dir.join(FACTORY);
        Node::provision(
            env,
            Backend::SystemdBoot,
            &Provision {
                name: "realos-secureboot".into(),
                slot_size: SLOT_SIZE,
                factory_image: &factory.join("root.img"),
                kernel: &factory.join("vmlinuz"),
                initrd: &factory.join("initrd.img"),
                // Not read on systemd-boot.
                grub: &self.dir.join("none"),
                signed: Some(Signed {
                    loader: &self.dir.join("systemd-bootx64.signed.efi"),
                    factory_uki: &factory.join("uki.signed.efi"),
                }),
                usb: None,
                state_file: "/state.json",
            },
        )
    }

    /// Publishes release `version` on the channel `stable` of `repo`.
    pub fn publish(&self, env: &Env, repo: &Path, version: &str) {
        let repo = repo.to_string_lossy();
        publish(env, &self.dir, &repo, "stable", &bundle_name(version));
    }

    /// Release `version`'s command line (the UKI's `.cmdline`), as the build wrote it.
    pub fn cmdline(&self, version: &str) -> String {
        let file = self.dir.join(format!("{version}.cmdline"));
        fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_string()
    }

    /// Release `version`'s root hash (`roothash=` of its command line).
    pub fn root_hash(&self, version: &str) -> String {
        param(&self.cmdline(version), "roothash=")
    }

    /// The size of release `version`'s filesystem: where its hash tree starts in the slot.
    pub fn hash_offset(&self, version: &str) -> u64 {
        let line = self.cmdline(version);
        param(&line, "systemd.verity_root_options=hash-offset=")
            .parse()
            .unwrap_or_else(|e| panic!("hash-offset in {line:?}: {e}"))
    }
}

/// The kernel parameters every release's UKI starts with: no `quiet`, so the kernel's
/// Secure Boot and device-mapper lines reach the console.
fn base_cmdline(version: &str) -> String {
    format!("console=ttyS0 panic=1 acme.release={version}")
}

fn param(cmdline: &str, name: &str) -> String {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {cmdline:?}"))
        .to_string()
}

/// Keys (the repository's, db's and a rogue one), the signed loader, the releases.
fn build(env: &Env, base: &Path, dir: &Path) {
    keys(env, dir);
    fs::write(
        dir.join("updater.toml"),
        config(Backend::SystemdBoot, TRIES),
    )
    .expect("updater.toml");
    fs::write(dir.join("report-token"), REPORT_TOKEN).expect("report token");
    run(Command::new("openssl")
        .args([
            "rsa",
            "-passin",
            "pass:snakeoil",
            "-in",
            SNAKEOIL_KEY,
            "-out",
        ])
        .arg(dir.join("db.key")));
    fs::copy(SNAKEOIL_CERT, dir.join("db.crt")).expect("db.crt");
    run(Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", "/CN=not-in-db/", "-keyout"])
        .arg(dir.join("rogue.key"))
        .arg("-out")
        .arg(dir.join("rogue.crt")));
    sbsign(
        dir,
        "db",
        Path::new(SYSTEMD_BOOT),
        &dir.join("systemd-bootx64.signed.efi"),
    );
    for &(version, kind) in RELEASES {
        build_release(env, base, dir, version, kind);
    }
}

/// One release: its root (with its verity tree unless the factory's), its UKI signed with
/// `kind`'s key, and (but for the factory's, kept for provisioning) its bundle.
fn build_release(env: &Env, base: &Path, dir: &Path, version: &str, kind: Kind) {
    let mut cmd = release_command(env, base, dir, version, kind != Kind::Unhealthy);
    if kind == Kind::Factory {
        cmd.env(
            "CMDLINE",
            format!("{} tandem.slot=a", base_cmdline(version)),
        );
    } else {
        cmd.env("CMDLINE", base_cmdline(version))
            .env("VERITY", "yes");
    }
    run(&mut cmd);
    let rel = dir.join(version);
    let cmdline = fs::read_to_string(rel.join("cmdline")).expect("the release's cmdline");
    fs::write(dir.join(format!("{version}.cmdline")), &cmdline).expect("cmdline copy");
    let unsigned = rel.join("uki.efi");
    uki::build(
        &UkiParts {
            os_release: &format!("NAME=\"Acme Edge\"\nID=acme-edge\nVERSION_ID={version}\n"),
            cmdline: cmdline.trim(),
            kernel: &rel.join("vmlinuz"),
            initrd: &rel.join("initrd.img"),
        },
        &rel,
        &unsigned,
    );
    let key = if kind == Kind::Rogue { "rogue" } else { "db" };
    let signed = rel.join("uki.signed.efi");
    sbsign(dir, key, &unsigned, &signed);
    fs::remove_file(&unsigned).expect("rm unsigned UKI");
    if kind == Kind::Factory {
        return;
    }
    let (image, verity) = (rel.join("root.img"), rel.join("root.verity"));
    let args: [&OsStr; 16] = [
        "sign".as_ref(),
        "--image".as_ref(),
        image.as_os_str(),
        "--verity".as_ref(),
        verity.as_os_str(),
        "--uki".as_ref(),
        signed.as_os_str(),
        "--product".as_ref(),
        PRODUCT.as_ref(),
        "--version".as_ref(),
        version.as_ref(),
        "--security-version".as_ref(),
        "1".as_ref(),
        "--key".as_ref(),
        "release.pem".as_ref(),
        "--out".as_ref(),
    ];
    let bundle = bundle_name(version);
    let mut args = args.to_vec();
    args.push(bundle.as_ref());
    signer(env, dir, &args);
    fs::remove_dir_all(&rel).expect("rm release");
}

/// `sbsign` with `dir/KEY.key` and `dir/KEY.crt`.
fn sbsign(dir: &Path, key: &str, input: &Path, output: &Path) {
    run(Command::new("sbsign")
        .arg("--key")
        .arg(dir.join(format!("{key}.key")))
        .arg("--cert")
        .arg(dir.join(format!("{key}.crt")))
        .arg("--output")
        .arg(output)
        .arg(input));
}

/// Flips every bit of the byte at `offset` in `slot`'s partition (`a` or `b`) of the node's
/// disk, as a bad sector or a tampering would.
pub fn flip_byte(node: &Node, slot: &str, offset: u64) {
    let number = if slot == "a" { 2 } else { 3 };
    let part: Part = partition(&node.disk, number);
    assert!(offset < part.len, "offset {offset} is past slot {slot}");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node.disk)
        .expect("open disk");
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(part.offset + offset)).expect("seek");
    f.read_exact(&mut byte).expect("read byte");
    byte[0] ^= 0xff;
    f.seek(SeekFrom::Start(part.offset + offset)).expect("seek");
    f.write_all(&byte).expect("write byte");
    eprintln!("realboot: flipped the byte at {offset} of slot {slot}");
}
