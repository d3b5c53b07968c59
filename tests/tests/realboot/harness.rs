//! The real-boot harness: tools, the artefacts shared by every run (cached under
//! `target/realboot/cache/`), one node's disk and USB stick, a QEMU machine that boots them,
//! and the disk read back on the host.
//!
//! No root, mounts or loop devices: filesystems are made as image files (`mkfs.vfat -C`,
//! `mke2fs -d`), filled with mtools, `dd conv=notrunc`-ed into place and read back the same
//! way (mtools at an offset, `debugfs` on a copy of the partition).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use partitions::boot::grub::GrubEnv;
use sha2::{Digest, Sha256};

/// Bump when the artefacts change in a way the cache key does not see.
const ARTEFACTS_VERSION: &str = "realboot-3";
pub const PRODUCT: &str = "acme-realboot";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const BUSYBOX: &str = "/bin/busybox";
const GRUB_MODULES_DIR: &str = "/usr/lib/grub/x86_64-efi";
const INIT: &str = include_str!("init.sh");
/// Loaded in this order by `/init` (none depends on a later one).
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
    "fs/fat/fat",
    "fs/fat/vfat",
    "fs/nls/nls_cp437",
    "fs/nls/nls_ascii",
    "fs/efivarfs/efivarfs",
];
/// GRUB modules in the standalone image's memdisk (`--install-modules`).
const GRUB_MODULES: &str =
    "normal search search_fs_file part_gpt fat loadenv test echo linux configfile";
/// The embedded config: find the ESP and run the shipped docs/grub.cfg.example from it.
/// `prefix` stays the memdisk's, or modules would no longer load.
const GRUB_EMBEDDED_CFG: &str = "search --no-floppy --file --set=tandem_cfgdev /tandem/grub.cfg\n\
source (${tandem_cfgdev})/tandem/grub.cfg\n";
const DEPS_HINT: &str =
    "run scripts/realboot-deps.sh (it installs the packages and extracts the kernel)";

pub const MIB: u64 = 1 << 20;
pub const ESP_SIZE: u64 = 96 * MIB;
pub const SLOT_SIZE: u64 = 32 * MIB;
pub const STATE_SIZE: u64 = 8 * MIB;
/// Boots a new slot gets (the updater's `tries`): 2 keeps scenario 3 short.
pub const TRIES: u8 = 2;
/// The big release (v5) whose install the test cuts.
pub const BIG_IMAGE: u64 = 24 * MIB;

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} ({DEPS_HINT})"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mtools(tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.env("MTOOLS_SKIP_CHECK", "1");
    c
}

/// Where things are: the workspace's binaries, the cache, the kernel.
#[derive(Debug, Clone)]
pub struct Env {
    /// `target/debug` (or release): the binaries of the workspace.
    pub bin_dir: PathBuf,
    /// `target/realboot`.
    pub work: PathBuf,
    pub kernel: PathBuf,
    pub modules: PathBuf,
    pub docs: PathBuf,
}

