//! Size and count limits applied to untrusted input before any allocation (CONTRIBUTING.md §7,
//! FORMAT §7). Defaults are safe; a caller may lower them, raising them is its own decision.

/// Bounds on everything read from a bundle or a metadata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest manifest region (FORMAT §3). Default 16 MiB.
    pub max_manifest_len: u32,
    /// Largest signature block (FORMAT §4). Default 64 KiB.
    pub max_signature_block_len: u32,
    /// Most signatures in one block or document. Default 64.
    pub max_signatures: usize,
    /// Largest chunk size (FORMAT §3). Default 64 MiB.
    pub max_chunk_size: u32,
    /// Most chunks in one manifest. Default 16 Mi (a 64 GiB image in 4 KiB chunks).
    pub max_chunk_count: u64,
    /// Most boot assets in one manifest (FORMAT §3.1). Default 16.
    pub max_assets: usize,
    /// Largest stored chunk index, compressed (FORMAT §3.2). Default 644 MiB (16 Mi records
    /// within zstd's bound).
    pub max_index_len: u32,
    /// Largest stored chunk index a bundle's head reads into memory
    /// ([`crate::BundleHead::read`], [`crate::BundleHead::fetch`]); a longer one is left in the
    /// bundle, and the image's chunks are streamed from a proven copy on disk
    /// ([`crate::index::IndexFile`]) instead of listed in the manifest. Default: no bound
    /// (every index read with the head); the agent sets 0, so its memory stays flat.
    pub max_index_in_head: u32,
    /// Largest compression dictionary (FORMAT §3.2). Default 1 MiB.
    pub max_dictionary_len: u32,
    /// Largest signed metadata document (`root.json`, channel). Default 1 MiB.
    pub max_metadata_len: u64,
    /// Most keys in a root. Default 256.
    pub max_keys: usize,
    /// Most root rotations walked in one [`crate::verify::load_chain`] call. Default 32.
    pub max_root_rotations: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_len: 16 << 20,
            max_signature_block_len: 64 << 10,
            max_signatures: 64,
            max_chunk_size: 64 << 20,
            max_chunk_count: 16 << 20,
            max_assets: 16,
            max_index_len: 644 << 20,
            max_index_in_head: u32::MAX,
            max_dictionary_len: 1 << 20,
            max_metadata_len: 1 << 20,
            max_keys: 256,
            max_root_rotations: 32,
        }
    }
}

/// Smallest chunk size allowed by the format (FORMAT §3).
pub const MIN_CHUNK_SIZE: u32 = 4096;
