//! The reference firmware: what a boot loader does with the boot state at power-on, for any
//! backend. Tests and the updater's simulator call [`select_and_boot`] to "reboot" a disk.
//!
//! The rule (ChromeOS vboot's, which the grub script and systemd-boot's sort implement too):
//! 1. among slots with priority > 0 that are successful or have tries left, take the one with
//!    the highest priority; on a tie, A;
//! 2. if it is not successful, use up one try first (and make that durable);
//! 3. if no slot qualifies, nothing is booted.
//!
//! vboot also zeroes the priority of a slot whose last try it uses; that changes no later
//! choice (a slot with no tries and not successful is never picked), so it is not done here,
//! which keeps the three backends identical.

use crate::boot::BootControl;
use crate::error::FirmwareError;
use crate::model::{select, SlotId};

/// Boot once: pick a slot by the rule above, record the attempt, return the slot.
pub fn select_and_boot(bc: &dyn BootControl) -> Result<SlotId, FirmwareError> {
    let [a, b] = bc.states()?;
    let slot = select(a, b).ok_or(FirmwareError::NothingBootable { a, b })?;
    let chosen = if slot == SlotId::A { a } else { b };
    if !chosen.successful {
        bc.record_boot_attempt(slot)?;
    }
    Ok(slot)
}
