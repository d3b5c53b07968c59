//! Real boot, end to end: UEFI firmware (OVMF) → systemd-boot or GRUB reading the
//! boot state Tandem wrote → Debian's cloud kernel → an initramfs whose `/init` (busybox)
//! runs `tandem-updater` against real block devices (`/dev/vda` the disk, `/dev/vdb` a USB
//! stick carrying the signed updates). Pure TCG QEMU; the host reads the disk back between
//! boots.
//!
//! Releases carry their kernel: on systemd-boot a UKI, on GRUB a kernel, an
//! initramfs and a command line. Every initramfs of the test says whose it is
//! (`TANDEM-INITRD release=…`) and what the kernel was given (`TANDEM-CMDLINE …`).
//!
//! One machine per backend goes through the scenarios in nine boots (each boot both checks
//! the previous step and starts the next one):
//!
//! | boot | runs (root, boot files) | what happens after boot-check | scenario |
//! |---|---|---|---|
//! | 1 | A 1.0.0, factory's | install 2.0.0 (root + boot assets) from the USB repository | 1 |
//! | 2 | B 2.0.0, 2.0.0's | boot-check commits B; install 3.0.0 (root only) | 1, 2 |
//! | 3 | A 3.0.0, factory's | boot-check fails, marks A bad, "reboots" | 2 |
//! | 4 | B 2.0.0, 2.0.0's | install 4.0.0, whose initramfs's `/init` exits | 2, 3 |
//! | 5, 6 | A: 4.0.0's kernel panics, the machine resets | – | 3 |
//! | 7 | B 2.0.0, 2.0.0's | boot-check records the loader's fallback; install 5.0.0, power cut while its boot files are written | 3, 4 |
//! | 8 | B 2.0.0, 2.0.0's | install 5.0.0 again | 4 |
//! | 9 | A 5.0.0, 5.0.0's | boot-check commits A | 4 |
//!
//! These are the scenarios a real OS cannot reproduce cheaply (a kernel that panics, a power
//! cut while the boot files are written); `realos.rs` boots a real Debian systemd OS from the
//! slots and updates it over the network with the `dist/` units as shipped; `secureboot.rs`
//! boots that OS under Secure Boot with signed UKIs and dm-verity roots.
//!
//! Needs `scripts/realboot-deps.sh` (packages and the kernel) and the workspace binaries
//! (`cargo build --workspace --bins`); fails, never skips, when they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;
mod realos;
mod secureboot;

use std::time::{Duration, Instant};

use harness::{boot_assets, Artefacts, Backend, Env, Node, SerialLog, SlotBoot, FACTORY, TRIES};
use serde_json::Value;
use SlotBoot::{Good, Trial, Unbootable};

/// How long after the agent's first "writing boot file" line the power is cut: well inside
/// the writing of the boot files (a UKI, or a kernel and an initramfs, of about 39 MB each),
/// which takes several seconds under TCG.
const CUT_DELAY: Duration = Duration::from_millis(1000);
/// A slot's boot files as the factory left them.
const FACTORY_FILES: &[&str] = &["initrd.img", "vmlinuz"];

#[test]
fn systemd_boot() {
    scenarios(Backend::SystemdBoot);
}

#[test]
fn grub() {
    scenarios(Backend::Grub);
}

