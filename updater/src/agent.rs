//! The agent's operations: install, boot-check, activate, rollback, status (docs/DESIGN.md §6).
//!
//! Every step first makes the boot state safe, then records the new phase in the state file,
//! so that a power cut between any two durable writes leaves a disk the firmware boots
//! correctly and a state the next start continues from. Named failpoints (feature
//! `failpoints`) sit after each durable step so tests can cut power exactly there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use bundle::verify::{verify_channel, ChainWalk, Verified};
use bundle::{Channel, Limits, Manifest, Root};
use partitions::boot;
use partitions::boot::floor::FloorRecord;
use partitions::io::{BlockDevice, FileDisk, FileStore, RealFs};
use partitions::{BootControl, Disk, SlotBootState, SlotId, SlotPair};
use serde::Serialize;
use time::OffsetDateTime;

use crate::assets::{
    boot_files_status, partition_pairs_status, AssetPlan, BootFileStatus, PairStatus,
};
use crate::cmdline::{booted_from, BootedFrom};
use crate::config::AgentConfig;
use crate::error::{Error, Refusal, Result};
use crate::health;
use crate::http::{Http, HttpOptions};
use crate::install::{write_image, WriteOptions, WriteReport};
use crate::lock::StateLock;
use crate::metrics::{self, Event, Recorded, Snapshot};
use crate::reports::ReportQueue;
use crate::source::{
    display_path, verify_bundle, verify_named_bundle, BundleSource, DirRepository, FileSource,
    Repository, Source,
};
use crate::state::{AgentState, Phase, Release, SlotRecord, StateStore};
use crate::trust::{Counters, TrustStore};

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
    trust: TrustStore,
    state_fs: Arc<dyn FileStore>,
    /// The state directory on the real filesystem, locked by mutating commands (`None` over
    /// simulated seams, where one process is all there is).
    lock_dir: Option<PathBuf>,
    clock: Clock,
    limits: Limits,
    /// Pipeline tuning (workers, checkpoints, read-back).
    pub write_options: WriteOptions,
    /// Network behaviour (timeouts, retries, CA bundle).
    pub http_options: HttpOptions,
}

/// What to install, as the command line names it.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub source: Source,
    /// The channel, for a repository (and only there).
    pub channel: Option<String>,
    pub options: InstallOptions,
}

/// How to install.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// Install even a version that rolled back on this node.
    pub force: bool,
    /// Write and verify now, flip later with `activate`.
    pub stage: bool,
}

/// An update verified once, from its root of trust to its manifest: what the daemon decides
/// on and what the install writes are the same signed documents, by construction.
pub struct Offer {
    pub manifest: Verified<Manifest>,
    pub source: Box<dyn BundleSource>,
    /// The channel metadata that named the bundle (none for a bundle file).
    pub channel: Option<Verified<Channel>>,
}

/// A channel verified against the root chain, before its bundle is looked at.
pub struct ChannelOffer {
    pub root: Verified<Root>,
    pub metadata: Verified<Channel>,
}

/// What an install did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallOutcome {
    pub target: SlotId,
    pub release: Release,
    pub activated: bool,
    /// What the write did: chunks written, reused, zeroed, resumed; bytes fetched and reused.
    #[serde(rename = "write")]
    pub report: WriteReport,
}

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

