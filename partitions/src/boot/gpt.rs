//! The `gpt` backend: ChromeOS boot attributes in the GPT entries of the two slots,
//! bit-for-bit as `cgpt` and vboot firmware use them:
//! bits 48–51 priority, 52–55 tries left, 56 successful. Other attribute bits are kept.
//! Writes go through [`crate::table::update_attributes`] (both copies, power-safe order).
//!
//! Transitions (as ChromeOS update_engine and `chromeos-setgoodkernel` do them):
//! * `set_trial(s, n)`: `s` priority 15, `n` tries, not successful; the other slot's priority
//!   is lowered to at most 14 (kept if lower) in the same table write;
//! * `mark_good(s)`: successful, tries 0, priority kept;
//! * `mark_bad(s)`: tries 0, not successful, priority kept (never picked again; the same
//!   state as a trial whose tries ran out, as systemd-bless-boot's `+0-N` is);
//! * `set_unbootable(s)`: priority 0, tries 0, not successful (update_engine's "unbootable").

use std::sync::Arc;

use super::{BackendKind, BootControl, BootFiles, SlotBootState, SlotId};
use crate::error::{Error, Result, UsageError};
use crate::io::BlockDevice;
use crate::model::check_nibble;
use crate::slots::SlotPair;
use crate::table::{update_attributes, Entry, GptTable};
use uuid::Uuid;

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_BIT: u32 = 56;
/// The bits this backend owns.
pub const CHROMEOS_MASK: u64 = 0x1FF << PRIORITY_SHIFT;

/// Decode the ChromeOS fields of a GPT attribute value.
pub fn decode(attributes: u64) -> SlotBootState {
    SlotBootState {
        priority: ((attributes >> PRIORITY_SHIFT) & 0xF) as u8,
        tries_left: ((attributes >> TRIES_SHIFT) & 0xF) as u8,
        successful: (attributes >> SUCCESSFUL_BIT) & 1 == 1,
    }
}

/// Replace the ChromeOS fields of `attributes` with `state`, keeping every other bit.
pub fn encode(attributes: u64, state: SlotBootState) -> u64 {
    (attributes & !CHROMEOS_MASK)
        | (u64::from(state.priority & 0xF) << PRIORITY_SHIFT)
        | (u64::from(state.tries_left & 0xF) << TRIES_SHIFT)
        | (u64::from(state.successful) << SUCCESSFUL_BIT)
}

/// The GPT entries of a slot pair: their attribute values, read fresh and rewritten together
/// (this backend's state and the backend mark of [`super::mark`] live there).
#[derive(Debug, Clone)]
pub(crate) struct PairEntries {
    dev: Arc<dyn BlockDevice>,
    index: [u32; 2],
}

impl PairEntries {
    pub(crate) fn new(dev: Arc<dyn BlockDevice>, pair: &SlotPair) -> Self {
        Self {
            dev,
            index: [pair.slot(SlotId::A).index, pair.slot(SlotId::B).index],
        }
    }

    /// The 1-based entry numbers, A then B.
    pub(crate) fn indices(&self) -> [u32; 2] {
        self.index
    }

    /// The attribute values of both entries, A then B.
    pub(crate) fn read(&self) -> Result<[u64; 2]> {
        self.each(|e| e.attributes)
    }

    /// The unique GUIDs (PARTUUIDs) of both entries, A then B, read now: the agent may have
    /// set the target's since the pair was found (docs/DESIGN.md §5.2).
    pub(crate) fn partuuids(&self) -> Result<[Uuid; 2]> {
        self.each(|e| e.unique_guid)
    }

    /// `field` of both entries, A then B, from the table as it is on the disk now.
    fn each<T>(&self, field: impl Fn(&Entry) -> T) -> Result<[T; 2]> {
        let table = GptTable::read(self.dev.as_ref())?;
        let value = |index: u32| {
            table.entry(index).map(&field).ok_or_else(|| {
                Error::io(
                    format!("reading GPT entry {index}"),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "the slot's entry is gone"),
                )
            })
        };
        let [a, b] = self.index;
        Ok([value(a)?, value(b)?])
    }

    /// Let `f` change both values; write the changed ones in one table update.
    pub(crate) fn modify(&self, f: impl FnOnce(&mut [u64; 2])) -> Result<()> {
        let before = self.read()?;
        let mut after = before;
        f(&mut after);
        let updates: Vec<(u32, u64)> = self
            .index
            .into_iter()
            .zip(before.into_iter().zip(after))
            .filter(|(_, (old, new))| old != new)
            .map(|(index, (_, new))| (index, new))
            .collect();
        if updates.is_empty() {
            return Ok(());
        }
        update_attributes(self.dev.as_ref(), &updates).map(|_| ())
    }
}

/// Boot state in the GPT attribute bits of a slot pair.
#[derive(Debug, Clone)]
pub struct GptBootControl {
    entries: PairEntries,
}

