//! An interrupted install resumes from the last durable chunk and does not rewrite the
//! chunks before it (counted by a disk that records every write).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use partitions::io::{BlockDevice, MemDisk};
use partitions::SlotId::{A, B};
use signer::AssetKind;
use tandem_tests::{
    cut_at, disk_size_with, fired, noise, request, Backend, TestAsset, World, CHUNK_SIZE,
    POWER_CUT, STATE_FILE,
};
use updater::state::{Phase, StateStore};
use updater::BootCheck;

/// Records the range of every write and zero-out.
#[derive(Debug)]
struct Counting {
    inner: MemDisk,
    writes: Mutex<Vec<(u64, u64)>>,
}

impl Counting {
    fn take(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

impl BlockDevice for Counting {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writes.lock().unwrap().push((offset, buf.len() as u64));
        self.inner.write_at(buf, offset)
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.writes.lock().unwrap().push((offset, len));
        self.inner.zero_range(offset, len)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
}

const CHUNK: u64 = CHUNK_SIZE as u64;

fn counting_world() -> (World, Arc<Counting>) {
    counting_world_with(&[])
}

/// A node with the further slot pairs `pairs` on a disk that records every write.
fn counting_world_with(pairs: &[(&str, u64)]) -> (World, Arc<Counting>) {
    let disk = Arc::new(Counting {
        inner: MemDisk::new(disk_size_with(pairs)),
        writes: Mutex::new(Vec::new()),
    });
    let w = World::with_disk_and_pairs(Backend::Gpt, disk.clone(), pairs);
    (w, disk)
}

/// The writes that landed in slot B's first `chunks` chunks.
fn rewritten(w: &World, writes: &[(u64, u64)], chunks: u64) -> Vec<(u64, u64)> {
    writes_within(writes, w.pair().slot(B).offset, chunks)
}

/// The writes that landed in the `chunks` chunks from disk offset `start`.
fn writes_within(writes: &[(u64, u64)], start: u64, chunks: u64) -> Vec<(u64, u64)> {
    writes
        .iter()
        .filter(|(off, len)| *off < start + chunks * CHUNK && off + len > start)
        .copied()
        .collect()
}

#[test]
fn a_cut_mid_payload_resumes_from_the_last_checkpoint() {
    let scenario = fail::FailScenario::setup();
    let (w, disk) = counting_world();
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    w.provision(A, &v1);

    // Checkpoints every 3 chunks; the power goes after the 14th chunk is written.
    let flag = cut_at("install::chunk-written", 14);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut agent = w.agent_for(A);
        agent.write_options.checkpoint_bytes = 3 * CHUNK;
        agent.install(&request(&v2.bundle, false))
    }));
    fail::remove("install::chunk-written");
    assert!(fired(&flag) && result.is_err());
    match w.state().phase {
        Phase::Writing {
            target,
            durable_chunks,
            ..
        } => {
            assert_eq!((target, durable_chunks), (B, 12));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.boot(), A, "the half-written slot is never booted");

    disk.take();
    let mut agent = w.agent_for(A);
    agent.write_options.checkpoint_bytes = 3 * CHUNK;
    let out = agent.install(&request(&v2.bundle, false)).unwrap();
    assert_eq!(out.report.chunks_resumed, 12);
    assert_eq!(
        out.report.chunks_written + out.report.chunks_zeroed,
        v2.chunks - 12
    );
    let again = rewritten(&w, &disk.take(), 12);
    assert!(again.is_empty(), "completed chunks rewritten: {again:?}");
    assert_eq!(w.holds(B, &[&v2]).unwrap().version, "2.0.0");
    assert_eq!(w.boot(), B);
    assert!(matches!(
        w.agent_for(B).boot_check().unwrap(),
        BootCheck::Committed { slot: B, .. }
    ));
    drop(scenario);
}

