//! A dm-verity root as a manifest signs it (FORMAT §3.3): the image is the filesystem
//! followed by its hash area, in the layout `veritysetup format` writes with a superblock
//! (version 1, SHA-256, the salt hashed before each block), so the kernel reads it with
//! `--hash-offset` = the data size. The node writes and hash-checks those bytes like any other
//! chunk; this module validates the parameters and checks that a command line's `roothash=`
//! names the same tree, and its `PARTUUID=`s the partition systemd's convention derives
//! from the root hash ([`partuuid`]).

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// Length of the veritysetup superblock; it takes one whole hash block.
pub const SUPERBLOCK_LEN: usize = 512;
/// Longest salt the superblock holds.
pub const MAX_SALT: usize = 256;
/// Smallest block size the kernel's dm-verity accepts (a sector).
pub const MIN_BLOCK: u32 = 512;
/// Largest block size accepted: every architecture's page holds it, and dm-verity needs a
/// block within one page.
pub const MAX_BLOCK: u32 = 4096;
/// Length of a SHA-256 digest.
const DIGEST_LEN: u64 = 32;
/// The kernel parameter naming the root hash (systemd-veritysetup-generator).
pub const ROOTHASH_PARAM: &str = "roothash=";
/// The kernel parameters whose `PARTUUID=` value must be the partition the root hash
/// derives ([`partuuid`]): the root itself, and the data and hash devices of the mapping
/// (systemd-veritysetup-generator; in a Tandem slot both are the slot's partition).
pub const PARTUUID_PARAMS: [&str; 3] = [
    "root=",
    "systemd.verity_root_data=",
    "systemd.verity_root_hash=",
];

/// The partition UUID systemd derives from a verity root hash: its first 128 bits, in
/// order, as a UUID (`01234567…` is `01234567-…`; no version bits are set).
/// systemd-veritysetup-generator looks for the data partition there when the command line
/// names no device, and systemd-repart and systemd-dissect give and expect the data
/// partition that UUID. The agent sets the target slot's GPT unique GUID to it
/// (docs/DESIGN.md §5.2), so one fixed command line finds the root in whichever slot holds it.
pub fn partuuid(root_hash: &Sha256Digest) -> uuid::Uuid {
    let mut first = [0u8; 16];
    for (to, from) in first.iter_mut().zip(root_hash.0) {
        *to = from;
    }
    uuid::Uuid::from_bytes(first)
}

/// The `PARTUUID=` values of the parameters of [`PARTUUID_PARAMS`] on `cmdline`, with the
/// parameter each came from (`root=`), in order.
pub fn partuuid_params(cmdline: &str) -> impl Iterator<Item = (&'static str, &str)> {
    cmdline.split_ascii_whitespace().filter_map(|word| {
        PARTUUID_PARAMS.into_iter().find_map(|param| {
            let value = word.strip_prefix(param)?.strip_prefix("PARTUUID=")?;
            Some((param, value))
        })
    })
}

/// The kernel command line that sets the root up from a Tandem slot with systemd in the
/// initramfs: the mapping of the partition [`partuuid`] names (data, then the hash area at
/// `hash-offset`), checked against `roothash=`, mounted read-only as the root.
pub fn suggested_cmdline(verity: &Verity) -> String {
    let uuid = partuuid(&verity.root_hash());
    format!(
        "roothash={} systemd.verity_root_data=PARTUUID={uuid} \
         systemd.verity_root_hash=PARTUUID={uuid} \
         systemd.verity_root_options=hash-offset={} root=/dev/mapper/root ro",
        verity.root_hash(),
        verity.data_size()
    )
}

/// Wire form of `verity` (FORMAT §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §3.3).
#[allow(missing_docs)]
pub struct VerityDoc {
    pub data_block_size: u32,
    pub data_size: u64,
    pub hash_block_size: u32,
    pub hash_size: u64,
    pub root_hash: Sha256Digest,
    pub salt: String,
}

/// Validated dm-verity parameters of an image: the first `data_size` bytes are the data, the
/// `hash_size` bytes after them the superblock and the hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    data_block_size: u32,
    hash_block_size: u32,
    data_size: u64,
    hash_size: u64,
    root_hash: Sha256Digest,
    salt: Vec<u8>,
}

