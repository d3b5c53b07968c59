//! What an operator meets, through the binaries on a disk image file: two agents at once,
//! a lost state file, anti-rollback counters that outlive it, a reboot that failed, a trial
//! nobody recorded, boot-check without health checks, exit codes and `--json` errors, and
//! HTTPS with a private CA, whose cut download resumes.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tandem_tests::{image, sha256_hex, IMAGE_LEN};

use super::cli::{binary, Sandbox};
use super::fleet::TandemServer;
use super::proxy::CuttingProxy;

pub(crate) const CHANNEL: &str = "stable";
const NODE: &str = "node-7";

/// A node whose slot A holds the factory image v1, with the vendor's keys, root and the
/// bundle `v2.tandem` (security version 2) beside it.
pub(crate) struct Node {
    pub(crate) s: Sandbox,
}

impl Node {
    pub(crate) fn new() -> Node {
        let s = Sandbox::new();
        s.release_v2();
        s.create_disk();
        s.run("tandem-disk", &["write-slot", "disk.img", "a", "v1.raw"], 0);
        std::fs::write(s.path("healthy"), "").unwrap();
        Node { s }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.s.path(name)
    }

    /// Signs the image of `seed` as `version` into `out`.
    pub(crate) fn sign(&self, version: &str, security: u64, seed: u64, out: &str) {
        let raw = format!("{out}.raw");
        std::fs::write(self.path(&raw), image(IMAGE_LEN, seed)).unwrap();
        self.s.sign(&raw, version, &security.to_string(), &[], out);
    }

    /// Publishes `bundle` on [`CHANNEL`] in `repo/`.
    pub(crate) fn publish(&self, bundle: &str) {
        self.s.run(
            "tandem-signer",
            &[
                "publish",
                "--repo",
                "repo",
                "--channel",
                CHANNEL,
                "--key",
                "rel1.pem",
                "--key",
                "rel3.pem",
                "--root",
                "root.json",
                bundle,
            ],
            0,
        );
    }

    /// The real `tandem-server` on 127.0.0.1 serving `repo/` (with `args`, e.g. TLS files).
    pub(crate) fn server(&self, args: &[&Path]) -> TandemServer {
        let work = self.path("server");
        std::fs::create_dir_all(&work).unwrap();
        TandemServer::start_with(&work, &self.path("repo"), args)
    }

    /// The agent's configuration on a node that booted `booted`: the base keys, then
    /// `extra` (top-level keys first, then tables). Returns its path.
    pub(crate) fn config(&self, booted: &str, extra: &str) -> String {
        let path = self.path(&format!("updater-{booted}.toml"));
        let text = format!(
            "disk = \"{disk}\"\nboot = \"gpt\"\nstate = \"{state}\"\nroot = \"{root}\"\n\
             product = \"acme-edge\"\ntries = 2\nbooted_slot = \"{booted}\"\n{extra}",
            disk = self.path("disk.img").display(),
            state = self.path("state/state.json").display(),
            root = self.path("root.json").display(),
        );
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// The marker health check (passes while `healthy` exists).
    pub(crate) fn health(&self) -> String {
        format!(
            "[[health]]\nexec = [\"sh\", \"-c\", \"test -e '{}'\"]\ntimeout = \"10s\"\n",
            self.path("healthy").display()
        )
    }

    /// A reboot command that appends a line to `reboots` and fails on its first `fail` runs.
    fn counting_reboot(&self, fail: usize) -> String {
        let script = self.path("reboot.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho run >> '{log}'\ntest \"$(wc -l < '{log}')\" -gt {fail}\n",
                log = self.path("reboots").display()
            ),
        )
        .unwrap();
        format!("reboot = [\"sh\", \"{}\"]\n", script.display())
    }

    /// How often the reboot command of [`Node::counting_reboot`] ran.
    fn reboots(&self) -> usize {
        std::fs::read_to_string(self.path("reboots")).map_or(0, |log| log.lines().count())
    }

    pub(crate) fn updater(&self, config: &str, args: &[&str], expect: i32) -> Output {
        self.s.run(
            "tandem-updater",
            &[&["--config", config][..], args].concat(),
            expect,
        )
    }

    fn show(&self) -> serde_json::Value {
        let json = self
            .s
            .stdout("tandem-disk", &["show", "disk.img", "--json"]);
        serde_json::from_str(&json).unwrap()
    }

    /// The bytes of slot `index` (0 = a) of `disk.img`.
    fn slot_bytes(&self, index: usize) -> Vec<u8> {
        let show = self.show();
        let slot = &show["slots"][index];
        let offset = usize::try_from(slot["offset"].as_u64().unwrap()).unwrap();
        let size = usize::try_from(slot["size"].as_u64().unwrap()).unwrap();
        std::fs::read(self.path("disk.img")).unwrap()[offset..offset + size].to_vec()
    }

