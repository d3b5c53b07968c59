//! Provisioning: lay out a new A/B disk (the `gpt` crate writes the table) and write a raw
//! image into a slot.
//!
//! Layout, 1 MiB aligned, 512-byte sectors:
//!
//! | # | name | type | size |
//! |---|---|---|---|
//! | 1 | `ESP` | EFI System (C12A7328-F81F-11D2-BA4B-00A0C93EC93B) | `--esp` |
//! | 2 | `root-a` | Linux root x86-64 (4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709) | `--slot-size` |
//! | 3 | `root-b` | Linux root x86-64 | `--slot-size` |
//! | 4 | `state` | Linux filesystem (0FC63DAF-8483-4772-8E79-3D69D8477DE4) | `--state` |
//! | 5, 6, … | `NAME-a`, `NAME-b` | Linux filesystem | `--pair NAME=SIZE`, each pair in order |
//!
//! Further pairs hold the images a release carries beside its root (docs/DESIGN.md §5.1:
//! asset `verity` goes to `verity-a`/`verity-b`); they come after `state`, so the numbers of
//! the first four partitions never change.
//!
//! Factory boot state: both slots unbootable (an empty slot must never be chosen).
//! [`write_image`] with `activate` then makes the written slot the good one
//! (`set_trial(slot, 1)` then `mark_good(slot)`: GPT priority 15, successful; the other
//! slot's priority lowered to at most 14).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::boot::BootControl;
use crate::error::{Error, Result, UsageError};
use crate::io::{BlockDevice, DeviceCursor, FileDisk};
use crate::slots::Slot;

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// Partition sizes in bytes (each a multiple of 1 MiB).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// EFI system partition.
    pub esp: u64,
    /// Each of `root-a` and `root-b`.
    pub slot: u64,
    /// The persistent state partition.
    pub state: u64,
    /// Further slot pairs: `(NAME, size)` makes `NAME-a` and `NAME-b` of `size` each.
    pub pairs: Vec<(String, u64)>,
}

impl Layout {
    /// Sizes for a disk of `disk_size` bytes; `slot: None` splits what the ESP and state
    /// partitions leave between the two slots.
    pub fn for_disk(
        disk_size: u64,
        esp: u64,
        slot: Option<u64>,
        state: u64,
        pairs: Vec<(String, u64)>,
    ) -> Result<Self> {
        let sizes = [("the ESP", esp), ("the state", state)].into_iter();
        for (what, v) in sizes.chain(pairs.iter().map(|(n, v)| (n.as_str(), *v))) {
            if v == 0 || v % MIB != 0 {
                return Err(UsageError::Layout(format!(
                    "{what} size must be a non-zero multiple of 1 MiB"
                ))
                .into());
            }
        }
        check_pair_names(&pairs)?;
        let extra: u64 = pairs.iter().map(|(_, v)| 2 * v).sum();
        // 1 MiB before the first partition, at least 1 MiB after the last (backup GPT).
        let room = disk_size
            .checked_sub(2 * MIB + esp + state + extra)
            .ok_or_else(|| {
                UsageError::Layout(format!(
                    "{disk_size} bytes cannot hold the ESP ({esp}), the state partition ({state}), the further pairs ({extra}) and two slots: choose a larger --size or smaller --esp/--state/--pair"
                ))
            })?;
        let slot = match slot {
            Some(s) => s,
            None => room / 2 / MIB * MIB,
        };
        if slot == 0 || slot % MIB != 0 {
            return Err(UsageError::Layout(
                "the slot size must be a non-zero multiple of 1 MiB".into(),
            )
            .into());
        }
        if 2 * slot > room {
            return Err(UsageError::Layout(format!(
                "two slots of {slot} bytes plus ESP {esp} and state {state} do not fit in {disk_size} bytes"
            ))
            .into());
        }
        Ok(Self {
            esp,
            slot,
            state,
            pairs,
        })
    }

    /// Every partition in table order: name, size, type.
    fn partitions(&self) -> Vec<(String, u64, gpt::partition_types::Type)> {
        let mut parts = vec![
            ("ESP".to_string(), self.esp, gpt::partition_types::EFI),
            (
                "root-a".into(),
                self.slot,
                gpt::partition_types::LINUX_ROOT_X64,
            ),
            (
                "root-b".into(),
                self.slot,
                gpt::partition_types::LINUX_ROOT_X64,
            ),
            ("state".into(), self.state, gpt::partition_types::LINUX_FS),
        ];
        for (name, size) in &self.pairs {
            for slot in ["a", "b"] {
                parts.push((
                    format!("{name}-{slot}"),
                    *size,
                    gpt::partition_types::LINUX_FS,
                ));
            }
        }
        parts
    }
}

/// Pair names: asset names (`proto` rules do not reach this crate, so: ASCII letters, digits,
/// `_` and `.`, not `root`, not `state`, each once; `-` would make `NAME-a` ambiguous).
fn check_pair_names(pairs: &[(String, u64)]) -> Result<()> {
    for (i, (name, _)) in pairs.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        let reason = if !valid {
            "use 1 to 32 ASCII letters, digits, `_` or `.`"
        } else if name == "root" || name == "state" {
            "that name is taken by the standard layout"
        } else if pairs.iter().take(i).any(|(other, _)| other == name) {
            "given twice"
        } else {
            continue;
        };
        return Err(UsageError::Layout(format!("pair `{name}`: {reason}")).into());
    }
    Ok(())
}

fn gpt_err(e: gpt::GptError) -> Error {
    Error::io(
        "writing the partition table",
        std::io::Error::other(e.to_string()),
    )
}