/// A snapshot for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub booted: SlotId,
    pub next_boot: Option<SlotId>,
    pub backend: String,
    pub slots: Vec<SlotStatus>,
    /// The further partition pairs (a release's partition images) and what each holds.
    pub partition_pairs: Vec<PairStatus>,
    pub state: AgentState,
    /// The anti-rollback counters (security floor, channel versions, newest signed time).
    pub counters: Counters,
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
    /// Its kernel, initramfs, UKI and command line where the loader reads them (empty for a
    /// backend that keeps no boot files).
    pub boot_files: Vec<BootFileStatus>,
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
            state_fs: Arc::new(RealFs::new(state_dir.clone())),
            boot_fs: None,
        };
        let mut agent = Self::with_io(config, io)?;
        agent.lock_dir = Some(state_dir);
        Ok(agent)
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
        let limits = Limits::default();
        let http_options = HttpOptions {
            ca_bundle: config.server.as_ref().and_then(|s| s.ca_bundle.clone()),
            ..HttpOptions::default()
        };
        Ok(Agent {
            store: StateStore::new(Arc::clone(&io.state_fs), state_name),
            trust: TrustStore::new(
                Arc::clone(&io.state_fs),
                config.root.clone(),
                limits.clone(),
                FloorRecord::new(Arc::clone(disk.device()), &pair),
            ),
            lock_dir: None,
            state_fs: io.state_fs,
            config,
            disk,
            pair,
            boot,
            clock: Box::new(OffsetDateTime::now_utc),
            limits,
            write_options: WriteOptions {
                verify_readback,
                ..WriteOptions::default()
            },
            http_options,
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

    /// Takes the state directory's lock: every command that changes anything holds it, so
    /// two agents never interleave their writes. `None` over simulated seams.
    pub fn lock(&self) -> Result<Option<StateLock>> {
        self.lock_dir.as_deref().map(StateLock::acquire).transpose()
    }

    /// Verifies `request.source`, writes it into the inactive slot and (unless staged)
    /// flips the boot entry to a trial of it.
    pub fn install(&self, request: &InstallRequest) -> Result<InstallOutcome> {
        let offer = self.offer(&request.source, request.channel.as_deref())?;
        self.install_offer(offer, request.options)
    }

    /// What `source` offers, verified: a bundle file against the trusted root, or the
    /// bundle a repository's channel names, through the root chain and the channel.
    pub fn offer(&self, source: &Source, channel: Option<&str>) -> Result<Offer> {
        let repo: Box<dyn Repository> = match (source, channel) {
            (Source::File(path), None) => return self.offer_file(path),
            (Source::File(path), Some(_)) => {
                return Err(Error::usage(format!(
                    "{} is a bundle file: --channel applies to repositories only",
                    path.display()
                )))
            }
            (_, None) => {
                return Err(Error::usage(format!(
                    "{source} is a repository: name the channel with --channel"
                )))
            }
            (Source::Dir(dir), Some(_)) => Box::new(DirRepository::new(dir)),
            (Source::Url(url), Some(_)) => Box::new(self.http(url)?),
        };
        let channel = channel.unwrap_or_default();
        let verified = self.verify_channel(repo.as_ref(), channel, None)?;
        self.offer_of_channel(repo.as_ref(), verified)
    }

    fn offer_file(&self, path: &Path) -> Result<Offer> {
        let state = self.store.load()?;
        let counters = self.trust.counters(&state)?;
        let now = counters.now((self.clock)());
        let root = ChainWalk {
            root: self.trust.trusted_root()?,
            complete: true,
        }
        .fresh(now)
        .map_err(Error::verify("the trusted root"))?;
        let source = FileSource::new(path);
        let manifest = verify_bundle(&source, &root, &self.limits)?;
        self.see_signed_time(&state, &manifest)?;
        Ok(Offer {
            manifest,
            source: Box::new(source),
            channel: None,
        })
    }

    /// A client for the repository at `url`, with the configured CA bundle and timeouts.
    pub fn http(&self, url: &str) -> Result<Http> {
        Http::new(url, self.http_options.clone())
    }

    /// Verifies `channel` in `repo`: walks the root chain (storing each new root at once),
    /// then checks the channel's signatures, expiry and version, and records its version.
    /// `body` is the channel file when the caller fetched it already (a conditional poll).
    pub fn verify_channel(
        &self,
        repo: &dyn Repository,
        channel: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ChannelOffer> {
        let state = self.store.load()?;
        let mut counters = self.trust.counters(&state)?;
        let now = counters.now((self.clock)());
        let max = self.limits.max_metadata_len;
        let root = self.trust.walk(
            &repo.name(),
            |version| repo.fetch(&format!("{version}.root.json"), max),
            now,
        )?;
        let path = format!("channels/{channel}.json");
        let name = display_path(repo, &path);
        let bytes = match body {
            Some(bytes) => bytes,
            None => repo
                .fetch(&path, max)?
                .ok_or_else(|| Error::usage(format!("{name} does not exist: no such channel")))?,
        };
        let min_version = counters.min_channel_version(channel, &root);
        let metadata = verify_channel(&root, &bytes, channel, min_version, now, &self.limits)
            .map_err(Error::verify(&name))?;
        if counters.see_channel(channel, metadata.version, &root) {
            self.trust.save_counters(&counters)?;
        }
        Ok(ChannelOffer { root, metadata })
    }

    /// The offer of a verified channel: the bundle it names, verified against the same root.
    pub fn offer_of_channel(&self, repo: &dyn Repository, channel: ChannelOffer) -> Result<Offer> {
        let (source, manifest) =
            verify_named_bundle(repo, &channel.root, &channel.metadata, &self.limits)?;
        self.see_signed_time(&self.store.load()?, &manifest)?;
        Ok(Offer {
            manifest,
            source,
            channel: Some(channel.metadata),
        })
    }

    fn see_signed_time(&self, state: &AgentState, manifest: &Verified<Manifest>) -> Result<()> {
        self.trust.update(state, |counters| {
            counters.see_signed_time(manifest.created())
        })
    }

    /// Writes a verified offer into the inactive slot and (unless staged) flips the boot
    /// entry to a trial of it.
    pub fn install_offer(&self, offer: Offer, options: InstallOptions) -> Result<InstallOutcome> {
        let started = Instant::now();
        let outcome = self.write_offer(offer, options)?;
        self.record_metrics(Event::Install {
            duration: started.elapsed(),
            report: &outcome.report,
        });
        Ok(outcome)
    }

    fn write_offer(&self, offer: Offer, options: InstallOptions) -> Result<InstallOutcome> {
        let mut state = self.store.load()?;
        let booted = self.booted_slot()?;
        self.refuse_during_trial(&state, booted)?;
        let release = release_of(&offer.manifest);
        let counters = self.trust.counters(&state)?;
        self.check_policy(&state, &counters, &release, options.force)?;

        let target = booted.other();
        let assets = AssetPlan::check(
            &offer.manifest,
            self.boot.as_ref(),
            &self.disk,
            &self.pair,
            target,
        )?;
        let resume = match &state.phase {
            Phase::Writing {
                target: t,
                release: r,
                durable_chunks,
            } if *t == target && r.manifest_sha256 == release.manifest_sha256 => *durable_chunks,
            _ => 0,
        };
        // docs/DESIGN.md §6: before the first byte, the target can never be chosen.
        self.boot.set_unbootable(target)?;
        fail::fail_point!("install::after-unbootable");
        state.slots.remove(&target);
        state.record_partitions(target, assets.partition_records(&release, false));
        state.phase = writing(target, &release, resume);
        self.store.save(&state)?;
        fail::fail_point!("install::after-writing-state");
        if resume > 0 {
            tracing::info!(resume, "resuming an interrupted install");
        }

        let slot = self.disk.slot_device(self.pair.slot(target))?;
        // Over a network, chunks the running slot already holds are copied, not fetched.
        let active = match offer.source.is_remote() {
            true => Some(self.disk.slot_device(self.pair.slot(booted))?),
            false => None,
        };
        let report = write_image(
            &offer.manifest,
            offer.source.as_ref(),
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
        let assets_written = assets.partition_records(&release, true);
        assets.write(&offer.manifest, offer.source.as_ref())?;
        fail::fail_point!("install::after-assets");
        state.record_partitions(target, assets_written);
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
        if !options.stage {
            self.activate_written(&mut state)?;
        }
        Ok(InstallOutcome {
            target,
            release,
            activated: !options.stage,
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
            _ => Err(Refusal::NothingStaged.into()),
        }
    }

    fn activate_written(&self, state: &mut AgentState) -> Result<SlotId> {
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
        let check = self.judge_boot();
        self.record_metrics(Event::BootCheck(&check));
        check
    }

    fn judge_boot(&self) -> Result<BootCheck> {
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
            if slot == booted {
                self.reboot()?;
            }
            return Ok(BootCheck::UnrecordedTrial { slot, booted });
        }
        Ok(BootCheck::Nothing { booted })
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
        if self.config.health.is_empty() {
            tracing::warn!(slot = %target, "no [[health]] checks configured: committing unchecked");
        }
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
        self.trust.raise_floor(state, release.security_version)?;
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
        let mut state = self.store.load()?;
        let other = self.booted_slot()?.other();
        if matches!(state.phase, Phase::Writing { target, .. } if target == other) {
            return Err(Refusal::SlotBeingWritten { slot: other }.into());
        }
        let release = self.fallback_release(&state, other)?;
        check_floor(
            &self.trust.counters(&state)?,
            release.security_version,
            force,
        )?;
        self.boot.prepare()?;
        self.boot.ensure_fallback(other.other())?;
        self.boot.set_trial(other, self.config.tries)?;
        state.phase = Phase::Written {
            target: other,
            release,
            activated: true,
        };
        self.store.save(&state)?;
        self.record_metrics(Event::Refresh);
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
                    boot_files: match self.boot.boot_files() {
                        Some(files) => boot_files_status(&files, slot.id)?,
                        None => Vec::new(),
                    },
                })
            })
            .collect::<Result<_>>()?;
        let booted = self.booted_slot()?;
        Ok(Status {
            booted,
            next_boot: self.boot.next_boot()?,
            backend: self.boot.kind().to_string(),
            slots,
            partition_pairs: partition_pairs_status(&self.disk, &self.pair, &state, booted),
            counters: self.trust.peek_counters(&state)?,
            state,
        })
    }

    /// Whether the firmware would boot `slot` next.
    pub fn boots_next(&self, slot: SlotId) -> Result<bool> {
        Ok(self.boot.next_boot()? == Some(slot))
    }

    /// The agent's saved state.
    pub fn load_state(&self) -> Result<AgentState> {
        Ok(self.store.load()?)
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Takes `event` into the metrics and rewrites the textfile, when `metrics_textfile` is
    /// configured. A failure is logged, never returned: metrics never fail an operation.
    pub fn record_metrics(&self, event: Event<'_>) {
        let Some(path) = &self.config.metrics_textfile else {
            return;
        };
        if let Err(error) = self.write_metrics(path, event) {
            tracing::warn!(error = %crate::error::chain(&error), "cannot write the metrics");
        }
    }

    fn write_metrics(&self, path: &Path, event: Event<'_>) -> Result<()> {
        let mut recorded = Recorded::load(self.state_fs.as_ref());
        recorded.apply(event, (self.clock)().unix_timestamp());
        recorded.save(self.state_fs.as_ref())?;
        let state = self.store.load()?;
        let booted_slot = self.booted_slot()?;
        let text = metrics::render(&Snapshot {
            booted_slot,
            booted_version: state
                .slots
                .get(&booted_slot)
                .map_or("factory", |record| record.release.version.as_str()),
            security_floor: self.trust.counters(&state)?.security_floor,
            recorded: &recorded,
        });
        metrics::write_textfile(path, &text)
            .map_err(Error::io(format!("cannot write {}", path.display())))
    }

    /// Reports waiting to be sent to the server (kept beside the state file).
    pub fn reports(&self) -> ReportQueue {
        ReportQueue::new(Arc::clone(&self.state_fs))
    }

    /// This node's id in reports and rollout buckets: the configured `node_id` (checked
    /// when the configuration was read), else `/etc/machine-id`, held to the same rule.
    pub fn node_id(&self) -> Result<String> {
        if let Some(id) = &self.config.node_id {
            return Ok(id.clone());
        }
        const MACHINE_ID: &str = "/etc/machine-id";
        let id = std::fs::read_to_string(MACHINE_ID).map_err(Error::io(format!(
            "no node_id configured and cannot read {MACHINE_ID}"
        )))?;
        let id = id.trim().to_owned();
        proto::check_node_id(&id).map_err(|e| {
            Error::usage(format!(
                "{MACHINE_ID}: {e}; set node_id in the configuration"
            ))
        })?;
        Ok(id)
    }

    fn check_policy(
        &self,
        state: &AgentState,
        counters: &Counters,
        release: &Release,
        force: bool,
    ) -> Result<()> {
        if release.product != self.config.product {
            return Err(Refusal::OtherProduct {
                offered: release.product.clone(),
                node: self.config.product.clone(),
            }
            .into());
        }
        check_floor(counters, release.security_version, false)?;
        let slot = self.pair.slot_size();
        if release.image_size > slot {
            return Err(Refusal::TooLargeForSlot {
                image: release.image_size,
                slot,
            }
            .into());
        }
        if state.rolled_back_versions.contains(&release.version) {
            if !force {
                return Err(Refusal::RolledBackHere {
                    version: release.version.clone(),
                }
                .into());
            }
            tracing::warn!(version = %release.version, "installing a version that rolled back here before (--force)");
        }
        Ok(())
    }

    /// The last known good slot is never overwritten: no install while the booted slot is
    /// unproven, whether the state file says so (a trial in progress) or the boot control
    /// does (the state file was lost during a trial: `ensure_fallback` refuses a booted slot
    /// in trial). A committed booted slot the backend lost track of (a careless provisioning)
    /// is made the fallback again before anything is written.
    fn refuse_during_trial(&self, state: &AgentState, booted: SlotId) -> Result<()> {
        if state.in_trial(booted) {
            return Err(Refusal::InTrial { booted }.into());
        }
        self.boot.prepare()?;
        self.boot.ensure_fallback(booted)?;
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

/// Refuses a security version below the floor; `force` (rollback only) overrides it with a
/// warning.
fn check_floor(counters: &Counters, security_version: u64, force: bool) -> Result<()> {
    if security_version >= counters.security_floor {
        return Ok(());
    }
    if force {
        tracing::warn!(
            security_version,
            floor = counters.security_floor,
            "going below the security floor (--force)"
        );
        return Ok(());
    }
    Err(Refusal::BelowSecurityFloor {
        offered: security_version,
        floor: counters.security_floor,
        kept_in: counters.floor_source.to_string(),
    }
    .into())
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
