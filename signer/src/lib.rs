//! Tandem's signing and verification library: keys, the root of trust, threshold signatures,
//! channel metadata and the `.tandem` bundle format (normative spec: `docs/FORMAT.md`).
//!
//! Map of the crate:
//! - [`keys`]: Ed25519 keys in PKCS#8 / SPKI PEM, key ids.
//! - [`role`]: the [`Role`] trait (domain-separated signed messages) and [`Threshold`].
//! - [`schema`]: the typed documents: [`Root`], [`Channel`], [`Manifest`] and their wire forms.
//! - [`verify`]: the only module that can build a [`Verified`] value (root chain, channel, bundle).
//! - [`bundle`]: the binary bundle: header codec, reading by ranges, chunk decoding, signing.
//! - [`chunking`]: where chunks are cut (fixed blocks or FastCDC on 4 KiB boundaries), shared
//!   by the signer and by a node indexing its own slots for reuse.
//! - [`metadata`]: writing signed `root.json` and channel documents.
//! - [`request`]: signing requests and signature files (signing a bundle on another machine).
//! - [`pkcs11`] (feature `pkcs11`): Ed25519 keys in a PKCS#11 token, named by `pkcs11:` URIs;
//!   they sign through the same [`keys::Signer`] trait as key files.
//! - [`uki`]: the `VERSION_ID` and `.cmdline` of a Unified Kernel Image asset (any PE section
//!   by name); [`kernel`]: the version string of a bzImage kernel asset, for display.
//! - [`files`] and [`publish`]: the tool side (atomic file writes, the repository layout). The
//!   verification core above reads only the bytes or readers it is given.
//! - [`repo`] (reading a repository directory or, through the binary, a URL), [`mirror`]
//!   (a verified copy for a USB stick) and [`provenance`] (what a repository published, and
//!   who signed it).
//!
//! Everything that reads untrusted bytes returns a typed [`Error`]; nothing here panics on input.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
#![warn(missing_docs)]

pub mod bundle;
mod canonical;
pub mod chunking;
pub mod digest;
pub mod error;
pub mod ext;
pub mod files;
pub mod kernel;
pub mod keys;
pub mod limits;
pub mod metadata;
pub mod mirror;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod provenance;
pub mod publish;
pub mod repo;
pub mod request;
pub mod role;
pub mod schema;
pub mod time_util;
pub mod uki;
pub mod verify;

pub use bundle::{BundleHead, BundleHeader, ChunkData, ChunkReader, SignOptions};
pub use digest::Sha256Digest;
pub use error::{
    ChunkFault, Error, FormatError, KeyError, Result, Section, ThresholdReport, UsageError,
    VerifyError,
};
pub use keys::{KeyId, PrivateKey, PublicKey, SecretKey, Signer};
pub use limits::Limits;
pub use role::{Role, RoleKind, RoleName, Threshold};
pub use schema::{Asset, AssetKind, Channel, Chunk, Manifest, Release, Rollout, Root, Signature};
pub use verify::Verified;
