//! `signer::mirror` on repository directories: the root chain both ways from the trusted root,
//! and sources whose roots do not chain (FORMAT §8.1). The end-to-end mirror, install and
//! tampering tests are in `tests/tests/e2e/airgap.rs`.

use std::path::Path;

use signer::mirror::{mirror, MirrorOptions, MirrorReport};
use signer::publish::{publish, PublishOptions};
use signer::repo::DirRepository;
use signer::{Error, Limits, SecretKey};
use time::macros::datetime;

use crate::util::{clone_key, keys, now, root_doc, sign_image, test_options, text_image};

/// A repository rotated from root 1 (key `old`) to root 2 (key `new`), publishing one
/// bundle on `stable` and `beta` under root 2, and the two root documents.
struct Rotated {
    dir: tempfile::TempDir,
    root1: Vec<u8>,
    root2: Vec<u8>,
}

fn rotated_repo() -> Rotated {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (SecretKey::generate(), SecretKey::generate());
    let release = keys(2);
    let rel: Vec<&SecretKey> = release.iter().collect();
    let expires = datetime!(2027-01-01 0:00 UTC);
    let root1 = root_doc(1, expires, &[&old], 1, &rel, 2, &[&old]);
    let root2 = root_doc(2, expires, &[&new], 1, &rel, 2, &[&old, &new]);
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("1.root.json"), &root1).unwrap();
    std::fs::write(dir.path().join("root2.json"), &root2).unwrap();
    let bundle = dir.path().join("b.tandem");
    std::fs::write(&bundle, sign_image(&[7u8; 20000], 4096, &rel)).unwrap();
    let signers: Vec<SecretKey> = release.iter().map(clone_key).collect();
    for channel in ["stable", "beta"] {
        publish(&PublishOptions {
            repo: &repo,
            channel,
            bundle: &bundle,
            keys: &signers,
            expires: now() + time::Duration::days(30),
            percent: 100,
            root: Some(&dir.path().join("root2.json")),
            now: now(),
            limits: &Limits::default(),
        })
        .unwrap();
    }
    Rotated { dir, root1, root2 }
}

fn mirror_with(repo: &Path, to: &Path, root: &[u8]) -> Result<MirrorReport, Error> {
    mirror_channels(repo, to, root, &["stable"])
}

fn mirror_channels(
    repo: &Path,
    to: &Path,
    root: &[u8],
    channels: &[&str],
) -> Result<MirrorReport, Error> {
    let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
    mirror(&MirrorOptions {
        from: &DirRepository::new(repo),
        channels: &channels,
        to,
        root,
        replace: false,
        now: now(),
        limits: &Limits::default(),
    })
}

#[test]
fn the_chain_is_walked_up_from_an_old_root_and_down_from_a_new_one() {
    let r = rotated_repo();
    let repo = r.dir.path().join("repo");
    for (name, trusted) in [("from-1", &r.root1), ("from-2", &r.root2)] {
        let to = r.dir.path().join(name);
        let report = mirror_with(&repo, &to, trusted).unwrap();
        assert_eq!(report.roots, [1, 2], "{name}");
        assert_eq!(std::fs::read(to.join("root.json")).unwrap(), r.root2);
        assert_eq!(std::fs::read(to.join("1.root.json")).unwrap(), r.root1);
        assert_eq!(std::fs::read(to.join("2.root.json")).unwrap(), r.root2);
        assert_eq!(
            report.channels[0].channel.release.version.to_string(),
            "1.2.3"
        );
    }
}