impl GptBootControl {
    /// For the pair's entries on `dev`.
    pub fn new(dev: Arc<dyn BlockDevice>, pair: &SlotPair) -> Self {
        Self {
            entries: PairEntries::new(dev, pair),
        }
    }

    /// Apply `f` to both slots' states and write them in one table update.
    fn modify(&self, f: impl FnOnce(&mut [SlotBootState; 2])) -> Result<()> {
        self.entries.modify(|attrs| {
            let mut states = attrs.map(decode);
            f(&mut states);
            let [a, b] = attrs;
            let [sa, sb] = states;
            *a = encode(*a, sa);
            *b = encode(*b, sb);
        })
    }
}

fn at(states: &mut [SlotBootState; 2], slot: SlotId) -> &mut SlotBootState {
    let [a, b] = states;
    match slot {
        SlotId::A => a,
        SlotId::B => b,
    }
}

impl BootControl for GptBootControl {
    fn kind(&self) -> BackendKind {
        BackendKind::Gpt
    }

    fn boot_files(&self) -> Option<BootFiles> {
        None
    }

    fn state(&self, slot: SlotId) -> Result<SlotBootState> {
        let [a, b] = self.entries.read()?;
        Ok(decode(match slot {
            SlotId::A => a,
            SlotId::B => b,
        }))
    }

    fn set_state(&self, slot: SlotId, state: SlotBootState) -> Result<()> {
        check_nibble("priority", state.priority)?;
        check_nibble("tries", state.tries_left)?;
        self.modify(|s| *at(s, slot) = state)
    }

    fn set_unbootable(&self, slot: SlotId) -> Result<()> {
        self.modify(|s| *at(s, slot) = SlotBootState::UNBOOTABLE)
    }

    fn set_trial(&self, slot: SlotId, tries: u8) -> Result<()> {
        check_nibble("tries", tries)?;
        if tries == 0 {
            return Err(UsageError::ZeroTries.into());
        }
        self.modify(|s| {
            let other = at(s, slot.other());
            other.priority = other.priority.min(14);
            *at(s, slot) = SlotBootState {
                priority: 15,
                tries_left: tries,
                successful: false,
            };
        })
    }

    fn mark_good(&self, slot: SlotId) -> Result<()> {
        self.modify(|s| {
            let me = at(s, slot);
            me.successful = true;
            me.tries_left = 0;
        })
    }

    fn mark_bad(&self, slot: SlotId) -> Result<()> {
        self.modify(|s| {
            let me = at(s, slot);
            me.successful = false;
            me.tries_left = 0;
        })
    }

    fn record_boot_attempt(&self, slot: SlotId) -> Result<()> {
        self.modify(|s| {
            let me = at(s, slot);
            if !me.successful {
                me.tries_left = me.tries_left.saturating_sub(1);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::slots::Disk;
    use crate::table::tests::small_disk;

    #[test]
    fn encode_decode_roundtrip_keeps_other_bits() {
        for p in 0..16 {
            for t in 0..16 {
                for ok in [false, true] {
                    let st = SlotBootState::new(p, t, ok).unwrap();
                    let other = 0xFE00_FFFF_FFFF_FFFF_u64 & !CHROMEOS_MASK;
                    let v = encode(other, st);
                    assert_eq!(decode(v), st);
                    assert_eq!(v & !CHROMEOS_MASK, other);
                }
            }
        }
        // cgpt's example: priority 5, tries 3, successful 1 -> 0x135 << 48
        assert_eq!(
            encode(0, SlotBootState::new(5, 3, true).unwrap()),
            0x135 << 48
        );
    }

    #[test]
    fn transitions() {
        let d = small_disk();
        let disk = Disk::from_device(Arc::new(d)).unwrap();
        let bc = GptBootControl::new(disk.device().clone(), &disk.slots("root").unwrap());
        bc.set_state(SlotId::A, SlotBootState::new(15, 0, true).unwrap())
            .unwrap();
        bc.set_trial(SlotId::B, 3).unwrap();
        assert_eq!(
            bc.state(SlotId::A).unwrap(),
            SlotBootState::new(14, 0, true).unwrap()
        );
        assert_eq!(
            bc.state(SlotId::B).unwrap(),
            SlotBootState::new(15, 3, false).unwrap()
        );
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::B));
        bc.mark_good(SlotId::B).unwrap();
        assert_eq!(
            bc.state(SlotId::B).unwrap(),
            SlotBootState::new(15, 0, true).unwrap()
        );
        bc.mark_bad(SlotId::B).unwrap();
        assert_eq!(
            bc.state(SlotId::B).unwrap(),
            SlotBootState::new(15, 0, false).unwrap()
        );
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::A));
        bc.set_unbootable(SlotId::B).unwrap();
        assert_eq!(bc.state(SlotId::B).unwrap(), SlotBootState::UNBOOTABLE);
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::A));
        assert!(bc.set_trial(SlotId::B, 0).is_err());
        assert!(bc.set_trial(SlotId::B, 16).is_err());
    }
}
