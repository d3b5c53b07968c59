//! Boot control: what the firmware should boot, recorded per slot as
//! [`SlotBootState`] `{priority, tries_left, successful}` by one of three backends:
//!
//! * [`gpt::GptBootControl`]: ChromeOS attribute bits in the GPT entries (interoperable with
//!   `cgpt` and vboot firmware);
//! * [`grub::GrubEnvBootControl`]: variables in a GRUB environment block, read by the
//!   `docs/grub.cfg.example` script;
//! * [`systemd_boot::SystemdBootControl`]: Boot Loader Specification entries with boot
//!   counting in their file names, as systemd-boot and systemd-bless-boot use them.
//!
//! All three share one selection rule ([`select`]) and one firmware step
//! ([`crate::firmware::select_and_boot`]). Every write is durable when the call returns.

pub mod gpt;
pub mod grub;
pub mod systemd_boot;

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, UsageError};

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
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "a" | "A" => Ok(SlotId::A),
            "b" | "B" => Ok(SlotId::B),
            _ => Err(format!("slot must be a or b, not {s:?}")),
        }
    }
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
    pub fn new(priority: u8, tries_left: u8, successful: bool) -> Result<Self> {
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

pub(crate) fn check_nibble(field: &'static str, v: u8) -> Result<()> {
    if v > 15 {
        return Err(UsageError::OutOfRange {
            field,
            value: u64::from(v),
        }
        .into());
    }
    Ok(())
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

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// GPT attribute bits.
    Gpt,
    /// GRUB environment block.
    Grub,
    /// systemd-boot entries.
    SystemdBoot,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Gpt => "gpt",
            BackendKind::Grub => "grub",
            BackendKind::SystemdBoot => "systemd-boot",
        })
    }
}

/// Records what the firmware should boot. Object-safe: hold a `Box<dyn BootControl>`.
///
/// Every method re-reads the on-disk state (nothing is cached, so a simulated power cut
/// can never leave the object and the disk disagreeing) and every write is durable when it
/// returns. Backends store their state with the [`crate::io`] seam only.
///
/// How each backend maps the model is documented on the backend; the firmware behaviour
/// ([`select`] + [`record_boot_attempt`](Self::record_boot_attempt)) is the same for all.
pub trait BootControl: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// The state of one slot.
    fn state(&self, slot: SlotId) -> Result<SlotBootState>;

    /// Set a slot's state as closely as the backend can represent it (GPT: exactly; the
    /// others keep only the order of the two priorities, see their docs). For tools and
    /// tests; the updater uses the named transitions below.
    fn set_state(&self, slot: SlotId, state: SlotBootState) -> Result<()>;

    /// Never boot this slot (priority 0, no tries, not successful): done before a single
    /// byte of a new image is written, so a half-written slot is never chosen.
    fn set_unbootable(&self, slot: SlotId) -> Result<()>;

    /// Boot this slot next, at most `tries` times unless marked good: priority above the
    /// other slot, `tries` tries, not successful. The other slot stays bootable.
    fn set_trial(&self, slot: SlotId, tries: u8) -> Result<()>;

    /// The slot proved healthy: successful, no tries, priority kept. Also valid after the
    /// firmware used the last try (the OS booted on it). On an unbootable slot (priority 0)
    /// it changes nothing the firmware looks at: the slot stays unbootable.
    fn mark_good(&self, slot: SlotId) -> Result<()>;

    /// The slot failed: not successful, no tries left, priority kept (the state of a trial
    /// whose tries ran out; systemd-bless-boot's `+0-N`). Never booted again unless marked
    /// good or given a new trial.
    fn mark_bad(&self, slot: SlotId) -> Result<()>;

    /// What the firmware writes when it boots an unsuccessful slot: one try used
    /// (GPT and grub: `tries_left - 1`; systemd-boot: the rename `+L-D` → `+(L-1)-(D+1)`).
    fn record_boot_attempt(&self, slot: SlotId) -> Result<()>;

    /// Both states, A then B.
    fn states(&self) -> Result<[SlotBootState; 2]> {
        Ok([self.state(SlotId::A)?, self.state(SlotId::B)?])
    }

    /// The slot the firmware would boot next, without changing anything.
    fn next_boot(&self) -> Result<Option<SlotId>> {
        let [a, b] = self.states()?;
        Ok(select(a, b))
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
}
