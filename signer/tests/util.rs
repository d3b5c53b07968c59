//! Shared helpers: keys, roots and bundles built in memory at fixed times, and a harness for
//! running the `tandem-signer` binary in a fresh directory that prints everything on failure.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use signer::bundle::{extract, sign_bundle, BundleHead, SignOptions};
use signer::chunking::Chunking;
use signer::keys::sign_bytes;
use signer::metadata::{root_signed_bytes, sign_document, RootSpec};
use signer::verify::trust_root;
use signer::{Error, Limits, Manifest, RoleKind, Root, SecretKey, Verified};
use time::macros::datetime;
use time::OffsetDateTime;

/// The fixed "now" of the tests.
pub fn now() -> OffsetDateTime {
    datetime!(2026-06-01 12:00 UTC)
}

pub fn keys(n: usize) -> Vec<SecretKey> {
    (0..n).map(|_| SecretKey::generate()).collect()
}

/// A root document signed by `signers`.
pub fn root_doc(
    version: u64,
    expires: OffsetDateTime,
    root: &[&SecretKey],
    root_thr: u32,
    release: &[&SecretKey],
    rel_thr: u32,
    signers: &[&SecretKey],
) -> Vec<u8> {
    let spec = RootSpec {
        version,
        expires,
        root_keys: root.iter().map(|k| *k.public()).collect(),
        root_threshold: root_thr,
        release_keys: release.iter().map(|k| *k.public()).collect(),
        release_threshold: rel_thr,
    };
    let signed = root_signed_bytes(&spec).unwrap();
    let owned: Vec<SecretKey> = signers
        .iter()
        .map(|k| SecretKey::from_pem(&k.to_pem().unwrap()).unwrap())
        .collect();
    sign_document(RoleKind::Root, &signed, &owned).unwrap()
}

/// One root key, three release keys, release threshold 2.
pub struct Fixture {
    pub root_key: SecretKey,
    pub release: Vec<SecretKey>,
    pub root: Verified<Root>,
}

pub fn fixture() -> Fixture {
    let root_key = SecretKey::generate();
    let release = keys(3);
    let rel: Vec<&SecretKey> = release.iter().collect();
    let root_bytes = root_doc(
        1,
        datetime!(2027-01-01 0:00 UTC),
        &[&root_key],
        1,
        &rel,
        2,
        &[&root_key],
    );
    let root = trust_root(&root_bytes, now(), &Limits::default()).unwrap();
    Fixture {
        root_key,
        release,
        root,
    }
}

pub fn clone_key(k: &SecretKey) -> SecretKey {
    SecretKey::from_pem(&k.to_pem().unwrap()).unwrap()
}

/// The options of the in-memory test bundles: product `tandem-os` 1.2.3, security version 7,
/// two workers, everything else the default (format version 3, 4 KiB blocks).
pub fn test_options() -> SignOptions {
    let mut opts = SignOptions::new("tandem-os", semver::Version::new(1, 2, 3), 7, now());
    opts.workers = 2;
    opts
}

/// Signs `image` with `opts` into an in-memory bundle.
pub fn sign_image_with(image: &[u8], opts: &SignOptions, keys: &[&SecretKey]) -> Vec<u8> {
    let owned: Vec<SecretKey> = keys.iter().map(|k| clone_key(k)).collect();
    let mut out = Cursor::new(Vec::new());
    sign_bundle(
        image,
        image.len() as u64,
        &mut out,
        opts,
        &owned,
        &Limits::default(),
        &mut |_| {},
    )
    .unwrap();
    out.into_inner()
}

/// Signs `image` into an in-memory bundle cut in fixed blocks of `block` bytes.
pub fn sign_image(image: &[u8], block: u32, keys: &[&SecretKey]) -> Vec<u8> {
    let mut opts = test_options();
    opts.chunking = Chunking::fixed(block);
    sign_image_with(image, &opts, keys)
}

/// Reads and verifies a bundle's head.
pub fn open(bundle: &[u8], root: &Verified<Root>) -> Result<Verified<Manifest>, Error> {
    let head = BundleHead::read(&mut Cursor::new(bundle), &Limits::default())?;
    head.verify(root, &Limits::default())
}

