//! The install of a verified offer (docs/DESIGN.md §6): the policy checks, then the target
//! slot made unbootable and recorded as being written, given the PARTUUID its verity root
//! hash names (a release with a tree), the image and the boot assets
//! streamed into it with checkpoints, the written release recorded, and (unless staged) the
//! boot entry flipped to a trial of it. Named failpoints (feature `failpoints`) sit after
//! each durable step so tests can cut power exactly there.

use std::time::{Duration, Instant};

use bundle::verify::Verified;
use bundle::Manifest;
use partitions::SlotId;
use serde::Serialize;

use crate::agent::Agent;
use crate::assets::{AssetPlan, PartitionWrite};
use crate::error::{Refusal, Result};
use crate::install::{open_index, write_image, Sources, WriteReport};
use crate::metrics::{Event, InstallRecord};
use crate::offer::Offer;
use crate::snapshot::NodeSnapshot;
use crate::source::Source;
use crate::state::{AgentState, Phase, Release, SlotRecord};
use crate::trust::Counters;
use crate::verity::{check_release_cmdlines, set_partuuid, target_partuuid};

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

/// What an install did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallOutcome {
    pub target: SlotId,
    pub release: Release,
    pub activated: bool,
    /// What the write of the root image did: chunks written, reused, zeroed, resumed; bytes
    /// fetched and reused.
    #[serde(rename = "write")]
    pub report: WriteReport,
    /// What the write of each partition image did, in the same terms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionWrite>,
}

impl InstallOutcome {
    /// What the install's writes did together: the root image's and every partition
    /// image's counts added (the bundle's size once).
    pub fn total(&self) -> WriteReport {
        self.partitions
            .iter()
            .fold(self.report, |sum, part| plus(sum, &part.write))
    }
}

/// `sum` with `more`'s counts added; `sum`'s bundle size kept (one bundle).
fn plus(sum: WriteReport, more: &WriteReport) -> WriteReport {
    WriteReport {
        chunks_written: sum.chunks_written + more.chunks_written,
        chunks_zeroed: sum.chunks_zeroed + more.chunks_zeroed,
        chunks_resumed: sum.chunks_resumed + more.chunks_resumed,
        bytes_read: sum.bytes_read + more.bytes_read,
        ranges_read: sum.ranges_read + more.ranges_read,
        chunks_reused: sum.chunks_reused + more.chunks_reused,
        bytes_reused: sum.bytes_reused + more.bytes_reused,
        bytes_reused_in_place: sum.bytes_reused_in_place + more.bytes_reused_in_place,
        bundle_bytes: sum.bundle_bytes,
        index_bytes_read: sum.index_bytes_read + more.index_bytes_read,
    }
}

impl std::fmt::Display for InstallOutcome {
    /// The write of the root image, then each partition image's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.report)?;
        for part in &self.partitions {
            write!(f, "; {part}")?;
        }
        Ok(())
    }
}

/// The metrics event of a successful install that took `duration`.
pub fn install_event(duration: Duration, report: &WriteReport) -> Event {
    Event::Install(InstallRecord {
        duration_seconds: duration.as_secs_f64(),
        bytes_fetched: report.bytes_read,
        bytes_reused: report.bytes_reused,
        bytes_reused_in_place: report.bytes_reused_in_place,
        bundle_bytes: report.bundle_bytes,
    })
}

impl Agent {
    /// Verifies `request.source`, writes it into the inactive slot and (unless staged)
    /// flips the boot entry to a trial of it.
    pub fn install(&self, request: &InstallRequest) -> Result<InstallOutcome> {
        let mut snapshot = NodeSnapshot::default();
        let offer = self.offer(&mut snapshot, &request.source, request.channel.as_deref())?;
        self.install_offer(&mut snapshot, offer, request.options)
    }