    /// Slot bytes and boot state, to prove a refusal changed nothing.
    fn snapshot(&self) -> (String, String, serde_json::Value) {
        let show = self.show();
        (
            sha256_hex(&self.slot_bytes(0)),
            sha256_hex(&self.slot_bytes(1)),
            show["slots"].clone(),
        )
    }

    pub(crate) fn boot(&self) -> String {
        self.s
            .stdout("tandem-disk", &["boot", "disk.img"])
            .trim()
            .to_owned()
    }

    /// Installs v2 from slot A, boots it and commits it (security floor 2).
    fn commit_v2(&self) -> String {
        let on_a = self.config("a", &format!("reboot = [\"true\"]\n{}", self.health()));
        self.updater(&on_a, &["install", "v2.tandem"], 0);
        assert_eq!(self.boot(), "b");
        let on_b = self.config("b", &format!("reboot = [\"true\"]\n{}", self.health()));
        let out = self.updater(&on_b, &["boot-check"], 0);
        let (stdout, stderr) = (stdout_of(&out), stderr_of(&out));
        assert!(stdout.contains("committed"), "{stdout}");
        // The commit raises the floor on a healthy node: nothing was lost, so nothing says so.
        assert!(
            !stderr.contains("floor recorded in the GPT is higher"),
            "{stderr}"
        );
        on_b
    }
}

pub(crate) fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A second agent is turned away at once, naming the first, and writes nothing.
#[test]
fn a_second_agent_is_refused_while_the_first_holds_the_lock() {
    let n = Node::new();
    let on_a = n.config("a", "reboot = [\"true\"]\n");
    std::fs::create_dir_all(n.path("state")).unwrap();
    let before = n.snapshot();
    let lock = updater::lock::StateLock::acquire(&n.path("state")).unwrap();
    let out = n.updater(&on_a, &["install", "v2.tandem"], 9);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!(
            "another tandem-updater (pid {})",
            std::process::id()
        )),
        "{stderr}"
    );
    assert_eq!(n.snapshot(), before, "the refused agent changed the disk");

    drop(lock);
    let out = stdout_of(&n.updater(&on_a, &["install", "v2.tandem"], 0));
    assert!(out.contains("boots next as a trial"), "{out}");
    assert_eq!(n.boot(), "b");
}

/// With the state file lost during a trial, the booted slot is still unproven
/// by the boot control: an install from it is refused and the last known good slot stays.
#[test]
fn an_install_during_a_trial_whose_state_file_was_lost_is_refused() {
    let n = Node::new();
    n.sign("3.0.0", 2, 3, "v3.tandem");
    let on_a = n.config("a", "reboot = [\"true\"]\n");
    n.updater(&on_a, &["install", "v2.tandem"], 0);
    assert_eq!(n.boot(), "b");
    std::fs::remove_file(n.path("state/state.json")).unwrap();
    let good = n.slot_bytes(0);

    let on_b = n.config("b", "reboot = [\"true\"]\n");
    let out = n.updater(&on_b, &["install", "v3.tandem"], 4);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("slot b is running but its boot state") && stderr.contains("a trial"),
        "{stderr}"
    );
    assert!(
        n.slot_bytes(0) == good,
        "the last known good slot A was written"
    );
}

/// Moving a damaged state file away (as its error suggests), or losing the
/// counters, does not lower the security floor.
#[test]
fn the_security_floor_survives_a_lost_state_file_and_lost_counters() {
    let n = Node::new();
    let on_b = n.commit_v2();
    n.sign("3.0.0", 1, 3, "old-security.tandem");
    let before = n.snapshot();

    std::fs::rename(n.path("state/state.json"), n.path("state/state.json.bad")).unwrap();
    let out = n.updater(&on_b, &["install", "old-security.tandem"], 4);
    let stderr = stderr_of(&out);
    assert!(stderr.contains("below this node's floor 2"), "{stderr}");
    assert_eq!(n.snapshot(), before);

    // The counters lost instead: the floor is rebuilt from the committed slot's release.
    std::fs::rename(n.path("state/state.json.bad"), n.path("state/state.json")).unwrap();
    std::fs::remove_file(n.path("state/counters.json")).unwrap();
    let out = n.updater(&on_b, &["install", "old-security.tandem"], 4);
    let stderr = stderr_of(&out);
    assert!(stderr.contains("below this node's floor 2"), "{stderr}");
    assert_eq!(n.snapshot(), before);
}