/// The USB stick is pulled mid-install: the bundle verified, then its payload ends early.
/// (A bundle already truncated when the install starts is refused before anything is
/// written: see `a_bundle_truncated_before_the_install_is_refused`.)
/// Without the read-back nothing at the end reads what an earlier run wrote: the resumed
/// chunks are checked before the install goes on, and a slot that no longer holds them is
/// written again whole.
#[test]
fn without_the_read_back_resumed_chunks_are_checked_first() {
    let scenario = fail::FailScenario::setup();
    for damaged in [false, true] {
        let (w, disk) = counting_world();
        let v1 = w.release("1.0.0", 1, 1);
        let v2 = w.release("2.0.0", 2, 2);
        w.provision(A, &v1);
        let install = || {
            let mut agent = w.agent_for(A);
            agent.write_options.checkpoint_bytes = 3 * CHUNK;
            agent.write_options.verify_readback = false;
            agent.install(&request(&v2.bundle, false))
        };
        let flag = cut_at("install::chunk-written", 14);
        let result = catch_unwind(AssertUnwindSafe(install));
        fail::remove("install::chunk-written");
        assert!(fired(&flag) && result.is_err());
        if damaged {
            let chunk_5 = w.pair().slot(B).offset + 5 * CHUNK;
            disk.inner.write_at(b"bit rot", chunk_5 + 100).unwrap();
        }
        disk.take();
        let out = install().unwrap();
        let resumed = if damaged { 0 } else { 12 };
        assert_eq!(out.report.chunks_resumed, resumed, "damaged: {damaged}");
        assert_eq!(
            rewritten(&w, &disk.take(), 12).is_empty(),
            !damaged,
            "the resumed chunks are rewritten only when damaged"
        );
        assert_eq!(w.holds(B, &[&v2]).unwrap().version, "2.0.0");
    }
    drop(scenario);
}

#[test]
fn a_source_cut_mid_payload_resumes_when_the_whole_bundle_is_back() {
    let scenario = fail::FailScenario::setup();
    let (w, disk) = counting_world();
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    w.provision(A, &v1);
    let bytes = std::fs::read(&v2.bundle).unwrap();
    let stick = w.path("stick.tandem");
    std::fs::write(&stick, &bytes).unwrap();
    let pulled = stick.clone();
    let keep = bytes.len() as u64 * 2 / 3;
    fail::cfg_callback("install::after-writing-state", move || {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&pulled)
            .unwrap();
        file.set_len(keep).unwrap();
    })
    .unwrap();
    let mut agent = w.agent_for(A);
    agent.write_options.checkpoint_bytes = 2 * CHUNK;
    let error = agent.install(&request(&stick, false)).unwrap_err();
    fail::remove("install::after-writing-state");
    let message = error.to_string();
    assert!(message.contains("stick.tandem"), "{message}");
    let durable = match w.state().phase {
        Phase::Writing { durable_chunks, .. } => durable_chunks,
        other => panic!("{other:?} after: {message}"),
    };
    assert!(durable >= 4, "{durable} chunks durable");
    assert_eq!(w.boot(), A, "the half-written slot is never booted");

    // The stick is back with the whole bundle.
    std::fs::write(&stick, &bytes).unwrap();
    disk.take();
    let mut agent = w.agent_for(A);
    agent.write_options.checkpoint_bytes = 2 * CHUNK;
    let out = agent.install(&request(&stick, false)).unwrap();
    assert_eq!(out.report.chunks_resumed, durable);
    assert_eq!(
        out.report.chunks_written + out.report.chunks_zeroed,
        v2.chunks - durable
    );
    let again = rewritten(&w, &disk.take(), durable);
    assert!(again.is_empty(), "completed chunks rewritten: {again:?}");
    assert_eq!(w.holds(B, &[&v2]).unwrap().version, "2.0.0");
    drop(scenario);
}

#[test]
fn a_bundle_truncated_before_the_install_is_refused() {
    let (w, _) = counting_world();
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    w.provision(A, &v1);
    let bytes = std::fs::read(&v2.bundle).unwrap();
    let partial = w.path("partial.tandem");
    std::fs::write(&partial, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let before = (w.slot_hash(A), w.slot_hash(B), w.boot_state(B));
    let error = w
        .agent_for(A)
        .install(&request(&partial, false))
        .unwrap_err();
    let message = error.to_string();
    assert_eq!(error.exit_code(), 3, "{message}");
    assert!(
        message.contains("partial.tandem") && message.contains("truncated"),
        "{message}"
    );
    assert_eq!((w.slot_hash(A), w.slot_hash(B), w.boot_state(B)), before);
}

/// Another bundle for the same slot does not resume from the first one's chunks.
#[test]
fn another_bundle_starts_over() {
    let scenario = fail::FailScenario::setup();
    let (w, _) = counting_world();
    let v1 = w.release("1.0.0", 1, 1);
    let v2 = w.release("2.0.0", 2, 2);
    let v3 = w.release("3.0.0", 3, 3);
    w.provision(A, &v1);
    let flag = cut_at("install::after-checkpoint", 2);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut agent = w.agent_for(A);
        agent.write_options.checkpoint_bytes = 2 * CHUNK;
        agent.install(&request(&v2.bundle, false))
    }));
    fail::remove("install::after-checkpoint");
    assert!(fired(&flag) && result.is_err());
    let out = w.install(A, &v3, false).unwrap();
    assert_eq!(out.report.chunks_resumed, 0);
    assert_eq!(w.holds(B, &[&v3]).unwrap().version, "3.0.0");
    drop(scenario);
}