    /// Writes a verified offer into the inactive slot and (unless staged) flips the boot
    /// entry to a trial of it.
    pub fn install_offer(
        &self,
        snapshot: &mut NodeSnapshot,
        offer: Offer,
        options: InstallOptions,
    ) -> Result<InstallOutcome> {
        let started = Instant::now();
        let outcome = self.write_offer(snapshot, offer, options)?;
        self.record_metrics(snapshot, install_event(started.elapsed(), &outcome.total()));
        Ok(outcome)
    }

    fn write_offer(
        &self,
        snapshot: &mut NodeSnapshot,
        offer: Offer,
        options: InstallOptions,
    ) -> Result<InstallOutcome> {
        let (state, booted) = self.state_and_booted(snapshot)?;
        self.refuse_during_trial(state, booted)?;
        let release = release_of(&offer.manifest);
        let (state, counters) = self.state_and_counters(snapshot)?;
        self.check_policy(state, counters, &release, options.force)?;

        let target = booted.other();
        let mut assets = AssetPlan::check(
            &offer.manifest,
            self.boot.as_ref(),
            &self.disk,
            &self.pair,
            target,
        )?;
        check_release_cmdlines(&offer.manifest, offer.source.as_ref())?;
        let partuuid = target_partuuid(&offer.manifest, &self.disk, self.pair.slot(target))?;
        let resume = match &state.phase {
            Phase::Writing {
                target: t,
                release: r,
                durable_chunks,
            } if *t == target && r.manifest_sha256 == release.manifest_sha256 => *durable_chunks,
            _ => 0,
        };
        // Over a network, chunks the running slot already holds are copied, not fetched.
        let active = match offer.source.is_remote() {
            true => Some(self.disk.slot_device(self.pair.slot(booted))?),
            false => None,
        };
        // The chunk index is fetched and proven before anything on the node changes.
        let index = open_index(
            &offer.manifest,
            offer.source.as_ref(),
            self.write_options.scratch_dir.as_deref(),
            active.as_deref(),
        )?;
        assets.resume_from(state, &release, target);
        // docs/DESIGN.md §6: before the first byte, the target can never be chosen.
        self.boot.set_unbootable(target)?;
        fail::fail_point!("install::after-unbootable");
        state.slots.remove(&target);
        state.record_partitions(target, assets.partition_records(&release, false));
        state.phase = writing(target, &release, resume);
        self.store.save(state)?;
        fail::fail_point!("install::after-writing-state");
        // docs/DESIGN.md §5.2: the slot, unbootable, takes the PARTUUID its root hash names.
        if let Some(uuid) = partuuid {
            set_partuuid(&self.disk, self.pair.slot(target), uuid)?;
            fail::fail_point!("install::after-partuuid");
        }
        if resume > 0 {
            tracing::info!(resume, "resuming an interrupted install");
        }

        let slot = self.disk.slot_device(self.pair.slot(target))?;
        let sources = Sources {
            bundle: offer.source.as_ref(),
            store: offer.store.as_deref(),
        };
        let mut report = write_image(
            &index,
            sources,
            slot.as_ref(),
            active.as_deref(),
            resume,
            &self.write_options,
            |durable| {
                state.phase = writing(target, &release, durable);
                self.store.save(state)?;
                fail::fail_point!("install::after-checkpoint");
                Ok(())
            },
        )?;
        report.index_bytes_read = index.bytes_read();
        fail::fail_point!("install::after-image-verified");
        let assets_written = assets.partition_records(&release, true);
        let partitions = assets.write(
            offer.source.as_ref(),
            &self.write_options,
            |asset, durable| {
                state.record_partition_progress(target, asset, durable);
                self.store.save(state)?;
                fail::fail_point!("install::after-checkpoint");
                Ok(())
            },
        )?;
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
        self.store.save(state)?;
        fail::fail_point!("install::after-written-state");
        if !options.stage {
            self.activate_written(state)?;
        }
        Ok(InstallOutcome {
            target,
            release,
            activated: !options.stage,
            report,
            partitions,
        })
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
        counters.check_floor(release.security_version, false)?;
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
