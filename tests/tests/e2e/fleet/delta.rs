//! Delta updates with no precomputed diff (docs/DESIGN.md §3, §8): over HTTP, a chunk the running
//! slot already holds, at any offset, is copied from it, so the bytes fetched follow what
//! changed, not the image size.

use std::time::Duration;

use partitions::SlotId::{A, B};
use signer::chunking::Chunking;
use signer::{AssetKind, Sha256Digest};
use tandem_tests::{noise, Backend, Release, TestAsset, World, CHUNK_SIZE, IMAGE_LEN, PRODUCT};

use super::{daemon, poll_installs, Fleet, RepoServer, TandemServer};

#[test]
fn a_release_that_changes_two_chunks_fetches_about_two_chunks() {
    let mut f = Fleet::new();
    let mut image = f.v1.image.clone();
    // Two chunks change; every other chunk of v2 is already in slot A.
    let chunk = CHUNK_SIZE as usize;
    image[3 * chunk + 17] ^= 0xff;
    image[9 * chunk..9 * chunk + 100].fill(0x5a);
    let v2 = f.w.release_of("2.0.0", 1, image, PRODUCT);
    f.publish(&v2, 100);
    let bundle_size = std::fs::metadata(&v2.bundle).unwrap().len();
    let server = RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);

    let agent = f.agent(A);
    let outcome = poll_installs(&agent);

    assert_eq!(outcome.target, B);
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    assert_eq!(outcome.report.chunks_written, 2, "{:?}", outcome.report);
    assert!(outcome.report.chunks_reused > 0, "{:?}", outcome.report);
    // Whole chunks, except perhaps the image's shorter last one.
    let reused = outcome.report.chunks_reused * u64::from(CHUNK_SIZE);
    let bytes_reused = outcome.report.bytes_reused;
    assert!(
        bytes_reused <= reused && bytes_reused > reused - u64::from(CHUNK_SIZE),
        "{:?}",
        outcome.report
    );
    let sent = server.script().bundle_sent;
    eprintln!(
        "fleet delta: {sent} bundle bytes fetched of {bundle_size} ({:.1} %), {} chunks reused, {} fetched",
        100.0 * sent as f64 / bundle_size as f64,
        outcome.report.chunks_reused,
        outcome.report.chunks_written
    );
    // The head (header, manifest, signatures) plus two compressed chunks.
    assert!(
        sent < bundle_size / 4,
        "{sent} of {bundle_size} bytes fetched for a two-chunk change"
    );
}

/// A tree index (FORMAT §3.2.1) in 4 KiB chunks, groups of 64: the node takes the hashes of
/// the groups its running slot holds at their own offsets from the slot, proven by the
/// groups' signed entries, and fetches only the changed group's.
#[test]
fn the_hashes_of_groups_the_node_holds_are_not_fetched() {
    let mut f = Fleet::new();
    let block = 4096;
    let mut image = f.v1.image.clone();
    // One block of the third group (chunks 128–191) changes.
    image[150 * block..151 * block].copy_from_slice(&noise(block, 9));
    let v2 = f.w.release_signed("2.0.0", 1, image, PRODUCT, &[], |o| {
        o.chunking = Chunking::fixed(block as u32);
    });
    f.publish(&v2, 100);
    let server = RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);

    let report = poll_installs(&f.agent(A)).report;
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    let bundle = std::fs::read(&v2.bundle).unwrap();
    let index_len = u64::from(u32::from_le_bytes(bundle[20..24].try_into().unwrap()));
    eprintln!(
        "tree index: {} of {index_len} index bytes fetched",
        report.index_bytes_read
    );
    // Of the six groups' columns only the changed one's, about a sixth, with the lengths and
    // the table.
    assert!(
        report.index_bytes_read > 0 && report.index_bytes_read < index_len / 3,
        "{} of a {index_len}-byte index fetched: {report:?}",
        report.index_bytes_read
    );

    // From a local file the whole index is read.
    let local = f
        .agent(A)
        .install(&tandem_tests::request(&v2.bundle, false))
        .unwrap();
    assert_eq!(local.report.index_bytes_read, index_len);
}

#[test]
fn a_local_bundle_is_read_whole_not_reused() {
    let f = Fleet::new();
    let v2 = f.w.release_of("2.0.0", 1, f.v1.image.clone(), PRODUCT);
    let agent = f.agent(A);
    let outcome = agent
        .install(&tandem_tests::request(&v2.bundle, false))
        .unwrap();
    assert_eq!(outcome.report.chunks_reused, 0, "{:?}", outcome.report);
    assert!(f.holds(B, &v2));
}

