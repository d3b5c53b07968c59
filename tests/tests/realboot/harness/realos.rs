//! The real OS: Debian 12 with systemd, built by `scripts/build-os.sh` exactly as
//! docs/building-an-os.md tells an integrator, with `tandem-updater` and the units of `dist/`
//! unmodified. Its releases ([`RELEASES`]), signed with their kernel (a UKI on systemd-boot;
//! kernel, initramfs and command line on GRUB), and published into a node's repository one
//! by one as the scenario goes.
//!
//! Two cache levels: the Debian root (`target/realboot/os-base/KEY/base.tar`, keyed by the
//! script's first step: suite, packages, mmdebstrap options) and, per backend, the releases
//! (`target/realboot/os-BACKEND/KEY/`, keyed by the whole script, `dist/`, the binaries, the
//! kernel and the node's configuration).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::artefacts::{grub_image, keys, publish, signer, vfat_image};
use super::cache;
use super::env::{run, Env, SYSTEMD_STUB};
use super::node::{Node, Provision};
use super::os::{Backend, MIB, TRIES};
use super::uki::{self, UkiParts};
use super::vm::SERVER_ADDR;

/// Bump when the artefacts change in a way the keys do not see.
const REALOS_VERSION: &str = "realos-1";
pub const PRODUCT: &str = "acme-edge";
/// The release in slot A of a new node.
pub const FACTORY: &str = "1.0.0";
/// A release whose workload starts: it commits.
pub const GOOD: &str = "2.0.0";
/// A release whose workload unit fails: it is marked bad and rolled back.
pub const BROKEN: &str = "3.0.0";
/// A release carried on a USB stick (docs/airgap.md), not published on the server.
pub const ON_USB: &str = "4.0.0";
/// The releases and whether their workload works.
const RELEASES: &[(&str, bool)] = &[
    (FACTORY, true),
    (GOOD, true),
    (BROKEN, false),
    (ON_USB, true),
];
/// The channel on sticks (docs/airgap.md): its own, so its versions never fall behind those
/// of the server's channel, which the node remembers (a stick with `stable` version 1 after
/// the server's `stable` version 2 is refused as a rollback of the channel).
pub const USB_CHANNEL: &str = "stable-usb";
/// The stick's label: what dist/90-tandem-usb.rules waits for (FAT holds 11 characters).
const USB_LABEL: &str = "TANDEM-UPD";
/// The fleet's report token, in the image and given to the server.
pub const REPORT_TOKEN: &str = "acme-report-token-0123456789";
/// The slots: room for the root image (about 200 MB) and its growth.
pub const SLOT_SIZE: u64 = 320 * MIB;
/// The agent's state file on the state partition (mounted at /var/lib/tandem).
const STATE_FILE: &str = "/state.json";

/// One backend's releases, built.
pub struct RealOs {
    pub backend: Backend,
    pub dir: PathBuf,
}

impl RealOs {
    /// `backend`'s releases, built first if the cache does not hold them.
    pub fn get(env: &Env, backend: Backend) -> RealOs {
        let base = base(env);
        let started = Instant::now();
        let mut built = false;
        let cache_dir = env.work.join(format!("os-{}", backend.name()));
        let dir = cache::entry(&cache_dir, &key(env, backend, &base), |dir| {
            build(env, backend, &base, dir);
            built = true;
        });
        if built {
            eprintln!(
                "realboot: the real OS for {} built in {:.1?} into {}",
                backend.name(),
                started.elapsed(),
                dir.display()
            );
        }
        RealOs { backend, dir }
    }

    /// A new node: the factory's release in slot A, its kernel and initramfs in both slots'
    /// boot files, no USB stick.
    pub fn node(&self, env: &Env) -> Node {
        let factory = self.dir.join(FACTORY);
        Node::provision(
            env,
            self.backend,
            &Provision {
                name: format!("realos-{}", self.backend.name()),
                slot_size: SLOT_SIZE,
                factory_image: &factory.join("root.img"),
                kernel: &factory.join("vmlinuz"),
                initrd: &factory.join("initrd.img"),
                grub: &self.dir.join("grubx64.efi"),
                signed: None,
                usb: None,
                state_file: STATE_FILE,
            },
        )
    }

