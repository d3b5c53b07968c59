//! Files already opened beneath the repository, and the validators of the version last seen,
//! so a conditional poll is answered after one `statx` by path — no open, no close.
//!
//! Nothing here is trusted without a fresh look at the file system: every request stats the
//! path again, and an entry counts only while that path still leads to the *same inode on the
//! same device* that `openat2(RESOLVE_BENEATH)` opened ([`crate::repo`]), unchanged since: same
//! size, modification and status-change times. A channel replaced by rename is a new inode; a
//! file rewritten in place has a new size or time; a `chmod` changes the status-change time:
//! in each case the entry no longer applies and the file is opened (and checked) again, which
//! refreshes the entry. So an answer never rests on stale metadata; the cache only saves the
//! open and the formatting of the validators. And a path that now resolves elsewhere (a
//! symlink swapped to point outside, say) reaches another inode: it is opened — and refused —
//! as before.
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::HeaderValue;

use crate::httpdate;

/// Most paths remembered; when full, the map starts over (a repository serves a handful of
/// channel and root files that are polled; bundles are fetched rarely).
pub const MAX_KNOWN: usize = 4096;

/// What identifies one version of a file: device and inode (which file), size, modification
/// and status-change times to the nanosecond (which version of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Device of the file system.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: i64,
    /// Status-change time (`chmod`, `chown`, links, writes), seconds since the epoch.
    pub ctime: i64,
    /// Nanoseconds of the status-change time.
    pub ctime_nsec: i64,
}

impl Version {
    /// The version described by an open file's metadata.
    pub fn of(meta: &Metadata) -> Self {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    /// The version described by a `stat` of a path.
    pub fn of_stat(st: &rustix::fs::Stat) -> Self {
        Version {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            mtime_nsec: i64::try_from(st.st_mtime_nsec).unwrap_or(0),
            ctime: st.st_ctime,
            ctime_nsec: i64::try_from(st.st_ctime_nsec).unwrap_or(0),
        }
    }

    fn modified(&self) -> SystemTime {
        let nanos = u32::try_from(self.mtime_nsec).unwrap_or(0);
        match u64::try_from(self.mtime) {
            Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
            Err(_) => UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.mtime.unsigned_abs()))
                .unwrap_or(UNIX_EPOCH),
        }
    }
}

/// Validators of one version of a file, with their header values ready to send.
#[derive(Debug, Clone)]
pub struct Validators {
    /// The version they describe.
    pub version: Version,
    /// Strong entity tag, quoted.
    pub etag: String,
    /// Modification time, whole seconds since the epoch.
    pub modified: i64,
    /// Modification time as an HTTP date.
    pub last_modified: String,
    /// `etag` as a header value.
    pub etag_header: HeaderValue,
    /// `last_modified` as a header value.
    pub last_modified_header: HeaderValue,
}

impl Validators {
    /// The validators of `version`: the strong `ETag` is derived from the inode, size and
    /// modification time, so a replaced or rewritten file gets a new one.
    pub fn of(version: Version) -> Self {
        let etag = format!(
            "\"{:x}-{:x}-{:x}.{:x}\"",
            version.ino, version.size, version.mtime, version.mtime_nsec
        );
        let modified_time = version.modified();
        let last_modified = httpdate::format(modified_time);
        Validators {
            version,
            etag_header: header_value(&etag),
            last_modified_header: header_value(&last_modified),
            etag,
            modified: httpdate::unix_seconds(modified_time),
            last_modified,
        }
    }
}

/// Both are ASCII by construction (hex digits, quotes, an HTTP date).
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Paths opened beneath the repository and the validators of their last seen version.
#[derive(Debug, Default)]
pub struct Known {
    entries: RwLock<HashMap<PathBuf, Arc<Validators>>>,
}

impl Known {
    /// The validators of `fresh` (just stat'ed through `rel`) if `rel` was opened beneath the
    /// repository and led to this very version of this file; `None` means: open it.
    pub fn get(&self, rel: &Path, fresh: Version) -> Option<Arc<Validators>> {
        self.read()
            .get(rel)
            .filter(|cached| cached.version == fresh)
            .cloned()
    }

    /// The validators of `version`, just opened through `rel` beneath the repository; they
    /// are remembered for the next requests.
    pub fn opened(&self, rel: &Path, version: Version) -> Arc<Validators> {
        let cached = self.read().get(rel).cloned();
        match cached {
            Some(cached) if cached.version == version => cached,
            _ => self.insert(rel, version),
        }
    }

    fn insert(&self, rel: &Path, version: Version) -> Arc<Validators> {
        let v = Arc::new(Validators::of(version));
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_KNOWN && !entries.contains_key(rel) {
            entries.clear();
        }
        entries.insert(rel.to_owned(), Arc::clone(&v));
        v
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PathBuf, Arc<Validators>>> {
        // The map holds no invariant a panic could break halfway.
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn version(ino: u64, size: u64, mtime: i64) -> Version {
        Version {
            dev: 1,
            ino,
            size,
            mtime,
            mtime_nsec: 5,
            ctime: mtime,
            ctime_nsec: 5,
        }
    }

    #[test]
    fn only_the_file_that_was_opened_is_known() {
        let known = Known::default();
        let rel = Path::new("channels/stable.json");
        assert!(
            known.get(rel, version(7, 10, 100)).is_none(),
            "never opened"
        );
        let opened = known.opened(rel, version(7, 10, 100));
        let again = known.get(rel, version(7, 10, 100)).unwrap();
        assert!(
            Arc::ptr_eq(&opened, &again),
            "same version: cached validators"
        );
        assert!(
            known.get(rel, version(8, 10, 100)).is_none(),
            "replaced by rename: another inode, open it again"
        );
        let other_dev = Version {
            dev: 2,
            ..version(7, 10, 100)
        };
        assert!(known.get(rel, other_dev).is_none(), "another device");
        assert!(known
            .get(Path::new("channels/edge.json"), version(7, 10, 100))
            .is_none());
    }

    #[test]
    fn any_change_to_the_file_means_opening_it_again() {
        let known = Known::default();
        let rel = Path::new("root.json");
        let old = known.opened(rel, version(7, 10, 100));
        assert!(known.get(rel, version(7, 11, 100)).is_none(), "grown");
        assert!(known.get(rel, version(7, 10, 101)).is_none(), "touched");
        let chmod = Version {
            ctime: 101,
            ..version(7, 10, 100)
        };
        assert!(known.get(rel, chmod).is_none(), "status changed");
        let grown = known.opened(rel, version(7, 11, 100));
        assert_ne!(grown.etag, old.etag);
        assert!(Arc::ptr_eq(
            &grown,
            &known.get(rel, version(7, 11, 100)).unwrap()
        ));
        let touched = known.opened(rel, version(7, 11, 101));
        assert_ne!(touched.etag, grown.etag);
        assert_ne!(touched.modified, grown.modified);
    }

    #[test]
    fn the_map_is_bounded() {
        let known = Known::default();
        for i in 0..MAX_KNOWN as u64 + 10 {
            known.opened(Path::new(&format!("f{i}")), version(i, 1, 1));
        }
        assert!(known.read().len() <= MAX_KNOWN);
    }

    #[test]
    fn header_values_match_the_strings() {
        let v = Validators::of(version(0xabc, 0x10, 1_700_000_000));
        assert_eq!(v.etag, "\"abc-10-6553f100.5\"");
        assert_eq!(v.etag_header, v.etag.as_str());
        assert_eq!(v.last_modified, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(v.last_modified_header, v.last_modified.as_str());
        assert_eq!(v.modified, 1_700_000_000);
    }
}
