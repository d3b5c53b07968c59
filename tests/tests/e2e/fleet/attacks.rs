//! A server that lies (docs/DESIGN.md §9), through HTTP: each attack is refused with a specific
//! error, nothing written to the active slot (hashed before and after), its boot state
//! untouched, and no rotated root trusted.

use std::path::Path;

use partitions::SlotId::{A, B};
use repo_client::Http;
use signer::metadata::{channel_signed_bytes, sign_document, ChannelSpec};
use signer::{RoleKind, Sha256Digest};
use tandem_tests::{bundle_head, root_document, Keys, Release};
use time::{Duration, OffsetDateTime};
use updater::{Agent, Error, InstallRequest};

use super::{fast_http, Fleet, RepoServer, CHANNEL};

/// A node running v1 from A, v2 published, the scripted server in front of the repository.
fn setup() -> (Fleet, Release, RepoServer) {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let server = RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);
    (f, v2, server)
}

fn over(server: &RepoServer) -> InstallRequest {
    tandem_tests::repo_request(Path::new(&server.url), CHANNEL)
}

/// Installs from `server` with `agent` (booted from A); expects a refusal whose message
/// has every needle, with slot A and both boot states unchanged and the root not rotated.
fn refused(f: &Fleet, agent: &Agent, server: &RepoServer, code: u8, needles: &[&str]) -> Error {
    let active = f.w.slot_hash(A);
    let boot = [f.w.boot_state(A), f.w.boot_state(B)];
    let error = agent
        .install(&over(server))
        .expect_err("the install must be refused");
    let message = error.to_string();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    assert_eq!(error.exit_code(), code, "{message}");
    assert_eq!(
        f.w.slot_hash(A),
        active,
        "the active slot was written: {message}"
    );
    assert_eq!(f.w.boot_state(A), boot[0], "{message}");
    assert!(
        !f.w.boot_state(B).successful && f.w.boot_state(B).priority == 0,
        "{message}"
    );
    let rotated = partitions::io::FileStore::read(&f.w.state_fs, Path::new("root.json"), 1 << 20);
    assert!(rotated.is_err(), "a root was trusted: {message}");
    error
}

fn bundle_bytes(r: &Release) -> Vec<u8> {
    std::fs::read(&r.bundle).unwrap()
}

fn flip_at(mut bytes: Vec<u8>, at: u64) -> Vec<u8> {
    let i = usize::try_from(at).unwrap();
    bytes[i] ^= 0x5a;
    bytes
}

#[test]
fn replayed_channel_metadata_is_refused() {
    let (f, v2, server) = setup();
    let old = std::fs::read(f.repo.join("channels/stable.json")).unwrap();
    let v3 = f.w.release("3.0.0", 1, 3);
    assert_eq!(f.publish(&v3, 100), 2);
    // The node sees version 2 of the channel …
    let agent = f.agent(A);
    let http = Http::new(&server.url, fast_http()).unwrap();
    assert_eq!(
        agent
            .verify_channel(&http, CHANNEL, None)
            .unwrap()
            .metadata
            .version,
        2
    );
    // … then the server replays version 1 (validly signed, pointing at v2).
    server
        .script()
        .overrides
        .insert("channels/stable.json".into(), old);
    refused(
        &f,
        &agent,
        &server,
        3,
        &["channel metadata version 1 is older than version 2 already seen"],
    );
    let error = super::daemon(&agent).poll_once().unwrap_err();
    assert!(
        error.to_string().contains("older than version 2"),
        "{error}"
    );
    assert!(!f.holds(B, &v2));
}

#[test]
fn expired_channel_metadata_is_refused() {
    let (f, _v2, server) = setup();
    let later = OffsetDateTime::now_utc() + Duration::days(31);
    let agent = f.agent(A).with_clock(move || later);
    refused(&f, &agent, &server, 3, &["channel metadata expired at"]);
}

