//! The harness: a fresh temp dir per test, external tools that must exist (a missing tool
//! fails the test with how to get it, never skips), and commands whose failure prints the
//! command, cwd, directory listing, stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use partitions::create::{lay_out, Layout};
use partitions::io::{BlockDevice, FileDisk};

pub const MIB: u64 = 1 << 20;

/// A test's scratch directory.
pub struct Tmp {
    pub dir: tempfile::TempDir,
}

impl Tmp {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A sparse image laid out by our own code: ESP, root-a, root-b, state.
    pub fn tandem_image(&self, name: &str, layout: Layout, size: u64) -> PathBuf {
        let p = self.path(name);
        partitions::create::create_image(&p, size, &layout).expect("create image");
        p
    }

    /// A small standard image (64 MiB: ESP 16, slots 16, state 8).
    pub fn small_image(&self, name: &str) -> PathBuf {
        self.tandem_image(
            name,
            Layout {
                esp: 16 * MIB,
                slot: 16 * MIB,
                state: 8 * MIB,
                pairs: Vec::new(),
            },
            64 * MIB,
        )
    }

    /// Run a command; panic with everything useful when it fails.
    pub fn run(&self, cmd: &mut Command) -> Output {
        let out = self.run_any(cmd);
        if !out.status.success() {
            panic!("{}", self.report(cmd, &out));
        }
        out
    }

    /// Run a command, whatever its exit status.
    pub fn run_any(&self, cmd: &mut Command) -> Output {
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    pub fn report(&self, cmd: &Command, out: &Output) -> String {
        let listing: Vec<String> = std::fs::read_dir(self.dir.path())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "command failed: {cmd:?}\ncwd: {}\nfiles: {listing:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.dir.path().display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// The path of a required external tool, or a failing test that says how to get it.
pub fn tool(name: &str) -> PathBuf {
    let package = match name {
        "sgdisk" => "gdisk",
        "cgpt" => "cgpt",
        "grub-editenv" => "grub-common",
        "grub-emu" => "grub-emu",
        "bootctl" => "systemd-boot",
        "mkfs.vfat" => "dosfstools",
        "mcopy" | "mmd" | "mdel" => "mtools",
        "unshare" => "util-linux",
        _ => "?",
    };
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/test.sh, which installs it (Debian package {package})");
}

/// A command for one of our tools.
pub fn cmd(name: &str) -> Command {
    Command::new(tool(name))
}

/// `tandem-disk`.
pub fn tandem_disk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem-disk"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn open_dev(path: &Path) -> Arc<dyn BlockDevice> {
    Arc::new(FileDisk::open(path).expect("open image"))
}

/// Lay out an existing device (used for images of odd sizes).
#[allow(dead_code)]
pub fn lay_out_path(path: &Path, layout: &Layout) {
    lay_out(&open_dev(path), layout).expect("lay out");
}