impl Env {
    /// Finds everything the test needs, or fails saying what is missing and how to get it.
    pub fn find() -> Env {
        let exe = std::env::current_exe().expect("current_exe");
        // target/debug/deps/realboot-HASH
        let bin_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in target/<profile>/deps")
            .to_path_buf();
        let target = bin_dir.parent().expect("target dir").to_path_buf();
        let work = target.join("realboot");
        let mut missing = Vec::new();
        for bin in ["tandem-updater", "tandem-disk", "tandem-signer"] {
            if !bin_dir.join(bin).is_file() {
                missing.push(format!(
                    "{} (build it first: cargo build --workspace --bins)",
                    bin_dir.join(bin).display()
                ));
            }
        }
        for tool in [
            "qemu-system-x86_64",
            "sgdisk",
            "mkfs.vfat",
            "mcopy",
            "mdir",
            "mtype",
            "mke2fs",
            "debugfs",
            "e2fsck",
            "cpio",
            "strip",
            "grub-mkstandalone",
        ] {
            if which(tool).is_none() {
                missing.push(format!("the tool {tool}"));
            }
        }
        for file in [
            OVMF_CODE,
            OVMF_VARS,
            SYSTEMD_BOOT,
            BUSYBOX,
            GRUB_MODULES_DIR,
        ] {
            if !Path::new(file).exists() {
                missing.push(file.to_string());
            }
        }
        let kernel_dir = std::env::var_os("TANDEM_REALBOOT_KERNEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| work.join("kernel"));
        let kernel = fs::read_dir(kernel_dir.join("boot"))
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            });
        let Some(kernel) = kernel else {
            missing.push(format!(
                "the kernel in {}/boot/vmlinuz-*",
                kernel_dir.display()
            ));
            panic!(
                "real-boot test: missing {}: {DEPS_HINT}",
                missing.join(", ")
            );
        };
        let version = kernel
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .expect("vmlinuz-VERSION")
            .to_string();
        let modules = kernel_dir.join("lib/modules").join(&version).join("kernel");
        for m in MODULES {
            if !modules.join(format!("{m}.ko")).is_file() {
                missing.push(format!(
                    "the module {}",
                    modules.join(format!("{m}.ko")).display()
                ));
            }
        }
        assert!(
            missing.is_empty(),
            "real-boot test: missing {}: {DEPS_HINT}",
            missing.join(", ")
        );
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        Env {
            bin_dir,
            work,
            kernel,
            modules,
            docs,
        }
    }

    pub fn bin(&self, name: &str) -> Command {
        Command::new(self.bin_dir.join(name))
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Everything shared by all runs: keys, root, slot images, bundles, the USB stick, the
/// initramfs, the GRUB image. Built once per change of its inputs into
/// `target/realboot/cache/KEY/` (a new directory renamed into place, so concurrent tests
/// never see a half-built one).
#[derive(Debug, Clone)]
pub struct Artefacts {
    pub dir: PathBuf,
}

/// A release of the test OS: what its slot image makes the machine do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The health marker is there: boot-check passes.
    Healthy,
    /// No health marker: boot-check fails.
    Unhealthy,
    /// `/init` powers off before boot-check (a kernel that never comes up).
    Dies,
}

/// The releases: (version, behaviour, image size).
pub const RELEASES: &[(&str, Behaviour, u64)] = &[
    ("1.0.0", Behaviour::Healthy, 4 * MIB),
    ("2.0.0", Behaviour::Healthy, 4 * MIB),
    ("3.0.0", Behaviour::Unhealthy, 4 * MIB),
    ("4.0.0", Behaviour::Dies, 4 * MIB),
    ("5.0.0", Behaviour::Healthy, BIG_IMAGE),
];

