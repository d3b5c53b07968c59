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
    t.run(tandem_disk().args(["create", "disk.img", "--size", "256MiB"]));
    std::fs::create_dir(t.path("esp")).unwrap();
    for backend in [
        ["--backend", "grub", "--grubenv", "grubenv"],
        ["--backend", "systemd-boot", "--esp", "esp"],
    ] {
        let out = t.run_any(tandem_disk().args(["boot", "disk.img"]).args(backend));
        assert_eq!(out.status.code(), Some(1), "not initialised yet");
        t.run(tandem_disk().args(["init-boot", "disk.img"]).args(backend));
        t.run(
            tandem_disk()
                .args(["mark", "disk.img", "a", "trial", "--tries", "1"])
                .args(backend),
        );
        t.run(
            tandem_disk()
                .args(["mark", "disk.img", "a", "good"])
                .args(backend),
        );
        t.run(
            tandem_disk()
                .args(["mark", "disk.img", "b", "trial", "--tries", "1"])
                .args(backend),
        );
        let seq: Vec<String> = (0..3)
            .map(|_| {
                String::from_utf8_lossy(&boot(&t, &backend).stdout)
                    .trim()
                    .to_string()
            })
            .collect();
        assert_eq!(seq, ["b", "a", "a"], "{backend:?}");
        let v = show_json(&t, &backend);
        assert_eq!(v["next_boot"], "a");
        assert_eq!(v["slots"][1]["state"]["tries_left"], 0);
    }
    assert!(t.path("esp/loader/entries/tandem-b+0-1.conf").is_file());
    assert_eq!(std::fs::metadata(t.path("grubenv")).unwrap().len(), 1024);
    let out = t.run_any(tandem_disk().args(["boot", "disk.img", "--backend", "grub"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grubenv"));
}
