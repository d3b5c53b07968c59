//! The `tandem-signer` program end to end: keys, root, sign, threshold messages, add-signature,
//! verify, inspect, extract (nothing left on failure), publish (versions, salt, immutability).

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use signer::files::read_public_key;
use signer::{BundleHead, Limits};

use crate::util::*;

/// Keys root, r1, r2, r3; root.json with release threshold 2; an image.
fn setup() -> Dir {
    let d = Dir::new();
    for k in ["root", "r1", "r2", "r3"] {
        d.ok(&["keygen", "--out", k]);
    }
    d.init_root_2_of_3(&["--expires", "365d"]);
    std::fs::write(d.path("img"), sparse_image(300_001, 11)).unwrap();
    d
}

fn sign(d: &Dir, version: &str, keys: &[&str], out: &str) {
    d.ok(&sign_version_args(version, "3", out, keys, &[]));
}

#[test]
fn keygen_writes_private_key_0600_and_prints_the_key_id() {
    let d = Dir::new();
    let id = stdout(&d.ok(&["keygen", "--out", "k"])).trim().to_owned();
    let mode = std::fs::metadata(d.path("k.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let public = signer::files::read_public_key(&d.path("k.pub.pem")).unwrap();
    assert_eq!(id, public.id().to_hex());
    d.fails(&["keygen", "--out", "k"]);
}

#[test]
fn a_chunking_whose_max_is_far_above_its_avg_is_refused_at_signing() {
    let d = setup();
    let chunking = ["--chunking", "cdc:4KiB,4KiB,16MiB"];
    let out = d.fails(&sign_version_args(
        "1.0.0",
        "3",
        "b.tandem",
        &["r1.pem"],
        &chunking,
    ));
    let err = stderr(&out);
    assert!(err.contains("max must be at most 8 x avg"), "{err}");
    assert!(!d.path("b.tandem").exists());
    let chunking = ["--chunking", "cdc:4KiB,8KiB,64KiB"];
    d.ok(&sign_version_args(
        "1.0.0",
        "3",
        "b.tandem",
        &["r1.pem"],
        &chunking,
    ));
}

#[test]
fn the_same_keys_give_the_same_bundle_in_any_order() {
    let d = setup();
    let created = ["--created", "2026-01-31T12:00:00Z"];
    let bytes = |keys: &[&str], out: &str| {
        d.ok(&sign_version_args("1.0.0", "3", out, keys, &created));
        std::fs::read(d.path(out)).unwrap()
    };
    let forward = bytes(&["r1.pem", "r2.pem"], "a.tandem");
    assert_eq!(bytes(&["r2.pem", "r1.pem"], "b.tandem"), forward);
    // Signed in two steps, in either order, too.
    for (first, then) in [("r1.pem", "r2.pem"), ("r2.pem", "r1.pem")] {
        bytes(&[first], "c.tandem");
        d.ok(&["add-signature", "c.tandem", "--key", then]);
        assert_eq!(
            std::fs::read(d.path("c.tandem")).unwrap(),
            forward,
            "{first} then {then}"
        );
    }
}

#[test]
fn sign_warns_when_an_ext4_image_has_blocks_smaller_than_its_chunks() {
    let d = setup();
    let warning = "ext2/3/4 filesystem of 1024-byte blocks, smaller than its 4096-byte chunks";
    // mke2fs gives a 64 MiB image 1 KiB blocks unless told otherwise.
    ext4_image(&d, "64M", "1024");
    let err = stderr(&d.ok(&sign_args("a.tandem", &["r1.pem"], &[])));
    assert!(
        err.contains(warning) && err.contains("mke2fs -b 4096"),
        "{err}"
    );
    // Content-defined cuts fall on 4 KiB boundaries: the same warning.
    let cdc = ["--chunking", "cdc:4KiB,8KiB,32KiB"];
    let err = stderr(&d.ok(&sign_args("b.tandem", &["r1.pem"], &cdc)));
    assert!(err.contains(warning), "{err}");
    ext4_image(&d, "64M", "4096");
    let err = stderr(&d.ok(&sign_args("c.tandem", &["r1.pem"], &[])));
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn sign_verify_threshold_add_signature_inspect_extract() {
    let d = setup();
    sign(&d, "1.0.0", &["r1.pem"], "b.tandem");
    let out = d.fails(&["verify", "b.tandem", "--root", "root.json"]);
    let err = stderr(&out);
    assert!(
        err.contains("threshold not met") && err.contains("1 of 2 release keys"),
        "{err}"
    );
    assert!(
        err.contains("could still sign") && err.contains("add-signature"),
        "{err}"
    );
    d.ok(&["add-signature", "b.tandem", "--key", "r3.pem"]);
    let ok = stdout(&d.ok(&["verify", "b.tandem", "--root", "root.json"]));
    assert!(ok.starts_with("valid: os 1.0.0"), "{ok}");

    let json: serde_json::Value =
        serde_json::from_slice(&d.ok(&["inspect", "--json", "b.tandem"]).stdout).unwrap();
    assert_eq!(json["product"], "os");
    assert_eq!(json["image_size"], 300_001);
    // The image is cut in 4 KiB blocks by default (`--chunk-size` is the assets').
    assert_eq!(json["format_version"], 3);
    assert_eq!(json["chunks"], 300_001u64.div_ceil(4096));
    assert_eq!(
        json["chunking"],
        serde_json::json!({"avg": 4096, "max": 4096, "min": 4096})
    );
    assert_eq!(json["dictionary_size"], 0);
    assert!(json["index_size"].as_u64().unwrap() > 0);
    assert_eq!(json["signers"].as_array().unwrap().len(), 2);
    assert_eq!(json["signatures_verified"], false);
    let text = stdout(&d.ok(&["inspect", "b.tandem"]));
    assert!(text.contains("NOT verified"), "{text}");

    d.ok(&[
        "extract",
        "b.tandem",
        "--root",
        "root.json",
        "-o",
        "out.raw",
    ]);
    assert_eq!(
        std::fs::read(d.path("out.raw")).unwrap(),
        std::fs::read(d.path("img")).unwrap()
    );
}

#[test]
fn a_closed_output_pipe_ends_the_program_quietly() {
    let d = setup();
    sign(&d, "1.0.0", &["r1.pem"], "b.tandem");
    for args in [
        &["inspect", "--json", "b.tandem"][..],
        &["inspect", "b.tandem"],
    ] {
        // The reader goes away before the program has read its bundle (`| head -c0`).
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-signer"))
            .args(args)
            .current_dir(d.path(""))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", d.describe(args, &out));
        assert_eq!(stderr(&out), "", "{}", d.describe(args, &out));
    }
}

#[test]
fn the_same_inputs_make_the_same_bundle_whatever_the_threads() {
    let d = setup();
    std::fs::write(d.path("img"), sparse_image(3_000_001, 5)).unwrap();
    let args = |threads: &'static str, out: &'static str| {
        sign_args(out, &["r1.pem", "r2.pem"], &["--threads", threads])
    };
    let sign_with = |threads: &'static str, out: &'static str, created: &[&'static str]| {
        let mut args = args(threads, out);
        args.extend(created);
        d.ok(&args);
        std::fs::read(d.path(out)).unwrap()
    };
    let created = ["--created", "2026-01-31T12:00:00Z"];
    let one = sign_with("1", "one.tandem", &created);
    assert_eq!(one, sign_with("3", "three.tandem", &created));
    assert_eq!(one, sign_with("8", "eight.tandem", &created));
    let json: serde_json::Value =
        serde_json::from_slice(&d.ok(&["inspect", "--json", "one.tandem"]).stdout).unwrap();
    assert_eq!(json["created"], "2026-01-31T12:00:00Z");
    // SOURCE_DATE_EPOCH (the same instant) gives the same bytes.
    let epoch = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-signer"))
        .args(args("2", "epoch.tandem"))
        .env("SOURCE_DATE_EPOCH", "1769860800")
        .current_dir(d.path(""))
        .output()
        .unwrap();
    assert!(epoch.status.success(), "{}", stderr(&epoch));
    assert_eq!(one, std::fs::read(d.path("epoch.tandem")).unwrap());
    let out = d.run(&sign_args(
        "bad.tandem",
        &["r1.pem"],
        &["--created", "2026-01-31 12:00:00Z"],
    ));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--created"), "{}", stderr(&out));
}

#[test]
fn extract_leaves_nothing_when_the_payload_is_corrupt() {
    let d = setup();
    sign(&d, "1.0.0", &["r1.pem", "r2.pem"], "b.tandem");
    let mut bytes = std::fs::read(d.path("b.tandem")).unwrap();
    let payload = BundleHead::read(&mut std::io::Cursor::new(&bytes), &Limits::default())
        .unwrap()
        .header()
        .payload_offset() as usize;
    bytes[payload + 10] ^= 0xff;
    std::fs::write(d.path("b.tandem"), &bytes).unwrap();
    let before = d.listing();
    let out = d.fails(&[
        "extract",
        "b.tandem",
        "--root",
        "root.json",
        "-o",
        "out.raw",
    ]);
    assert!(stderr(&out).contains("chunk"), "{}", stderr(&out));
    assert_eq!(
        d.listing(),
        before,
        "no output file and no temporary file left"
    );
    d.fails(&["verify", "b.tandem", "--root", "root.json"]);
}

#[test]
fn extract_with_wrong_root_writes_nothing() {
    let d = setup();
    sign(&d, "1.0.0", &["r1.pem", "r2.pem"], "b.tandem");
    d.ok(&["keygen", "--out", "other"]);
    d.ok(&[
        "root",
        "init",
        "-o",
        "other.json",
        "--root-key",
        "other.pub.pem",
        "--root-threshold",
        "1",
        "--release-key",
        "other.pub.pem",
        "--release-threshold",
        "1",
        "--sign-with",
        "other.pem",
    ]);
    d.fails(&[
        "extract",
        "b.tandem",
        "--root",
        "other.json",
        "-o",
        "out.raw",
    ]);
    assert!(!d.path("out.raw").exists());
}

#[test]
fn publish_versions_salt_and_immutable_bundles() {
    let d = setup();
    sign(&d, "1.0.0", &["r1.pem", "r2.pem"], "b.tandem");
    let args = [
        "publish",
        "--repo",
        "repo",
        "--channel",
        "stable",
        "b.tandem",
        "--key",
        "r1.pem",
        "--key",
        "r2.pem",
        "--root",
        "root.json",
        "--percent",
        "10",
    ];
    d.ok(&args);
    let read = |p: &str| {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(d.path(p)).unwrap()).unwrap()
    };
    let v1 = read("repo/channels/stable.json");
    assert_eq!(v1["signed"]["version"], 1);
    assert_eq!(v1["signed"]["release"]["bundle"], "bundles/os-1.0.0.tandem");
    assert_eq!(v1["signed"]["rollout"]["percent"], 10);
    assert!(d.path("repo/root.json").exists() && d.path("repo/1.root.json").exists());
    assert_eq!(
        std::fs::read(d.path("repo/bundles/os-1.0.0.tandem")).unwrap(),
        std::fs::read(d.path("b.tandem")).unwrap()
    );

    // Widening the wave: same bundle, version + 1, same salt.
    let mut wider = args.to_vec();
    *wider.last_mut().unwrap() = "50";
    d.ok(&wider);
    let v2 = read("repo/channels/stable.json");
    assert_eq!(v2["signed"]["version"], 2);
    assert_eq!(
        v2["signed"]["rollout"]["salt"],
        v1["signed"]["rollout"]["salt"]
    );

    // The published metadata verifies with the library against the root.
    let root = signer::verify::trust_root(
        &std::fs::read(d.path("root.json")).unwrap(),
        signer::time_util::now_utc(),
        &signer::Limits::default(),
    )
    .unwrap();
    let doc = std::fs::read(d.path("repo/channels/stable.json")).unwrap();
    let c = signer::verify::verify_channel(
        &root,
        &doc,
        "stable",
        2,
        signer::time_util::now_utc(),
        &signer::Limits::default(),
    )
    .unwrap();
    assert_eq!(c.rollout.percent, 50);

    // A different bundle under a published name is refused; the channel is unchanged.
    std::fs::write(d.path("img"), sparse_image(100_000, 99)).unwrap();
    sign(&d, "1.0.0", &["r1.pem", "r2.pem"], "c.tandem");
    let out = d.fails(&[
        "publish",
        "--repo",
        "repo",
        "--channel",
        "stable",
        "c.tandem",
        "--key",
        "r1.pem",
        "--key",
        "r2.pem",
    ]);
    assert!(stderr(&out).contains("never change"), "{}", stderr(&out));
    assert_eq!(read("repo/channels/stable.json"), v2);
}

#[test]
fn publish_refuses_a_channel_short_of_threshold() {
    let d = setup();
    sign(&d, "1.0.0", &["r1.pem", "r2.pem"], "b.tandem");
    let out = d.fails(&[
        "publish",
        "--repo",
        "repo",
        "--channel",
        "stable",
        "b.tandem",
        "--key",
        "r1.pem",
        "--root",
        "root.json",
    ]);
    assert!(
        stderr(&out).contains("threshold not met"),
        "{}",
        stderr(&out)
    );
    assert!(!d.path("repo/channels/stable.json").exists());
}

/// `publish --repo repo --channel CHANNEL BUNDLE --key K… EXTRA…`.
fn publish_args<'a>(
    channel: &'a str,
    bundle: &'a str,
    keys: &[&'a str],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["publish", "--repo", "repo", "--channel", channel, bundle];
    for k in keys {
        args.extend(["--key", k]);
    }
    args.extend(extra);
    args
}

#[test]
fn publish_below_threshold_is_refused_even_without_root() {
    let d = setup();
    sign(&d, "1.0.0", &["r1.pem", "r2.pem"], "b.tandem");
    // No --root and no root.json in the repository: nothing can check the threshold.
    let out = d.fails(&publish_args("stable", "b.tandem", &["r1.pem"], &[]));
    assert!(
        stderr(&out).contains("--allow-below-threshold"),
        "{}",
        stderr(&out)
    );
    assert!(!d.path("repo/channels/stable.json").exists());
    // The repository's root.json is the default root: one of two release keys is refused.
    std::fs::create_dir_all(d.path("repo")).unwrap();
    std::fs::copy(d.path("root.json"), d.path("repo/root.json")).unwrap();
    let out = d.fails(&publish_args("stable", "b.tandem", &["r1.pem"], &[]));
    assert!(
        stderr(&out).contains("threshold not met"),
        "{}",
        stderr(&out)
    );
    assert!(!d.path("repo/channels/stable.json").exists());
    // Asked for explicitly, it is written, with a warning.
    let out = d.ok(&publish_args(
        "stable",
        "b.tandem",
        &["r1.pem"],
        &["--allow-below-threshold"],
    ));
    let err = stderr(&out);
    assert!(err.contains("warning: published below threshold"), "{err}");
    assert!(d.path("repo/channels/stable.json").exists());
    // Two keys: checked against the repository's root, no warning.
    let out = d.ok(&publish_args(
        "stable",
        "b.tandem",
        &["r1.pem", "r2.pem"],
        &[],
    ));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn publish_refuses_a_downgrade_unless_allowed() {
    let d = setup();
    sign(&d, "2.0.0", &["r1.pem", "r2.pem"], "v2.tandem");
    sign(&d, "1.0.0", &["r1.pem", "r2.pem"], "v1.tandem");
    let root = ["--root", "root.json"];
    d.ok(&publish_args(
        "stable",
        "v2.tandem",
        &["r1.pem", "r2.pem"],
        &root,
    ));
    let out = d.fails(&publish_args(
        "stable",
        "v1.tandem",
        &["r1.pem", "r2.pem"],
        &root,
    ));
    let err = stderr(&out);
    assert!(
        err.contains("downgrade") && err.contains("--allow-downgrade"),
        "{err}"
    );
    let read = || std::fs::read(d.path("repo/channels/stable.json")).unwrap();
    let v2 = read();
    assert!(!d.path("repo/bundles/os-1.0.0.tandem").exists());
    // Re-publishing the same release (to widen a rollout) is no downgrade.
    d.ok(&publish_args(
        "stable",
        "v2.tandem",
        &["r1.pem", "r2.pem"],
        &root,
    ));
    let mut allowed = root.to_vec();
    allowed.push("--allow-downgrade");
    d.ok(&publish_args(
        "stable",
        "v1.tandem",
        &["r1.pem", "r2.pem"],
        &allowed,
    ));
    assert_ne!(read(), v2);
    let json: serde_json::Value = serde_json::from_slice(&read()).unwrap();
    assert_eq!(json["signed"]["release"]["version"], "1.0.0");
}

/// `root2.json`: root 2 drops r1 and r2; only r3 and a new r4 release (2 of 2).
fn rotate_to_r3_r4(d: &Dir) {
    d.ok(&["keygen", "--out", "r4"]);
    d.ok(&[
        "root",
        "rotate",
        "--trusted",
        "root.json",
        "-o",
        "root2.json",
        "--root-key",
        "root.pub.pem",
        "--root-threshold",
        "1",
        "--release-key",
        "r3.pub.pem",
        "--release-key",
        "r4.pub.pem",
        "--release-threshold",
        "2",
        "--sign-with",
        "root.pem",
    ]);
}

#[test]
fn publishing_with_a_root_older_than_the_repositorys_is_refused() {
    let d = setup();
    rotate_to_r3_r4(&d);
    sign(&d, "1.0.0", &["r3.pem", "r4.pem"], "v1.tandem");
    let root2 = ["--root", "root2.json"];
    d.ok(&publish_args(
        "stable",
        "v1.tandem",
        &["r3.pem", "r4.pem"],
        &root2,
    ));
    let read = |p: &str| std::fs::read(d.path(p)).unwrap();
    let (channel, root) = (read("repo/channels/stable.json"), read("repo/root.json"));
    // The revoked r1 and r2 meet root 1's threshold, which the repository has left.
    sign(&d, "1.1.0", &["r1.pem", "r2.pem"], "old.tandem");
    let old = ["--root", "root.json"];
    let out = d.fails(&publish_args(
        "stable",
        "old.tandem",
        &["r1.pem", "r2.pem"],
        &old,
    ));
    let err = stderr(&out);
    assert!(
        err.contains("root.json is root version 1, older than the repository's")
            && err.contains("(root version 2)"),
        "{err}"
    );
    assert!(!stdout(&out).contains("root version 1"), "{}", stdout(&out));
    assert_eq!(read("repo/channels/stable.json"), channel);
    assert_eq!(read("repo/root.json"), root);
    assert!(!d.path("repo/bundles/os-1.1.0.tandem").exists());
}

/// Channels beta, edge and stable published under root 1 (r1, r2), then stable again under
/// root 2 (r3, r4): beta and edge are left signed by keys root 2 dropped. The output of that
/// last publish.
fn repo_with_stale_channels(d: &Dir) -> Output {
    sign(d, "1.0.0", &["r1.pem", "r2.pem"], "v1.tandem");
    let root = ["--root", "root.json"];
    for channel in ["beta", "edge", "stable"] {
        d.ok(&publish_args(
            channel,
            "v1.tandem",
            &["r1.pem", "r2.pem"],
            &root,
        ));
    }
    rotate_to_r3_r4(d);
    sign(d, "2.0.0", &["r3.pem", "r4.pem"], "v2.tandem");
    let root2 = ["--root", "root2.json"];
    d.ok(&publish_args(
        "stable",
        "v2.tandem",
        &["r3.pem", "r4.pem"],
        &root2,
    ))
}

#[test]
fn log_fails_when_nodes_refuse_a_channel_and_names_rotated_out_signers() {
    let d = setup();
    repo_with_stale_channels(&d);
    let r1 = read_public_key(&d.path("r1.pub.pem"))
        .unwrap()
        .id()
        .to_hex();
    // The root chain is walked from root 1 to the repository's root 2.
    let log = ["log", "--repo", "repo", "--root", "root.json"];
    let out = d.fails(&log);
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(err.contains("nodes refuse channel(s) beta, edge"), "{err}");
    assert!(
        text.contains("channel stable version 2") && text.contains("nodes accept it"),
        "{text}"
    );
    let rotated = format!(
        "{r1} (valid, by a key root version 2 no longer trusts (listed in root version 1))"
    );
    assert!(text.contains(&rotated), "{text}");
    assert!(!text.contains("INVALID"), "{text}");
    let mut json = log.to_vec();
    json.push("--json");
    let out = d.fails(&json);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["channels"][0]["signers"][0]["former_root"], 1, "{v}");
    // Only the accepted channel: exit 0.
    d.ok(&[
        "log",
        "--repo",
        "repo",
        "--root",
        "root.json",
        "--channel",
        "stable",
    ]);
    // `inspect` has only the root it is given: the signature is not called invalid.
    let shown = stdout(&d.ok(&["inspect", "v1.tandem", "--root", "root2.json"]));
    let unchecked =
        format!("{r1} (untrusted: a key root version 2 does not list, signature not checked)");
    assert!(
        shown.contains(&unchecked) && !shown.contains("INVALID"),
        "{shown}"
    );
}

#[test]
fn publishing_under_a_new_root_lists_the_channels_it_would_refuse() {
    let d = setup();
    let out = repo_with_stale_channels(&d);
    let err = stderr(&out);
    for stale in ["beta", "edge"] {
        assert!(
            err.contains(&format!("warning: channel `{stale}` will be refused")),
            "{err}"
        );
    }
    assert!(!err.contains("`stable`"), "{err}");
    assert!(err.contains("threshold not met"), "{err}");
}

#[test]
fn root_rotation_needs_old_and_new_keys() {
    let d = setup();
    d.ok(&["keygen", "--out", "root2"]);
    let base = [
        "root",
        "rotate",
        "--trusted",
        "root.json",
        "-o",
        "2.root.json",
        "--root-key",
        "root2.pub.pem",
        "--root-threshold",
        "1",
        "--release-key",
        "r1.pub.pem",
        "--release-key",
        "r2.pub.pem",
        "--release-threshold",
        "2",
    ];
    let mut only_new = base.to_vec();
    only_new.extend(["--sign-with", "root2.pem"]);
    let out = d.fails(&only_new);
    assert!(
        stderr(&out).contains("threshold not met"),
        "{}",
        stderr(&out)
    );
    assert!(!d.path("2.root.json").exists());

    // Partial, then completed by a second signer.
    let mut partial = only_new.clone();
    partial.push("--allow-partial");
    d.ok(&partial);
    d.fails(&["root", "verify", "2.root.json", "--trusted", "root.json"]);
    d.ok(&[
        "root",
        "sign",
        "2.root.json",
        "--key",
        "root.pem",
        "--trusted",
        "root.json",
    ]);
    let ok = stdout(&d.ok(&["root", "verify", "2.root.json", "--trusted", "root.json"]));
    assert!(ok.contains("valid root version 2"), "{ok}");
}

#[test]
fn every_command_has_help() {
    let d = Dir::new();
    for cmd in [
        vec!["--help"],
        vec!["keygen", "--help"],
        vec!["root", "--help"],
        vec!["root", "init", "--help"],
        vec!["root", "rotate", "--help"],
        vec!["root", "sign", "--help"],
        vec!["root", "verify", "--help"],
        vec!["sign", "--help"],
        vec!["add-signature", "--help"],
        vec!["request", "--help"],
        vec!["sign-request", "--help"],
        vec!["verify", "--help"],
        vec!["inspect", "--help"],
        vec!["extract", "--help"],
        vec!["publish", "--help"],
    ] {
        let out = d.ok(&cmd);
        assert!(stdout(&out).contains("Usage"), "{}", d.describe(&cmd, &out));
    }
}

#[test]
fn sign_help_names_the_format_version_the_signer_writes() {
    let d = setup();
    let help = stdout(&d.ok(&["sign", "--help"]));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!help.contains("format version 2"), "{help}");
    assert!(help.contains("format version 3"), "{help}");
    std::fs::write(d.path("uki.efi"), uki_image(b"ID=acme\n", b"quiet\n")).unwrap();
    d.ok(&sign_args("u.tandem", &["r1.pem"], &["--uki", "uki.efi"]));
    let json: serde_json::Value =
        serde_json::from_slice(&d.ok(&["inspect", "--json", "u.tandem"]).stdout).unwrap();
    assert_eq!(json["format_version"], 3, "{json}");
}

#[test]
fn the_signer_pads_as_format_9_2_says() {
    let d = setup();
    d.ok(&sign_args("b.tandem", &["r1.pem"], &[]));
    let b = std::fs::read(d.path("b.tandem")).unwrap();
    let le = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let (m, s) = (le(8), le(12));
    assert_eq!(s, 4096);
    let region = std::str::from_utf8(&b[24..24 + m]).unwrap();
    let json = region.trim_end_matches(' ');
    let doc: serde_json::Value = serde_json::from_str(json).unwrap();
    let digits = |v: &serde_json::Value| v.as_u64().unwrap().to_string().len();
    let tree = &doc["index"]["tree"];
    let spaces = 20 - digits(&doc["payload_size"]) + 10 - digits(&doc["index"]["size"]) + 10
        - digits(&tree["lengths"])
        + 10
        - digits(&tree["table"]);
    assert_eq!(m, json.len() + spaces, "{json}");
}

#[test]
fn mistakes_give_an_error_that_names_the_file_and_a_fix() {
    let d = setup();
    let out = d.fails(&sign_args("x.tandem", &["r1.pub.pem"], &[]));
    let err = stderr(&out);
    assert!(err.contains("r1.pub.pem") && err.contains("hint:"), "{err}");
    let mut odd_chunks = sign_args("x.tandem", &["r1.pem"], &[]);
    let size = odd_chunks.iter().position(|a| *a == "64KiB").unwrap();
    odd_chunks[size] = "3000";
    let out = d.fails(&odd_chunks);
    assert!(stderr(&out).contains("power of two"), "{}", stderr(&out));
    assert!(!d.path("x.tandem").exists());
    let out = d.fails(&["verify", "img", "--root", "root.json"]);
    assert!(
        stderr(&out).contains("not a tandem bundle"),
        "{}",
        stderr(&out)
    );
    let out = d.fails(&["verify", "missing.tandem", "--root", "root.json"]);
    assert!(stderr(&out).contains("missing.tandem"), "{}", stderr(&out));
}

/// A 70 000-byte x86 kernel image (sparse filler) whose setup header points at `banner`.
fn bzimage(banner: &[u8]) -> Vec<u8> {
    let mut b = sparse_image(70_000, 22);
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x20E..0x210].copy_from_slice(&0x3000u16.to_le_bytes());
    b[0x3200..0x3200 + banner.len()].copy_from_slice(banner);
    b
}

