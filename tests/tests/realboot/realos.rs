//! A real node on GRUB: Debian 12 with systemd, built by `scripts/build-os.sh`
//! (docs/building-an-os.md), its root read-only in the slot, its state on the state partition.
//! The host runs the real `tandem-server` with the repository; `tandem-updater.service` (the
//! daemon, as shipped) installs each release over the network and reboots,
//! `tandem-boot-check.service` judges the next boot. The test reads the journal the OS copies
//! to the serial console, the ESP and the state partition, and the server's view of the node.
//! The same OS on systemd-boot boots under Secure Boot (`secureboot.rs`), where the same
//! unhealthy release is refused with systemd-bless-boot in the chain.
//!
//! | boot | runs (root, kernel) | what happens | ends |
//! |---|---|---|---|
//! | 1 | A 1.0.0, factory's | the daemon installs 2.0.0 into B (a delta: only changed chunks fetched) | reboot |
//! | 2 | B 2.0.0, 2.0.0's | boot-check commits B (workload active, HTTP check); the daemon installs 3.0.0 into A | reboot |
//! | 3 | A 3.0.0, 3.0.0's | 3.0.0's workload unit fails; boot-check marks A bad and reboots | reboot |
//! | 4 | B 2.0.0, 2.0.0's | the daemon refuses 3.0.0 (rolled back here) | the test |
//! | 5 | B 2.0.0, 2.0.0's | a USB stick labelled TANDEM-UPD is in: udev starts `tandem-usb-install@vdb.service`, which installs 4.0.0 into A | reboot |
//! | 6 | A 4.0.0, 4.0.0's | boot-check commits A | the test |

use std::time::Instant;

use super::harness::realos::{
    release_cmdline, BROKEN, FACTORY, GOOD, ON_USB, PRODUCT, REPORT_TOKEN, USB_CHANNEL,
};
use super::harness::{Backend, Env, Node, RealOs, SerialLog, Server, SlotBoot, Vm, TRIES};
use super::{expect_committed, expect_phase, expect_rolled_back, expect_view};
use SlotBoot::{Good, Trial};

#[test]
fn real_os_grub() {
    let backend = Backend::Grub;
    let started = Instant::now();
    let env = Env::find();
    let os = RealOs::get(&env, backend);
    let node = os.node(&env);
    let repo = node.dir.join("repo");
    os.publish(&env, &repo, "stable", GOOD);
    let server = Server::start(&env, &node.dir, &repo, REPORT_TOKEN);
    let mut vm = node.vm().with_server(server.port);

    // 1. The factory's 1.0.0 boots; the daemon installs 2.0.0 over the network and reboots.
    let log = vm.boot("a-1.0.0-daemon-installs-2.0.0");
    expect_booted(&log, "a", FACTORY, None);
    log.expect("slot a: no update in trial");
    expect_installed(&log, GOOD, "b");
    expect_rebooted(&log);
    expect_view(&node, Some(&log), "2.0.0 installed", Good, Trial(TRIES));
    expect_phase(&node, &log, "written", "b", GOOD);
    expect_node(&server, &log, "factory", "installed");

    // 2. B boots 2.0.0's kernel and root; the health checks pass and B is committed; the
    // daemon then installs 3.0.0 into A.
    os.publish(&env, &repo, "stable", BROKEN);
    let log = vm.boot("b-2.0.0-commits-installs-3.0.0");
    expect_booted(&log, "b", GOOD, Some(GOOD));
    log.expect("slot b (2.0.0) passed its health checks: committed");
    expect_committed_then_installed(&node, &server, &log, TRIES, GOOD, BROKEN);

    // 3. A boots 3.0.0, whose workload fails: the check marks A bad and reboots.
    let log = vm.boot("a-3.0.0-workload-fails-rolls-back");
    expect_booted(&log, "a", BROKEN, Some(BROKEN));
    expect_unhealthy_rolled_back(&node, &log, BROKEN);

    // 4. The loader boots B: 2.0.0's kernel and root again; the daemon reports the rollback
    // and refuses 3.0.0 for good.
    let log = vm.boot_until("b-2.0.0-after-rollback", "poll decision=");
    expect_booted(&log, "b", GOOD, Some(GOOD));
    expect_refused_after_rollback(&node, &server, &log, GOOD, BROKEN);

    usb_case(&os, &node, &mut vm, &server);

    eprintln!(
        "realboot real OS {}: passed in {:.1?} (logs in {})",
        backend.name(),
        started.elapsed(),
        node.dir.display()
    );
}