/// Write a protective MBR and a fresh GPT with the Tandem layout on `dev` (whole device).
pub fn lay_out(dev: &Arc<dyn BlockDevice>, layout: &Layout) -> Result<()> {
    let size = dev
        .size()
        .map_err(|e| Error::io("reading the disk size", e))?;
    let sectors = size / SECTOR;
    let parts = layout.partitions();
    let needed = 2 * MIB + parts.iter().map(|(_, size, _)| size).sum::<u64>();
    if needed > size {
        return Err(UsageError::Layout(format!(
            "the layout needs {needed} bytes, the disk has {size}"
        ))
        .into());
    }
    let mut g = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(DeviceCursor::new(dev.clone()), None)
        .map_err(gpt_err)?;
    let mut lba = MIB / SECTOR;
    for (id, (name, bytes, ty)) in (1u32..).zip(parts) {
        g.add_partition_at(&name, id, lba, bytes / SECTOR, ty, 0)
            .map_err(gpt_err)?;
        lba += bytes / SECTOR;
    }
    let mut cursor = g.write().map_err(gpt_err)?;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut cursor).map_err(|e| {
        Error::io(
            "writing the protective MBR",
            std::io::Error::other(e.to_string()),
        )
    })?;
    dev.sync().map_err(|e| Error::io("syncing the new disk", e))
}

/// Create a sparse image file of `size` bytes at `path` (refusing to overwrite) with the
/// Tandem layout.
pub fn create_image(path: &Path, size: u64, layout: &Layout) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    file.set_len(size)
        .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
    drop(file);
    let dev: Arc<dyn BlockDevice> = Arc::new(
        FileDisk::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?,
    );
    lay_out(&dev, layout)
}

/// Copy a raw image into a slot (streamed in 1 MiB blocks; all-zero blocks become
/// [`BlockDevice::zero_range`], so sparse images stay sparse), zero the rest of the slot,
/// sync. Refuses an image larger than the slot before writing anything. With `activate`, the
/// slot then becomes the good slot (`set_trial(slot, 1)` + `mark_good(slot)`).
pub fn write_image(
    slot_dev: &dyn BlockDevice,
    slot: &Slot,
    image: &Path,
    activate: Option<&dyn BootControl>,
) -> Result<u64> {
    let mut file =
        File::open(image).map_err(|e| Error::io(format!("opening {}", image.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", image.display()), e))?
        .len();
    if len > slot.size {
        return Err(UsageError::ImageTooLarge {
            image: len,
            slot: slot.name.clone(),
            slot_size: slot.size,
        }
        .into());
    }
    if let Some(bc) = activate {
        bc.set_unbootable(slot.id)?;
    }
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf)
            .map_err(|e| Error::io(format!("reading {}", image.display()), e))?;
        if n == 0 {
            break;
        }
        if off + n as u64 > slot.size {
            return Err(UsageError::ImageTooLarge {
                image: off + n as u64,
                slot: slot.name.clone(),
                slot_size: slot.size,
            }
            .into());
        }
        let block = buf.get(..n).unwrap_or(&[]);
        let res = if block.iter().all(|&b| b == 0) {
            slot_dev.zero_range(off, n as u64)
        } else {
            slot_dev.write_at(block, off)
        };
        res.map_err(|e| Error::io(format!("writing slot {} at {off}", slot.name), e))?;
        off += n as u64;
    }
    if off < slot.size {
        slot_dev
            .zero_range(off, slot.size - off)
            .map_err(|e| Error::io(format!("zeroing the rest of slot {}", slot.name), e))?;
    }
    slot_dev
        .sync()
        .map_err(|e| Error::io(format!("syncing slot {}", slot.name), e))?;
    if let Some(bc) = activate {
        bc.set_trial(slot.id, 1)?;
        bc.mark_good(slot.id)?;
    }
    Ok(off)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or(&mut [])) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::io::MemDisk;
    use crate::slots::Disk;

    #[test]
    fn further_pairs_follow_the_state_partition() {
        let pairs = vec![("verity".to_string(), 2 * MIB), ("kernel".into(), MIB)];
        let layout = Layout::for_disk(64 * MIB, 4 * MIB, Some(8 * MIB), 4 * MIB, pairs).unwrap();
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDisk::new(64 * MIB));
        lay_out(&dev, &layout).unwrap();
        let disk = Disk::from_device(dev).unwrap();
        let verity = disk.slots("verity").unwrap();
        assert_eq!(verity.slot(crate::SlotId::B).size, 2 * MIB);
        assert_eq!(disk.slots("kernel").unwrap().slot_size(), MIB);
        assert_eq!(disk.slots("root").unwrap().slot_size(), 8 * MIB);
    }

    #[test]
    fn bad_pairs_are_refused_with_the_reason() {
        for (name, size, needle) in [
            ("root", MIB, "taken by the standard layout"),
            ("ver-ity", MIB, "ASCII letters"),
            ("", MIB, "ASCII letters"),
            ("verity", MIB + 1, "multiple of 1 MiB"),
            ("verity", 60 * MIB, "cannot hold"),
        ] {
            let pairs = vec![(name.to_string(), size)];
            let err = Layout::for_disk(64 * MIB, 4 * MIB, None, 4 * MIB, pairs).unwrap_err();
            assert!(err.to_string().contains(needle), "{name}: {err}");
        }
        let twice = vec![("v".to_string(), MIB), ("v".to_string(), MIB)];
        let err = Layout::for_disk(64 * MIB, 4 * MIB, None, 4 * MIB, twice).unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
    }
}
