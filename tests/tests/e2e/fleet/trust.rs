//! What the node trusts, attacked through HTTP: a channel that changes between
//! decision and install, fast-forwarded channel versions, slow retrieval, an older stored
//! root, long rotation chains, a clock far behind. Each test checks what an operator would:
//! the slots' bytes, the boot state, `root.json` and the counters in the state directory.

use std::path::Path;
use std::time::{Duration as StdDuration, Instant};

use partitions::io::FileStore;
use partitions::SlotId::{A, B};
use repo_client::HttpOptions;
use signer::metadata::{channel_signed_bytes, sign_document, ChannelSpec};
use signer::{RoleKind, Sha256Digest};
use tandem_tests::{bundle_head, clone_key, root_document, Keys, Release};
use time::{Duration, OffsetDateTime};
use updater::daemon::Poll;
use updater::trust::release_role_id;
use updater::{Error, Refusal};

use super::{daemon, fast_http, Fleet, RepoServer, Trickle, CHANNEL};

const CHANNEL_PATH: &str = "channels/stable.json";

/// A node running v1 from A, pointed at the scripted server in front of its repository.
fn setup() -> (Fleet, RepoServer) {
    let mut f = Fleet::new();
    let server = RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);
    (f, server)
}

/// Channel metadata for `release` signed by `keys`' release keys, with a fixed salt.
fn channel_doc(
    release: &Release,
    version: u64,
    percent: u8,
    expires: OffsetDateTime,
    keys: &Keys,
) -> Vec<u8> {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&hex::decode(&release.manifest_sha256).unwrap());
    let spec = ChannelSpec {
        channel: CHANNEL.into(),
        version,
        expires,
        product: tandem_tests::PRODUCT.into(),
        release_version: semver::Version::parse(&release.version).unwrap(),
        security_version: release.security_version,
        bundle: Fleet::bundle_path(release),
        size: std::fs::metadata(&release.bundle).unwrap().len(),
        manifest_sha256: Sha256Digest(digest),
        percent,
        salt: vec![7; 16],
    };
    sign_document(
        RoleKind::Channel,
        &channel_signed_bytes(&spec).unwrap(),
        &keys.signers(),
    )
    .unwrap()
}

/// Places `release`'s bundle and a channel document naming it in the repository.
fn place(f: &Fleet, release: &Release, channel: &[u8]) {
    let bundle = f.repo.join(Fleet::bundle_path(release));
    std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    std::fs::copy(&release.bundle, bundle).unwrap();
    std::fs::create_dir_all(f.repo.join("channels")).unwrap();
    std::fs::write(f.repo.join(CHANNEL_PATH), channel).unwrap();
}

/// The vendor's next keys: the same root key, three new release keys.
fn rotated_release_keys(keys: &Keys) -> Keys {
    Keys {
        root: clone_key(&keys.root),
        release: Keys::generate().release,
    }
}

/// The root the node stored in its state directory, if any.
fn stored_root(f: &Fleet) -> Option<Vec<u8>> {
    FileStore::read(&f.w.state_fs, Path::new("root.json"), 1 << 20).ok()
}

fn in_a_month() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(30)
}

/// Slot A still holds v1 and B is not bootable (nothing was installed).
fn untouched(f: &Fleet, context: &dyn std::fmt::Display) {
    assert!(f.holds(A, &f.v1), "slot A was written: {context}");
    let b = f.w.boot_state(B);
    assert!(!b.successful && b.priority == 0, "B is bootable: {context}");
}

fn expect_installed(poll: &Poll, version: &str) {
    assert!(
        matches!(poll, Poll::Installed(o) if o.release.version == version),
        "expected {version} installed, got: {poll}"
    );
}

/// 10.1: the decision and the install act on the one document the poll fetched.
#[test]
fn a_channel_changed_after_the_first_get_does_not_start_a_rollout() {
    let (f, server) = setup();
    let v2 = f.w.release("2.0.0", 1, 2);
    let v3 = f.w.release("3.0.0", 1, 3);
    f.publish(&v2, 100);
    let decided = std::fs::read(f.repo.join(CHANNEL_PATH)).unwrap();
    f.publish(&v3, 0);
    // The first GET of the channel gets v2 at 100 %, every later one v3 at 0 %.
    server
        .script()
        .nth
        .insert((CHANNEL_PATH.into(), 1), decided);

    let agent = f.agent(A);
    let poll = daemon(&agent).poll_once().unwrap();
    expect_installed(&poll, "2.0.0");
    assert!(f.holds(B, &v2));
    assert!(!f.holds(B, &v3));
    assert_eq!(server.script().requests("GET", CHANNEL_PATH), 1);
    assert_eq!(f.w.boot(), B);
}

