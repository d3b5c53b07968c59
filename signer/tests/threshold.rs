//! Threshold signatures: distinct trusted key ids are counted; one key twice, an untrusted
//! key, or a signature made for another document kind do not count.

use std::io::Cursor;

use signer::bundle::{add_signatures, BundleHead};
use signer::keys::sign_bytes;
use signer::metadata::sign_document;
use signer::{Error, KeyError, Limits, RoleKind, VerifyError};

use crate::util::*;

fn report(r: Result<impl std::fmt::Debug, Error>) -> Box<signer::ThresholdReport> {
    match r {
        Err(Error::Verify(VerifyError::ThresholdNotMet(r))) => r,
        other => panic!("expected ThresholdNotMet, got {other:?}"),
    }
}

#[test]
fn two_of_three_accepts_two_distinct_keys() {
    let f = fixture();
    for pair in [[0, 1], [1, 2], [0, 2]] {
        let b = sign_image(
            &sparse_image(9000, 1),
            4096,
            &[&f.release[pair[0]], &f.release[pair[1]]],
        );
        let m = open(&b, &f.root).unwrap();
        let mut want = vec![f.release[pair[0]].id(), f.release[pair[1]].id()];
        want.sort();
        assert_eq!(m.signers(), want.as_slice());
    }
}

#[test]
fn one_of_three_is_refused_and_the_report_says_who_could_sign() {
    let f = fixture();
    let b = sign_image(&sparse_image(9000, 1), 4096, &[&f.release[0]]);
    let r = report(open(&b, &f.root));
    assert_eq!((r.threshold, r.valid.clone()), (2, vec![f.release[0].id()]));
    assert_eq!(r.missing.len(), 2);
    assert!(r.to_string().contains("1 of 2 release keys"), "{r}");
}

#[test]
fn attack_duplicate_keyid_counted_once() {
    let f = fixture();
    let mut b = sign_image(&sparse_image(9000, 1), 4096, &[&f.release[0]]);
    let head = BundleHead::read(&mut Cursor::new(&b), &Limits::default()).unwrap();
    // Rewrite the signature block with the same valid signature twice.
    let sig = &head.signatures()[0];
    let entry = format!(
        r#"{{"keyid":"{}","sig":"{}"}}"#,
        sig.keyid,
        hex::encode(sig.sig)
    );
    let mut block = format!(r#"{{"signatures":[{entry},{entry}]}}"#).into_bytes();
    let range = head.header().signature_block_range();
    block.resize((range.end - range.start) as usize, b' ');
    b[range.start as usize..range.end as usize].copy_from_slice(&block);
    let r = report(open(&b, &f.root));
    assert_eq!(r.valid, vec![f.release[0].id()]);
}

#[test]
fn add_signature_refuses_a_key_that_already_signed() {
    let f = fixture();
    let mut b = Cursor::new(sign_image(&sparse_image(9000, 1), 4096, &[&f.release[0]]));
    let e = add_signatures(&mut b, &[clone_key(&f.release[0])], &Limits::default()).unwrap_err();
    assert!(matches!(e, Error::Key(KeyError::AlreadySigned(id)) if id == f.release[0].id()));
    add_signatures(&mut b, &[clone_key(&f.release[2])], &Limits::default()).unwrap();
    assert!(open(b.get_ref(), &f.root).is_ok());
}

#[test]
fn add_signature_does_not_touch_manifest_or_payload() {
    let f = fixture();
    let before = sign_image(&sparse_image(30_000, 4), 4096, &[&f.release[0]]);
    let mut b = Cursor::new(before.clone());
    add_signatures(&mut b, &[clone_key(&f.release[1])], &Limits::default()).unwrap();
    let after = b.into_inner();
    let head = BundleHead::read(&mut Cursor::new(&after), &Limits::default()).unwrap();
    let sig = head.header().signature_block_range();
    assert_eq!(before.len(), after.len());
    assert_eq!(before[..sig.start as usize], after[..sig.start as usize]);
    assert_eq!(before[sig.end as usize..], after[sig.end as usize..]);
    assert_ne!(
        before[sig.start as usize..sig.end as usize],
        after[sig.start as usize..sig.end as usize]
    );
}

#[test]
fn attack_untrusted_key_does_not_count() {
    let f = fixture();
    let outsider = signer::SecretKey::generate();
    let b = sign_image(&sparse_image(9000, 1), 4096, &[&f.release[0], &outsider]);
    let r = report(open(&b, &f.root));
    assert_eq!(r.untrusted, vec![outsider.id()]);
    assert_eq!(r.valid.len(), 1);
}

#[test]
fn attack_root_key_cannot_sign_as_release() {
    let f = fixture();
    let b = sign_image(&sparse_image(9000, 1), 4096, &[&f.release[0], &f.root_key]);
    let r = report(open(&b, &f.root));
    assert_eq!(
        r.untrusted,
        vec![f.root_key.id()],
        "root keys are not release keys"
    );
}

#[test]
fn attack_bundle_sig_as_metadata() {
    let f = fixture();
    let keys = [clone_key(&f.release[0]), clone_key(&f.release[1])];
    let channel = crate::metadata::channel_signed(1, "stable");
    // Signatures made over the same bytes, but as a bundle: refused as channel metadata.
    let sigs = sign_bytes(RoleKind::Bundle, &channel, &keys).unwrap();
    let doc = crate::metadata::envelope(&channel, &sigs);
    let r = report(signer::verify::verify_channel(
        &f.root,
        &doc,
        "stable",
        0,
        now(),
        &Limits::default(),
    ));
    assert_eq!(r.invalid.len(), 2);
    // The same bytes signed as a channel document are accepted.
    let good = sign_document(RoleKind::Channel, &channel, &keys).unwrap();
    assert!(
        signer::verify::verify_channel(&f.root, &good, "stable", 0, now(), &Limits::default())
            .is_ok()
    );
}

#[test]
fn attack_bundle_manifest_and_signatures_replayed_as_channel_document() {
    let f = fixture();
    let b = sign_image(
        &sparse_image(9000, 1),
        4096,
        &[&f.release[0], &f.release[1]],
    );
    let head = BundleHead::read(&mut Cursor::new(&b), &Limits::default()).unwrap();
    let manifest_json = String::from_utf8(head.manifest_bytes().to_vec()).unwrap();
    let doc = crate::metadata::envelope(manifest_json.trim_end().as_bytes(), head.signatures());
    report(signer::verify::verify_channel(
        &f.root,
        &doc,
        "stable",
        0,
        now(),
        &Limits::default(),
    ));
}
