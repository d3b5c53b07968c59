//! A written release's boot life cycle (docs/DESIGN.md §6): `activate` flips the boot entry
//! to a trial of it; after the reboot `boot-check` judges the trial — committed on passing
//! health checks, else marked bad and rolled back — or records that the firmware fell back;
//! `rollback` switches to the other slot's committed image. Every step first makes the boot
//! state safe, then records the new phase in the state file, so that a power cut between any
//! two durable writes leaves a disk the firmware boots correctly and a state the next start
//! continues from. Named failpoints (feature `failpoints`) sit after each durable step.

use partitions::SlotId;
use serde::Serialize;

use crate::agent::Agent;
use crate::error::{Refusal, Result};
use crate::health;
use crate::metrics::Event;
use crate::snapshot::NodeSnapshot;
use crate::state::{AgentState, Phase, Release, SlotRecord};

/// What `boot-check` found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum BootCheck {
    /// No update was waiting for this boot.
    Nothing { booted: SlotId },
    /// The new slot passed its health checks (`checks` of them; none configured is said
    /// out loud) and is committed.
    Committed {
        slot: SlotId,
        version: String,
        checks: usize,
    },
    /// The new slot failed its health checks: marked bad, reboot requested.
    RolledBack {
        slot: SlotId,
        version: String,
        reason: String,
    },
    /// The node came up in the old slot while an update was in trial: the firmware fell back.
    FirmwareRolledBack { slot: SlotId, version: String },
    /// A slot was in trial with no release recorded for it (left by a crash or by two
    /// agents at once): it was marked bad, and when it is the booted one, a reboot requested.
    UnrecordedTrial { slot: SlotId, booted: SlotId },
}

impl BootCheck {
    /// The `outcome` of `boot-check --json`.
    pub fn outcome(&self) -> &'static str {
        match self {
            BootCheck::Nothing { .. } => "nothing",
            BootCheck::Committed { .. } => "committed",
            BootCheck::RolledBack { .. } => "rolled-back",
            BootCheck::FirmwareRolledBack { .. } => "firmware-rolled-back",
            BootCheck::UnrecordedTrial { .. } => "unrecorded-trial",
        }
    }

    /// The booted slot was marked bad: the reboot command must run.
    pub fn wants_reboot(&self) -> bool {
        match self {
            BootCheck::RolledBack { .. } => true,
            BootCheck::UnrecordedTrial { slot, booted } => slot == booted,
            _ => false,
        }
    }
}

/// The metrics event of a boot-check: its outcome, or `error`.
pub fn boot_check_event(result: &Result<BootCheck>) -> Event {
    Event::BootCheck {
        outcome: result.as_ref().map_or("error", BootCheck::outcome),
    }
}

impl Agent {
    /// Flips the boot entry to a staged install (written with `--stage`).
    pub fn activate(&self) -> Result<SlotId> {
        let mut snapshot = NodeSnapshot::default();
        let (state, booted) = self.state_and_booted(&mut snapshot)?;
        match &state.phase {
            Phase::Written {
                target,
                activated: false,
                ..
            } if *target != booted => self.activate_written(state),
            _ => Err(Refusal::NothingStaged.into()),
        }
    }

    /// Flips the boot entry to a trial of the release `state` records as written.
    pub(crate) fn activate_written(&self, state: &mut AgentState) -> Result<SlotId> {
        let Phase::Written {
            target, release, ..
        } = state.phase.clone()
        else {
            return Err(Refusal::NothingStaged.into());
        };
        self.boot.prepare()?;
        self.boot.ensure_fallback(target.other())?;
        self.boot.set_trial(target, self.config.tries)?;
        fail::fail_point!("install::after-flip");
        state.phase = Phase::Written {
            target,
            release,
            activated: true,
        };
        self.store.save(state)?;
        fail::fail_point!("install::after-activated-state");
        Ok(target)
    }

    /// Run once per boot: judges a slot in trial, or records that the firmware fell back.
    pub fn boot_check(&self) -> Result<BootCheck> {
        self.boot_check_in(&mut NodeSnapshot::default())
    }

