//! GPT A/B slots, boot-control backends and the reference firmware (DESIGN.md §5).
//!
//! * [`io`]: the I/O seam ([`io::BlockDevice`], [`io::FileStore`]) every durable write goes
//!   through, with real, in-memory and power-loss-simulating implementations;
//! * [`table`]: a bounded GPT reader (primary, backup, fallback) and the power-safe attribute
//!   writer;
//! * [`slots`]: a [`Disk`] and its slot pairs (`root-a`/`root-b`);
//! * [`boot`]: the [`BootControl`] trait and its three backends (GPT attributes, GRUB
//!   environment block, systemd-boot entries);
//! * [`firmware`]: the reference boot selector, [`select_and_boot`];
//! * [`create`]: provisioning (new disk layout, raw image into a slot).
//!
//! This crate knows nothing of bundles or signatures.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod boot;
pub mod create;
pub mod error;
pub mod firmware;
pub mod io;
pub mod slots;
pub mod table;

pub use boot::{select, BackendKind, BootControl, SlotBootState, SlotId};
pub use error::{Error, FirmwareError, Result};
pub use firmware::select_and_boot;
pub use slots::{Disk, Slot, SlotPair, DEFAULT_PAIR};
