//! How the signer of format version 3 cuts and frames an image (FORMAT §3.2): with
//! `previous`, chunks nodes already hold share frames and new chunks sit in frames of their
//! own; content-defined chunking finds moved data again; a trained dictionary round-trips.

use std::collections::HashSet;
use std::io::Cursor;

use signer::bundle::{BundleHead, PreviousChunks};
use signer::chunking::Chunking;
use signer::schema::pieces;
use signer::{Limits, Manifest, Sha256Digest};

use crate::util::*;

/// The manifest of a signed bundle, verified by `f`'s root (signed with two release keys).
fn signed(image: &[u8], opts: &signer::SignOptions, f: &Fixture) -> (Vec<u8>, Manifest) {
    let bundle = sign_image_with(image, opts, &[&f.release[0], &f.release[1]]);
    let manifest = open(&bundle, &f.root).unwrap();
    assert_eq!(extract_bytes(&bundle, &f.root).unwrap(), image);
    (bundle, (*manifest).clone())
}

/// The stored chunks' hashes: what a node running this release holds.
fn held(manifest: &Manifest) -> PreviousChunks {
    manifest
        .chunks()
        .iter()
        .filter(|c| !c.is_zero())
        .map(|c| c.sha256())
        .collect()
}

/// Each frame of the image as `(first chunk, chunks, all of them in previous)`; panics when a
/// frame mixes held and new chunks.
fn frames(manifest: &Manifest, previous: &PreviousChunks) -> Vec<(u64, usize, bool)> {
    pieces(manifest.chunks())
        .filter(|p| !p[0].is_zero())
        .map(|p| {
            let shared = previous.contains(&p[0].sha256());
            assert!(
                p.iter().all(|c| previous.contains(&c.sha256()) == shared),
                "frame at chunk {} mixes held and new chunks",
                p[0].index()
            );
            (p[0].index(), p.len(), shared)
        })
        .collect()
}

/// Version 1: 2 MiB of text. Version 2: blocks 10–13 and 300 replaced.
fn two_releases() -> (Vec<u8>, Vec<u8>) {
    let v1 = text_image(2 << 20, 5);
    let mut v2 = v1.clone();
    v2[10 * 4096..14 * 4096].copy_from_slice(&noise(4 * 4096, 1));
    v2[300 * 4096..301 * 4096].copy_from_slice(&noise(4096, 2));
    (v1, v2)
}

#[test]
fn with_previous_new_chunks_get_frames_of_their_own() {
    let f = fixture();
    let (v1, v2) = two_releases();
    let (_, m1) = signed(&v1, &test_options(), &f);
    let previous = held(&m1);
    let mut opts = test_options();
    opts.previous = previous.clone();
    let (bundle, m2) = signed(&v2, &opts, &f);
    assert_eq!(m2.chunk_count(), 512);
    let frames = frames(&m2, &previous);
    let new: Vec<(u64, usize)> = frames
        .iter()
        .filter(|(_, _, shared)| !shared)
        .map(|&(first, n, _)| (first, n))
        .collect();
    assert_eq!(
        new,
        [(10, 4), (300, 1)],
        "each run of new chunks, one frame"
    );
    let shared: Vec<usize> = frames
        .iter()
        .filter(|(_, _, shared)| *shared)
        .map(|&(_, n, _)| n)
        .collect();
    assert_eq!(shared.iter().sum::<usize>(), 512 - 5);
    assert!(
        shared.len() <= 6 && shared.iter().all(|&n| n <= 256),
        "held chunks share frames of up to 1 MiB: {shared:?}"
    );
    // The new frames are small, so an update from version 1 fetches little.
    let new_bytes: u64 = m2
        .chunks()
        .iter()
        .filter(|c| !previous.contains(&c.sha256()))
        .filter_map(|c| c.frame().map(|f| (f.offset, f.length)))
        .collect::<HashSet<_>>()
        .iter()
        .map(|(_, length)| length)
        .sum();
    assert!(new_bytes < 5 * 4096 + 1024, "{new_bytes}");
    assert_eq!(m2.file_len(), bundle.len() as u64);

    // Without `previous`, frames hold up to 1 MiB of chunks, old and new alike.
    let (_, plain) = signed(&v2, &test_options(), &f);
    let lens: Vec<usize> = pieces(plain.chunks()).map(<[_]>::len).collect();
    assert_eq!(lens, [256, 256]);
}