/// The whole state directory moved away (the state file as its damaged-state message
/// advises, `counters.json` and `root.json` with it): the floor's second copy in the GPT
/// entries of the slot pair still refuses a properly signed release below it, says where the
/// floor came from, and is written back to a new `counters.json` (which then agrees).
#[test]
fn the_security_floor_survives_the_whole_state_directory_moved_away() {
    let n = Node::new();
    let on_b = n.commit_v2();
    n.sign("3.0.0", 1, 3, "old-security.tandem");
    let before = n.snapshot();

    std::fs::rename(n.path("state"), n.path("state.moved")).unwrap();
    let out = n.updater(&on_b, &["install", "old-security.tandem"], 4);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("the floor recorded in the GPT is higher: taking it recorded=2 floor=0")
            && stderr.contains(
                "below this node's floor 2, kept in counters.json and the GPT entries 2 and 3"
            ),
        "{stderr}"
    );
    assert_eq!(n.snapshot(), before, "the refused install changed the disk");
    let counters = std::fs::read_to_string(n.path("state/counters.json")).unwrap();
    let counters: serde_json::Value = serde_json::from_str(&counters).unwrap();
    assert_eq!(counters["security_floor"], 2, "{counters}");
}

/// The node polls `server` on [`CHANNEL`] as [`NODE`] with its report token.
pub(crate) fn server_keys(server: &TandemServer, ca: Option<&Path>) -> String {
    server_keys_at(&server.url, server, ca)
}

/// [`server_keys`] with the agent talking to `url`: the server's, or a proxy's before it.
fn server_keys_at(url: &str, server: &TandemServer, ca: Option<&Path>) -> String {
    let ca = ca.map_or_else(String::new, |ca| {
        format!("ca_bundle = \"{}\"\n", ca.display())
    });
    format!(
        "[server]\nurl = \"{url}\"\nchannel = \"{CHANNEL}\"\npoll_interval = \"1s\"\n\
         report_token_file = \"{token}\"\n{ca}",
        token = server.report_token_file.display(),
    )
}

/// `daemon` as `tandem-updater.service` runs it (polling, no `--once`, no `RUST_LOG`): its
/// log (stderr, which journald keeps) says on one line each what it installed, from which
/// bundle, the bytes fetched and reused, and then that it reboots.
#[test]
fn the_daemon_logs_what_it_installed_and_that_it_reboots() {
    let n = Node::new();
    n.publish("v2.tandem");
    let server = n.server(&[]);
    let on_a = n.config(
        "a",
        &format!(
            "node_id = \"{NODE}\"\n{}{}",
            n.counting_reboot(0),
            server_keys(&server, None)
        ),
    );
    let out = Command::new(binary("tandem-updater"))
        .args(["--config", &on_a, "daemon"])
        .current_dir(n.path(""))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let log = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(n.reboots(), 1);
    let line_of = |needle: &str| {
        let found: Vec<usize> = log
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "one line with {needle:?}:\n{log}");
        (found[0], log.lines().nth(found[0]).unwrap())
    };
    let (at, installed) = line_of("installed acme-edge 2.0.0 into slot b from ");
    assert!(installed.contains("INFO"), "{installed}");
    let bundle = format!(
        "{}/bundles/acme-edge-2.0.0.tandem",
        server.url.trim_end_matches('/')
    );
    assert!(installed.contains(&bundle), "{installed}");
    let bundle_len = std::fs::metadata(n.path("v2.tandem")).unwrap().len();
    let number_before = |what: &str| -> u64 {
        let head = installed.split(what).next().unwrap();
        head.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let fetched = number_before(" bytes fetched");
    let reused = number_before(" bytes reused");
    assert!(fetched > 0 && fetched <= bundle_len, "{installed}");
    assert!(
        installed.contains(&format!("of a {bundle_len}-byte bundle")),
        "{installed}"
    );
    // The same figures as the install's report to the server.
    let release = &server.status(CHANNEL)["current_release"];
    assert_eq!(release["bytes_fetched"], fetched, "{release}");
    assert_eq!(release["bytes_reused"], reused, "{release}");
    let (reboot_at, reboot) = line_of("rebooting into slot b");
    assert!(reboot_at > at && reboot.contains("2.0.0"), "{log}");
}

