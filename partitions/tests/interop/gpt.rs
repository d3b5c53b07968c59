//! GPT interoperability: sgdisk validates our tables and lays out disks we recognise; cgpt
//! reads the boot attributes we write and writes ones we read, for every value.

use partitions::boot::gpt::GptBootControl;
use partitions::{BootControl, Disk, SlotBootState, SlotId};
use serde_json::Value;

use crate::util::*;

fn gpt_bc(path: &std::path::Path) -> GptBootControl {
    let disk = Disk::open(path).unwrap();
    let pair = disk.slots("root").unwrap();
    GptBootControl::new(disk.device().clone(), &pair)
}

fn sgdisk_verify(t: &Tmp, img: &std::path::Path) {
    let out = t.run(cmd("sgdisk").arg("-v").arg(img));
    let text = stdout(&out);
    assert!(text.contains("No problems found"), "sgdisk -v: {text}");
}

#[test]
fn sgdisk_finds_no_problem_in_our_image() {
    let t = Tmp::new();
    let img = t.path("disk.img");
    t.run(tandem_disk().args([
        "create",
        "disk.img",
        "--size",
        "2GiB",
        "--slot-size",
        "512MiB",
        "--esp",
        "64MiB",
        "--state",
        "64MiB",
    ]));
    // Sparse: a 2 GiB image costs almost nothing.
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 2 << 30);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 4 * MIB,
        "not sparse"
    );
    sgdisk_verify(&t, &img);
    let p = stdout(&t.run(cmd("sgdisk").arg("-p").arg(&img)));
    for (n, code, name, size) in [
        (1, "EF00", "ESP", "64.0 MiB"),
        (2, "8304", "root-a", "512.0 MiB"),
        (3, "8304", "root-b", "512.0 MiB"),
        (4, "8300", "state", "64.0 MiB"),
    ] {
        let line = p
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
            .unwrap_or_else(|| panic!("partition {n} missing: {p}"));
        assert!(
            line.contains(code) && line.ends_with(name) && line.contains(size),
            "{line}"
        );
    }
    // Still clean after boot-attribute writes (both copies and CRCs rewritten).
    let bc = gpt_bc(&img);
    bc.set_trial(SlotId::A, 1).unwrap();
    bc.mark_good(SlotId::A).unwrap();
    bc.set_trial(SlotId::B, 3).unwrap();
    sgdisk_verify(&t, &img);
}

