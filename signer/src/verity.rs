//! The dm-verity hash area of a root image, computed here so a release needs no external
//! tool: the layout `veritysetup format` writes (docs/FORMAT.md §3.3) — a 512-byte superblock
//! (version 1, hash type 1, SHA-256) in the first hash block, then the tree's levels from the
//! top one down to the one that hashes the data blocks, each hash `SHA-256(salt ‖ block)`, each
//! hash block a power of two of digests padded with zeros. The root hash is the hash of the top
//! block (of the only data block when there is one).
//!
//! [`format`] makes the area of an image; [`check_hash_file`] checks a hash file (ours or
//! `veritysetup`'s) against the image it claims to describe before `sign` appends it.

use std::io::Read;

/// The format's side: the parameters a manifest signs, the `roothash=` and `PARTUUID=`
/// rule, the PARTUUID a root hash derives and the command line that uses it.
pub use ::bundle::verify::asset_cmdline;
pub use ::bundle::verity::{
    check_cmdline, parse_salt, partuuid, suggested_cmdline, Verity, VerityDoc,
    MAX_SALT as MAX_SALT_LEN,
};
use ::bundle::verity::{
    hash_area_size, hashes_per_block_bits, level_blocks, MAX_BLOCK, MAX_SALT, MIN_BLOCK,
    SUPERBLOCK_LEN,
};
use ::bundle::Sha256Digest;
use sha2::{Digest, Sha256};

/// The superblock's magic.
const MAGIC: &[u8; 8] = b"verity\0\0";
/// The only hash algorithm written and read.
const ALGORITHM: &[u8] = b"sha256";
/// Data read per call while hashing the data blocks.
const READ_BUF: usize = 1 << 20;

/// Why a hash area could not be made or a hash file was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    /// Reading the image failed.
    #[error("reading the image: {0}")]
    Read(#[from] std::io::Error),
    /// The image cannot carry a tree in this layout.
    #[error("{0}")]
    Image(String),
    /// The hash file is not a veritysetup version 1 SHA-256 superblock and tree.
    #[error("not a hash file tandem can sign: {0}")]
    Superblock(String),
    /// The hash file's tree is not the tree of the image.
    #[error("the hash file's tree is not the image's (the image changed after `verity`, or the file is another image's)")]
    Mismatch,
}

/// An image's hash area: its parameters (with the root hash) and its bytes.
#[derive(Debug, Clone)]
pub struct HashArea {
    /// The parameters the manifest signs.
    pub verity: Verity,
    /// The superblock and the tree, `verity.hash_size()` bytes.
    pub bytes: Vec<u8>,
}

/// The hash area of the `data_size` bytes `image` yields, hashed with `salt` in blocks of
/// `block_size` (data and hash), the superblock naming `uuid`.
pub fn format(
    image: impl Read,
    data_size: u64,
    block_size: u32,
    salt: &[u8],
    uuid: [u8; 16],
) -> Result<HashArea, VerityError> {
    if !block_size.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
        return Err(VerityError::Image(format!(
            "block size {block_size} is not a power of two from {MIN_BLOCK} to {MAX_BLOCK}"
        )));
    }
    if data_size == 0 || data_size % u64::from(block_size) != 0 {
        return Err(VerityError::Image(format!(
            "the image is {data_size} bytes, not a positive multiple of the {block_size}-byte block \
             (pad it, or build the filesystem in whole blocks)"
        )));
    }
    if salt.len() > MAX_SALT {
        return Err(VerityError::Image(format!(
            "a salt of {} bytes, at most {MAX_SALT}",
            salt.len()
        )));
    }
    let data_blocks = data_size / u64::from(block_size);
    let bs = block_size as usize;
    let (leaves, first) = hash_data(image, data_blocks, bs, salt)?;
    let mut levels = vec![pack(&leaves, bs)];
    for _ in 1..level_blocks(data_blocks, block_size).len() {
        let below = levels
            .last()
            .map(|l| hash_blocks(l, bs, salt))
            .unwrap_or_default();
        levels.push(pack(&below, bs));
    }
    let root = match levels.last() {
        Some(top) if data_blocks > 1 => hash_block(salt, top),
        _ => first,
    };
    let mut bytes = superblock(block_size, data_blocks, salt, uuid);
    bytes.resize(bs, 0);
    if data_blocks > 1 {
        for level in levels.iter().rev() {
            bytes.extend_from_slice(level);
        }
    }
    let doc = VerityDoc {
        data_block_size: block_size,
        data_size,
        hash_block_size: block_size,
        hash_size: bytes.len() as u64,
        root_hash: root,
        salt: hex::encode(salt),
    };
    let verity =
        Verity::from_doc(&doc, data_size + bytes.len() as u64).map_err(VerityError::Image)?;
    Ok(HashArea { verity, bytes })
}

