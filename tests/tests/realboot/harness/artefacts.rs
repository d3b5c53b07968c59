//! The artefacts shared by every run: keys, the root, the slot images, the factory's
//! initramfs, the boot assets of each release ([`BOOT_ASSETS`]: `initrd-VERSION.img` and the
//! UKI `uki-VERSION.efi`), one USB stick per backend (`usb-BACKEND.img`: the bundles carry
//! the UKI on systemd-boot, kernel + initramfs + command line on GRUB) and the GRUB image. Built into the cache (`target/realboot/cache/KEY/`)
//! once per change of their inputs: the binaries, `/init`, the updater configuration, the
//! kernel, the EFI stub, the boot assets table, and [`ARTEFACTS_VERSION`] for what the key
//! does not see.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::cache;
use super::env::{mtools, run, Env, BUSYBOX, MODULES, SYSTEMD_STUB};
use super::os::{
    boot_assets, config, os_release, Backend, Behaviour, BootAssets, Init, BOOT_ASSETS, FACTORY,
    IMAGE_SIZE, MIB, PRODUCT, RELEASES,
};
use super::uki::{self, UkiParts};

/// Bump when the artefacts change in a way the cache key does not see.
const ARTEFACTS_VERSION: &str = "realboot-6";
const INIT: &str = include_str!("../init.sh");
/// The `/init` of a broken initramfs: it exits, and the kernel panics.
const EXITING_INIT: &str = "#!/bin/busybox sh\nexit 1\n";
/// Where the initramfs of [`Init::Tandem`] says which release's boot assets it is.
const INITRD_RELEASE: &str = "etc/tandem/initrd-release";
/// GRUB modules in the standalone image's memdisk (`--install-modules`); `chain` is the
/// `chainloader` that starts a UKI.
const GRUB_MODULES: &str =
    "normal search search_fs_file part_gpt fat loadenv test echo linux configfile chain regexp";
/// The embedded config: find the ESP and run the shipped docs/grub.cfg.example from it.
/// `prefix` stays the memdisk's, or modules would no longer load.
const GRUB_EMBEDDED_CFG: &str = "search --no-floppy --file --set=tandem_cfgdev /tandem/grub.cfg\n\
source (${tandem_cfgdev})/tandem/grub.cfg\n";
/// The directories of the initramfs.
const INITRD_DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr/bin",
    "etc/tandem",
    "proc",
    "sys",
    "dev",
    "esp",
    "state",
    "usb",
    "slot",
    "lib/modules",
    "lib64",
    "lib/x86_64-linux-gnu",
    "tmp",
];

/// The cache entry holding the artefacts.
#[derive(Debug, Clone)]
pub struct Artefacts {
    pub dir: PathBuf,
}

