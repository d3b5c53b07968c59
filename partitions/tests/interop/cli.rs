//! `tandem-disk` end to end: create, write-slot, show, boot, set, mark, init-boot.

use serde_json::Value;

use crate::util::*;

fn show_json(t: &Tmp, extra: &[&str]) -> Value {
    let out = t.run(
        tandem_disk()
            .args(["show", "disk.img", "--json"])
            .args(extra),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn boot(t: &Tmp, extra: &[&str]) -> std::process::Output {
    t.run_any(tandem_disk().args(["boot", "disk.img"]).args(extra))
}

#[test]
fn provision_then_trial_then_fallback() {
    let t = Tmp::new();
    t.run(tandem_disk().args([
        "create",
        "disk.img",
        "--size",
        "96MiB",
        "--slot-size",
        "32MiB",
        "--esp",
        "8MiB",
        "--state",
        "8MiB",
    ]));
    let v = show_json(&t, &[]);
    assert_eq!(
        v["next_boot"],
        Value::Null,
        "factory state: nothing bootable"
    );
    let out = boot(&t, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing bootable") && err.contains("hint"),
        "{err}"
    );

    // An image with data, a hole and a tail.
    let mut raw = vec![0u8; 3 * MIB as usize + 100];
    raw[..MIB as usize].fill(0xAB);
    raw[2 * MIB as usize..].fill(0xCD);
    std::fs::write(t.path("raw"), &raw).unwrap();
    t.run(tandem_disk().args(["write-slot", "disk.img", "a", "raw"]));
    let v = show_json(&t, &[]);
    let a = &v["slots"][0];
    assert_eq!(a["state"]["priority"], 15);
    assert_eq!(a["state"]["successful"], true);
    assert_eq!(v["next_boot"], "a");
    let img = std::fs::read(t.path("disk.img")).unwrap();
    let off = a["offset"].as_u64().unwrap() as usize;
    assert_eq!(&img[off..off + raw.len()], &raw[..], "slot content");
    assert!(img[off + raw.len()..off + 32 * MIB as usize]
        .iter()
        .all(|&b| b == 0));

    let out = boot(&t, &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a\n",
        "the letter alone"
    );

    t.run(tandem_disk().args(["mark", "disk.img", "b", "trial", "--tries", "2"]));
    let seq: Vec<String> = (0..4)
        .map(|_| {
            String::from_utf8_lossy(&t.run(tandem_disk().args(["boot", "disk.img"])).stdout)
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(seq, ["b", "b", "a", "a"]);
    let v = show_json(&t, &[]);
    assert_eq!(v["slots"][1]["state"]["tries_left"], 0);
    assert_eq!(
        v["slots"][0]["state"]["priority"], 14,
        "lowered below the trial"
    );

    t.run(tandem_disk().args([
        "set",
        "disk.img",
        "b",
        "--priority",
        "15",
        "--tries",
        "0",
        "--successful",
        "true",
    ]));
    assert_eq!(String::from_utf8_lossy(&boot(&t, &[]).stdout), "b\n");
    let out = t.run_any(tandem_disk().args(["set", "disk.img", "b", "--priority", "16"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("priority must be 0..=15"));
}

#[test]
fn write_slot_refuses_an_image_larger_than_the_slot() {
    let t = Tmp::new();
    t.run(tandem_disk().args([
        "create",
        "disk.img",
        "--size",
        "64MiB",
        "--slot-size",
        "8MiB",
        "--esp",
        "8MiB",
        "--state",
        "8MiB",
    ]));
    std::fs::write(t.path("big"), vec![1u8; 8 * MIB as usize + 1]).unwrap();
    let before = std::fs::read(t.path("disk.img")).unwrap();
    let out = t.run_any(tandem_disk().args(["write-slot", "disk.img", "b", "big"]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        t.report(&tandem_disk(), &out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit in slot root-b"), "{err}");
    assert_eq!(
        std::fs::read(t.path("disk.img")).unwrap(),
        before,
        "nothing written"
    );
}

#[test]
fn grub_and_systemd_boot_backends_from_the_cli() {
    let t = Tmp::new();
    let out = t.run_any(tandem_disk().args(["create", "disk.img", "--size", "64MiB"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("cannot hold"),
        "default ESP and state are 64 MiB each: {err}"
    );
    assert!(!t.path("disk.img").exists(), "nothing created");
    std::fs::create_dir(t.path("esp")).unwrap();
    for (disk, backend) in [
        ("grub.img", ["--backend", "grub", "--grubenv", "grubenv"]),
        ("sd.img", ["--backend", "systemd-boot", "--esp", "esp"]),
    ] {
        t.run(tandem_disk().args(["create", disk, "--size", "256MiB"]));
        let run = |command: &str, rest: &[&str]| {
            t.run(
                tandem_disk()
                    .arg(command)
                    .arg(disk)
                    .args(rest)
                    .args(backend),
            )
        };
        let out = t.run_any(tandem_disk().args(["boot", disk]).args(backend));
        assert_eq!(out.status.code(), Some(1), "not initialised yet");
        run("init-boot", &[]);
        run("mark", &["a", "trial", "--tries", "1"]);
        run("mark", &["a", "good"]);
        run("mark", &["b", "trial", "--tries", "1"]);
        let seq: Vec<String> = (0..3)
            .map(|_| {
                let out = t.run(tandem_disk().args(["boot", disk]).args(backend));
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
            .collect();
        assert_eq!(seq, ["b", "a", "a"], "{backend:?}");
        let out = t.run(tandem_disk().args(["show", disk, "--json"]).args(backend));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["next_boot"], "a");
        assert_eq!(v["slots"][1]["state"]["tries_left"], 0);
        // The path flag alone is enough: the disk says which backend it was set up for.
        let out = t.run(tandem_disk().args(["show", disk, backend[2], backend[3]]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("boot backend: {}", backend[1])),
            "{text}"
        );
    }
    assert!(t.path("esp/loader/entries/tandem-b+0-1.conf").is_file());
    assert_eq!(std::fs::metadata(t.path("grubenv")).unwrap().len(), 1024);
    let out = t.run_any(tandem_disk().args(["boot", "grub.img", "--backend", "grub"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grubenv"));
}

/// A disk set up for grub is never silently given GPT (or systemd-boot)
/// boot state, and `show`/`boot` without flags say which flags the disk needs instead of
/// "nothing bootable".
#[test]
fn a_disk_set_up_for_one_backend_refuses_the_others() {
    let t = Tmp::new();
    t.run(tandem_disk().args(["create", "disk.img", "--size", "256MiB"]));
    std::fs::write(t.path("raw"), vec![0xAB; MIB as usize]).unwrap();
    t.run(tandem_disk().args([
        "init-boot",
        "disk.img",
        "--backend",
        "grub",
        "--grubenv",
        "grubenv",
    ]));
    let before = std::fs::read(t.path("disk.img")).unwrap();
    let refused = "kept by the grub backend";
    for (args, want) in [
        (
            &["write-slot", "disk.img", "a", "raw"][..],
            "set up for the grub backend",
        ),
        (
            &["write-slot", "disk.img", "a", "raw", "--backend", "gpt"],
            refused,
        ),
        (
            &["mark", "disk.img", "a", "good", "--backend", "gpt"],
            refused,
        ),
        (
            &[
                "set",
                "disk.img",
                "a",
                "--priority",
                "3",
                "--backend",
                "gpt",
            ],
            refused,
        ),
        (
            &[
                "boot",
                "disk.img",
                "--backend",
                "systemd-boot",
                "--esp",
                ".",
            ],
            refused,
        ),
    ] {
        let out = t.run_any(tandem_disk().args(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        if let Some(asked) = args.iter().position(|a| *a == "--backend") {
            assert!(
                err.contains(&format!("not by {}", args[asked + 1])),
                "{err}"
            );
        }
        assert!(
            err.contains("--grubenv"),
            "{args:?}: the hint names the flag: {err}"
        );
    }
    assert_eq!(
        std::fs::read(t.path("disk.img")).unwrap(),
        before,
        "nothing written"
    );
    for command in ["show", "boot"] {
        let out = t.run_any(tandem_disk().args([command, "disk.img"]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        assert!(
            err.contains("set up for the grub backend") && err.contains("--grubenv"),
            "{command}: {err}"
        );
        assert!(!err.contains("nothing bootable"), "{command}: {err}");
    }
    t.run(tandem_disk().args(["write-slot", "disk.img", "a", "raw", "--grubenv", "grubenv"]));
    let out = t.run(tandem_disk().args(["boot", "disk.img", "--grubenv", "grubenv"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "a");
}

#[test]
fn warnings_written_to_a_pipe_carry_no_colour_codes() {
    let t = Tmp::new();
    let disk = t.small_image("disk.img");
    // Damage the primary GPT header's CRC: `show` warns and reads the backup copy.
    let mut bytes = std::fs::read(&disk).unwrap();
    bytes[512 + 16] ^= 0xff;
    std::fs::write(&disk, &bytes).unwrap();
    let out = t.run(
        tandem_disk()
            .args(["show", "disk.img"])
            .env("RUST_LOG", "warn")
            .env_remove("NO_COLOR"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("primary GPT is damaged"), "{err}");
    assert!(!err.contains('\x1b'), "ANSI codes in a pipe: {err:?}");
}