    /// [`Agent::boot_check`] as a step of an operation that goes on with `snapshot` (the
    /// command reports what it did from the same state).
    pub fn boot_check_in(&self, snapshot: &mut NodeSnapshot) -> Result<BootCheck> {
        self.boot_check_then(snapshot, |_, _| {})
    }

    /// [`Agent::boot_check_in`], with `before_reboot` given the outcome once everything is
    /// recorded and before the reboot command runs: a reboot command that returns at once
    /// (`systemctl reboot`) lets systemd stop the boot check soon after, so whatever must
    /// outlive it (the report queued for the server) is done first.
    pub fn boot_check_then(
        &self,
        snapshot: &mut NodeSnapshot,
        before_reboot: impl FnOnce(&mut NodeSnapshot, &BootCheck),
    ) -> Result<BootCheck> {
        let check = self.judge_boot(snapshot);
        self.record_metrics(snapshot, boot_check_event(&check));
        let check = check?;
        before_reboot(snapshot, &check);
        if check.wants_reboot() {
            self.reboot()?;
        }
        Ok(check)
    }

    fn judge_boot(&self, snapshot: &mut NodeSnapshot) -> Result<BootCheck> {
        let (state, booted) = self.state_and_booted(snapshot)?;
        match state.phase.clone() {
            Phase::Written {
                target, release, ..
            }
            | Phase::Trial { target, release }
                if target == booted =>
            {
                self.trial(snapshot, target, release)
            }
            Phase::Written {
                target,
                release,
                activated: true,
            }
            | Phase::Trial { target, release } => {
                self.record_firmware_rollback(state, target, release)
            }
            // Not recorded as activated, but the boot entry was flipped (a cut between the
            // flip and the state save): the firmware tried it and fell back.
            Phase::Written {
                target,
                release,
                activated: false,
            } if self.boot.state(target)?.priority > 0 => {
                self.record_firmware_rollback(state, target, release)
            }
            phase => self.judge_unrecorded_trials(&phase, booted),
        }
    }

    /// Any slot in trial that the phase does not name holds nothing the agent wrote and
    /// verified to completion: it must not boot (again).
    fn judge_unrecorded_trials(&self, phase: &Phase, booted: SlotId) -> Result<BootCheck> {
        let recorded = match phase {
            Phase::Writing { target, .. } | Phase::Written { target, .. } => Some(*target),
            _ => None,
        };
        for slot in [booted.other(), booted] {
            let boot = self.boot.state(slot)?;
            let in_trial = !boot.successful && (boot.tries_left > 0 || slot == booted);
            if Some(slot) == recorded || !in_trial || !self.boot.state(slot.other())?.successful {
                continue;
            }
            tracing::warn!(%slot, "a slot in trial holds no recorded release: marking it bad");
            self.boot.mark_bad(slot)?;
            return Ok(BootCheck::UnrecordedTrial { slot, booted });
        }
        Ok(BootCheck::Nothing { booted })
    }

    fn trial(
        &self,
        snapshot: &mut NodeSnapshot,
        target: SlotId,
        release: Release,
    ) -> Result<BootCheck> {
        // Commit is final: a slot already marked good is never judged again.
        if self.boot.state(target)?.successful {
            return self.commit(snapshot, target, release);
        }
        let state = self.state(snapshot)?;
        state.phase = Phase::Trial {
            target,
            release: release.clone(),
        };
        self.store.save(state)?;
        fail::fail_point!("boot-check::after-trial-state");
        if self.config.health.is_empty() {
            tracing::warn!(slot = %target, "no [[health]] checks configured: committing unchecked");
        }
        match health::run_checks(&self.config.health, self.config.health_deadline) {
            Ok(()) => self.commit(snapshot, target, release),
            Err(failure) => {
                tracing::warn!(%failure, slot = %target, "health checks failed: rolling back");
                self.boot.mark_bad(target)?;
                fail::fail_point!("boot-check::after-mark-bad");
                let reason = failure.to_string();
                self.record_rollback(state, target, release.clone(), reason.clone())?;
                fail::fail_point!("boot-check::after-rollback-state");
                Ok(BootCheck::RolledBack {
                    slot: target,
                    version: release.version,
                    reason,
                })
            }
        }
    }

