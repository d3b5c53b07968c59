//! `tandem-updater status` on a disk with a further partition pair (`verity-a`/`verity-b`),
//! through the binaries: each partition of the pair, the booted slot's marked, with the
//! release and image asset the agent wrote into it, or "unknown" for what it never wrote.

use serde_json::Value;
use tandem_tests::{image, sha256_hex};

use super::cli::Sandbox;

/// Keys, root, v1 in slot A of a disk with a 1 MiB `verity` pair, and bundles v2 and v3
/// carrying their own verity images (`verity2.img`, `verity3.img`).
fn node() -> Sandbox {
    let s = Sandbox::new();
    s.release_v2();
    s.run(
        "tandem-disk",
        &[
            "create",
            "--size",
            "12MiB",
            "--slot-size",
            "2MiB",
            "--esp",
            "1MiB",
            "--state",
            "1MiB",
            "--pair",
            "verity=1MiB",
            "disk.img",
        ],
        0,
    );
    s.run("tandem-disk", &["write-slot", "disk.img", "a", "v1.raw"], 0);
    std::fs::write(s.path("healthy"), "").unwrap();
    for (version, seed) in [("2.0.0", 2), ("3.0.0", 3)] {
        let verity = format!("verity{seed}.img");
        std::fs::write(s.path(&verity), verity_image(seed)).unwrap();
        let raw = format!("v{seed}.raw");
        std::fs::write(s.path(&raw), image(tandem_tests::IMAGE_LEN, seed)).unwrap();
        let image_arg = format!("verity={verity}");
        let extra = ["--partition-image", image_arg.as_str()];
        s.sign(&raw, version, "2", &extra, &format!("v{seed}p.tandem"));
    }
    s
}

fn verity_image(seed: u64) -> Vec<u8> {
    image(300 << 10, 100 + seed)
}

fn status(s: &Sandbox, config: &str) -> (String, Value) {
    let text = s.stdout("tandem-updater", &["--config", config, "status"]);
    let json = s.stdout("tandem-updater", &["--config", config, "status", "--json"]);
    (text, serde_json::from_str(&json).unwrap())
}

/// The human line `status` prints for what version `seed` wrote into a partition.
fn written_line(partition: &str, slot_and_boot: &str, version: &str, seed: u64) -> String {
    let sha = sha256_hex(&verity_image(seed));
    format!(
        "  {partition} ({slot_and_boot}): acme-edge {version}, asset verity, {} bytes, sha256 {}\n",
        300 << 10,
        &sha[..12]
    )
}