/// B, committed with `good`, installed `next` into A (given `tries` tries) and rebooted: the
/// ESP, the agent's state and the server all say so.
pub(super) fn expect_committed_then_installed(
    node: &Node,
    server: &Server,
    log: &SerialLog,
    tries: u8,
    good: &str,
    next: &str,
) {
    expect_installed(log, next, "a");
    expect_rebooted(log);
    expect_view(
        node,
        Some(log),
        &format!("{next} installed"),
        Trial(tries),
        Good,
    );
    let state = expect_phase(node, log, "written", "a", next);
    expect_committed(&state, log, "b", good);
    expect_node(server, log, good, "installed");
}

/// Slot A booted `version`, whose workload unit fails: boot-check marks A bad and reboots;
/// boot-complete.target (and systemd-bless-boot after it, on systemd-boot) never came.
pub(super) fn expect_unhealthy_rolled_back(node: &Node, log: &SerialLog, version: &str) {
    log.expect("acme-app: /usr/share/acme-app/www/healthz is missing, cannot serve");
    log.expect("Failed to start acme-app.service");
    log.expect("health checks failed: rolling back");
    log.expect(&format!("slot a ({version}) rolled back: health check `/usr/bin/systemctl is-active --quiet acme-app.service`"));
    log.expect_not("Reached target boot-complete.target");
    log.expect_not("systemd-bless-boot.service");
    expect_rebooted(log);
    expect_view(
        node,
        Some(log),
        &format!("{version} marked bad"),
        Trial(0),
        Good,
    );
    let state = expect_phase(node, log, "rolled-back", "a", version);
    expect_rolled_back(&state, log, version);
}

/// Back on B's `good` after `bad` rolled back: the daemon refuses `bad` for good, and the
/// server hears of the rollback.
pub(super) fn expect_refused_after_rollback(
    node: &Node,
    server: &Server,
    log: &SerialLog,
    good: &str,
    bad: &str,
) {
    log.expect("slot b: no update in trial");
    log.expect(&format!(
        "poll decision=nothing installed: version {bad} rolled back on this node before"
    ));
    expect_view(node, Some(log), &format!("back on {good}"), Trial(0), Good);
    expect_node(server, log, good, "rolled-back");
}

/// The USB case (boots 5 and 6): with the stick plugged in, udev starts
/// `tandem-usb-install@vdb.service` (the rule, unit and script as shipped), which installs
/// 4.0.0 from it into A and reboots; A then boots 4.0.0's kernel and root and commits, and
/// the server hears of it.
fn usb_case(os: &RealOs, node: &Node, vm: &mut Vm, server: &Server) {
    vm.set_usb(Some(&os.usb()));
    let log = vm.boot("b-2.0.0-usb-installs-4.0.0");
    expect_booted(&log, "b", GOOD, Some(GOOD));
    log.expect("Starting tandem-usb-install@vdb.service");
    log.expect(&format!(
        "tandem-usb-install: installing channel {USB_CHANNEL} from /dev/vdb"
    ));
    log.expect(&format!("{ON_USB} written to slot a ("));
    expect_rebooted(&log);
    expect_view(
        node,
        Some(&log),
        "4.0.0 installed from the stick",
        Trial(TRIES),
        Good,
    );
    expect_phase(node, &log, "written", "a", ON_USB);

    vm.set_usb(None);
    let log = vm.boot_until("a-4.0.0-commits", "poll decision=");
    expect_booted(&log, "a", ON_USB, Some(ON_USB));
    log.expect("slot a (4.0.0) passed its health checks: committed");
    expect_view(node, Some(&log), "4.0.0 committed", Good, Good);
    expect_node(server, &log, ON_USB, "committed");
}

