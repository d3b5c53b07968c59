//! Hostile bytes (CONTRIBUTING.md §4): whatever a server, a USB stick or an attacker hands the parsers,
//! they answer with an error, never a panic, and never release bytes the signer did not sign.
//! These are property tests in lieu of coverage-guided fuzzing, so they run in every CI.

use std::io::Cursor;

use proptest::prelude::*;
use signer::bundle::{extract_asset, sign_release, AssetSource, BundleHead, SignOptions, Sources};
use signer::metadata::sign_document;
use signer::verify::{trust_root, verify_channel};
use signer::{AssetKind, BundleHeader, Limits, RoleKind, SecretKey};

use crate::metadata::channel_signed;
use crate::util::*;

/// Applies `(position, xor)` flips (positions wrap around the length) and a truncation.
fn mutate(bytes: &[u8], flips: &[(usize, u8)], keep: Option<usize>) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        for &(pos, xor) in flips {
            let i = pos % out.len();
            out[i] ^= xor.max(1);
        }
    }
    if let Some(keep) = keep {
        out.truncate(keep % (bytes.len() + 1));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_header_bytes_parse_or_fail_cleanly(bytes in any::<[u8; 16]>()) {
        let _ = BundleHeader::parse(&bytes, &Limits::default());
    }

    #[test]
    fn any_file_reads_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let fixture = fixture();
        if let Ok(head) = BundleHead::read(&mut Cursor::new(&bytes), &Limits::default()) {
            prop_assert!(head.verify(&fixture.root, &Limits::default()).is_err());
        }
    }

    #[test]
    fn any_metadata_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let fixture = fixture();
        let limits = Limits::default();
        prop_assert!(trust_root(&bytes, now(), &limits).is_err());
        prop_assert!(verify_channel(&fixture.root, &bytes, "stable", 0, now(), &limits).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A signed bundle with bytes flipped anywhere and perhaps cut short either fails to
    /// verify or extracts to exactly the signed image: nothing else ever comes out.
    #[test]
    fn a_mutated_bundle_never_yields_other_bytes(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        keep in proptest::option::of(any::<usize>()),
        seed in any::<u64>(),
    ) {
        let fixture = fixture();
        let image = sparse_image(40_000, seed);
        let bundle = sign_image(&image, 4096, &[&fixture.release[0], &fixture.release[1]]);
        let mutated = mutate(&bundle, &flips, keep);
        match extract_bytes(&mutated, &fixture.root) {
            Ok(extracted) => prop_assert_eq!(extracted, image),
            Err(_) => prop_assert_ne!(mutated, bundle),
        }
    }

    /// The same with boot assets (FORMAT §3.1): a mutated bundle with assets either fails or
    /// yields exactly the signed image and assets, whichever of them is read.
    #[test]
    fn a_mutated_bundle_with_assets_never_yields_other_bytes(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        keep in proptest::option::of(any::<usize>()),
        seed in any::<u64>(),
    ) {
        let fixture = fixture();
        let image = sparse_image(12_000, seed);
        let uki = sparse_image(9_000, seed ^ 1);
        let bundle = sign_with_uki(&image, &uki, &[&fixture.release[0], &fixture.release[1]]);
        let mutated = mutate(&bundle, &flips, keep);
        match extract_bytes(&mutated, &fixture.root) {
            Ok(extracted) => prop_assert_eq!(extracted, image),
            Err(_) => prop_assert_ne!(&mutated, &bundle),
        }
        let asset = open(&mutated, &fixture.root).and_then(|m| {
            let mut out = Vec::new();
            extract_asset(&m, "uki", Cursor::new(&mutated), &mut out, &mut |_| {}).map(|()| out)
        });
        match asset {
            Ok(extracted) => prop_assert_eq!(extracted, uki),
            Err(_) => prop_assert_ne!(mutated, bundle),
        }
    }

    /// The same for format version 3's shared frames and dictionary (FORMAT §3.2): held chunks
    /// share frames, new ones sit alone, every frame compressed with a dictionary; a
    /// mutation anywhere, index and dictionary included, fails or changes nothing.
    #[test]
    fn a_mutated_bundle_with_shared_frames_and_a_dictionary_never_yields_other_bytes(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        keep in proptest::option::of(any::<usize>()),
        seed in any::<u64>(),
    ) {
        let fixture = fixture();
        let image = text_image(40_000, seed);
        let mut opts = test_options();
        // Raw content serves as a zstd dictionary; the first five blocks count as held.
        opts.dictionary = Some(text_image(8192, seed ^ 1));
        opts.previous = image.chunks(4096).take(5).map(signer::Sha256Digest::of).collect();
        let bundle = sign_image_with(&image, &opts, &[&fixture.release[0], &fixture.release[1]]);
        let signed = open(&bundle, &fixture.root).unwrap();
        let frames: Vec<usize> = signer::schema::pieces(signed.chunks()).map(<[_]>::len).collect();
        prop_assert_eq!(frames, [5, 5]);
        prop_assert!(signed.dictionary().is_some());
        let mutated = mutate(&bundle, &flips, keep);
        match extract_bytes(&mutated, &fixture.root) {
            Ok(extracted) => prop_assert_eq!(extracted, image),
            Err(_) => prop_assert_ne!(mutated, bundle),
        }
    }

    /// Signed channel metadata with bytes flipped never verifies (the signatures cover the
    /// exact bytes of `signed`; the rest is structure).
    #[test]
    fn mutated_channel_metadata_never_verifies(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..3),
    ) {
        let fixture = fixture();
        let signed = channel_signed(3, "stable");
        let keys = [clone_key(&fixture.release[0]), clone_key(&fixture.release[1])];
        let document = sign_document(RoleKind::Channel, &signed, &keys).unwrap();
        let mutated = mutate(&document, &flips, None);
        let result = verify_channel(&fixture.root, &mutated, "stable", 0, now(), &Limits::default());
        if let Ok(verified) = result {
            // Only insignificant whitespace outside `signed` may change and still verify.
            prop_assert_eq!(verified.version, 3);
            prop_assert!(mutated.iter().zip(&document).all(|(a, b)| a == b || a.is_ascii_whitespace() || b.is_ascii_whitespace()));
        }
    }
}

/// Signs `image` with `uki` as boot asset `uki`, in 4096-byte chunks.
fn sign_with_uki(image: &[u8], uki: &[u8], keys: &[&SecretKey]) -> Vec<u8> {
    let mut opts = SignOptions::new("tandem-os", semver::Version::new(1, 2, 3), 7, now());
    opts.chunk_size = 4096;
    opts.workers = 2;
    let owned: Vec<SecretKey> = keys.iter().map(|k| clone_key(k)).collect();
    let sources = Sources {
        image,
        image_size: image.len() as u64,
        assets: vec![AssetSource {
            name: "uki".into(),
            kind: AssetKind::Uki,
            size: uki.len() as u64,
            reader: Box::new(uki),
        }],
    };
    let mut out = Cursor::new(Vec::new());
    sign_release(
        sources,
        &mut out,
        None,
        &opts,
        &owned,
        &Limits::default(),
        &mut |_| {},
    )
    .unwrap();
    out.into_inner()
}
