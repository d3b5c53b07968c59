//! GPT A/B slots, boot-control backends and the reference firmware (docs/DESIGN.md §5).
//!
//! * [`model`]: the shared vocabulary ([`SlotId`], [`SlotBootState`], [`select`],
//!   [`BackendKind`]);
//! * [`io`]: the I/O seam ([`io::BlockDevice`], [`io::FileStore`]) every durable write goes
//!   through, with the real implementations, and with the `sim` feature the in-memory and
//!   power-loss-simulating ones tests use;
//! * [`table`]: a bounded GPT reader (primary, backup, fallback) and the power-safe attribute
//!   writer;
//! * [`slots`]: a [`Disk`] and its slot pairs (`root-a`/`root-b`);
//! * [`boot`]: the [`BootControl`] trait, its three backends (GPT attributes, GRUB
//!   environment block, systemd-boot entries), their one configuration ([`boot::Config`])
//!   and the one place they are built ([`boot::open`]);
//! * [`firmware`]: the reference boot selector, [`select_and_boot`];
//! * [`create`]: provisioning (new disk layout, raw image into a slot).
//!
//! Features: `cli` (default) brings what the `tandem-disk` binary needs (clap, anyhow,
//! tracing-subscriber, serde_json); library users depend with `default-features = false`.
//! `sim` adds the simulators of [`io`].
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
pub mod model;
pub mod slots;
pub mod table;

pub use boot::BootControl;
pub use error::{Error, FirmwareError, Result};
pub use firmware::select_and_boot;
pub use model::{select, BackendKind, SlotBootState, SlotId};
pub use slots::{Disk, Slot, SlotPair, DEFAULT_PAIR};
