//! The agent's operations: install, boot-check, activate, rollback, status (DESIGN.md §6).
//!
//! Every step first makes the boot state safe, then records the new phase in the state file,
//! so that a power cut between any two durable writes leaves a disk the firmware boots
//! correctly and a state the next start continues from. Named failpoints (feature
//! `failpoints`) sit after each durable step so tests can cut power exactly there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use partitions::boot;
use partitions::io::{BlockDevice, FileDisk, FileStore, RealFs};
use partitions::{BootControl, Disk, SlotBootState, SlotId, SlotPair};
use serde::Serialize;
use signer::verify::Verified;
use signer::{Channel, Limits, Manifest, Root};
use time::OffsetDateTime;

use crate::cmdline::{booted_from, BootedFrom};
use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::health;
use crate::http::HttpOptions;
use crate::install::{write_image, WriteOptions, WriteReport};
use crate::reports::ReportQueue;
use crate::source::{resolve, verify_channel_in, Repository, Resolved, Trust};
use crate::state::{AgentState, Phase, Release, SlotRecord, StateStore};

/// The newest trusted root, kept beside the state file once a rotation was accepted.
const TRUSTED_ROOT_FILE: &str = "root.json";

/// The seams the agent does its I/O through; tests pass simulated ones.
pub struct Io {
    /// The disk holding the slots (and, for the `gpt` backend, the boot state).
    pub disk: Arc<dyn BlockDevice>,
    /// The directory of the state file.
    pub state_fs: Arc<dyn FileStore>,
    /// The directory of the boot backend's files (the grubenv's, the ESP); `None`: the real
    /// directory the configuration names.
    pub boot_fs: Option<Arc<dyn FileStore>>,
}

type Clock = Box<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The agent of one node.
pub struct Agent {
    config: AgentConfig,
    disk: Disk,
    pair: SlotPair,
    boot: Box<dyn BootControl>,
    store: StateStore,
    state_fs: Arc<dyn FileStore>,
    clock: Clock,
    limits: Limits,
    /// Pipeline tuning (workers, checkpoints, read-back).
    pub write_options: WriteOptions,
    /// Network behaviour (timeouts, retries, CA bundle).
    pub http_options: HttpOptions,
}

/// What to install.
#[derive(Debug, Clone, Default)]
pub struct InstallRequest {
    /// A bundle file or a repository directory.
    pub source: PathBuf,
    /// The channel, for a repository.
    pub channel: Option<String>,
    /// Install even a version that rolled back on this node.
    pub force: bool,
    /// Write and verify now, flip later with `activate`.
    pub stage: bool,
}

/// What an install did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallOutcome {
    pub target: SlotId,
    pub release: Release,
    pub activated: bool,
    #[serde(skip)]
    pub report: WriteReport,
}

/// What `boot-check` found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum BootCheck {
    /// No update was waiting for this boot.
    Nothing { booted: SlotId },
    /// The new slot passed its health checks and is committed.
    Committed { slot: SlotId, version: String },
    /// The new slot failed its health checks: marked bad, reboot requested.
    RolledBack {
        slot: SlotId,
        version: String,
        reason: String,
    },
    /// The node came up in the old slot while an update was in trial: the firmware fell back.
    FirmwareRolledBack { slot: SlotId, version: String },
}

/// A snapshot for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub booted: SlotId,
    pub next_boot: Option<SlotId>,
    pub backend: String,
    pub slots: Vec<SlotStatus>,
    pub state: AgentState,
}

/// One slot in a [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub slot: SlotId,
    pub partuuid: String,
    pub size: u64,
    pub boot: SlotBootState,
    pub release: Option<Release>,
    pub committed: bool,
}