fn scenarios(backend: Backend) {
    let started = Instant::now();
    let env = Env::find();
    let art = Artefacts::get(&env);
    let node = Node::new(&env, &art, backend);
    let mut vm = node.vm();
    let sd = backend == Backend::SystemdBoot;
    let release_files = release_files(backend);
    expect_view(&node, None, "factory", Good, Unbootable);

    // 1. v1 in A boots with the factory's boot files; install v2, which brings its kernel,
    // into B (from the USB stick's repository).
    node.set_step("install /usb/repo --channel stable");
    let log = vm.boot("a-v1-install-v2");
    log.expect_booted("a", "1.0.0");
    expect_kernel(&log, FACTORY);
    log.expect("slot a: no update in trial");
    log.expect("writing boot file");
    log.expect("TANDEM-INSTALL rc=0");
    expect_view(&node, Some(&log), "v2 installed", Good, Trial(TRIES));
    expect_phase(&node, &log, "written", "b", "2.0.0");
    expect_boot_files(&node, &log, "b", release_files);
    expect_boot_files(&node, &log, "a", FACTORY_FILES);

    // 1. Next boot runs B with v2's kernel, initramfs and command line; health passes; B is
    // committed. Then install v3 (a root image only) into A.
    node.set_step("install /usb/v3.0.0.tandem");
    let log = vm.boot("b-v2-commit-install-v3");
    log.expect_booted("b", "2.0.0");
    expect_kernel(&log, "2.0.0");
    if sd {
        // systemd-boot counted the try in the file name before the kernel started.
        log.expect(&format!(
            "TANDEM-BOOTCOUNTPATH \\loader\\entries\\tandem-b+{}-1.conf",
            TRIES - 1
        ));
    }
    log.expect("slot b (2.0.0) passed its health checks: committed");
    log.expect("TANDEM-INSTALL rc=0");
    expect_view(
        &node,
        Some(&log),
        "v2 committed, v3 installed",
        Trial(TRIES),
        Good,
    );
    let state = expect_phase(&node, &log, "written", "a", "3.0.0");
    expect_committed(&state, &log, "b", "2.0.0");
    // v3 carries no boot assets: A keeps the factory's.
    expect_boot_files(&node, &log, "a", FACTORY_FILES);

    // 2. Next boot runs A (v3's root, the factory's kernel); its health check fails: marked
    // bad, "reboot".
    node.set_step("none");
    let log = vm.boot("a-v3-unhealthy");
    log.expect_booted("a", "3.0.0");
    expect_kernel(&log, FACTORY);
    // The reboot command powers off before boot-check exits (its rc line never comes).
    log.expect("health checks failed: rolling back");
    log.expect("TANDEM-REBOOT");
    log.expect_not("TANDEM-BOOT-CHECK rc=0");
    expect_view(&node, Some(&log), "v3 marked bad", Trial(0), Good);
    let state = expect_phase(&node, &log, "rolled-back", "a", "3.0.0");
    expect_rolled_back(&state, &log, "3.0.0");

    // 2. The firmware boots B again. Then install v4, whose initramfs's /init exits.
    node.set_step("install /usb/v4.0.0.tandem");
    let log = vm.boot("b-v2-after-rollback-install-v4");
    log.expect_booted("b", "2.0.0");
    expect_kernel(&log, "2.0.0");
    log.expect("slot b: no update in trial");
    log.expect("TANDEM-INSTALL rc=0");
    expect_view(&node, Some(&log), "v4 installed", Trial(TRIES), Good);
    expect_phase(&node, &log, "written", "a", "4.0.0");
    expect_boot_files(&node, &log, "a", release_files);

    // 3. The bootloader alone counts the tries down: A's kernel panics exactly TRIES times...
    node.set_step("none");
    for attempt in 1..=TRIES {
        let log = vm.boot(&format!("a-v4-panics-{attempt}"));
        expect_panic(&log, "a", "4.0.0");
        expect_view(
            &node,
            Some(&log),
            "a try used by the bootloader",
            Trial(TRIES - attempt),
            Good,
        );
    }

    // 3. ... then falls back to B, v2's kernel and initramfs with v2's root, where boot-check
    // records the rollback. 4. Install v5 and cut the power while its boot files are being
    // written.
    node.set_step("install /usb/v5.0.0.tandem");
    let log = vm.boot_and_cut(
        "b-v2-fallback-install-v5-cut",
        "writing boot file",
        CUT_DELAY,
    );
    log.expect_booted("b", "2.0.0");
    expect_kernel(&log, "2.0.0");
    log.expect("slot a (4.0.0) never came up: the firmware rolled back");
    log.expect_not("TANDEM-INSTALL rc=");
    log.expect_not("written to slot");
    let state = expect_phase(&node, &log, "writing", "a", "5.0.0");
    expect_rolled_back(&state, &log, "4.0.0");
    expect_view(&node, Some(&log), "cut while writing v5", Unbootable, Good);
    expect_boot_files(&node, &log, "b", release_files);
    eprintln!(
        "realboot {}: slot a's boot files after the cut: {:?}",
        backend.name(),
        node.boot_files("a")
    );

    // 4. The next boot still runs B with v2's kernel; a new install succeeds...
    let log = vm.boot("b-v2-after-cut-install-v5");
    log.expect_booted("b", "2.0.0");
    expect_kernel(&log, "2.0.0");
    log.expect("TANDEM-INSTALL rc=0");
    // The root image was durable before the boot files were begun: it is resumed whole,
    // and only the boot files are written again.
    log.expect("5.0.0 written to slot a (0 bytes fetched of a ");
    log.expect("; 0 chunks written, 0 reused, 0 zeroed, ");
    expect_view(&node, Some(&log), "v5 installed", Trial(TRIES), Good);
    expect_phase(&node, &log, "written", "a", "5.0.0");
    expect_boot_files(&node, &log, "a", release_files);

    // 4. ... and boots v5's kernel with v5's root, and commits.
    node.set_step("none");
    let log = vm.boot("a-v5-commit");
    log.expect_booted("a", "5.0.0");
    expect_kernel(&log, "5.0.0");
    log.expect("slot a (5.0.0) passed its health checks: committed");
    expect_view(&node, Some(&log), "v5 committed", Good, Good);
    let state = expect_phase(&node, &log, "committed", "a", "5.0.0");
    expect_committed(&state, &log, "a", "5.0.0");

    eprintln!(
        "realboot {}: all scenarios passed in {:.1?} (logs in {})",
        backend.name(),
        started.elapsed(),
        node.dir.display()
    );
}

