//! The I/O seam: every durable write Tandem makes goes through these two traits.
//!
//! * [`BlockDevice`]: a disk or a partition of one (read at, write at, zero a range, sync).
//!   Slot data, the GPT boot attributes and anything else that lives at a byte offset.
//! * [`FileStore`]: files on a filesystem (the ESP's boot entries and boot files, the
//!   grubenv, the updater's state file), with whole-file atomic replacement, in-place
//!   overwrite, rename and removal, each durable when it returns, and streamed writes
//!   ([`NewFile`], durable once finished) for files too large to hold in memory.
//!
//! Nothing in this crate (and nothing in the updater) writes boot state or slot data with
//! `std::fs` directly: backends and slot writers only hold an `Arc<dyn BlockDevice>` or an
//! `Arc<dyn FileStore>`. That is what lets a test interpose a disk that, at a simulated power
//! cut, keeps only what was synced plus a seeded subset of the unsynced writes (see
//! `PowerLossDisk`), which is what a real power cut does to a page cache and what `kill -9`
//! never shows.
//!
//! Real implementations: [`FileDisk`] (an image file or a block device)
//! and [`RealFs`] (a directory tree). With the `sim` feature (tests and simulators only, so
//! production builds do not carry them): the in-memory `MemDisk` and `MemFs`, and the
//! power-cut simulators `PowerLossDisk` and `PowerLossFs`.

mod beneath;
mod block;
mod fs;
#[cfg(any(test, feature = "sim"))]
mod mem;
#[cfg(any(test, feature = "sim"))]
mod power_loss;

pub use block::{BlockDevice, DeviceCursor, FileDisk, SubDevice, DIRECT_ALIGN};
pub use fs::{FileStore, NewFile, RealFs};
#[cfg(any(test, feature = "sim"))]
pub use mem::{MemDisk, MemFs};
#[cfg(any(test, feature = "sim"))]
pub use power_loss::{PowerLossDisk, PowerLossFs, SplitMix64};
