//! Regressions: bugs these tests found in the updater, one test each.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use partitions::io::{BlockDevice, MemDisk};
use partitions::SlotId::{A, B};
use tandem_tests::{cut_at, fired, staged, Backend, World, CHUNK_SIZE, DISK_SIZE};
use updater::state::Phase;
use updater::BootCheck;

/// A disk that silently drops one write at `offset` (a transient fault the read-back must
/// catch), then behaves.
#[derive(Debug)]
struct DropsOneWrite {
    inner: MemDisk,
    offset: std::sync::Mutex<Option<u64>>,
    dropped: AtomicBool,
}

impl BlockDevice for DropsOneWrite {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut target = self.offset.lock().unwrap();
        if *target == Some(offset) {
            *target = None;
            self.dropped.store(true, Ordering::SeqCst);
            return Ok(()); // lie
        }
        self.inner.write_at(buf, offset)
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.zero_range(offset, len)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
}

fn lying_world() -> (World, Arc<DropsOneWrite>) {
    let disk = Arc::new(DropsOneWrite {
        inner: MemDisk::new(DISK_SIZE),
        offset: std::sync::Mutex::new(None),
        dropped: AtomicBool::new(false),
    });
    let w = World::with_disk(Backend::Gpt, disk.clone());
    (w, disk)
}

/// Bug: after the read-back caught a disk that did not store a chunk, the state still said
/// every chunk was durable, so each retry "resumed" past the end, wrote nothing and failed
/// the same way forever. The retry must rewrite the image.
#[test]
fn a_failed_read_back_is_not_resumed_from() {
    let (w, disk) = lying_world();
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    w.provision(A, &v1);
    let b = w.pair().slot(B).offset;
    *disk.offset.lock().unwrap() = Some(b + 5 * u64::from(CHUNK_SIZE));
    let error = w.install(A, &v2, false).unwrap_err();
    assert!(disk.dropped.load(Ordering::SeqCst));
    let message = error.to_string();
    assert!(
        message.contains("did not store what was written"),
        "{message}"
    );
    assert_eq!(w.boot(), A, "the bad slot is never booted");
    let out = w.install(A, &v2, false).unwrap();
    assert_eq!(
        out.report.chunks_resumed, 0,
        "nothing on the slot can be trusted"
    );
    assert_eq!(w.holds(B, &[&v2]).unwrap().version, "2.0.0");
}

/// Bug: `verify_readback = false` in the configuration was ignored (the agent always used
/// the pipeline's default).
#[test]
fn verify_readback_in_the_configuration_is_applied() {
    let (mut w, disk) = lying_world();
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    w.provision(A, &v1);
    assert!(
        w.agent_for(A).write_options.verify_readback,
        "on by default"
    );
    w.extra_config = "verify_readback = false".into();
    assert!(!w.agent_for(A).write_options.verify_readback);
    // Without the read-back every chunk is checked before it is written, not what the disk
    // stored: the install passes although the disk lied. That is what the switch trades away.
    let b = w.pair().slot(B).offset;
    *disk.offset.lock().unwrap() = Some(b + 5 * u64::from(CHUNK_SIZE));
    w.install(A, &v2, false).unwrap();
    assert!(w.holds(B, &[&v2]).is_none());
}

/// Bug: a power cut between the flip and the state save left `Written { activated: false }`;
/// when the new slot then never came up, boot-check in the old slot said "nothing to do",
/// the version was not remembered as rolled back and `activate` would flip it again.
#[test]
fn a_slot_flipped_before_the_cut_that_never_comes_up_is_a_firmware_rollback() {
    let scenario = fail::FailScenario::setup();
    let w = World::new(Backend::Gpt);
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    w.provision(A, &v1);
    let flag = cut_at("install::after-flip", 1);
    let result = catch_unwind(AssertUnwindSafe(|| w.install(A, &v2, false)));
    fail::remove("install::after-flip");
    assert!(fired(&flag) && result.is_err());
    assert!(matches!(
        w.state().phase,
        Phase::Written {
            activated: false,
            ..
        }
    ));
    for _ in 0..w.tries {
        assert_eq!(w.boot(), B);
    }
    assert_eq!(w.boot(), A);
    assert_eq!(
        w.agent_for(A).boot_check().unwrap(),
        BootCheck::FirmwareRolledBack {
            slot: B,
            version: "2.0.0".into()
        }
    );
    assert!(w.state().rolled_back_versions.contains("2.0.0"));
    assert!(w.agent_for(A).activate().is_err());
    drop(scenario);
}

/// Staging is not a flip: a staged image stays staged across boots.
#[test]
fn a_staged_image_is_not_a_firmware_rollback() {
    let w = World::new(Backend::Gpt);
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    w.provision(A, &v1);
    w.agent_for(A).install(&staged(&v2.bundle)).unwrap();
    assert_eq!(w.boot(), A);
    assert_eq!(
        w.agent_for(A).boot_check().unwrap(),
        BootCheck::Nothing { booted: A }
    );
    assert_eq!(w.agent_for(A).activate().unwrap(), B);
}
