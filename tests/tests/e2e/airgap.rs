//! Air-gapped updates (docs/airgap.md), through the binaries:
//! `tandem-signer mirror` copies a repository (a directory, or `tandem-server` on 127.0.0.1)
//! onto a "stick" (a directory), verifying everything first; the node installs from it with
//! `install DIR --channel C`, here and through `dist/tandem-usb-install` with stand-ins for
//! mount/umount; a tampered or expired source leaves nothing behind; `log` and
//! `inspect --root` say who signed what; the systemd units pass `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use signer::files::read_secret_key;
use signer::metadata::{channel_signed_bytes, read_channel_unverified, sign_document, ChannelSpec};
use signer::{Limits, RoleKind};
use time::OffsetDateTime;

use super::operator::{stderr_of, stdout_of, Node, CHANNEL};

/// The stick's mount point and the mirror directory on it.
const STICK: &str = "stick";
const MIRROR: &str = "stick/tandem";

impl Node {
    /// `tandem-signer mirror --from FROM --channel stable --to stick/tandem --root root.json`
    /// with `extra` arguments; `expect` is the exit code wanted.
    fn mirror(&self, from: &str, extra: &[&str], expect: i32) -> Output {
        std::fs::create_dir_all(self.path(STICK)).unwrap();
        let args = [
            &[
                "mirror",
                "--from",
                from,
                "--channel",
                CHANNEL,
                "--to",
                MIRROR,
                "--root",
                "root.json",
            ][..],
            extra,
        ]
        .concat();
        self.s.run("tandem-signer", &args, expect)
    }

    /// What the stick holds, by name (the mirror and anything left beside it).
    fn stick_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(STICK))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A node that booted slot A, with no reboot or health check to run.
    fn on_a(&self) -> String {
        self.config("a", "reboot = [\"true\"]\n")
    }
}

/// Every file under `dir`, relative, with its bytes.
pub(crate) fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Flips the hex digit right after `needle` in the file to another hex digit.
fn flip_hex_digit(path: &Path, needle: &str) {
    let mut text = std::fs::read_to_string(path).unwrap();
    let at = text.find(needle).unwrap() + needle.len();
    let old = text.as_bytes()[at];
    let new = if old == b'0' { "1" } else { "0" };
    text.replace_range(at..at + 1, new);
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_node_installs_from_a_mirror_of_a_repository_directory() {
    let n = Node::new();
    n.publish("v2.tandem");
    let out = stdout_of(&n.mirror("repo", &["--json"], 0));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["roots"], serde_json::json!([1]), "{out}");
    assert_eq!(report["channels"][0]["channel"], CHANNEL, "{out}");
    assert_eq!(report["channels"][0]["release_version"], "2.0.0", "{out}");
    assert_eq!(report["channels"][0]["security_version"], 2, "{out}");
    let bundle = "bundles/acme-edge-2.0.0.tandem";
    let bundle_len = std::fs::metadata(n.path("v2.tandem")).unwrap().len();
    let files = report["files"].as_array().unwrap();
    assert!(
        files.contains(&serde_json::json!({"path": bundle, "bytes": bundle_len})),
        "{out}"
    );
    let total: u64 = files.iter().map(|f| f["bytes"].as_u64().unwrap()).sum();
    assert_eq!(report["total_bytes"], total, "{out}");
    // The mirror is the repository's files, byte for byte, and nothing else is left.
    assert_eq!(tree(&n.path(MIRROR)), tree(&n.path("repo")));
    assert_eq!(n.stick_entries(), ["tandem"]);

    let install = n.updater(&n.on_a(), &["install", MIRROR, "--channel", CHANNEL], 0);
    let said = stdout_of(&install);
    assert!(said.contains("acme-edge 2.0.0 written to slot b"), "{said}");
    assert_eq!(n.boot(), "b");
}

#[test]
fn mirror_over_http_from_tandem_server_copies_the_same_files() {
    let n = Node::new();
    n.publish("v2.tandem");
    let server = n.server(&[]);
    let out = stdout_of(&n.mirror(&server.url, &[], 0));
    assert!(out.contains("wrote stick/tandem: 4 files"), "{out}");
    assert!(
        out.contains("channel  stable version 1: acme-edge 2.0.0 (security version 2)"),
        "{out}"
    );
    assert_eq!(tree(&n.path(MIRROR)), tree(&n.path("repo")));
    let said = stdout_of(&n.updater(&n.on_a(), &["install", MIRROR, "--channel", CHANNEL], 0));
    assert!(said.contains("written to slot b"), "{said}");
}