impl Artefacts {
    /// The artefacts for these binaries, built first if the cache does not hold them.
    pub fn get(env: &Env) -> Artefacts {
        let started = Instant::now();
        let mut built = false;
        let dir = cache::entry(&env.work.join("cache"), &Self::key(env), |dir| {
            Self::build(env, dir);
            built = true;
        });
        if built {
            eprintln!(
                "realboot: artefacts built in {:.1?} into {}",
                started.elapsed(),
                dir.display()
            );
        }
        Artefacts { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The initramfs of release `version` (the factory's, or that of its boot assets).
    pub fn initrd(&self, version: &str) -> PathBuf {
        self.dir.join(initrd_name(version))
    }

    /// The USB stick of `backend`'s node.
    pub fn usb(&self, backend: Backend) -> PathBuf {
        self.dir.join(usb_name(backend))
    }

    fn key(env: &Env) -> String {
        let mut h = Sha256::new();
        h.update(ARTEFACTS_VERSION);
        h.update(INIT);
        for backend in Backend::ALL {
            h.update(config(backend));
        }
        for bin in ["tandem-updater", "tandem-signer"] {
            let meta = fs::metadata(env.bin_dir.join(bin)).expect("binary metadata");
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            h.update(format!("{bin} {} {mtime:?}", meta.len()));
        }
        h.update(env.kernel.to_string_lossy().as_bytes());
        h.update(format!("{RELEASES:?} {BOOT_ASSETS:?}"));
        let stub = fs::metadata(SYSTEMD_STUB).expect("EFI stub metadata");
        h.update(format!(
            "{SYSTEMD_STUB} {} {:?}",
            stub.len(),
            stub.modified().ok()
        ));
        hex::encode(h.finalize())
            .get(..16)
            .expect("hex")
            .to_string()
    }

    fn build(env: &Env, dir: &Path) {
        keys(env, dir);
        for &(version, behaviour) in RELEASES {
            Self::build_release(dir, version, behaviour);
        }
        Self::build_boot_assets(env, dir);
        for backend in Backend::ALL {
            Self::build_usb(env, dir, backend);
        }
        grub_image(dir);
    }

    /// A slot image: ext4 with /etc/os-release and the health marker.
    fn build_release(dir: &Path, version: &str, behaviour: Behaviour) {
        let tree = dir.join(format!("tree-{version}"));
        fs::create_dir_all(tree.join("etc")).expect("mkdir");
        fs::write(tree.join("etc/os-release"), os_release(version)).expect("os-release");
        if behaviour == Behaviour::Healthy {
            fs::write(tree.join("etc/tandem-healthy"), "").expect("marker");
        }
        let img = dir.join(format!("v{version}.img"));
        run(Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                &format!("tandem-{version}"),
                "-d",
            ])
            .arg(&tree)
            .arg(&img)
            .arg(format!("{}k", IMAGE_SIZE / 1024)));
        fs::remove_dir_all(&tree).expect("rm tree");
    }

    /// `backend`'s USB stick: every release but the factory's signed with the boot assets
    /// it carries in the form `backend` boots, v2 in a repository layout, the others as
    /// bundle files.
    fn build_usb(env: &Env, dir: &Path, backend: Backend) {
        let tree = format!("usb-{}", backend.name());
        fs::create_dir_all(dir.join(&tree)).expect("mkdir usb");
        for &(version, _) in RELEASES.iter().filter(|(v, _)| *v != FACTORY) {
            Self::sign_release(
                env,
                dir,
                backend,
                version,
                &format!("{tree}/v{version}.tandem"),
            );
        }
        let repo = format!("{tree}/repo");
        let v2 = format!("{tree}/v2.0.0.tandem");
        publish(env, dir, &repo, "stable", &v2);
        fs::remove_file(dir.join(&v2)).expect("rm v2 bundle");
        let tree = dir.join(tree);
        fs::write(tree.join("step"), "none\n").expect("step");
        vfat_image(&tree, "TANDEMUSB", &dir.join(usb_name(backend)));
        fs::remove_dir_all(&tree).expect("rm usb tree");
    }

    /// Signs release `version` into the bundle `out` (relative to `dir`), with the boot
    /// assets it carries in the form `backend` boots.
    fn sign_release(env: &Env, dir: &Path, backend: Backend, version: &str, out: &str) {
        let image = format!("v{version}.img");
        let mut args: Vec<OsString> = [
            "sign",
            "--image",
            &image,
            "--product",
            PRODUCT,
            "--version",
            version,
            "--security-version",
            "1",
            "--key",
            "release.pem",
            "--chunk-size",
            "1MiB",
            "--out",
            out,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        if let Some(assets) = boot_assets(version) {
            args.extend(asset_flags(env, dir, backend, assets));
        }
        signer(env, dir, &args);
    }

    /// The factory's initramfs, and each release's boot assets: its initramfs, and the UKI
    /// of Debian's kernel, that initramfs, its command line and its os-release. The test's
    /// initramfs tree is made once and archived once per release, with the release written
    /// into it.
    fn build_boot_assets(env: &Env, dir: &Path) {
        let tandem = dir.join("initrd");
        Self::initrd_tree(env, dir, &tandem);
        fs::write(tandem.join(INITRD_RELEASE), FACTORY).expect("release");
        cpio(&tandem, &dir.join(initrd_name(FACTORY)));
        let exiting = dir.join("initrd-exits");
        initrd_skeleton(&exiting, &["bin"], EXITING_INIT);
        for assets in BOOT_ASSETS {
            let initrd = dir.join(initrd_name(assets.version));
            match assets.init {
                Init::Tandem => {
                    fs::write(tandem.join(INITRD_RELEASE), assets.version).expect("release");
                    cpio(&tandem, &initrd);
                }
                Init::Exits => cpio(&exiting, &initrd),
            }
            Self::build_uki(env, dir, assets, &initrd);
        }
        fs::remove_dir_all(&tandem).expect("rm initrd tree");
        fs::remove_dir_all(&exiting).expect("rm initrd tree");
    }

    fn build_uki(env: &Env, dir: &Path, assets: &BootAssets, initrd: &Path) {
        let parts = UkiParts {
            os_release: &os_release(assets.version),
            cmdline: assets.cmdline,
            kernel: &env.kernel,
            initrd,
        };
        uki::build(&parts, dir, &dir.join(uki_name(assets.version)));
    }

    /// The test's initramfs tree in `root`: busybox, `/init`, the stripped updater and its
    /// libraries, the kernel modules, the root and one updater configuration per backend.
    fn initrd_tree(env: &Env, dir: &Path, root: &Path) {
        initrd_skeleton(root, INITRD_DIRS, INIT);
        Self::copy_updater(env, root);
        Self::copy_modules(env, root);
        fs::copy(dir.join("root.json"), root.join("etc/tandem/root.json")).expect("root.json");
        for backend in Backend::ALL {
            fs::write(
                root.join(format!("etc/tandem/{}.toml", backend.name())),
                config(backend),
            )
            .expect("config");
        }
    }

    /// The stripped updater, and the shared libraries ldd lists and the dynamic loader at the
    /// same paths.
    fn copy_updater(env: &Env, root: &Path) {
        run(Command::new("strip")
            .arg("-o")
            .arg(root.join("usr/bin/tandem-updater"))
            .arg(env.bin_dir.join("tandem-updater")));
        let ldd = run(Command::new("ldd").arg(env.bin_dir.join("tandem-updater")));
        for lib in ldd.lines().filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        }) {
            let rel = lib.strip_prefix("/").expect("absolute");
            let to = root.join(rel);
            fs::create_dir_all(to.parent().expect("parent")).expect("mkdir lib");
            fs::copy(&lib, &to).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
        }
    }

