//! Properties of the reference firmware, for all three backends (in memory, through the
//! same I/O seam as real disks): it never boots priority 0, never boots an unsuccessful slot
//! with no tries, always reaches a fixed point, abandons a trial never marked good after
//! exactly N boots, and the three backends make the same choices for the same operations.

use std::sync::Arc;

use partitions::boot::{self, Config};
use partitions::create::{lay_out, Layout};
use partitions::io::{BlockDevice, MemDisk, MemFs};
use partitions::{select_and_boot, BootControl, Disk, FirmwareError, SlotBootState, SlotId};
use proptest::prelude::*;

use crate::util::MIB;

fn backends() -> Vec<Box<dyn BootControl>> {
    let disk = MemDisk::new(40 * MIB);
    let dev: Arc<dyn BlockDevice> = Arc::new(disk.clone());
    lay_out(
        &dev,
        &Layout {
            esp: 4 * MIB,
            slot: 8 * MIB,
            state: 4 * MIB,
            pairs: Vec::new(),
        },
    )
    .unwrap();
    let configs = [
        Config::Gpt,
        Config::Grub {
            grubenv: "grubenv".into(),
        },
        Config::SystemdBoot {
            esp: "/esp".into(),
            entry: Default::default(),
        },
    ];
    configs
        .iter()
        .map(|config| {
            // Each backend on its own copy of the disk: grub and systemd-boot record
            // themselves on it.
            let d = Disk::from_device(Arc::new(disk.deep_clone())).unwrap();
            let pair = d.slots("root").unwrap();
            let bc = boot::open(config, &d, &pair, Some(Arc::new(MemFs::new()))).unwrap();
            bc.prepare().unwrap();
            bc
        })
        .collect()
}

fn state() -> impl Strategy<Value = SlotBootState> {
    (0u8..16, 0u8..16, any::<bool>()).prop_map(|(p, t, s)| SlotBootState::new(p, t, s).unwrap())
}

fn slot() -> impl Strategy<Value = SlotId> {
    prop_oneof![Just(SlotId::A), Just(SlotId::B)]
}

/// One boot, checking the safety properties against the state read just before it.
fn checked_boot(bc: &dyn BootControl) -> Option<SlotId> {
    let [a, b] = bc.states().unwrap();
    match select_and_boot(bc) {
        Ok(s) => {
            let st = if s == SlotId::A { a } else { b };
            assert!(
                st.priority > 0,
                "{}: booted priority 0 ({s}: {st})",
                bc.kind()
            );
            assert!(
                st.successful || st.tries_left > 0,
                "{}: booted {s} with no tries ({st})",
                bc.kind()
            );
            let after = bc.state(s).unwrap();
            if st.successful {
                assert_eq!(
                    after,
                    st,
                    "{}: a successful boot changes nothing",
                    bc.kind()
                );
            } else {
                assert_eq!(
                    after.tries_left,
                    st.tries_left - 1,
                    "{}: one try used",
                    bc.kind()
                );
            }
            Some(s)
        }
        Err(FirmwareError::NothingBootable { a: ea, b: eb }) => {
            assert!(
                !a.is_bootable() && !b.is_bootable(),
                "{}: refused to boot {a} / {b}",
                bc.kind()
            );
            assert_eq!((ea, eb), (a, b));
            None
        }
        Err(e) => panic!("{}: {e}", bc.kind()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn never_boots_the_unbootable_and_always_settles(a in state(), b in state()) {
        for bc in backends() {
            bc.set_state(SlotId::A, a).unwrap();
            bc.set_state(SlotId::B, b).unwrap();
            // At most 15 + 15 tries can be used: then it boots a successful slot for ever,
            // or nothing.
            let mut last = None;
            for _ in 0..31 {
                last = checked_boot(bc.as_ref());
            }
            let settled = bc.states().unwrap();
            for _ in 0..3 {
                prop_assert_eq!(checked_boot(bc.as_ref()), last, "{}: fixed point", bc.kind());
            }
            prop_assert_eq!(bc.states().unwrap(), settled, "{}: nothing changes any more", bc.kind());
            if let Some(s) = last {
                prop_assert!(bc.state(s).unwrap().successful);
            }
        }
    }

    #[test]
    fn same_choices_on_every_backend(ops in proptest::collection::vec((0u8..5, slot(), 1u8..16), 1..40)) {
        let bcs = backends();
        for (step, (op, s, n)) in ops.into_iter().enumerate() {
            let mut outcomes = Vec::new();
            for bc in &bcs {
                let out = match op {
                    0 => { bc.set_trial(s, n).unwrap(); None }
                    1 => { bc.mark_good(s).unwrap(); None }
                    2 => { bc.mark_bad(s).unwrap(); None }
                    3 => { bc.set_unbootable(s).unwrap(); None }
                    _ => Some(checked_boot(bc.as_ref())),
                };
                outcomes.push((out, bc.next_boot().unwrap()));
            }
            prop_assert!(outcomes.windows(2).all(|w| w[0] == w[1]), "step {}: op {} {} {}: gpt/grub/systemd-boot differ: {:?}", step, op, s, n, outcomes);
        }
    }
}

#[test]
fn a_trial_never_marked_good_is_abandoned_after_exactly_n_boots() {
    for n in 1..=15u8 {
        for trial in SlotId::ALL {
            for bc in backends() {
                let good = trial.other();
                bc.set_trial(good, 1).unwrap();
                bc.mark_good(good).unwrap();
                bc.set_trial(trial, n).unwrap();
                for i in 0..n {
                    assert_eq!(
                        checked_boot(bc.as_ref()),
                        Some(trial),
                        "{} n={n}: boot {i}",
                        bc.kind()
                    );
                }
                for _ in 0..3 {
                    assert_eq!(
                        checked_boot(bc.as_ref()),
                        Some(good),
                        "{} n={n}: abandoned",
                        bc.kind()
                    );
                }
                let st = bc.state(trial).unwrap();
                assert!(!st.successful && st.tries_left == 0, "{}: {st}", bc.kind());
            }
        }
    }
}

#[test]
fn nothing_bootable_is_an_error_on_every_backend() {
    for bc in backends() {
        let err = select_and_boot(bc.as_ref()).unwrap_err();
        assert!(
            matches!(err, FirmwareError::NothingBootable { .. }),
            "{}: {err}",
            bc.kind()
        );
        assert!(err.to_string().contains("nothing bootable"));
    }
}