#[test]
fn a_tampered_channel_or_bundle_in_the_source_leaves_no_mirror() {
    let n = Node::new();
    n.publish("v2.tandem");
    let channel = n.path("repo/channels/stable.json");
    let original = std::fs::read(&channel).unwrap();
    flip_hex_digit(&channel, "\"manifest_sha256\":\"");
    let err = stderr_of(&n.mirror("repo", &[], 1));
    assert!(err.contains("threshold not met"), "{err}");
    assert!(n.stick_entries().is_empty(), "{:?}", n.stick_entries());

    std::fs::write(&channel, original).unwrap();
    let bundle = n.path("repo/bundles/acme-edge-2.0.0.tandem");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = tandem_tests::payload_end(&bundle) - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&bundle, bytes).unwrap();
    let err = stderr_of(&n.mirror("repo", &[], 1));
    assert!(err.contains("mirroring repo to stick/tandem"), "{err}");
    assert!(err.contains("copy or download it again"), "{err}");
    assert!(n.stick_entries().is_empty(), "{:?}", n.stick_entries());
}

#[test]
fn an_existing_mirror_is_replaced_only_when_asked() {
    let n = Node::new();
    n.publish("v2.tandem");
    n.mirror("repo", &[], 0);
    let before = tree(&n.path(MIRROR));
    let err = stderr_of(&n.mirror("repo", &[], 1));
    assert!(err.contains("already exists: give --replace"), "{err}");
    assert_eq!(tree(&n.path(MIRROR)), before);

    n.sign("3.0.0", 3, 3, "v3.tandem");
    n.publish("v3.tandem");
    let out = stdout_of(&n.mirror("repo", &["--replace"], 0));
    assert!(out.contains("replaced stick/tandem"), "{out}");
    assert!(out.contains("acme-edge 3.0.0"), "{out}");
    assert_eq!(n.stick_entries(), ["tandem"]);
    // The mirror carries what the channel names now, not the bundles it no longer names.
    let files: Vec<String> = tree(&n.path(MIRROR)).into_iter().map(|(p, _)| p).collect();
    assert!(
        files.contains(&"bundles/acme-edge-3.0.0.tandem".to_owned()),
        "{files:?}"
    );
    assert!(
        !files.contains(&"bundles/acme-edge-2.0.0.tandem".to_owned()),
        "{files:?}"
    );
}

/// Replaces the channel document with one that expired an hour ago (next version, same
/// release), signed by the release keys.
fn publish_expired_channel(n: &Node) -> OffsetDateTime {
    let path = n.path("repo/channels/stable.json");
    let current =
        read_channel_unverified(&std::fs::read(&path).unwrap(), &Limits::default()).unwrap();
    let expires = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let r = &current.release;
    let spec = ChannelSpec {
        channel: CHANNEL.into(),
        version: current.version + 1,
        expires,
        product: r.product.clone(),
        release_version: r.version.clone(),
        security_version: r.security_version,
        bundle: r.bundle.clone(),
        size: r.size,
        manifest_sha256: r.manifest_sha256,
        percent: 100,
        salt: current.rollout.salt.clone(),
    };
    let keys = ["rel1.pem", "rel3.pem"].map(|k| read_secret_key(&n.path(k)).unwrap());
    let doc = sign_document(
        RoleKind::Channel,
        &channel_signed_bytes(&spec).unwrap(),
        &keys,
    )
    .unwrap();
    std::fs::write(&path, doc).unwrap();
    expires
}

#[test]
fn an_expired_channel_is_refused_with_its_expiry_and_a_fix() {
    let n = Node::new();
    n.publish("v2.tandem");
    let expires = publish_expired_channel(&n);
    let err = stderr_of(&n.mirror("repo", &[], 1));
    let when = signer::time_util::format_rfc3339(expires);
    assert!(
        err.contains(&format!("channel metadata expired at {when}")),
        "{err}"
    );
    assert!(err.contains("later --expires"), "{err}");
    assert!(n.stick_entries().is_empty(), "{:?}", n.stick_entries());
}