/// A release whose data moved (as in a new filesystem build), signed with 4 KiB chunks and
/// v1 as the previous release: the chunks v1 holds sit in shared frames the node never
/// fetches, found at their new offsets in the active slot; the new ones are fetched in frames
/// of their own.
#[test]
fn moved_data_is_found_anywhere_in_the_active_slot() {
    let mut f = Fleet::new();
    let block = 4096;
    let v1 = f.v1.image.clone();
    // Three new blocks in front shift everything by 12 KiB; one block in the middle changes.
    let mut image = noise(3 * block, 7);
    image.extend_from_slice(&v1[..v1.len() - 3 * block]);
    let middle = image.len() / 2 / block * block;
    image[middle..middle + block].copy_from_slice(&noise(block, 8));
    let previous = v1.chunks(block).map(Sha256Digest::of).collect();
    let v2 =
        f.w.release_signed("2.0.0", 1, image.clone(), PRODUCT, &[], |o| {
            o.chunking = Chunking::fixed(block as u32);
            o.frame_bytes = 1 << 20;
            o.previous = previous;
        });
    f.publish(&v2, 100);
    let server = RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);

    let outcome = poll_installs(&f.agent(A));
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    let report = outcome.report;
    // The three leading new blocks share one frame, the changed one has its own.
    assert_eq!(
        (report.chunks_written, report.ranges_read),
        (4, 2),
        "{report:?}"
    );
    assert!(report.bytes_read < 5 * block as u64, "{report:?}");
    let zero_bytes = image
        .chunks(block)
        .filter(|b| b.iter().all(|&x| x == 0))
        .count()
        * block;
    assert_eq!(
        report.bytes_reused,
        (image.len() - zero_bytes - 4 * block) as u64,
        "every other stored block is copied from slot A: {report:?}"
    );
    assert_eq!(report.bytes_reused_in_place, 0, "{report:?}");
}

/// A release that changes v1's image in many scattered 4 KiB blocks, signed with 4 KiB
/// chunks and v1 as the previous release, published on the fleet's channel; returned with
/// the indices of the blocks changed. Every sixth block changes (one of v1's random blocks; those in the two
/// zero chunks stay zero) and block 3 too: the frames of blocks 0, 3 and 6 are apart by a
/// zero chunk and a held text frame of a few bytes, so they are read in one part; every
/// other changed frame is apart from the next by a held random frame (over 1 KiB): a part
/// alone.
pub(super) fn scattered_delta(f: &mut Fleet) -> (Release, Vec<usize>) {
    let block = 4096;
    let mut image = f.v1.image.clone();
    let zero_chunks = 3 * CHUNK_SIZE as usize / block..5 * CHUNK_SIZE as usize / block;
    let changed: Vec<usize> = (0..image.len() / block)
        .filter(|i| (i % 6 == 0 && !zero_chunks.contains(i)) || *i == 3)
        .collect();
    for &i in &changed {
        image[i * block..(i + 1) * block].copy_from_slice(&noise(block, 100 + i as u64));
    }
    let previous = f.v1.image.chunks(block).map(Sha256Digest::of).collect();
    let v2 = f.w.release_signed("2.0.0", 1, image, PRODUCT, &[], |o| {
        o.chunking = Chunking::fixed(block as u32);
        o.frame_bytes = 1 << 20;
        o.previous = previous;
    });
    f.publish(&v2, 100);
    (v2, changed)
}

#[test]
fn scattered_changes_are_fetched_in_parts_several_in_flight() {
    let mut f = Fleet::new();
    let (v2, changed) = scattered_delta(&mut f);
    let server = RepoServer::start(&f.repo);
    // Each answer takes a while, as from a distant server: fetched one at a time, the
    // requests would never overlap.
    server.script().delay = Duration::from_millis(20);
    f.point_at(&server.url, "node-1", None);

    let outcome = poll_installs(&f.agent(A));
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    let report = outcome.report;
    let n = changed.len() as u64;
    assert!(n > 50, "{n} blocks changed");
    // One part per changed frame, but blocks 0, 3 and 6 share one.
    assert_eq!(
        (report.chunks_written, report.ranges_read),
        (n, n - 2),
        "{report:?}"
    );
    // The changed frames (random bytes: stored about whole) and two small gaps.
    assert!(
        report.bytes_read >= n * 4096 && report.bytes_read < n * (4096 + 256),
        "{report:?}"
    );
    let most = server.script().most_in_flight;
    eprintln!("fleet scattered delta: {report}; at most {most} bundle requests at once");
    assert!(most > 1, "the parts were fetched one at a time");
}

