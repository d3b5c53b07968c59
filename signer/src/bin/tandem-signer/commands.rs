//! One function per command: turns the typed arguments into validated values ("high"
//! arguments: keys loaded, sizes and times parsed) and calls the library.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use signer::bundle::{
    add_checked_signatures, add_signatures, extract, extract_asset, sign_release, train_dictionary,
    verify_contents, AssetSource, BundleHead, PreviousChunks, SignOptions, Sources,
};
use signer::chunking::Chunking;
use signer::ext::{small_blocks, SmallBlocks};
use signer::files::{
    read_capped, read_public_key, write_atomic, write_bytes_atomic, write_key_pair, Overwrite,
};
use signer::inspect::{AssetInfo, Inspection};
use signer::metadata::{self, RootSpec};
use signer::publish::{publish_allowing, Allow, PublishOptions};
use signer::request::{
    document_kind, document_signed_bytes, CheckedSignature, SignatureFile, SigningRequest,
};
use signer::time_util::{format_rfc3339, now_utc, parse_expiry, parse_rfc3339};
use signer::verify::trust_root;
use signer::{AssetKind, Limits, Manifest, PublicKey, RoleKind, SecretKey, Verified};
use time::OffsetDateTime;

use crate::cli::{Args, Command, KeyArg, PublishArgs, RootCommand, RootContent, SignArgs};
use crate::keys::{private_key, private_keys};
use crate::out::outln;
use crate::repository::{signer_json, signers_text};
use crate::verity;

/// Runs one command.
pub fn run(args: Args) -> Result<()> {
    let limits = Limits::default();
    match args.command {
        Command::Keygen { out } => keygen(&out),
        Command::Root(cmd) => root(cmd, &limits),
        Command::Verity { image, out, salt } => {
            let (f, size) = open_sized(&image)?;
            verity::verity(f, size, &image, &out, salt.as_deref())
        }
        Command::Sign(a) => sign(&a, &limits),
        Command::AddSignature {
            bundle,
            keys,
            signatures,
            ..
        } if signatures.is_empty() => add_signature(&bundle, &keys, &limits),
        Command::AddSignature {
            bundle,
            signatures,
            root,
            ..
        } => add_signature_files(&bundle, &signatures, root.as_deref(), &limits),
        Command::Request {
            file,
            document,
            out,
        } => request(&file, document.as_deref(), &out, &limits),
        Command::SignRequest { request, key, out } => sign_request(&request, &key, &out, &limits),
        Command::Verify { bundle, root } => verify(&bundle, &root, &limits),
        Command::Inspect { bundle, root, json } => inspect(&bundle, root.as_deref(), json, &limits),
        Command::Extract {
            bundle,
            root,
            out,
            asset,
        } => extract_cmd(&bundle, &root, &out, asset.as_deref(), &limits),
        Command::Publish(a) => publish_cmd(&a, &limits),
        Command::Mirror(a) => crate::repository::mirror_cmd(&a, &limits),
        Command::Log(a) => crate::repository::log_cmd(&a, &limits),
    }
}

fn keygen(out: &Path) -> Result<()> {
    let key = SecretKey::generate();
    let (private, public) = write_key_pair(out, &key)?;
    eprintln!(
        "wrote {} (private, mode 0600) and {}",
        private.display(),
        public.display()
    );
    outln!("{}", key.id());
    Ok(())
}

fn public_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| read_public_key(p).with_context(|| format!("public key {}", p.display())))
        .collect()
}

fn expiry(s: &str) -> Result<OffsetDateTime> {
    parse_expiry(s, now_utc())
        .map_err(anyhow::Error::msg)
        .context("--expires")
}

fn read_metadata(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    Ok(read_capped(path, limits.max_metadata_len)?)
}

