//! `mirror` and `log`: a published repository (directory or URL) copied onto a stick, or
//! listed with who signed what. The work is the library's ([`signer::mirror`],
//! [`signer::provenance`]); this module opens the source and prints.

use std::path::Path;

use anyhow::{bail, Context, Result};
use repo_client::{Http, HttpOptions};
use serde_json::{json, Value};
use signer::mirror::{mirror, MirrorOptions, MirrorReport};
use signer::provenance::{log, BundleEntry, ChannelEntry, LogOptions, RepoLog, Signer};
use signer::repo::{DirRepository, Repository};
use signer::time_util::{format_rfc3339, now_utc};
use signer::verify::SignerStatus;
use signer::Limits;

use crate::cli::{LogArgs, MirrorArgs};
use crate::out::outln;

/// The repository at `from`: an `http(s)://` URL or an existing directory.
fn open_repo(from: &str) -> Result<Box<dyn Repository>> {
    if from.starts_with("http://") || from.starts_with("https://") {
        let options = HttpOptions {
            user_agent: concat!("tandem-signer/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..HttpOptions::default()
        };
        return Ok(Box::new(Http::new(from, options)?));
    }
    if !Path::new(from).is_dir() {
        bail!("{from} is neither a repository directory nor an http(s):// URL");
    }
    Ok(Box::new(DirRepository::new(from)))
}

fn read_root(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    signer::files::read_capped(path, limits.max_metadata_len)
        .with_context(|| format!("root {}", path.display()))
}

/// `tandem-signer mirror`.
pub fn mirror_cmd(a: &MirrorArgs, limits: &Limits) -> Result<()> {
    let from = open_repo(&a.from)?;
    let root = read_root(&a.root, limits)?;
    let report = mirror(&MirrorOptions {
        from: from.as_ref(),
        channels: &a.channels,
        to: &a.to,
        root: &root,
        replace: a.replace,
        now: now_utc(),
        limits,
    })
    .with_context(|| {
        format!(
            "mirroring {} to {} (left as it was)",
            a.from,
            a.to.display()
        )
    })?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&mirror_json(&report))?);
        return Ok(());
    }
    outln!(
        "{} {}: {} files, {} bytes, every signature and hash verified against {}",
        if report.replaced { "replaced" } else { "wrote" },
        report.to.display(),
        report.files.len(),
        report.total_bytes(),
        a.root.display()
    );
    let versions: Vec<String> = report.roots.iter().map(u64::to_string).collect();
    outln!("root     versions {}", versions.join(", "));
    for m in &report.channels {
        let (c, r) = (&m.channel, &m.channel.release);
        outln!(
            "channel  {} version {}: {} {} (security version {}), {}, expires {}{}",
            c.channel,
            c.version,
            r.product,
            r.version,
            r.security_version,
            r.bundle,
            format_rfc3339(c.expires),
            if m.paused { ", PAUSED" } else { "" }
        );
    }
    for f in &report.files {
        outln!("file     {} ({} bytes)", f.path, f.bytes);
    }
    Ok(())
}

fn mirror_json(r: &MirrorReport) -> Value {
    let channels: Vec<Value> = r
        .channels
        .iter()
        .map(|m| {
            let (c, r) = (&m.channel, &m.channel.release);
            json!({
                "channel": c.channel, "version": c.version, "expires": format_rfc3339(c.expires),
                "product": r.product, "release_version": r.version.to_string(),
                "security_version": r.security_version, "bundle": r.bundle, "paused": m.paused,
            })
        })
        .collect();
    let files: Vec<Value> = r
        .files
        .iter()
        .map(|f| json!({"path": f.path, "bytes": f.bytes}))
        .collect();
    json!({
        "to": r.to.display().to_string(), "replaced": r.replaced, "roots": r.roots,
        "channels": channels, "files": files, "total_bytes": r.total_bytes(),
    })
}

/// Said with every listing: publishing replaces a channel's document.
const HISTORY_NOTE: &str = "a repository keeps only the newest document of each channel \
(publish replaces channels/NAME.json): earlier releases show only as bundles no channel names";

/// `tandem-signer log`.
pub fn log_cmd(a: &LogArgs, limits: &Limits) -> Result<()> {
    let from = open_repo(&a.repo)?;
    let root = a
        .root
        .as_deref()
        .map(|r| read_root(r, limits))
        .transpose()?;
    let found = log(&LogOptions {
        from: from.as_ref(),
        channels: &a.channels,
        root: root.as_deref(),
        now: now_utc(),
        limits,
    })
    .with_context(|| format!("listing {}", a.repo))?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&log_json(&found))?);
    } else {
        print_log(&a.repo, &found)?;
    }
    let refused: Vec<&str> = found
        .channels
        .iter()
        .filter(|c| matches!(c.verdict, Some(Err(_))))
        .map(|c| c.channel.channel.as_str())
        .collect();
    if !refused.is_empty() {
        bail!(
            "nodes refuse channel(s) {} (listed above): publish them again",
            refused.join(", ")
        );
    }
    Ok(())
}

