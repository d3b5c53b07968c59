//! Error types of the crate, grouped by cause: I/O, a damaged or hostile partition table,
//! a disk whose layout does not have the slots asked for, damaged boot-state files, and
//! caller mistakes (never caused by what is on the disk).

use std::io;
use std::path::PathBuf;

use crate::model::{BackendKind, OutOfRange, SlotBootState, SlotId};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the disk or a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The partition table is missing or damaged beyond use.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// The table is fine but the slots asked for are not there, or not usable.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A boot-state file (grubenv, boot loader entry, loader.conf) is malformed.
    #[error(transparent)]
    BootState(#[from] BootStateError),
    /// The caller asked for something invalid (not caused by disk content).
    #[error(transparent)]
    Usage(#[from] UsageError),
}

impl From<OutOfRange> for Error {
    fn from(e: OutOfRange) -> Self {
        Error::Usage(UsageError::OutOfRange(e))
    }
}

impl Error {
    /// Wrap an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// A GPT that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GptError {
    /// The device is too small to hold a GPT.
    #[error("device of {size} bytes is too small for a GPT")]
    TooSmall {
        /// Device size in bytes.
        size: u64,
    },
    /// Neither GPT copy is valid.
    #[error("no valid GPT: primary {primary}; backup {backup}")]
    NoValidTable {
        /// Why the primary copy was rejected.
        primary: HeaderProblem,
        /// Why the backup copy was rejected.
        backup: HeaderProblem,
    },
    /// A partition entry is inconsistent with the header (ends before it starts, lies
    /// outside the usable area).
    #[error("partition {index} ({name:?}) spans LBA {first}..={last}, outside usable {usable_first}..={usable_last} or reversed")]
    BadEntry {
        /// 1-based entry number.
        index: u32,
        /// Partition name.
        name: String,
        /// First LBA.
        first: u64,
        /// Last LBA.
        last: u64,
        /// First usable LBA of the header.
        usable_first: u64,
        /// Last usable LBA of the header.
        usable_last: u64,
    },
    /// Two partitions share sectors.
    #[error("partitions {a} and {b} overlap")]
    Overlap {
        /// 1-based entry number.
        a: u32,
        /// 1-based entry number.
        b: u32,
    },
    /// A unique GUID asked for one entry is already another entry's: GUIDs must stay
    /// unique on a disk, or `PARTUUID=` names either partition.
    #[error("partition {index} cannot take the unique GUID {guid}: partition {holder} ({holder_name:?}) has it")]
    DuplicateGuid {
        /// The GUID.
        guid: uuid::Uuid,
        /// 1-based entry number it was asked for.
        index: u32,
        /// 1-based entry number that has it.
        holder: u32,
        /// That entry's name.
        holder_name: String,
    },
}

/// Why one GPT copy (header + entry array) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// No "EFI PART" signature.
    #[error("no GPT signature")]
    NoSignature,
    /// Header CRC mismatch.
    #[error("header CRC mismatch")]
    HeaderCrc,
    /// The entry array CRC does not match the header.
    #[error("partition entry array CRC mismatch")]
    EntriesCrc,
    /// A header field is out of range.
    #[error("bad header field: {0}")]
    BadField(&'static str),
    /// The copy could not be read.
    #[error("unreadable: {0}")]
    Unreadable(String),
}

/// The slots asked for are not on the disk, or not usable as a pair.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// No partition with this name.
    #[error("no partition named {name:?} (partitions: {present})")]
    MissingSlot {
        /// The partition name looked for.
        name: String,
        /// Names present on the disk, comma-separated.
        present: String,
    },
    /// More than one partition with this name.
    #[error("more than one partition named {name:?} (entries {indices:?})")]
    DuplicateSlot {
        /// The duplicated name.
        name: String,
        /// 1-based entry numbers.
        indices: Vec<u32>,
    },
    /// The two slots of a pair differ in size.
    #[error("slots {a:?} ({a_size} bytes) and {b:?} ({b_size} bytes) differ in size")]
    SizeMismatch {
        /// Name of slot A.
        a: String,
        /// Size of slot A.
        a_size: u64,
        /// Name of slot B.
        b: String,
        /// Size of slot B.
        b_size: u64,
    },
}