#[test]
fn log_lists_each_channel_and_the_bundles_it_no_longer_names() {
    let n = Node::new();
    n.publish("v2.tandem");
    // Every bundle named by a channel: the text has no empty list of others.
    let log = ["log", "--repo", "repo", "--root", "root.json"];
    let text = stdout_of(&n.s.run("tandem-signer", &log, 0));
    assert!(!text.contains("no listed channel names"), "{text}");
    n.sign("3.0.0", 3, 3, "v3.tandem");
    n.publish("v3.tandem");
    let json = stdout_of(&n.s.run(
        "tandem-signer",
        &["log", "--repo", "repo", "--root", "root.json", "--json"],
        0,
    ));
    let log: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(log["root_version"], 1, "{json}");
    assert!(log["history"]
        .as_str()
        .unwrap()
        .contains("only the newest document"));
    let channel = &log["channels"][0];
    assert_eq!(channel["channel"], CHANNEL, "{json}");
    assert_eq!(channel["version"], 2, "{json}");
    assert_eq!(channel["accepted"], true, "{json}");
    assert_eq!(channel["release"]["version"], "3.0.0", "{json}");
    assert_eq!(channel["release"]["security_version"], 3, "{json}");
    assert_eq!(channel["signers"].as_array().unwrap().len(), 2, "{json}");
    for signer in channel["signers"].as_array().unwrap() {
        assert_eq!(signer["roles"], serde_json::json!(["release"]), "{json}");
        assert_eq!(signer["valid"], true, "{json}");
    }
    assert_eq!(
        channel["bundle"]["path"], "bundles/acme-edge-3.0.0.tandem",
        "{json}"
    );
    assert!(channel["bundle"]["created"].is_string(), "{json}");
    let others = log["other_bundles"].as_array().unwrap();
    assert_eq!(others.len(), 1, "{json}");
    assert_eq!(others[0]["version"], "2.0.0", "{json}");

    // Over HTTP the channels must be named; without a root nothing is claimed verified.
    let server = n.server(&[]);
    let text = stdout_of(&n.s.run(
        "tandem-signer",
        &["log", "--repo", &server.url, "--channel", CHANNEL],
        0,
    ));
    assert!(text.contains("signatures NOT checked"), "{text}");
    assert!(text.contains("channel stable version 2"), "{text}");
    // The bundle's head comes by Range requests: its signed created time and signers.
    let head =
        "bundle    bundles/acme-edge-3.0.0.tandem acme-edge 3.0.0 (security version 3), created ";
    assert!(text.contains(head), "{text}");
    let err = stderr_of(&n.s.run("tandem-signer", &["log", "--repo", &server.url], 1));
    assert!(err.contains("--channel"), "{err}");
}

#[test]
fn inspect_with_a_root_shows_who_signed_and_in_which_role() {
    let n = Node::new();
    let key_id = |name: &str| read_secret_key(&n.path(name)).unwrap().id().to_hex();
    let json = stdout_of(&n.s.run(
        "tandem-signer",
        &["inspect", "v2.tandem", "--root", "root.json", "--json"],
        0,
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["signatures_verified"], true, "{json}");
    assert_eq!(v["threshold_met"], true, "{json}");
    assert_eq!(v["root_version"], 1, "{json}");
    let mut ids: Vec<&str> = v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["roles"], serde_json::json!(["release"]), "{json}");
            assert_eq!(s["valid"], true, "{json}");
            s["keyid"].as_str().unwrap()
        })
        .collect();
    ids.sort_unstable();
    let mut want = [key_id("rel1.pem"), key_id("rel3.pem")];
    want.sort();
    assert_eq!(ids, want, "{json}");

    let plain = stdout_of(&n.s.run("tandem-signer", &["inspect", "v2.tandem", "--json"], 0));
    let v: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(v["signatures_verified"], false, "{plain}");
    assert!(v["signatures"][0].get("roles").is_none(), "{plain}");
}

/// A directory with stand-ins for `mount` and `umount` that log their arguments (the stick
/// is "mounted" by `copy`, a shell command copying the device `$3` into the mount point
/// `$4`), for `dist/tandem-usb-install` without root.
fn fake_mount_tools(n: &Node, copy: &str) -> PathBuf {
    let bin = n.path("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = n.path("mounts.log");
    let tools = [
        (
            "mount",
            format!("echo \"mount $*\" >> '{}'\n{copy}\n", log.display()),
        ),
        (
            "umount",
            format!(
                "echo \"umount $*\" >> '{}'\nrm -rf \"$1\"/*\n",
                log.display()
            ),
        ),
    ];
    for (name, body) in tools {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&path, mode).unwrap();
    }
    bin
}