/// Checks that `hash_file` is exactly the hash area of the `data_size` bytes `image` yields
/// (its superblock's salt, block size, block count and UUID, then every tree byte) and
/// returns its parameters.
pub fn check_hash_file(
    image: impl Read,
    data_size: u64,
    hash_file: &[u8],
) -> Result<Verity, VerityError> {
    let sb = parse_superblock(hash_file)?;
    let want = sb.data_blocks.checked_mul(u64::from(sb.block_size));
    if want != Some(data_size) {
        return Err(VerityError::Superblock(format!(
            "it describes {} blocks of {} bytes, the image is {data_size} bytes",
            sb.data_blocks, sb.block_size
        )));
    }
    if hash_file.len() as u64 != hash_area_size(sb.data_blocks, sb.block_size) {
        return Err(VerityError::Superblock(format!(
            "{} bytes, but the tree of the image takes {}",
            hash_file.len(),
            hash_area_size(sb.data_blocks, sb.block_size)
        )));
    }
    let area = format(image, data_size, sb.block_size, &sb.salt, sb.uuid)?;
    match area.bytes == hash_file {
        true => Ok(area.verity),
        false => Err(VerityError::Mismatch),
    }
}

/// Hashes each data block; returns the digests and the first one.
fn hash_data(
    mut image: impl Read,
    data_blocks: u64,
    bs: usize,
    salt: &[u8],
) -> Result<(Vec<u8>, Sha256Digest), VerityError> {
    let mut digests = Vec::with_capacity(usize::try_from(data_blocks).unwrap_or(0) * 32);
    let mut buf = vec![0u8; READ_BUF.max(bs)];
    let mut left = data_blocks;
    while left > 0 {
        let blocks = left.min((buf.len() / bs) as u64) as usize;
        let chunk = buf.get_mut(..blocks * bs).unwrap_or_default();
        image.read_exact(chunk)?;
        for block in chunk.chunks_exact(bs) {
            digests.extend_from_slice(&hash_block(salt, block).0);
        }
        left -= blocks as u64;
    }
    let first = digests
        .get(..32)
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .map(Sha256Digest)
        .unwrap_or(Sha256Digest([0; 32]));
    Ok((digests, first))
}

/// The digests of each `bs`-byte block of `level`, concatenated.
fn hash_blocks(level: &[u8], bs: usize, salt: &[u8]) -> Vec<u8> {
    level
        .chunks_exact(bs)
        .flat_map(|block| hash_block(salt, block).0)
        .collect()
}

/// Digests packed into hash blocks: `2^bits` per block, each block padded with zeros.
fn pack(digests: &[u8], bs: usize) -> Vec<u8> {
    let per_block = 1usize << hashes_per_block_bits(bs as u32);
    let mut out = Vec::with_capacity(digests.len().div_ceil(per_block * 32) * bs);
    for group in digests.chunks(per_block * 32) {
        let start = out.len();
        out.extend_from_slice(group);
        out.resize(start + bs, 0);
    }
    out
}

/// `SHA-256(salt ‖ block)`: a version 1 hash.
fn hash_block(salt: &[u8], block: &[u8]) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    Sha256Digest(h.finalize().into())
}