/// A slot's boot files after a release with boot assets: systemd-boot's releases carry a
/// UKI (its `.cmdline` kept beside it), GRUB's a kernel, an initramfs and a command line.
fn release_files(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::SystemdBoot => &["cmdline", "uki.efi"],
        Backend::Grub => &["cmdline", "cmdline.env", "initrd.img", "vmlinuz"],
    }
}

/// The kernel that booted had release `version`'s boot files: its initramfs's marker, and
/// (for a release with boot assets) its command line in `/proc/cmdline`.
fn expect_kernel(log: &SerialLog, version: &str) {
    log.expect(&format!("TANDEM-INITRD release={version}"));
    let Some(assets) = boot_assets(version) else {
        return;
    };
    let cmdline = log.lines("CMDLINE ");
    if !cmdline.iter().any(|l| l.contains(assets.cmdline)) {
        log.fail(&format!(
            "expected {version}'s command line {:?} in /proc/cmdline, got {cmdline:?}",
            assets.cmdline
        ));
    }
}

/// Slot `slot`'s kernel started with release `version`'s (broken) boot files and panicked,
/// so the machine reset (QEMU's `-no-reboot` ends it there) before any `/init` of ours ran.
fn expect_panic(log: &SerialLog, slot: &str, version: &str) {
    let assets = boot_assets(version).expect("the broken release carries boot assets");
    let slot_param = format!("tandem.slot={slot}");
    let started = log.text.lines().any(|l| {
        l.contains("Kernel command line:") && l.contains(assets.cmdline) && l.contains(&slot_param)
    });
    if !started {
        log.fail(&format!(
            "expected the kernel to start with {version}'s command line {:?} and {slot_param}",
            assets.cmdline
        ));
    }
    log.expect("Kernel panic - not syncing");
    log.expect_not("TANDEM-INIT");
    log.expect_not("TANDEM-POWEROFF");
}

/// `slot`'s boot files on the ESP, by name.
fn expect_boot_files(node: &Node, log: &SerialLog, slot: &str, expected: &[&str]) {
    let files = node.boot_files(slot);
    if files != expected {
        log.fail(&format!(
            "expected slot {slot}'s boot files {expected:?} on the ESP, found {files:?}"
        ));
    }
}

/// The boot state on the ESP, read back on the host.
fn expect_view(node: &Node, log: Option<&SerialLog>, when: &str, a: SlotBoot, b: SlotBoot) {
    let view = node.boot_view();
    eprintln!("realboot {}: {when}: {}", node.backend.name(), view.raw);
    if (view.a, view.b) != (a, b) {
        let message = format!(
            "{when}: expected A {a:?} and B {b:?} on the ESP, found A {:?} and B {:?} ({})",
            view.a, view.b, view.raw
        );
        match log {
            Some(log) => log.fail(&message),
            None => panic!("{message}"),
        }
    }
}

/// The agent's phase in its state file, read back on the host.
fn expect_phase(node: &Node, log: &SerialLog, phase: &str, slot: &str, version: &str) -> Value {
    let state = node.agent_state();
    let p = &state["phase"];
    let slot_key = if p.get("target").is_some() {
        "target"
    } else {
        "slot"
    };
    let got = (
        p["phase"].as_str().unwrap_or_default(),
        p[slot_key].as_str().unwrap_or_default(),
        p["release"]["version"].as_str().unwrap_or_default(),
    );
    if got != (phase, slot, version) {
        log.fail(&format!(
            "expected the agent in phase {phase} for slot {slot} ({version}), found {}",
            serde_json::to_string_pretty(&state).unwrap()
        ));
    }
    state
}

fn expect_committed(state: &Value, log: &SerialLog, slot: &str, version: &str) {
    let record = &state["slots"][slot];
    if record["committed"] != Value::Bool(true) || record["release"]["version"] != version {
        log.fail(&format!(
            "expected slot {slot} committed with {version} in {state:#}"
        ));
    }
}

fn expect_rolled_back(state: &Value, log: &SerialLog, version: &str) {
    let listed = state["rolled_back_versions"]
        .as_array()
        .is_some_and(|v| v.iter().any(|x| x == version));
    if !listed {
        log.fail(&format!(
            "expected {version} among the rolled-back versions in {state:#}"
        ));
    }
}
