//! The real binaries end to end on a disk image file: `tandem-signer` makes the keys, the
//! root and the bundle, `tandem-disk` the disk and the factory image and plays the firmware,
//! `tandem-updater` installs, judges the trial boot and reports its status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tandem_tests::{image, IMAGE_LEN};

const GPT: &str = r#"boot = "gpt""#;

/// A fresh directory and a command runner that shows everything when a command fails.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
}

/// The workspace's binaries, built next to this test executable by
/// `cargo build --workspace --bins` (scripts/test.sh does it before the tests).
pub(crate) fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap();
    let path = debug.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

impl Sandbox {
    pub(crate) fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `bin args…` in the sandbox; `expect` is the exit code wanted.
    pub(crate) fn run(&self, bin: &str, args: &[&str], expect: i32) -> Output {
        let mut cmd = Command::new(binary(bin));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn");
        let out = cmd.output().unwrap();
        if out.status.code() != Some(expect) {
            let listing: Vec<_> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            panic!(
                "command {cmd:?}\ncwd {}\nexpected exit {expect}, got {:?}\nfiles {listing:?}\n\
                 --- stdout\n{}\n--- stderr\n{}",
                self.dir.path().display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    /// [`run`](Self::run), but a command still running after `limit` is killed and fails
    /// the test (a hang is a failure, not a stall of the suite).
    pub(crate) fn run_within(
        &self,
        bin: &str,
        args: &[&str],
        expect: i32,
        limit: std::time::Duration,
    ) -> Output {
        use std::process::Stdio;
        let child = Command::new(binary(bin))
            .args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        let out = match rx.recv_timeout(limit) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                panic!("{bin} {args:?} was still running after {limit:?}: killed");
            }
        };
        assert_eq!(
            out.status.code(),
            Some(expect),
            "{bin} {args:?}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub(crate) fn stdout(&self, bin: &str, args: &[&str]) -> String {
        String::from_utf8(self.run(bin, args, 0).stdout).unwrap()
    }

    /// The agent's configuration on a node that booted `booted`, boot state in `boot`
    /// (its updater.toml keys).
    pub(crate) fn config(&self, booted: &str, boot: &str) -> String {
        let path = self.path(&format!("updater-{booted}.toml"));
        let text = format!(
            r#"disk = "{disk}"
{boot}
state = "{state}"
root = "{root}"
product = "acme-edge"
tries = 2
booted_slot = "{booted}"
reboot = ["true"]
[[health]]
exec = ["sh", "-c", "test -e '{marker}'"]
timeout = "10s"
"#,
            disk = self.path("disk.img").display(),
            state = self.path("state/state.json").display(),
            root = self.path("root.json").display(),
            marker = self.path("healthy").display(),
        );
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Keys, a root, the raw images v1 and v2 and the signed bundle `v2.tandem`.
    pub(crate) fn release_v2(&self) {
        let s = self;
        for key in ["root", "rel1", "rel2", "rel3"] {
            s.run("tandem-signer", &["keygen", "--out", key], 0);
        }
        s.run(
            "tandem-signer",
            &[
                "root",
                "init",
                "--out",
                "root.json",
                "--root-key",
                "root.pub.pem",
                "--root-threshold",
                "1",
                "--release-key",
                "rel1.pub.pem",
                "--release-key",
                "rel2.pub.pem",
                "--release-key",
                "rel3.pub.pem",
                "--release-threshold",
                "2",
                "--sign-with",
                "root.pem",
            ],
            0,
        );
        std::fs::write(s.path("v1.raw"), image(IMAGE_LEN, 1)).unwrap();
        std::fs::write(s.path("v2.raw"), image(IMAGE_LEN, 2)).unwrap();
        s.sign("v2.raw", "2.0.0", "2", &[], "v2.tandem");
    }

    /// Signs `raw` as `version` of acme-edge with two of the release keys into `out`,
    /// with `extra` flags (boot assets, …).
    pub(crate) fn sign(&self, raw: &str, version: &str, security: &str, extra: &[&str], out: &str) {
        let args = [
            "sign",
            "--image",
            raw,
            "--product",
            "acme-edge",
            "--version",
            version,
            "--security-version",
            security,
            "--key",
            "rel1.pem",
            "--key",
            "rel3.pem",
            "--chunk-size",
            "64KiB",
            "--out",
            out,
        ];
        self.run("tandem-signer", &[&args[..], extra].concat(), 0);
    }

    /// `disk.img`: two 2 MiB slots, both unbootable.
    pub(crate) fn create_disk(&self) {
        let s = self;
        s.run(
            "tandem-disk",
            &[
                "create",
                "--size",
                "8MiB",
                "--slot-size",
                "2MiB",
                "--esp",
                "1MiB",
                "--state",
                "1MiB",
                "disk.img",
            ],
            0,
        );
    }
}

#[test]
fn cli_install_boot_check_status_on_a_disk_image() {
    let s = Sandbox::new();
    s.release_v2();
    s.create_disk();
    s.run("tandem-disk", &["write-slot", "disk.img", "a", "v1.raw"], 0);
    std::fs::write(s.path("healthy"), "").unwrap();
    assert_eq!(s.stdout("tandem-disk", &["boot", "disk.img"]).trim(), "a");

    let on_a = s.config("a", GPT);
    let status = s.stdout("tandem-updater", &["--config", &on_a, "status"]);
    assert!(
        status.contains("slot a: an image the updater did not write (factory)")
            && status.contains("slot b: no image the updater wrote, not bootable"),
        "{status}"
    );
    let out = s.stdout(
        "tandem-updater",
        &["--config", &on_a, "install", "v2.tandem"],
    );
    assert!(out.contains("acme-edge 2.0.0 written to slot b"), "{out}");
    assert!(out.contains("boots next as a trial"), "{out}");

    assert_eq!(s.stdout("tandem-disk", &["boot", "disk.img"]).trim(), "b");
    let on_b = s.config("b", GPT);
    let out = s.stdout("tandem-updater", &["--config", &on_b, "boot-check"]);
    assert!(
        out.contains("slot b (2.0.0) passed its health checks: committed"),
        "{out}"
    );

    let json = s.stdout("tandem-updater", &["--config", &on_b, "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["booted"], "b", "{json}");
    assert_eq!(status["next_boot"], "b", "{json}");
    assert_eq!(status["state"]["phase"]["phase"], "committed", "{json}");
    assert_eq!(status["counters"]["security_floor"], 2, "{json}");
    assert_eq!(status["slots"][1]["release"]["version"], "2.0.0", "{json}");
    assert_eq!(status["slots"][1]["boot"]["successful"], true, "{json}");

    // A bundle that does not exist is a usage error (exit 2) naming it.
    let out = s.run(
        "tandem-updater",
        &["--config", &on_b, "install", "missing.tandem"],
        2,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.tandem"), "{stderr}");
    // A tampered bundle is refused with exit 3 and nothing changes.
    let mut bytes = std::fs::read(s.path("v2.tandem")).unwrap();
    bytes[0] ^= 1;
    std::fs::write(s.path("bad.tandem"), bytes).unwrap();
    let out = s.run(
        "tandem-updater",
        &["--config", &on_b, "install", "bad.tandem"],
        3,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.tandem"), "{stderr}");
    assert_eq!(s.stdout("tandem-disk", &["boot", "disk.img"]).trim(), "b");
}

/// A grub node provisioned carelessly: the factory image written without the
/// grub flags (so the GPT got the boot attributes) and the grubenv set up with `init-boot`
/// (its `TANDEM_ORDER` empty): the running slot was in no boot order, and the trial's
/// fallback was nothing. The agent now makes the running slot the fallback before the flip,
/// and `tandem-disk` refuses to write GPT boot state on a disk set up for grub.
#[test]
fn a_trial_on_a_carelessly_provisioned_grub_node_falls_back_to_the_running_slot() {
    let s = Sandbox::new();
    s.release_v2();
    s.create_disk();
    let grub = ["--backend", "grub", "--grubenv", "grubenv"];
    s.run("tandem-disk", &["write-slot", "disk.img", "a", "v1.raw"], 0);
    s.run(
        "tandem-disk",
        &[&["init-boot", "disk.img"][..], &grub].concat(),
        0,
    );
    let out = s.run(
        "tandem-disk",
        &[&["boot", "disk.img"][..], &grub].concat(),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nothing bootable"),
        "the grubenv names no slot: {stderr}"
    );
    // In the other order the careless step itself is refused, naming both backends.
    let out = s.run("tandem-disk", &["write-slot", "disk.img", "a", "v1.raw"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("set up for the grub backend") && stderr.contains("--grubenv"),
        "{stderr}"
    );
    let out = s.run(
        "tandem-disk",
        &["write-slot", "disk.img", "a", "v1.raw", "--backend", "gpt"],
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kept by the grub backend") && stderr.contains("not by gpt"),
        "{stderr}"
    );

    let grubenv = s.path("grubenv");
    let on_a = s.config("a", &format!("boot = \"grub\"\ngrubenv = {grubenv:?}"));
    let out = s.stdout(
        "tandem-updater",
        &["--config", &on_a, "install", "v2.tandem"],
    );
    assert!(out.contains("boots next as a trial"), "{out}");
    let show = s.stdout(
        "tandem-disk",
        &[&["show", "disk.img", "--json"][..], &grub].concat(),
    );
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["slots"][0]["state"]["successful"], true, "{show}");
    // The trial is never committed: after its two tries the firmware boots the old slot.
    let boots: Vec<String> = (0..4)
        .map(|_| {
            s.stdout("tandem-disk", &[&["boot", "disk.img"][..], &grub].concat())
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(boots, ["b", "b", "a", "a"]);
}

/// `init-boot --backend grub` on a fresh ESP whose grubenv directory does not exist yet:
/// it creates the directory and the grubenv (as it creates `loader/entries/` for
/// systemd-boot), instead of failing with a hint to run `init-boot`, the command that failed.
#[test]
fn init_boot_for_grub_creates_a_missing_grubenv_directory() {
    let s = Sandbox::new();
    std::fs::write(s.path("v1.raw"), image(IMAGE_LEN, 1)).unwrap();
    s.create_disk();
    let grub = ["--backend", "grub", "--grubenv", "esp/EFI/tandem/grubenv"];
    assert!(!s.path("esp").exists());
    let out = s.stdout(
        "tandem-disk",
        &[&["init-boot", "disk.img"][..], &grub].concat(),
    );
    assert!(out.contains("grub backend ready"), "{out}");
    let env = std::fs::read(s.path("esp/EFI/tandem/grubenv")).unwrap();
    assert_eq!(env.len(), 1024, "a full GRUB environment block");
    s.run(
        "tandem-disk",
        &[&["write-slot", "disk.img", "a", "v1.raw"][..], &grub].concat(),
        0,
    );
    let boot = s.stdout("tandem-disk", &[&["boot", "disk.img"][..], &grub].concat());
    assert_eq!(boot.trim(), "a");
}

/// `install --help` says what a source may be, a repository URL included, and that a manual
/// install sends no report.
#[test]
fn install_help_names_a_url_source_and_says_no_report_is_sent() {
    let s = Sandbox::new();
    let help = s.stdout("tandem-updater", &["install", "--help"]);
    // As one line: clap wraps the text to the terminal's width.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("http(s):// repository URL"), "{help}");
    assert!(help.contains("sends no report"), "{help}");
}
