//! The block size of an ext2/3/4 filesystem image, read from its superblock (1024 bytes in:
//! the magic 0xEF53 at byte 56, `s_log_block_size` at byte 24, the block size being
//! 1024 << it). `tandem-signer sign` warns when the image's blocks are smaller than the cuts
//! of its chunking: `mke2fs` gives images under 512 MiB 1 KiB blocks unless told `-b 4096`,
//! and data that moves by 1 KiB blocks is not found again by 4 KiB chunks ([`small_blocks`]).
//! Display only: nothing trusts what this returns.

use crate::chunking::{Chunking, ALIGN};
use crate::uki::{u16_at, u32_at, ReadAt};

/// Where the superblock starts.
const SUPERBLOCK_AT: u64 = 1024;
/// The bytes of it read: up to the magic.
const SUPERBLOCK_LEN: usize = 58;
/// `s_magic`.
const EXT_MAGIC: u16 = 0xEF53;
/// Largest `s_log_block_size` mke2fs makes (64 KiB blocks).
const MAX_LOG: u32 = 6;

/// The block size of the ext2/3/4 filesystem that `read_at` reads, if it is one.
pub fn block_size(read_at: &mut ReadAt<'_>) -> Option<u32> {
    let sb = read_at(SUPERBLOCK_AT, SUPERBLOCK_LEN)?;
    if u16_at(&sb, 56)? != EXT_MAGIC {
        return None;
    }
    let log = u32_at(&sb, 24)?;
    (log <= MAX_LOG).then(|| 1024 << log)
}

/// An ext2/3/4 image whose blocks are smaller than the granularity of its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmallBlocks {
    /// The filesystem's block size.
    pub block: u32,
    /// The chunks' granularity: the fixed chunk size, or the [`ALIGN`] boundaries
    /// content-defined cuts fall on.
    pub grain: u32,
}

/// Whether the image `read_at` reads is an ext2/3/4 filesystem of blocks smaller than the
/// granularity of `chunking`: data a build moves by smaller blocks is not found again.
pub fn small_blocks(read_at: &mut ReadAt<'_>, chunking: Chunking) -> Option<SmallBlocks> {
    let grain = if chunking.is_fixed() {
        chunking.max
    } else {
        ALIGN
    };
    let block = block_size(read_at)?;
    (block < grain).then_some(SmallBlocks { block, grain })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(log: u32, magic: u16) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[1024 + 24..1024 + 28].copy_from_slice(&log.to_le_bytes());
        b[1024 + 56..1024 + 58].copy_from_slice(&magic.to_le_bytes());
        b
    }

    fn read(b: &[u8]) -> Option<u32> {
        block_size(&mut |at: u64, len: usize| {
            b.get(at as usize..at as usize + len).map(<[u8]>::to_vec)
        })
    }

    #[test]
    fn reads_the_block_size_of_an_ext_superblock_only() {
        assert_eq!(read(&image(0, EXT_MAGIC)), Some(1024));
        assert_eq!(read(&image(2, EXT_MAGIC)), Some(4096));
        assert_eq!(read(&image(2, 0x1234)), None);
        assert_eq!(read(&image(30, EXT_MAGIC)), None);
        assert_eq!(read(&[0u8; 1000]), None);
    }

    #[test]
    fn blocks_are_small_below_the_fixed_size_or_the_cdc_alignment() {
        let small = |b: &[u8], chunking| {
            small_blocks(
                &mut |at: u64, len: usize| {
                    b.get(at as usize..at as usize + len).map(<[u8]>::to_vec)
                },
                chunking,
            )
        };
        let cdc = Chunking {
            min: 16 << 10,
            avg: 32 << 10,
            max: 128 << 10,
        };
        let (k1, k4) = (image(0, EXT_MAGIC), image(2, EXT_MAGIC));
        let found = |block, grain| Some(SmallBlocks { block, grain });
        assert_eq!(small(&k1, Chunking::fixed(4096)), found(1024, 4096));
        assert_eq!(small(&k4, Chunking::fixed(4096)), None);
        assert_eq!(small(&k4, Chunking::fixed(8192)), found(4096, 8192));
        assert_eq!(small(&k1, cdc), found(1024, ALIGN));
        assert_eq!(small(&k4, cdc), None, "cdc cuts fall on 4 KiB boundaries");
        assert_eq!(small(&image(0, 0x1234), Chunking::fixed(4096)), None);
    }
}
