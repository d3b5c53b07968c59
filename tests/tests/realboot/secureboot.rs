//! Verified boot on the real OS, systemd-boot: the firmware in Secure Boot mode (OVMF, the
//! snakeoil key in db) starts only the signed systemd-boot and signed UKIs; each release's UKI
//! has a fixed command line naming its dm-verity root hash and the PARTUUID it derives, never
//! the slot; the initramfs opens the slot through dm-verity. The agent tells the booted slot
//! from that root hash, the slot's PARTUUID and systemd-boot's `LoaderEntrySelected`. This is
//! also the real OS's systemd-boot run: the boot check and systemd-bless-boot in one order
//! (docs/DESIGN.md §5.0), and a release whose workload fails rolled back.
//!
//! | boot | runs | what happens | ends |
//! |---|---|---|---|
//! | 1 | A 1.0.0 (factory UKI, no verity) | Secure Boot on; the daemon installs 2.0.0 into B | reboot |
//! | 2 | B 2.0.0, verity root | Secure Boot on, root on /dev/mapper/root; B committed without `tandem.slot=`, then blessed by systemd-bless-boot; installs 3.0.0 (UKI signed by a key not in db) into A | reboot |
//! | 3 | – | the firmware refuses A's UKI (Access Denied) at its one try | the test |
//! | 4 | B 2.0.0 | "never came up" recorded and reported; installs 4.0.0 into A; the test flips a byte of A's data | reboot |
//! | 5 | A 4.0.0 | dm-verity refuses the corrupted block, the root cannot be mounted, the kernel panics | reset |
//! | 6 | B 2.0.0 | "never came up" recorded and reported; installs 5.0.0 into A; the test flips a byte of A's hash tree | reboot |
//! | 7 | A 5.0.0 | dm-verity refuses the tree, the kernel panics | reset |
//! | 8 | B 2.0.0 | "never came up" recorded and reported; installs 6.0.0 into A | reboot |
//! | 9 | A 6.0.0, verity root | its workload unit fails; boot-check marks A bad before boot-complete.target, so nothing blesses it | reboot |
//! | 10 | B 2.0.0 | the daemon refuses 6.0.0 (rolled back here) and the server hears of it | the test |
//!
//! A new release gets one try here ([`TRIES`]): every failure costs a boot per try under TCG.

use std::time::Instant;

use super::harness::realos::{FACTORY, REPORT_TOKEN};
use super::harness::secureboot::{
    flip_byte, SecureOs, DATA_FLIPPED, NOT_IN_DB, TREE_FLIPPED, TRIES, UNHEALTHY, VERIFIED,
};
use super::harness::{Env, Node, SerialLog, Server, SlotBoot, Vm};
use super::realos::{
    boot_info, expect_committed_then_installed, expect_installed, expect_node, expect_rebooted,
    expect_refused_after_rollback, expect_unhealthy_rolled_back,
};
use super::{expect_phase, expect_view};
use SlotBoot::{Good, Trial};

/// The size of a verity superblock and of a hash block: the tree's first block (the level the
/// root hash covers) starts one block after the hash offset.
const BLOCK: u64 = 4096;

#[test]
fn secure_boot_systemd_boot() {
    let started = Instant::now();
    let env = Env::find();
    let os = SecureOs::get(&env);
    let node = os.node(&env);
    let repo = node.dir.join("repo");
    os.publish(&env, &repo, VERIFIED);
    let server = Server::start(&env, &node.dir, &repo, REPORT_TOKEN);
    let mut vm = node.vm().with_server(server.port).with_secure_boot();

    // 1. The factory's signed UKI boots with Secure Boot on; the daemon installs 2.0.0.
    let log = vm.boot("a-1.0.0-secure-boot-installs-2.0.0");
    expect_secure_boot(&log);
    expect_release(&log, FACTORY);
    expect_installed(&log, VERIFIED, "b");
    expect_rebooted(&log);
    expect_view(&node, Some(&log), "2.0.0 installed", Good, Trial(TRIES));

    // 2. 2.0.0's signed UKI, its root through dm-verity; the agent finds its slot without
    // tandem.slot= and commits; the daemon installs 3.0.0, whose UKI db does not trust.
    os.publish(&env, &repo, NOT_IN_DB);
    let log = vm.boot("b-2.0.0-verity-commits-installs-3.0.0");
    expect_secure_boot(&log);
    expect_verified_root(&log, &os, VERIFIED);
    let committed = log.expect_at("slot b (2.0.0) passed its health checks: committed");
    // systemd-bless-boot waits for boot-complete.target, which needs the boot check.
    let blessed = log.expect_at("Finished systemd-bless-boot.service");
    if blessed < committed {
        log.fail("systemd-bless-boot ran before Tandem's boot check");
    }
    expect_committed_then_installed(&node, &server, &log, TRIES, VERIFIED, NOT_IN_DB);

    // 3. The firmware refuses 3.0.0's UKI; systemd-boot has counted the try.
    expect_refused_tries(&mut vm, &node, NOT_IN_DB);

    // 4. Back on 2.0.0: the agent records that 3.0.0 never came up and reports it, then
    // installs 4.0.0; one byte of its data is flipped before its first boot.
    os.publish(&env, &repo, DATA_FLIPPED);
    back_on_verified(&mut vm, &node, &server, &os, NOT_IN_DB, DATA_FLIPPED);
    flip_byte(&node, "a", 0);

    // 5. dm-verity refuses the block: the root is never mounted.
    expect_verity_failures(&mut vm, &node, DATA_FLIPPED, "data block");

    // 6. Back on 2.0.0; 5.0.0 installed, one byte of its hash tree flipped.
    os.publish(&env, &repo, TREE_FLIPPED);
    back_on_verified(&mut vm, &node, &server, &os, DATA_FLIPPED, TREE_FLIPPED);
    flip_byte(&node, "a", os.hash_offset(TREE_FLIPPED) + BLOCK);

    // 7. dm-verity refuses the tree.
    expect_verity_failures(&mut vm, &node, TREE_FLIPPED, "metadata block");

    // 8. Back on 2.0.0, the failure recorded and reported; 6.0.0 installed.
    os.publish(&env, &repo, UNHEALTHY);
    back_on_verified(&mut vm, &node, &server, &os, TREE_FLIPPED, UNHEALTHY);

    // 9. 6.0.0 boots verified, but its workload fails: boot-check marks A bad.
    let log = vm.boot("a-6.0.0-workload-fails-rolls-back");
    expect_secure_boot(&log);
    expect_verified_root(&log, &os, UNHEALTHY);
    expect_unhealthy_rolled_back(&node, &log, UNHEALTHY);

    // 10. Back on 2.0.0, which refuses 6.0.0 for good.
    let log = vm.boot_until("b-2.0.0-after-rollback", "poll decision=");
    expect_verified_root(&log, &os, VERIFIED);
    expect_refused_after_rollback(&node, &server, &log, VERIFIED, UNHEALTHY);

    eprintln!(
        "realboot Secure Boot systemd-boot: passed in {:.1?} (logs in {})",
        started.elapsed(),
        node.dir.display()
    );
}