/// Verifies and extracts a bundle.
pub fn extract_bytes(bundle: &[u8], root: &Verified<Root>) -> Result<Vec<u8>, Error> {
    let manifest = open(bundle, root)?;
    let mut out = Vec::new();
    extract(&manifest, Cursor::new(bundle), &mut out, &mut |_| {})?;
    Ok(out)
}

/// A 150 001-byte PE image (sparse filler) with an `.osrel` section holding `osrel` at
/// offset 100 000 (in the second 64 KiB chunk), a `.cmdline` section holding `cmdline` at
/// offset 140 000, and a `.linux` section (the filler from 4 096): what `sign --uki` takes.
pub fn uki_image(osrel: &[u8], cmdline: &[u8]) -> Vec<u8> {
    let mut b = sparse_image(150_001, 21);
    b[..2].copy_from_slice(b"MZ");
    b[0x3C..0x40].copy_from_slice(&64u32.to_le_bytes());
    b[64..68].copy_from_slice(b"PE\0\0");
    b[70..72].copy_from_slice(&3u16.to_le_bytes());
    b[84..86].copy_from_slice(&0u16.to_le_bytes()); // no optional header
    let kernel = b[4096..90_000].to_vec();
    for (s, name, content, at) in [
        (88, b".osrel\0\0", osrel, 100_000u32),
        (128, b".cmdline", cmdline, 140_000),
        (168, b".linux\0\0", &kernel[..], 4096),
    ] {
        b[s..s + 8].copy_from_slice(name);
        let len = (content.len() as u32).to_le_bytes();
        b[s + 8..s + 12].copy_from_slice(&len);
        b[s + 16..s + 20].copy_from_slice(&len);
        b[s + 20..s + 24].copy_from_slice(&at.to_le_bytes());
        let at = at as usize;
        b[at..at + content.len()].copy_from_slice(content);
    }
    b
}

/// A partly random, partly zero image: `len` bytes, deterministic from `seed`.
pub fn sparse_image(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = seed | 1;
    for (i, b) in v.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (i / 4096) % 3 != 1 {
            *b = if (i / 4096) % 3 == 0 {
                (x & 0xff) as u8
            } else {
                b"tandem "[i % 7]
            };
        }
    }
    v
}

/// A temporary directory with a command builder for the binary.
pub struct Dir {
    pub tmp: tempfile::TempDir,
    /// Set for every run (the caller's own TANDEM_PKCS11_* never are: runs are hermetic).
    pub env: Vec<(String, String)>,
}

impl Dir {
    pub fn new() -> Self {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Runs `tandem-signer args…` in the directory.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tandem-signer"))
            .args(args)
            .env_remove("TANDEM_PKCS11_MODULE")
            .env_remove("TANDEM_PKCS11_PIN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.tmp.path())
            .output()
            .unwrap()
    }

    /// Runs and requires success.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "{}", self.describe(args, &out));
        out
    }

    /// `root.json`: `root.pem` signs a 1-of-1 root role; `r1`–`r3` (public keys here) make a
    /// 2-of-3 release role; `extra` flags (e.g. `--expires`) go on the command line too.
    pub fn init_root_2_of_3(&self, extra: &[&str]) {
        self.init_root(&["r1.pub.pem", "r2.pub.pem", "r3.pub.pem"], "2", extra);
    }

    /// `root.json`: `root.pem` signs a 1-of-1 root role; the public key files `release` make
    /// a release role of `threshold`; `extra` flags go on the command line too.
    pub fn init_root(&self, release: &[&str], threshold: &str, extra: &[&str]) {
        let mut args = vec![
            "root",
            "init",
            "-o",
            "root.json",
            "--root-key",
            "root.pub.pem",
            "--root-threshold",
            "1",
            "--release-threshold",
            threshold,
            "--sign-with",
            "root.pem",
        ];
        for key in release {
            args.extend(["--release-key", key]);
        }
        args.extend(extra);
        self.ok(&args);
    }

