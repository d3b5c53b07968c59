//! Boot Loader Specification entries in an ESP's `loader/entries/` (file names carry the
//! boot counter) and `loader/loader.conf`, read and changed by the systemd-boot backend.
//! Contract: no panic; states read from any ESP are in range; when the backend accepts the
//! ESP, a trial it sets is the next boot with the tries asked for, a boot attempt uses one
//! try, and marking the slot good makes it successful.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use partitions::boot::systemd_boot::{EntryTemplate, SystemdBootControl, ENTRIES_DIR, LOADER_CONF};
use partitions::{BootControl, SlotId};
use tandem_fuzz::{laid_out_disk, shared, FuzzFs};

#[derive(Debug, Arbitrary)]
enum Name {
    /// `tandem-<suffix>.conf`: the names the backend looks at.
    Ours(String),
    /// Any other file in the directory.
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Esp {
    entries: Vec<(Name, String)>,
    loader_conf: Option<String>,
    slot_b: bool,
}

fn files(esp: &Esp) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = esp
        .entries
        .iter()
        .map(|(name, body)| {
            let name = match name {
                Name::Ours(suffix) => format!("tandem-{suffix}.conf"),
                Name::Other(n) => n.clone(),
            };
            (Path::new(ENTRIES_DIR).join(name), body.clone().into_bytes())
        })
        .collect();
    if let Some(conf) = &esp.loader_conf {
        out.push((PathBuf::from(LOADER_CONF), conf.clone().into_bytes()));
    }
    out
}

fuzz_target!(|esp: Esp| {
    let (_fs, store) = shared(FuzzFs::with_files(files(&esp)));
    let (disk, pair) = laid_out_disk();
    let sd = SystemdBootControl::new(store, &disk, &pair, EntryTemplate::default());
    let Ok(states) = sd.states() else {
        return;
    };
    for s in states {
        assert!(s.priority <= 2 && s.tries_left <= 15, "{s:?}");
    }
    let slot = if esp.slot_b { SlotId::B } else { SlotId::A };
    if sd.set_trial(slot, 3).is_err() {
        return;
    }
    let s = sd.state(slot).expect("the backend reads what it wrote");
    assert_eq!(
        (s.priority, s.tries_left, s.successful),
        (2, 3, false),
        "trial of {slot}"
    );
    assert_eq!(
        sd.next_boot().expect("readable"),
        Some(slot),
        "a trial boots next"
    );
    sd.record_boot_attempt(slot)
        .expect("the boot attempt renames the entry");
    assert_eq!(sd.state(slot).expect("readable").tries_left, 2);
    sd.mark_good(slot).expect("marking good renames the entry");
    let s = sd.state(slot).expect("readable");
    assert!(
        s.successful && s.tries_left == 0 && s.priority == 2,
        "{s:?}"
    );
});