/// The line where the OS said what booted (acme-boot-info: the release from os-release, the
/// kernel's command line).
pub(super) fn boot_info(log: &SerialLog) -> &str {
    match log
        .text
        .lines()
        .find(|l| l.contains("acme-boot-info[") && l.contains("booted "))
    {
        Some(line) => line,
        None => log.fail("the OS never said what booted (acme-boot-info)"),
    }
}

/// The OS says (acme-boot-info, from os-release and /proc/cmdline) that slot `slot` booted
/// `version`'s root, with the boot files of `kernel_of` (`None`: the factory's, which carry no
/// release command line).
fn expect_booted(log: &SerialLog, slot: &str, version: &str, kernel_of: Option<&str>) {
    let line = boot_info(log);
    let want_root = format!("booted Acme Edge {version}, ");
    let want_slot = format!(" tandem.slot={slot}");
    let kernel_ok = match kernel_of {
        Some(v) => line.contains(&release_cmdline(v)),
        None => !line.contains("acme.release="),
    };
    if !line.contains(&want_root) || !line.contains(&want_slot) || !kernel_ok {
        log.fail(&format!(
            "expected slot {slot} with {version}'s root and {}'s boot files, got {line:?}",
            kernel_of.unwrap_or("the factory")
        ));
    }
}

/// The daemon's install line: `version` into `slot` from the server, most of it reused from
/// the running slot (a delta). Returns (fetched, bundle, reused).
pub(super) fn expect_installed(log: &SerialLog, version: &str, slot: &str) -> (u64, u64, u64) {
    let prefix = format!(
        "installed {PRODUCT} {version} into slot {slot} from http://10.0.2.100/bundles/{PRODUCT}-{version}.tandem: "
    );
    let Some(rest) = log
        .text
        .lines()
        .find_map(|l| l.find(&prefix).map(|at| &l[at + prefix.len()..]))
    else {
        log.fail(&format!("expected the daemon's line {prefix:?}"))
    };
    // "N bytes fetched of a M-byte bundle, R bytes reused from the slots"
    let numbers: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [fetched, bundle, reused] = numbers[..] else {
        log.fail(&format!("cannot read the install line {rest:?}"))
    };
    eprintln!("realboot: {version} into slot {slot}: {fetched} bytes fetched of {bundle}, {reused} reused");
    if reused == 0 || fetched * 4 > bundle {
        log.fail(&format!(
            "expected a delta install (most reused, little fetched), got {rest:?}"
        ));
    }
    log.expect(&format!(
        "rebooting into slot {slot} to boot {PRODUCT} {version} as a trial"
    ));
    (fetched, bundle, reused)
}

/// The machine rebooted through systemd (QEMU's `-no-reboot` ends it there).
pub(super) fn expect_rebooted(log: &SerialLog) {
    log.expect("Reached target reboot.target");
}

/// The node id: systemd's machine-id, made from the machine's SMBIOS UUID (the same at every
/// boot and in both slots, though the root is read-only and ships no machine-id).
const NODE_ID: &str = "5e1f0a6c1d2b4c3d8e4f7a6e646d0001";

/// The server's `/v1/nodes` shows the node running `version`, its latest report `outcome`,
/// and the channel's status counts it there.
pub(super) fn expect_node(server: &Server, log: &SerialLog, version: &str, outcome: &str) {
    let nodes = server.get("/v1/nodes");
    let row = &nodes["nodes"][0];
    let got = (
        nodes["total"].as_u64(),
        row["node_id"].as_str(),
        row["version"].as_str(),
        row["outcome"].as_str(),
    );
    if got != (Some(1), Some(NODE_ID), Some(version), Some(outcome)) {
        log.fail(&format!(
            "expected node {NODE_ID} alone on {version} ({outcome}) in /v1/nodes, got {nodes:#}\nserver log:\n{}",
            server.log()
        ));
    }
    let status = server.get("/v1/channels/stable/status");
    if status["nodes"]["by_version"][version] != 1 {
        log.fail(&format!(
            "expected the channel status to count one node on {version}: {status:#}"
        ));
    }
    eprintln!("realboot: the server sees {NODE_ID} on {version} ({outcome})");
}