/// The power goes while a partition image is written, after its fourth chunk was made
/// durable: the next install resumes the partition there (the root image is not written
/// again), hashing the four chunks before it goes on, and the partition reads back right. A
/// partition whose durable chunks were damaged meanwhile is written again from the start.
#[test]
fn a_cut_while_a_partition_image_is_written_resumes_in_the_partition() {
    let scenario = fail::FailScenario::setup();
    for damaged in [false, true] {
        let (w, disk) = counting_world_with(&[("verity", 1 << 20)]);
        let v1 = w.release("1.0.0", 1, 1);
        w.provision(A, &v1);
        let verity = noise(10 * CHUNK as usize, 9);
        let asset = TestAsset {
            name: "verity".into(),
            kind: AssetKind::Image,
            bytes: verity.clone(),
        };
        let v2 = w.release_with_assets("2.0.0", 2, 2, &[asset]);
        let install = || {
            let mut agent = w.agent_for(A);
            agent.write_options.checkpoint_bytes = 2 * CHUNK;
            agent.install(&request(&v2.bundle, false))
        };
        cut_once_partition_durable(&w, "verity", 4);
        let result = catch_unwind(AssertUnwindSafe(install));
        fail::remove("install::chunk-written");
        assert!(result.is_err(), "the cut stopped the install");
        let record = w.state().partitions["verity"][&B].clone();
        assert_eq!((record.complete, record.durable_chunks), (false, 4));
        assert_eq!(w.boot(), A, "the half-written slot is never booted");

        let partition = w.partition_offset("verity", B);
        if damaged {
            disk.inner
                .write_at(b"bit rot", partition + CHUNK + 100)
                .unwrap();
        }
        disk.take();
        let out = install().unwrap();
        let writes = disk.take();
        let root = out.report;
        assert_eq!(root.chunks_written + root.chunks_zeroed, 0, "{root:?}");
        assert_eq!(out.partitions.len(), 1, "{out:?}");
        let write = out.partitions[0].write;
        let resumed = if damaged { 0 } else { 4 };
        assert_eq!(
            (write.chunks_resumed, write.chunks_written),
            (resumed, 10 - resumed),
            "damaged: {damaged}: {write:?}"
        );
        assert_eq!(
            writes_within(&writes, partition, 4).is_empty(),
            !damaged,
            "the durable chunks are rewritten only when damaged"
        );
        assert_eq!(w.partition_bytes("verity", B, verity.len()), verity);
        let record = w.state().partitions["verity"][&B].clone();
        assert_eq!((record.complete, record.durable_chunks), (true, 0));
        assert_eq!(w.boot(), B);
    }
    drop(scenario);
}

/// Arms `install::chunk-written` to cut the power (on this thread) at the first chunk
/// written once the state file says `durable` chunks of `pair`'s partition in slot B are.
fn cut_once_partition_durable(w: &World, pair: &'static str, durable: u64) {
    let store = StateStore::new(Arc::new(w.state_fs.clone()), STATE_FILE);
    let thread = std::thread::current().id();
    fail::cfg_callback("install::chunk-written", move || {
        if std::thread::current().id() != thread {
            return;
        }
        let state = store.load().unwrap();
        let record = state.partitions.get(pair).and_then(|p| p.get(&B));
        if record.is_some_and(|r| !r.complete && r.durable_chunks >= durable) {
            panic!("{POWER_CUT} in partition {pair}");
        }
    })
    .unwrap();
}
