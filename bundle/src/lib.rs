//! The `.tandem` bundle format and Tandem's signed metadata, as a node reads them (normative
//! spec: `docs/FORMAT.md`): everything needed to verify and extract a release, and nothing
//! that authors one (signing, publishing and key stores are the `signer` crate's).
//!
//! Map of the crate:
//! - [`keys`]: Ed25519 public keys (SPKI PEM), key ids, signatures, strict verification.
//! - [`role`]: the [`Role`] trait (domain-separated signed messages) and [`Threshold`].
//! - [`schema`]: the typed documents: [`Root`], [`Channel`], [`Manifest`] and their wire forms.
//! - [`verify`]: the only module that can build a [`Verified`] value (root chain, channel, bundle).
//! - [`header`] (the fixed header codec), [`head`] (a bundle's head read whole or by ranges,
//!   and its manifest region parsed), [`index`] (how a stored chunk list
//!   becomes the [`Chunk`] list: the binary index record by record, or the JSON entries),
//!   [`frame`] (the checks every stored zstd frame passes), [`chunks`] (decoding and
//!   hash-checking frames, extraction), [`read_at`] (random access to a boot asset's bytes,
//!   decoding only the chunks a read spans).
//! - [`chunking`]: where chunks are cut (fixed blocks or FastCDC on 4 KiB boundaries), shared
//!   by the signer and by a node indexing its own slots for reuse.
//! - [`uki`]: the `VERSION_ID` and `.cmdline` of a Unified Kernel Image asset (any PE section
//!   by name); [`kernel`]: the version string of a bzImage kernel asset, for display.
//! - [`files`]: reading a local file with a cap on its length.
//! - [`verity`]: the image's dm-verity parameters and the `roothash=` rule of a release's
//!   command lines.
//!
//! The verification core reads only the bytes or readers it is given. Everything that reads
//! untrusted bytes returns a typed [`Error`]; nothing here panics on input.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
#![warn(missing_docs)]

pub mod canonical;
pub mod chunking;
pub mod chunks;
pub mod digest;
pub mod error;
pub mod files;
pub mod frame;
pub mod head;
pub mod header;
pub mod index;
pub mod kernel;
pub mod keys;
pub mod limits;
pub mod read_at;
pub mod role;
pub mod schema;
pub mod time_util;
pub mod uki;
pub mod verify;
pub mod verity;

pub use chunks::{ChunkData, ChunkDecoder, ChunkReader};
pub use digest::{Sha256Digest, ZeroDigests};
pub use error::{
    ChunkFault, Error, FormatError, KeyError, Result, Section, ThresholdReport, UsageError,
    VerifyError,
};
pub use head::BundleHead;
pub use header::BundleHeader;
pub use keys::{KeyId, PublicKey};
pub use limits::Limits;
pub use role::{Role, RoleKind, RoleName, Threshold};
pub use schema::{Asset, AssetKind, Channel, Chunk, Manifest, Release, Rollout, Root, Signature};
pub use verify::Verified;