impl Verity {
    /// Checks `doc` against FORMAT §3.3 for an image of `image_size` bytes: block sizes,
    /// a data size of whole blocks, a hash area exactly as long as the tree of that data
    /// (with its superblock), the two tiling the image, a salt of at most 256 bytes.
    pub fn from_doc(doc: &VerityDoc, image_size: u64) -> Result<Verity, String> {
        for (name, size) in [
            ("data_block_size", doc.data_block_size),
            ("hash_block_size", doc.hash_block_size),
        ] {
            if !size.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&size) {
                return Err(format!(
                    "{name} {size} is not a power of two from {MIN_BLOCK} to {MAX_BLOCK}"
                ));
            }
        }
        let data_block = u64::from(doc.data_block_size);
        if doc.data_size == 0 || doc.data_size % data_block != 0 {
            return Err(format!(
                "data_size {} is not a positive multiple of data_block_size {data_block}",
                doc.data_size
            ));
        }
        let want = hash_area_size(doc.data_size / data_block, doc.hash_block_size);
        if doc.hash_size != want {
            return Err(format!(
                "hash_size {}, but the tree of {} data bytes takes {want}",
                doc.hash_size, doc.data_size
            ));
        }
        if doc.data_size.checked_add(doc.hash_size) != Some(image_size) {
            return Err(format!(
                "data_size {} and hash_size {} do not add up to the image's {image_size} bytes",
                doc.data_size, doc.hash_size
            ));
        }
        let salt = parse_salt(&doc.salt)?;
        Ok(Verity {
            data_block_size: doc.data_block_size,
            hash_block_size: doc.hash_block_size,
            data_size: doc.data_size,
            hash_size: doc.hash_size,
            root_hash: doc.root_hash,
            salt,
        })
    }

    /// The wire form.
    pub fn to_doc(&self) -> VerityDoc {
        VerityDoc {
            data_block_size: self.data_block_size,
            data_size: self.data_size,
            hash_block_size: self.hash_block_size,
            hash_size: self.hash_size,
            root_hash: self.root_hash,
            salt: hex::encode(&self.salt),
        }
    }

    /// The root hash (what `roothash=` names).
    pub fn root_hash(&self) -> Sha256Digest {
        self.root_hash
    }
    /// The salt hashed before every block.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
    /// The data's length: where the hash area starts (`--hash-offset`).
    pub fn data_size(&self) -> u64 {
        self.data_size
    }
    /// The hash area's length (superblock and tree).
    pub fn hash_size(&self) -> u64 {
        self.hash_size
    }
    /// Data block size.
    pub fn data_block_size(&self) -> u32 {
        self.data_block_size
    }
    /// Hash block size.
    pub fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }
}

/// A salt in lowercase hex (possibly empty), at most [`MAX_SALT`] bytes.
pub fn parse_salt(text: &str) -> Result<Vec<u8>, String> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("salt is not lowercase hex".into());
    }
    let salt = hex::decode(text).map_err(|e| format!("salt is not hex: {e}"))?;
    if salt.len() > MAX_SALT {
        return Err(format!("salt of {} bytes, at most {MAX_SALT}", salt.len()));
    }
    Ok(salt)
}

/// How many hashes one hash block holds: the largest power of two of digests that fits
/// (veritysetup's `hash_per_block_bits`).
pub fn hashes_per_block_bits(hash_block_size: u32) -> u32 {
    (u64::from(hash_block_size) / DIGEST_LEN).max(1).ilog2()
}

/// The number of hash blocks of each level of the tree over `data_blocks` blocks, from the
/// level that hashes the data (index 0) up to the one of a single block; empty when there is
/// a single data block (its hash is the root hash).
pub fn level_blocks(data_blocks: u64, hash_block_size: u32) -> Vec<u64> {
    let bits = hashes_per_block_bits(hash_block_size);
    let mut levels = Vec::new();
    let mut below = data_blocks;
    while below > 1 {
        below = below.div_ceil(1u64 << bits);
        levels.push(below);
    }
    levels
}

/// The hash area's length for `data_blocks` data blocks: the superblock's block and every
/// level's blocks.
pub fn hash_area_size(data_blocks: u64, hash_block_size: u32) -> u64 {
    let blocks: u64 = level_blocks(data_blocks, hash_block_size).iter().sum();
    (blocks + 1).saturating_mul(u64::from(hash_block_size))
}

/// The values of every `roothash=` on a kernel command line, in order.
pub fn roothash_params(cmdline: &str) -> impl Iterator<Item = &str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.strip_prefix(ROOTHASH_PARAM))
}

