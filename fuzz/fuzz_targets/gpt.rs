//! A GPT, read from a disk whose bytes are the input (a hostile or damaged disk), with the
//! `root-a`/`root-b` pair and the GPT boot backend on top. When the first byte is odd, the
//! CRCs of both 512-byte-sector copies are recomputed first, so the fuzzer gets past them.
//! Contract: no panic; every entry of a table that reads lies in the usable range and on the
//! disk; a slot pair lies on the disk; the attribute writer's result reads back with only
//! the changed attribute differing.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use partitions::boot::gpt::GptBootControl;
use partitions::io::BlockDevice;
use partitions::table::{update_attributes, GptTable};
use partitions::{BootControl, Disk, DEFAULT_PAIR};
use tandem_fuzz::FuzzDisk;

const SECTOR: usize = 512;

fn le<const N: usize>(d: &[u8], at: usize) -> Option<[u8; N]> {
    d.get(at..at + N)?.try_into().ok()
}

/// Recompute the entry-array and header CRCs of the header at `lba`; returns its
/// alternate LBA.
fn fix_crcs(disk: &mut [u8], lba: usize) -> Option<usize> {
    let at = lba.checked_mul(SECTOR)?;
    let size = u32::from_le_bytes(le(disk, at + 12)?) as usize;
    let size = size.clamp(92, SECTOR);
    let entries_lba = u64::from_le_bytes(le(disk, at + 72)?);
    let count = u32::from_le_bytes(le(disk, at + 80)?) as usize;
    let entry_size = u32::from_le_bytes(le(disk, at + 84)?) as usize;
    let start = usize::try_from(entries_lba).ok()?.checked_mul(SECTOR)?;
    let array = disk.get(start..start.checked_add(count.checked_mul(entry_size)?)?);
    if let Some(array) = array {
        let crc = crc32(array);
        disk.get_mut(at + 88..at + 92)?
            .copy_from_slice(&crc.to_le_bytes());
    }
    disk.get_mut(at + 16..at + 20)?.fill(0);
    let crc = crc32(disk.get(at..at + size)?);
    disk.get_mut(at + 16..at + 20)?
        .copy_from_slice(&crc.to_le_bytes());
    usize::try_from(u64::from_le_bytes(le(disk, at + 32)?)).ok()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

fn check_table(t: &GptTable) {
    let sectors = t.disk_size() / t.sector_size();
    let h = t.header();
    for e in t.entries() {
        assert!(e.first_lba <= e.last_lba, "{e:?}");
        assert!(
            e.first_lba >= h.first_usable && e.last_lba <= h.last_usable,
            "{e:?}"
        );
        assert!(e.last_lba < sectors, "{e:?} past the disk");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, image)) = data.split_first() else {
        return;
    };
    let mut image = image.to_vec();
    if flags & 1 == 1 {
        if let Some(alternate) = fix_crcs(&mut image, 1) {
            fix_crcs(&mut image, alternate);
        }
    }
    let disk = Arc::new(FuzzDisk::new(image));
    let Ok(table) = GptTable::read(disk.as_ref()) else {
        return;
    };
    check_table(&table);
    let dev: Arc<dyn BlockDevice> = disk.clone();
    if let Ok(d) = Disk::from_device(dev) {
        if let Ok(pair) = d.slots(DEFAULT_PAIR) {
            for s in pair.slots() {
                assert!(s
                    .offset
                    .checked_add(s.size)
                    .is_some_and(|end| end <= table.disk_size()));
            }
            let _ = GptBootControl::new(d.device().clone(), &pair).states();
        }
    }
    let Some(first) = table.entries().first() else {
        return;
    };
    let flipped = first.attributes ^ (1 << 48);
    let Ok(written) = update_attributes(disk.as_ref(), &[(first.index, flipped)]) else {
        return;
    };
    let reread = GptTable::read(disk.as_ref()).expect("the writer's table reads back");
    check_table(&reread);
    assert_eq!(reread.entries(), written.entries());
    for (before, after) in table.entries().iter().zip(reread.entries()) {
        let expected = if before.index == first.index {
            flipped
        } else {
            before.attributes
        };
        assert_eq!(after.attributes, expected);
        assert_eq!(
            (&before.name, before.first_lba, before.last_lba),
            (&after.name, after.first_lba, after.last_lba)
        );
    }
    assert_eq!(table.entries().len(), reread.entries().len());
});
