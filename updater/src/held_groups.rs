//! The groups of a tree index (FORMAT §3.2.1) a node already holds in its running slot, at
//! the group's own offset: their chunk hashes come from the node's own disk, proven by the
//! group's signed entry, and only the other groups' hashes are fetched (docs/DESIGN.md §8
//! "Delta"). An unchanged region of the image costs its table entry, 32 bytes a group, instead
//! of 32 bytes a chunk.

use bundle::index::{TreeGroup, TreeGroups, TreeHead};
use bundle::{Sha256Digest, ZeroDigests};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Follows the chunks of a scan of the running slot, in slot order, against the groups of a
/// tree index, and fills the head with each group whose chunks it saw at the group's offset,
/// with the group's lengths and the hash its entry names.
pub(crate) struct HeldGroups<'h> {
    head: &'h TreeHead,
    groups: TreeGroups<'h>,
    /// The group being matched, where it ends, and the image offset its next chunk must
    /// start at; `None` once the groups are done.
    current: Option<Current>,
    zeros: ZeroDigests,
    /// Groups filled, and their hashes' bytes (not fetched).
    pub(crate) held: u64,
    pub(crate) bytes_saved: u64,
}

struct Current {
    group: TreeGroup,
    end: u64,
    next_offset: u64,
    taken: usize,
    hashes: Vec<Sha256Digest>,
    hasher: Sha256,
    /// A chunk of the slot did not match: the rest of the group is not looked at.
    broken: bool,
}

impl<'h> HeldGroups<'h> {
    pub(crate) fn new(head: &'h TreeHead) -> Result<Self> {
        let groups = head.groups().map_err(Error::verify("the chunk index"))?;
        let mut held = HeldGroups {
            head,
            groups,
            current: None,
            zeros: ZeroDigests::default(),
            held: 0,
            bytes_saved: 0,
        };
        held.advance()?;
        Ok(held)
    }

    /// Moves to the next group with a stored chunk (a group of zeros has no hashes to fetch).
    fn advance(&mut self) -> Result<()> {
        self.current = None;
        for group in self.groups.by_ref() {
            let group = group.map_err(Error::verify("the chunk index"))?;
            if group.entry.is_none() {
                continue;
            }
            self.current = Some(Current {
                next_offset: group.image_offset,
                end: group.end(),
                group,
                taken: 0,
                hashes: Vec::new(),
                hasher: Sha256::new(),
                broken: false,
            });
            break;
        }
        Ok(())
    }

    /// The slot's chunk at `offset`, of `len` bytes, hashing to `sha256`.
    pub(crate) fn observe(&mut self, offset: u64, len: u32, sha256: Sha256Digest) -> Result<()> {
        while self.current.as_ref().is_some_and(|c| offset >= c.end) {
            self.advance()?;
        }
        let zero = self.zeros.of(len) == sha256;
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if current.broken || offset < current.group.image_offset {
            return Ok(());
        }
        let expected = current.group.chunks.get(current.taken).copied();
        if offset != current.next_offset || expected != Some((len, !zero)) {
            current.broken = true;
            return Ok(());
        }
        if !zero {
            current.hasher.update(sha256.0);
            current.hashes.push(sha256);
        }
        current.taken += 1;
        current.next_offset += u64::from(len);
        if current.taken == current.group.chunks.len() {
            self.close()?;
        }
        Ok(())
    }

    /// A group whose every chunk was seen: filled if its hashes hash to its entry.
    fn close(&mut self) -> Result<()> {
        if let Some(current) = self.current.take() {
            let actual = Sha256Digest(current.hasher.finalize().into());
            if Some(actual) == current.group.entry {
                self.head
                    .fill(&current.group, &current.hashes)
                    .map_err(Error::verify("the chunk index"))?;
                self.held += 1;
                self.bytes_saved += current.group.column.end - current.group.column.start;
            }
        }
        self.advance()
    }
}