    /// Runs and requires failure.
    pub fn fails(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "expected failure\n{}",
            self.describe(args, &out)
        );
        assert_eq!(out.status.code(), Some(1), "{}", self.describe(args, &out));
        out
    }

    pub fn describe(&self, args: &[&str], out: &Output) -> String {
        format!(
            "command: tandem-signer {}\ncwd: {}\nfiles: {:?}\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            self.tmp.path().display(),
            listing(self.tmp.path()),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn listing(&self) -> Vec<String> {
        listing(self.tmp.path())
    }
}

fn listing(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `sign` of the image `img` as product `os` 1.0.0, security version 1 (boot assets in 64 KiB
/// chunks) into `out`, signed with `keys`, then `extra` flags.
pub fn sign_args<'a>(out: &'a str, keys: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    sign_version_args("1.0.0", "1", out, keys, extra)
}

/// [`sign_args`] for another `version` and `security` version.
pub fn sign_version_args<'a>(
    version: &'a str,
    security: &'a str,
    out: &'a str,
    keys: &[&'a str],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "sign",
        "--image",
        "img",
        "--product",
        "os",
        "--version",
        version,
        "--security-version",
        security,
        "--chunk-size",
        "64KiB",
        "-o",
        out,
    ];
    for key in keys {
        args.extend(["--key", key]);
    }
    args.extend(extra);
    args
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `len` bytes of words in a pseudo-random order from `seed`: compressible data with a
/// vocabulary a dictionary learns.
pub fn text_image(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "kernel ", "module ", "systemd ", "tandem ", "slot ", "boot ", "update ", "bundle ",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % 8) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

/// The dictionary [`signer::bundle::train_dictionary`] trains on `image`.
pub fn dictionary_for(image: &[u8]) -> Vec<u8> {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, image).unwrap();
    signer::bundle::train_dictionary(&file, image.len() as u64)
        .unwrap()
        .expect("a dictionary for a text image")
}

/// A hand-built bundle (FORMAT §2–§4) of `manifest` and `payload` with header version
/// `version`, signed by `key`: manifest region 1024 bytes (or the next multiple of 1024 that
/// holds `manifest`), signature block 512. For version 3, `tail` is the stored index (no
/// dictionary), written after the payload and announced in the 24-byte header; before, it
/// must be empty.
pub fn handbuilt_bundle(
    manifest: &str,
    payload: &[u8],
    version: u8,
    tail: &[u8],
    key: &SecretKey,
) -> Vec<u8> {
    let mut region = manifest.as_bytes().to_vec();
    region.resize(manifest.len().max(1).next_multiple_of(1024), b' ');
    let signature = &sign_bytes(RoleKind::Bundle, &region, std::slice::from_ref(key)).unwrap()[0];
    let mut block = format!(
        r#"{{"signatures":[{{"keyid":"{}","sig":"{}"}}]}}"#,
        signature.keyid,
        hex::encode(signature.sig)
    )
    .into_bytes();
    block.resize(512, b' ');
    let mut out = b"TANDEM\0".to_vec();
    out.push(version);
    out.extend_from_slice(&(region.len() as u32).to_le_bytes());
    out.extend_from_slice(&512u32.to_le_bytes());
    if version == 3 {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(tail.len() as u32).to_le_bytes());
    } else {
        assert!(tail.is_empty(), "only version 3 has a tail");
    }
    out.extend(region);
    out.extend(block);
    out.extend_from_slice(payload);
    out.extend_from_slice(tail);
    out
}

/// `len` bytes that do not compress and repeat nowhere, from `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// `d/img`: an ext4 image of `size` bytes with `block`-byte blocks (`mke2fs`, from e2fsprogs;
/// a missing tool fails the test) holding 3 MiB of text files: mostly free space.
pub fn ext4_image(d: &Dir, size: &str, block: &str) {
    let files = d.path("files");
    std::fs::create_dir_all(&files).unwrap();
    for i in 0..3u64 {
        std::fs::write(files.join(format!("f{i}.txt")), text_image(1 << 20, i + 1)).unwrap();
    }
    let img = d.path("img");
    let _ = std::fs::remove_file(&img);
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", block, "-d"])
        .arg(&files)
        .arg(&img)
        .arg(size)
        .output()
        .unwrap_or_else(|e| panic!("`mke2fs` is required for this test (e2fsprogs): {e}"));
    assert!(
        out.status.success(),
        "mke2fs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
