//! Delta updates with no precomputed diff (docs/DESIGN.md §3, §8): over HTTP, a chunk the running
//! slot already holds, at any offset, is copied from it, so the bytes fetched follow what
//! changed, not the image size.

use std::time::Duration;

use partitions::SlotId::{A, B};
use signer::chunking::Chunking;
use signer::Sha256Digest;
use tandem_tests::{Release, CHUNK_SIZE, PRODUCT};

use super::{poll_installs, Fleet, RepoServer};

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

/// Bytes no release holds.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
