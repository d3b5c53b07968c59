//! A second copy of the node's anti-rollback floor, kept in the GPT entries of the slot pair
//! so that it outlives the updater's state directory (docs/DESIGN.md §2, docs/FORMAT.md §11).
//!
//! The floor is an unsigned integer stored in bits 16–47 of the attribute field of *both*
//! slot entries, the same value in each. The GPT is the one structure every disk of every
//! backend has (the `gpt` backend keeps nothing else; grub and systemd-boot keep their files on
//! a filesystem that can be reformatted as easily as the state directory). Bits 48–63 are
//! taken (ChromeOS 48–56, the Discoverable Partitions Specification 59, 60 and 63, the
//! backend [`super::mark`] 61–62) and 57–58 are too few; 16–47 lie in the range UEFI reserves
//! for its own future use, away from its defined bits 0–2 and the low reserved bits it would
//! assign first. Every tool we interoperate with (cgpt, sgdisk, sfdisk, parted) keeps
//! attribute bits it does not know, and firmware ignores them.
//!
//! The record is a *lower bound* of the floor: a floor above `u32::MAX` is stored as
//! `u32::MAX`, so it can never make the node refuse a release its real floor allows.
//! [`FloorRecord::raise`] only ever raises (one power-safe table update through
//! [`crate::table::update_attributes`]: backup copy, sync, primary copy, sync), and
//! [`FloorRecord::read`] takes the higher of the two entries.

use std::sync::Arc;

use super::gpt::PairEntries;
use crate::error::Result;
use crate::io::BlockDevice;
use crate::slots::SlotPair;

const SHIFT: u32 = 16;
const MASK: u64 = (u32::MAX as u64) << SHIFT;

/// The floor held in one attribute value.
pub fn decode(attributes: u64) -> u64 {
    (attributes & MASK) >> SHIFT
}

/// `attributes` with the floor field set to `floor` (saturated to the field), every other
/// bit kept.
pub fn encode(attributes: u64, floor: u64) -> u64 {
    (attributes & !MASK) | (floor.min(u64::from(u32::MAX)) << SHIFT)
}

/// The floor record of one slot pair's GPT entries.
#[derive(Debug, Clone)]
pub struct FloorRecord {
    entries: PairEntries,
}

impl FloorRecord {
    /// The record in the entries of `pair` on `dev`.
    pub fn new(dev: Arc<dyn BlockDevice>, pair: &SlotPair) -> Self {
        Self {
            entries: PairEntries::new(dev, pair),
        }
    }

    /// The recorded floor: the higher of the two entries (0 on a disk that never recorded one).
    pub fn read(&self) -> Result<u64> {
        let [a, b] = self.entries.read()?.map(decode);
        Ok(a.max(b))
    }

    /// Records `floor` in both entries unless both already hold it or more; never lowers.
    pub fn raise(&self, floor: u64) -> Result<()> {
        self.entries.modify(|attrs| {
            for a in attrs.iter_mut() {
                if decode(*a) < floor {
                    *a = encode(*a, floor);
                }
            }
        })
    }

    /// The 1-based GPT entry numbers holding the record, A then B (for messages).
    pub fn indices(&self) -> [u32; 2] {
        self.entries.indices()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::boot::gpt::{GptBootControl, CHROMEOS_MASK};
    use crate::boot::{mark, BackendKind, BootControl, SlotId};
    use crate::io::PowerLossDisk;
    use crate::slots::Disk;
    use crate::table::tests::small_disk;

    #[test]
    fn the_field_round_trips_keeps_other_bits_and_saturates() {
        let others = CHROMEOS_MASK | (0b11 << 61) | 0b111 | (1 << 63);
        for floor in [0, 1, 2, 0xFFFF, 20_261_207, u64::from(u32::MAX)] {
            let attrs = encode(others, floor);
            assert_eq!(decode(attrs), floor);
            assert_eq!(attrs & !MASK, others, "floor {floor} touched other bits");
        }
        // Above the field: a lower bound, never more than the real floor.
        assert_eq!(decode(encode(0, u64::MAX)), u64::from(u32::MAX));
        assert_eq!(decode(encode(0, 1 << 40)), u64::from(u32::MAX));
        // The field is disjoint from the ChromeOS bits and the backend mark.
        assert_eq!(MASK & (CHROMEOS_MASK | (0b11 << 61)), 0);
        assert_eq!(MASK, 0x0000_FFFF_FFFF_0000);
    }

    #[test]
    fn the_record_only_rises_and_survives_every_backend_write() {
        let disk = Disk::from_device(Arc::new(small_disk())).unwrap();
        let pair = disk.slots("root").unwrap();
        let record = FloorRecord::new(disk.device().clone(), &pair);
        assert_eq!(record.read().unwrap(), 0, "a new disk records nothing");
        record.raise(7).unwrap();
        record.raise(3).unwrap();
        assert_eq!(record.read().unwrap(), 7, "never lowered");

        let gpt = GptBootControl::new(disk.device().clone(), &pair);
        gpt.set_trial(SlotId::B, 2).unwrap();
        gpt.mark_good(SlotId::B).unwrap();
        gpt.set_unbootable(SlotId::A).unwrap();
        mark::record(
            &PairEntries::new(disk.device().clone(), &pair),
            BackendKind::Grub,
        )
        .unwrap();
        assert_eq!(
            record.read().unwrap(),
            7,
            "boot state writes keep the floor"
        );
        assert!(
            gpt.state(SlotId::B).unwrap().successful,
            "and the floor keeps them"
        );

        // Entries that disagree (one rewritten by a tool): the higher one counts, and the
        // next raise brings the lower one up.
        let entries = PairEntries::new(disk.device().clone(), &pair);
        entries.modify(|a| a[0] = encode(a[0], 2)).unwrap();
        assert_eq!(record.read().unwrap(), 7);
        record.raise(7).unwrap();
        assert_eq!(entries.read().unwrap().map(decode), [7, 7]);
    }

    /// A cut after every number of writes, keeping each seeded subset of the unsynced ones:
    /// the record holds the old floor or the new one, and a raise that returned is durable.
    #[test]
    fn a_cut_during_a_raise_leaves_the_old_floor_or_the_new() {
        let base = small_disk();
        let pair = Disk::from_device(Arc::new(base.clone()))
            .unwrap()
            .slots("root")
            .unwrap();
        FloorRecord::new(Arc::new(base.clone()), &pair)
            .raise(4)
            .unwrap();
        let mut seen = (0, 0);
        for k in 0..=4 {
            for seed in 0..16 {
                let disk = PowerLossDisk::from_mem(&base);
                disk.cut_after_writes(k);
                let done = FloorRecord::new(Arc::new(disk.clone()), &pair).raise(9);
                assert_eq!(done.is_ok(), k >= 4, "k={k}");
                let after = Arc::new(disk.after_power_cut(seed));
                match FloorRecord::new(after, &pair).read().unwrap() {
                    4 => seen.0 += 1,
                    9 => seen.1 += 1,
                    floor => panic!("k={k} seed={seed}: floor {floor}"),
                }
            }
        }
        assert!(seen.0 > 0 && seen.1 > 0, "{seen:?}");
    }
}