/// A reboot that failed after an install is run again at the next poll, and
/// the failure is reported.
#[test]
fn a_failed_reboot_is_retried_at_the_next_poll_and_reported() {
    let n = Node::new();
    n.publish("v2.tandem");
    let server = n.server(&[]);
    let on_a = n.config(
        "a",
        &format!(
            "node_id = \"{NODE}\"\n{}{}",
            n.counting_reboot(1),
            server_keys(&server, None)
        ),
    );
    let out = n.updater(&on_a, &["daemon", "--once"], 7);
    assert!(
        stdout_of(&out).contains("installed 2.0.0 into slot b"),
        "{out:?}"
    );
    assert_eq!(n.reboots(), 1);

    let out = stdout_of(&n.updater(&on_a, &["daemon", "--once"], 0));
    assert!(
        out.contains("2.0.0 is installed and waits for a reboot"),
        "{out}"
    );
    assert_eq!(n.reboots(), 2, "the reboot command ran again");

    let status = server.status(CHANNEL);
    let failures = status["current_release"]["failures"].as_array().unwrap();
    assert!(
        failures.iter().any(|f| f["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("reboot-failed"))),
        "{status}"
    );
    assert_eq!(n.boot(), "b");
}

/// A rollback's report is queued and sent before the reboot command runs: `systemctl
/// reboot` returns at once and systemd then stops `tandem-boot-check.service` (SIGTERM), so
/// a report queued after the reboot command never reached the server. Here the reboot
/// command kills the agent that runs it.
#[test]
fn a_rollback_is_reported_before_the_reboot_command_runs() {
    let n = Node::new();
    n.publish("v2.tandem");
    let server = n.server(&[]);
    let keys = server_keys(&server, None);
    let on_a = n.config(
        "a",
        &format!("node_id = \"{NODE}\"\n{}{keys}", n.counting_reboot(0)),
    );
    n.updater(&on_a, &["daemon", "--once"], 0);
    assert_eq!(n.boot(), "b");
    // Unhealthy: the marker health check fails; the reboot is systemd stopping the agent.
    let _ = std::fs::remove_file(n.path("healthy"));
    let kill_agent =
        "reboot = [\"sh\", \"-c\", \"kill -TERM $PPID; exec sleep 5 </dev/null >/dev/null 2>&1\"]\n";
    let on_b = n.config(
        "b",
        &format!("node_id = \"{NODE}\"\n{kill_agent}{}{keys}", n.health()),
    );
    let out = Command::new(binary("tandem-updater"))
        .args(["--config", &on_b, "boot-check"])
        .current_dir(n.path(""))
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(15), "{out:?}");
    assert!(
        stdout_of(&out).contains("slot b (2.0.0) rolled back"),
        "{out:?}"
    );
    let outcomes = &server.status(CHANNEL)["current_release"]["outcomes"];
    assert_eq!(outcomes["rolled-back"], 1, "{outcomes}");
}

/// A slot left in trial with nothing the agent recorded is marked bad at
/// boot-check; when it is the booted slot, the node reboots into the other one.
#[test]
fn boot_check_marks_an_unrecorded_trial_bad_and_reboots_out_of_it() {
    let n = Node::new();
    n.s.run("tandem-disk", &["mark", "disk.img", "b", "trial"], 0);
    let on_a = n.config("a", &n.counting_reboot(0));
    let out = n.updater(&on_a, &["boot-check"], 6);
    assert!(
        stdout_of(&out).contains("slot b was left in trial"),
        "{out:?}"
    );
    assert_eq!(n.show()["slots"][1]["state"]["tries_left"], 0);
    assert_eq!(n.show()["slots"][1]["state"]["successful"], false);
    assert_eq!(n.reboots(), 0, "slot a runs: no reboot");
    assert_eq!(n.boot(), "a");

    n.s.run("tandem-disk", &["mark", "disk.img", "b", "trial"], 0);
    assert_eq!(n.boot(), "b");
    let on_b = n.config("b", &n.counting_reboot(0));
    let out = n.updater(&on_b, &["boot-check"], 6);
    assert!(
        stdout_of(&out).contains("slot b booted as a trial of nothing the agent wrote"),
        "{out:?}"
    );
    assert_eq!(n.reboots(), 1, "the booted unrecorded trial reboots");
    assert_eq!(n.boot(), "a");
}

/// Boot-check without `[[health]]` commits, and says it checked nothing.
#[test]
fn boot_check_without_health_checks_says_so() {
    for json in [false, true] {
        let n = Node::new();
        let on_a = n.config("a", "reboot = [\"true\"]\n");
        n.updater(&on_a, &["install", "v2.tandem"], 0);
        assert_eq!(n.boot(), "b");
        let on_b = n.config("b", "reboot = [\"true\"]\n");
        let args: &[&str] = if json {
            &["boot-check", "--json"]
        } else {
            &["boot-check"]
        };
        let out = stdout_of(&n.updater(&on_b, args, 0));
        if json {
            let check: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(check["checks"], 0, "{out}");
        } else {
            assert!(out.contains("committed WITHOUT health checks"), "{out}");
        }
        assert_eq!(n.show()["slots"][1]["state"]["successful"], true);
    }
}

/// Every usage or configuration mistake exits 2 naming
/// its cause (each OS error said once), and with `--json` prints one error object on stdout.
#[test]
fn usage_and_configuration_errors_exit_2_and_print_a_json_error_object() {
    let n = Node::new();
    n.publish("v2.tandem");
    let on_a = n.config("a", "reboot = [\"true\"]\n");
    let text = std::fs::read_to_string(&on_a).unwrap();
    let no_root = n.path("no-root.toml");
    std::fs::write(&no_root, text.replace("root.json", "gone-root.json")).unwrap();
    let bad_node = n.path("bad-node.toml");
    std::fs::write(&bad_node, format!("node_id = \"a b\"\n{text}")).unwrap();
    let no_token = n.path("no-token.toml");
    let server = format!(
        "[server]\nurl = \"http://127.0.0.1:9/\"\nchannel = \"{CHANNEL}\"\nreport_token_file = {:?}\n",
        n.path("gone-token")
    );
    std::fs::write(&no_token, format!("{text}{server}")).unwrap();
    let [no_root, bad_node, no_token] =
        [no_root, bad_node, no_token].map(|p| p.display().to_string());
    let cases: [(&str, &[&str], &str); 6] = [
        (
            &no_root,
            &["install", "v2.tandem"],
            "gone-root.json: No such file or directory",
        ),
        (
            &no_token,
            &["daemon", "--once"],
            "gone-token: No such file or directory",
        ),
        (&on_a, &["install", "repo"], "--channel"),
        (
            &on_a,
            &["install", "v2.tandem", "--channel", CHANNEL],
            "--channel",
        ),
        (&on_a, &["install", "repo", "--channel", "nope"], "nope"),
        (&bad_node, &["status"], "node_id"),
    ];
    for (config, args, needle) in cases {
        let stderr = stderr_of(&n.updater(config, args, 2));
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            stderr.matches("(os error").count() <= 1,
            "{args:?}: an OS error said twice: {stderr}"
        );
        let out = n.updater(config, &[args, &["--json"]].concat(), 2);
        let error: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON object ({e}): {out:?}"));
        assert_eq!(error["error"]["exit_code"], 2, "{error}");
        assert!(error["error"]["code"].is_string(), "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{args:?}: {error}");
    }

    // A `boot` other than the backend the disk was set up for (grub, by init-boot).
    let m = Node::new();
    let grub = ["--backend", "grub", "--grubenv", "grubenv"];
    m.s.run(
        "tandem-disk",
        &[&["init-boot", "disk.img"][..], &grub].concat(),
        0,
    );
    let on_a = m.config("a", "reboot = [\"true\"]\n");
    let stderr = stderr_of(&m.updater(&on_a, &["install", "v2.tandem"], 2));
    assert!(
        stderr.contains("kept by the grub backend") && stderr.contains("not by gpt"),
        "{stderr}"
    );
}

