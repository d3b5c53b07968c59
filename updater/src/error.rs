//! The agent's errors, grouped by cause, each with a stable exit code (docs/updater.md).
//!
//! Policy refusals are a typed [`Refusal`], so the daemon's decisions, the CLI's exit codes
//! and the reports sent to the server all name the same reason without matching on text.

use std::fmt;

use partitions::SlotId;

use crate::config::ConfigError;
use crate::state::StateError;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line asks for something that cannot be (a missing or superfluous flag).
    #[error("{0}")]
    Usage(String),
    /// The bundle, metadata or root failed verification: hostile or damaged input.
    #[error("{source_name}: {source}")]
    Verify {
        source_name: String,
        #[source]
        source: bundle::Error,
    },
    /// A server or medium sent something no honest repository sends (an endless body, a
    /// bundle path outside the repository): hostile or damaged input, like [`Error::Verify`].
    #[error("{source_name}: {reason}")]
    Hostile { source_name: String, reason: String },
    /// A valid update this node must not install.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The server could not be reached, answered with an error, or was too slow.
    #[error("{method} {url}: {reason}")]
    Network {
        method: &'static str,
        url: String,
        reason: String,
    },
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
    /// Another agent process holds the state directory's lock.
    #[error("another tandem-updater ({holder}) is running: wait for it to finish")]
    Busy { holder: String },
}

/// A valid update, or an operation, that this node's policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("the bundle is for product {offered:?}; this node is {node:?}")]
    OtherProduct { offered: String, node: String },
    #[error(
        "security version {offered} is below this node's floor {floor}, kept in {kept_in} \
         (anti-rollback)"
    )]
    BelowSecurityFloor {
        offered: u64,
        floor: u64,
        /// Where the floor was read: `counters.json`, its rebuild from the state file, or
        /// the GPT entries of the slot pair.
        kept_in: String,
    },
    #[error("the image is {image} bytes; the slot holds only {slot}")]
    TooLargeForSlot { image: u64, slot: u64 },
    #[error("version {version} rolled back on this node before; install --force to try it again")]
    RolledBackHere { version: String },
    #[error(
        "the booted slot {booted} is not committed yet (run boot-check first): \
         the other slot is the last known good one and is not overwritten"
    )]
    InTrial { booted: SlotId },
    #[error("the rollout ({percent} %) does not include this node yet")]
    NotInRollout { percent: u8 },
    #[error("the channel is paused{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Paused { reason: Option<String> },
    #[error("nothing is staged: install with --stage first")]
    NothingStaged,
    #[error("slot {slot} is being written by an interrupted install")]
    SlotBeingWritten { slot: SlotId },
    #[error("slot {slot} holds no image the node may go back to ({why})")]
    NoFallback { slot: SlotId, why: String },
    #[error("this release carries boot files ({assets}), but the {backend} backend has no place for them on this node (docs/booting.md: carry kernels as partition images for gpt)")]
    NoBootFiles { backend: String, assets: String },
    #[error("asset {asset} needs the partitions {asset}-a/{asset}-b: {reason}")]
    NoPartitionPair { asset: String, reason: String },
    #[error("asset {asset} is {size} bytes; partition {partition} holds only {room}")]
    TooLargeForPartition {
        asset: String,
        size: u64,
        partition: String,
        room: u64,
    },
    #[error("the boot files need {need} bytes free beside {dir}, the filesystem has {free}: free space on the ESP (both slots' boot files must fit)")]
    NoRoomForBootFiles { dir: String, need: u64, free: u64 },
    #[error("the release's {asset} does not match its signed root image: {reason} (a UKI built for another image would not find its root)")]
    RootHashMismatch { asset: String, reason: String },
    #[error("partition {holder} ({holder_name:?}) already has PARTUUID {partuuid}, the one the release's verity root hash {root_hash} names: the same root in both slots could not be told apart by the UKI's fixed command line (the running slot holds this root already; a rebuild with another salt gives another root hash)")]
    RootHashOnOtherSlot {
        root_hash: String,
        partuuid: String,
        holder: u32,
        holder_name: String,
    },
}

impl Refusal {
    /// A stable kebab-case name, used in reports and `--json` errors.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::OtherProduct { .. } => "other-product",
            Refusal::BelowSecurityFloor { .. } => "below-security-floor",
            Refusal::TooLargeForSlot { .. } => "too-large-for-slot",
            Refusal::RolledBackHere { .. } => "rolled-back-here",
            Refusal::InTrial { .. } => "in-trial",
            Refusal::NotInRollout { .. } => "not-in-rollout",
            Refusal::Paused { .. } => "paused",
            Refusal::NothingStaged => "nothing-staged",
            Refusal::SlotBeingWritten { .. } => "slot-being-written",
            Refusal::NoFallback { .. } => "no-fallback",
            Refusal::NoBootFiles { .. } => "no-boot-files",
            Refusal::NoPartitionPair { .. } => "no-partition-pair",
            Refusal::TooLargeForPartition { .. } => "too-large-for-partition",
            Refusal::NoRoomForBootFiles { .. } => "no-room-for-boot-files",
            Refusal::RootHashMismatch { .. } => "root-hash-mismatch",
            Refusal::RootHashOnOtherSlot { .. } => "root-hash-on-other-slot",
        }
    }
}

