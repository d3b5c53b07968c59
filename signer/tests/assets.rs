//! Boot assets (FORMAT §3.1): a release carries a UKI, or a kernel and initramfs, a kernel
//! command line and partition images besides the root image, each chunked, framed and hashed
//! like it: in a format version 2 bundle (hand-written here: it stays readable), and in the
//! format version 3 bundles the signer writes, with or without assets. The kind rules (one per boot kind, `kernel` with `initrd`, never with `uki`, a short
//! printable `cmdline`) hold at signing and at parsing.

use std::io::Cursor;

use sha2::{Digest, Sha256};
use signer::bundle::read_at::asset_read_at;
use signer::bundle::{
    extract_asset, sign_bundle, sign_release, AssetSource, BundleHead, SignOptions, Sources,
};
use signer::inspect::{AssetInfo, Inspection};
use signer::verify::trust_root;
use signer::{
    AssetKind, ChunkFault, Error, FormatError, Limits, Manifest, SecretKey, Section, UsageError,
    Verified, VerifyError,
};
use time::macros::datetime;

use crate::util::*;

type Named = (&'static str, AssetKind, Vec<u8>);

fn options() -> SignOptions {
    let mut opts = SignOptions::new("tandem-os", semver::Version::new(1, 2, 3), 7, now());
    opts.chunk_size = 4096;
    opts.workers = 2;
    opts
}

/// Signs `image` and `assets` into an in-memory bundle.
fn sign_with(image: &[u8], assets: &[Named], keys: &[&SecretKey]) -> Result<Vec<u8>, Error> {
    let owned: Vec<SecretKey> = keys.iter().map(|k| clone_key(k)).collect();
    let sources = Sources {
        image,
        image_size: image.len() as u64,
        assets: assets
            .iter()
            .map(|(name, kind, bytes)| AssetSource {
                name: (*name).to_owned(),
                kind: *kind,
                size: bytes.len() as u64,
                reader: Box::new(Cursor::new(bytes.clone())),
            })
            .collect(),
    };
    let mut out = Cursor::new(Vec::new());
    sign_release(
        sources,
        &mut out,
        None,
        &options(),
        &owned,
        &Limits::default(),
        &mut |_| {},
    )?;
    Ok(out.into_inner())
}

fn asset_bytes(bundle: &[u8], root: &Verified<signer::Root>, name: &str) -> Result<Vec<u8>, Error> {
    let manifest = open(bundle, root)?;
    let mut out = Vec::new();
    extract_asset(&manifest, name, Cursor::new(bundle), &mut out, &mut |_| {})?;
    Ok(out)
}

fn release_assets() -> Vec<Named> {
    vec![
        ("kernel", AssetKind::Kernel, sparse_image(10_001, 3)),
        ("initrd", AssetKind::Initrd, vec![0; 8192]),
        (
            "cmdline",
            AssetKind::Cmdline,
            b"console=ttyS0 rd.marker=v2".to_vec(),
        ),
        ("esp", AssetKind::Image, Vec::new()),
    ]
}

struct Signed {
    f: Fixture,
    image: Vec<u8>,
    assets: Vec<Named>,
    bundle: Vec<u8>,
}

fn signed() -> Signed {
    let f = fixture();
    let image = sparse_image(40_000, 5);
    let assets = release_assets();
    let bundle = sign_with(&image, &assets, &[&f.release[0], &f.release[1]]).unwrap();
    Signed {
        f,
        image,
        assets,
        bundle,
    }
}

#[test]
fn every_asset_round_trips_byte_identical() {
    let s = signed();
    assert_eq!(
        s.bundle[7], 3,
        "the signer writes format version 3, assets or not"
    );
    let manifest = open(&s.bundle, &s.f.root).unwrap();
    assert_eq!(manifest.file_len(), s.bundle.len() as u64);
    assert_eq!(extract_bytes(&s.bundle, &s.f.root).unwrap(), s.image);
    assert_eq!(manifest.assets().len(), s.assets.len());
    for (asset, (name, kind, bytes)) in manifest.assets().iter().zip(&s.assets) {
        assert_eq!((asset.name(), asset.kind()), (*name, *kind));
        assert_eq!(asset.size(), bytes.len() as u64);
        assert_eq!(asset.sha256().to_hex(), hex::encode(Sha256::digest(bytes)));
        assert_eq!(&asset_bytes(&s.bundle, &s.f.root, name).unwrap(), bytes);
    }
    let initrd = manifest.asset("initrd").unwrap();
    assert!(
        initrd.chunks().iter().all(|c| c.is_zero()),
        "zero chunks are not stored"
    );
}

#[test]
fn asset_chunks_read_by_range_like_the_image() {
    let s = signed();
    let manifest = open(&s.bundle, &s.f.root).unwrap();
    let kernel = manifest.asset("kernel").unwrap();
    let image_end = manifest
        .chunks()
        .iter()
        .filter_map(|c| manifest.chunk_file_range(c))
        .map(|r| r.end)
        .max()
        .unwrap();
    let mut raw = Vec::new();
    let mut next = image_end;
    for chunk in kernel.chunks() {
        let Some(range) = manifest.chunk_file_range(chunk) else {
            raw.extend(vec![0; chunk.len() as usize]);
            continue;
        };
        assert_eq!(
            range.start, next,
            "asset frames follow the image's, contiguous"
        );
        next = range.end;
        let frame = &s.bundle[range.start as usize..range.end as usize];
        raw.extend(
            signer::bundle::decode_piece(&manifest, std::slice::from_ref(chunk), frame).unwrap(),
        );
    }
    assert!(kernel.chunks().iter().any(|c| c.is_zero()));
    assert_eq!(raw, s.assets[0].2);
}

/// The manifest of `bundle`, read without verifying it.
fn unverified(bundle: &[u8]) -> Manifest {
    let limits = Limits::default();
    BundleHead::read(&mut Cursor::new(bundle), &limits)
        .and_then(|head| head.manifest_unverified(&limits))
        .unwrap()
}

#[test]
fn asset_read_at_reads_any_range_of_an_asset_from_the_chunks_it_spans() {
    let s = signed();
    let manifest = unverified(&s.bundle);
    let kernel = &s.assets[0].2;
    let asset = manifest.asset("kernel").unwrap();
    assert!(asset.chunks().iter().any(|c| c.is_zero()));
    let mut file = Cursor::new(&s.bundle);
    let mut read_at = asset_read_at(&mut file, &manifest, asset);
    for (offset, len) in [
        (0, kernel.len()),
        (4000, 200),
        (4096, 4096),
        (5000, 1),
        (10_000, 1),
    ] {
        assert_eq!(
            read_at(offset as u64, len).as_deref(),
            Some(&kernel[offset..offset + len]),
            "{len} bytes at {offset}"
        );
    }
    assert_eq!(read_at(10_000, 2), None, "past the asset's end");
    assert_eq!(read_at(0, 0), None, "an empty range");
    assert_eq!(read_at(u64::MAX, 1), None, "an offset that overflows");
}

#[test]
fn attack_asset_frame_byte_flipped_reads_nothing_from_that_chunk() {
    let s = signed();
    let manifest = unverified(&s.bundle);
    let kernel = &s.assets[0].2;
    let asset = manifest.asset("kernel").unwrap();
    let range = manifest.chunk_file_range(&asset.chunks()[0]).unwrap();
    let mut bundle = s.bundle.clone();
    bundle[((range.start + range.end) / 2) as usize] ^= 0x40;
    let mut file = Cursor::new(&bundle);
    let mut read_at = asset_read_at(&mut file, &manifest, asset);
    assert_eq!(read_at(0, 16), None, "the flipped chunk");
    assert_eq!(read_at(4090, 16), None, "a range that spans it");
    assert_eq!(
        read_at(8192, 16).as_deref(),
        Some(&kernel[8192..8208]),
        "the other chunks still read"
    );
}

#[test]
fn inspection_shows_what_each_asset_says_and_the_signatures_a_root_counts() {
    let s = signed();
    let limits = Limits::default();
    let report = Inspection::read(&mut Cursor::new(&s.bundle), &limits).unwrap();
    let m = report.manifest();
    assert_eq!(m.image_size(), s.image.len() as u64);
    assert_eq!(
        report.ratio(),
        m.image_size() as f64 / m.payload_len() as f64
    );
    let infos: Vec<(&str, AssetInfo)> = report
        .assets()
        .map(|(a, info)| (a.name(), info.clone()))
        .collect();
    let cmdline = AssetInfo {
        cmdline: Some("console=ttyS0 rd.marker=v2".into()),
        ..AssetInfo::default()
    };
    let none = AssetInfo::default;
    assert_eq!(
        infos,
        [
            ("kernel", none()),
            ("initrd", none()),
            ("cmdline", cmdline),
            ("esp", none())
        ]
    );

    let unchecked = report.signatures(None, &limits);
    assert_eq!(unchecked.threshold_met, None);
    let mut keyids: Vec<_> = unchecked.signers.iter().map(|s| s.keyid).collect();
    let mut expected = vec![s.f.release[0].id(), s.f.release[1].id()];
    keyids.sort();
    expected.sort();
    assert_eq!(keyids, expected);
    assert!(unchecked.signers.iter().all(|s| s.status.is_none()));

    let checked = report.signatures(Some(&s.f.root), &limits);
    assert_eq!(checked.threshold_met, Some(true));
    assert!(checked
        .signers
        .iter()
        .all(|s| s.status.as_ref().is_some_and(|st| st.valid == Some(true))));

    let one = sign_with(&s.image, &s.assets, &[&s.f.release[0]]).unwrap();
    let report = Inspection::read(&mut Cursor::new(&one), &limits).unwrap();
    let short = report.signatures(Some(&s.f.root), &limits);
    assert_eq!(short.threshold_met, Some(false), "one of two release keys");
    assert_eq!(short.signers.len(), 1);
}

#[test]
fn without_assets_sign_release_is_sign_bundle_byte_for_byte() {
    let f = fixture();
    let image = sparse_image(40_000, 9);
    let with_release = sign_with(&image, &[], &[&f.release[0]]).unwrap();
    let owned = [clone_key(&f.release[0])];
    let mut out = Cursor::new(Vec::new());
    sign_bundle(
        image.as_slice(),
        image.len() as u64,
        &mut out,
        &options(),
        &owned,
        &Limits::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(with_release, out.into_inner());
    assert_eq!(with_release[7], 3);
    assert!(!String::from_utf8_lossy(&with_release).contains("\"assets\""));
    let head = BundleHead::read(&mut Cursor::new(&with_release), &Limits::default()).unwrap();
    let manifest = head.manifest_unverified(&Limits::default()).unwrap();
    assert!(manifest.assets().is_empty());
}

#[test]
fn attack_asset_frame_byte_flipped_names_the_asset() {
    let mut s = signed();
    let manifest = open(&s.bundle, &s.f.root).unwrap();
    let range = manifest
        .chunk_file_range(&manifest.asset("kernel").unwrap().chunks()[0])
        .unwrap();
    s.bundle[range.end as usize - 2] ^= 0x40;
    match asset_bytes(&s.bundle, &s.f.root, "kernel") {
        Err(Error::Verify(VerifyError::AssetChunk {
            asset,
            index,
            fault,
        })) => {
            assert_eq!((&*asset, index), ("kernel", 0));
            assert!(matches!(
                *fault,
                ChunkFault::Decompress { .. } | ChunkFault::Hash { .. } | ChunkFault::Frame(_)
            ));
        }
        other => panic!("expected AssetChunk, got {other:?}"),
    }
    // The image and the other assets are still whole.
    assert_eq!(extract_bytes(&s.bundle, &s.f.root).unwrap(), s.image);
    assert!(asset_bytes(&s.bundle, &s.f.root, "cmdline").is_ok());
}

#[test]
fn attack_asset_entry_edited_breaks_the_signature() {
    let mut s = signed();
    let text = String::from_utf8_lossy(&s.bundle).into_owned();
    let at = text.find(r#""name":"kernel""#).unwrap() + 9;
    s.bundle[at] = b'K';
    assert!(matches!(
        open(&s.bundle, &s.f.root),
        Err(Error::Verify(VerifyError::ThresholdNotMet(_)))
    ));
}

#[test]
fn an_unknown_asset_name_is_a_usage_error() {
    let s = signed();
    assert!(matches!(
        asset_bytes(&s.bundle, &s.f.root, "dtb"),
        Err(Error::Usage(UsageError::Invalid(_)))
    ));
}

#[test]
fn bad_asset_lists_are_refused_at_signing() {
    let f = fixture();
    let key = [&f.release[0]];
    let dup = vec![
        ("uki", AssetKind::Uki, vec![1]),
        ("uki", AssetKind::Image, vec![2]),
    ];
    let bad_name = vec![("../esp", AssetKind::Image, vec![1])];
    let too_many: Vec<Named> = (0..17)
        .map(|i| {
            (
                [
                    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p",
                    "q",
                ][i],
                AssetKind::Image,
                vec![1],
            )
        })
        .collect();
    for assets in [dup, bad_name, too_many] {
        assert!(matches!(
            sign_with(b"image", &assets, &key),
            Err(Error::Usage(UsageError::Invalid(_)))
        ));
    }
}

/// The boot kind rules of FORMAT §3.1, each broken by an asset list, with what the refusal
/// says.
fn kind_rule_breaks() -> Vec<(Vec<Named>, &'static str)> {
    let kernel = || ("kernel", AssetKind::Kernel, b"bzImage".to_vec());
    let initrd = || ("initrd", AssetKind::Initrd, b"cpio".to_vec());
    let uki = || ("uki", AssetKind::Uki, b"MZ".to_vec());
    vec![
        (
            vec![uki(), ("uki-2", AssetKind::Uki, b"MZ".to_vec())],
            "two `uki` assets",
        ),
        (
            vec![
                ("cmdline", AssetKind::Cmdline, b"quiet".to_vec()),
                ("cmdline-2", AssetKind::Cmdline, b"debug".to_vec()),
            ],
            "two `cmdline` assets",
        ),
        (
            vec![
                kernel(),
                initrd(),
                ("initrd-2", AssetKind::Initrd, b"cpio".to_vec()),
            ],
            "two `initrd` assets",
        ),
        (vec![kernel()], "`kernel` asset needs an `initrd`"),
        (vec![initrd()], "`kernel` asset needs an `initrd`"),
        (vec![uki(), kernel(), initrd()], "one or the other"),
        (
            vec![uki(), ("cmdline", AssetKind::Cmdline, vec![b'a'; 2049])],
            "2049 bytes, more than 2048",
        ),
        (
            vec![("cmdline", AssetKind::Cmdline, b"quiet".to_vec())],
            "without a `uki` or `kernel`",
        ),
    ]
}

#[test]
fn boot_kind_rules_are_refused_at_signing() {
    let f = fixture();
    for (assets, needle) in kind_rule_breaks() {
        match sign_with(b"image", &assets, &[&f.release[0]]) {
            Err(Error::Usage(UsageError::Invalid(message))) => {
                assert!(message.contains(needle), "{needle:?} not in {message:?}")
            }
            other => panic!("{needle}: expected a usage error, got {other:?}"),
        }
    }
    // Several partition images stay allowed: the rules bind the boot kinds only.
    let images = vec![
        ("esp", AssetKind::Image, vec![1]),
        ("verity", AssetKind::Image, vec![2]),
    ];
    assert!(sign_with(b"image", &images, &[&f.release[0]]).is_ok());
}

/// `asset` with a UKI to boot with (a command line alone is refused).
fn with_uki(asset: Named) -> Vec<Named> {
    vec![("uki", AssetKind::Uki, b"MZ".to_vec()), asset]
}

#[test]
fn a_cmdline_the_rule_refuses_is_not_signed() {
    let f = fixture();
    for (text, needle) in [
        (&b"quiet\ninit=/bin/sh"[..], "byte 0x0a at offset 5"),
        (b"", "empty"),
        (b" quiet", "starts or ends with a space"),
        (b"quiet\x1b[2J", "byte 0x1b"),
        (b"caf\xc3\xa9", "byte 0xc3 at offset 3"),
    ] {
        let assets = with_uki(("cmdline", AssetKind::Cmdline, text.to_vec()));
        match sign_with(b"image", &assets, &[&f.release[0]]) {
            Err(Error::Usage(UsageError::Invalid(message))) => {
                assert!(message.contains(needle), "{needle:?} not in {message:?}");
                assert!(message.contains("`cmdline`"), "{message}");
            }
            other => panic!("{text:?}: expected a usage error, got {other:?}"),
        }
    }
    let longest = with_uki(("cmdline", AssetKind::Cmdline, vec![b'a'; 2048]));
    let bundle = sign_with(b"image", &longest, &[&f.release[0], &f.release[1]]).unwrap();
    let manifest = open(&bundle, &f.root).unwrap();
    assert_eq!(
        manifest.asset("cmdline").unwrap().kind(),
        AssetKind::Cmdline
    );
    assert_eq!(
        asset_bytes(&bundle, &f.root, "cmdline").unwrap(),
        vec![b'a'; 2048]
    );
}

#[test]
fn attack_signed_manifest_breaking_a_boot_kind_rule_is_refused_at_parse() {
    let e = example();
    let good = vec![
        ("kernel", AssetKind::Kernel, b"bzImage".to_vec()),
        ("initrd", AssetKind::Initrd, b"cpio".to_vec()),
        ("cmdline", AssetKind::Cmdline, vec![b'a'; 2048]),
    ];
    let bundle = handbuilt_with_assets(&e, &good);
    assert_eq!(
        asset_bytes(&bundle, &e.root, "cmdline").unwrap(),
        vec![b'a'; 2048]
    );
    for (assets, needle) in kind_rule_breaks() {
        match verify(&handbuilt_with_assets(&e, &assets), &e.root) {
            Err(Error::Format(FormatError::Field {
                section: Section::Manifest,
                field,
                reason,
            })) => {
                assert_eq!(field, "assets");
                assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
            }
            other => panic!("{needle}: expected a refused `assets`, got {other:?}"),
        }
    }
}

#[test]
fn attack_signed_cmdline_breaking_the_rule_is_refused_by_every_verifier() {
    let e = example();
    let d = Dir::new();
    std::fs::write(d.path("root.json"), e.root.bytes()).unwrap();
    for (text, needle) in [
        (&b"quiet\ninit=/bin/sh"[..], "byte 0x0a at offset 5"),
        (b"quiet\tx", "byte 0x09"),
        (b"quiet\0x", "byte 0x00"),
        (b"quiet\x7f", "byte 0x7f"),
        (b"quiet\r", "byte 0x0d"),
        (b"caf\xc3\xa9", "byte 0xc3 at offset 3"),
        (b"", "empty"),
        (b" quiet", "starts or ends with a space"),
        (b"quiet ", "starts or ends with a space"),
    ] {
        let assets = with_uki(("cmdline", AssetKind::Cmdline, text.to_vec()));
        let bundle = handbuilt_with_assets(&e, &assets);
        // The library's readers: the signed manifest passes, the asset's text does not.
        match asset_bytes(&bundle, &e.root, "cmdline") {
            Err(Error::Verify(VerifyError::Cmdline { asset, reason })) => {
                assert_eq!(&*asset, "cmdline");
                assert!(reason.to_string().contains(needle), "{needle}: {reason}");
            }
            other => panic!("{needle}: expected a refused command line, got {other:?}"),
        }
        // The signer's `verify` and `inspect`.
        std::fs::write(d.path("b.tandem"), &bundle).unwrap();
        let err = stderr(&d.fails(&["verify", "b.tandem", "--root", "root.json"]));
        assert!(
            err.contains("asset `cmdline` is not a kernel command line") && err.contains(needle),
            "{needle}: {err}"
        );
        let shown = stdout(&d.ok(&["inspect", "b.tandem", "--root", "root.json"]));
        assert!(
            shown.contains("INVALID: asset `cmdline` is not a kernel command line"),
            "{needle}: {shown}"
        );
    }
}

/// A hand-built, signed bundle of the §9.1 image and `assets` (each under 4096 bytes, one
/// stored chunk, or none when empty): what a writer that ignores the kind rules makes.
fn handbuilt_with_assets(e: &Example, assets: &[Named]) -> Vec<u8> {
    let mut payload = zstd::bulk::compress(&e.image, 3).unwrap();
    let image_frame = payload.len();
    let entries: Vec<String> = assets
        .iter()
        .map(|(name, kind, bytes)| {
            let mut chunks = String::new();
            if !bytes.is_empty() {
                let frame = zstd::bulk::compress(bytes, 3).unwrap();
                chunks = format!(
                    r#"{{"length":{},"offset":{},"sha256":"{}"}}"#,
                    frame.len(),
                    payload.len(),
                    sha(bytes)
                );
                payload.extend(frame);
            }
            format!(
                r#"{{"chunks":[{chunks}],"kind":"{kind}","name":"{name}","sha256":"{}","size":{}}}"#,
                sha(bytes),
                bytes.len()
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"assets":[{}],"chunk_size":4096,"chunks":[{{"length":{image_frame},"offset":0,"sha256":"{}"}}],"created":"2026-01-01T00:00:00Z","image":{{"sha256":"{}","size":4096}},"product":"example","security_version":1,"version":"1.1.0"}}"#,
        entries.join(","),
        sha(&e.image),
        sha(&e.image),
    );
    handbuilt(&manifest, &payload, 2, &e.key)
}

/// A hand-built bundle of `manifest` and `payload` with header version 1 or 2 ([`handbuilt_bundle`]).
fn handbuilt(manifest: &str, payload: &[u8], version: u8, key: &SecretKey) -> Vec<u8> {
    handbuilt_bundle(manifest, payload, version, &[], key)
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The example of FORMAT §9.1: a 4096-byte image and a 6000-byte UKI.
struct Example {
    key: SecretKey,
    root: Verified<signer::Root>,
    image: Vec<u8>,
    uki: Vec<u8>,
    payload: Vec<u8>,
}

fn example() -> Example {
    let key = SecretKey::generate();
    let root_key = SecretKey::generate();
    let expires = datetime!(2099-01-01 0:00 UTC);
    let root_bytes = root_doc(1, expires, &[&root_key], 1, &[&key], 1, &[&root_key]);
    let root = trust_root(&root_bytes, now(), &Limits::default()).unwrap();
    let image = vec![b'a'; 4096];
    let mut uki = vec![b'u'; 4096];
    uki.resize(6000, 0);
    let mut payload = zstd::bulk::compress(&image, 3).unwrap();
    payload.extend(zstd::bulk::compress(&uki[..4096], 3).unwrap());
    Example {
        key,
        root,
        image,
        uki,
        payload,
    }
}

/// The manifest of FORMAT §9.1, with `asset_sha` as the UKI's hash and `offset` as the payload
/// offset of its first frame.
fn example_manifest(e: &Example, asset_sha: &str, offset: usize) -> String {
    format!(
        r#"{{"assets":[{{"chunks":[{{"length":19,"offset":{offset},"sha256":"{}"}},{{"sha256":"{}","zero":true}}],"kind":"uki","name":"uki","sha256":"{asset_sha}","size":6000}}],"chunk_size":4096,"chunks":[{{"length":19,"offset":0,"sha256":"{}"}}],"created":"2026-01-01T00:00:00Z","image":{{"sha256":"{}","size":4096}},"product":"example","security_version":1,"version":"1.1.0"}}"#,
        sha(&e.uki[..4096]),
        sha(&e.uki[4096..]),
        sha(&e.image),
        sha(&e.image),
    )
}

fn verify(bundle: &[u8], root: &Verified<signer::Root>) -> Result<Verified<Manifest>, Error> {
    let limits = Limits::default();
    BundleHead::read(&mut Cursor::new(bundle), &limits)?.verify(root, &limits)
}

#[test]
fn the_format_example_with_a_uki_verifies_and_extracts() {
    let e = example();
    assert_eq!(e.payload.len(), 38, "FORMAT §9.1 assumes 19-byte frames");
    let manifest = example_manifest(&e, &sha(&e.uki), 19);
    assert_eq!(manifest.len(), 651, "the length FORMAT §9.1 gives");
    let bundle = handbuilt(&manifest, &e.payload, 2, &e.key);
    assert_eq!(bundle.len(), 1590);
    assert_eq!(
        &bundle[..16],
        b"TANDEM\0\x02\x00\x04\x00\x00\x00\x02\x00\x00"
    );
    assert_eq!(asset_bytes(&bundle, &e.root, "uki").unwrap(), e.uki);
    assert_eq!(extract_bytes(&bundle, &e.root).unwrap(), e.image);
}

#[test]
fn a_version_1_header_over_a_manifest_with_assets_is_refused() {
    let e = example();
    let bundle = handbuilt(
        &example_manifest(&e, &sha(&e.uki), 19),
        &e.payload,
        1,
        &e.key,
    );
    match verify(&bundle, &e.root) {
        Err(Error::Format(FormatError::Field {
            section: Section::Manifest,
            field,
            ..
        })) => {
            assert_eq!(field, "assets")
        }
        other => panic!("expected a refused `assets` field, got {other:?}"),
    }
}

#[test]
fn a_reader_refuses_a_version_it_does_not_know() {
    let e = example();
    let bundle = handbuilt(
        &example_manifest(&e, &sha(&e.uki), 19),
        &e.payload,
        4,
        &e.key,
    );
    assert!(matches!(
        verify(&bundle, &e.root),
        Err(Error::Format(FormatError::UnsupportedVersion(4)))
    ));
}

#[test]
fn attack_signed_asset_hash_that_the_chunks_do_not_make() {
    let e = example();
    let wrong = sha(b"another uki");
    let bundle = handbuilt(&example_manifest(&e, &wrong, 19), &e.payload, 2, &e.key);
    match asset_bytes(&bundle, &e.root, "uki") {
        Err(Error::Verify(VerifyError::AssetHash {
            asset, expected, ..
        })) => {
            assert_eq!(&*asset, "uki");
            assert_eq!(expected.to_hex(), wrong);
        }
        other => panic!("expected AssetHash, got {other:?}"),
    }
}

#[test]
fn asset_frames_that_are_not_contiguous_are_refused() {
    let e = example();
    let bundle = handbuilt(
        &example_manifest(&e, &sha(&e.uki), 20),
        &e.payload,
        2,
        &e.key,
    );
    match verify(&bundle, &e.root) {
        Err(Error::Format(FormatError::Field { field, .. })) => {
            assert_eq!(field, "assets[0].chunks[0]")
        }
        other => panic!("expected a refused asset chunk entry, got {other:?}"),
    }
}

#[test]
fn a_version_2_bundle_without_assets_is_refused() {
    let e = example();
    let manifest = format!(
        r#"{{"assets":[],"chunk_size":4096,"chunks":[{{"length":19,"offset":0,"sha256":"{}"}}],"created":"2026-01-01T00:00:00Z","image":{{"sha256":"{}","size":4096}},"product":"example","security_version":1,"version":"1.1.0"}}"#,
        sha(&e.image),
        sha(&e.image),
    );
    let bundle = handbuilt(&manifest, &e.payload[..19], 2, &e.key);
    assert!(matches!(
        verify(&bundle, &e.root),
        Err(Error::Format(FormatError::Field { .. }))
    ));
}
