//! Which backend a disk was set up for, recorded on the disk itself: bits 61–62 of the GPT
//! attributes of both slot entries (reserved by the UEFI specification for the partition
//! type, unused by ChromeOS, which owns bits 48–56 and 60, and by the Discoverable Partitions
//! Specification, which owns 59, 60 and 63).
//!
//! | value | meaning |
//! |---|---|
//! | 0 | nothing recorded: the `gpt` backend, which needs no setup (or a disk from before the mark) |
//! | 1 | `grub` |
//! | 2 | `systemd-boot` |
//!
//! [`BootControl::prepare`](super::BootControl::prepare) of the grub and systemd-boot backends
//! records the mark; [`super::open`] refuses a backend other than the recorded one, so that a
//! factory tool cannot write boot state where the firmware does not look (the GPT bits of a
//! grub node, say) and leave the node's real boot order empty.

use std::sync::Arc;

use super::gpt::PairEntries;
use crate::error::{BootStateError, Result};
use crate::io::BlockDevice;
use crate::model::BackendKind;
use crate::slots::SlotPair;

const SHIFT: u32 = 61;
const MASK: u64 = 0b11 << SHIFT;

fn code(kind: BackendKind) -> u64 {
    match kind {
        BackendKind::Gpt => 0,
        BackendKind::Grub => 1,
        BackendKind::SystemdBoot => 2,
    }
}

fn mark_of(attributes: u64) -> u8 {
    ((attributes & MASK) >> SHIFT) as u8
}

/// The backend the pair on `dev` was set up for; `None` when nothing is recorded (the
/// `gpt` backend, or a disk from before the mark).
pub fn recorded(dev: Arc<dyn BlockDevice>, pair: &SlotPair) -> Result<Option<BackendKind>> {
    read(&PairEntries::new(dev, pair))
}

pub(crate) fn read(entries: &PairEntries) -> Result<Option<BackendKind>> {
    let [a, b] = entries.read()?.map(mark_of);
    let kind = BackendKind::ALL
        .into_iter()
        .find(|k| a == b && u64::from(a) == code(*k));
    match kind {
        Some(BackendKind::Gpt) => Ok(None),
        Some(k) => Ok(Some(k)),
        None => {
            let [a_index, b_index] = entries.indices();
            Err(BootStateError::BackendMark {
                a_index,
                a_mark: a,
                b_index,
                b_mark: b,
            }
            .into())
        }
    }
}

/// Record `kind` in both entries (one table update; nothing written when already there).
pub(crate) fn record(entries: &PairEntries, kind: BackendKind) -> Result<()> {
    let value = code(kind) << SHIFT;
    entries.modify(|attrs| {
        for a in attrs.iter_mut() {
            *a = (*a & !MASK) | value;
        }
    })
}

/// Refuse `asked` on a disk recorded for another backend.
pub(crate) fn check(entries: &PairEntries, asked: BackendKind) -> Result<()> {
    match read(entries)? {
        Some(set_up) if set_up != asked => {
            Err(BootStateError::WrongBackend { set_up, asked }.into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::boot::gpt::{decode, GptBootControl, CHROMEOS_MASK};
    use crate::boot::BootControl;
    use crate::error::Error;
    use crate::model::SlotId;
    use crate::slots::Disk;
    use crate::table::tests::small_disk;

    #[test]
    fn the_mark_lives_beside_the_chromeos_bits_and_refuses_other_backends() {
        let disk = Disk::from_device(Arc::new(small_disk())).unwrap();
        let pair = disk.slots("root").unwrap();
        let entries = PairEntries::new(disk.device().clone(), &pair);
        assert_eq!(recorded(disk.device().clone(), &pair).unwrap(), None);
        check(&entries, BackendKind::Grub).unwrap();

        let gpt = GptBootControl::new(disk.device().clone(), &pair);
        gpt.set_trial(SlotId::A, 3).unwrap();
        record(&entries, BackendKind::Grub).unwrap();
        let attrs = entries.read().unwrap();
        assert_eq!(
            attrs[0] & !CHROMEOS_MASK,
            1 << 61,
            "only bit 61 besides the state"
        );
        assert_eq!(decode(attrs[0]).tries_left, 3, "the GPT state is kept");
        assert_eq!(
            recorded(disk.device().clone(), &pair).unwrap(),
            Some(BackendKind::Grub)
        );
        check(&entries, BackendKind::Grub).unwrap();
        let err = check(&entries, BackendKind::Gpt).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BootState(BootStateError::WrongBackend {
                    set_up: BackendKind::Grub,
                    asked: BackendKind::Gpt
                })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("grub") && err.to_string().contains("gpt"));

        // The GPT backend's writes keep the mark.
        gpt.mark_good(SlotId::A).unwrap();
        assert_eq!(read(&entries).unwrap(), Some(BackendKind::Grub));

        // Slots that disagree, or a value no version wrote, are reported.
        entries.modify(|a| a[1] |= MASK).unwrap();
        let err = read(&entries).unwrap_err();
        assert!(
            matches!(err, Error::BootState(BootStateError::BackendMark { .. })),
            "{err}"
        );
    }
}
