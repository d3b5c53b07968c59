//! Which slot the running system booted from, read from the kernel command line.
//!
//! The boot entries Tandem writes pass `tandem.slot=a|b`; a system booted some other way is
//! recognised by its `root=PARTUUID=…`, matched against the slots' PARTUUIDs.

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
