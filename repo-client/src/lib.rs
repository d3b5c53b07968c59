//! Reading a published repository (docs/DESIGN.md §4, FORMAT §10), wherever it is: a
//! directory (a publisher's tree, a USB stick) or an HTTP(S) base URL, behind one
//! [`Repository`] trait that the agent, `tandem-signer mirror` and `tandem-signer log` share.
//!
//! This crate moves bytes and nothing else: every read is bounded (a named file by the
//! caller's cap, a bundle by the size its signed channel states), and nothing read here is
//! trusted — the callers verify it with the `bundle` crate, which this crate does not link
//! (so it knows no format, and the format knows no network).
//!
//! - [`dir`]: [`DirRepository`] and [`FileBundle`], files opened non-blocking, unfollowed,
//!   regular files only ([`dir::open_regular`]).
//! - `http` (feature `http`, on by default): `Http`, the one HTTP client of the workspace's
//!   tools: capped bodies with deadlines, conditional GETs (`If-None-Match`), byte ranges
//!   resumed after a cut or a stall (`Range`, `If-Range`), extra CA certificates, the
//!   proxies of the environment; and `probe`, the agent's HTTP health check.
//! - [`error`]: [`Error`], each cause its own variant, so callers keep their exit classes.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
#![warn(missing_docs)]

pub mod dir;
pub mod error;
#[cfg(feature = "http")]
pub mod http;

use std::io::Read;
use std::ops::Range;
use std::path::{Component, Path};

pub use dir::{DirRepository, FileBundle};
pub use error::{Error, Result};
#[cfg(feature = "http")]
pub use http::{Http, HttpOptions};

/// A published repository whose files are named by their path relative to its root.
pub trait Repository: Send + Sync {
    /// How messages name the repository (a directory or a base URL).
    fn name(&self) -> String;
    /// The whole file at `path`, at most `max` bytes; `None` when it does not exist.
    fn fetch(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>>;
    /// The file at `path` as one stream, `None` when it does not exist; the caller bounds
    /// what it reads (a bundle copied whole, at most its signed size).
    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>>;
    /// The bundle at `path`, whose exact size the signed metadata gives, for ranged reads.
    fn bundle(&self, path: &str, size: u64) -> Result<Box<dyn BundleBytes>>;
    /// The channel names the repository has, when it can list them (a directory can, an
    /// HTTP server cannot).
    fn channel_names(&self) -> Result<Option<Vec<String>>> {
        Ok(None)
    }
    /// The bundle files under `bundles/` with their lengths, when the repository can list
    /// them.
    fn bundle_files(&self) -> Result<Option<Vec<(String, u64)>>> {
        Ok(None)
    }
}

/// A bundle's bytes, read by ranges (absolute offsets in the file).
pub trait BundleBytes: Send + Sync {
    /// How errors name the bundle (a path or a URL).
    fn name(&self) -> String;
    /// The bundle's length: a local file's own; over HTTP the size the signed metadata
    /// gives, so that a server cannot make the reader take more.
    fn size(&self) -> Result<u64>;
    /// A stream of the bytes in `range`.
    fn read_range(&self, range: Range<u64>) -> Result<Box<dyn Read + Send>>;
    /// Exactly the bytes in `range`, or an error.
    fn read_exact(&self, range: Range<u64>) -> Result<Vec<u8>>;
    /// Fetching costs network bytes: chunks a node already holds are worth reusing.
    fn is_remote(&self) -> bool {
        false
    }
}

/// `repo`'s name with `path` appended, for messages.
pub fn display_path(repo: &dyn Repository, path: &str) -> String {
    let name = repo.name();
    if name.ends_with('/') {
        format!("{name}{path}")
    } else {
        format!("{name}/{path}")
    }
}

/// A path from signed metadata (or built from a checked name) must stay inside the
/// repository: relative, with no `.`, `..` or root component.
pub fn checked_relative(path: &str) -> Result<&Path> {
    let relative = Path::new(path);
    let mut components = relative.components().peekable();
    let inside =
        components.peek().is_some() && components.all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(relative)
    } else {
        Err(Error::Hostile {
            source_name: "the channel".into(),
            reason: format!(
                "it names the bundle {path:?}, which is not a path inside the repository"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_paths_cannot_leave_the_repository() {
        assert!(checked_relative("bundles/acme-2.0.0.tandem").is_ok());
        for bad in ["../etc/shadow", "/etc/shadow", "bundles/../../x", "./x", ""] {
            assert!(checked_relative(bad).is_err(), "{bad}");
        }
    }
}