fn root(cmd: RootCommand, limits: &Limits) -> Result<()> {
    match cmd {
        RootCommand::Init(c) => write_root(&c, 1, None, limits),
        RootCommand::Rotate { trusted, content } => {
            let old = read_metadata(&trusted, limits)?;
            let version = metadata::next_root_version(&old, limits)
                .with_context(|| format!("trusted root {}", trusted.display()))?;
            write_root(&content, version, Some(&old), limits)
        }
        RootCommand::Sign {
            file,
            keys,
            trusted,
        } => root_sign(&file, &keys, trusted.as_deref(), limits),
        RootCommand::Verify { file, trusted } => {
            let doc = read_metadata(&file, limits)?;
            let old = trusted
                .as_deref()
                .map(|t| read_metadata(t, limits))
                .transpose()?;
            let root = metadata::check_root(&doc, old.as_deref(), now_utc(), limits)
                .with_context(|| format!("{} is not valid", file.display()))?;
            outln!(
                "{}: valid root version {}, expires {}",
                file.display(),
                root.version(),
                format_rfc3339(root.expires())
            );
            Ok(())
        }
    }
}

fn write_root(
    c: &RootContent,
    version: u64,
    trusted: Option<&[u8]>,
    limits: &Limits,
) -> Result<()> {
    let spec = RootSpec {
        version,
        expires: expiry(&c.expires)?,
        root_keys: public_keys(&c.root_keys)?,
        root_threshold: c.root_threshold,
        release_keys: public_keys(&c.release_keys)?,
        release_threshold: c.release_threshold,
    };
    let signed = metadata::root_signed_bytes(&spec)?;
    let doc = metadata::sign_document(RoleKind::Root, &signed, &private_keys(&c.sign_with)?)?;
    match metadata::check_root(&doc, trusted, now_utc(), limits) {
        Err(e) if !c.allow_partial => Err(anyhow::Error::new(e).context(format!(
            "not writing {} (use --allow-partial to write it and sign later)",
            c.out.display()
        ))),
        status => {
            write_bytes_atomic(&c.out, 0o644, Overwrite::Replace, &doc)?;
            report_root(&c.out, version, status);
            Ok(())
        }
    }
}

fn report_root(path: &Path, version: u64, status: signer::Result<Verified<signer::Root>>) {
    match status {
        Ok(_) => eprintln!("wrote {} (root version {version}): valid", path.display()),
        Err(e) => eprintln!(
            "wrote {} (root version {version}): NOT valid yet: {e}\n  add signatures with: tandem-signer root sign {} --key KEY.pem",
            path.display(),
            path.display()
        ),
    }
}

fn root_sign(file: &Path, keys: &[KeyArg], trusted: Option<&Path>, limits: &Limits) -> Result<()> {
    let doc = read_metadata(file, limits)?;
    let signed =
        metadata::add_document_signatures(RoleKind::Root, &doc, &private_keys(keys)?, limits)
            .with_context(|| format!("signing {}", file.display()))?;
    let old = trusted.map(|t| read_metadata(t, limits)).transpose()?;
    let status = metadata::check_root(&signed, old.as_deref(), now_utc(), limits);
    write_bytes_atomic(file, 0o644, Overwrite::Replace, &signed)?;
    let version = status.as_ref().map(|r| r.version()).unwrap_or(0);
    report_root(file, version, status);
    Ok(())
}

/// The stored chunks of the `--previous` bundles' images ([`PreviousChunks`]).
fn previous_chunks(bundles: &[PathBuf], limits: &Limits) -> Result<PreviousChunks> {
    let mut chunks = PreviousChunks::default();
    for path in bundles {
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        chunks
            .add_bundle(&mut f, limits)
            .with_context(|| format!("--previous {}", path.display()))?;
    }
    Ok(chunks)
}

/// `--chunking`: `fixed:SIZE` or `cdc:MIN,AVG,MAX`.
fn parse_chunking(spec: &str) -> Result<Chunking> {
    let usage = || {
        format!("--chunking `{spec}`: expected fixed:SIZE or cdc:MIN,AVG,MAX, like fixed:4KiB or cdc:16KiB,32KiB,128KiB")
    };
    let (kind, sizes) = spec.split_once(':').with_context(usage)?;
    let sizes: Vec<u32> = sizes
        .split(',')
        .map(parse_size)
        .collect::<Result<_>>()
        .with_context(usage)?;
    match (kind, sizes.as_slice()) {
        ("fixed", [size]) => Ok(Chunking::fixed(*size)),
        ("cdc", [min, avg, max]) => Ok(Chunking {
            min: *min,
            avg: *avg,
            max: *max,
        }),
        _ => Err(anyhow::anyhow!(usage())),
    }
}