#[test]
fn metadata_pointing_at_another_bundle_is_refused() {
    let (f, v2, server) = setup();
    let v3 = f.w.release("3.0.0", 1, 3);
    f.publish(&v3, 100);
    // Version 3 of the channel, validly signed, names v2's bundle with v3's manifest hash.
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&hex::decode(&v3.manifest_sha256).unwrap());
    let spec = ChannelSpec {
        channel: CHANNEL.into(),
        version: 3,
        expires: OffsetDateTime::now_utc() + Duration::days(30),
        product: tandem_tests::PRODUCT.into(),
        release_version: semver::Version::parse("3.0.0").unwrap(),
        security_version: 1,
        bundle: Fleet::bundle_path(&v2),
        size: std::fs::metadata(&v3.bundle).unwrap().len(),
        manifest_sha256: Sha256Digest(digest),
        percent: 100,
        salt: vec![7; 16],
    };
    let doc = sign_document(
        RoleKind::Channel,
        &channel_signed_bytes(&spec).unwrap(),
        &f.w.keys.signers(),
    )
    .unwrap();
    std::fs::write(f.repo.join("channels/stable.json"), doc).unwrap();
    // The sizes differ: the header check or the manifest comparison refuses it.
    let error = refused(&f, &f.agent(A), &server, 3, &[]);
    let message = error.to_string();
    assert!(
        message.contains("manifest_sha256")
            || message.contains("trailing data")
            || message.contains("truncated"),
        "{message}"
    );

    // Same size (v2's), so only the manifest hash can tell.
    let mut spec = spec;
    spec.version = 4;
    spec.size = std::fs::metadata(&v2.bundle).unwrap().len();
    let doc = sign_document(
        RoleKind::Channel,
        &channel_signed_bytes(&spec).unwrap(),
        &f.w.keys.signers(),
    )
    .unwrap();
    std::fs::write(f.repo.join("channels/stable.json"), doc).unwrap();
    refused(
        &f,
        &f.agent(A),
        &server,
        3,
        &["bundle does not match the channel's release: manifest_sha256"],
    );
}

#[test]
fn an_endless_channel_file_is_cut_off_at_the_cap() {
    let (f, _v2, server) = setup();
    server
        .script()
        .endless
        .insert("channels/stable.json".into());
    refused(
        &f,
        &f.agent(A),
        &server,
        3,
        &["sent more than the 1048576 bytes allowed: cut off"],
    );
    let sent = server.script().endless_sent;
    assert!(
        sent < 64 << 20,
        "the agent kept reading: {sent} bytes of junk sent"
    );
}

#[test]
fn an_endless_bundle_is_read_only_to_the_metadata_size() {
    let (f, v2, server) = setup();
    let path = Fleet::bundle_path(&v2);
    server.script().endless.insert(path);
    // Each range is answered with its bytes and then junk forever: the agent reads exactly
    // the ranges the signed sizes give, and the install completes.
    let a_v1 = f.w.slot_hash(A);
    let outcome = f.agent(A).install(&over(&server)).unwrap();
    assert_eq!(outcome.target, B);
    assert!(f.holds(B, &v2));
    assert_eq!(f.w.slot_hash(A), a_v1);
    let sent = server.script().endless_sent;
    assert!(
        sent < 64 << 20,
        "the agent kept reading: {sent} bytes of junk sent"
    );
}

#[test]
fn a_bundle_swapped_on_the_server_is_refused() {
    let (f, v2, server) = setup();
    let path = Fleet::bundle_path(&v2);
    let payload = bundle_head(&v2.bundle).header().payload_offset();

    // Different payload bytes at the same path: chunk 0's hash refuses it.
    let tampered = flip_at(bundle_bytes(&v2), payload + 100);
    server.script().overrides.insert(path.clone(), tampered);
    refused(&f, &f.agent(A), &server, 3, &["chunk 0", &path]);

    // Another signed bundle at the same path: the manifest is not the channel's.
    let v3 = f.w.release("3.0.0", 1, 3);
    server
        .script()
        .overrides
        .insert(path.clone(), bundle_bytes(&v3));
    let error = refused(&f, &f.agent(A), &server, 3, &[]);
    let message = error.to_string();
    assert!(
        message.contains("manifest_sha256")
            || message.contains("trailing data")
            || message.contains("truncated"),
        "{message}"
    );
}

#[test]
fn a_resume_after_the_bundle_changed_is_refused() {
    let (f, v2, server) = setup();
    let size = std::fs::metadata(&v2.bundle).unwrap().len();
    {
        let mut s = server.script();
        s.cut_at = vec![size / 2];
        // At the cut, the file changes (last chunk tampered: a new ETag).
        s.swap_at_cut = Some(flip_at(bundle_bytes(&v2), size - 10));
    }
    let error = refused(&f, &f.agent(A), &server, 8, &["the server answered 200 OK"]);
    let s = server.script();
    assert_eq!(s.cuts, 1);
    let last = s.log.last().unwrap();
    assert!(last.contains("if-range=Some"), "{last} ({error})");
}

#[test]
fn a_root_rotation_signed_by_new_keys_only_is_refused() {
    let (f, _v2, _server) = setup();
    let thief = Keys::generate();
    std::fs::write(
        f.repo.join("2.root.json"),
        root_document(&thief, 2, &[&thief.root]),
    )
    .unwrap();
    let server = RepoServer::start(&f.repo);
    refused(
        &f,
        &f.agent(A),
        &server,
        3,
        &["root chain", "threshold not met for root"],
    );
    let http = Http::new(&server.url, fast_http()).unwrap();
    let error = f
        .agent(A)
        .verify_channel(&http, CHANNEL, None)
        .err()
        .unwrap();
    assert!(error.to_string().contains("threshold not met"), "{error}");
}