impl Agent {
    /// The agent over the real disk and files named by `config`.
    pub fn open(config: AgentConfig) -> Result<Self> {
        let disk = FileDisk::open(&config.disk).map_err(Error::io(format!(
            "cannot open the disk {}",
            config.disk.display()
        )))?;
        let state_dir = parent_dir(&config.state);
        std::fs::create_dir_all(&state_dir).map_err(Error::io(format!(
            "cannot create the state directory {}",
            state_dir.display()
        )))?;
        let io = Io {
            disk: Arc::new(disk),
            state_fs: Arc::new(RealFs::new(state_dir)),
            boot_fs: None,
        };
        Self::with_io(config, io)
    }

    /// The agent over the given seams (simulated disks in tests).
    pub fn with_io(config: AgentConfig, io: Io) -> Result<Self> {
        let disk = Disk::from_device(io.disk)?;
        let pair = disk.slots(&config.slots)?;
        let boot = boot::open(&config.boot, &disk, &pair, io.boot_fs)?;
        let state_name = config
            .state
            .file_name()
            .unwrap_or("state.json".as_ref())
            .to_owned();
        let verify_readback = config.verify_readback;
        Ok(Agent {
            store: StateStore::new(Arc::clone(&io.state_fs), state_name),
            state_fs: io.state_fs,
            config,
            disk,
            pair,
            boot,
            clock: Box::new(OffsetDateTime::now_utc),
            limits: Limits::default(),
            write_options: WriteOptions {
                verify_readback,
                ..WriteOptions::default()
            },
            http_options: HttpOptions::default(),
        })
    }

