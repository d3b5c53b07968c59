//! The whole life of a node on every boot-control backend: provision, update, commit, a
//! failed update rolled back by the agent, a version that never comes up abandoned by the
//! firmware.

use partitions::SlotId::{A, B};
use tandem_tests::{request, staged, Backend, World};
use updater::state::Phase;
use updater::BootCheck;

fn lifecycle(backend: Backend) {
    let w = World::new(backend);
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    let v3 = w.release("3.0.0", 3, 3);
    let v4 = w.release("4.0.0", 4, 4);
    w.provision(A, &v1);
    assert_eq!(w.boot(), A, "{backend:?}: the factory image boots");
    assert_eq!(
        w.agent_for(A).boot_check().unwrap(),
        BootCheck::Nothing { booted: A }
    );

    // v2 → B, trial, health passes, committed.
    let a_before = w.slot_hash(A);
    let out = w.install(A, &v2, false).unwrap();
    assert_eq!(out.target, B);
    assert!(out.activated);
    assert_eq!(out.release.version, "2.0.0");
    assert_eq!(out.report.chunks_resumed, 0);
    assert_eq!(
        out.report.chunks_written + out.report.chunks_zeroed,
        v2.chunks
    );
    assert!(
        out.report.chunks_zeroed >= 2,
        "zero chunks are zeroed, not decoded"
    );
    assert_eq!(w.holds(B, &[&v2]).map(|r| &r.version), Some(&v2.version));
    assert_eq!(w.slot_hash(A), a_before, "the booted slot is never written");
    assert!(matches!(
        w.state().phase,
        Phase::Written {
            target: B,
            activated: true,
            ..
        }
    ));
    let trial = w.boot_state(B);
    assert!(!trial.successful && trial.tries_left == w.tries, "{trial}");
    assert_eq!(w.boot(), B, "{backend:?}: the firmware tries the new slot");
    assert_eq!(w.boot_state(B).tries_left, w.tries - 1, "one try used");
    assert_eq!(
        w.agent_for(B).boot_check().unwrap(),
        BootCheck::Committed {
            slot: B,
            version: "2.0.0".into(),
            checks: 1,
        }
    );
    let state = w.state();
    assert_eq!(w.counters().security_floor, 2, "commit raises the floor");
    assert!(state.slots[&B].committed);
    assert!(w.boot_state(B).successful);
    assert_eq!(w.boot(), B, "a committed slot keeps booting");
    assert_eq!(
        w.agent_for(B).boot_check().unwrap(),
        BootCheck::Nothing { booted: B }
    );
    let status = w.agent_for(B).status().unwrap();
    assert_eq!(status.booted, B);
    assert_eq!(status.next_boot, Some(B));
    assert_eq!(status.slots[1].release.as_ref().unwrap().version, "2.0.0");

    // v3 → A, health fails: marked bad, the firmware goes back to B.
    let b_before = w.slot_hash(B);
    assert_eq!(w.install(B, &v3, false).unwrap().target, A);
    assert_eq!(w.slot_hash(B), b_before);
    w.set_healthy(false);
    assert_eq!(w.boot(), A);
    match w.agent_for(A).boot_check().unwrap() {
        BootCheck::RolledBack {
            slot,
            version,
            reason,
        } => {
            assert_eq!((slot, version.as_str()), (A, "3.0.0"));
            assert!(
                reason.contains("test -e"),
                "the reason names the check: {reason}"
            );
        }
        other => panic!("{backend:?}: expected a rollback, got {other:?}"),
    }
    assert!(!w.boot_state(A).is_bootable(), "{}", w.boot_state(A));
    assert_eq!(
        w.boot(),
        B,
        "{backend:?}: the firmware returns to the good slot"
    );
    assert_eq!(w.holds(B, &[&v2]).unwrap().version, "2.0.0");
    assert_eq!(
        w.agent_for(B).boot_check().unwrap(),
        BootCheck::Nothing { booted: B }
    );
    let state = w.state();
    assert!(matches!(state.phase, Phase::RolledBack { slot: A, .. }));
    assert!(state.rolled_back_versions.contains("3.0.0"));
    assert_eq!(
        w.counters().security_floor,
        2,
        "a rolled-back version raises nothing"
    );

    // v3 is remembered: refused without --force, allowed with it.
    w.set_healthy(true);
    let a_before = w.slot_hash(A);
    let error = w.install(B, &v3, false).unwrap_err();
    assert_eq!(error.exit_code(), 4, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("3.0.0") && message.contains("rolled back") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(w.slot_hash(A), a_before, "a refusal writes nothing");
    assert_eq!(w.install(B, &v3, true).unwrap().target, A);
    assert_eq!(w.boot(), A);
    assert_eq!(
        w.agent_for(A).boot_check().unwrap(),
        BootCheck::Committed {
            slot: A,
            version: "3.0.0".into(),
            checks: 1,
        }
    );
    assert_eq!(w.counters().security_floor, 3);

    // v4 never comes up: the firmware uses its tries, then abandons it.
    assert_eq!(w.install(A, &v4, false).unwrap().target, B);
    for attempt in 0..w.tries {
        assert_eq!(
            w.boot(),
            B,
            "{backend:?}: attempt {attempt} of the new slot"
        );
    }
    assert_eq!(w.boot(), A, "{backend:?}: the firmware gives up on slot b");
    assert_eq!(
        w.agent_for(A).boot_check().unwrap(),
        BootCheck::FirmwareRolledBack {
            slot: B,
            version: "4.0.0".into()
        }
    );
    let state = w.state();
    match &state.phase {
        Phase::RolledBack { slot, reason, .. } => {
            assert_eq!(*slot, B);
            assert!(reason.contains("never completed its trial"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(state.rolled_back_versions.contains("4.0.0"));
    assert_eq!(w.counters().security_floor, 3);
    assert_eq!(w.boot(), A);
    assert_eq!(w.holds(A, &[&v3]).unwrap().version, "3.0.0");
    let error = w
        .agent_for(A)
        .install(&request(&v4.bundle, false))
        .unwrap_err();
    assert_eq!(error.exit_code(), 4, "{error}");
}

#[test]
fn lifecycle_on_gpt() {
    lifecycle(Backend::Gpt);
}

#[test]
fn lifecycle_on_grub() {
    lifecycle(Backend::Grub);
}

#[test]
fn lifecycle_on_systemd_boot() {
    lifecycle(Backend::SystemdBoot);
}

/// `--stage` writes now and leaves the boot entry alone; `activate` flips later; `rollback`
/// goes back to the committed other slot and the same health path judges it.
#[test]
fn stage_activate_and_manual_rollback() {
    let w = World::new(Backend::Gpt);
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 1, 2);
    w.provision(A, &v1);
    let before = w.boot_state(B);
    let out = w.agent_for(A).install(&staged(&v2.bundle)).unwrap();
    assert!(!out.activated);
    assert_eq!(
        w.boot_state(B),
        before,
        "staging leaves the boot entry alone"
    );
    assert_eq!(w.boot(), A);
    assert_eq!(
        w.agent_for(A).boot_check().unwrap(),
        BootCheck::Nothing { booted: A }
    );
    assert_eq!(w.agent_for(A).activate().unwrap(), B);
    assert_eq!(w.boot(), B);
    assert!(matches!(
        w.agent_for(B).boot_check().unwrap(),
        BootCheck::Committed { slot: B, .. }
    ));
    let error = w.agent_for(B).activate().unwrap_err();
    assert!(error.to_string().contains("nothing is staged"), "{error}");

    // A holds the factory image (security version unknown, so 0): the floor keeps it out.
    let error = w.agent_for(B).rollback(false, false).unwrap_err();
    assert!(
        error.to_string().contains("below this node's floor"),
        "{error}"
    );
    assert_eq!(error.exit_code(), 4);
    // Commit v1 through the agent too, then roll back to it by hand.
    assert_eq!(w.install(B, &v1, false).unwrap().target, A);
    assert_eq!(w.boot(), A);
    assert!(matches!(
        w.agent_for(A).boot_check().unwrap(),
        BootCheck::Committed { slot: A, .. }
    ));
    assert_eq!(w.agent_for(A).rollback(true, false).unwrap(), B);
    assert_eq!(w.boot(), B);
    assert_eq!(
        w.agent_for(B).boot_check().unwrap(),
        BootCheck::Committed {
            slot: B,
            version: "2.0.0".into(),
            checks: 1,
        }
    );
    assert_eq!(w.holds(B, &[&v2]).unwrap().version, "2.0.0");
}

/// `rollback` may go back to the factory image the firmware marks good, but never below the
/// security floor unless forced (the factory image's security version is unknown: 0).
#[test]
fn rollback_reaches_the_factory_image_and_respects_the_floor() {
    let w = World::new(Backend::Gpt);
    let factory = w.release("1.0.0", 0, 1);
    let v2 = w.release("2.0.0", 0, 2);
    w.provision(A, &factory);
    assert_eq!(w.install(A, &v2, false).unwrap().target, B);
    assert_eq!(w.boot(), B);
    assert!(matches!(
        w.agent_for(B).boot_check().unwrap(),
        BootCheck::Committed { slot: B, .. }
    ));
    assert_eq!(w.agent_for(B).rollback(true, false).unwrap(), A);
    assert_eq!(w.boot(), A);
    assert_eq!(
        w.agent_for(A).boot_check().unwrap(),
        BootCheck::Committed {
            slot: A,
            version: "factory".into(),
            checks: 1,
        }
    );

    // v3 raises the floor to 2: the factory image is now below it.
    let v3 = w.release("3.0.0", 2, 3);
    assert_eq!(w.install(A, &v3, false).unwrap().target, B);
    assert_eq!(w.boot(), B);
    w.agent_for(B).boot_check().unwrap();
    assert_eq!(w.counters().security_floor, 2);
    let before = [w.boot_state(A), w.boot_state(B)];
    let error = w.agent_for(B).rollback(false, false).unwrap_err();
    assert!(
        matches!(
            &error,
            updater::Error::Refused(updater::Refusal::BelowSecurityFloor {
                offered: 0,
                floor: 2,
                ..
            })
        ),
        "{error}"
    );
    assert_eq!([w.boot_state(A), w.boot_state(B)], before, "{error}");
    assert_eq!(w.agent_for(B).rollback(false, true).unwrap(), A);
}
