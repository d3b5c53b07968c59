//! The agent's errors, grouped by cause, each with a stable exit code (docs/updater.md).

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::state::StateError;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bundle, metadata or root failed verification: hostile or damaged input.
    #[error("{source_name}: {source}")]
    Verify {
        source_name: String,
        #[source]
        source: signer::Error,
    },
    /// A valid update this node must not install (another product, a lower security
    /// version, too large, a version that rolled back here, an uncommitted trial …).
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Disk(#[from] partitions::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot tell which slot is booted: {0}")]
    BootedSlot(String),
    #[error("the reboot command {command:?} failed: {reason}")]
    Reboot {
        command: Vec<String>,
        reason: String,
    },
    #[error("the source {0} is not a bundle file or a repository directory")]
    UnknownSource(PathBuf),
}

impl Error {
    /// The process exit code for this error (stable; documented in docs/updater.md; 6 is
    /// `boot-check`'s rolled-back outcome, which is not an error).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::UnknownSource(_) => 2,
            Error::Verify { .. } => 3,
            Error::Refused(_) => 4,
            Error::Disk(_) | Error::State(_) | Error::Io { .. } | Error::BootedSlot(_) => 5,
            Error::Reboot { .. } => 7,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn verify(source_name: impl Into<String>) -> impl FnOnce(signer::Error) -> Error {
        let source_name = source_name.into();
        move |source| Error::Verify {
            source_name,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