/// 10.2: compromised release keys fast-forward the channel to 2^64−1; a root rotating the
/// release role is stored as soon as it verifies (even when the channel then fails) and
/// starts the channel's versions afresh.
#[test]
fn a_root_rotating_the_release_keys_recovers_from_a_fast_forward() {
    let (mut f, _server) = setup();
    let evil = f.w.release("9.0.0", 1, 9);
    place(
        &f,
        &evil,
        &channel_doc(&evil, u64::MAX, 0, in_a_month(), &f.w.keys),
    );
    let agent = f.agent(A);
    let poll = daemon(&agent).poll_once().unwrap();
    assert!(
        matches!(poll, Poll::Skipped(Refusal::NotInRollout { percent: 0 })),
        "{poll}"
    );
    assert_eq!(f.w.counters().channels[CHANNEL].version, u64::MAX);

    // The vendor rotates the release keys in root v2 and (by mistake) an expired channel.
    f.w.keys = rotated_release_keys(&f.w.keys);
    let root2 = root_document(&f.w.keys, 2, &[&f.w.keys.root]);
    std::fs::write(f.repo.join("2.root.json"), &root2).unwrap();
    let v2 = f.w.release("2.0.0", 1, 2);
    let yesterday = OffsetDateTime::now_utc() - Duration::days(1);
    place(&f, &v2, &channel_doc(&v2, 1, 100, yesterday, &f.w.keys));
    let error = daemon(&agent).poll_once().unwrap_err();
    assert!(error.to_string().contains("expired"), "{error}");
    assert_eq!(error.exit_code(), 3, "{error}");
    assert_eq!(
        stored_root(&f).as_ref(),
        Some(&root2),
        "the verified root v2 was not stored"
    );
    untouched(&f, &error);

    // Version 1 of the channel under the new release keys: accepted and installed.
    place(&f, &v2, &channel_doc(&v2, 1, 100, in_a_month(), &f.w.keys));
    expect_installed(&daemon(&agent).poll_once().unwrap(), "2.0.0");
    assert!(f.holds(B, &v2));
    let seen = &f.w.counters().channels[CHANNEL];
    assert_eq!(seen.version, 1);
    let root = signer::verify::trust_root(
        &root2,
        OffsetDateTime::now_utc(),
        &signer::Limits::default(),
    )
    .unwrap();
    assert_eq!(seen.release_role, release_role_id(&root));
}

/// An agent that wants its metadata within a second and its bundle at 1 GiB/s.
fn impatient(f: &Fleet) -> updater::Agent {
    let mut agent = f.agent(A);
    agent.http_options = HttpOptions {
        base_deadline: StdDuration::from_secs(1),
        min_throughput: 1 << 30,
        ..fast_http()
    };
    agent
}

/// Runs `attempt`, which must fail on `path` with a network error in far less time than the
/// trickle would take (the bound only catches a client that waits for the whole trickle).
fn fails_in_time(path: &str, attempt: impl FnOnce() -> updater::Result<Poll>) -> Error {
    let started = Instant::now();
    let error = attempt().expect_err("the slow server must fail the attempt");
    assert!(
        started.elapsed() < StdDuration::from_secs(60),
        "the agent waited for the trickle: {error}"
    );
    assert_eq!(error.exit_code(), 8, "{error}");
    assert!(error.to_string().contains(path), "{error}");
    error
}

const SLOWLY: StdDuration = StdDuration::from_millis(300);

/// 10.5: a channel file sent a byte every 300 ms (minutes for the whole file).
#[test]
fn a_trickled_channel_file_fails_the_poll_with_a_network_error() {
    let (f, server) = setup();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let trickle = Trickle {
        from: 0,
        every: SLOWLY,
    };
    server.script().trickle.insert(CHANNEL_PATH.into(), trickle);
    let agent = impatient(&f);
    let error = fails_in_time(CHANNEL_PATH, || daemon(&agent).poll_once());
    untouched(&f, &error);
}