impl Artefacts {
    pub fn get(env: &Env) -> Artefacts {
        let key = Self::key(env);
        let cache = env.work.join("cache");
        let dir = cache.join(&key);
        if dir.join("done").is_file() {
            return Artefacts { dir };
        }
        fs::create_dir_all(&cache).expect("create the cache");
        let tmp = cache.join(format!("{key}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).expect("create the cache entry");
        let started = Instant::now();
        Self::build(env, &tmp);
        fs::write(tmp.join("done"), "").expect("mark the cache entry");
        if fs::rename(&tmp, &dir).is_err() {
            // Another test built it meanwhile.
            let _ = fs::remove_dir_all(&tmp);
            assert!(
                dir.join("done").is_file(),
                "cache entry {} is incomplete",
                dir.display()
            );
        }
        // Older entries (other binaries) are dead weight: about 100 MB each.
        for entry in fs::read_dir(&cache).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != key && !name.contains(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        eprintln!(
            "realboot: artefacts built in {:.1?} into {}",
            started.elapsed(),
            dir.display()
        );
        Artefacts { dir }
    }

    fn key(env: &Env) -> String {
        let mut h = Sha256::new();
        h.update(ARTEFACTS_VERSION);
        h.update(INIT);
        h.update(config(Backend::SystemdBoot));
        h.update(config(Backend::Grub));
        for bin in ["tandem-updater", "tandem-signer"] {
            let meta = fs::metadata(env.bin_dir.join(bin)).expect("binary metadata");
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            h.update(format!("{bin} {} {mtime:?}", meta.len()));
        }
        h.update(env.kernel.to_string_lossy().as_bytes());
        hex::encode(h.finalize())
            .get(..16)
            .expect("hex")
            .to_string()
    }

    fn build(env: &Env, dir: &Path) {
        let signer = |args: &[&str]| {
            run(env.bin("tandem-signer").args(args).current_dir(dir));
        };
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
        // Slot images: ext4 with /etc/os-release and the behaviour markers.
        for &(version, behaviour, size) in RELEASES {
            let tree = dir.join(format!("tree-{version}"));
            fs::create_dir_all(tree.join("etc")).expect("mkdir");
            fs::write(
                tree.join("etc/os-release"),
                format!("NAME=\"Tandem test OS\"\nID=tandem-test\nVERSION_ID={version}\n"),
            )
            .expect("os-release");
            match behaviour {
                Behaviour::Healthy => {
                    fs::write(tree.join("etc/tandem-healthy"), "").expect("marker")
                }
                Behaviour::Unhealthy => {}
                Behaviour::Dies => fs::write(tree.join("etc/tandem-dies"), "").expect("marker"),
            }
            if size > 8 * MIB {
                // Incompressible payload: a write long enough to cut in the middle.
                let payload = pseudo_random((size - 4 * MIB) as usize, 5);
                fs::write(tree.join("payload"), payload).expect("payload");
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
                .arg(format!("{}k", size / 1024)));
            fs::remove_dir_all(&tree).expect("rm tree");
            if version != "1.0.0" {
                signer(&[
                    "sign",
                    "--image",
                    &format!("v{version}.img"),
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
                    &format!("v{version}.tandem"),
                ]);
            }
        }
        // The USB stick: v2 in a repository layout, the others as bundle files.
        let usb_tree = dir.join("usb");
        fs::create_dir_all(&usb_tree).expect("mkdir usb");
        signer(&[
            "publish",
            "--repo",
            "usb/repo",
            "--channel",
            "stable",
            "--key",
            "release.pem",
            "--root",
            "root.json",
            "--expires",
            "3650d",
            "v2.0.0.tandem",
        ]);
        for v in ["3.0.0", "4.0.0", "5.0.0"] {
            fs::rename(
                dir.join(format!("v{v}.tandem")),
                usb_tree.join(format!("v{v}.tandem")),
            )
            .expect("move bundle");
        }
        fs::write(usb_tree.join("step"), "none\n").expect("step");
        let usb = dir.join("usb.img");
        run(Command::new("mkfs.vfat")
            .args(["-C", "-n", "TANDEMUSB"])
            .arg(&usb)
            .arg((64 * MIB / 1024).to_string()));
        let mut mcopy = mtools("mcopy");
        mcopy.arg("-s").arg("-i").arg(&usb);
        for entry in fs::read_dir(&usb_tree).expect("ls usb") {
            mcopy.arg(entry.expect("entry").path());
        }
        run(mcopy.arg("::"));
        fs::remove_dir_all(&usb_tree).expect("rm usb tree");
        Self::build_initrd(env, dir);
        // The standalone GRUB image.
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

    fn build_initrd(env: &Env, dir: &Path) {
        let root = dir.join("initrd");
        for d in [
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
        ] {
            fs::create_dir_all(root.join(d)).expect("mkdir initrd");
        }
        fs::copy(BUSYBOX, root.join("bin/busybox")).expect("busybox");
        let init = root.join("init");
        fs::write(&init, INIT).expect("init");
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).expect("chmod init");
        let updater = root.join("usr/bin/tandem-updater");
        run(Command::new("strip")
            .arg("-o")
            .arg(&updater)
            .arg(env.bin_dir.join("tandem-updater")));
        // The shared libraries ldd lists, and the dynamic loader, at the same paths.
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
        fs::copy(dir.join("root.json"), root.join("etc/tandem/root.json")).expect("root.json");
        for backend in [Backend::SystemdBoot, Backend::Grub] {
            fs::write(
                root.join(format!("etc/tandem/{}.toml", backend.name())),
                config(backend),
            )
            .expect("config");
        }
        // newc cpio, uncompressed: the kernel unpacks it faster than it would gunzip it.
        let list = run(Command::new("find").arg(".").current_dir(&root));
        let mut cpio = Command::new("cpio")
            .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(fs::File::create(dir.join("initrd.img")).expect("initrd.img"))
            .spawn()
            .expect("cpio");
        cpio.stdin
            .take()
            .expect("stdin")
            .write_all(list.as_bytes())
            .expect("cpio input");
        assert!(cpio.wait().expect("cpio").success(), "cpio failed");
        fs::remove_dir_all(&root).expect("rm initrd tree");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The updater's configuration inside the machine.
pub fn config(backend: Backend) -> String {
    let boot = match backend {
        Backend::SystemdBoot => "boot = \"systemd-boot\"\nesp = \"/esp\"\n",
        Backend::Grub => "boot = \"grub\"\ngrubenv = \"/esp/tandem/grubenv\"\n",
    };
    format!(
        "disk = \"/dev/vda\"\n{boot}state = \"/state/tandem/state.json\"\n\
         root = \"/etc/tandem/root.json\"\nproduct = \"{PRODUCT}\"\ntries = {TRIES}\n\
         cmdline = \"/proc/cmdline\"\n\
         reboot = [\"/bin/sh\", \"-c\", \"echo TANDEM-REBOOT; sync; poweroff -f\"]\n\
         health_deadline = \"60s\"\n\n[[health]]\n\
         exec = [\"/bin/sh\", \"-c\", \"test -e /slot/etc/tandem-healthy\"]\ntimeout = \"20s\"\n"
    )
}

/// Deterministic incompressible bytes.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    SystemdBoot,
    Grub,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::SystemdBoot => "systemd-boot",
            Backend::Grub => "grub",
        }
    }
}

/// A partition's byte range on the disk image.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub offset: u64,
    pub len: u64,
}

/// A slot's boot state as the bootloader sees it, read from the ESP on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotBoot {
    /// No entry / not in `TANDEM_ORDER`.
    Unbootable,
    /// Committed: no counter / `OK=1`.
    Good,
    /// Not committed, with this many tries left (0: bad, never picked).
    Trial(u8),
}