/// Parses `1MiB`, `4MiB`, `512KiB`, `65536`.
fn parse_size(s: &str) -> Result<u32> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().with_context(|| {
        format!("size `{s}`: expected a number with an optional unit, like 1MiB")
    })?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => bail!("size `{s}`: unknown unit `{other}` (use KiB, MiB or GiB)"),
    };
    n.checked_mul(mult)
        .and_then(|v| u32::try_from(v).ok())
        .with_context(|| format!("size `{s}` is too large"))
}

/// `--created`, else `SOURCE_DATE_EPOCH` (reproducible builds), else now.
fn created(flag: Option<&str>) -> Result<OffsetDateTime> {
    if let Some(time) = flag {
        return parse_rfc3339(time).with_context(|| {
            format!("--created `{time}`: expected a time like 2026-01-31T12:00:00Z")
        });
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => {
            let secs: i64 = v
                .trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not an integer")?;
            OffsetDateTime::from_unix_timestamp(secs).context("SOURCE_DATE_EPOCH out of range")
        }
        Err(_) => Ok(now_utc()),
    }
}

fn progress_bar(total: u64) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        pb.set_style(style);
    }
    Some(pb)
}

fn sign(a: &SignArgs, limits: &Limits) -> Result<()> {
    let version = semver::Version::parse(&a.version)
        .with_context(|| format!("--version `{}` is not semver (like 1.2.3)", a.version))?;
    let mut opts = SignOptions::new(
        &a.product,
        version,
        a.security_version,
        created(a.created.as_deref())?,
    );
    opts.chunk_size = parse_size(&a.chunk_size).context("--chunk-size")?;
    opts.chunking = parse_chunking(&a.chunking)?;
    opts.level = a.level;
    opts.workers = a.threads.unwrap_or(0);
    let keys = private_keys(&a.keys)?;
    let (mut image, data_size) = open_sized(&a.image)?;
    warn_small_blocks(&image, &a.image, opts.chunking);
    if let Some(path) = &a.uki {
        check_uki(path)?;
    }
    let tree = verity::hash_area(a, &mut image, data_size)?;
    verity::check_cmdlines(a, tree.as_ref().map(|(v, _)| v))?;
    let size = data_size + tree.as_ref().map_or(0, |(v, _)| v.hash_size());
    opts.verity = tree.as_ref().map(|(v, _)| v.to_doc());
    opts.previous = previous_chunks(&a.previous, limits)?;
    // Only the small frames of new chunks gain from a dictionary (those of --previous, or
    // the chunk store's): otherwise every frame holds up to 1 MiB.
    if (!a.previous.is_empty() || a.chunk_store) && !a.no_dictionary {
        opts.dictionary = train_dictionary(&image, size)
            .with_context(|| format!("training a dictionary on {}", a.image.display()))?;
    }
    let assets = asset_sources(a)?;
    let total = size + assets.iter().map(|s| s.size).sum::<u64>();
    let asset_count = assets.len();
    let sources = Sources {
        image: verity::with_hash_area(&mut image, tree.map(|(_, f)| f)),
        image_size: size,
        assets,
    };
    let pb = progress_bar(total);
    let start = Instant::now();
    let mut summary = None;
    let mut on_progress = |done| {
        if let Some(pb) = &pb {
            pb.set_position(done)
        }
    };
    let sign_into = |f: &mut File, store: Option<&mut dyn std::io::Write>| {
        summary = Some(sign_release(
            sources,
            f,
            store,
            &opts,
            &keys,
            limits,
            &mut on_progress,
        )?);
        Ok(())
    };
    let store_path = a
        .chunk_store
        .then(|| PathBuf::from(proto::chunk_store_path(&a.out.to_string_lossy())));
    match &store_path {
        // The store is renamed into place after its bundle: a node that finds the bundle
        // without its store fetches whole frames, never a store of another release.
        Some(store_path) => write_atomic(store_path, 0o644, Overwrite::Replace, |store| {
            write_atomic(&a.out, 0o644, Overwrite::Replace, |f| {
                sign_into(f, Some(store))
            })
        }),
        None => write_atomic(&a.out, 0o644, Overwrite::Replace, |f| sign_into(f, None)),
    }
    .with_context(|| format!("signing {} into {}", a.image.display(), a.out.display()))?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let s = summary.context("signing produced no summary")?;
    eprintln!(
        "wrote {}: {} bytes image -> {} bytes ({:.1}x), {} chunks ({} zero), {asset_count} assets, {:.2}s",
        a.out.display(),
        size,
        s.file_len,
        size as f64 / s.file_len.max(1) as f64,
        s.chunks,
        s.zero_chunks,
        start.elapsed().as_secs_f64()
    );
    if let Some(store_path) = &store_path {
        eprintln!(
            "wrote {}: the chunk store, {} bytes",
            store_path.display(),
            s.store_len.unwrap_or(0)
        );
    }
    outln!("manifest sha256 {}", s.manifest_sha256);
    for id in &s.signers {
        outln!("signed by {id}");
    }
    if s.signers.is_empty() {
        eprintln!("unsigned: sign it with `add-signature`, or elsewhere through `request`");
    }
    Ok(())
}

