//! Which slot the running system booted from, read from the kernel command line and from
//! systemd-boot's `LoaderEntrySelected` EFI variable.
//!
//! The boot entries Tandem writes pass `tandem.slot=a|b`; a system booted some other way is
//! recognised by its `root=PARTUUID=…`, matched against the slots' PARTUUIDs. Under Secure
//! Boot a UKI's command line is fixed and cannot name the slot: then its `roothash=` (the
//! slot whose release has that verity root hash) and the entry systemd-boot says it booted
//! (`tandem-a…`/`tandem-b…`) are the witnesses, and the agent acts only when all it has agree.

use std::path::Path;

use partitions::SlotId;

/// What the command line says about the booted slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootedFrom {
    /// `tandem.slot=a` or `tandem.slot=b`.
    Slot(char),
    /// `root=PARTUUID=…`, lower-cased for comparison.
    PartUuid(String),
}

/// Reads the booted slot from a kernel command line; `tandem.slot=` wins over `root=`.
pub fn booted_from(cmdline: &str) -> Option<BootedFrom> {
    let mut partuuid = None;
    for word in cmdline.split_ascii_whitespace() {
        if let Some(slot) = word.strip_prefix("tandem.slot=") {
            match slot {
                "a" | "b" => return slot.chars().next().map(BootedFrom::Slot),
                _ => continue,
            }
        }
        if let Some(uuid) = word.strip_prefix("root=PARTUUID=") {
            partuuid = Some(BootedFrom::PartUuid(uuid.to_ascii_lowercase()));
        }
    }
    partuuid
}

/// systemd-boot's variable: the id of the entry it booted, as efivarfs names its file
/// (`<name>-<vendor GUID>`).
pub const LOADER_ENTRY_SELECTED: &str = "LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// An entry id is short; a larger variable file is not systemd-boot's.
const MAX_EFI_VARIABLE: u64 = 4096;

/// The last `roothash=` of a kernel command line (the one systemd-veritysetup-generator
/// uses), lower-cased.
pub fn roothash(cmdline: &str) -> Option<String> {
    bundle::verity::roothash_params(cmdline)
        .last()
        .map(str::to_ascii_lowercase)
}

/// The slot whose systemd-boot entry `LoaderEntrySelected` in `efivars` names (its file:
/// four bytes of attributes, then the id in UTF-16LE, NUL-terminated); `None` when there is
/// no such variable or it names an entry that is not Tandem's.
pub fn entry_selected(efivars: &Path) -> std::io::Result<Option<SlotId>> {
    let path = efivars.join(LOADER_ENTRY_SELECTED);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_EFI_VARIABLE), &mut bytes)?;
    let units: Vec<u16> = bytes
        .get(4..)
        .unwrap_or_default()
        .chunks_exact(2)
        .filter_map(|pair| <[u8; 2]>::try_from(pair).ok())
        .map(u16::from_le_bytes)
        .take_while(|&unit| unit != 0)
        .collect();
    let id = String::from_utf16_lossy(&units);
    Ok(partitions::boot::systemd_boot::slot_of_entry_id(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tandem_parameter_names_the_slot() {
        let line = "BOOT_IMAGE=/vmlinuz root=PARTUUID=ABC tandem.slot=b quiet\n";
        assert_eq!(booted_from(line), Some(BootedFrom::Slot('b')));
    }

    #[test]
    fn the_root_partuuid_is_the_fallback() {
        let line = "console=ttyS0 root=PARTUUID=0FC63DAF-8483 ro";
        assert_eq!(
            booted_from(line),
            Some(BootedFrom::PartUuid("0fc63daf-8483".into()))
        );
    }

    #[test]
    fn nothing_known_is_none() {
        assert_eq!(booted_from("root=/dev/sda2 tandem.slot=c"), None);
        assert_eq!(booted_from(""), None);
    }
}

#[cfg(test)]
mod witness_tests {
    use super::*;

    fn efivar(dir: &Path, id: &str) {
        let mut bytes = vec![6, 0, 0, 0];
        for unit in id.encode_utf16().chain([0]) {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        std::fs::write(dir.join(LOADER_ENTRY_SELECTED), bytes).unwrap();
    }

    #[test]
    fn the_selected_entry_names_the_slot_with_or_without_its_counter() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(entry_selected(dir.path()).unwrap(), None);
        efivar(dir.path(), "tandem-b.conf");
        assert_eq!(entry_selected(dir.path()).unwrap(), Some(SlotId::B));
        efivar(dir.path(), "tandem-a+2-1.conf");
        assert_eq!(entry_selected(dir.path()).unwrap(), Some(SlotId::A));
        efivar(dir.path(), "tandem-a");
        assert_eq!(entry_selected(dir.path()).unwrap(), Some(SlotId::A));
        efivar(dir.path(), "debian.conf");
        assert_eq!(entry_selected(dir.path()).unwrap(), None);
    }

    #[test]
    fn the_last_roothash_counts() {
        assert_eq!(
            roothash("ro roothash=AB quiet roothash=cd"),
            Some("cd".into())
        );
        assert_eq!(roothash("ro quiet"), None);
    }
}