#[test]
fn a_disk_laid_out_by_sgdisk_is_recognised() {
    let t = Tmp::new();
    let img = t.path("sg.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(100 * MIB)
        .unwrap();
    t.run(
        cmd("sgdisk")
            .args(["-n", "1:2048:+20M", "-t", "1:ef00", "-c", "1:EFI system"])
            .args(["-n", "2:0:+30M", "-t", "2:8304", "-c", "2:root-a"])
            .args(["-n", "3:0:+30M", "-t", "3:8304", "-c", "3:root-b"])
            .arg(&img),
    );
    let out = t.run(tandem_disk().args(["show", "sg.img", "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let slots = v["slots"].as_array().unwrap();
    for (i, s) in slots.iter().enumerate() {
        let n = i + 2;
        let info = stdout(&t.run(cmd("sgdisk").arg("-i").arg(n.to_string()).arg(&img)));
        let guid = info
            .lines()
            .find_map(|l| l.strip_prefix("Partition unique GUID: "))
            .unwrap()
            .trim()
            .to_lowercase();
        assert_eq!(s["partuuid"], Value::String(guid), "{info}");
        assert_eq!(s["index"], n);
        assert_eq!(s["size"], 30 * MIB);
    }
    assert_eq!(v["next_boot"], Value::Null, "no boot attributes yet");
    assert_eq!(v["gpt"], "primary");
}

/// Our writes, read back by cgpt -P/-T/-S, for every priority and tries value.
fn cgpt_reads_ours(successful: bool) {
    let t = Tmp::new();
    let img = t.small_image("disk.img");
    // Bits outside the ChromeOS field must survive: 0 (platform required) and 60.
    t.run(
        cmd("sgdisk")
            .args(["-A", "2:set:0", "-A", "2:set:60"])
            .arg(&img),
    );
    let bc = gpt_bc(&img);
    let show = |flag: &str| -> String {
        stdout(&t.run(cmd("cgpt").args(["show", "-i", "2", flag]).arg(&img)))
            .trim()
            .to_string()
    };
    for p in 0..16u8 {
        for tries in 0..16u8 {
            bc.set_state(SlotId::A, SlotBootState::new(p, tries, successful).unwrap())
                .unwrap();
            assert_eq!(show("-P"), p.to_string(), "priority {p} tries {tries}");
            assert_eq!(show("-T"), tries.to_string(), "priority {p} tries {tries}");
            assert_eq!(show("-S"), u8::from(successful).to_string());
        }
    }
    let attrs = stdout(&t.run(cmd("sgdisk").args(["-A", "2:show"]).arg(&img)));
    assert!(
        attrs.contains("2:0:1") && attrs.contains("2:60:1"),
        "other bits lost: {attrs}"
    );
    sgdisk_verify(&t, &img);
}

#[test]
fn cgpt_reads_our_attributes_successful() {
    cgpt_reads_ours(true);
}

#[test]
fn cgpt_reads_our_attributes_unsuccessful() {
    cgpt_reads_ours(false);
}

/// cgpt's writes, read back by us, for every value.
fn we_read_cgpt(successful: bool) {
    let t = Tmp::new();
    let img = t.small_image("disk.img");
    let bc = gpt_bc(&img);
    for p in 0..16u8 {
        for tries in 0..16u8 {
            t.run(
                cmd("cgpt")
                    .args([
                        "add",
                        "-i",
                        "3",
                        "-P",
                        &p.to_string(),
                        "-T",
                        &tries.to_string(),
                        "-S",
                        if successful { "1" } else { "0" },
                    ])
                    .arg(&img),
            );
            assert_eq!(
                bc.state(SlotId::B).unwrap(),
                SlotBootState::new(p, tries, successful).unwrap()
            );
        }
    }
    assert_eq!(
        bc.state(SlotId::A).unwrap(),
        SlotBootState::UNBOOTABLE,
        "slot a untouched"
    );
}

#[test]
fn we_read_cgpt_attributes_successful() {
    we_read_cgpt(true);
}

#[test]
fn we_read_cgpt_attributes_unsuccessful() {
    we_read_cgpt(false);
}

#[test]
fn backup_copy_is_complete_and_a_damaged_primary_falls_back() {
    let t = Tmp::new();
    let img = t.small_image("disk.img");
    let bc = gpt_bc(&img);
    bc.set_state(SlotId::B, SlotBootState::new(9, 4, false).unwrap())
        .unwrap();
    // Destroy the primary header: cgpt and we must both find the state in the backup.
    let dev = open_dev(&img);
    dev.write_at(&[0u8; 512], 512).unwrap();
    dev.sync().unwrap();
    assert_eq!(
        stdout(&t.run(cmd("cgpt").args(["show", "-i", "3", "-P"]).arg(&img))).trim(),
        "9"
    );
    assert_eq!(
        stdout(&t.run(cmd("cgpt").args(["show", "-i", "3", "-T"]).arg(&img))).trim(),
        "4"
    );
    let out = t.run(tandem_disk().args(["show", "disk.img", "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpt"], "backup");
    assert_eq!(v["primary_gpt_problem"], "no GPT signature");
    assert_eq!(v["slots"][1]["state"]["priority"], 9);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("primary GPT") && stderr.contains("damaged"),
        "{stderr}"
    );
    // The next write repairs the primary.
    t.run(tandem_disk().args(["set", "disk.img", "b", "--tries", "5"]));
    sgdisk_verify(&t, &img);
    let d = Disk::open(&img).unwrap();
    assert!(!d.using_backup_gpt());
    assert_eq!(
        gpt_bc(&img).state(SlotId::B).unwrap(),
        SlotBootState::new(9, 5, false).unwrap()
    );
}