/// The stored chunks of the bundle `bundle`, as `sign --previous` reads them.
fn stored_chunks(bundle: &[u8], limits: &Limits) -> Result<PreviousChunks, signer::Error> {
    let mut chunks = PreviousChunks::default();
    chunks.add_bundle(&mut Cursor::new(bundle), limits)?;
    Ok(chunks)
}

#[test]
fn stored_chunks_of_a_previous_bundle_are_the_chunks_its_nodes_hold() {
    let f = fixture();
    let mut image = sparse_image(64 * 4096, 3);
    image[8 * 4096..16 * 4096].fill(0);
    let (bundle, manifest) = signed(&image, &test_options(), &f);
    let limits = Limits::default();
    let stored = stored_chunks(&bundle, &limits).unwrap();
    assert!(
        manifest.zero_chunks() >= 8,
        "all-zero chunks are not stored"
    );
    assert_eq!(stored, held(&manifest));
    // Unsigned is fine (nothing here is trusted); a file that is no bundle is refused.
    let unsigned = sign_image_with(&image, &test_options(), &[]);
    assert_eq!(stored_chunks(&unsigned, &limits).unwrap(), stored);
    let err = stored_chunks(&[b'x'; 4096], &limits).unwrap_err();
    assert!(
        matches!(
            err,
            signer::Error::Format(signer::FormatError::BadMagic { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn previous_on_the_command_line_round_trips() {
    let d = Dir::new();
    for k in ["root", "r1", "r2", "r3"] {
        d.ok(&["keygen", "--out", k]);
    }
    d.init_root_2_of_3(&["--expires", "365d"]);
    let (v1, v2) = two_releases();
    std::fs::write(d.path("img"), &v1).unwrap();
    d.ok(&sign_args("v1.tandem", &["r1.pem", "r2.pem"], &[]));
    std::fs::write(d.path("img"), &v2).unwrap();
    d.ok(&sign_version_args(
        "2.0.0",
        "1",
        "v2.tandem",
        &["r1.pem", "r2.pem"],
        &["--previous", "v1.tandem"],
    ));
    d.ok(&[
        "extract",
        "v2.tandem",
        "--root",
        "root.json",
        "-o",
        "v2.raw",
    ]);
    assert_eq!(std::fs::read(d.path("v2.raw")).unwrap(), v2);
    let json: serde_json::Value =
        serde_json::from_slice(&d.ok(&["inspect", "--json", "v2.tandem"]).stdout).unwrap();
    assert!(
        json["dictionary_size"].as_u64().unwrap() > 1000,
        "--previous trains a dictionary on the image: {json}"
    );
}

#[test]
fn previous_trains_a_dictionary_on_a_mostly_free_ext4_image() {
    let d = Dir::new();
    for k in ["root", "r1", "r2", "r3"] {
        d.ok(&["keygen", "--out", k]);
    }
    d.init_root_2_of_3(&["--expires", "365d"]);
    // 3 MiB of files in 256 MiB: samples at fixed offsets found almost only zeros.
    ext4_image(&d, "256M", "4096");
    d.ok(&sign_args("v1.tandem", &["r1.pem", "r2.pem"], &[]));
    let previous = ["--previous", "v1.tandem"];
    d.ok(&sign_version_args(
        "2.0.0",
        "1",
        "v2.tandem",
        &["r1.pem", "r2.pem"],
        &previous,
    ));
    let json: serde_json::Value =
        serde_json::from_slice(&d.ok(&["inspect", "--json", "v2.tandem"]).stdout).unwrap();
    assert!(json["dictionary_size"].as_u64().unwrap() > 1000, "{json}");
    d.ok(&["verify", "v2.tandem", "--root", "root.json"]);
}

#[test]
fn content_defined_chunks_round_trip_and_find_moved_data() {
    let f = fixture();
    let cdc = Chunking {
        min: 4096,
        avg: 16384,
        max: 65536,
    };
    let mut opts = test_options();
    opts.chunking = cdc;
    let v1 = noise(1 << 20, 7);
    let (_, m1) = signed(&v1, &opts, &f);
    assert_eq!(m1.chunking(), cdc);
    let lens: Vec<u32> = m1.chunks().iter().map(|c| c.len()).collect();
    let (last, rest) = lens.split_last().unwrap();
    assert!(
        rest.iter()
            .all(|&n| n % 4096 == 0 && (4096..=65536).contains(&n)),
        "{lens:?}"
    );
    assert!(*last <= 65536);
    assert!(
        rest.iter().any(|&n| n != rest[0]),
        "cut by content: {lens:?}"
    );
    // Two blocks inserted in front: past the first cut, the same chunks again.
    let mut v2 = noise(8192, 8);
    v2.extend_from_slice(&v1);
    let (_, m2) = signed(&v2, &opts, &f);
    let previous = held(&m1);
    let found = m2
        .chunks()
        .iter()
        .filter(|c| previous.contains(&c.sha256()))
        .count();
    assert!(
        found + 3 >= m2.chunks().len(),
        "{found} of {} chunks found again",
        m2.chunks().len()
    );
}

#[test]
fn a_trained_dictionary_round_trips() {
    let f = fixture();
    let image = text_image(1 << 20, 11);
    let dictionary = dictionary_for(&image);
    let mut opts = test_options();
    opts.dictionary = Some(dictionary.clone());
    let (bundle, m) = signed(&image, &opts, &f);
    assert_eq!(m.dictionary(), Some(dictionary.as_slice()));
    assert_eq!(m.header().dictionary_len as usize, dictionary.len());
    // Stored between the payload and the index.
    let head = BundleHead::read(&mut Cursor::new(&bundle), &Limits::default()).unwrap();
    assert_eq!(head.dictionary_bytes(), dictionary.as_slice());
    let at = bundle.len() - m.header().tail_len() as usize;
    assert_eq!(&bundle[at..at + dictionary.len()], dictionary.as_slice());
    // A frame compressed with the dictionary does not decode without it.
    let piece = pieces(m.chunks()).next().unwrap();
    let range = m.chunk_file_range(&piece[0]).unwrap();
    let frame = &bundle[range.start as usize..range.end as usize];
    let raw: usize = piece.iter().map(|c| c.len() as usize).sum();
    assert!(zstd::bulk::decompress(frame, raw).is_err());
    assert_eq!(
        signer::bundle::decode_piece(&m, piece, frame).unwrap(),
        image[..raw]
    );
}

/// The lengths of the chunks `chunking` cuts `data` into.
fn cut_all(chunking: Chunking, data: &[u8]) -> Vec<usize> {
    let mut stream = chunking.split(data, data.len() as u64);
    let mut out = Vec::new();
    let mut lens = Vec::new();
    while stream.next_into(&mut out).unwrap() {
        lens.push(out.len());
    }
    lens
}

#[test]
fn fixed_blocks_tile_the_stream() {
    assert_eq!(
        cut_all(Chunking::fixed(4096), &[7u8; 10_000]),
        [4096, 4096, 1808]
    );
    assert!(cut_all(Chunking::DEFAULT, &[]).is_empty());
}

#[test]
fn content_defined_cuts_are_aligned_bounded_and_move_with_the_data() {
    let cdc = Chunking {
        min: 4096,
        avg: 16384,
        max: 65536,
    };
    let data = noise(1 << 20, 9);
    let lens = cut_all(cdc, &data);
    assert_eq!(lens.iter().sum::<usize>(), data.len());
    let (last, rest) = lens.split_last().unwrap();
    assert!(rest
        .iter()
        .all(|&n| n % 4096 == 0 && (4096..=65536).contains(&n)));
    assert!(*last <= 65536);
    assert!(lens.len() > 16 && lens.len() < 256, "{} chunks", lens.len());
    // Shifted by whole blocks, the same content is cut the same way again after the
    // first cut point.
    let mut moved = noise(8192, 3);
    moved.extend_from_slice(&data);
    let again = cut_all(cdc, &moved);
    let tail: Vec<usize> = again.iter().rev().take(lens.len() - 2).copied().collect();
    let want: Vec<usize> = lens.iter().rev().take(lens.len() - 2).copied().collect();
    assert_eq!(tail, want);
}

/// With a chunk store (FORMAT §3.4): every distinct stored chunk once, in image order of its
/// first occurrence, each its own frame compressed with the bundle's dictionary; the
/// records name each frame, which decodes alone to its chunk; the manifest signs the store.
#[test]
fn a_chunk_store_holds_each_distinct_chunk_once_in_its_own_frame() {
    let f = fixture();
    let mut image = text_image(1 << 20, 13);
    // Block 3 again at block 200, and a zero block at 100.
    let (three, rest) = image.split_at_mut(200 * 4096);
    rest[..4096].copy_from_slice(&three[3 * 4096..4 * 4096]);
    image[100 * 4096..101 * 4096].fill(0);
    let mut opts = test_options();
    opts.chunking = Chunking::fixed(4096);
    opts.dictionary = Some(dictionary_for(&image));
    let mut bundle = Cursor::new(Vec::new());
    let mut store = Vec::new();
    let owned = [clone_key(&f.release[0]), clone_key(&f.release[1])];
    let summary = signer::bundle::sign_release(
        signer::bundle::Sources {
            image: image.as_slice(),
            image_size: image.len() as u64,
            assets: Vec::new(),
        },
        &mut bundle,
        Some(&mut store as &mut dyn std::io::Write),
        &opts,
        &owned,
        &Limits::default(),
        &mut |_| {},
    )
    .unwrap();
    let bundle = bundle.into_inner();
    assert_eq!(summary.store_len, Some(store.len() as u64));
    let m = open(&bundle, &f.root).unwrap();
    let signed = m.store().unwrap();
    assert_eq!(
        (signed.size, signed.sha256),
        (store.len() as u64, Sha256Digest::of(&store))
    );
    let chunks = m.chunks();
    assert!(chunks[100].store().is_none(), "a zero chunk");
    assert!(chunks[200].store().is_none(), "a repeat of chunk 3");
    let mut decoder = signer::bundle::ChunkDecoder::new(&m).unwrap();
    let mut end = 0;
    for chunk in chunks
        .iter()
        .filter(|c| c.index() != 100 && c.index() != 200)
    {
        let frame = chunk.store().unwrap();
        assert_eq!(frame.offset, end, "in image order, end to end");
        end += frame.length;
        let bytes = &store[frame.offset as usize..end as usize];
        let mut out = vec![0u8; chunk.len() as usize];
        decoder.decode_store_frame(chunk, bytes, &mut out).unwrap();
        let at = chunk.image_offset() as usize;
        assert_eq!(out, image[at..at + out.len()]);
        // Compressed with the dictionary: not decodable without it.
        assert!(zstd::bulk::decompress(bytes, 4096).is_err());
    }
    assert_eq!(end, store.len() as u64);
    // The bundle alone still holds the whole image.
    assert_eq!(extract_bytes(&bundle, &f.root).unwrap(), image);
}
