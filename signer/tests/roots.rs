//! Root rotation (docs/DESIGN.md §2): a new root needs version N+1 and a threshold of the old AND the
//! new root keys; the chain is walked from the trusted root; the final root must be fresh.

use std::collections::HashMap;

use signer::verify::{load_chain, trust_root, verify_root_update};
use signer::{Error, Limits, RoleName, SecretKey, VerifyError};
use time::macros::datetime;
use time::OffsetDateTime;

use crate::util::*;

const LATER: OffsetDateTime = datetime!(2027-01-01 0:00 UTC);

struct Chain {
    docs: HashMap<u64, Vec<u8>>,
    release: SecretKey,
}

/// v1 (root key a) → v2 (root key b, signed by a and b) → v3 (root keys c+d 2-of-2, signed by b, c, d).
fn chain() -> Chain {
    let [a, b, c, d, release] = [0; 5].map(|_| SecretKey::generate());
    let mut docs = HashMap::new();
    docs.insert(1, root_doc(1, LATER, &[&a], 1, &[&release], 1, &[&a]));
    docs.insert(2, root_doc(2, LATER, &[&b], 1, &[&release], 1, &[&a, &b]));
    docs.insert(
        3,
        root_doc(3, LATER, &[&c, &d], 2, &[&release], 1, &[&b, &c, &d]),
    );
    Chain { docs, release }
}

fn walk(
    docs: &HashMap<u64, Vec<u8>>,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<signer::Verified<signer::Root>, Error> {
    load_chain(&docs[&1], |v| Ok(docs.get(&v).cloned()), now, limits)
}

#[test]
fn accepted_chain_ends_at_the_newest_root() {
    let c = chain();
    let root = walk(&c.docs, now(), &Limits::default()).unwrap();
    assert_eq!(root.version(), 3);
    assert_eq!(root.role(RoleName::Root).threshold().get(), 2);
    assert_eq!(root.role(RoleName::Release).keyids(), &[c.release.id()]);
    assert_eq!(
        root.bytes(),
        c.docs[&3].as_slice(),
        "the device stores these exact bytes"
    );
}

#[test]
fn attack_rotation_signed_only_by_new_keys() {
    let [a, b, release] = [0; 3].map(|_| SecretKey::generate());
    let v1 = trust_root(
        &root_doc(1, LATER, &[&a], 1, &[&release], 1, &[&a]),
        now(),
        &Limits::default(),
    )
    .unwrap();
    let v2 = root_doc(2, LATER, &[&b], 1, &[&release], 1, &[&b]);
    match verify_root_update(&v1, &v2, now(), &Limits::default()) {
        Err(Error::Verify(VerifyError::ThresholdNotMet(r))) => {
            assert_eq!(r.role, RoleName::Root);
            assert_eq!(r.untrusted, vec![b.id()]);
            assert_eq!(r.missing, vec![a.id()]);
        }
        other => panic!("expected ThresholdNotMet, got {other:?}"),
    }
}

#[test]
fn attack_rotation_signed_only_by_old_keys() {
    let [a, b, release] = [0; 3].map(|_| SecretKey::generate());
    let v1 = trust_root(
        &root_doc(1, LATER, &[&a], 1, &[&release], 1, &[&a]),
        now(),
        &Limits::default(),
    )
    .unwrap();
    let v2 = root_doc(2, LATER, &[&b], 1, &[&release], 1, &[&a]);
    let e = verify_root_update(&v1, &v2, now(), &Limits::default()).unwrap_err();
    assert!(
        matches!(e, Error::Verify(VerifyError::ThresholdNotMet(ref r)) if r.missing == vec![b.id()]),
        "{e:?}"
    );
}

#[test]
fn attack_root_version_skipped() {
    let [a, release] = [0; 2].map(|_| SecretKey::generate());
    let v1 = trust_root(
        &root_doc(1, LATER, &[&a], 1, &[&release], 1, &[&a]),
        now(),
        &Limits::default(),
    )
    .unwrap();
    let v3 = root_doc(3, LATER, &[&a], 1, &[&release], 1, &[&a]);
    let e = verify_root_update(&v1, &v3, now(), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Verify(VerifyError::RootVersion {
                trusted: 1,
                expected: 2,
                found: 3
            })
        ),
        "{e:?}"
    );
    let again = root_doc(1, LATER, &[&a], 1, &[&release], 1, &[&a]);
    assert!(matches!(
        verify_root_update(&v1, &again, now(), &Limits::default()),
        Err(Error::Verify(VerifyError::RootVersion { .. }))
    ));
}