/// The listing as text.
fn print_log(repo: &str, found: &RepoLog) -> Result<()> {
    match found.root_version {
        Some(v) => outln!("repository {} (root version {v}; signatures checked)", repo),
        None => outln!(
            "repository {} (signatures NOT checked: give --root to check them)",
            repo
        ),
    }
    outln!("note: {HISTORY_NOTE}");
    for c in &found.channels {
        print_channel(c)?;
    }
    if let Some(others) = found.other_bundles.as_ref().filter(|o| !o.is_empty()) {
        outln!("bundles no listed channel names ({}):", others.len());
        for b in others {
            match b {
                Ok(b) => outln!("  {}", bundle_line(b)),
                Err(e) => outln!("  unreadable: {e}"),
            }
        }
    }
    Ok(())
}

fn print_channel(c: &ChannelEntry) -> Result<()> {
    let ch = &c.channel;
    let verdict = match &c.verdict {
        None => String::new(),
        Some(Ok(())) => ": nodes accept it".into(),
        Some(Err(e)) => format!(": nodes REFUSE it ({e})"),
    };
    outln!(
        "channel {} version {} expires {}{verdict}",
        ch.channel,
        ch.version,
        format_rfc3339(ch.expires)
    );
    let r = &ch.release;
    outln!(
        "  release   {} {} (security version {}), {}, {} bytes, rollout {}%",
        r.product,
        r.version,
        r.security_version,
        r.bundle,
        r.size,
        ch.rollout.percent
    );
    outln!("  signed by {}", signers_text(&c.signers));
    match &c.bundle {
        Ok(b) => outln!("  bundle    {}", bundle_line(b)),
        Err(e) => outln!("  bundle    unreadable: {e}"),
    }
    Ok(())
}

fn bundle_line(b: &BundleEntry) -> String {
    format!(
        "{} {} {} (security version {}), created {}, signed by {}",
        b.path,
        b.product,
        b.version,
        b.security_version,
        format_rfc3339(b.created),
        signers_text(&b.signers)
    )
}

/// Signers on one line: key ids, and with a root their roles and validity.
pub fn signers_text(signers: &[Signer]) -> String {
    if signers.is_empty() {
        return "nobody".into();
    }
    let each: Vec<String> = signers
        .iter()
        .map(|s| match &s.status {
            None => s.keyid.to_hex(),
            Some(st) => format!("{} ({})", s.keyid.to_hex(), status_text(st)),
        })
        .collect();
    each.join(", ")
}

/// How a root sees one signature: its roles, or what an untrusted signature is.
fn status_text(st: &SignerStatus) -> String {
    let v = st.root_version;
    let roles: Vec<String> = st.roles.iter().map(ToString::to_string).collect();
    match (roles.is_empty(), st.valid, st.former_root) {
        (false, Some(true), _) => roles.join("+"),
        (false, _, _) => format!("{}, INVALID", roles.join("+")),
        (true, Some(true), Some(was)) => format!(
            "valid, by a key root version {v} no longer trusts (listed in root version {was})"
        ),
        (true, Some(true), None) => format!("valid, by a key no role of root version {v} trusts"),
        (true, Some(false), _) => "untrusted, INVALID".into(),
        (true, None, _) => {
            format!("untrusted: a key root version {v} does not list, signature not checked")
        }
    }
}

/// A signer as JSON: its key id, and with a root its roles and whether it verifies.
pub fn signer_json(s: &Signer) -> Value {
    match &s.status {
        None => json!({"keyid": s.keyid.to_hex()}),
        Some(st) => json!({
            "keyid": s.keyid.to_hex(),
            "roles": st.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "valid": st.valid, "former_root": st.former_root,
        }),
    }
}

fn bundle_json(b: &Result<BundleEntry, String>) -> Value {
    match b {
        Err(e) => json!({"error": e}),
        Ok(b) => json!({
            "path": b.path, "product": b.product, "version": b.version.to_string(),
            "security_version": b.security_version, "created": format_rfc3339(b.created),
            "signers": b.signers.iter().map(signer_json).collect::<Vec<_>>(),
        }),
    }
}

fn log_json(l: &RepoLog) -> Value {
    let channels: Vec<Value> = l
        .channels
        .iter()
        .map(|c| {
            let ch = &c.channel;
            let r = &ch.release;
            json!({
                "channel": ch.channel, "version": ch.version, "expires": format_rfc3339(ch.expires),
                "accepted": c.verdict.as_ref().map(Result::is_ok),
                "refused_because": c.verdict.as_ref().and_then(|v| v.as_ref().err()),
                "release": {
                    "product": r.product, "version": r.version.to_string(),
                    "security_version": r.security_version, "bundle": r.bundle, "size": r.size,
                    "manifest_sha256": r.manifest_sha256.to_hex(),
                },
                "rollout_percent": ch.rollout.percent,
                "signers": c.signers.iter().map(signer_json).collect::<Vec<_>>(),
                "bundle": bundle_json(&c.bundle),
            })
        })
        .collect();
    json!({
        "root_version": l.root_version,
        "history": HISTORY_NOTE,
        "channels": channels,
        "other_bundles": l.other_bundles.as_ref().map(|o| o.iter().map(bundle_json).collect::<Vec<_>>()),
    })
}