/// A boot-state file is malformed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootStateError {
    /// The grubenv is not a GRUB environment block.
    #[error("{path}: not a GRUB environment block: {reason}")]
    GrubEnv {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A Tandem variable in the grubenv has a value we do not understand.
    #[error("{path}: {var}={value:?} is not valid ({expected})")]
    GrubVar {
        /// The file.
        path: PathBuf,
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The variables do not fit in the 1024-byte block.
    #[error("{path}: the environment needs {needed} bytes, more than the 1024-byte block")]
    GrubEnvFull {
        /// The file.
        path: PathBuf,
        /// Bytes needed.
        needed: usize,
    },
    /// More than one boot entry for one slot.
    #[error("{dir}: more than one entry for slot {slot}: {names:?}; remove all but one")]
    DuplicateEntries {
        /// The entries directory.
        dir: PathBuf,
        /// The slot.
        slot: SlotId,
        /// The files.
        names: Vec<String>,
    },
    /// A boot entry file cannot be parsed.
    #[error("{path}: {reason}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The disk was set up for one backend and another was asked to keep its boot state:
    /// writing there would leave the firmware reading stale state.
    #[error("the disk's boot state is kept by the {set_up} backend (recorded by `tandem-disk init-boot`), not by {asked}")]
    WrongBackend {
        /// The backend the disk was set up for.
        set_up: BackendKind,
        /// The backend asked for.
        asked: BackendKind,
    },
    /// The backend mark in the slots' GPT attributes is not one this version knows, or the
    /// two slots disagree.
    #[error("GPT entries {a_index} and {b_index}: unknown boot-backend mark {a_mark}/{b_mark} (attribute bits 61-62)")]
    BackendMark {
        /// Slot A's entry.
        a_index: u32,
        /// Slot A's mark.
        a_mark: u8,
        /// Slot B's entry.
        b_index: u32,
        /// Slot B's mark.
        b_mark: u8,
    },
    /// The running slot is not a committed slot in the boot state, so a trial of the other
    /// slot would have nothing to fall back to.
    #[error("slot {slot} is running but its boot state ({state}) is a trial or a given-up slot, not a committed one: a trial of the other slot would have nothing to fall back to")]
    NoFallback {
        /// The running slot.
        slot: SlotId,
        /// Its boot state.
        state: SlotBootState,
    },
    /// A slot's `cmdline` boot file is not a kernel command line (one line of printable
    /// UTF-8 text).
    #[error("{path}: not a kernel command line: {reason}")]
    Cmdline {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// loader.conf pins a default entry, which defeats the fallback.
    #[error(
        "{path}: has a `default` line; it pins one entry and defeats the tries fallback: remove it"
    )]
    LoaderDefault {
        /// The loader.conf path.
        path: PathBuf,
    },
}

/// The caller asked for something invalid. Never caused by disk content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// Priority or tries above 15 (4-bit fields).
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    /// An image larger than the slot.
    #[error("image of {image} bytes does not fit in slot {slot} ({slot_size} bytes)")]
    ImageTooLarge {
        /// Image size.
        image: u64,
        /// Slot name.
        slot: String,
        /// Slot size.
        slot_size: u64,
    },
    /// A disk layout that cannot be created.
    #[error("cannot lay out the disk: {0}")]
    Layout(String),
    /// A trial needs at least one try.
    #[error("a trial needs at least 1 try")]
    ZeroTries,
    /// A staged boot file was created but never finished, so it may not be durable: it is
    /// not put in place.
    #[error("{path}: staged but never finished (call `finish` on it before `commit`)")]
    NotFinished {
        /// The staged file.
        path: PathBuf,
    },
}

/// The reference firmware found nothing it may boot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirmwareError {
    /// No slot has a non-zero priority and (successful or tries left).
    #[error("nothing bootable: slot a {a}, slot b {b}")]
    NothingBootable {
        /// State of slot A.
        a: SlotBootState,
        /// State of slot B.
        b: SlotBootState,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] Error),
}
