//! Channel metadata: freshness, rollback, channel name, and the mix-and-match check that ties
//! a bundle to the release its channel names.

use std::io::Cursor;

use signer::bundle::BundleHead;
use signer::metadata::{channel_signed_bytes, sign_document, ChannelSpec};
use signer::verify::{check_release, verify_channel};
use signer::{Error, Limits, RoleKind, Sha256Digest, Signature, VerifyError};
use time::macros::datetime;

use crate::util::*;

pub fn spec(version: u64, channel: &str) -> ChannelSpec {
    ChannelSpec {
        channel: channel.into(),
        version,
        expires: datetime!(2026-07-01 0:00 UTC),
        product: "tandem-os".into(),
        release_version: semver::Version::new(1, 2, 3),
        security_version: 7,
        bundle: "bundles/tandem-os-1.2.3.tandem".into(),
        size: 1000,
        manifest_sha256: Sha256Digest([7; 32]),
        percent: 50,
        salt: vec![1, 2, 3, 4],
    }
}

pub fn channel_signed(version: u64, channel: &str) -> Vec<u8> {
    channel_signed_bytes(&spec(version, channel)).unwrap()
}

pub fn envelope(signed: &[u8], sigs: &[Signature]) -> Vec<u8> {
    let sigs: Vec<String> = sigs
        .iter()
        .map(|s| {
            format!(
                r#"{{"keyid":"{}","sig":"{}"}}"#,
                s.keyid,
                hex::encode(s.sig)
            )
        })
        .collect();
    let mut out = format!(r#"{{"signatures":[{}],"signed":"#, sigs.join(",")).into_bytes();
    out.extend_from_slice(signed);
    out.push(b'}');
    out
}

fn signed_doc(f: &Fixture, s: &ChannelSpec) -> Vec<u8> {
    let keys = [clone_key(&f.release[0]), clone_key(&f.release[1])];
    sign_document(RoleKind::Channel, &channel_signed_bytes(s).unwrap(), &keys).unwrap()
}

#[test]
fn valid_channel_is_accepted() {
    let f = fixture();
    let c = verify_channel(
        &f.root,
        &signed_doc(&f, &spec(5, "stable")),
        "stable",
        5,
        now(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(c.version, 5);
    assert_eq!(c.rollout.percent, 50);
    assert_eq!(c.release.bundle, "bundles/tandem-os-1.2.3.tandem");
}

#[test]
fn attack_freeze_expired_metadata() {
    let f = fixture();
    let late = datetime!(2026-07-01 0:00 UTC);
    let e = verify_channel(
        &f.root,
        &signed_doc(&f, &spec(5, "stable")),
        "stable",
        0,
        late,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Verify(VerifyError::Expired { .. })),
        "{e:?}"
    );
}

#[test]
fn attack_rollback_version() {
    let f = fixture();
    let e = verify_channel(
        &f.root,
        &signed_doc(&f, &spec(4, "stable")),
        "stable",
        5,
        now(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Verify(VerifyError::ChannelRollback { min: 5, found: 4 })
        ),
        "{e:?}"
    );
}

#[test]
fn attack_other_channel_served() {
    let f = fixture();
    let e = verify_channel(
        &f.root,
        &signed_doc(&f, &spec(9, "beta")),
        "stable",
        0,
        now(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Verify(VerifyError::WrongChannel { .. })),
        "{e:?}"
    );
}

#[test]
fn attack_path_traversal_in_bundle_path() {
    let f = fixture();
    let mut s = spec(1, "stable");
    s.bundle = "../../etc/shadow".into();
    assert!(channel_signed_bytes(&s).is_err(), "the writer refuses it");
    // A hand-made document with the same content is refused by the verifier too.
    let signed = String::from_utf8(channel_signed(1, "stable"))
        .unwrap()
        .replace("bundles/tandem-os-1.2.3.tandem", "../../etc/shadow");
    let keys = [clone_key(&f.release[0]), clone_key(&f.release[1])];
    let doc = sign_document(RoleKind::Channel, signed.as_bytes(), &keys).unwrap();
    let e = verify_channel(&f.root, &doc, "stable", 0, now(), &Limits::default()).unwrap_err();
    assert!(
        matches!(e, Error::Format(signer::FormatError::Field { .. })),
        "{e:?}"
    );
}

#[test]
fn attack_mix_and_match_bundle_and_channel() {
    let f = fixture();
    let keys = [&f.release[0], &f.release[1]];
    let a = sign_image(&sparse_image(20_000, 1), 4096, &keys);
    let b = sign_image(&sparse_image(20_000, 2), 4096, &keys);
    let head_a = BundleHead::read(&mut Cursor::new(&a), &Limits::default()).unwrap();
    let mut s = spec(1, "stable");
    s.manifest_sha256 = head_a.manifest_sha256();
    s.size = a.len() as u64;
    let channel = verify_channel(
        &f.root,
        &signed_doc(&f, &s),
        "stable",
        0,
        now(),
        &Limits::default(),
    )
    .unwrap();
    check_release(&channel, &open(&a, &f.root).unwrap()).unwrap();
    let e = check_release(&channel, &open(&b, &f.root).unwrap()).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::ReleaseMismatch {
                field: "manifest_sha256",
                ..
            }
        ),
        "{e:?}"
    );
    // Same manifest, other size announced: refused (endless-data defence).
    s.size += 1;
    let channel = verify_channel(
        &f.root,
        &signed_doc(&f, &s),
        "stable",
        0,
        now(),
        &Limits::default(),
    )
    .unwrap();
    let e = check_release(&channel, &open(&a, &f.root).unwrap()).unwrap_err();
    assert!(
        matches!(e, VerifyError::ReleaseMismatch { field: "size", .. }),
        "{e:?}"
    );
}

#[test]
fn rollout_bucket_follows_the_spec_formula() {
    let f = fixture();
    let c = verify_channel(
        &f.root,
        &signed_doc(&f, &spec(1, "stable")),
        "stable",
        0,
        now(),
        &Limits::default(),
    )
    .unwrap();
    let d = Sha256Digest::of(&[1, 2, 3, 4, b'n', b'o', b'd', b'e']);
    let bucket = u64::from_be_bytes(d.0[..8].try_into().unwrap()) % 100;
    assert_eq!(u64::from(c.rollout.bucket(b"node")), bucket);
    assert_eq!(c.rollout.selects(b"node"), bucket < 50);
}