/// The firmware ran in Secure Boot mode and the kernel saw it.
fn expect_secure_boot(log: &SerialLog) {
    log.expect("secureboot: Secure boot enabled");
}

/// acme-boot-info says `version`'s root booted.
fn expect_release(log: &SerialLog, version: &str) -> String {
    let line = boot_info(log);
    if !line.contains(&format!("booted Acme Edge {version}, ")) {
        log.fail(&format!("expected {version}'s root, got {line:?}"));
    }
    line.to_string()
}

/// `version` booted from its signed UKI, with its fixed command line (its root hash, no
/// `tandem.slot=`), its root opened through dm-verity and mounted from the mapping.
fn expect_verified_root(log: &SerialLog, os: &SecureOs, version: &str) {
    let line = expect_release(log, version);
    let hash = os.root_hash(version);
    if !line.contains(&os.cmdline(version)) || line.contains("tandem.slot=") {
        log.fail(&format!(
            "expected {version}'s fixed command line {:?} (no tandem.slot=), got {line:?}",
            os.cmdline(version)
        ));
    }
    log.expect(&format!("initramfs: dm-verity root {hash} on /dev/vda"));
    log.expect("EXT4-fs (dm-0): mounted filesystem");
}

/// A's UKI of `version` is refused by the firmware at each of its tries: systemd-boot counts
/// the try, cannot load the image, and the machine is reset.
fn expect_refused_tries(vm: &mut Vm, node: &Node, version: &str) {
    for left in (0..TRIES).rev() {
        let log = vm.boot_until(&format!("a-{version}-refused"), "Error loading");
        log.expect("Error loading \\tandem\\a\\uki.efi: Access Denied");
        log.expect_not("Linux version");
        expect_view(node, Some(&log), "refused", Trial(left), Good);
    }
}

/// A's `version` (a correctly signed UKI) fails at each try: dm-verity finds `what` corrupted,
/// the root is not mounted, the kernel panics and the machine resets.
fn expect_verity_failures(vm: &mut Vm, node: &Node, version: &str, what: &str) {
    for left in (0..TRIES).rev() {
        let log = vm.boot(&format!("a-{version}-verity-refuses"));
        expect_secure_boot(&log);
        log.expect(&format!("acme.release={version}"));
        log.expect(what);
        log.expect("is corrupted");
        log.expect("initramfs: cannot mount the root");
        log.expect("Kernel panic");
        expect_view(node, Some(&log), "verity refused", Trial(left), Good);
    }
}

/// B's 2.0.0 boots after A's `failed` never came up: the agent records it and the server hears
/// of it; then it installs `next` into A and reboots.
fn back_on_verified(
    vm: &mut Vm,
    node: &Node,
    server: &Server,
    os: &SecureOs,
    failed: &str,
    next: &str,
) {
    let log = vm.boot(&format!("b-{VERIFIED}-after-{failed}"));
    expect_secure_boot(&log);
    expect_verified_root(&log, os, VERIFIED);
    log.expect(&format!(
        "slot a ({failed}) never came up: the firmware rolled back"
    ));
    expect_reported(server, &log, failed, "rolled-back");
    expect_installed(&log, next, "a");
    expect_rebooted(&log);
    expect_node(server, &log, VERIFIED, "installed");
    expect_phase(node, &log, "written", "a", next);
}

/// The server stored one report of `outcome` for `version` (its metrics count them).
fn expect_reported(server: &Server, log: &SerialLog, version: &str, outcome: &str) {
    let series =
        format!("tandem_server_reports_total{{channel=\"stable\",version=\"{version}\",outcome=\"{outcome}\"}} 1");
    let metrics = server.get_text("/metrics");
    if !metrics.lines().any(|l| l == series) {
        log.fail(&format!(
            "expected the server to count {series:?}:\n{metrics}"
        ));
    }
    eprintln!("realboot: the server counts {series}");
}
