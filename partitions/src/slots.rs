//! A disk and its A/B slot pairs, found by partition name (`<name>-a` / `<name>-b`).

use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use crate::error::{Error, LayoutError, Result};
use crate::io::{BlockDevice, FileDisk, SubDevice};
use crate::model::SlotId;
use crate::table::{GptTable, TableCopy};

/// The default slot pair name: `root-a` / `root-b`.
pub const DEFAULT_PAIR: &str = "root";

/// A disk (image file or block device) with a valid GPT.
#[derive(Debug, Clone)]
pub struct Disk {
    dev: Arc<dyn BlockDevice>,
    table: GptTable,
}

/// One slot: a partition of the disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Slot {
    /// A or B.
    pub id: SlotId,
    /// Partition name (`root-a`).
    pub name: String,
    /// 1-based GPT entry number (as `sgdisk -i` / `cgpt -i` count).
    pub index: u32,
    /// The partition's unique GUID, the kernel's `root=PARTUUID=`.
    pub partuuid: Uuid,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The two slots of a pair, of equal size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotPair {
    /// Pair name (`root`).
    pub name: String,
    a: Slot,
    b: Slot,
}

impl SlotPair {
    /// One slot.
    pub fn slot(&self, id: SlotId) -> &Slot {
        match id {
            SlotId::A => &self.a,
            SlotId::B => &self.b,
        }
    }

    /// Both slots, A first.
    pub fn slots(&self) -> [&Slot; 2] {
        [&self.a, &self.b]
    }

    /// Which slot has this PARTUUID (how the booted slot is found from `root=PARTUUID=`).
    pub fn by_partuuid(&self, partuuid: &Uuid) -> Option<SlotId> {
        self.slots()
            .into_iter()
            .find(|s| s.partuuid == *partuuid)
            .map(|s| s.id)
    }

    /// Size of each slot in bytes.
    pub fn slot_size(&self) -> u64 {
        self.a.size
    }
}

