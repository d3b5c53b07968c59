//! A GRUB environment block (`grubenv` on the ESP, writable by anyone who can boot GRUB's
//! shell): parsed, re-serialised, and read and changed through the grub boot backend.
//! Contract: no panic; a block that parses re-serialises to 1024 bytes (or says it does not
//! fit) that parse back to the same variables; when the backend can read the block, a trial
//! it sets reads back as that trial, and marking it good reads back as successful.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use partitions::boot::grub::{GrubEnv, GrubEnvBootControl, ENVBLK_SIZE};
use partitions::{BootControl, SlotId};
use tandem_fuzz::{laid_out_disk, shared, FuzzFs};

fn vars(env: &GrubEnv) -> BTreeMap<String, Option<String>> {
    env.names().map(|n| (n.to_owned(), env.get(n))).collect()
}

fn round_trip(data: &[u8]) {
    let Ok(env) = GrubEnv::parse(data) else {
        return;
    };
    let Ok(block) = env.to_block() else {
        return;
    };
    assert_eq!(block.len(), ENVBLK_SIZE);
    let again = GrubEnv::parse(&block).expect("a written block parses");
    assert_eq!(vars(&again), vars(&env));
    assert_eq!(
        again.to_block().as_deref(),
        Ok(&block[..]),
        "serialising is stable"
    );
}

fn backend(data: &[u8]) {
    let path = PathBuf::from("EFI/tandem/grubenv");
    let (_fs, store) = shared(FuzzFs::with_files([(path.clone(), data.to_vec())]));
    let (disk, pair) = laid_out_disk();
    let grub = GrubEnvBootControl::new(store, path, &disk, &pair);
    if grub.states().is_err() {
        return;
    }
    if grub.set_trial(SlotId::B, 3).is_ok() {
        let b = grub
            .state(SlotId::B)
            .expect("the backend reads what it wrote");
        assert_eq!((b.tries_left, b.successful), (3, false));
        assert_eq!(grub.next_boot().expect("readable"), Some(SlotId::B));
        if grub.mark_good(SlotId::B).is_ok() {
            let b = grub
                .state(SlotId::B)
                .expect("the backend reads what it wrote");
            assert!(b.successful && b.tries_left == 0 && b.priority > 0);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    backend(data);
});
