//! Channels in the repository: reading `channels/NAME.json` *for display only* (unverified:
//! nodes verify signatures themselves; the server holds no trust) as `proto`'s
//! [`ChannelDoc`], the shape the signer writes and the agent verifies; and the pause hint
//! `channels/NAME.pause` in the format of [`proto::Pause`], written atomically (temp file,
//! fsync, rename, fsync directory). Channel names follow [`proto::check_name`], the rule the
//! signer and the agent use too.
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use proto::pause::MAX_PAUSE_FILE;
use proto::{ChannelDoc, Pause};
use serde::Deserialize;
use serde_json::Value;

use crate::httpdate;

/// Largest channel metadata file read for the status (1 MiB).
pub const MAX_METADATA: u64 = 1024 * 1024;
/// Most channels listed on the status page.
pub const MAX_LISTED: usize = 1000;

/// `channels/NAME.json`.
pub fn metadata_path(repo: &Path, name: &str) -> PathBuf {
    repo.join("channels").join(format!("{name}.json"))
}

/// `channels/NAME.pause`.
pub fn pause_path(repo: &Path, name: &str) -> PathBuf {
    repo.join("channels").join(format!("{name}.pause"))
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
    /// The file is not JSON, or its signed part not a channel document.
    #[error("channel metadata is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads the signed part of `channels/NAME.json` (not verified); `Ok(None)` when the channel
/// does not exist.
pub fn read_info(repo: &Path, name: &str) -> Result<Option<ChannelDoc>, ChannelError> {
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

/// The document's signed part; `signed` may be an object or a JSON string holding one.
fn info_of(doc: &Value) -> Result<ChannelDoc, serde_json::Error> {
    match doc.get("signed") {
        Some(Value::String(s)) => serde_json::from_str(s),
        Some(v) => ChannelDoc::deserialize(v),
        None => ChannelDoc::deserialize(&Value::Null),
    }
}

/// The pause file of a channel as read with [`Pause::parse`], `None` when there is none. A
/// file that cannot be read as a pause object, or is over [`MAX_PAUSE_FILE`], pauses: stopping
/// is the safe reading of an unsigned hint. `{"paused": false}` does not pause.
pub fn read_pause(repo: &Path, name: &str) -> io::Result<Option<Pause>> {
    let mut bytes = Vec::new();
    match File::open(pause_path(repo, name)) {
        Ok(f) => f.take(MAX_PAUSE_FILE + 1).read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 > MAX_PAUSE_FILE {
        bytes.clear();
    }
    Ok(Some(Pause::parse(&bytes)))
}

/// Publishes `channels/NAME.pause` atomically and durably; `automatic` when the server
/// pauses by itself (the failure budget), not an operator.
pub fn write_pause(
    repo: &Path,
    name: &str,
    reason: Option<String>,
    automatic: bool,
) -> io::Result<Pause> {
    let pause = Pause {
        paused: true,
        since: Some(httpdate::now_rfc3339()),
        reason,
        automatic,
    };
    let mut bytes = serde_json::to_vec_pretty(&pause).map_err(io::Error::other)?;
    bytes.push(b'\n');
    atomic_file::write_bytes(
        &pause_path(repo, name),
        0o644,
        atomic_file::Overwrite::Replace,
        &bytes,
    )?;
    Ok(pause)
}

/// Removes the pause (idempotent) and syncs the directory.
pub fn remove_pause(repo: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(pause_path(repo, name)) {
        Ok(()) => sync_dir(&repo.join("channels")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
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
        if proto::check_name("channel", name).is_ok() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    names.truncate(MAX_LISTED);
    Ok(names)
}

/// Every listed channel with whether its pause file pauses it.
pub fn pause_states(repo: &Path) -> io::Result<Vec<(String, bool)>> {
    list(repo)?
        .into_iter()
        .map(|name| {
            let paused = read_pause(repo, &name)?.is_some_and(|p| p.paused);
            Ok((name, paused))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listing_follows_the_shared_name_rule() {
        let dir = tempfile::tempdir().unwrap();
        let channels = dir.path().join("channels");
        fs::create_dir(&channels).unwrap();
        for file in [
            "Stable+fips.json",
            "beta.json",
            ".hidden.json",
            "a b.json",
            "x.pause",
        ] {
            fs::write(channels.join(file), "{}").unwrap();
        }
        assert_eq!(list(dir.path()).unwrap(), ["Stable+fips", "beta"]);
    }

    #[test]
    fn pause_file_content_decides() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("channels")).unwrap();
        let file = pause_path(dir.path(), "s");
        let read = |content: &[u8]| {
            fs::write(&file, content).unwrap();
            read_pause(dir.path(), "s").unwrap().unwrap().paused
        };
        assert!(!read(br#"{"paused": false}"#));
        assert!(read(br#"{"paused": true}"#));
        assert!(read(b"paused"), "unreadable content pauses");
        assert!(read(b""), "an empty file pauses");
        let padded = format!(r#"{{"paused": false}}{}"#, " ".repeat(5000));
        assert!(read(padded.as_bytes()), "an oversized file pauses");
    }

    #[test]
    fn pause_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("channels")).unwrap();
        assert_eq!(read_pause(dir.path(), "s").unwrap(), None);
        let p = write_pause(dir.path(), "s", Some("bad v3".into()), false).unwrap();
        assert_eq!(read_pause(dir.path(), "s").unwrap(), Some(p));
        let listing: Vec<_> = fs::read_dir(dir.path().join("channels")).unwrap().collect();
        assert_eq!(listing.len(), 1, "no temp file left behind");
        remove_pause(dir.path(), "s").unwrap();
        remove_pause(dir.path(), "s").unwrap();
        assert_eq!(read_pause(dir.path(), "s").unwrap(), None);
    }

    #[test]
    fn reads_signed_as_object_or_string() {
        let doc: Value = serde_json::json!({"signed": {"channel": "stable", "version": 3,
            "expires": "2030-01-01T00:00:00Z",
            "release": {"version": "2.0.0", "product": "os", "security_version": 1,
                "bundle": "bundles/os-2.0.0.tandem", "size": 1, "manifest_sha256": "00"},
            "rollout": {"percent": 30, "salt": "s"}}, "signatures": []});
        let info = info_of(&doc).unwrap();
        assert_eq!(info.version, 3);
        assert_eq!(info.release.version, "2.0.0");
        let as_string = serde_json::json!({"signed": doc["signed"].to_string()});
        assert_eq!(info_of(&as_string).unwrap().release.version, "2.0.0");
        let not_a_channel = serde_json::json!({"signed": {"version": 3}});
        assert!(info_of(&not_a_channel).is_err());
    }
}
