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
//! [`Config`] names the backend and where its files live; [`open`] is the one place a backend
//! is built, and [`mark`] records on the disk which backend it was set up for, so that no
//! tool writes boot state where the firmware does not read it. All three share one selection
//! rule ([`select`]) and one firmware step ([`crate::firmware::select_and_boot`]). Every write
//! is durable when the call returns.
//!
//! [`files`] keeps each slot's kernel, initramfs or UKI and command line beside the backend's
//! files ([`BootControl::boot_files`]) and replaces them power-safely (docs/DESIGN.md §5.1).

mod config;
pub mod files;
pub mod floor;
pub mod gpt;
pub mod grub;
mod grubenv;
pub mod mark;
pub mod systemd_boot;

use std::fmt;

pub use crate::model::{select, BackendKind, SlotBootState, SlotId};
pub use config::{open, Config, ConfigError};
pub use files::{BootFile, BootFiles, Staging};

use crate::error::{BootStateError, Result};

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

    /// Where the slots' boot files live for this backend (docs/DESIGN.md §5.1): systemd-boot
    /// `<ESP>/tandem/<slot>/`, grub `<grubenv's directory>/<slot>/` (with `cmdline.env`);
    /// `None` for the GPT backend, which has no boot files.
    fn boot_files(&self) -> Option<BootFiles>;

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

    /// Make the backend's files ready for writes (create what is missing, record on the
    /// disk which backend keeps its boot state). Idempotent, and it changes no slot's boot
    /// state. Nothing to do for the GPT backend.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }

    /// Before a trial of the other slot: make sure `booted` (the running, committed slot) is
    /// what the firmware falls back to when the trial's tries run out.
    ///
    /// Successful with a priority: nothing to do. Priority 0 (in no boot order: the disk was
    /// provisioned through another backend, or by hand): since the slot is running, it is
    /// made the good slot (`set_trial(booted, 1)` then `mark_good(booted)`, as provisioning
    /// does). Not successful with a priority (a trial in progress, or a slot given up):
    /// only a health check may commit it, so [`BootStateError::NoFallback`].
    fn ensure_fallback(&self, booted: SlotId) -> Result<()> {
        let state = self.state(booted)?;
        if state.priority > 0 && state.successful {
            return Ok(());
        }
        if state.priority > 0 {
            return Err(BootStateError::NoFallback {
                slot: booted,
                state,
            }
            .into());
        }
        tracing::warn!(%booted, %state, "the running slot is in no boot order: making it the fallback");
        self.set_trial(booted, 1)?;
        self.mark_good(booted)
    }

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
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use std::sync::Arc;

    use super::*;
    use crate::error::Error;
    use crate::firmware::select_and_boot;
    use crate::io::MemFs;
    use crate::slots::Disk;
    use crate::table::tests::small_disk;

    /// Each backend, prepared, on a fresh disk of its own.
    fn each_backend() -> Vec<Box<dyn BootControl>> {
        let configs = [
            Config::Gpt,
            Config::Grub {
                grubenv: "grubenv".into(),
            },
            Config::SystemdBoot {
                esp: "esp".into(),
                entry: systemd_boot::EntryTemplate::default(),
            },
        ];
        configs
            .iter()
            .map(|config| {
                let disk = Disk::from_device(Arc::new(small_disk())).unwrap();
                let pair = disk.slots("root").unwrap();
                let bc = open(config, &disk, &pair, Some(Arc::new(MemFs::new()))).unwrap();
                bc.prepare().unwrap();
                bc
            })
            .collect()
    }

    #[test]
    fn ensure_fallback_repairs_a_running_slot_in_no_boot_order() {
        for bc in each_backend() {
            let kind = bc.kind();
            // Provisioned through another backend: A runs, but this backend has it nowhere.
            assert_eq!(bc.state(SlotId::A).unwrap(), SlotBootState::UNBOOTABLE);
            bc.ensure_fallback(SlotId::A).unwrap();
            bc.set_trial(SlotId::B, 2).unwrap();
            let boots: Vec<SlotId> = (0..4)
                .map(|_| select_and_boot(bc.as_ref()).unwrap())
                .collect();
            assert_eq!(
                boots,
                [SlotId::B, SlotId::B, SlotId::A, SlotId::A],
                "{kind}"
            );

            // A committed slot is left as it is.
            let before = bc.states().unwrap();
            bc.ensure_fallback(SlotId::A).unwrap();
            assert_eq!(bc.states().unwrap(), before, "{kind}");
        }
    }

    #[test]
    fn each_backend_keeps_boot_files_where_its_loader_reads_them() {
        let dirs: Vec<_> = each_backend()
            .iter()
            .map(|bc| bc.boot_files().map(|f| f.dir(SlotId::B)))
            .collect();
        // gpt: none (kernels are partition images); grub: beside the grubenv (with
        // `cmdline.env`); systemd-boot: `<ESP>/tandem/<slot>/`.
        assert_eq!(dirs, [None, Some("b".into()), Some("tandem/b".into())]);
    }

    #[test]
    fn ensure_fallback_refuses_a_slot_in_trial_or_given_up() {
        for bc in each_backend() {
            let kind = bc.kind();
            bc.set_trial(SlotId::A, 2).unwrap();
            for _ in 0..2 {
                let err = bc.ensure_fallback(SlotId::A).unwrap_err();
                assert!(
                    matches!(
                        err,
                        Error::BootState(BootStateError::NoFallback {
                            slot: SlotId::A,
                            ..
                        })
                    ),
                    "{kind}: {err}"
                );
                assert!(err.to_string().contains("slot a"), "{kind}: {err}");
                bc.mark_bad(SlotId::A).unwrap();
            }
        }
    }
}