    /// The kernel modules, flat in `/lib/modules`, and the order `/init` loads them in.
    fn copy_modules(env: &Env, root: &Path) {
        let mut order = String::new();
        for m in MODULES {
            let name = Path::new(m)
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            fs::copy(
                env.modules.join(format!("{m}.ko")),
                root.join(format!("lib/modules/{name}.ko")),
            )
            .expect("copy module");
            writeln!(order, "{name}").expect("fmt");
        }
        fs::write(root.join("lib/modules/order"), order).expect("order");
    }
}

/// The keys (`rootkey.pem`, `release.pem`) and the repository's first `root.json` in `dir`,
/// by `tandem-signer` as an operator makes them.
pub fn keys(env: &Env, dir: &Path) {
    let signer = |args: &[&str]| signer(env, dir, args);
    signer(&["keygen", "--out", "rootkey"]);
    signer(&["keygen", "--out", "release"]);
    signer(&[
        "root",
        "init",
        "--out",
        "root.json",
        "--root-key",
        "rootkey.pub.pem",
        "--root-threshold",
        "1",
        "--release-key",
        "release.pub.pem",
        "--release-threshold",
        "1",
        "--sign-with",
        "rootkey.pem",
        "--expires",
        "3650d",
    ]);
}

/// The standalone GRUB image `dir/grubx64.efi`.
pub fn grub_image(dir: &Path) {
    let embedded = dir.join("grub-embedded.cfg");
    fs::write(&embedded, GRUB_EMBEDDED_CFG).expect("embedded cfg");
    run(Command::new("grub-mkstandalone")
        .args(["-O", "x86_64-efi", "--locales=", "--themes=", "--fonts="])
        .arg(format!("--install-modules={GRUB_MODULES}"))
        .arg("--modules=part_gpt fat")
        .arg("-o")
        .arg(dir.join("grubx64.efi"))
        .arg(format!("boot/grub/grub.cfg={}", embedded.display())));
}

