//! The typed documents of FORMAT §3–§6. Each has a wire form (`*Doc`, serde, unknown fields
//! denied) and a validated domain form ([`Root`], [`Channel`], [`Manifest`]) built by checking
//! every field. Building a domain value says nothing about signatures: only
//! [`crate::verify`] turns one into a [`crate::Verified`] value.

mod channel;
mod envelope;
pub(crate) mod envelope_helpers {
    //! Re-export of the padded-JSON helpers for the bundle reader.
    pub(crate) use super::envelope::{check_spaces, parse_padded};
}
mod manifest;
mod names;
mod root;

pub use crate::index::{max_frame_len, ChunkDoc, Tail};
pub use crate::index::{pieces, Chunk, StoredFrame};
pub use crate::keys::Signature;
pub use channel::{Channel, Release, Rollout};
pub use channel::{ChannelDoc, ReleaseDoc, RolloutDoc};
pub(crate) use envelope::parse_signature_block;
pub use envelope::{encode_envelope, encode_signature_block, parse_envelope, Envelope};
pub(crate) use manifest::check_file_len;
pub use manifest::{
    check_asset_kinds, AssetDoc, BlobDoc, ImageDoc, IndexDoc, ManifestDoc, TreeDoc,
};
pub use manifest::{Asset, AssetKind, ChunkStore, Manifest};
pub use names::{check_bundle_path, check_name, parse_version};
pub use root::{KeyDoc, RoleDoc, RolesDoc, RootDoc};
pub use root::{RoleKeys, Root};