/// The 512-byte superblock (`struct verity_sb`, little-endian).
fn superblock(block_size: u32, data_blocks: u64, salt: &[u8], uuid: [u8; 16]) -> Vec<u8> {
    let mut sb = Vec::with_capacity(SUPERBLOCK_LEN);
    sb.extend_from_slice(MAGIC);
    sb.extend_from_slice(&1u32.to_le_bytes()); // superblock version
    sb.extend_from_slice(&1u32.to_le_bytes()); // hash type: normal (salt first)
    sb.extend_from_slice(&uuid);
    let mut algorithm = [0u8; 32];
    algorithm
        .get_mut(..ALGORITHM.len())
        .unwrap_or_default()
        .copy_from_slice(ALGORITHM);
    sb.extend_from_slice(&algorithm);
    sb.extend_from_slice(&block_size.to_le_bytes()); // data block size
    sb.extend_from_slice(&block_size.to_le_bytes()); // hash block size
    sb.extend_from_slice(&data_blocks.to_le_bytes());
    sb.extend_from_slice(&(salt.len() as u16).to_le_bytes());
    sb.extend_from_slice(&[0; 6]);
    let mut salt_field = [0u8; MAX_SALT];
    salt_field
        .get_mut(..salt.len())
        .unwrap_or_default()
        .copy_from_slice(salt);
    sb.extend_from_slice(&salt_field);
    sb.resize(SUPERBLOCK_LEN, 0);
    sb
}

/// What a superblock says.
struct Superblock {
    uuid: [u8; 16],
    block_size: u32,
    data_blocks: u64,
    salt: Vec<u8>,
}

/// Reads a version 1, hash type 1, SHA-256 superblock with equal data and hash block sizes.
fn parse_superblock(file: &[u8]) -> Result<Superblock, VerityError> {
    let bad = |what: &str| VerityError::Superblock(what.to_owned());
    let sb = file
        .get(..SUPERBLOCK_LEN)
        .ok_or_else(|| bad("shorter than a superblock"))?;
    let u32_at = |at: usize| ::bundle::uki::u32_at(sb, at).unwrap_or(0);
    if sb.get(..8) != Some(&MAGIC[..]) {
        return Err(bad("no `verity` superblock at its start"));
    }
    if u32_at(8) != 1 || u32_at(12) != 1 {
        return Err(bad("superblock version or hash type other than 1"));
    }
    let algorithm = sb.get(32..64).unwrap_or_default();
    let name_end = algorithm.iter().position(|&b| b == 0).unwrap_or(32);
    if algorithm.get(..name_end) != Some(ALGORITHM) {
        return Err(bad("a hash algorithm other than sha256"));
    }
    let (data_block, hash_block) = (u32_at(64), u32_at(68));
    if data_block != hash_block {
        return Err(bad("data and hash block sizes differ"));
    }
    let data_blocks = sb
        .get(72..80)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let salt_len = usize::from(::bundle::uki::u16_at(sb, 80).unwrap_or(0));
    let salt = sb
        .get(88..88 + salt_len.min(MAX_SALT + 1))
        .filter(|_| salt_len <= MAX_SALT)
        .ok_or_else(|| bad("a salt longer than 256 bytes"))?;
    let uuid = sb
        .get(16..32)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .unwrap_or([0; 16]);
    Ok(Superblock {
        uuid,
        block_size: data_block,
        data_blocks,
        salt: salt.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(blocks: usize) -> Vec<u8> {
        (0..blocks * 4096)
            .map(|i| (i / 4096 + i % 251) as u8)
            .collect()
    }

    #[test]
    fn a_hash_file_round_trips_and_refuses_another_image() {
        let data = image(300);
        let area = format(&data[..], data.len() as u64, 4096, b"salt", [9; 16]).unwrap();
        assert_eq!(area.bytes.len(), 4096 * (1 + 3 + 1));
        let again = check_hash_file(&data[..], data.len() as u64, &area.bytes).unwrap();
        assert_eq!(again, area.verity);
        let mut other = data.clone();
        other[5000] ^= 1;
        assert!(matches!(
            check_hash_file(&other[..], other.len() as u64, &area.bytes),
            Err(VerityError::Mismatch)
        ));
    }

    #[test]
    fn the_root_of_one_level_is_the_hash_of_its_block() {
        let data = image(2);
        let area = format(&data[..], 8192, 4096, b"", [0; 16]).unwrap();
        let mut level = Vec::new();
        level.extend_from_slice(&hash_block(b"", &data[..4096]).0);
        level.extend_from_slice(&hash_block(b"", &data[4096..]).0);
        level.resize(4096, 0);
        assert_eq!(&area.bytes[4096..], &level[..]);
        assert_eq!(area.verity.root_hash(), hash_block(b"", &level));
    }

    #[test]
    fn an_image_of_partial_blocks_is_refused() {
        let data = vec![0u8; 5000];
        assert!(matches!(
            format(&data[..], 5000, 4096, b"", [0; 16]),
            Err(VerityError::Image(_))
        ));
    }
}