/// The boot state of both slots and the raw text it was read from.
#[derive(Debug, Clone)]
pub struct BootView {
    pub a: SlotBoot,
    pub b: SlotBoot,
    pub raw: String,
}

/// One node: its disk (ESP, root-a with v1, root-b, state) and USB stick, in
/// `target/realboot/run/BACKEND/`.
pub struct Node {
    pub backend: Backend,
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub usb: PathBuf,
    pub esp: Part,
    pub state: Part,
}

impl Node {
    pub fn new(env: &Env, art: &Artefacts, backend: Backend) -> Node {
        let dir = env.work.join("run").join(backend.name());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("run dir");
        let disk = dir.join("disk.img");
        let size = 2 * MIB + ESP_SIZE + 2 * SLOT_SIZE + STATE_SIZE;
        run(env
            .bin("tandem-disk")
            .arg("create")
            .arg(&disk)
            .arg(format!("--size={size}"))
            .arg(format!("--slot-size={SLOT_SIZE}"))
            .arg(format!("--esp={ESP_SIZE}"))
            .arg(format!("--state={STATE_SIZE}")));
        let esp = partition(&disk, 1);
        let state = partition(&disk, 4);
        // The ESP's content, staged in a directory: the boot state comes from tandem-disk
        // (the same partitions code as the updater), v1 is written into root-a and marked good.
        let tree = dir.join("esp");
        for d in ["EFI/BOOT", "tandem/a", "tandem/b"] {
            fs::create_dir_all(tree.join(d)).expect("mkdir esp");
        }
        let backend_args: Vec<String> = match backend {
            Backend::SystemdBoot => vec![
                "--backend=systemd-boot".into(),
                format!("--esp={}", tree.display()),
            ],
            Backend::Grub => vec![
                "--backend=grub".into(),
                format!("--grubenv={}", tree.join("tandem/grubenv").display()),
            ],
        };
        run(env
            .bin("tandem-disk")
            .arg("init-boot")
            .arg(&disk)
            .args(&backend_args));
        run(env
            .bin("tandem-disk")
            .arg("write-slot")
            .arg(&disk)
            .arg("a")
            .arg(art.path("v1.0.0.img"))
            .args(&backend_args));
        let loader = match backend {
            Backend::SystemdBoot => PathBuf::from(SYSTEMD_BOOT),
            Backend::Grub => {
                fs::copy(
                    env.docs.join("grub.cfg.example"),
                    tree.join("tandem/grub.cfg"),
                )
                .expect("grub.cfg");
                art.path("grubx64.efi")
            }
        };
        fs::copy(loader, tree.join("EFI/BOOT/BOOTX64.EFI")).expect("loader");
        for slot in ["a", "b"] {
            fs::copy(&env.kernel, tree.join(format!("tandem/{slot}/vmlinuz"))).expect("kernel");
            fs::copy(
                art.path("initrd.img"),
                tree.join(format!("tandem/{slot}/initrd.img")),
            )
            .expect("initrd");
        }
        let esp_img = dir.join("esp.img");
        run(Command::new("mkfs.vfat")
            .args(["-C", "-n", "ESP"])
            .arg(&esp_img)
            .arg((esp.len / 1024).to_string()));
        let mut mcopy = mtools("mcopy");
        mcopy.arg("-s").arg("-i").arg(&esp_img);
        for entry in fs::read_dir(&tree).expect("ls esp") {
            mcopy.arg(entry.expect("entry").path());
        }
        run(mcopy.arg("::"));
        put(&disk, esp, &esp_img);
        fs::remove_file(&esp_img).expect("rm esp.img");
        // The state partition: an empty ext4.
        let state_img = dir.join("state.img");
        run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "tandem-state"])
            .arg(&state_img)
            .arg(format!("{}k", state.len / 1024)));
        put(&disk, state, &state_img);
        fs::remove_file(&state_img).expect("rm state.img");
        let usb = dir.join("usb.img");
        fs::copy(art.path("usb.img"), &usb).expect("usb");
        Node {
            backend,
            dir,
            disk,
            usb,
            esp,
            state,
        }
    }

    /// What the next boot's `/init` does after boot-check (`install …` or `none`).
    pub fn set_step(&self, step: &str) {
        let file = self.dir.join("step");
        fs::write(&file, format!("{step}\n")).expect("step");
        run(mtools("mcopy")
            .arg("-o")
            .arg("-i")
            .arg(&self.usb)
            .arg(&file)
            .arg("::/step"));
    }

    fn esp_image(&self) -> String {
        format!("{}@@{}", self.disk.display(), self.esp.offset)
    }

    /// The boot state as the bootloader will read it, from the ESP on the disk image.
    pub fn boot_view(&self) -> BootView {
        match self.backend {
            Backend::SystemdBoot => {
                let listing =
                    run(mtools("mdir").args(["-b", "-i", &self.esp_image(), "::/loader/entries"]));
                let names: Vec<String> = listing
                    .lines()
                    .filter_map(|l| l.rsplit('/').next())
                    .filter(|n| n.ends_with(".conf"))
                    .map(str::to_string)
                    .collect();
                let slot = |s: char| {
                    let found: Vec<&String> = names
                        .iter()
                        .filter(|n| n.starts_with(&format!("tandem-{s}")))
                        .collect();
                    assert!(found.len() <= 1, "two entries for slot {s}: {names:?}");
                    match found.first() {
                        None => SlotBoot::Unbootable,
                        Some(n) => match n.split_once('+') {
                            None => SlotBoot::Good,
                            Some((_, counter)) => {
                                let left = counter.split(['-', '.']).next().unwrap_or("");
                                SlotBoot::Trial(left.parse().expect("tries left"))
                            }
                        },
                    }
                };
                BootView {
                    a: slot('a'),
                    b: slot('b'),
                    raw: format!("loader/entries: {}", names.join(" ")),
                }
            }
            Backend::Grub => {
                let text =
                    run(mtools("mtype").args(["-i", &self.esp_image(), "::/tandem/grubenv"]));
                let env = GrubEnv::parse(text.as_bytes()).expect("grubenv parses");
                let order = env.get("TANDEM_ORDER").unwrap_or_default();
                let slot = |s: &str| {
                    if !order.split_whitespace().any(|w| w == s) {
                        SlotBoot::Unbootable
                    } else if env
                        .get(&format!("TANDEM_{}_OK", s.to_uppercase()))
                        .as_deref()
                        == Some("1")
                    {
                        SlotBoot::Good
                    } else {
                        let tries = env.get(&format!("TANDEM_{}_TRIES", s.to_uppercase()));
                        SlotBoot::Trial(tries.unwrap_or_default().parse().unwrap_or(0))
                    }
                };
                let raw = env
                    .names()
                    .filter(|n| !n.ends_with("PARTUUID"))
                    .map(|n| format!("{n}={}", env.get(n).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(" ");
                BootView {
                    a: slot("a"),
                    b: slot("b"),
                    raw: format!("grubenv: {raw}"),
                }
            }
        }
    }

    /// The agent's state file, read from the state partition (a copy, through debugfs).
    pub fn agent_state(&self) -> serde_json::Value {
        let copy = self.dir.join("state-readback.img");
        get(&self.disk, self.state, &copy);
        // After a power cut the last fsynced state may be in the ext4 journal only: debugfs
        // does not replay it, so replay it on the copy first (as the next mount would).
        let fsck = Command::new("e2fsck")
            .args(["-E", "journal_only", "-y"])
            .arg(&copy)
            .output()
            .expect("e2fsck");
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck on the state partition: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let out = Command::new("debugfs")
            .args(["-R", "cat /tandem/state.json"])
            .arg(&copy)
            .output()
            .expect("debugfs");
        let _ = fs::remove_file(&copy);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "state.json on the state partition does not parse ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub fn vm(&self) -> Vm {
        let vars = self.dir.join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars).expect("OVMF vars");
        Vm {
            dir: self.dir.clone(),
            disk: self.disk.clone(),
            usb: self.usb.clone(),
            vars,
            timeout: Duration::from_secs(
                std::env::var("TANDEM_REALBOOT_TIMEOUT")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(120),
            ),
            boots: 0,
        }
    }
}