#[test]
fn attack_an_older_root_that_does_not_chain_is_refused_and_nothing_is_left() {
    let r = rotated_repo();
    let repo = r.dir.path().join("repo");
    let stranger = SecretKey::generate();
    let forged = root_doc(
        1,
        datetime!(2027-01-01 0:00 UTC),
        &[&stranger],
        1,
        &[&stranger],
        1,
        &[&stranger],
    );
    std::fs::write(repo.join("1.root.json"), forged).unwrap();
    let to = r.dir.path().join("stick");
    let err = mirror_with(&repo, &to, &r.root2).unwrap_err();
    assert!(err.to_string().contains("threshold not met"), "{err}");
    let left: Vec<_> = std::fs::read_dir(r.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("stick"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn attack_a_root_the_repository_was_not_signed_under_is_refused() {
    let r = rotated_repo();
    let other = SecretKey::generate();
    let foreign = root_doc(
        1,
        datetime!(2027-01-01 0:00 UTC),
        &[&other],
        1,
        &[&other],
        1,
        &[&other],
    );
    let to = r.dir.path().join("stick");
    let err = mirror_with(&r.dir.path().join("repo"), &to, &foreign).unwrap_err();
    assert!(err.to_string().contains("threshold not met"), "{err}");
    assert!(!to.exists());
}

#[test]
fn two_channels_naming_one_bundle_copy_it_once() {
    let r = rotated_repo();
    let to = r.dir.path().join("stick");
    let report = mirror_channels(
        &r.dir.path().join("repo"),
        &to,
        &r.root2,
        &["stable", "beta"],
    )
    .unwrap();
    let names: Vec<&str> = report
        .channels
        .iter()
        .map(|c| c.channel.channel.as_str())
        .collect();
    assert_eq!(names, ["stable", "beta"]);
    let bundles: Vec<&str> = report
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.starts_with("bundles/"))
        .collect();
    assert_eq!(bundles, ["bundles/tandem-os-1.2.3.tandem"]);
    assert!(to.join("channels/beta.json").is_file());
}

/// A release with a chunk store (FORMAT §3.4): `publish` copies the store beside its bundle
/// only when it is the one the manifest signs, and `mirror` carries it along, checked again.
#[test]
fn a_chunk_store_travels_with_its_bundle_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root_key = SecretKey::generate();
    let release = keys(2);
    let rel: Vec<&SecretKey> = release.iter().collect();
    let expires = datetime!(2027-01-01 0:00 UTC);
    let root = root_doc(1, expires, &[&root_key], 1, &rel, 2, &[&root_key]);
    let root_path = dir.path().join("root.json");
    std::fs::write(&root_path, &root).unwrap();
    let signers: Vec<SecretKey> = release.iter().map(clone_key).collect();
    let image = text_image(64 << 10, 3);
    let mut opts = test_options();
    opts.chunking = signer::chunking::Chunking::fixed(4096);
    let (mut bundle, mut store) = (std::io::Cursor::new(Vec::new()), Vec::new());
    let sources = signer::bundle::Sources {
        image: image.as_slice(),
        image_size: image.len() as u64,
        assets: Vec::new(),
    };
    let store_out: &mut dyn std::io::Write = &mut store;
    signer::bundle::sign_release(
        sources,
        &mut bundle,
        Some(store_out),
        &opts,
        &signers,
        &Limits::default(),
        &mut |_| {},
    )
    .unwrap();
    let path = dir.path().join("b.tandem");
    std::fs::write(&path, bundle.into_inner()).unwrap();
    let store_path = dir.path().join("b.tandem.chunks");
    let mut wrong = store.clone();
    wrong[10] ^= 1;
    std::fs::write(&store_path, &wrong).unwrap();
    let repo = dir.path().join("repo");
    let publish_to = |repo: &Path| {
        publish(&PublishOptions {
            repo,
            channel: "stable",
            bundle: &path,
            keys: &signers,
            expires: now() + time::Duration::days(30),
            percent: 100,
            root: Some(&root_path),
            now: now(),
            limits: &Limits::default(),
        })
    };
    let error = publish_to(&repo).unwrap_err().to_string();
    assert!(
        error.contains("not the chunk store its bundle signs"),
        "{error}"
    );
    assert!(
        !repo.join("channels/stable.json").exists(),
        "nothing published"
    );

    std::fs::write(&store_path, &store).unwrap();
    publish_to(&repo).unwrap();
    let published = repo.join("bundles/tandem-os-1.2.3.tandem.chunks");
    assert_eq!(std::fs::read(&published).unwrap(), store);

    let stick = dir.path().join("stick");
    let report = mirror_with(&repo, &stick, &root).unwrap();
    assert!(report
        .files
        .iter()
        .any(|f| f.path == "bundles/tandem-os-1.2.3.tandem.chunks"));
    assert_eq!(
        std::fs::read(stick.join("bundles/tandem-os-1.2.3.tandem.chunks")).unwrap(),
        store
    );
}
