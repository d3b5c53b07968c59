//! Sign → verify → extract gives back the exact image, for random, sparse and
//! incompressible images of odd sizes, the empty image and a one-byte image.

use proptest::prelude::*;
use signer::bundle::ChunkReader;
use signer::ChunkData;

use crate::util::*;

#[derive(Debug, Clone)]
enum Shape {
    Random(u64),
    Sparse(u64),
    Zeros,
    Text,
}

fn image(shape: &Shape, len: usize) -> Vec<u8> {
    match shape {
        Shape::Random(seed) => noise(len, *seed),
        Shape::Sparse(seed) => sparse_image(len, *seed),
        Shape::Zeros => vec![0; len],
        Shape::Text => (0..len).map(|i| b"the quick brown fox "[i % 20]).collect(),
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        any::<u64>().prop_map(Shape::Random),
        any::<u64>().prop_map(Shape::Sparse),
        Just(Shape::Zeros),
        Just(Shape::Text)
    ]
}

fn check_round_trip(img: &[u8], chunk_size: u32) {
    let f = fixture();
    let bundle = sign_image(img, chunk_size, &[&f.release[0], &f.release[2]]);
    let manifest = open(&bundle, &f.root).unwrap();
    assert_eq!(manifest.image_size(), img.len() as u64);
    assert_eq!(
        manifest.chunks().len() as u64,
        (img.len() as u64).div_ceil(chunk_size.into())
    );
    assert_eq!(manifest.file_len(), bundle.len() as u64);
    let zero_chunks = img
        .chunks(chunk_size as usize)
        .filter(|c| c.iter().all(|b| *b == 0))
        .count();
    assert_eq!(
        manifest.zero_chunks(),
        zero_chunks,
        "all-zero chunks are not stored"
    );
    assert_eq!(extract_bytes(&bundle, &f.root).unwrap(), img);
    // The chunk iterator yields zero markers without buffers and data in order.
    let mut rebuilt = Vec::new();
    for item in ChunkReader::new(&manifest, std::io::Cursor::new(&bundle)).unwrap() {
        match item.unwrap() {
            ChunkData::Data {
                image_offset,
                bytes,
                ..
            } => {
                assert_eq!(image_offset, rebuilt.len() as u64);
                rebuilt.extend_from_slice(&bytes);
            }
            ChunkData::Zero { len, .. } => rebuilt.resize(rebuilt.len() + len as usize, 0),
        }
    }
    assert_eq!(rebuilt, img);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sign_verify_extract_is_identity(shape in shape(), len in 0usize..150_000, cs_log in 12u32..=15) {
        check_round_trip(&image(&shape, len), 1 << cs_log);
    }
}

#[test]
fn empty_image() {
    check_round_trip(&[], 4096);
}

#[test]
fn one_byte_image() {
    check_round_trip(&[0x42], 4096);
    check_round_trip(&[0], 4096);
}

#[test]
fn exact_multiple_of_chunk_size_and_one_more() {
    check_round_trip(&image(&Shape::Sparse(9), 3 * 4096), 4096);
    check_round_trip(&image(&Shape::Random(9), 3 * 4096 + 1), 4096);
}

#[test]
fn incompressible_image_keeps_frames_within_bound() {
    let img = image(&Shape::Random(77), 100_001);
    check_round_trip(&img, 8192);
}

#[test]
fn signing_is_deterministic_for_fixed_inputs() {
    let f = fixture();
    let img = sparse_image(50_000, 3);
    let a = sign_image(&img, 4096, &[&f.release[0]]);
    let b = sign_image(&img, 4096, &[&f.release[0]]);
    assert_eq!(
        a, b,
        "same image, time and key give the same bundle (Ed25519 is deterministic)"
    );
}

#[test]
fn output_does_not_depend_on_the_number_of_threads() {
    use signer::bundle::{sign_bundle, SignOptions};
    let f = fixture();
    let img = sparse_image(200_003, 8);
    let bundles: Vec<Vec<u8>> = [1usize, 2, 5]
        .iter()
        .map(|&workers| {
            let mut opts = SignOptions::new("tandem-os", semver::Version::new(1, 0, 0), 1, now());
            opts.chunk_size = 4096;
            opts.workers = workers;
            let mut out = std::io::Cursor::new(Vec::new());
            let key = clone_key(&f.release[0]);
            sign_bundle(
                &img[..],
                img.len() as u64,
                &mut out,
                &opts,
                &[key],
                &signer::Limits::default(),
                &mut |_| {},
            )
            .unwrap();
            out.into_inner()
        })
        .collect();
    assert_eq!(bundles[0], bundles[1]);
    assert_eq!(bundles[1], bundles[2]);
}

#[test]
fn image_shorter_than_announced_is_an_error_not_a_short_bundle() {
    use signer::bundle::{sign_bundle, SignOptions};
    let f = fixture();
    let img = sparse_image(10_000, 8);
    let opts = SignOptions::new("tandem-os", semver::Version::new(1, 0, 0), 1, now());
    let mut out = std::io::Cursor::new(Vec::new());
    let e = sign_bundle(
        &img[..],
        20_000,
        &mut out,
        &opts,
        &[clone_key(&f.release[0])],
        &signer::Limits::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, signer::Error::Usage(_)), "{e:?}");
    assert!(e.to_string().contains("ended before"), "{e}");
}

/// Signs an empty reader announced as 1 MiB under `limits`, expecting a refusal before
/// anything is written; returns the message.
fn refused_up_front(limits: signer::Limits) -> String {
    use signer::bundle::sign_bundle;
    let f = fixture();
    let mut out = std::io::Cursor::new(Vec::new());
    let e = sign_bundle(
        std::io::empty(),
        1 << 20,
        &mut out,
        &test_options(),
        &[clone_key(&f.release[0])],
        &limits,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, signer::Error::Usage(_)), "{e:?}");
    assert!(out.into_inner().is_empty(), "nothing written");
    e.to_string()
}

#[test]
fn too_many_chunks_for_the_chunk_limit_is_refused_up_front() {
    // 1 MiB in 4 KiB blocks is 256 chunks.
    let e = refused_up_front(signer::Limits {
        max_chunk_count: 255,
        ..signer::Limits::default()
    });
    assert!(e.contains("256 chunks") && e.contains("--chunking"), "{e}");
}

#[test]
fn a_manifest_over_the_limit_is_refused_up_front() {
    let e = refused_up_front(signer::Limits {
        max_manifest_len: 200,
        ..signer::Limits::default()
    });
    assert!(e.contains("above the 200-byte limit"), "{e}");
}