    fn commit(
        &self,
        snapshot: &mut NodeSnapshot,
        slot: SlotId,
        release: Release,
    ) -> Result<BootCheck> {
        self.boot.mark_good(slot)?;
        fail::fail_point!("boot-check::after-mark-good");
        let counters = self.state_and_counters(snapshot)?.1;
        self.trust.raise_floor(release.security_version, counters)?;
        let state = self.state(snapshot)?;
        state.slots.insert(
            slot,
            SlotRecord {
                release: release.clone(),
                committed: true,
            },
        );
        state.phase = Phase::Committed {
            slot,
            release: release.clone(),
        };
        self.store.save(state)?;
        fail::fail_point!("boot-check::after-commit-state");
        tracing::info!(%slot, version = %release.version, "committed");
        Ok(BootCheck::Committed {
            slot,
            version: release.version,
            checks: self.config.health.len(),
        })
    }

    fn record_firmware_rollback(
        &self,
        state: &mut AgentState,
        target: SlotId,
        release: Release,
    ) -> Result<BootCheck> {
        // The slot may still have tries left (a power cycle during its trial): it must not
        // come back on its own after the node settled on the old slot.
        self.boot.mark_bad(target)?;
        let reason = format!(
            "slot {target} never completed its trial boot; the firmware booted slot {}",
            target.other()
        );
        self.record_rollback(state, target, release.clone(), reason)?;
        Ok(BootCheck::FirmwareRolledBack {
            slot: target,
            version: release.version,
        })
    }

    fn record_rollback(
        &self,
        state: &mut AgentState,
        slot: SlotId,
        release: Release,
        reason: String,
    ) -> Result<()> {
        state.rolled_back_versions.insert(release.version.clone());
        if let Some(record) = state.slots.get_mut(&slot) {
            record.committed = false;
        }
        state.phase = Phase::RolledBack {
            slot,
            release,
            reason,
        };
        self.store.save(state)?;
        Ok(())
    }

    /// Switches back to the other slot when it holds a committed image (or the factory
    /// image the firmware marks good); after the reboot, `boot-check` judges it like any
    /// update. The security floor holds unless `force`.
    pub fn rollback(&self, reboot: bool, force: bool) -> Result<SlotId> {
        let mut snapshot = NodeSnapshot::default();
        let (state, booted) = self.state_and_booted(&mut snapshot)?;
        let other = booted.other();
        if matches!(state.phase, Phase::Writing { target, .. } if target == other) {
            return Err(Refusal::SlotBeingWritten { slot: other }.into());
        }
        let release = self.fallback_release(state, other)?;
        let (state, counters) = self.state_and_counters(&mut snapshot)?;
        counters.check_floor(release.security_version, force)?;
        self.boot.prepare()?;
        self.boot.ensure_fallback(other.other())?;
        self.boot.set_trial(other, self.config.tries)?;
        state.phase = Phase::Written {
            target: other,
            release,
            activated: true,
        };
        self.store.save(state)?;
        self.record_metrics(&mut snapshot, Event::Refresh);
        if reboot {
            self.reboot()?;
        }
        Ok(other)
    }

    /// What `slot` holds that the node may go back to.
    fn fallback_release(&self, state: &AgentState, slot: SlotId) -> Result<Release> {
        let no_fallback = |why: &str| {
            Err(Refusal::NoFallback {
                slot,
                why: why.into(),
            }
            .into())
        };
        match state.slots.get(&slot) {
            Some(record) if record.committed => Ok(record.release.clone()),
            Some(_) => no_fallback("its image never passed its health checks"),
            None if self.boot.state(slot)?.successful => Ok(Release::factory(&self.config.product)),
            None => no_fallback("it holds no committed image"),
        }
    }
}
