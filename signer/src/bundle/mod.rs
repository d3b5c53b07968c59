//! Writing `.tandem` bundles (FORMAT §2–§5): [`writer`] (the parallel signing pipeline),
//! [`dictionary`] (training the per-bundle zstd dictionary), [`previous`] (the chunks an earlier
//! release stores, which frame apart) and [`add_signature`]. Reading and
//! verifying them is the `bundle` crate's; its modules are re-exported here so that one path
//! names the whole format.

pub mod add_signature;
pub mod dictionary;
pub mod previous;
pub mod writer;

pub use ::bundle::{chunks, head, header, index, read_at};
pub use add_signature::{add_checked_signatures, add_signatures};
pub use chunks::{
    decode_piece, extract, extract_asset, verify_contents, ChunkData, ChunkDecoder, ChunkReader,
    MAX_WINDOW_LOG,
};
pub use dictionary::train_dictionary;
pub use head::BundleHead;
pub use header::BundleHeader;
pub use previous::PreviousChunks;
pub use writer::{sign_bundle, sign_release, AssetSource, SignOptions, SignSummary, Sources};
