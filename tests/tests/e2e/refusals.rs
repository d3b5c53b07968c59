//! Refusals: hostile, damaged or inapplicable updates are refused with a clear message and
//! a documented exit code, and the active slot is never written (hashed before and after).

use std::path::{Path, PathBuf};

use partitions::SlotId::{self, A, B};
use tandem_tests::{
    bundle_head, fake_uki, image, request, root_document, Backend, Keys, Release, TestAsset, World,
};
use time::{Duration, OffsetDateTime};
use updater::{Error, InstallRequest};

/// A node running v1 from slot A.
fn node() -> (World, Release) {
    let w = World::new(Backend::Gpt);
    let v1 = w.release("1.0.0", 1, 1);
    w.provision(A, &v1);
    (w, v1)
}

/// Runs `request` on a node booted from `booted`, expects a refusal, and checks that neither
/// the booted slot nor the boot state changed. Returns the error.
fn refused(
    w: &World,
    booted: SlotId,
    request: &InstallRequest,
    code: u8,
    needles: &[&str],
) -> Error {
    refused_with(w, booted, request, code, needles, |a| a)
}

fn refused_with(
    w: &World,
    booted: SlotId,
    request: &InstallRequest,
    code: u8,
    needles: &[&str],
    agent: impl FnOnce(updater::Agent) -> updater::Agent,
) -> Error {
    let active = w.slot_hash(booted);
    let boot = [w.boot_state(A), w.boot_state(B)];
    let error = agent(w.agent_for(booted))
        .install(request)
        .expect_err("the install must be refused");
    let message = error.to_string();
    assert_eq!(error.exit_code(), code, "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    assert_eq!(
        w.slot_hash(booted),
        active,
        "the active slot was written: {message}"
    );
    assert_eq!(
        [w.boot_state(A), w.boot_state(B)],
        boot,
        "the boot state changed: {message}"
    );
    error
}

fn tampered(w: &World, release: &Release, name: &str, at: u64) -> PathBuf {
    let mut bytes = std::fs::read(&release.bundle).unwrap();
    let i = usize::try_from(at).unwrap();
    bytes[i] = flip(bytes[i]);
    let path = w.path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Another byte of the same class, whatever the byte: a lowercase hex digit becomes another
/// lowercase hex digit (so a signature's JSON still parses and the signature check itself
/// must catch it, whichever random key signed), another lowercase letter another letter.
fn flip(b: u8) -> u8 {
    match b {
        b'0'..=b'8' | b'a'..=b'e' | b'g'..=b'y' => b + 1,
        b'9' => b'0',
        b'f' => b'a',
        b'z' => b'g',
        _ => b ^ 0x01,
    }
}

#[test]
fn flip_keeps_hex_digits_hex_and_changes_every_byte() {
    for b in 0..=u8::MAX {
        assert_ne!(flip(b), b);
        if b.is_ascii_digit() || (b'a'..=b'f').contains(&b) {
            let flipped = flip(b);
            assert!(
                flipped.is_ascii_digit() || (b'a'..=b'f').contains(&flipped),
                "{b} -> {flipped}"
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8], from: u64) -> u64 {
    let from = usize::try_from(from).unwrap();
    let at = haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)));
    (from + at) as u64
}

#[test]
fn tampered_bundles_are_refused() {
    let (w, _) = node();
    let v2 = w.release("2.0.0", 2, 2);
    let head = bundle_head(&v2.bundle);
    let bytes = std::fs::read(&v2.bundle).unwrap();
    let manifest = head.header().manifest_range();
    let signatures = head.header().signature_block_range();
    let product_at = find(&bytes, b"acme-edge", manifest.start);
    assert!(manifest.contains(&product_at));
    let sig_at = find(&bytes, b"\"sig\":\"", signatures.start) + 10;
    assert!(signatures.contains(&sig_at));
    let cases = [
        ("header", 0, vec![]),
        ("manifest", product_at, vec!["threshold not met"]),
        ("signature-block", sig_at, vec!["threshold not met"]),
    ];
    for (region, at, needles) in cases {
        let path = tampered(&w, &v2, &format!("tampered-{region}.tandem"), at);
        let mut all = needles.clone();
        let name = path.display().to_string();
        all.push(&name);
        refused(&w, A, &request(&path, false), 3, &all);
        assert!(
            matches!(w.state().phase, updater::state::Phase::Idle),
            "{region}: verification fails before the state changes"
        );
    }

    // The payload is only checked chunk by chunk, before each chunk is written: the install
    // stops there with the target marked unbootable, and the active slot untouched.
    let payload_at = head.header().payload_offset() + 100;
    let path = tampered(&w, &v2, "tampered-payload.tandem", payload_at);
    let active = w.slot_hash(A);
    let error = w.agent_for(A).install(&request(&path, false)).unwrap_err();
    assert_eq!(error.exit_code(), 3, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("chunk 0") && message.contains(&path.display().to_string()),
        "{message}"
    );
    assert_eq!(w.slot_hash(A), active);
    assert!(!w.boot_state(B).is_bootable());
    assert_eq!(w.boot(), A);
    // The genuine bundle then installs.
    assert_eq!(w.install(A, &v2, false).unwrap().target, B);
    assert_eq!(w.holds(B, &[&v2]).unwrap().version, "2.0.0");
}

#[test]
fn another_product_is_refused() {
    let (w, _) = node();
    let other = w.release_of("2.0.0", 2, image(64 << 10, 9), "other-product");
    refused(
        &w,
        A,
        &request(&other.bundle, false),
        4,
        &["other-product", "acme-edge"],
    );
}

