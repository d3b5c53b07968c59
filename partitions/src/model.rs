//! The vocabulary every other module shares, depending on nothing else in the crate: which
//! slot ([`SlotId`]), the boot state of one ([`SlotBootState`]), the selection rule every
//! firmware follows ([`select`]) and the names of the boot-control backends ([`BackendKind`]).

use std::fmt;
use std::str::FromStr;

/// One of the two slots of a pair.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SlotId {
    /// `<name>-a`
    A,
    /// `<name>-b`
    B,
}

impl SlotId {
    /// Both slots, A first.
    pub const ALL: [SlotId; 2] = [SlotId::A, SlotId::B];

    /// The other slot.
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }

    /// `'a'` or `'b'`.
    pub fn letter(self) -> char {
        match self {
            SlotId::A => 'a',
            SlotId::B => 'b',
        }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

impl FromStr for SlotId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "a" | "A" => Ok(SlotId::A),
            "b" | "B" => Ok(SlotId::B),
            _ => Err(format!("slot must be a or b, not {s:?}")),
        }
    }
}

/// A priority or a tries count outside the 4 bits every backend stores.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be 0..=15, got {value}")]
pub struct OutOfRange {
    /// Which field.
    pub field: &'static str,
    /// The value given.
    pub value: u64,
}

/// Check a 4-bit field (priority, tries).
pub(crate) fn check_nibble(field: &'static str, v: u8) -> Result<(), OutOfRange> {
    if v > 15 {
        return Err(OutOfRange {
            field,
            value: u64::from(v),
        });
    }
    Ok(())
}

/// The boot state of one slot (the ChromeOS model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SlotBootState {
    /// 0 = never boot; higher boots first. 0..=15.
    pub priority: u8,
    /// Boots left before the slot is given up, when not successful. 0..=15.
    pub tries_left: u8,
    /// The OS in the slot has proven itself healthy.
    pub successful: bool,
}

impl SlotBootState {
    /// Priority 0, no tries, not successful: never booted.
    pub const UNBOOTABLE: SlotBootState = SlotBootState {
        priority: 0,
        tries_left: 0,
        successful: false,
    };

    /// Build a state, checking the 4-bit ranges.
    pub fn new(priority: u8, tries_left: u8, successful: bool) -> Result<Self, OutOfRange> {
        check_nibble("priority", priority)?;
        check_nibble("tries", tries_left)?;
        Ok(Self {
            priority,
            tries_left,
            successful,
        })
    }

    /// Whether firmware may boot this slot: priority above 0 and successful or tries left.
    pub fn is_bootable(&self) -> bool {
        self.priority > 0 && (self.successful || self.tries_left > 0)
    }
}

impl fmt::Display for SlotBootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "priority {} tries {} successful {}",
            self.priority, self.tries_left, self.successful
        )
    }
}

/// The selection rule every backend's firmware follows: among bootable slots (priority > 0
/// and successful or tries left), the highest priority; on a tie, A (vboot picks the lower
/// GPT entry, which is A on disks made by `tandem-disk create`). `None` when nothing is
/// bootable.
pub fn select(a: SlotBootState, b: SlotBootState) -> Option<SlotId> {
    match (a.is_bootable(), b.is_bootable()) {
        (true, true) if b.priority > a.priority => Some(SlotId::B),
        (true, _) => Some(SlotId::A),
        (false, true) => Some(SlotId::B),
        (false, false) => None,
    }
}

/// Which backend keeps the boot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// GPT attribute bits.
    Gpt,
    /// GRUB environment block.
    Grub,
    /// systemd-boot entries.
    SystemdBoot,
}

impl BackendKind {
    /// Every backend, in the order the documentation lists them.
    pub const ALL: [BackendKind; 3] = [
        BackendKind::Gpt,
        BackendKind::Grub,
        BackendKind::SystemdBoot,
    ];

    /// The name used in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Gpt => "gpt",
            BackendKind::Grub => "grub",
            BackendKind::SystemdBoot => "systemd-boot",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown boot backend {s:?}: gpt, grub or systemd-boot"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(priority: u8, tries_left: u8, successful: bool) -> SlotBootState {
        SlotBootState {
            priority,
            tries_left,
            successful,
        }
    }

    #[test]
    fn select_rule() {
        assert_eq!(select(s(1, 0, true), s(2, 1, false)), Some(SlotId::B));
        assert_eq!(select(s(1, 0, true), s(2, 0, false)), Some(SlotId::A));
        assert_eq!(select(s(0, 5, true), s(2, 0, false)), None);
        assert_eq!(
            select(s(3, 1, false), s(3, 0, true)),
            Some(SlotId::A),
            "tie: A"
        );
        assert_eq!(select(s(0, 0, false), s(1, 0, true)), Some(SlotId::B));
        assert!(SlotBootState::new(16, 0, false).is_err());
        assert!(SlotBootState::new(0, 16, false).is_err());
        assert_eq!("b".parse::<SlotId>(), Ok(SlotId::B));
        assert_eq!(SlotId::A.other(), SlotId::B);
    }

    #[test]
    fn backend_names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>(), Ok(kind));
        }
        assert!("lilo".parse::<BackendKind>().is_err());
    }
}
