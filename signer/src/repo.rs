//! Reading a published repository (docs/DESIGN.md §4, FORMAT §10) from the tool side, through
//! the agent's own client: `repo_client`'s [`Repository`] — a directory here, and in the
//! binary (whose `cli` feature brings `repo_client`'s HTTP client) an HTTP base URL too. This
//! module turns its errors into this crate's and reads bundle heads by range. Every read is
//! bounded by the caller's limit; nothing read here is trusted until [`crate::verify`]
//! checked it.

use std::io;

pub use repo_client::{display_path, DirRepository, Repository};

use crate::bundle::BundleHead;
use crate::error::Error;
use crate::limits::Limits;

/// A repository read's failure as this crate's error: an I/O error naming the file or URL
/// (a refused or oversized file is `InvalidData`).
pub fn repo_error(error: repo_client::Error) -> Error {
    use repo_client::Error as E;
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
    match error {
        E::Hostile {
            source_name,
            reason,
        } => Error::io(format!("reading {source_name}"))(invalid(reason)),
        E::TooLarge { path, len, max } => Error::io(format!("reading {path}"))(invalid(format!(
            "{len} bytes, more than the {max}-byte limit"
        ))),
        E::Network {
            method,
            url,
            reason,
        } => Error::io(format!("{method} {url}"))(io::Error::other(reason)),
        E::Io { context, source } => Error::io(context)(source),
        other => Error::io("reading the repository")(io::Error::other(other)),
    }
}

/// Reads the whole file at `path`, at most `max` bytes; `None` when it does not exist.
pub fn fetch_capped(repo: &dyn Repository, path: &str, max: u64) -> Result<Option<Vec<u8>>, Error> {
    repo.fetch(path, max).map_err(repo_error)
}

/// Reads the head of the bundle at `path` (`size` bytes long) by ranges
/// ([`BundleHead::fetch`]): each region checked against `limits` before it is fetched. The
/// payload is not read.
pub fn read_bundle_head(
    repo: &dyn Repository,
    path: &str,
    size: u64,
    limits: &Limits,
) -> Result<BundleHead, Error> {
    let bundle = repo.bundle(path, size).map_err(repo_error)?;
    BundleHead::fetch(size, limits, Error::Format, |range| {
        bundle.read_exact(range).map_err(repo_error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_none_and_one_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("channels")).unwrap();
        std::fs::write(dir.path().join("channels/a.json"), vec![b' '; 100]).unwrap();
        let repo = DirRepository::new(dir.path());
        assert!(fetch_capped(&repo, "channels/b.json", 100)
            .unwrap()
            .is_none());
        assert_eq!(
            fetch_capped(&repo, "channels/a.json", 100)
                .unwrap()
                .unwrap()
                .len(),
            100
        );
        let err = fetch_capped(&repo, "channels/a.json", 99).unwrap_err();
        assert!(
            format!("{err:?}").contains("more than the 99-byte limit"),
            "{err:?}"
        );
        assert_eq!(repo.channel_names().unwrap().unwrap(), ["a"]);
        assert_eq!(repo.bundle_files().unwrap().unwrap(), []);
    }

    /// A FIFO is refused at once (a blocking open would wait for a writer for ever), and a
    /// link is not followed; each refusal names the file.
    #[test]
    fn a_fifo_or_a_link_in_a_repository_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("channels")).unwrap();
        let fifo = dir.path().join("channels/a.json");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        std::fs::write(dir.path().join("secret"), "not metadata").unwrap();
        std::os::unix::fs::symlink("../secret", dir.path().join("channels/b.json")).unwrap();
        let repo = DirRepository::new(dir.path());
        for (name, why) in [
            ("a.json", "not a regular file"),
            ("b.json", "a symbolic link"),
        ] {
            let path = format!("channels/{name}");
            let err = fetch_capped(&repo, &path, 100).unwrap_err();
            let text = format!("{err}: {:?}", std::error::Error::source(&err));
            assert!(text.contains(&path) && text.contains(why), "{text}");
            assert!(read_bundle_head(&repo, &path, 1, &Limits::default()).is_err());
        }
    }
}