/// A node provisioned with a release of random and text blocks and no zeros (so the bundle's
/// frames hold 1 MiB of chunks each), and a v2 with every sixth 4 KiB block rewritten
/// (random bytes), signed with 4 KiB chunks, its chunk store beside it, and without
/// `previous`: the signer knows nothing of the release the node runs. Published on the
/// fleet's channel; returned with the number of blocks changed.
fn unlisted_delta(f: &mut Fleet) -> (Release, u64) {
    let block = 4096;
    let mut v1 = noise(IMAGE_LEN, 21);
    for text in v1.chunks_mut(block).skip(1).step_by(2) {
        text.copy_from_slice(&b"tandem ".repeat(block / 7 + 1)[..block]);
    }
    f.v1 = f.w.release_of("1.0.0", 1, v1.clone(), PRODUCT);
    f.w.provision(A, &f.v1);
    let mut image = v1;
    let changed: Vec<usize> = (0..image.len() / block).filter(|i| i % 6 == 0).collect();
    for &i in &changed {
        image[i * block..(i + 1) * block].copy_from_slice(&noise(block, 300 + i as u64));
    }
    let v2 = f.w.release_with_store("2.0.0", 1, image, |o| {
        o.chunking = Chunking::fixed(block as u32);
        o.frame_bytes = 1 << 20;
    });
    f.publish(&v2, 100);
    (v2, changed.len() as u64)
}

/// A node on a release the signer was not told of: the frames around what it lacks hold
/// 1 MiB of chunks, so it fetches the lacking chunks' own frames from the chunk store
/// instead, through the real `tandem-server`.
#[test]
fn a_node_on_an_unlisted_release_fetches_its_lacking_chunks_from_the_store() {
    let mut f = Fleet::new();
    let (v2, n) = unlisted_delta(&mut f);
    let repo_bundle = f.repo.join(Fleet::bundle_path(&v2));
    let store = std::fs::metadata(proto::chunk_store_path(&repo_bundle.to_string_lossy()));
    assert!(store.is_ok(), "publish copied the chunk store along");
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    f.point_at(&server.url, "node-1", None);

    let outcome = poll_installs(&f.agent(A));
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    let report = outcome.report;
    eprintln!("unlisted delta: {report}");
    assert_eq!(report.chunks_written, n, "{report:?}");
    // The changed blocks' own frames (random bytes: stored about whole) and the store's
    // first byte, looked at once: not the 1 MiB frames around them.
    assert!(
        report.bytes_read >= n * 4096 && report.bytes_read <= n * (4096 + 64) + 1,
        "{report:?}"
    );
    assert_eq!(
        report.ranges_read, n,
        "one range per changed block: {report:?}"
    );
}

/// The same release with its chunk store gone from the repository: the node fetches whole
/// frames, as before there were stores, and installs it all the same.
#[test]
fn without_its_store_the_node_fetches_whole_frames() {
    let mut f = Fleet::new();
    let (v2, n) = unlisted_delta(&mut f);
    let repo_bundle = f.repo.join(Fleet::bundle_path(&v2));
    std::fs::remove_file(proto::chunk_store_path(&repo_bundle.to_string_lossy())).unwrap();
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    f.point_at(&server.url, "node-1", None);

    let outcome = poll_installs(&f.agent(A));
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    let report = outcome.report;
    assert!(report.chunks_written > n, "whole frames: {report:?}");
    assert!(report.bytes_read > report.bundle_bytes / 2, "{report:?}");
}

/// A chunk store whose frame of a chunk the node lacks was changed on the server: the
/// decoded chunk does not hash to its signed record, so nothing of it is written; the
/// install fails naming the store, the target slot stays unbootable and the node keeps
/// booting its release.
#[test]
fn a_corrupted_store_frame_is_refused_and_the_node_keeps_its_release() {
    let mut f = Fleet::new();
    let (v2, _) = unlisted_delta(&mut f);
    let repo_bundle = f.repo.join(Fleet::bundle_path(&v2));
    let store_path = proto::chunk_store_path(&repo_bundle.to_string_lossy());
    let mut store = std::fs::read(&store_path).unwrap();
    // A byte in the middle of every 4 KiB of the store: inside the stored bytes of the
    // changed random blocks' frames (about 4 KiB each), which the node fetches.
    for at in (2048..store.len()).step_by(4096) {
        store[at] ^= 0x01;
    }
    std::fs::write(&store_path, store).unwrap();
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    f.point_at(&server.url, "node-1", None);
    let before = f.slot_hashes();

    let agent = f.agent(A);
    let error = match daemon(&agent).poll_once() {
        Err(error) => error.to_string(),
        Ok(other) => panic!("a corrupted store frame was installed: {other}"),
    };
    assert!(
        error.contains(".tandem.chunks") && error.contains("sha256 mismatch"),
        "{error}"
    );
    assert!(!f.holds(B, &v2));
    assert_eq!(f.slot_hashes()[0], before[0], "slot A untouched");
    assert_eq!(f.w.boot(), A, "the node boots its release");
}