/// The byte range of partition `n` (1-based), from sgdisk.
fn partition(disk: &Path, n: u32) -> Part {
    let info = run(Command::new("sgdisk")
        .arg("-i")
        .arg(n.to_string())
        .arg(disk));
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("sgdisk -i {n}: no {name:?} in\n{info}"))
    };
    Part {
        offset: field("First sector:") * 512,
        len: field("Partition size:") * 512,
    }
}

/// `dd conv=notrunc`: the image file into the partition.
fn put(disk: &Path, part: Part, image: &Path) {
    let data = fs::read(image).expect("read image");
    assert!(
        data.len() as u64 <= part.len,
        "{} is larger than its partition",
        image.display()
    );
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .expect("open disk");
    f.seek(SeekFrom::Start(part.offset)).expect("seek");
    f.write_all(&data).expect("write partition");
}

/// The partition into a file.
fn get(disk: &Path, part: Part, out: &Path) {
    let mut f = fs::File::open(disk).expect("open disk");
    f.seek(SeekFrom::Start(part.offset)).expect("seek");
    let mut data = vec![0; usize::try_from(part.len).expect("len")];
    f.read_exact(&mut data).expect("read partition");
    fs::write(out, data).expect("write copy");
}

/// A QEMU machine: OVMF (code read-only, its own copy of the variables, kept across boots
/// like a machine's NVRAM), the disk as `/dev/vda`, the USB stick as `/dev/vdb`, no network,
/// pure TCG, the serial port on stdout.
pub struct Vm {
    dir: PathBuf,
    disk: PathBuf,
    usb: PathBuf,
    vars: PathBuf,
    timeout: Duration,
    boots: usize,
}