/// Runs `tandem-signer` in `dir`.
pub fn signer<S: AsRef<OsStr>>(env: &Env, dir: &Path, args: &[S]) {
    run(env.bin("tandem-signer").args(args).current_dir(dir));
}

/// `tandem-signer publish`, in `dir` (which holds `release.pem` and `root.json`): the bundle
/// `bundle` on `channel` of the repository `repo`.
pub fn publish(env: &Env, dir: &Path, repo: &str, channel: &str, bundle: &str) {
    signer(
        env,
        dir,
        &[
            "publish",
            "--repo",
            repo,
            "--channel",
            channel,
            "--key",
            "release.pem",
            "--root",
            "root.json",
            "--expires",
            "3650d",
            bundle,
        ],
    );
}

/// The file name of release `version`'s initramfs.
fn initrd_name(version: &str) -> String {
    format!("initrd-{version}.img")
}

/// The file name of release `version`'s UKI.
fn uki_name(version: &str) -> String {
    format!("uki-{version}.efi")
}

/// The file name of `backend`'s USB stick.
fn usb_name(backend: Backend) -> String {
    format!("usb-{}.img", backend.name())
}

/// `tandem-signer sign`'s flags for `assets`, as `backend` boots them: the UKI for
/// systemd-boot; Debian's kernel, the initramfs and the command line for GRUB.
fn asset_flags(env: &Env, dir: &Path, backend: Backend, assets: &BootAssets) -> Vec<OsString> {
    let path = |name: String| dir.join(name).into_os_string();
    match backend {
        Backend::SystemdBoot => vec!["--uki".into(), path(uki_name(assets.version))],
        Backend::Grub => vec![
            "--kernel".into(),
            env.kernel.clone().into_os_string(),
            "--initrd".into(),
            path(initrd_name(assets.version)),
            "--cmdline".into(),
            assets.cmdline.into(),
        ],
    }
}

/// A FAT filesystem image `out` labelled `label` holding the tree `dir`, sized for it.
pub fn vfat_image(dir: &Path, label: &str, out: &Path) {
    // FAT's own overhead and the clusters' slack: 16 MiB over the content.
    let size = tree_size(dir) + 16 * MIB;
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", label])
        .arg(out)
        .arg((size / 1024).to_string()));
    let mut mcopy = mtools("mcopy");
    mcopy.arg("-s").arg("-i").arg(out);
    for entry in fs::read_dir(dir).expect("ls tree") {
        mcopy.arg(entry.expect("entry").path());
    }
    run(mcopy.arg("::"));
}

/// The bytes of the files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .expect("ls")
        .map(|e| {
            let e = e.expect("entry");
            let meta = e.metadata().expect("metadata");
            match meta.is_dir() {
                true => tree_size(&e.path()),
                false => meta.len(),
            }
        })
        .sum()
}

/// An initramfs tree in `root`: the directories, busybox and `/init`.
fn initrd_skeleton(root: &Path, dirs: &[&str], init: &str) {
    for d in dirs {
        fs::create_dir_all(root.join(d)).expect("mkdir initrd");
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).expect("busybox");
    let path = root.join("init");
    fs::write(&path, init).expect("init");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod init");
}

/// Archives the tree `root` as the initramfs `out`: newc cpio, uncompressed (the kernel
/// unpacks it faster than it would gunzip it).
fn cpio(root: &Path, out: &Path) {
    let list = run(Command::new("find").arg(".").current_dir(root));
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(out).expect("initrd file"))
        .spawn()
        .expect("cpio");
    cpio.stdin
        .take()
        .expect("stdin")
        .write_all(list.as_bytes())
        .expect("cpio input");
    assert!(cpio.wait().expect("cpio").success(), "cpio failed");
}