/// Checks that every `roothash=` on `cmdline` names `verity`'s root hash, and that there is
/// none when the image has no verity tree (such a command line could not boot it); and,
/// with a tree, that every `PARTUUID=` of [`PARTUUID_PARAMS`] names the partition the root
/// hash derives ([`partuuid`]): the slot the agent installs it to has that PARTUUID, and no
/// other partition does. A command line without them passes: it claims nothing.
pub fn check_cmdline(cmdline: &str, verity: Option<&Verity>) -> Result<(), String> {
    for value in roothash_params(cmdline) {
        match verity {
            None => {
                return Err(format!(
                    "the command line says roothash={value}, but the image has no verity tree"
                ))
            }
            Some(v) if value != v.root_hash().to_hex() => {
                return Err(format!(
                "the command line says roothash={value}, but the image's verity root hash is {}",
                v.root_hash()
            ))
            }
            Some(_) => {}
        }
    }
    let Some(v) = verity else { return Ok(()) };
    let derived = partuuid(&v.root_hash());
    match partuuid_params(cmdline)
        .find(|(_, value)| uuid::Uuid::parse_str(value).ok() != Some(derived))
    {
        Some((param, value)) => Err(format!(
            "the command line says {param}PARTUUID={value}, but the slot of the image's verity \
             root hash {} is PARTUUID={derived} (its first 128 bits)",
            v.root_hash()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(data_size: u64, hash_size: u64) -> VerityDoc {
        VerityDoc {
            data_block_size: 4096,
            data_size,
            hash_block_size: 4096,
            hash_size,
            root_hash: Sha256Digest([7; 32]),
            salt: "00ff".into(),
        }
    }

    #[test]
    fn the_tree_has_one_level_per_128_fold() {
        assert_eq!(level_blocks(1, 4096), Vec::<u64>::new());
        assert_eq!(level_blocks(2, 4096), vec![1]);
        assert_eq!(level_blocks(128, 4096), vec![1]);
        assert_eq!(level_blocks(129, 4096), vec![2, 1]);
        assert_eq!(level_blocks(16384, 4096), vec![128, 1]);
        assert_eq!(level_blocks(16385, 4096), vec![129, 2, 1]);
        assert_eq!(hash_area_size(16384, 4096), 130 * 4096);
    }

    #[test]
    fn sizes_must_tile_the_image() {
        let size = 16384 * 4096;
        let good = doc(size, 130 * 4096);
        let v = Verity::from_doc(&good, size + 130 * 4096).unwrap();
        assert_eq!(v.to_doc(), good);
        assert!(Verity::from_doc(&good, size).is_err());
        assert!(Verity::from_doc(&doc(size, 129 * 4096), size + 129 * 4096).is_err());
        assert!(Verity::from_doc(&doc(size + 1, 130 * 4096), size + 1 + 130 * 4096).is_err());
        let mut odd = good.clone();
        odd.hash_block_size = 3000;
        assert!(Verity::from_doc(&odd, size + 130 * 4096).is_err());
        let mut upper = good;
        upper.salt = "00FF".into();
        assert!(Verity::from_doc(&upper, size + 130 * 4096).is_err());
    }

    #[test]
    fn a_cmdline_must_name_the_same_root_hash() {
        let v = Verity::from_doc(&doc(8192, 8192), 16384).unwrap();
        let hash = v.root_hash().to_hex();
        assert!(check_cmdline(&format!("ro roothash={hash} quiet"), Some(&v)).is_ok());
        assert!(check_cmdline("ro quiet", Some(&v)).is_ok());
        assert!(check_cmdline("ro quiet", None).is_ok());
        let other = "ab".repeat(32);
        assert!(check_cmdline(&format!("roothash={other}"), Some(&v)).is_err());
        assert!(check_cmdline(&format!("roothash={hash} roothash={other}"), Some(&v)).is_err());
        assert!(check_cmdline(&format!("roothash={hash}"), None).is_err());
    }

    /// systemd's derivation (veritysetup-generator's `determine_devices`: the first 16
    /// bytes of the root hash, formatted in order), on a known vector.
    #[test]
    fn the_partuuid_is_the_first_128_bits_of_the_root_hash() {
        let hash: Sha256Digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            .parse()
            .unwrap();
        let uuid = partuuid(&hash);
        assert_eq!(uuid.to_string(), "9f86d081-884c-7d65-9a2f-eaa0c55ad015");
        assert_eq!(uuid.as_bytes()[..], hash.0[..16]);
    }

    #[test]
    fn a_cmdline_must_name_the_derived_partuuid() {
        let v = Verity::from_doc(&doc(8192, 8192), 16384).unwrap();
        let uuid = partuuid(&v.root_hash());
        let upper = uuid.to_string().to_ascii_uppercase();
        for good in [
            format!("root=PARTUUID={uuid} ro"),
            format!("systemd.verity_root_data=PARTUUID={upper}"),
            suggested_cmdline(&v),
            "root=/dev/mapper/root".into(),
        ] {
            assert!(check_cmdline(&good, Some(&v)).is_ok(), "{good}");
        }
        let other = uuid::Uuid::from_bytes([9; 16]);
        for bad in [
            format!("root=PARTUUID={other}"),
            format!("systemd.verity_root_hash=PARTUUID={other}"),
            "systemd.verity_root_data=PARTUUID=junk".into(),
        ] {
            let err = check_cmdline(&bad, Some(&v)).unwrap_err();
            assert!(err.contains(&uuid.to_string()), "{err}");
        }
        // Without a tree, a PARTUUID names whatever slot the loader says.
        assert!(check_cmdline(&format!("root=PARTUUID={other}"), None).is_ok());
        let line = suggested_cmdline(&v);
        assert!(
            line.contains(&format!("roothash={}", v.root_hash())),
            "{line}"
        );
        assert!(line.contains("hash-offset=8192"), "{line}");
    }
}