    /// The USB stick: [`ON_USB`] published on [`USB_CHANNEL`] in its `tandem/` directory.
    pub fn usb(&self) -> PathBuf {
        self.dir.join("usb.img")
    }

    /// Publishes release `version` on the channel `channel` of `repo`.
    pub fn publish(&self, env: &Env, repo: &Path, channel: &str, version: &str) {
        let repo = repo.to_string_lossy();
        publish(env, &self.dir, &repo, channel, &bundle_name(version));
    }
}

/// The kernel parameters of release `version`: `acme.release=` says whose boot files booted.
pub fn release_cmdline(version: &str) -> String {
    format!("console=ttyS0 panic=1 quiet acme.release={version}")
}

/// The node's `/etc/tandem/updater.toml`: the example of docs/updater.md, with the test's
/// server, a short poll and `tries` tries for a new release.
pub fn config(backend: Backend, tries: u8) -> String {
    let boot = match backend {
        Backend::SystemdBoot => "boot = \"systemd-boot\"\nesp = \"/efi\"\n",
        Backend::Grub => "boot = \"grub\"\ngrubenv = \"/efi/tandem/grubenv\"\n",
    };
    format!(
        "disk = \"/dev/vda\"\n{boot}state = \"/var/lib/tandem/state.json\"\n\
         root = \"/etc/tandem/root.json\"\nproduct = \"{PRODUCT}\"\ntries = {tries}\n\
         cmdline = \"/proc/cmdline\"\nreboot = [\"systemctl\", \"reboot\"]\n\
         health_deadline = \"2m\"\n\n\
         [[health]]\nexec = [\"/usr/bin/systemctl\", \"is-active\", \"--quiet\", \"acme-app.service\"]\n\
         timeout = \"60s\"\n[[health]]\nhttp = \"http://127.0.0.1:8080/healthz\"\n\n\
         [server]\nurl = \"http://{}/\"\nchannel = \"stable\"\npoll_interval = \"30s\"\n\
         report_token_file = \"/etc/tandem/report-token\"\n",
        SERVER_ADDR.trim_end_matches(":80")
    )
}

fn script(env: &Env) -> PathBuf {
    env.docs.join("../scripts/build-os.sh")
}

/// The Debian root, built once per change of the script's first step.
pub(super) fn base(env: &Env) -> PathBuf {
    let text = fs::read_to_string(script(env)).expect("scripts/build-os.sh");
    let step1 = text.split("# Step 2").next().unwrap_or_default();
    let key = hex16(Sha256::digest(step1.as_bytes()).as_slice());
    let started = Instant::now();
    let dir = cache::entry(&env.work.join("os-base"), &key, |dir| {
        run(Command::new(script(env))
            .arg("base")
            .arg(dir.join("base.tar")));
        eprintln!(
            "realboot: the Debian root built in {:.1?}",
            started.elapsed()
        );
    });
    dir.join("base.tar")
}

pub(super) fn key(env: &Env, backend: Backend, base: &Path) -> String {
    let mut h = Sha256::new();
    h.update(REALOS_VERSION);
    h.update(base.to_string_lossy().as_bytes());
    h.update(fs::read(script(env)).expect("build-os.sh"));
    let mut dist: Vec<PathBuf> = fs::read_dir(env.docs.join("../dist"))
        .expect("dist/")
        .map(|e| e.expect("dist entry").path())
        .collect();
    dist.sort();
    for file in dist {
        h.update(fs::read(&file).expect("dist file"));
    }
    for bin in ["tandem-updater", "tandem-signer"] {
        let meta = fs::metadata(env.bin_dir.join(bin)).expect("binary metadata");
        h.update(format!("{bin} {} {:?}", meta.len(), meta.modified().ok()));
    }
    let stub = fs::metadata(SYSTEMD_STUB).expect("EFI stub metadata");
    h.update(format!("{} {:?}", stub.len(), stub.modified().ok()));
    h.update(env.kernel.to_string_lossy().as_bytes());
    h.update(config(backend, TRIES));
    h.update(format!("{RELEASES:?} {USB_CHANNEL} {USB_LABEL} {ON_USB}"));
    hex16(h.finalize().as_slice())
}