/// 10.5: a bundle whose payload is sent a byte every 300 ms: the resuming reader gives up.
#[test]
fn a_trickled_bundle_fails_the_install_with_a_network_error() {
    let (f, server) = setup();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let trickle = Trickle {
        from: bundle_head(&v2.bundle).header().payload_offset(),
        every: SLOWLY,
    };
    let path = Fleet::bundle_path(&v2);
    server.script().trickle.insert(path.clone(), trickle);
    let agent = impatient(&f);
    let error = fails_in_time(&path, || daemon(&agent).poll_once());
    untouched(&f, &error);
}

/// 10.6: the OS ships root v2 revoking the release keys; the stored root is still v1.
#[test]
fn a_newer_shipped_root_wins_over_an_older_stored_one() {
    let mut f = Fleet::new();
    let revoked = f.w.release("2.0.0", 1, 2);
    let root1 = std::fs::read(&f.w.root_path).unwrap();
    f.w.state_fs
        .write_atomic(Path::new("root.json"), &root1)
        .unwrap();
    f.w.keys = rotated_release_keys(&f.w.keys);
    std::fs::write(
        &f.w.root_path,
        root_document(&f.w.keys, 2, &[&f.w.keys.root]),
    )
    .unwrap();

    let error = f.w.install(A, &revoked, false).unwrap_err();
    assert!(error.to_string().contains("threshold not met"), "{error}");
    assert_eq!(error.exit_code(), 3, "{error}");
    untouched(&f, &error);
    // A bundle signed by the new release keys installs.
    let v3 = f.w.release("3.0.0", 1, 3);
    f.w.install(A, &v3, false).unwrap();
    assert!(f.holds(B, &v3));
}

/// 10.7: 34 rotations (roots 2 to 35): the first poll stores root 33 and fails, the next
/// continues from there and installs.
#[test]
fn more_than_32_root_rotations_continue_on_the_next_poll() {
    let (f, _server) = setup();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let roots: Vec<Vec<u8>> = (2..=35)
        .map(|version| root_document(&f.w.keys, version, &[&f.w.keys.root]))
        .collect();
    for (version, root) in (2..).zip(&roots) {
        std::fs::write(f.repo.join(format!("{version}.root.json")), root).unwrap();
    }
    let agent = f.agent(A);
    let mut node = daemon(&agent);

    let error = node.poll_once().unwrap_err();
    assert!(
        error.to_string().contains("more than 32 root rotations"),
        "{error}"
    );
    assert_eq!(error.exit_code(), 3, "{error}");
    assert_eq!(
        stored_root(&f).as_ref(),
        Some(&roots[31]),
        "root 33 was not stored"
    );
    untouched(&f, &error);

    expect_installed(&node.poll_once().unwrap(), "2.0.0");
    assert!(f.holds(B, &v2));
    assert_eq!(
        stored_root(&f).as_ref(),
        Some(&roots[33]),
        "root 35 was not stored"
    );
}

/// 10.9: once the node verified a manifest created now, a clock years behind no longer
/// accepts metadata that expired yesterday.
#[test]
fn a_clock_far_behind_refuses_metadata_older_than_a_signed_time_seen() {
    let (f, server) = setup();
    let v2 = f.w.release("2.0.0", 1, 2);
    let yesterday = OffsetDateTime::now_utc() - Duration::days(1);
    place(&f, &v2, &channel_doc(&v2, 1, 100, yesterday, &f.w.keys));
    let behind = OffsetDateTime::now_utc() - Duration::days(5 * 365);
    let lagging = |booted| f.agent(booted).with_clock(move || behind);
    let http = repo_client::Http::new(&server.url, fast_http()).unwrap();
    // By its own clock, the node would accept the expired channel.
    lagging(A).verify_channel(&http, CHANNEL, None).unwrap();

    // It verifies a manifest created now (installs v2's bundle file, boots and commits it) …
    f.w.install(A, &v2, false).unwrap();
    assert_eq!(f.w.boot(), B);
    f.w.agent_for(B).boot_check().unwrap();
    let seen = f.w.counters().newest_signed_time.unwrap();
    assert!(seen > yesterday, "newest signed time {seen}");
    // … and from then on refuses the expired channel, its clock years behind.
    let slots = f.slot_hashes();
    let error = daemon(&lagging(B)).poll_once().unwrap_err();
    assert!(
        error.to_string().contains("channel metadata expired at"),
        "{error}"
    );
    assert_eq!(error.exit_code(), 3, "{error}");
    assert_eq!(f.slot_hashes(), slots);
}