/// A node on v1 whose active partition `verity-a` holds v1's 640 KiB partition image, and a
/// v2 with the same root image and that partition image with 100 bytes of chunk 3 changed,
/// published on the fleet's channel. Returned with both partition images.
fn partition_delta() -> (Fleet, Release, Vec<u8>, Vec<u8>) {
    let w = World::with_pairs(Backend::Gpt, &[("verity", 1 << 20)]);
    let v1 = w.release("1.0.0", 1, 1);
    w.provision(A, &v1);
    let chunk = CHUNK_SIZE as usize;
    let old = noise(10 * chunk, 41);
    w.partition("verity", A).write_at(&old, 0).unwrap();
    let mut new = old.clone();
    new[3 * chunk + 500..3 * chunk + 600].copy_from_slice(&noise(100, 42));
    let asset = TestAsset {
        name: "verity".into(),
        kind: AssetKind::Image,
        bytes: new.clone(),
    };
    let v2 = w.release_signed("2.0.0", 1, v1.image.clone(), PRODUCT, &[asset], |_| {});
    let repo = w.path("repo");
    let f = Fleet { w, v1, repo };
    f.publish(&v2, 100);
    (f, v2, old, new)
}

/// Over HTTP, a partition image that changed in one chunk fetches that chunk: the others
/// are copied from the active slot's partition, each hashed against the signed entry.
#[test]
fn a_partition_image_that_changed_a_little_fetches_about_the_changed_chunk() {
    let (mut f, v2, _, new) = partition_delta();
    let server = RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);

    let outcome = poll_installs(&f.agent(A));
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    assert_eq!(f.w.partition_bytes("verity", B, new.len()), new);
    let write = outcome.partitions[0].write;
    assert_eq!(outcome.partitions[0].asset, "verity");
    assert_eq!(
        (write.chunks_written, write.chunks_reused),
        (1, 9),
        "{write:?}"
    );
    assert_eq!(write.bytes_reused, 9 * u64::from(CHUNK_SIZE), "{write:?}");
    // One chunk of random bytes, stored about whole.
    assert!(write.bytes_read < u64::from(CHUNK_SIZE) + 1024, "{write:?}");
    let sent = server.script().bundle_sent;
    eprintln!(
        "partition delta: {sent} bundle bytes fetched for a {}-byte partition image; {outcome}",
        new.len()
    );
    // The head and one chunk of the partition image (the root image is v1's: all copied).
    assert!(
        sent < new.len() as u64 / 4,
        "{sent} bytes fetched for a one-chunk change of a {}-byte image",
        new.len()
    );
    assert_eq!(
        outcome.total().bytes_read,
        outcome.report.bytes_read + write.bytes_read
    );
}

/// A chunk of the active slot's partition that no longer holds what v1 wrote there (bit rot,
/// tampering) is not copied: its hash does not match the signed entry, so it is fetched, and
/// the active slot's partition and root are left as they were.
#[test]
fn a_damaged_chunk_in_the_active_partition_is_fetched_not_copied() {
    let (mut f, v2, old, new) = partition_delta();
    let chunk = CHUNK_SIZE as usize;
    f.w.partition("verity", A)
        .write_at(b"bit rot", 6 * chunk as u64 + 10)
        .unwrap();
    let active = f.w.partition_bytes("verity", A, 1 << 20);
    assert_ne!(active[..old.len()], old[..]);
    let root_a = f.w.slot_hash(A);
    let server = RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);

    let outcome = poll_installs(&f.agent(A));
    let write = outcome.partitions[0].write;
    assert_eq!(
        (write.chunks_written, write.chunks_reused),
        (2, 8),
        "{write:?}"
    );
    assert_eq!(f.w.partition_bytes("verity", B, new.len()), new);
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    assert_eq!(f.w.partition_bytes("verity", A, 1 << 20), active);
    assert_eq!(f.w.slot_hash(A), root_a);
}

/// The changed chunk already in place in the target slot's partition (as an earlier install
/// left it) is copied from there: nothing of the partition image is fetched.
#[test]
fn a_changed_chunk_in_place_in_the_target_partition_is_not_fetched() {
    let (mut f, _, _, new) = partition_delta();
    let chunk = CHUNK_SIZE as usize;
    let changed = &new[3 * chunk..4 * chunk];
    f.w.partition("verity", B)
        .write_at(changed, 3 * chunk as u64)
        .unwrap();
    let server = RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);

    let outcome = poll_installs(&f.agent(A));
    let write = outcome.partitions[0].write;
    assert_eq!(
        (write.chunks_written, write.chunks_reused, write.bytes_read),
        (0, 10, 0),
        "{write:?}"
    );
    assert_eq!(
        write.bytes_reused_in_place,
        u64::from(CHUNK_SIZE),
        "{write:?}"
    );
    assert_eq!(f.w.partition_bytes("verity", B, new.len()), new);
}