/// The serial console of one boot, ANSI escapes and carriage returns removed.
pub struct SerialLog {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
    pub elapsed: Duration,
}

impl Vm {
    /// Boots until the machine powers off; fails on the hard timeout.
    pub fn boot(&mut self, name: &str) -> SerialLog {
        self.run(name, None)
    }

    /// Boots, and cuts the power (SIGKILL to QEMU) `delay` after a line containing `marker`.
    pub fn boot_and_cut(&mut self, name: &str, marker: &str, delay: Duration) -> SerialLog {
        self.run(name, Some((marker, delay)))
    }

    fn run(&mut self, name: &str, cut: Option<(&str, Duration)>) -> SerialLog {
        self.boots += 1;
        let name = format!("boot-{:02}-{name}", self.boots);
        let path = self.dir.join(format!("{name}.log"));
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-nodefaults",
            "-machine",
            "q35,accel=tcg",
            "-m",
            "512",
            "-smp",
            "1",
        ])
        .args([
            "-nographic",
            "-serial",
            "mon:stdio",
            "-nic",
            "none",
            "-no-reboot",
        ])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", self.vars.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", self.disk.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            self.usb.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start QEMU: {e} ({DEPS_HINT})"));
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        let readers = [
            std::thread::spawn(move || read_lines(stdout, &tx)),
            std::thread::spawn(move || read_lines(stderr, &tx2)),
        ];
        let mut log = fs::File::create(&path).expect("serial log file");
        let mut text = String::new();
        let deadline = started + self.timeout;
        let mut cut_at: Option<Instant> = None;
        let mut killed = false;
        let mut timed_out = false;
        loop {
            let now = Instant::now();
            if let Some(at) = cut_at {
                if now >= at && !killed {
                    let _ = child.kill();
                    killed = true;
                    text.push_str("TANDEM-HOST power cut (QEMU killed)\n");
                }
            }
            if now >= deadline && !killed {
                let _ = child.kill();
                killed = true;
                timed_out = true;
            }
            let wait = cut_at
                .filter(|_| !killed)
                .map_or(Duration::from_millis(200), |at| {
                    at.saturating_duration_since(now)
                })
                .min(Duration::from_millis(200));
            match rx.recv_timeout(wait) {
                Ok(line) => {
                    let line = clean(&line);
                    let _ = writeln!(log, "{:7.2} {line}", started.elapsed().as_secs_f64());
                    if let Some((marker, delay)) = cut {
                        if cut_at.is_none() && line.contains(marker) {
                            cut_at = Some(Instant::now() + delay);
                        }
                    }
                    text.push_str(&line);
                    text.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().expect("wait QEMU");
        for r in readers {
            let _ = r.join();
        }
        let log = SerialLog {
            name,
            path,
            text,
            elapsed: started.elapsed(),
        };
        if timed_out {
            log.fail(&format!(
                "no power-off within {:?}: QEMU killed",
                self.timeout
            ));
        }
        if cut.is_some() && !killed {
            log.fail("the machine powered off before the power cut");
        }
        if !killed && !status.success() {
            log.fail(&format!("QEMU exited with {status}"));
        }
        eprintln!("realboot: {} took {:.1?}", log.name, log.elapsed);
        log
    }
}

fn read_lines(stream: impl Read, tx: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Removes ANSI escape sequences, carriage returns and the trailing newline.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

impl SerialLog {
    /// Fails the test with the whole serial log.
    pub fn fail(&self, message: &str) -> ! {
        panic!(
            "{}: {message}\n--- serial log ({}) ---\n{}--- end of serial log ---",
            self.name,
            self.path.display(),
            self.text
        )
    }

    /// The lines the test's `/init` printed (`TANDEM-…`).
    pub fn lines(&self, prefix: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter_map(|l| l.find("TANDEM-").map(|i| &l[i + 7..]))
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    pub fn expect(&self, needle: &str) {
        if !self.text.contains(needle) {
            self.fail(&format!("expected {needle:?} in the serial log"));
        }
    }

    pub fn expect_not(&self, needle: &str) {
        if self.text.contains(needle) {
            self.fail(&format!("did not expect {needle:?} in the serial log"));
        }
    }

    /// `(slot, version)` from `TANDEM-BOOTED slot=X version=Y`.
    pub fn booted(&self) -> (String, String) {
        let line = self
            .lines("BOOTED ")
            .first()
            .copied()
            .unwrap_or_else(|| self.fail("the machine never reported a booted slot"));
        let fields: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        (
            fields.get("slot").copied().unwrap_or_default().to_string(),
            fields
                .get("version")
                .copied()
                .unwrap_or_default()
                .to_string(),
        )
    }

    pub fn expect_booted(&self, slot: &str, version: &str) {
        let got = self.booted();
        if got != (slot.to_string(), version.to_string()) {
            self.fail(&format!(
                "expected slot {slot} with {version} to boot, got {got:?}"
            ));
        }
    }
}
