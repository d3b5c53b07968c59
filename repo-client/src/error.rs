//! Why a repository read failed, one variant per cause: the callers map each onto their own
//! errors and exit classes (a hostile server is not a network failure, nor a missing CA file).

use std::path::PathBuf;

/// Why a repository read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository sent what no honest one sends: an endless body, a file shorter than
    /// its signed size, something other than a regular file, a path leaving the repository.
    #[error("{source_name}: {reason}")]
    Hostile {
        /// The file, URL or document at fault.
        source_name: String,
        /// What it did.
        reason: String,
    },
    /// A local repository file is longer than the cap of its kind (known before reading).
    #[error("reading {path}: {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The server could not be reached, answered with an error, or was too slow.
    #[error("{method} {url}: {reason}")]
    Network {
        /// The request's method.
        method: &'static str,
        /// Its URL.
        url: String,
        /// What went wrong, with its causes.
        reason: String,
    },
    /// A local file could not be read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The CA bundle of the client's options cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    CaBundleRead {
        /// The CA bundle.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client cannot be set up with its options (a CA bundle that is not PEM
    /// certificates, a TLS back end that fails).
    #[error("{}: {message}", path.display())]
    Setup {
        /// The CA bundle, or an empty path when none was given.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// An [`Error::Io`] with `context`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// A repository read's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