#[test]
fn a_uki_is_refused_where_the_backend_keeps_no_boot_files() {
    let (w, _) = node();
    let uki = TestAsset::new(signer::AssetKind::Uki, fake_uki("2", "quiet"));
    let bundle = w.release_with_assets("2.0.0", 2, 2, &[uki]).bundle;
    let other = w.slot_hash(B);
    let error = refused(
        &w,
        A,
        &request(&bundle, false),
        4,
        &[
            "this release carries boot files (uki)",
            "the gpt backend has no place for them",
        ],
    );
    assert!(
        matches!(error, Error::Refused(updater::Refusal::NoBootFiles { .. })),
        "{error:?}"
    );
    assert_eq!(w.slot_hash(B), other, "the inactive slot was written");
}

#[test]
fn a_security_version_below_the_floor_is_refused() {
    let (w, _) = node();
    let v2 = w.release("2.0.0", 5, 2);
    let v3 = w.release("3.0.0", 4, 3);
    w.install(A, &v2, false).unwrap();
    assert_eq!(w.boot(), B);
    w.agent_for(B).boot_check().unwrap();
    assert_eq!(w.counters().security_floor, 5);
    let a_before = w.slot_hash(A);
    refused(
        &w,
        B,
        &request(&v3.bundle, false),
        4,
        &["security version 4", "floor 5"],
    );
    assert_eq!(
        w.slot_hash(A),
        a_before,
        "the other slot is not touched either"
    );
}

#[test]
fn an_image_larger_than_the_slot_is_refused() {
    let (w, _) = node();
    let len = usize::try_from(tandem_tests::SLOT_SIZE).unwrap() + (64 << 10);
    let big = w.release_of("2.0.0", 2, image(len, 5), tandem_tests::PRODUCT);
    let b_before = w.slot_hash(B);
    refused(&w, A, &request(&big.bundle, false), 4, &["slot holds only"]);
    assert_eq!(
        w.slot_hash(B),
        b_before,
        "refused before anything is written"
    );
}

#[test]
fn install_while_the_booted_slot_is_in_trial_is_refused() {
    let (w, _) = node();
    let v2 = w.release("2.0.0", 2, 2);
    let v3 = w.release("3.0.0", 3, 3);
    w.install(A, &v2, false).unwrap();
    assert_eq!(w.boot(), B);
    // boot-check has not run yet: A is the last known good slot.
    let a_before = w.slot_hash(A);
    refused(
        &w,
        B,
        &request(&v3.bundle, false),
        4,
        &["not committed yet", "boot-check"],
    );
    assert_eq!(
        w.slot_hash(A),
        a_before,
        "the last known good slot is never overwritten"
    );
}

fn repo_request(repo: &Path) -> InstallRequest {
    tandem_tests::repo_request(repo, "stable")
}

#[test]
fn a_repository_installs_and_its_channel_version_is_remembered() {
    let (w, _) = node();
    let v2 = w.release("2.0.0", 2, 2);
    let repo = w.path("usb");
    assert_eq!(w.publish(&repo, "stable", &v2), 1);
    let old_repo = w.path("usb-old");
    copy_dir(&repo, &old_repo);
    assert_eq!(w.publish(&repo, "stable", &v2), 2);

    let out = w.agent_for(A).install(&repo_request(&repo)).unwrap();
    assert_eq!(out.target, B);
    assert_eq!(w.counters().channels["stable"].version, 2);
    // Replayed older metadata (a stale stick, or an attacker's) is refused.
    refused(
        &w,
        A,
        &repo_request(&old_repo),
        3,
        &["channel metadata version 1 is older than version 2"],
    );
}

#[test]
fn expired_channel_metadata_is_refused() {
    let (w, _) = node();
    let v2 = w.release("2.0.0", 2, 2);
    let repo = w.path("usb");
    w.publish(&repo, "stable", &v2);
    let later = OffsetDateTime::now_utc() + Duration::days(31);
    refused_with(&w, A, &repo_request(&repo), 3, &["expired"], |a| {
        a.with_clock(move || later)
    });
    // The same metadata, now: accepted.
    assert_eq!(
        w.agent_for(A).install(&repo_request(&repo)).unwrap().target,
        B
    );
}

#[test]
fn a_bundle_other_than_the_channel_names_is_refused() {
    let (w, _) = node();
    let v2 = w.release("2.0.0", 2, 2);
    let v3 = w.release("3.0.0", 3, 3);
    let repo = w.path("usb");
    w.publish(&repo, "stable", &v2);
    // Swap in another validly signed bundle under the name the channel gives.
    let named = repo.join("bundles/acme-edge-2.0.0.tandem");
    std::fs::copy(&v3.bundle, &named).unwrap();
    refused(
        &w,
        A,
        &repo_request(&repo),
        3,
        &["does not match the channel's release", "manifest_sha256"],
    );
}

#[test]
fn a_repository_root_not_chained_from_the_trusted_one_is_refused() {
    let (w, _) = node();
    let v2 = w.release("2.0.0", 2, 2);
    let repo = w.path("usb");
    w.publish(&repo, "stable", &v2);
    // An attacker's "rotation": root version 2 naming their keys, signed only by them.
    let attacker = Keys::generate();
    std::fs::write(
        repo.join("2.root.json"),
        root_document(&attacker, 2, &[&attacker.root]),
    )
    .unwrap();
    std::fs::copy(repo.join("2.root.json"), repo.join("root.json")).unwrap();
    refused(&w, A, &repo_request(&repo), 3, &["root chain"]);
    assert!(
        !w.state_fs
            .snapshot()
            .keys()
            .any(|p| p.ends_with("root.json")),
        "the attacker's root is not remembered"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