pub(super) fn hex16(digest: &[u8]) -> String {
    hex::encode(digest).get(..16).expect("hex").to_string()
}

/// Keys, the releases (the factory's root image and boot files kept, the others signed into
/// bundles) and the GRUB image.
fn build(env: &Env, backend: Backend, base: &Path, dir: &Path) {
    keys(env, dir);
    fs::write(dir.join("updater.toml"), config(backend, TRIES)).expect("updater.toml");
    fs::write(dir.join("report-token"), REPORT_TOKEN).expect("report token");
    for &(version, works) in RELEASES {
        build_release(env, base, dir, version, works);
        if version != FACTORY {
            sign_release(env, backend, dir, version);
            fs::remove_dir_all(dir.join(version)).expect("rm release");
        }
    }
    let os = RealOs {
        backend,
        dir: dir.to_path_buf(),
    };
    let stick = dir.join("usb");
    os.publish(env, &stick.join("tandem"), USB_CHANNEL, ON_USB);
    vfat_image(&stick, USB_LABEL, &os.usb());
    fs::remove_dir_all(&stick).expect("rm usb tree");
    fs::remove_file(dir.join(bundle_name(ON_USB))).expect("rm usb bundle");
    grub_image(dir);
}

/// `scripts/build-os.sh release` into `dir/VERSION/`.
fn build_release(env: &Env, base: &Path, dir: &Path, version: &str, works: bool) {
    run(&mut release_command(env, base, dir, version, works));
}

/// The command that builds release `version` into `dir/VERSION/` (`CMDLINE`, `VERITY` may be
/// set on it before it runs).
pub(super) fn release_command(
    env: &Env,
    base: &Path,
    dir: &Path,
    version: &str,
    works: bool,
) -> Command {
    let mut cmd = Command::new(script(env));
    cmd.arg("release")
        .arg(base)
        .arg(dir.join(version))
        .env("VERSION", version)
        .env("UPDATER_TOML", dir.join("updater.toml"))
        .env("ROOT_JSON", dir.join("root.json"))
        .env("REPORT_TOKEN", dir.join("report-token"))
        .env("TANDEM_BIN", &env.bin_dir)
        .env(
            "KERNEL_DIR",
            env.kernel
                .parent()
                .and_then(Path::parent)
                .expect("kernel dir"),
        )
        .env("CMDLINE", release_cmdline(version))
        .env("USB_CHANNEL", USB_CHANNEL);
    if !works {
        cmd.env("WORKLOAD", "broken");
    }
    cmd
}

/// Signs release `version` with its boot files as `backend` boots them.
fn sign_release(env: &Env, backend: Backend, dir: &Path, version: &str) {
    let rel = dir.join(version);
    let mut args: Vec<std::ffi::OsString> = vec![
        "sign".into(),
        "--image".into(),
        rel.join("root.img").into(),
        "--product".into(),
        PRODUCT.into(),
        "--version".into(),
        version.into(),
        "--security-version".into(),
        "1".into(),
        "--key".into(),
        "release.pem".into(),
        "--out".into(),
        bundle_name(version).into(),
    ];
    match backend {
        Backend::SystemdBoot => {
            let uki = rel.join("uki.efi");
            uki::build(
                &UkiParts {
                    os_release: &format!(
                        "NAME=\"Acme Edge\"\nID=acme-edge\nVERSION_ID={version}\n"
                    ),
                    cmdline: &release_cmdline(version),
                    kernel: &rel.join("vmlinuz"),
                    initrd: &rel.join("initrd.img"),
                },
                &rel,
                &uki,
            );
            args.extend(["--uki".into(), uki.into()]);
        }
        Backend::Grub => args.extend([
            "--kernel".into(),
            rel.join("vmlinuz").into(),
            "--initrd".into(),
            rel.join("initrd.img").into(),
            "--cmdline".into(),
            release_cmdline(version).into(),
        ]),
    }
    signer(env, dir, &args);
}

pub(super) fn bundle_name(version: &str) -> String {
    format!("{PRODUCT}-{version}.tandem")
}