/// Warns when the image is an ext2/3/4 filesystem whose blocks are smaller than the chunks'
/// granularity ([`small_blocks`]): data a build moves by smaller blocks is not found again,
/// and updates fetch more.
fn warn_small_blocks(image: &File, path: &Path, chunking: Chunking) {
    let mut read_at = signer::uki::file_reader(image);
    if let Some(SmallBlocks { block, grain }) = small_blocks(&mut read_at, chunking) {
        eprintln!(
            "warning: {} is an ext2/3/4 filesystem of {block}-byte blocks, smaller than its {grain}-byte chunks: data a new build moves by a block is not found again and updates fetch more; make the image with `mke2fs -b 4096`",
            path.display()
        );
    }
}

/// Refuses a `--uki` that is not a unified kernel image (a PE image with a `.linux` section):
/// a bare kernel, an initramfs or a loader given by mistake would be signed, installed, and
/// fail only at the node's next boot.
fn check_uki(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening --uki {}", path.display()))?;
    if !signer::uki::has_section(&mut signer::uki::file_reader(&file), ".linux") {
        bail!(
            "--uki {}: not a unified kernel image (no PE .linux section); build one with ukify or objcopy (docs/signing.md)",
            path.display()
        );
    }
    Ok(())
}

/// Opens a file and measures it (a block device has no size in its metadata).
fn open_sized(path: &Path) -> Result<(File, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = f
        .seek(SeekFrom::End(0))
        .and_then(|n| f.seek(SeekFrom::Start(0)).map(|_| n))
        .with_context(|| format!("reading the size of {}", path.display()))?;
    Ok((f, size))
}

