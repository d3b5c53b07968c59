//! systemd-boot interoperability: `bootctl list` (systemd 252) parses the entries we write,
//! with the tries left/done we intend, and puts first (its default) the entry the reference
//! firmware boots.

use std::path::Path;
use std::sync::Arc;

use partitions::boot::systemd_boot::{EntryTemplate, SystemdBootControl};
use partitions::io::RealFs;
use partitions::{select_and_boot, BootControl, Disk, SlotId};
use serde_json::Value;

use crate::util::*;

/// `bootctl list` over a plain directory (bind-mounted onto itself in a private mount
/// namespace, so bootctl accepts it as a mount point; needs root, as CI has).
fn bootctl_list(t: &Tmp, esp: &Path) -> Vec<Value> {
    let d = esp.display();
    let script = format!(
        "mount --bind '{d}' '{d}' && SYSTEMD_RELAX_ESP_CHECKS=1 '{}' --esp-path='{d}' --no-pager list --json=short",
        tool("bootctl").display()
    );
    let out = t.run(cmd("unshare").args(["-m", "sh", "-c", &script]));
    let text = stdout(&out);
    if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Value>>(&text).unwrap()
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// (id, tries left, tries done, version) of each entry, in bootctl's order.
fn summary(list: &[Value]) -> Vec<(String, Option<u64>, Option<u64>, String)> {
    list.iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("").to_string(),
                e["triesLeft"].as_u64(),
                e["triesDone"].as_u64(),
                e["version"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn first_slot(list: &[Value]) -> Option<SlotId> {
    match list.first()?["id"].as_str()? {
        "tandem-a.conf" => Some(SlotId::A),
        "tandem-b.conf" => Some(SlotId::B),
        _ => None,
    }
}

fn s(
    id: &str,
    left: Option<u64>,
    done: Option<u64>,
    version: &str,
) -> (String, Option<u64>, Option<u64>, String) {
    (id.to_string(), left, done, version.to_string())
}

#[test]
fn bootctl_lists_our_entries_with_the_tries_we_intend() {
    let t = Tmp::new();
    let img = t.small_image("disk.img");
    let disk = Disk::open(&img).unwrap();
    let pair = disk.slots("root").unwrap();
    let esp = t.path("esp");
    std::fs::create_dir(&esp).unwrap();
    let bc = SystemdBootControl::new(
        Arc::new(RealFs::new(&esp)),
        &disk,
        &pair,
        EntryTemplate::default(),
    );
    bc.prepare().unwrap();
    let conf = std::fs::read_to_string(esp.join("loader/loader.conf")).unwrap();
    assert!(!conf.lines().any(|l| l.starts_with("default")), "{conf}");

    bc.set_trial(SlotId::A, 1).unwrap();
    bc.mark_good(SlotId::A).unwrap();
    let list = bootctl_list(&t, &esp);
    assert_eq!(summary(&list), [s("tandem-a.conf", None, None, "1")]);
    assert_eq!(list[0]["sortKey"], "tandem");
    let options = list[0]["options"].as_str().unwrap();
    assert!(
        options.contains(&format!("root=PARTUUID={}", pair.slot(SlotId::A).partuuid)),
        "{options}"
    );
    assert!(options.contains("tandem.slot=a"), "{options}");

    bc.set_trial(SlotId::B, 3).unwrap();
    let list = bootctl_list(&t, &esp);
    assert_eq!(
        summary(&list),
        [
            s("tandem-b.conf", Some(3), Some(0), "2"),
            s("tandem-a.conf", None, None, "1")
        ]
    );
    assert_eq!(first_slot(&list), bc.next_boot().unwrap());

    // Boots through the reference firmware: systemd-boot's renames, seen by bootctl.
    assert_eq!(select_and_boot(&bc).unwrap(), SlotId::B);
    let list = bootctl_list(&t, &esp);
    assert_eq!(
        list[0]["path"].as_str().unwrap(),
        esp.join("loader/entries/tandem-b+2-1.conf")
            .display()
            .to_string()
    );
    assert_eq!(summary(&list)[0], s("tandem-b.conf", Some(2), Some(1), "2"));
    assert_eq!(select_and_boot(&bc).unwrap(), SlotId::B);
    assert_eq!(select_and_boot(&bc).unwrap(), SlotId::B);
    let list = bootctl_list(&t, &esp);
    // Out of tries: bootctl sorts it last, the reference firmware falls back to a.
    assert_eq!(
        summary(&list),
        [
            s("tandem-a.conf", None, None, "1"),
            s("tandem-b.conf", Some(0), Some(3), "2")
        ]
    );
    assert_eq!(select_and_boot(&bc).unwrap(), SlotId::A);
    assert_eq!(first_slot(&list), Some(SlotId::A));

    // A new trial of b, marked good after one boot: the counter is gone.
    bc.set_trial(SlotId::B, 3).unwrap();
    assert_eq!(select_and_boot(&bc).unwrap(), SlotId::B);
    bc.mark_good(SlotId::B).unwrap();
    let list = bootctl_list(&t, &esp);
    assert_eq!(
        summary(&list),
        [
            s("tandem-b.conf", None, None, "3"),
            s("tandem-a.conf", None, None, "1")
        ]
    );
    assert_eq!(first_slot(&list), bc.next_boot().unwrap());

    // An update of a that fails its health check: marked bad, sorted last.
    bc.set_trial(SlotId::A, 2).unwrap();
    assert_eq!(first_slot(&bootctl_list(&t, &esp)), Some(SlotId::A));
    assert_eq!(select_and_boot(&bc).unwrap(), SlotId::A);
    bc.mark_bad(SlotId::A).unwrap();
    let list = bootctl_list(&t, &esp);
    assert_eq!(
        summary(&list),
        [
            s("tandem-b.conf", None, None, "3"),
            s("tandem-a.conf", Some(0), Some(1), "4")
        ]
    );
    assert_eq!(first_slot(&list), bc.next_boot().unwrap());
    assert_eq!(bc.next_boot().unwrap(), Some(SlotId::B));

    // Unbootable: the entry is gone.
    bc.set_unbootable(SlotId::A).unwrap();
    assert_eq!(
        summary(&bootctl_list(&t, &esp)),
        [s("tandem-b.conf", None, None, "3")]
    );
}