#[test]
fn attack_expired_root() {
    let [a, release] = [0; 2].map(|_| SecretKey::generate());
    let old = root_doc(
        1,
        datetime!(2026-05-01 0:00 UTC),
        &[&a],
        1,
        &[&release],
        1,
        &[&a],
    );
    assert!(matches!(
        trust_root(&old, now(), &Limits::default()),
        Err(Error::Verify(VerifyError::Expired { .. }))
    ));
    let v1 = trust_root(
        &root_doc(1, LATER, &[&a], 1, &[&release], 1, &[&a]),
        now(),
        &Limits::default(),
    )
    .unwrap();
    let v2 = root_doc(
        2,
        datetime!(2026-05-01 0:00 UTC),
        &[&a],
        1,
        &[&release],
        1,
        &[&a],
    );
    assert!(matches!(
        verify_root_update(&v1, &v2, now(), &Limits::default()),
        Err(Error::Verify(VerifyError::Expired { .. }))
    ));
}

#[test]
fn chain_may_pass_expired_roots_but_must_end_fresh() {
    let [a, b, release] = [0; 3].map(|_| SecretKey::generate());
    let mut docs = HashMap::new();
    docs.insert(
        1,
        root_doc(
            1,
            datetime!(2026-01-01 0:00 UTC),
            &[&a],
            1,
            &[&release],
            1,
            &[&a],
        ),
    );
    docs.insert(2, root_doc(2, LATER, &[&b], 1, &[&release], 1, &[&a, &b]));
    assert_eq!(walk(&docs, now(), &Limits::default()).unwrap().version(), 2);
    docs.remove(&2);
    assert!(matches!(
        walk(&docs, now(), &Limits::default()),
        Err(Error::Verify(VerifyError::Expired { .. }))
    ));
}

#[test]
fn attack_chain_with_a_forged_middle_link_stops_the_walk() {
    let mut c = chain();
    let forger = SecretKey::generate();
    c.docs.insert(
        2,
        root_doc(2, LATER, &[&forger], 1, &[&forger], 1, &[&forger]),
    );
    assert!(matches!(
        walk(&c.docs, now(), &Limits::default()),
        Err(Error::Verify(VerifyError::ThresholdNotMet(_)))
    ));
}

#[test]
fn rotation_count_is_bounded() {
    let c = chain();
    let limits = Limits {
        max_root_rotations: 1,
        ..Limits::default()
    };
    assert!(matches!(
        walk(&c.docs, now(), &limits),
        Err(Error::Verify(VerifyError::TooManyRootRotations { max: 1 }))
    ));
}

#[test]
fn attack_keyid_not_matching_public_key() {
    let [a, release] = [0; 2].map(|_| SecretKey::generate());
    let doc = String::from_utf8(root_doc(1, LATER, &[&a], 1, &[&release], 1, &[&a])).unwrap();
    // Point release's key id at root key a's public bytes: refused as malformed.
    let swapped = doc.replace(
        &hex::encode(release.public().raw()),
        &hex::encode(a.public().raw()),
    );
    let e = trust_root(swapped.as_bytes(), now(), &Limits::default()).unwrap_err();
    assert!(
        matches!(e, Error::Format(signer::FormatError::Field { .. })),
        "{e:?}"
    );
}