/// The boot assets named by `--uki`, `--kernel`/`--initrd`, `--partition-image NAME=FILE`
/// and `--cmdline TEXT` (last).
fn asset_sources(a: &SignArgs) -> Result<Vec<AssetSource<'static>>> {
    let mut named: Vec<(String, AssetKind, PathBuf)> = Vec::new();
    let fixed = [
        (&a.uki, AssetKind::Uki),
        (&a.kernel, AssetKind::Kernel),
        (&a.initrd, AssetKind::Initrd),
    ];
    for (path, kind) in fixed {
        if let Some(p) = path {
            named.push((kind.as_str().to_owned(), kind, p.clone()));
        }
    }
    for spec in &a.partition_images {
        let (name, path) = spec.split_once('=').with_context(|| {
            format!("--partition-image `{spec}`: expected NAME=FILE, like esp=esp.img")
        })?;
        named.push((name.to_owned(), AssetKind::Image, PathBuf::from(path)));
    }
    let mut sources = named
        .into_iter()
        .map(|(name, kind, path)| {
            let (f, size) = open_sized(&path)?;
            Ok(AssetSource {
                name,
                kind,
                size,
                reader: Box::new(BufReader::new(f)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(text) = &a.cmdline {
        proto::check_cmdline(text).context("--cmdline")?;
        sources.push(AssetSource {
            name: AssetKind::Cmdline.as_str().to_owned(),
            kind: AssetKind::Cmdline,
            size: text.len() as u64,
            reader: Box::new(io::Cursor::new(text.clone().into_bytes())),
        });
    }
    Ok(sources)
}

fn add_signature(bundle: &Path, keys: &[KeyArg], limits: &Limits) -> Result<()> {
    let keys = private_keys(keys)?;
    let mut f = open_for_signing(bundle)?;
    let added = add_signatures(&mut f, &keys, limits)
        .with_context(|| format!("adding signatures to {}", bundle.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", bundle.display()))?;
    for id in added {
        outln!("signed by {id}");
    }
    Ok(())
}

fn open_for_signing(bundle: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(bundle)
        .with_context(|| format!("opening {}", bundle.display()))
}

fn request(file: &Path, document: Option<&str>, out: &Path, limits: &Limits) -> Result<()> {
    let req = match document {
        None => {
            let mut f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let head =
                BundleHead::read(&mut f, limits).with_context(|| format!("{}", file.display()))?;
            SigningRequest::for_bundle(&head)
        }
        Some(kind) => {
            let kind = match kind {
                "root" => RoleKind::Root,
                _ => RoleKind::Channel,
            };
            SigningRequest::for_document(kind, &read_metadata(file, limits)?, limits)
                .with_context(|| format!("{}", file.display()))?
        }
    };
    let json = req.to_json()?;
    write_bytes_atomic(out, 0o644, Overwrite::Replace, &json)?;
    outln!(
        "wrote {}: {} request, {} bytes, {} {}",
        out.display(),
        req.kind(),
        json.len(),
        digest_name(req.kind()),
        req.sha256()
    );
    Ok(())
}

/// What the digest of a request's signed bytes is called, as `sign` and `inspect` print it: a
/// bundle's signed bytes are its manifest region.
fn digest_name(kind: RoleKind) -> &'static str {
    match kind {
        RoleKind::Bundle => "manifest sha256",
        _ => "signed bytes sha256",
    }
}

fn sign_request(path: &Path, key: &KeyArg, out: &Path, limits: &Limits) -> Result<()> {
    // Hex doubles the signed bytes; the header and field names need a little more.
    let signed_max = u64::from(limits.max_manifest_len).max(limits.max_metadata_len);
    let req = SigningRequest::parse(&read_capped(path, 2 * signed_max + 4096)?, limits)
        .with_context(|| format!("request {}", path.display()))?;
    show_signed(&req, limits).with_context(|| format!("request {}", path.display()))?;
    let sig = req.sign(&private_key(key)?)?;
    write_bytes_atomic(out, 0o644, Overwrite::Replace, &sig.to_json()?)?;
    outln!("signed by {}", sig.keyid());
    Ok(())
}

/// What `sign-request` signs, on stderr for the person at the offline machine.
fn show_signed(req: &SigningRequest, limits: &Limits) -> Result<()> {
    eprintln!(
        "signing {} {} {}",
        req.kind(),
        digest_name(req.kind()),
        req.sha256()
    );
    if req.kind() != RoleKind::Bundle {
        eprintln!("{}", req.document_text()?);
        return Ok(());
    }
    let m = req.manifest(limits)?;
    eprintln!("  product          {}", m.product());
    eprintln!("  version          {}", m.version());
    eprintln!("  security version {}", m.security_version());
    eprintln!(
        "  image            {} bytes, sha256 {}",
        m.image_size(),
        m.image_sha256()
    );
    eprintln!("  created          {}", format_rfc3339(m.created()));
    for a in m.assets() {
        eprintln!(
            "  boot asset       {}: {} bytes, sha256 {}",
            a.name(),
            a.size(),
            a.sha256()
        );
    }
    Ok(())
}

/// Signature files read, checked against `signed` (bytes of `kind`) and, with a root, against
/// the role that signs `kind`. Every error names the signature file and the target.
fn checked_signatures(
    target: &Path,
    kind: RoleKind,
    signed: &[u8],
    sigs: &[(PathBuf, SignatureFile)],
    root: Option<&Path>,
    limits: &Limits,
) -> Result<Vec<CheckedSignature>> {
    let root = root.map(|r| load_root(r, limits)).transpose()?;
    let mut checked = Vec::with_capacity(sigs.len());
    for (path, sig) in sigs {
        let refused = || {
            format!(
                "signature {} refused for {}",
                path.display(),
                target.display()
            )
        };
        if let Some((root, root_path)) = &root {
            let role = kind.signed_by();
            if !root.role(role).keyids().contains(&sig.keyid()) {
                bail!(
                    "{}: key {} is not a {role} key of {}, so verify would not count it",
                    refused(),
                    sig.keyid(),
                    root_path.display()
                );
            }
        }
        checked.push(
            sig.check(kind, signed)
                .map_err(signer::Error::from)
                .with_context(refused)?,
        );
    }
    Ok(checked)
}

fn add_signature_files(
    target: &Path,
    paths: &[PathBuf],
    root: Option<&Path>,
    limits: &Limits,
) -> Result<()> {
    let mut sigs = Vec::with_capacity(paths.len());
    for path in paths {
        let sig = SignatureFile::parse(&read_metadata(path, limits)?)
            .with_context(|| format!("signature {}", path.display()))?;
        sigs.push((path.clone(), sig));
    }
    // A JSON document starts with `{`, a bundle with its magic.
    let mut first = [0u8; 1];
    File::open(target)
        .and_then(|mut f| f.read_exact(&mut first))
        .with_context(|| format!("reading {}", target.display()))?;
    let added = match &first {
        b"{" => attach_to_document(target, &sigs, root, limits)?,
        _ => attach_to_bundle(target, &sigs, root, limits)?,
    };
    for id in added {
        outln!("signed by {id}");
    }
    Ok(())
}

fn attach_to_bundle(
    bundle: &Path,
    sigs: &[(PathBuf, SignatureFile)],
    root: Option<&Path>,
    limits: &Limits,
) -> Result<Vec<signer::KeyId>> {
    let mut f = open_for_signing(bundle)?;
    let head = BundleHead::read(&mut f, limits).with_context(|| format!("{}", bundle.display()))?;
    let signed = head.manifest_bytes();
    let checked = checked_signatures(bundle, RoleKind::Bundle, signed, sigs, root, limits)?;
    let added = add_checked_signatures(&mut f, &head, &checked, limits)
        .with_context(|| format!("adding signatures to {}", bundle.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", bundle.display()))?;
    Ok(added)
}

fn attach_to_document(
    file: &Path,
    sigs: &[(PathBuf, SignatureFile)],
    root: Option<&Path>,
    limits: &Limits,
) -> Result<Vec<signer::KeyId>> {
    let doc = read_metadata(file, limits)?;
    let in_file = || format!("{}", file.display());
    let kind = document_kind(&doc, limits).with_context(in_file)?;
    let signed = document_signed_bytes(&doc, limits).with_context(in_file)?;
    let checked = checked_signatures(file, kind, signed, sigs, root, limits)?;
    let new = metadata::add_checked_document_signatures(&doc, &checked, limits)
        .with_context(|| format!("adding signatures to {}", file.display()))?;
    write_bytes_atomic(file, 0o644, Overwrite::Replace, &new)?;
    Ok(sigs.iter().map(|(_, s)| s.keyid()).collect())
}

fn load_root<'a>(path: &'a Path, limits: &Limits) -> Result<(Verified<signer::Root>, &'a Path)> {
    let bytes = read_metadata(path, limits)?;
    let root = trust_root(&bytes, now_utc(), limits)
        .with_context(|| format!("root {}", path.display()))?;
    Ok((root, path))
}

fn open_verified(
    bundle: &Path,
    root: &Path,
    limits: &Limits,
) -> Result<(File, Verified<Manifest>)> {
    let (root, _) = load_root(root, limits)?;
    let mut f = File::open(bundle).with_context(|| format!("opening {}", bundle.display()))?;
    let head = BundleHead::read(&mut f, limits).with_context(|| format!("{}", bundle.display()))?;
    let manifest = head
        .into_verified(&root, limits)
        .with_context(|| format!("{}", bundle.display()))?;
    Ok((f, manifest))
}

fn verify(bundle: &Path, root: &Path, limits: &Limits) -> Result<()> {
    let (mut f, manifest) = open_verified(bundle, root, limits)?;
    let assets_size: u64 = manifest.assets().iter().map(|a| a.size()).sum();
    let pb = progress_bar(manifest.image_size() + assets_size);
    f.seek(SeekFrom::Start(0))?;
    let mut on_progress = |done| {
        if let Some(pb) = &pb {
            pb.set_position(done)
        }
    };
    verify_contents(&manifest, &mut BufReader::new(&mut f), &mut on_progress)
        .with_context(|| format!("{}", bundle.display()))?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let signers: Vec<String> = manifest.signers().iter().map(|k| k.short()).collect();
    outln!(
        "valid: {} {} (security version {}), {} chunks, image and {} asset sha256 verified, signed by {}",
        manifest.product(),
        manifest.version(),
        manifest.security_version(),
        manifest.chunks().len(),
        manifest.assets().len(),
        signers.join(", ")
    );
    Ok(())
}

fn inspect(bundle: &Path, root: Option<&Path>, json: bool, limits: &Limits) -> Result<()> {
    let mut f = File::open(bundle).with_context(|| format!("opening {}", bundle.display()))?;
    let report =
        Inspection::read(&mut f, limits).with_context(|| format!("{}", bundle.display()))?;
    let root = root.map(|r| load_root(r, limits)).transpose()?;
    let sigs = report.signatures(root.as_ref().map(|(r, _)| r), limits);
    let m = report.manifest();
    let ratio = report.ratio();
    let (signers, threshold_met) = (&sigs.signers, sigs.threshold_met);
    if json {
        let keyids: Vec<String> = signers.iter().map(|s| s.keyid.to_hex()).collect();
        let v = serde_json::json!({
            "product": m.product(), "version": m.version().to_string(), "security_version": m.security_version(),
            "created": format_rfc3339(m.created()), "image_size": m.image_size(), "image_sha256": m.image_sha256().to_hex(),
            "chunk_size": m.chunk_size(), "chunking": m.chunking(), "chunks": m.chunks().len(), "zero_chunks": m.zero_chunks(),
            "index_size": m.header().index_len, "dictionary_size": m.header().dictionary_len,
            "store_size": m.store().map(|s| s.size),
            "payload_size": m.payload_len(), "file_size": m.file_len(), "ratio": ratio,
            "manifest_sha256": m.manifest_sha256().to_hex(), "signers": keyids,
            "signatures": signers.iter().map(signer_json).collect::<Vec<_>>(),
            "signatures_verified": threshold_met.is_some(), "threshold_met": threshold_met,
            "root_version": root.as_ref().map(|(r, _)| r.version()),
            "format_version": m.header().version, "assets": assets_json(&report),
            "verity": m.verity().map(verity::json),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!("product          {}", m.product());
    outln!(
        "version          {} (security version {})",
        m.version(),
        m.security_version()
    );
    outln!("created          {}", format_rfc3339(m.created()));
    outln!(
        "image            {} bytes, sha256 {}",
        m.image_size(),
        m.image_sha256()
    );
    if let Some(v) = m.verity() {
        outln!("verity           {}", verity::text(v));
    }
    outln!(
        "chunks           {} ({}), {} all-zero (not stored)",
        m.chunks().len(),
        m.chunking(),
        m.zero_chunks()
    );
    if m.header().version >= 3 {
        outln!(
            "index            {} bytes; dictionary {} bytes",
            m.header().index_len,
            m.header().dictionary_len
        );
    }
    if let Some(store) = m.store() {
        outln!(
            "chunk store      {} bytes, sha256 {} (beside the bundle, its name + {})",
            store.size,
            store.sha256.to_hex(),
            proto::CHUNK_STORE_SUFFIX
        );
    }
    outln!(
        "payload          {} bytes (ratio {ratio:.2}), file {} bytes",
        m.payload_len(),
        m.file_len()
    );
    for (a, info) in report.assets() {
        outln!(
            "asset            {} ({}): {} bytes, sha256 {}{}",
            a.name(),
            a.kind(),
            a.size(),
            a.sha256(),
            asset_info_text(info)
        );
    }
    outln!("manifest sha256  {}", m.manifest_sha256());
    match (&root, threshold_met) {
        (Some((r, path)), Some(met)) => outln!(
            "signatures       {}, release threshold {} in {} (root version {})",
            signers.len(),
            if met { "met" } else { "NOT met" },
            path.display(),
            r.version()
        ),
        _ => outln!(
            "signatures       {} (NOT verified: give --root, or use `tandem-signer verify --root`)",
            signers.len()
        ),
    }
    for s in signers {
        outln!("  {}", signers_text(std::slice::from_ref(s)));
    }
    Ok(())
}

fn assets_json(report: &Inspection) -> serde_json::Value {
    report
        .assets()
        .map(|(a, info)| {
            serde_json::json!({
                "name": a.name(), "kind": a.kind().as_str(), "size": a.size(),
                "sha256": a.sha256().to_hex(), "chunks": a.chunks().len(),
                "osrel_version_id": info.osrel_version_id, "kernel_version": info.kernel_version,
                "cmdline": info.cmdline, "cmdline_refused": info.cmdline_refused,
            })
        })
        .collect()
}

/// What an asset says about itself, as the tail of its `inspect` line.
fn asset_info_text(info: &AssetInfo) -> String {
    let mut text = String::new();
    if let Some(v) = &info.osrel_version_id {
        text.push_str(&format!(", .osrel VERSION_ID {v}"));
    }
    if let Some(v) = &info.kernel_version {
        text.push_str(&format!(", kernel version {v}"));
    }
    if let Some(v) = &info.cmdline {
        text.push_str(&format!(", cmdline \"{v}\""));
    }
    if let Some(why) = &info.cmdline_refused {
        text.push_str(&format!(", INVALID: {why}"));
    }
    text
}

fn extract_cmd(
    bundle: &Path,
    root: &Path,
    out: &Path,
    asset: Option<&str>,
    limits: &Limits,
) -> Result<()> {
    let (mut f, manifest) = open_verified(bundle, root, limits)?;
    f.seek(SeekFrom::Start(0))?;
    let (size, sha256) = match asset {
        None => (manifest.image_size(), manifest.image_sha256()),
        Some(name) => {
            let a = manifest
                .asset(name)
                .with_context(|| format!("{} carries no asset named `{name}`", bundle.display()))?;
            (a.size(), a.sha256())
        }
    };
    let pb = progress_bar(size);
    write_atomic(out, 0o644, Overwrite::Replace, |w| {
        let reader = BufReader::new(&mut f);
        let writer = BufWriter::with_capacity(1 << 20, w);
        let mut on_progress = |d| {
            if let Some(pb) = &pb {
                pb.set_position(d)
            }
        };
        match asset {
            None => extract(&manifest, reader, writer, &mut on_progress),
            Some(name) => extract_asset(&manifest, name, reader, writer, &mut on_progress),
        }
    })
    .with_context(|| {
        format!(
            "extracting {} to {} (nothing was written there)",
            bundle.display(),
            out.display()
        )
    })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    outln!("wrote {} ({size} bytes, sha256 {sha256})", out.display());
    Ok(())
}

fn publish_cmd(a: &PublishArgs, limits: &Limits) -> Result<()> {
    let keys = private_keys(&a.keys)?;
    let now = now_utc();
    let options = PublishOptions {
        repo: &a.repo,
        channel: &a.channel,
        bundle: &a.bundle,
        keys: &keys,
        expires: expiry(&a.expires)?,
        percent: a.percent,
        root: a.root.as_deref(),
        now,
        limits,
    };
    let allow = Allow {
        below_threshold: a.allow_below_threshold,
        downgrade: a.allow_downgrade,
    };
    let report = publish_allowing(&options, allow)
        .with_context(|| format!("publishing {} to {}", a.bundle.display(), a.repo.display()))?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let copied = if report.bundle_copied {
        "copied"
    } else {
        "already there, identical"
    };
    outln!("bundle  {} ({copied})", report.bundle_path.display());
    outln!(
        "channel {} version {}",
        report.channel_path.display(),
        report.channel_version
    );
    if let Some(v) = report.root_version {
        outln!("root    version {v}");
    }
    Ok(())
}