/// `status --json`'s pair `verity`, checked against what each partition should hold:
/// `None` for nothing written, else the version and image seed.
fn check_json(json: &Value, booted: &str, holds: [Option<(&str, u64)>; 2]) {
    let pairs = json["partition_pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 1, "only the verity pair besides root: {json}");
    assert_eq!(pairs[0]["name"], "verity", "{json}");
    for (index, (slot, wanted)) in ["a", "b"].into_iter().zip(holds).enumerate() {
        let part = &pairs[0]["partitions"][index];
        assert_eq!(part["slot"], slot, "{json}");
        assert_eq!(part["partition"], format!("verity-{slot}"), "{json}");
        assert_eq!(part["size"], 1 << 20, "{json}");
        assert_eq!(part["booted"], slot == booted, "{json}");
        match wanted {
            None => assert!(part["written"].is_null(), "{json}"),
            Some((version, seed)) => {
                let written = &part["written"];
                assert_eq!(written["version"], version, "{json}");
                assert_eq!(written["asset"], "verity", "{json}");
                assert_eq!(written["size"], 300 << 10, "{json}");
                assert_eq!(written["sha256"], sha256_hex(&verity_image(seed)), "{json}");
                assert_eq!(written["complete"], true, "{json}");
            }
        }
    }
}

/// Install v2 (with a verity image) from A, commit it in B, then v3 back into A: `status`
/// and `status --json` show both partitions of the pair, which one the booted slot owns, and
/// what each holds; the factory's partition reads "unknown (not written by the updater)".
#[test]
fn status_shows_each_partition_of_a_pair_and_what_the_agent_wrote_there() {
    let s = node();
    const UNKNOWN: &str = "unknown (not written by the updater)";
    let on_a = s.config("a", r#"boot = "gpt""#);
    let (text, json) = status(&s, &on_a);
    assert!(
        text.contains(&format!(
            "pair verity:\n  verity-a (slot a, booted): {UNKNOWN}\n  verity-b (slot b): {UNKNOWN}\n"
        )),
        "{text}"
    );
    check_json(&json, "a", [None, None]);

    s.run(
        "tandem-updater",
        &["--config", &on_a, "install", "v2p.tandem"],
        0,
    );
    let (text, json) = status(&s, &on_a);
    assert!(
        text.contains(&written_line("verity-b", "slot b", "2.0.0", 2)),
        "{text}"
    );
    assert!(
        text.contains(&format!("  verity-a (slot a, booted): {UNKNOWN}\n")),
        "{text}"
    );
    check_json(&json, "a", [None, Some(("2.0.0", 2))]);

    let on_b = s.config("b", r#"boot = "gpt""#);
    let out = s.stdout("tandem-updater", &["--config", &on_b, "boot-check"]);
    assert!(out.contains("committed"), "{out}");
    let (text, json) = status(&s, &on_b);
    assert!(
        text.contains(&written_line("verity-b", "slot b, booted", "2.0.0", 2)),
        "{text}"
    );
    assert!(
        text.contains(&format!("  verity-a (slot a): {UNKNOWN}\n")),
        "{text}"
    );
    check_json(&json, "b", [None, Some(("2.0.0", 2))]);

    // v3 goes to A; B's partition keeps the record of what v2 wrote there.
    s.run(
        "tandem-updater",
        &["--config", &on_b, "install", "v3p.tandem"],
        0,
    );
    let (text, json) = status(&s, &on_b);
    assert!(
        text.contains(&written_line("verity-a", "slot a", "3.0.0", 3)),
        "{text}"
    );
    assert!(
        text.contains(&written_line("verity-b", "slot b, booted", "2.0.0", 2)),
        "{text}"
    );
    check_json(&json, "b", [Some(("3.0.0", 3)), Some(("2.0.0", 2))]);
}

/// A state file written before the partition records (no `partitions` key) still loads:
/// `status` works and calls the pair's partitions unknown.
#[test]
fn status_reads_a_state_file_without_partition_records() {
    let s = node();
    let on_a = s.config("a", r#"boot = "gpt""#);
    s.run(
        "tandem-updater",
        &["--config", &on_a, "install", "v2p.tandem"],
        0,
    );
    let path = s.path("state/state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let removed = state.as_object_mut().unwrap().remove("partitions");
    assert!(
        removed.is_some(),
        "the install recorded the partition: {state}"
    );
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    let (text, json) = status(&s, &on_a);
    assert!(
        text.contains("  verity-b (slot b): unknown (not written by the updater)\n"),
        "{text}"
    );
    assert!(text.contains("slot b: acme-edge 2.0.0"), "{text}");
    check_json(&json, "a", [None, None]);
}

/// An install whose partition image fails verification (its last frame damaged) leaves the
/// partition "partly written"; the intact bundle then completes it.
#[test]
fn status_calls_a_partition_image_cut_short_partly_written() {
    let s = node();
    let on_a = s.config("a", r#"boot = "gpt""#);
    let bundle = s.path("v2p.tandem");
    // The verity image's frames are the last bytes of the payload.
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[tandem_tests::payload_end(&bundle) - 10] ^= 0x55;
    std::fs::write(s.path("damaged.tandem"), bytes).unwrap();
    let out = s.run(
        "tandem-updater",
        &["--config", &on_a, "install", "damaged.tandem"],
        3,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("verity"), "{stderr}");

    let (text, json) = status(&s, &on_a);
    let sha = sha256_hex(&verity_image(2));
    assert!(
        text.contains(&format!(
            "  verity-b (slot b): acme-edge 2.0.0 partly written, asset verity, {} bytes, \
             sha256 {}\n",
            300 << 10,
            &sha[..12]
        )),
        "{text}"
    );
    let written = &json["partition_pairs"][0]["partitions"][1]["written"];
    assert_eq!(written["version"], "2.0.0", "{json}");
    assert_eq!(written["complete"], false, "{json}");

    s.run(
        "tandem-updater",
        &["--config", &on_a, "install", "v2p.tandem"],
        0,
    );
    let (text, json) = status(&s, &on_a);
    assert!(
        text.contains(&written_line("verity-b", "slot b", "2.0.0", 2)),
        "{text}"
    );
    check_json(&json, "a", [None, Some(("2.0.0", 2))]);
}