/// Runs `dist/tandem-usb-install DEVICE` as the unit would, with the node's configuration.
fn usb_install(n: &Node, bin: &Path, device: &Path) -> Output {
    usb_install_with(n, bin, device, &super::cli::binary("tandem-updater"))
}

/// [`usb_install`] with `updater` as the agent, trying again at once when it is busy.
fn usb_install_with(n: &Node, bin: &Path, device: &Path, updater: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/tandem-usb-install");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    Command::new("sh")
        .arg(script)
        .arg(device)
        .env("PATH", path)
        .env("TANDEM_USB_CHANNEL", CHANNEL)
        .env("TANDEM_CONFIG", n.on_a())
        .env("TANDEM_UPDATER", updater)
        .env("TANDEM_USB_MOUNT_ROOT", n.path("run"))
        .env("TANDEM_USB_BUSY_WAIT", "0")
        .output()
        .unwrap()
}

/// The agent is busy when the stick comes (exit 9: the daemon's poll or the boot check
/// holds the state directory, as at a boot with the stick in): the script tries again
/// instead of giving the stick up, and installs.
#[test]
fn the_usb_script_tries_again_while_another_agent_runs() {
    let n = Node::new();
    n.publish("v2.tandem");
    n.mirror("repo", &[], 0);
    let bin = fake_mount_tools(&n, r#"cp -r "$3"/. "$4""#);
    let calls = n.path("agent-calls");
    let busy_once = n.path("busy-once-updater");
    std::fs::write(
        &busy_once,
        format!(
            "#!/bin/sh\necho call >> '{calls}'\n\
             if [ \"$(wc -l < '{calls}')\" -eq 1 ]; then\n\
             echo 'another tandem-updater (pid 1) is running' >&2; exit 9; fi\n\
             exec '{real}' \"$@\"\n",
            calls = calls.display(),
            real = super::cli::binary("tandem-updater").display()
        ),
    )
    .unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&busy_once, mode).unwrap();
    let out = usb_install_with(&n, &bin, &n.path(STICK), &busy_once);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    assert!(
        stdout.contains("another tandem-updater is running: trying again")
            && stdout.contains("written to slot b"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 2);
    assert_eq!(n.boot(), "b");
}

#[test]
fn the_usb_script_mounts_read_only_installs_and_always_unmounts() {
    let n = Node::new();
    n.publish("v2.tandem");
    n.mirror("repo", &[], 0);
    let bin = fake_mount_tools(&n, r#"cp -r "$3"/. "$4""#);
    // A stick whose bundle was damaged after mirroring: the agent refuses, the stick is
    // unmounted all the same and nothing was flipped.
    let bundle = n.path("stick/tandem/bundles/acme-edge-2.0.0.tandem");
    let good = std::fs::read(&bundle).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    std::fs::write(&bundle, bad).unwrap();
    let out = usb_install(&n, &bin, &n.path(STICK));
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("nothing was flipped"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(n.boot(), "a");

    std::fs::write(&bundle, good).unwrap();
    let out = usb_install(&n, &bin, &n.path(STICK));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("written to slot b"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(n.boot(), "b");
    let log = std::fs::read_to_string(n.path("mounts.log")).unwrap();
    let mnt = n.path("run/stick");
    let mount = format!(
        "mount -o ro,nosuid,nodev,noexec {} {}",
        n.path(STICK).display(),
        mnt.display()
    );
    let umount = format!("umount {}", mnt.display());
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [&mount, &umount, &mount, &umount],
        "{log}"
    );
    assert!(!mnt.exists(), "the mount point is removed");
}

/// The file of the workspace at `rel` (docs, dist), as text.
fn workspace_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The label docs/airgap.md tells operators to format their stick with (`mkfs.vfat -n L`).
fn documented_label() -> String {
    let doc = workspace_file("docs/airgap.md");
    let line = doc
        .lines()
        .find_map(|l| l.strip_prefix("mkfs.vfat -n "))
        .expect("docs/airgap.md shows `mkfs.vfat -n LABEL`");
    line.split_whitespace().next().unwrap().to_string()
}

/// Whether dist/90-tandem-usb.rules starts the unit for a filesystem whose udev property
/// `ID_FS_LABEL` is `label` (its `==` match, alternatives split at `|` as udev does).
fn rule_starts_unit_for(label: &str) -> bool {
    let rule = workspace_file("dist/90-tandem-usb.rules");
    rule.lines()
        .filter(|l| l.contains(r#"ENV{SYSTEMD_WANTS}+="tandem-usb-install@%k.service""#))
        .filter_map(|l| l.split(r#"ENV{ID_FS_LABEL}==""#).nth(1))
        .filter_map(|rest| rest.split('"').next())
        .any(|pattern| pattern.split('|').any(|p| p == label))
}

/// Runs a tool that must succeed, naming it and its stderr when it does not.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program} (scripts/test.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        stderr_of(&out)
    );
    stdout_of(&out)
}

/// A stick as docs/airgap.md makes it: a real FAT filesystem (an image file, formatted by
/// `mkfs.vfat -n` with the documented label), the mirror copied onto it with mtools. udev's
/// view of it (`blkid -p -o udev`, what 60-persistent-storage.rules imports) matches
/// dist/90-tandem-usb.rules, and dist/tandem-usb-install installs from it. The old label
/// still starts the unit, though FAT cannot hold it.
#[test]
fn a_vfat_stick_labelled_as_documented_starts_the_unit_and_installs() {
    let n = Node::new();
    n.publish("v2.tandem");
    n.mirror("repo", &[], 0);
    let label = documented_label();
    let img = n.path("stick.img");
    let img_arg = img.display().to_string();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    tool("mkfs.vfat", &["-n", &label, &img_arg]);
    tool(
        "mcopy",
        &[
            "-s",
            "-i",
            &img_arg,
            &n.path(MIRROR).display().to_string(),
            "::/",
        ],
    );

    let udev = tool("blkid", &["-p", "-o", "udev", &img_arg]);
    let property = |name: &str| {
        udev.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    assert_eq!(property("ID_FS_TYPE").as_deref(), Some("vfat"), "{udev}");
    let fs_label = property("ID_FS_LABEL").expect("blkid reads the label");
    assert_eq!(fs_label, label, "{udev}");
    assert!(
        rule_starts_unit_for(&fs_label),
        "the rule misses {fs_label}"
    );
    assert!(rule_starts_unit_for("TANDEM-UPDATE"), "the old label");
    assert!(!rule_starts_unit_for("TANDEM"), "a prefix is not the label");
    let other = n.path("other.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let too_long = Command::new("mkfs.vfat")
        .arg("-n")
        .arg("TANDEM-UPDATE")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!too_long.status.success(), "FAT labels hold 11 characters");

    let bin = fake_mount_tools(&n, r#"mcopy -s -i "$3" '::/*' "$4"/"#);
    let out = usb_install(&n, &bin, &img);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("written to slot b"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(n.boot(), "b");
}

/// The values of `key=` in a unit, each line's words in order (`ReadWritePaths=a -b`).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// The quoted value of `key = "…"` in the configuration example of docs/updater.md (also
/// commented out: `# key = "…"`).
fn documented_setting(key: &str) -> String {
    let doc = workspace_file("docs/updater.md");
    doc.lines()
        .map(|l| l.trim_start_matches("# "))
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("docs/updater.md shows {key}"))
        .to_string()
}

/// What `ProtectSystem=strict` leaves writable to a unit, checked without booting it: every
/// `ReadWritePaths=` entry not marked optional (`-`) exists on a fresh node (a state
/// directory systemd creates, or /run), since a missing one fails the unit with
/// 226/NAMESPACE; and each directory the agent writes with the documented configuration
/// (the state file's, the metrics textfile's) is writable.
fn check_agent_unit_can_write(name: &str, unit: &str) {
    assert_eq!(unit_values(unit, "ProtectSystem"), ["strict"], "{name}");
    let state_dirs: Vec<String> = unit_values(unit, "StateDirectory")
        .iter()
        .map(|d| format!("/var/lib/{d}"))
        .collect();
    let writable = unit_values(unit, "ReadWritePaths");
    for path in &writable {
        assert!(
            path.starts_with('-') || path == "/run" || state_dirs.contains(path),
            "{name}: ReadWritePaths={path} is missing on a fresh node (226/NAMESPACE): \
             add StateDirectory= or mark it optional with -"
        );
    }
    let under = |dir: &Path| {
        writable
            .iter()
            .map(|p| p.trim_start_matches('-'))
            .chain(state_dirs.iter().map(String::as_str))
            .any(|p| dir.starts_with(p))
    };
    for key in ["state", "metrics_textfile"] {
        let file = documented_setting(key);
        let dir = Path::new(&file).parent().unwrap();
        assert!(
            under(dir),
            "{name} cannot write {key} {file} (ProtectSystem=strict)"
        );
    }
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = super::cli::binary("tandem-updater")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let script = dist.join("tandem-usb-install").display().to_string();
    // Executables at their packaged paths do not exist here: point at the built ones.
    let units = [
        ("tandem-updater.service", "tandem-updater.service"),
        ("tandem-boot-check.service", "tandem-boot-check.service"),
        ("tandem-server.service", "tandem-server.service"),
        (
            "tandem-usb-install@.service",
            "tandem-usb-install@sdb1.service",
        ),
    ];
    let mut paths = Vec::new();
    for (unit, instance) in units {
        let text = std::fs::read_to_string(dist.join(unit))
            .unwrap()
            .replace("/usr/lib/tandem/tandem-usb-install", &script)
            .replace("/usr/bin/", &format!("{bin_dir}/"));
        if unit != "tandem-server.service" {
            check_agent_unit_can_write(unit, &text);
        }
        let path = dir.path().join(instance);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .expect("systemd-analyze (package systemd; scripts/test.sh installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The boot waits for tandem-boot-check.service: a documented health check that waits
    // for the boot to finish waits for itself until the deadline, and rolls back every update.
    let boot_check = workspace_file("dist/tandem-boot-check.service");
    assert_eq!(unit_values(&boot_check, "WantedBy"), ["multi-user.target"]);
    // systemd-bless-boot blesses an entry at boot-complete.target: only after the check.
    assert_eq!(unit_values(&boot_check, "Before"), ["boot-complete.target"]);
    assert_eq!(
        unit_values(&boot_check, "RequiredBy"),
        ["boot-complete.target"]
    );
    // The daemon comes after the check, which comes after multi-user.target: the daemon must
    // say so itself, or the target (ordered after the units it wants) closes a cycle in
    // which systemd drops the daemon's start.
    let daemon = workspace_file("dist/tandem-updater.service");
    let after = unit_values(&daemon, "After");
    assert!(
        after.iter().any(|u| u == "multi-user.target")
            && after.iter().any(|u| u == "tandem-boot-check.service"),
        "tandem-updater.service After={after:?}"
    );
    let doc = workspace_file("docs/updater.md");
    let execs: Vec<&str> = doc.lines().filter(|l| l.starts_with("exec = [")).collect();
    assert!(!execs.is_empty(), "docs/updater.md shows a health check");
    for exec in execs {
        assert!(!exec.contains("is-system-running"), "{exec}");
    }
}

/// A stick may carry FIFOs and device nodes: `channels/stable.json` as a FIFO is refused as
/// hostile input naming it, at once (an open that waited for a writer would hold the lock
/// for ever; the run is bounded so that would fail here, not stall), and nothing is written.
#[test]
fn a_fifo_on_the_stick_is_refused_not_waited_for() {
    let n = Node::new();
    n.publish("v2.tandem");
    n.mirror("repo", &[], 0);
    let channel = n.path(&format!("{MIRROR}/channels/{CHANNEL}.json"));
    std::fs::remove_file(&channel).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &channel,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let config = n.on_a();
    let args = ["--config", &config, "install", MIRROR, "--channel", CHANNEL];
    let limit = std::time::Duration::from_secs(60);
    let out = n.s.run_within("tandem-updater", &args, 3, limit);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!(
            "{MIRROR}/channels/{CHANNEL}.json: not a regular file"
        )),
        "{stderr}"
    );
    assert_eq!(n.boot(), "a");

    // The signer reading a repository directory (`mirror --from`) refuses it the same way.
    let source = n.path(&format!("repo/channels/{CHANNEL}.json"));
    std::fs::remove_file(&source).unwrap();
    rustix::fs::mkfifoat(rustix::fs::CWD, &source, rustix::fs::Mode::RUSR).unwrap();
    let args = [
        "mirror",
        "--from",
        "repo",
        "--channel",
        CHANNEL,
        "--to",
        "stick/again",
        "--root",
        "root.json",
    ];
    let out = n.s.run_within("tandem-signer", &args, 1, limit);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!("channels/{CHANNEL}.json"))
            && stderr.contains("not a regular file"),
        "{stderr}"
    );
}