/// The documented exit codes (docs/updater.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    Usage = 2,
    Hostile = 3,
    Refused = 4,
    Io = 5,
    RolledBack = 6,
    Reboot = 7,
    Network = 8,
    Busy = 9,
}

impl Error {
    /// The class of this error, which gives its exit code.
    pub fn class(&self) -> ExitClass {
        match self {
            Error::Config(_) | Error::Usage(_) => ExitClass::Usage,
            Error::Disk(e) if is_misconfiguration(e) => ExitClass::Usage,
            Error::Disk(partitions::Error::BootState(
                partitions::error::BootStateError::NoFallback { .. },
            )) => ExitClass::Refused,
            Error::Verify { .. } | Error::Hostile { .. } => ExitClass::Hostile,
            Error::Refused(_) => ExitClass::Refused,
            Error::Network { .. } => ExitClass::Network,
            Error::Disk(_) | Error::State(_) | Error::Io { .. } | Error::BootedSlot(_) => {
                ExitClass::Io
            }
            Error::Reboot { .. } => ExitClass::Reboot,
            Error::Busy { .. } => ExitClass::Busy,
        }
    }

    /// The process exit code for this error (stable; documented in docs/updater.md).
    pub fn exit_code(&self) -> u8 {
        self.class() as u8
    }

    /// A stable kebab-case name of the cause, for reports and `--json` errors.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Refused(refusal) => refusal.code(),
            Error::Config(_) => "config",
            Error::Usage(_) => "usage",
            Error::Verify { .. } => "verification-failed",
            Error::Hostile { .. } => "hostile-input",
            Error::Network { .. } => "network",
            Error::Disk(_) => "disk",
            Error::State(_) => "state",
            Error::Io { .. } => "io",
            Error::BootedSlot(_) => "booted-slot",
            Error::Reboot { .. } => "reboot-failed",
            Error::Busy { .. } => "busy",
        }
    }

    /// What a report says of this error: its code, then the message with its causes.
    pub fn report_reason(&self) -> String {
        format!("{}: {}", self.code(), chain(self))
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn verify(source_name: impl Into<String>) -> impl FnOnce(bundle::Error) -> Error {
        let source_name = source_name.into();
        move |source| Error::Verify {
            source_name,
            source,
        }
    }

    pub(crate) fn usage(message: impl fmt::Display) -> Error {
        Error::Usage(message.to_string())
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        Error::Refused(refusal)
    }
}

/// A repository read's failure, in the class it always had: a file over its cap or a
/// refused path is hostile input, a CA bundle the configuration's mistake.
impl From<repo_client::Error> for Error {
    fn from(error: repo_client::Error) -> Self {
        use repo_client::Error as E;
        match error {
            E::Hostile {
                source_name,
                reason,
            } => Error::Hostile {
                source_name,
                reason,
            },
            E::TooLarge { path, len, max } => Error::Verify {
                source: bundle::files::invalid_data(
                    format!("reading {path}"),
                    format!("{len} bytes, more than the {max}-byte limit"),
                ),
                source_name: path,
            },
            E::Network {
                method,
                url,
                reason,
            } => Error::Network {
                method,
                url,
                reason,
            },
            E::Io { context, source } => Error::Io { context, source },
            E::CaBundleRead { path, source } => Error::Config(ConfigError::Read { path, source }),
            E::Setup { path, message } => Error::Config(ConfigError::Invalid { path, message }),
            other => Error::Io {
                context: "reading the repository".into(),
                source: std::io::Error::other(other),
            },
        }
    }
}

/// An error and its causes on one line, each cause once.
pub use proto::chain;

/// Disk errors an operator fixes in the configuration or the provisioning, not in hardware.
fn is_misconfiguration(error: &partitions::Error) -> bool {
    use partitions::error::{BootStateError, LayoutError};
    matches!(
        error,
        partitions::Error::Layout(
            LayoutError::MissingSlot { .. } | LayoutError::DuplicateSlot { .. }
        ) | partitions::Error::BootState(
            BootStateError::LoaderDefault { .. }
                | BootStateError::DuplicateEntries { .. }
                | BootStateError::WrongBackend { .. }
        )
    )
}

/// A unique error for when a path given as a source is none of the kinds the agent reads.
pub(crate) fn unknown_source(path: &std::path::Path) -> Error {
    Error::usage(format!(
        "{} is not a bundle file, a repository directory or an http(s):// URL",
        path.display()
    ))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
