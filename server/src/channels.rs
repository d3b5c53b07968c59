//! Channels in the repository: name rules, reading `channels/NAME.json` *for display only*
//! (unverified: nodes verify signatures themselves; the server holds no trust), and the pause
//! hint `channels/NAME.pause`, written atomically (temp file, fsync, rename, fsync directory).
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::httpdate;

/// Longest channel name.
pub const MAX_NAME: usize = 64;
/// The rule, for error messages.
pub const NAME_RULE: &str = "1 to 64 characters of a-z, 0-9, '.', '_', '-', not starting with '.'";
/// Largest channel metadata file read for the status (1 MiB).
pub const MAX_METADATA: u64 = 1024 * 1024;
/// Most channels listed on the status page.
pub const MAX_LISTED: usize = 1000;

/// Makes concurrent temp file names distinct within this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether `name` is a valid channel name ([`NAME_RULE`]).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// `channels/NAME.json`.
pub fn metadata_path(repo: &Path, name: &str) -> PathBuf {
    repo.join("channels").join(format!("{name}.json"))
}

/// `channels/NAME.pause`.
pub fn pause_path(repo: &Path, name: &str) -> PathBuf {
    repo.join("channels").join(format!("{name}.pause"))
}

/// What the status shows of a channel's current metadata (fields copied, not verified).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelInfo {
    /// `signed.version` (the metadata version).
    pub metadata_version: Option<u64>,
    /// `signed.expires`.
    pub expires: Option<String>,
    /// `signed.release` as published (`product`, `version`, `bundle`, …).
    pub release: Value,
    /// `signed.rollout` as published (`percent`, `salt`).
    pub rollout: Value,
}

impl ChannelInfo {
    /// The release's version string, if present.
    pub fn release_version(&self) -> Option<&str> {
        self.release.get("version").and_then(Value::as_str)
    }
}

/// Why channel metadata could not be shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// Reading the file failed.
    #[error("reading channel metadata: {0}")]
    Io(#[from] io::Error),
    /// The file is over [`MAX_METADATA`].
    #[error("channel metadata is larger than 1 MiB")]
    TooLarge,
    /// The file is not the expected JSON shape.
    #[error("channel metadata is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads `channels/NAME.json`; `Ok(None)` when the channel does not exist.
pub fn read_info(repo: &Path, name: &str) -> Result<Option<ChannelInfo>, ChannelError> {
    let file = match File::open(metadata_path(repo, name)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_METADATA + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_METADATA {
        return Err(ChannelError::TooLarge);
    }
    let doc: Value = serde_json::from_slice(&bytes)?;
    Ok(Some(info_of(&doc)?))
}

/// Extracts the displayed fields; `signed` may be an object or a JSON string holding one.
fn info_of(doc: &Value) -> Result<ChannelInfo, serde_json::Error> {
    let signed = match doc.get("signed") {
        Some(Value::String(s)) => serde_json::from_str(s)?,
        Some(v) => v.clone(),
        None => Value::Null,
    };
    Ok(ChannelInfo {
        metadata_version: signed.get("version").and_then(Value::as_u64),
        expires: signed
            .get("expires")
            .and_then(Value::as_str)
            .map(str::to_owned),
        release: signed.get("release").cloned().unwrap_or(Value::Null),
        rollout: signed.get("rollout").cloned().unwrap_or(Value::Null),
    })
}

/// The content of a pause file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Always `true` (the file's presence is what pauses).
    pub paused: bool,
    /// When it was paused (RFC 3339).
    pub since: Option<String>,
    /// Why, as the operator said.
    pub reason: Option<String>,
}

/// The pause of a channel, if any. A pause file that cannot be parsed still pauses.
pub fn read_pause(repo: &Path, name: &str) -> io::Result<Option<Pause>> {
    let mut bytes = Vec::new();
    match File::open(pause_path(repo, name)) {
        Ok(f) => f.take(64 * 1024).read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let pause = serde_json::from_slice(&bytes).unwrap_or(Pause {
        paused: true,
        since: None,
        reason: None,
    });
    Ok(Some(pause))
}

/// Publishes `channels/NAME.pause` atomically and durably.
pub fn write_pause(repo: &Path, name: &str, reason: Option<String>) -> io::Result<Pause> {
    let pause = Pause {
        paused: true,
        since: Some(httpdate::now_rfc3339()),
        reason,
    };
    let mut bytes = serde_json::to_vec_pretty(&pause).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let dir = repo.join("channels");
    let unique = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.pause.tmp-{}-{unique}", std::process::id()));
    let result = write_synced(&tmp, &bytes)
        .and_then(|()| fs::rename(&tmp, pause_path(repo, name)))
        .and_then(|()| sync_dir(&dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| pause)
}

/// Removes the pause (idempotent) and syncs the directory.
pub fn remove_pause(repo: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(pause_path(repo, name)) {
        Ok(()) => sync_dir(&repo.join("channels")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Channel names with a metadata file, sorted, at most [`MAX_LISTED`].
pub fn list(repo: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(repo.join("channels")) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let file_name = entry?.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if valid_name(name) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    names.truncate(MAX_LISTED);
    Ok(names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["stable", "beta-2", "lts_24.04", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "Stable", "a/b", "a b", "..", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn pause_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("channels")).unwrap();
        assert_eq!(read_pause(dir.path(), "s").unwrap(), None);
        let p = write_pause(dir.path(), "s", Some("bad v3".into())).unwrap();
        assert_eq!(read_pause(dir.path(), "s").unwrap(), Some(p));
        let listing: Vec<_> = fs::read_dir(dir.path().join("channels")).unwrap().collect();
        assert_eq!(listing.len(), 1, "no temp file left behind");
        remove_pause(dir.path(), "s").unwrap();
        remove_pause(dir.path(), "s").unwrap();
        assert_eq!(read_pause(dir.path(), "s").unwrap(), None);
    }

    #[test]
    fn reads_signed_as_object_or_string() {
        let doc: Value = serde_json::json!({"signed": {"version": 3, "expires": "2030-01-01T00:00:00Z",
            "release": {"version": "2.0.0"}, "rollout": {"percent": 30, "salt": "s"}}, "signatures": []});
        let info = info_of(&doc).unwrap();
        assert_eq!(info.metadata_version, Some(3));
        assert_eq!(info.release_version(), Some("2.0.0"));
        let as_string = serde_json::json!({"signed": doc["signed"].to_string()});
        assert_eq!(
            info_of(&as_string).unwrap().release_version(),
            Some("2.0.0")
        );
    }
}