/// Relative paths in updater.toml are taken from the file's own directory: an agent started
/// in another directory (as systemd starts it, in `/`) finds the disk and the root and
/// writes its state where the file says.
#[test]
fn relative_paths_in_the_configuration_are_taken_from_its_directory() {
    let n = Node::new();
    let etc = n.path("etc");
    let elsewhere = n.path("elsewhere");
    for dir in [&etc, &elsewhere] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let config = etc.join("updater.toml");
    std::fs::write(
        &config,
        "disk = \"../disk.img\"\nboot = \"gpt\"\nstate = \"state/state.json\"\n\
         root = \"../root.json\"\nproduct = \"acme-edge\"\ntries = 2\nbooted_slot = \"a\"\n\
         reboot = [\"true\"]\n",
    )
    .unwrap();
    let out = Command::new(binary("tandem-updater"))
        .arg("--config")
        .arg(&config)
        .arg("install")
        .arg(n.path("v2.tandem"))
        .current_dir(&elsewhere)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(etc.join("state/state.json").is_file());
    assert!(!elsewhere.join("state").exists());
    assert_eq!(n.boot(), "b");
}

/// `status` says in words where the agent is (`--json` keeps the stored form); after an
/// install killed mid-write it names the slot partly written and says that running install
/// again resumes, which it does.
#[test]
fn status_speaks_plainly_and_names_an_interrupted_install() {
    let n = Node::new();
    let on_a = n.config("a", "reboot = [\"true\"]\n");
    let idle = stdout_of(&n.updater(&on_a, &["status"], 0));
    assert!(idle.contains("state: idle; security floor 0"), "{idle}");
    n.updater(&on_a, &["install", "v2.tandem", "--stage"], 0);
    // What a killed install leaves: the state file in `writing`, the target not bootable.
    let path = n.path("state/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(state["phase"]["phase"], "written", "{state}");
    state["phase"] = serde_json::json!({
        "phase": "writing",
        "target": "b",
        "release": state["phase"]["release"].clone(),
        "durable_chunks": 0,
    });
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let said = stdout_of(&n.updater(&on_a, &["status"], 0));
    assert!(
        said.contains("slot b: acme-edge 2.0.0 partly written, not bootable"),
        "{said}"
    );
    assert!(
        said.contains(
            "state: interrupted while writing acme-edge 2.0.0 into slot b: run install again"
        ),
        "{said}"
    );
    assert!(!said.contains('{'), "no raw JSON: {said}");
    let json = stdout_of(&n.updater(&on_a, &["status", "--json"], 0));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["state"]["phase"]["phase"], "writing", "{json}");

    let out = stdout_of(&n.updater(&on_a, &["install", "v2.tandem"], 0));
    assert!(out.contains("written to slot b"), "{out}");
    assert_eq!(n.boot(), "b");
    let after = stdout_of(&n.updater(&on_a, &["status"], 0));
    assert!(
        after.contains("state: acme-edge 2.0.0 written to slot b, boots next as a trial"),
        "{after}"
    );
}