impl Disk {
    /// Open an image file or block device read-write and read its GPT.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let dev = FileDisk::open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Self::from_device(Arc::new(dev))
    }

    /// Open read-only (boot-state writes through this disk fail).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let dev = FileDisk::open_read_only(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Self::from_device(Arc::new(dev))
    }

    /// Read the GPT of any device.
    pub fn from_device(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        let table = GptTable::read(dev.as_ref())?;
        Ok(Self { dev, table })
    }

    /// The device.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// The table as read when the disk was opened.
    pub fn table(&self) -> &GptTable {
        &self.table
    }

    /// Whether the primary GPT was damaged and the backup is in use (also logged as a
    /// warning). The next boot-state write repairs it.
    pub fn using_backup_gpt(&self) -> bool {
        self.table.source() == TableCopy::Backup
    }

    /// Find the pair `<name>-a` / `<name>-b`.
    pub fn slots(&self, name: &str) -> Result<SlotPair> {
        let find = |id: SlotId| -> Result<Slot> {
            let label = format!("{name}-{id}");
            let found: Vec<_> = self
                .table
                .entries()
                .iter()
                .filter(|e| e.name == label)
                .collect();
            match found.as_slice() {
                [e] => {
                    let ss = self.table.sector_size();
                    Ok(Slot {
                        id,
                        name: label,
                        index: e.index,
                        partuuid: e.unique_guid,
                        type_guid: e.type_guid,
                        offset: e.first_lba * ss,
                        size: (e.last_lba - e.first_lba + 1) * ss,
                    })
                }
                [] => Err(LayoutError::MissingSlot {
                    name: label,
                    present: self
                        .table
                        .entries()
                        .iter()
                        .map(|e| format!("{:?}", e.name))
                        .collect::<Vec<_>>()
                        .join(", "),
                }
                .into()),
                many => Err(LayoutError::DuplicateSlot {
                    name: label,
                    indices: many.iter().map(|e| e.index).collect(),
                }
                .into()),
            }
        };
        let (a, b) = (find(SlotId::A)?, find(SlotId::B)?);
        if a.size != b.size {
            return Err(LayoutError::SizeMismatch {
                a: a.name,
                a_size: a.size,
                b: b.name,
                b_size: b.size,
            }
            .into());
        }
        Ok(SlotPair {
            name: name.to_string(),
            a,
            b,
        })
    }

    /// A bounds-checked device for one slot (offsets relative to the slot's start): the
    /// updater writes images through this and can never touch another partition.
    pub fn slot_device(&self, slot: &Slot) -> Result<Arc<dyn BlockDevice>> {
        let sub = SubDevice::new(self.dev.clone(), slot.offset, slot.size)
            .map_err(|e| Error::io(format!("opening slot {}", slot.name), e))?;
        Ok(Arc::new(sub))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::table::tests::{small_disk, write_raw_both};

    #[test]
    fn finds_the_default_pair() {
        let d = small_disk();
        let disk = Disk::from_device(Arc::new(d)).unwrap();
        let pair = disk.slots(DEFAULT_PAIR).unwrap();
        assert_eq!(pair.slot(SlotId::A).name, "root-a");
        assert_eq!(pair.slot(SlotId::A).index, 2);
        assert_eq!(pair.slot(SlotId::B).index, 3);
        assert_eq!(pair.slot_size(), 8 << 20);
        let b = pair.slot(SlotId::B);
        assert_eq!(pair.by_partuuid(&b.partuuid), Some(SlotId::B));
        assert!(!disk.using_backup_gpt());
        let missing = disk.slots("kernel").unwrap_err();
        assert!(
            matches!(&missing, Error::Layout(LayoutError::MissingSlot { name, .. }) if name == "kernel-a"),
            "{missing}"
        );
    }

    #[test]
    fn slot_device_is_the_partition() {
        let d = small_disk();
        let disk = Disk::from_device(Arc::new(d.clone())).unwrap();
        let pair = disk.slots("root").unwrap();
        let b = pair.slot(SlotId::B);
        let dev = disk.slot_device(b).unwrap();
        dev.write_at(b"hello", 0).unwrap();
        assert!(dev.write_at(b"x", b.size).is_err());
        let mut buf = [0u8; 5];
        d.read_at(&mut buf, b.offset).unwrap();
        assert_eq!(&buf, b"hello");
    }

    fn rename_entry(d: &MemDiskAlias, index: u32, name: &str, last_lba_delta: i64) {
        let t = GptTable::read(d).unwrap();
        let mut array = vec![0u8; t.header().array_bytes() as usize];
        d.read_at(&mut array, t.header().entries_lba * 512).unwrap();
        let base = (index as usize - 1) * 128;
        let mut units: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        units.resize(72, 0);
        array[base + 56..base + 128].copy_from_slice(&units);
        let last = u64::from_le_bytes(array[base + 40..base + 48].try_into().unwrap());
        let last = last.checked_add_signed(last_lba_delta).unwrap();
        array[base + 40..base + 48].copy_from_slice(&last.to_le_bytes());
        write_raw_both(d, &t, &array);
    }
    type MemDiskAlias = crate::io::MemDisk;

    #[test]
    fn duplicate_and_mismatched_slots_are_refused() {
        let d = small_disk();
        rename_entry(&d, 4, "root-b", 0);
        let disk = Disk::from_device(Arc::new(d)).unwrap();
        let err = disk.slots("root").unwrap_err();
        assert!(
            matches!(&err, Error::Layout(LayoutError::DuplicateSlot { indices, .. }) if indices == &vec![3, 4]),
            "{err}"
        );

        let d = small_disk();
        rename_entry(&d, 3, "root-b", -8);
        let disk = Disk::from_device(Arc::new(d)).unwrap();
        let err = disk.slots("root").unwrap_err();
        assert!(
            matches!(err, Error::Layout(LayoutError::SizeMismatch { .. })),
            "{err}"
        );
    }
}