fn sign_with_assets(d: &Dir, extra: &[&str]) -> Output {
    d.run(&sign_version_args(
        "2.0.0",
        "3",
        "a.tandem",
        &["r1.pem", "r2.pem"],
        extra,
    ))
}

const CMDLINE: &str = "console=ttyS0,115200 rd.marker=\"v2\" quiet";

#[test]
fn boot_assets_are_signed_listed_verified_and_extracted() {
    let d = setup();
    let files = [
        (
            "vmlinuz",
            bzimage(b"6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1\0"),
        ),
        ("initrd.img", sparse_image(5_000, 23)),
        ("esp.img", vec![0; 65_536]),
    ];
    for (name, bytes) in &files {
        std::fs::write(d.path(name), bytes).unwrap();
    }
    let flags = [
        "--kernel",
        "vmlinuz",
        "--initrd",
        "initrd.img",
        "--partition-image",
        "esp=esp.img",
        "--cmdline",
        CMDLINE,
    ];
    let out = sign_with_assets(&d, &flags);
    assert!(out.status.success(), "{}", d.describe(&flags, &out));
    assert!(stderr(&out).contains("4 assets"), "{}", stderr(&out));
    let expected: [(&str, &str, &[u8], String); 4] = [
        (
            "kernel",
            "kernel",
            &files[0].1,
            ", kernel version 6.1.0-57-cloud-amd64".into(),
        ),
        ("initrd", "initrd", &files[1].1, String::new()),
        ("esp", "image", &files[2].1, String::new()),
        (
            "cmdline",
            "cmdline",
            CMDLINE.as_bytes(),
            format!(", cmdline \"{CMDLINE}\""),
        ),
    ];

    let text = stdout(&d.ok(&["inspect", "a.tandem"]));
    for (name, kind, bytes, detail) in &expected {
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
        let line = format!(
            "asset            {name} ({kind}): {} bytes, sha256 {sha}{detail}\n",
            bytes.len()
        );
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&d.ok(&["inspect", "--json", "a.tandem"]))).unwrap();
    assert_eq!(json["format_version"], 3);
    let names: Vec<&str> = expected.iter().map(|e| e.0).collect();
    assert_eq!(json["assets"].as_array().unwrap().len(), names.len());
    for (asset, name) in json["assets"].as_array().unwrap().iter().zip(&names) {
        assert_eq!(asset["name"], *name);
        assert_eq!(asset["osrel_version_id"], serde_json::Value::Null);
    }
    assert_eq!(json["assets"][0]["kernel_version"], "6.1.0-57-cloud-amd64");
    assert_eq!(json["assets"][0]["size"], 70_000);
    assert_eq!(json["assets"][0]["cmdline"], serde_json::Value::Null);
    assert_eq!(json["assets"][2]["kind"], "image");
    assert_eq!(json["assets"][3]["kind"], "cmdline");
    assert_eq!(json["assets"][3]["cmdline"], CMDLINE);
    assert_eq!(json["assets"][3]["kernel_version"], serde_json::Value::Null);

    let verified = stdout(&d.ok(&["verify", "a.tandem", "--root", "root.json"]));
    assert!(verified.contains("4 asset sha256 verified"), "{verified}");
    for (asset, _, bytes, _) in &expected {
        let out = format!("{asset}.out");
        d.ok(&[
            "extract",
            "a.tandem",
            "--root",
            "root.json",
            "--asset",
            asset,
            "-o",
            &out,
        ]);
        assert_eq!(&std::fs::read(d.path(&out)).unwrap(), bytes, "{asset}");
    }
    d.ok(&[
        "extract",
        "a.tandem",
        "--root",
        "root.json",
        "-o",
        "root.img",
    ]);
    assert_eq!(
        std::fs::read(d.path("root.img")).unwrap(),
        std::fs::read(d.path("img")).unwrap()
    );
}