    /// Uses another clock for expiry checks (tests).
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    ) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The slot the running system booted from.
    pub fn booted_slot(&self) -> Result<SlotId> {
        if let Some(slot) = &self.config.booted_slot {
            return slot.parse().map_err(Error::BootedSlot);
        }
        let path = &self.config.cmdline;
        let text = std::fs::read_to_string(path)
            .map_err(Error::io(format!("cannot read {}", path.display())))?;
        match booted_from(&text) {
            Some(BootedFrom::Slot(letter)) => letter.to_string().parse().map_err(Error::BootedSlot),
            Some(BootedFrom::PartUuid(uuid)) => uuid
                .parse()
                .ok()
                .and_then(|uuid| self.pair.by_partuuid(&uuid))
                .ok_or_else(|| {
                    Error::BootedSlot(format!(
                        "root=PARTUUID={uuid} is neither slot of the pair {:?}",
                        self.pair.name
                    ))
                }),
            None => Err(Error::BootedSlot(format!(
                "{} has neither tandem.slot= nor root=PARTUUID=",
                path.display()
            ))),
        }
    }

    /// Verifies `request.source`, writes it into the inactive slot and (unless staged)
    /// flips the boot entry to a trial of it.
    pub fn install(&self, request: &InstallRequest) -> Result<InstallOutcome> {
        let mut state = self.store.load()?;
        let booted = self.booted_slot()?;
        refuse_during_trial(&state, booted)?;
        let resolved = self.resolve(request, &state)?;
        let channel_seen = resolved.channel.as_ref().map(|(c, v)| (c.as_str(), *v));
        self.remember_trust(&mut state, resolved.rotated_root.as_ref(), channel_seen)?;
        let release = release_of(&resolved.manifest);
        self.check_policy(&state, &release, request.force)?;

        let target = booted.other();
        let resume = match &state.phase {
            Phase::Writing {
                target: t,
                release: r,
                durable_chunks,
            } if *t == target && r.manifest_sha256 == release.manifest_sha256 => *durable_chunks,
            _ => 0,
        };
        self.boot.prepare()?;
        // DESIGN.md §6.1: before the first byte, the target can never be chosen.
        self.boot.set_unbootable(target)?;
        fail::fail_point!("install::after-unbootable");
        state.slots.remove(&target);
        state.phase = writing(target, &release, resume);
        self.store.save(&state)?;
        fail::fail_point!("install::after-writing-state");
        if resume > 0 {
            tracing::info!(resume, "resuming an interrupted install");
        }

        let slot = self.disk.slot_device(self.pair.slot(target))?;
        // Over a network, chunks the running slot already holds are copied, not fetched.
        let active = match resolved.source.is_remote() {
            true => Some(self.disk.slot_device(self.pair.slot(booted))?),
            false => None,
        };
        let report = write_image(
            &resolved.manifest,
            resolved.source.as_ref(),
            slot.as_ref(),
            active.as_deref(),
            resume,
            &self.write_options,
            |durable| {
                state.phase = writing(target, &release, durable);
                self.store.save(&state)?;
                fail::fail_point!("install::after-checkpoint");
                Ok(())
            },
        )?;
        fail::fail_point!("install::after-image-verified");
        state.slots.insert(
            target,
            SlotRecord {
                release: release.clone(),
                committed: false,
            },
        );
        state.phase = Phase::Written {
            target,
            release: release.clone(),
            activated: false,
        };
        self.store.save(&state)?;
        fail::fail_point!("install::after-written-state");
        if !request.stage {
            self.activate_written(&mut state)?;
        }
        Ok(InstallOutcome {
            target,
            release,
            activated: !request.stage,
            report,
        })
    }

    /// Flips the boot entry to a staged install (written with `--stage`).
    pub fn activate(&self) -> Result<SlotId> {
        let mut state = self.store.load()?;
        let booted = self.booted_slot()?;
        match &state.phase {
            Phase::Written {
                target,
                activated: false,
                ..
            } if *target != booted => self.activate_written(&mut state),
            _ => Err(Error::Refused(
                "nothing is staged: install with --stage first".into(),
            )),
        }
    }

    fn activate_written(&self, state: &mut AgentState) -> Result<SlotId> {
        let Phase::Written {
            target, release, ..
        } = state.phase.clone()
        else {
            return Err(Error::Refused("no written image to activate".into()));
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
        let mut state = self.store.load()?;
        let booted = self.booted_slot()?;
        match state.phase.clone() {
            Phase::Written {
                target, release, ..
            }
            | Phase::Trial { target, release }
                if target == booted =>
            {
                self.trial(&mut state, target, release)
            }
            Phase::Written {
                target,
                release,
                activated: true,
            }
            | Phase::Trial { target, release } => {
                self.record_firmware_rollback(&mut state, target, release)
            }
            // Not recorded as activated, but the boot entry was flipped (a cut between the
            // flip and the state save): the firmware tried it and fell back.
            Phase::Written {
                target,
                release,
                activated: false,
            } if self.boot.state(target)?.priority > 0 => {
                self.record_firmware_rollback(&mut state, target, release)
            }
            _ => Ok(BootCheck::Nothing { booted }),
        }
    }

    fn trial(&self, state: &mut AgentState, target: SlotId, release: Release) -> Result<BootCheck> {
        // Commit is final: a slot already marked good is never judged again.
        if self.boot.state(target)?.successful {
            return self.commit(state, target, release);
        }
        state.phase = Phase::Trial {
            target,
            release: release.clone(),
        };
        self.store.save(state)?;
        fail::fail_point!("boot-check::after-trial-state");
        match health::run_checks(&self.config.health, self.config.health_deadline) {
            Ok(()) => self.commit(state, target, release),
            Err(failure) => {
                tracing::warn!(%failure, slot = %target, "health checks failed: rolling back");
                self.boot.mark_bad(target)?;
                fail::fail_point!("boot-check::after-mark-bad");
                let reason = failure.to_string();
                self.record_rollback(state, target, release.clone(), reason.clone())?;
                fail::fail_point!("boot-check::after-rollback-state");
                self.reboot()?;
                Ok(BootCheck::RolledBack {
                    slot: target,
                    version: release.version,
                    reason,
                })
            }
        }
    }

    fn commit(&self, state: &mut AgentState, slot: SlotId, release: Release) -> Result<BootCheck> {
        self.boot.mark_good(slot)?;
        fail::fail_point!("boot-check::after-mark-good");
        state.security_floor = state.security_floor.max(release.security_version);
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

    /// Switches back to the other slot when it holds a committed image; after the reboot,
    /// `boot-check` judges it like any update.
    pub fn rollback(&self, reboot: bool) -> Result<SlotId> {
        let mut state = self.store.load()?;
        let other = self.booted_slot()?.other();
        if matches!(state.phase, Phase::Writing { target, .. } if target == other) {
            return Err(Error::Refused(format!(
                "slot {other} is being written by an interrupted install"
            )));
        }
        let release = match state.slots.get(&other) {
            Some(record) if record.committed => record.release.clone(),
            _ => {
                return Err(Error::Refused(format!(
                    "slot {other} holds no committed image to go back to"
                )))
            }
        };
        self.boot.prepare()?;
        self.boot.ensure_fallback(other.other())?;
        self.boot.set_trial(other, self.config.tries)?;
        state.phase = Phase::Written {
            target: other,
            release,
            activated: true,
        };
        self.store.save(&state)?;
        if reboot {
            self.reboot()?;
        }
        Ok(other)
    }

    /// Slots, boot states, releases and the agent's phase.
    pub fn status(&self) -> Result<Status> {
        let state = self.store.load()?;
        let slots = self
            .pair
            .slots()
            .into_iter()
            .map(|slot| {
                let record = state.slots.get(&slot.id);
                Ok(SlotStatus {
                    slot: slot.id,
                    partuuid: slot.partuuid.to_string(),
                    size: slot.size,
                    boot: self.boot.state(slot.id)?,
                    release: record.map(|r| r.release.clone()),
                    committed: record.is_some_and(|r| r.committed),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Status {
            booted: self.booted_slot()?,
            next_boot: self.boot.next_boot()?,
            backend: self.boot.kind().to_string(),
            slots,
            state,
        })
    }

    /// The agent's saved state.
    pub fn load_state(&self) -> Result<AgentState> {
        Ok(self.store.load()?)
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Reports waiting to be sent to the server (kept beside the state file).
    pub fn reports(&self) -> ReportQueue {
        ReportQueue::new(Arc::clone(&self.state_fs))
    }

    /// This node's id in reports and rollout buckets: the configured `node_id`, else
    /// `/etc/machine-id`.
    pub fn node_id(&self) -> Result<String> {
        if let Some(id) = &self.config.node_id {
            return Ok(id.clone());
        }
        let id = std::fs::read_to_string("/etc/machine-id").map_err(Error::io(
            "no node_id configured and cannot read /etc/machine-id",
        ))?;
        Ok(id.trim().to_owned())
    }

    /// Channel metadata verified against the trusted root (through the repository's
    /// rotation chain) and the highest version seen; records what it taught us.
    pub fn verified_channel(
        &self,
        repo: &dyn Repository,
        channel: &str,
    ) -> Result<Verified<Channel>> {
        let mut state = self.store.load()?;
        let (rotated_root, metadata) = self.with_trust(&state, Some(channel), |trust| {
            let (root, metadata) = verify_channel_in(repo, channel, trust)?;
            let rotated = (root.bytes() != trust.root_bytes).then_some(root);
            Ok((rotated, metadata))
        })?;
        let seen = Some((channel, metadata.version));
        self.remember_trust(&mut state, rotated_root.as_ref(), seen)?;
        Ok(metadata)
    }

    fn keep_root(&self, root: &Verified<Root>) -> Result<()> {
        self.state_fs
            .write_atomic(Path::new(TRUSTED_ROOT_FILE), root.bytes())
            .map_err(Error::io("cannot store the rotated root"))?;
        tracing::info!(version = root.version(), "trusting a rotated root");
        Ok(())
    }

    fn resolve(&self, request: &InstallRequest, state: &AgentState) -> Result<Resolved> {
        let channel = request.channel.as_deref();
        self.with_trust(state, channel, |trust| {
            resolve(&request.source, channel, trust, &self.http_options)
        })
    }

    /// Runs `verify` with what the device trusts: its newest root, the highest version
    /// seen of `channel`, the time, the limits.
    fn with_trust<T>(
        &self,
        state: &AgentState,
        channel: Option<&str>,
        verify: impl FnOnce(&Trust<'_>) -> Result<T>,
    ) -> Result<T> {
        let root_bytes = self.trusted_root_bytes()?;
        verify(&Trust {
            root_bytes: &root_bytes,
            min_channel_version: channel
                .and_then(|c| state.channel_versions.get(c))
                .copied()
                .unwrap_or(0),
            now: (self.clock)(),
            limits: &self.limits,
        })
    }

    /// The rotated root kept beside the state, else the one shipped with the OS.
    fn trusted_root_bytes(&self) -> Result<Vec<u8>> {
        match self
            .state_fs
            .read(Path::new(TRUSTED_ROOT_FILE), self.limits.max_metadata_len)
        {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                signer::files::read_capped(&self.config.root, self.limits.max_metadata_len)
                    .map_err(Error::verify(self.config.root.display().to_string()))
            }
            Err(e) => Err(Error::io("cannot read the trusted root")(e)),
        }
    }

    /// What verification taught us is kept even if the install is then refused or skipped:
    /// a newer root, and the channel version (so older metadata is never accepted again).
    fn remember_trust(
        &self,
        state: &mut AgentState,
        rotated_root: Option<&Verified<Root>>,
        channel_seen: Option<(&str, u64)>,
    ) -> Result<()> {
        if let Some(root) = rotated_root {
            self.keep_root(root)?;
        }
        if let Some((channel, version)) = channel_seen {
            let seen = state
                .channel_versions
                .entry(channel.to_owned())
                .or_default();
            if version > *seen {
                *seen = version;
                self.store.save(state)?;
            }
        }
        Ok(())
    }

    fn check_policy(&self, state: &AgentState, release: &Release, force: bool) -> Result<()> {
        if release.product != self.config.product {
            return Err(Error::Refused(format!(
                "the bundle is for product {:?}; this node is {:?}",
                release.product, self.config.product
            )));
        }
        if release.security_version < state.security_floor {
            return Err(Error::Refused(format!(
                "security version {} is below this node's floor {} (anti-rollback)",
                release.security_version, state.security_floor
            )));
        }
        let slot_size = self.pair.slot_size();
        if release.image_size > slot_size {
            return Err(Error::Refused(format!(
                "the image is {} bytes; the slot holds only {slot_size}",
                release.image_size
            )));
        }
        if state.rolled_back_versions.contains(&release.version) {
            if !force {
                return Err(Error::Refused(format!(
                    "version {} rolled back on this node before; install --force to try it again",
                    release.version
                )));
            }
            tracing::warn!(version = %release.version, "installing a version that rolled back here before (--force)");
        }
        Ok(())
    }

    /// Runs the configured reboot command.
    pub fn reboot(&self) -> Result<()> {
        let command = &self.config.reboot;
        let failed = |reason: String| Error::Reboot {
            command: command.clone(),
            reason,
        };
        let (program, args) = command
            .split_first()
            .ok_or_else(|| failed("empty command".into()))?;
        let status = Command::new(program)
            .args(args)
            .status()
            .map_err(|e| failed(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(format!("exited with {status}")))
        }
    }
}

fn refuse_during_trial(state: &AgentState, booted: SlotId) -> Result<()> {
    match &state.phase {
        Phase::Trial { target, .. } | Phase::Written { target, .. } if *target == booted => {
            Err(Error::Refused(format!(
                "the booted slot {booted} is not committed yet (run boot-check first): \
                 the other slot is the last known good one and is not overwritten"
            )))
        }
        _ => Ok(()),
    }
}

fn writing(target: SlotId, release: &Release, durable_chunks: u64) -> Phase {
    Phase::Writing {
        target,
        release: release.clone(),
        durable_chunks,
    }
}

fn release_of(manifest: &Verified<Manifest>) -> Release {
    Release {
        product: manifest.product().to_owned(),
        version: manifest.version().to_string(),
        security_version: manifest.security_version(),
        manifest_sha256: manifest.manifest_sha256().to_hex(),
        image_size: manifest.image_size(),
        image_sha256: manifest.image_sha256().to_hex(),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}
