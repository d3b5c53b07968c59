//! Tandem's authoring library: everything that makes a release, on top of the `bundle` crate
//! (the format, reading and verification, which a node links alone).
//!
//! Map of the crate:
//! - [`keys`]: Ed25519 keys that sign (PKCS#8 PEM), the [`Signer`] trait, [`sign_bytes`];
//!   [`key_source`]: a key file's key or (feature `pkcs11`) a token's, as the command line
//!   names them; [`pkcs11`]: keys in a PKCS#11 token, named by `pkcs11:` URIs.
//! - [`bundle`]: writing bundles (the signing pipeline, dictionary training, the chunks of
//!   `--previous` releases, adding signatures), with the format's reading modules re-exported.
//! - [`inspect`]: what a bundle says about itself, read without trusting it, and who signed it.
//! - [`metadata`]: writing signed `root.json` and channel documents.
//! - [`request`]: signing requests and signature files (signing a bundle on another machine).
//! - [`verity`]: the dm-verity hash area of a root image (`veritysetup`'s layout), and the
//!   check of a hash file against its image.
//! - [`files`] and [`publish`]: atomic file writes, key files, the repository layout.
//! - [`repo`] (reading a repository directory or, through the binary, a URL), [`mirror`]
//!   (a verified copy for a USB stick) and [`provenance`] (what a repository published, and
//!   who signed it).
//!
//! The format's modules ([`schema`], [`verify`], [`chunking`], [`digest`], [`error`], [`role`],
//! [`limits`], [`uki`], [`kernel`], [`time_util`]) are the `bundle` crate's, re-exported so
//! that a tool built on this crate names everything through one path.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
#![warn(missing_docs)]

pub mod bundle;
pub mod ext;
pub mod files;
pub mod inspect;
pub mod key_source;
pub mod keys;
pub mod metadata;
pub mod mirror;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod provenance;
pub mod publish;
pub mod repo;
pub mod request;
pub mod verity;

pub use ::bundle::{chunking, digest, error, kernel, limits, role, schema, time_util, uki, verify};
pub use ::bundle::{
    Asset, AssetKind, BundleHead, BundleHeader, Channel, Chunk, ChunkData, ChunkFault, ChunkReader,
    Error, FormatError, KeyError, Limits, Manifest, Release, Result, Role, RoleKind, RoleName,
    Rollout, Root, Section, Sha256Digest, Signature, Threshold, ThresholdReport, UsageError,
    Verified, VerifyError,
};
pub use bundle::SignOptions;
pub use key_source::PrivateKey;
pub use keys::{sign_bytes, KeyId, PublicKey, SecretKey, Signer};