#[test]
fn inspect_shows_a_ukis_version_and_command_line() {
    let d = setup();
    let uki = uki_image(
        b"ID=acme\nVERSION_ID=\"42.1\"\n",
        format!("{CMDLINE}\n\0").as_bytes(),
    );
    std::fs::write(d.path("uki.efi"), &uki).unwrap();
    let out = sign_with_assets(&d, &["--uki", "uki.efi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&d.ok(&["inspect", "a.tandem"]));
    let detail = format!(", .osrel VERSION_ID 42.1, cmdline \"{CMDLINE}\"\n");
    assert!(text.contains(&detail), "{detail:?} not in:\n{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&d.ok(&["inspect", "--json", "a.tandem"]))).unwrap();
    let asset = &json["assets"][0];
    assert_eq!(asset["kind"], "uki");
    assert_eq!(asset["osrel_version_id"], "42.1");
    assert_eq!(asset["cmdline"], CMDLINE);
    assert_eq!(asset["kernel_version"], serde_json::Value::Null);
}

#[test]
fn a_corrupt_asset_fails_verify_and_extract_leaves_nothing() {
    let d = setup();
    std::fs::write(d.path("uki.efi"), uki_image(b"ID=acme\n", b"quiet\n")).unwrap();
    let out = sign_with_assets(&d, &["--uki", "uki.efi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut bytes = std::fs::read(d.path("a.tandem")).unwrap();
    let head = BundleHead::read(&mut std::io::Cursor::new(&bytes), &Limits::default()).unwrap();
    let manifest = head.manifest_unverified(&Limits::default()).unwrap();
    let uki = manifest.asset("uki").unwrap();
    let frame = manifest.chunk_file_range(&uki.chunks()[0]).unwrap();
    bytes[frame.end as usize - 3] ^= 0x55;
    std::fs::write(d.path("a.tandem"), bytes).unwrap();
    let out = d.fails(&["verify", "a.tandem", "--root", "root.json"]);
    assert!(
        stderr(&out).contains("asset `uki` chunk"),
        "{}",
        stderr(&out)
    );
    let args = [
        "extract",
        "a.tandem",
        "--root",
        "root.json",
        "--asset",
        "uki",
        "-o",
        "uki.out",
    ];
    let out = d.fails(&args);
    assert!(
        stderr(&out).contains("nothing was written"),
        "{}",
        stderr(&out)
    );
    assert!(
        !d.listing().iter().any(|f| f.starts_with("uki.out")),
        "{:?}",
        d.listing()
    );
    let out = d.fails(&[
        "extract",
        "a.tandem",
        "--root",
        "root.json",
        "--asset",
        "dtb",
        "-o",
        "x",
    ]);
    assert!(
        stderr(&out).contains("no asset named `dtb`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn asset_flag_mistakes_are_refused() {
    let d = setup();
    std::fs::write(d.path("k"), uki_image(b"ID=acme\n", b"quiet\n")).unwrap();
    std::fs::write(d.path("vmlinuz"), b"a bare kernel").unwrap();
    // --kernel without --initrd, or a UKI with either, is a command-line mistake (exit 2).
    for flags in [
        &["--kernel", "k"][..],
        &["--uki", "k", "--kernel", "k", "--initrd", "k"],
        &["--uki", "k", "--initrd", "k"],
    ] {
        let out = sign_with_assets(&d, flags);
        assert_eq!(out.status.code(), Some(2), "{}", d.describe(flags, &out));
        assert!(!d.path("a.tandem").exists());
    }
    let long = "a".repeat(2049);
    for (flags, needle) in [
        (&["--partition-image", "esp"][..], "expected NAME=FILE"),
        (&["--partition-image", "../x=k"][..], "asset name"),
        (
            &["--partition-image", "uki=k", "--uki", "k"][..],
            "used twice",
        ),
        (
            &["--partition-image", "cmdline=k", "--cmdline", "quiet"][..],
            "used twice",
        ),
        (&["--uki", "missing.efi"][..], "missing.efi"),
        (
            &["--uki", "vmlinuz"][..],
            "--uki vmlinuz: not a unified kernel image (no PE .linux section)",
        ),
        (
            &["--cmdline", "quiet\ninit=/bin/sh"][..],
            "--cmdline: the kernel command line has byte 0x0a at offset 5",
        ),
        (
            &["--cmdline", ""][..],
            "--cmdline: the kernel command line is empty",
        ),
        (&["--cmdline", "quiet "][..], "starts or ends with a space"),
        (
            &["--cmdline", long.as_str()][..],
            "2049 bytes, more than 2048",
        ),
    ] {
        let out = sign_with_assets(&d, flags);
        assert_eq!(out.status.code(), Some(1), "{}", d.describe(flags, &out));
        assert!(
            stderr(&out).contains(needle),
            "{needle:?} not in {}",
            stderr(&out)
        );
        assert!(!d.path("a.tandem").exists());
    }
}
