//! The environment: the host tools and firmware files the test needs, Debian's cloud kernel
//! and its modules, and the workspace's binaries. [`Env::find`] fails, naming what is missing
//! and how to get it; nothing is skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built for Secure Boot (it needs SMM); `OVMF_CODE_4M.snakeoil.fd` links to it.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Variables with Debian's snakeoil certificate in PK, KEK and db: Secure Boot on.
pub const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// systemd's EFI stub: the UKIs are this file with the kernel, initramfs, command line and
/// os-release added as sections (systemd-ukify is not in Debian 12).
pub const SYSTEMD_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
pub const BUSYBOX: &str = "/bin/busybox";
const GRUB_MODULES_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// Kernel modules, loaded in this order by `/init` (none depends on a later one).
pub const MODULES: &[&str] = &[
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
pub const DEPS_HINT: &str =
    "run scripts/realboot-deps.sh (it installs the packages and extracts the kernel)";
const TOOLS: &[&str] = &[
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
    "objcopy",
    "objdump",
    "grub-mkstandalone",
    "mmdebstrap",
    "socat",
    "sbsign",
    "openssl",
    "veritysetup",
    "blkid",
];
const BINARIES: &[&str] = &[
    "tandem-updater",
    "tandem-disk",
    "tandem-signer",
    "tandem-server",
];

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

/// An mtools command (`mcopy`, `mdir`, `mtype`) that accepts images of any geometry.
pub fn mtools(tool: &str) -> Command {
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
        let mut missing = missing_host_parts(&bin_dir);
        let kernel_dir = std::env::var_os("TANDEM_REALBOOT_KERNEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| work.join("kernel"));
        let Some(kernel) = find_kernel(&kernel_dir) else {
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

/// The workspace binaries, host tools and firmware files that are not there.
fn missing_host_parts(bin_dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    for bin in BINARIES {
        if !bin_dir.join(bin).is_file() {
            missing.push(format!(
                "{} (build it first: cargo build --workspace --bins)",
                bin_dir.join(bin).display()
            ));
        }
    }
    for tool in TOOLS {
        if which(tool).is_none() {
            missing.push(format!("the tool {tool}"));
        }
    }
    for file in [
        OVMF_CODE,
        OVMF_VARS,
        OVMF_CODE_SECBOOT,
        OVMF_VARS_SNAKEOIL,
        SYSTEMD_BOOT,
        SYSTEMD_STUB,
        BUSYBOX,
        GRUB_MODULES_DIR,
    ] {
        if !Path::new(file).exists() {
            missing.push(file.to_string());
        }
    }
    missing
}

/// `KERNEL_DIR/boot/vmlinuz-*`, as `scripts/realboot-deps.sh` extracts it.
fn find_kernel(kernel_dir: &Path) -> Option<PathBuf> {
    fs::read_dir(kernel_dir.join("boot"))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