/// `status --json | head -c1`: a closed stdout ends the output quietly.
#[test]
fn status_into_a_closed_pipe_exits_quietly() {
    let n = Node::new();
    let on_a = n.config("a", "reboot = [\"true\"]\n");
    let mut child = Command::new(binary("tandem-updater"))
        .args(["--config", &on_a, "status", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads: the agent's first write meets a closed pipe.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Durations print as an operator writes them (`1s`, not `1.999999939s`), for a
/// check's own timeout and for the overall health deadline.
#[test]
fn health_timeouts_print_readable_durations() {
    for (limits, said) in [
        ("health_deadline = \"5m\"\n", "timed out after 1s"),
        ("health_deadline = \"2s\"\n", "deadline of 2s"),
    ] {
        let n = Node::new();
        let on_a = n.config("a", "reboot = [\"true\"]\n");
        n.updater(&on_a, &["install", "v2.tandem"], 0);
        assert_eq!(n.boot(), "b");
        let timeout = if said.contains("deadline") {
            "10s"
        } else {
            "1s"
        };
        let on_b = n.config(
            "b",
            &format!(
                "reboot = [\"true\"]\n{limits}[[health]]\nexec = [\"sleep\", \"30\"]\n\
                 timeout = \"{timeout}\"\n"
            ),
        );
        let out = stdout_of(&n.updater(&on_b, &["boot-check"], 6));
        assert!(out.contains(said), "{out}");
        assert!(!out.contains("999"), "{out}");
    }
}

/// Runs the real `openssl` CLI in the node's directory.
fn openssl(n: &Node, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(n.s.dir.path())
        .output()
        .expect("the openssl CLI (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 it issued
/// (`server.pem`, `server.key`): the commands docs/updater.md shows.
fn private_ca(n: &Node) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        n,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=Tandem fleet CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        n,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        n.path("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        n,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "825",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// `GET /v1/channels/NAME/status` over HTTPS, trusting `ca`.
fn status_over_https(server: &TandemServer, ca: &Path) -> serde_json::Value {
    let options = repo_client::HttpOptions {
        ca_bundle: Some(ca.to_owned()),
        ..repo_client::HttpOptions::default()
    };
    let http = repo_client::Http::new(&server.url, options).unwrap();
    let body = http
        .get(&format!("v1/channels/{CHANNEL}/status"), 1 << 20)
        .unwrap()
        .expect("the channel's status");
    serde_json::from_slice(&body).unwrap()
}

/// A node with v2 published on the real `tandem-server` over HTTPS, whose certificate for
/// 127.0.0.1 a private CA (`ca.pem`) issued. The server is dropped (killed) before the
/// node's sandbox directory it serves.
struct Https {
    server: TandemServer,
    ca: PathBuf,
    n: Node,
}

impl Https {
    fn new() -> Https {
        let n = Node::new();
        private_ca(&n);
        n.publish("v2.tandem");
        let server = n.server(&[
            Path::new("--tls-cert"),
            &n.path("server.pem"),
            Path::new("--tls-key"),
            &n.path("server.key"),
        ]);
        assert!(
            server.url.starts_with("https://127.0.0.1:"),
            "{}",
            server.url
        );
        let ca = n.path("ca.pem");
        Https { server, ca, n }
    }

    /// The daemon's configuration on a node that booted `booted`, trusting `ca.pem` and
    /// talking to `url` (the server's, or a proxy's before it).
    fn config(&self, booted: &str, url: &str) -> String {
        let extra = format!(
            "node_id = \"{NODE}\"\nreboot = [\"true\"]\n{}{}",
            self.n.health(),
            server_keys_at(url, &self.server, Some(&self.ca))
        );
        self.n.config(booted, &extra)
    }

    /// How many reports of `outcome` the server counts for the current release.
    fn outcomes(&self, outcome: &str) -> serde_json::Value {
        let status = status_over_https(&self.server, &self.ca);
        status["current_release"]["outcomes"][outcome].clone()
    }
}

/// The real `tandem-server` over HTTPS with a certificate from a private CA:
/// the daemon installs and its reports arrive, boot-check reports the commit, and
/// `install https://… --channel` installs, all through the one client that trusts
/// `ca_bundle`.
#[test]
fn https_with_a_private_ca_installs_and_reports() {
    let h = Https::new();
    let n = &h.n;
    let url = &h.server.url;
    let out = stdout_of(&n.updater(&h.config("a", url), &["daemon", "--once"], 0));
    assert!(out.contains("installed 2.0.0 into slot b"), "{out}");
    assert_eq!(h.outcomes("installed"), 1);

    assert_eq!(n.boot(), "b");
    let on_b = h.config("b", url);
    n.updater(&on_b, &["boot-check"], 0);
    assert_eq!(h.outcomes("committed"), 1);

    n.sign("3.0.0", 2, 3, "v3.tandem");
    n.publish("v3.tandem");
    let out = stdout_of(&n.updater(&on_b, &["install", url, "--channel", CHANNEL], 0));
    assert!(out.contains("acme-edge 3.0.0 written to slot a"), "{out}");
}

/// A bundle download over HTTPS with a private CA resumes after its connection
/// is cut. A TCP proxy before the server (TLS stays end to end) cuts the first two
/// connections that carry a third of the bundle; the daemon installs v2 all the same, and
/// the bytes the proxy forwarded stay near the bundle's size: each cut resumed with
/// `Range` where it stopped, none started over.
#[test]
fn https_with_a_private_ca_resumes_a_cut_download() {
    let h = Https::new();
    let n = &h.n;
    let bundle_len = std::fs::metadata(n.path("v2.tandem")).unwrap().len();
    let proxy = CuttingProxy::start("https", h.server.addr, bundle_len / 3, 2);

    let out = stdout_of(&n.updater(&h.config("a", &proxy.url), &["daemon", "--once"], 0));
    assert!(out.contains("installed 2.0.0 into slot b"), "{out}");
    assert_eq!(
        sha256_hex(&n.slot_bytes(1)[..IMAGE_LEN]),
        sha256_hex(&image(IMAGE_LEN, 2))
    );
    assert_eq!(proxy.cuts(), 2, "both cuts fell inside the bundle");
    let forwarded = proxy.downstream_bytes();
    // Started over, the two cuts alone would have added two thirds of the bundle.
    assert!(
        forwarded * 10 < bundle_len * 13,
        "{forwarded} bytes forwarded for a bundle of {bundle_len}"
    );
    eprintln!(
        "cuts: {}, forwarded {forwarded} bytes for a bundle of {bundle_len} ({:.3}x)",
        proxy.cuts(),
        forwarded as f64 / bundle_len as f64
    );
    assert_eq!(h.outcomes("installed"), 1);
}

/// A self-signed server certificate given as `ca_bundle` fails with a hint
/// that says what to do instead.
#[test]
fn a_self_signed_server_certificate_fails_with_a_hint() {
    let n = Node::new();
    openssl(
        &n,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "self.key",
            "-out",
            "self.pem",
            "-days",
            "30",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    n.publish("v2.tandem");
    let server = n.server(&[
        Path::new("--tls-cert"),
        &n.path("self.pem"),
        Path::new("--tls-key"),
        &n.path("self.key"),
    ]);
    let on_a = n.config(
        "a",
        &format!(
            "reboot = [\"true\"]\n{}",
            server_keys(&server, Some(&n.path("self.pem")))
        ),
    );
    let before = n.snapshot();
    let out = n.updater(&on_a, &["install", &server.url, "--channel", CHANNEL], 8);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("CaUsedAsEndEntity") && stderr.contains("issue a server certificate"),
        "{stderr}"
    );
    assert_eq!(n.snapshot(), before);
}

/// As docs/updater.md tells it: `rollback` goes back to the factory
/// image the firmware marks good, but not below the security floor without `--force`.
#[test]
fn rollback_to_the_factory_image_needs_force_below_the_floor() {
    let n = Node::new();
    let on_b = n.commit_v2();
    let before = n.snapshot();
    let out = n.updater(&on_b, &["rollback", "--no-reboot", "--json"], 4);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["code"], "below-security-floor", "{error}");
    assert_eq!(n.snapshot(), before);

    let out = stdout_of(&n.updater(&on_b, &["rollback", "--no-reboot", "--force"], 0));
    assert!(out.contains("slot a boots next as a trial"), "{out}");
    assert_eq!(n.boot(), "a");
    let on_a = n.config("a", &format!("reboot = [\"true\"]\n{}", n.health()));
    let out = stdout_of(&n.updater(&on_a, &["boot-check"], 0));
    assert!(
        out.contains("slot a (factory) passed its health checks"),
        "{out}"
    );
}

/// The samples of node_exporter's textfile `path`: `name{labels}` → value, each family with
/// its HELP and TYPE lines.
fn prom_samples(path: &Path) -> std::collections::BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{text}");
        assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{text}");
        samples.insert(series.to_owned(), value.parse().unwrap());
    }
    samples
}

/// The agent keeps node_exporter's textfile current after a poll that installs,
/// a boot-check that commits and a poll that finds nothing new.
#[test]
fn the_metrics_textfile_follows_install_boot_check_and_poll() {
    let n = Node::new();
    n.publish("v2.tandem");
    let server = n.server(&[]);
    let dir = n.path("textfile_collector");
    std::fs::create_dir_all(&dir).unwrap();
    let prom = dir.join("tandem.prom");
    let config = |booted: &str| {
        n.config(
            booted,
            &format!(
                "node_id = \"{NODE}\"\nreboot = [\"true\"]\nmetrics_textfile = \"{}\"\n{}{}",
                prom.display(),
                n.health(),
                server_keys(&server, None)
            ),
        )
    };
    let on_a = config("a");
    let out = stdout_of(&n.updater(&on_a, &["daemon", "--once", "--no-reboot"], 0));
    assert!(out.contains("installed 2.0.0 into slot b"), "{out}");
    let after_install = prom_samples(&prom);
    let get = |samples: &std::collections::BTreeMap<String, f64>, series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("{series}: {samples:?}"))
    };
    let m = |name: &str| format!("tandem_updater_{name}");
    assert_eq!(
        get(
            &after_install,
            &m("booted_info{slot=\"a\",version=\"factory\"}")
        ),
        1.0
    );
    assert_eq!(
        get(
            &after_install,
            &m("last_poll_info{decision=\"installed\",reason=\"\"}")
        ),
        1.0
    );
    assert_eq!(get(&after_install, &m("last_poll_success")), 1.0);
    assert_eq!(get(&after_install, &m("security_floor")), 0.0);
    assert!(get(&after_install, &m("last_install_bytes_fetched")) > 0.0);
    // v2 (another seed) shares with v1 only 4 KiB blocks of repeated text: far less is
    // reused than fetched.
    let reused = get(&after_install, &m("last_install_bytes_reused"));
    assert!(
        reused < get(&after_install, &m("last_install_bytes_fetched")),
        "{reused}"
    );
    assert!(get(&after_install, &m("last_install_duration_seconds")) > 0.0);
    assert!(get(&after_install, &m("last_poll_timestamp_seconds")) > 1.7e9);
    assert!(!after_install.keys().any(|k| k.contains("boot_check")));

    let on_b = config("b");
    n.updater(&on_b, &["boot-check"], 0);
    let after_check = prom_samples(&prom);
    assert_eq!(
        get(
            &after_check,
            &m("booted_info{slot=\"b\",version=\"2.0.0\"}")
        ),
        1.0
    );
    assert_eq!(
        get(
            &after_check,
            &m("last_boot_check_info{outcome=\"committed\"}")
        ),
        1.0
    );
    assert!(get(&after_check, &m("last_boot_check_timestamp_seconds")) > 1.7e9);
    assert_eq!(get(&after_check, &m("security_floor")), 2.0);
    let install_keys = ["last_install_bytes_fetched", "last_install_bytes_reused"];
    for key in install_keys.map(m) {
        assert_eq!(get(&after_check, &key), get(&after_install, &key), "{key}");
    }

    let out = stdout_of(&n.updater(&on_b, &["daemon", "--once"], 0));
    assert!(out.contains("up to date"), "{out}");
    let after_poll = prom_samples(&prom);
    assert_eq!(
        get(
            &after_poll,
            &m("last_poll_info{decision=\"up-to-date\",reason=\"\"}")
        ),
        1.0
    );
    assert_eq!(
        get(
            &after_poll,
            &m("last_boot_check_info{outcome=\"committed\"}")
        ),
        1.0
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["tandem.prom"], "a temporary file was left behind");
}
