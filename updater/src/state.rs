//! The agent's durable state: one JSON file, replaced atomically at every step (docs/DESIGN.md §6).
//!
//! A power cut at any instant leaves either the old or the new file, never a mix, because
//! every save goes through [`FileStore::write_atomic`] (temp file, fsync, rename, fsync of
//! the directory). The next start reads the phase and continues or cleans up from there.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use partitions::io::FileStore;
use partitions::SlotId;
use serde::{Deserialize, Serialize};

/// The state file is small; anything bigger is not ours.
const MAX_STATE_FILE: u64 = 1 << 20;

/// The format written in [`AgentState::format`].
const STATE_FORMAT: u32 = 1;

/// A release as the agent records it: what a slot holds or is being given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub product: String,
    pub version: String,
    pub security_version: u64,
    /// Lowercase hex SHA-256 of the signed manifest bytes: names the exact bundle.
    pub manifest_sha256: String,
    pub image_size: u64,
    pub image_sha256: String,
}

impl Release {
    /// The image provisioned at the factory, which no bundle described: its version reads
    /// `factory` and its security version 0 (the lowest, so the floor decides).
    pub fn factory(product: &str) -> Release {
        Release {
            product: product.to_owned(),
            version: FACTORY_VERSION.into(),
            security_version: 0,
            manifest_sha256: String::new(),
            image_size: 0,
            image_sha256: String::new(),
        }
    }
}

/// The version a factory image is recorded with.
pub const FACTORY_VERSION: &str = "factory";

/// Where the agent is in an update (docs/DESIGN.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Phase {
    /// Nothing in progress.
    Idle,
    /// `target` is marked unbootable and being written; the first `durable_chunks` chunks
    /// are known to be on disk (synced), so a restart resumes there.
    Writing {
        target: SlotId,
        release: Release,
        durable_chunks: u64,
    },
    /// `target` holds the complete, verified image; `activated` once the boot entry flipped.
    Written {
        target: SlotId,
        release: Release,
        activated: bool,
    },
    /// `target` booted and its health checks are running.
    Trial { target: SlotId, release: Release },
    /// `slot` passed its health checks and is marked good: final.
    Committed { slot: SlotId, release: Release },
    /// `slot` failed (health checks, or it never came up) and the other slot is in use.
    RolledBack {
        slot: SlotId,
        release: Release,
        reason: String,
    },
}

/// Everything the agent remembers across reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    pub format: u32,
    pub phase: Phase,
    /// What each slot is known to hold; a slot provisioned at the factory has no record.
    pub slots: BTreeMap<SlotId, SlotRecord>,
    /// Where agents before the counters file kept the security floor: read once to rebuild
    /// the counters (`trust.rs`), never written.
    #[serde(default, rename = "security_floor", skip_serializing)]
    pub legacy_security_floor: u64,
    /// Where agents before the counters file kept the channel versions: ignored (a version
    /// reset is safe, the channel's signature and expiry still hold), never written.
    #[serde(default, rename = "channel_versions", skip_serializing)]
    pub legacy_channel_versions: BTreeMap<String, u64>,
    /// Versions that rolled back on this node: never installed again automatically.
    pub rolled_back_versions: BTreeSet<String>,
    /// What the agent wrote into the partitions of further pairs (`NAME-a`/`NAME-b`, a
    /// release's partition images), by pair name and slot. A partition it never wrote (one
    /// provisioned at the factory) has no record. Absent from files of agents before it and
    /// left out while empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partitions: BTreeMap<String, BTreeMap<SlotId, PartitionRecord>>,
    /// The reboot lease this node holds: taken before it rebooted into a new slot, given
    /// back (and cleared) once boot-check judged that slot. Kept here so a crash between
    /// the reboot and the release still releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<HeldLease>,
    /// What a written release waits for before the node reboots into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_wait: Option<RebootWait>,
}

/// A reboot lease held (docs/DESIGN.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldLease {
    /// The FleetLock group.
    pub group: String,
    /// When it was granted (RFC 3339).
    pub taken_at: String,
}

/// Why a written release has not been rebooted into yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootWait {
    /// The release waiting.
    pub version: String,
    /// `window` (outside every reboot window), `resume` (the channel is paused) or `lease`
    /// (the group's slots are taken).
    pub waiting_for: String,
    /// When the next window opens (RFC 3339); absent for a lease, which is asked again at
    /// every poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl RebootWait {
    /// One line for logs, `status` and reports.
    pub fn describe(&self) -> String {
        let what = match (self.waiting_for.as_str(), &self.until) {
            ("window", Some(until)) => format!("a reboot window until {until}"),
            ("resume", _) => "its paused channel to be resumed".to_owned(),
            (other, _) => format!("a reboot {other}"),
        };
        format!("{} is staged and waits for {what}", self.version)
    }
}

impl AgentState {
    /// Records that `slot`'s partition of each pair in `images` holds (or, not `complete`,
    /// is being given) the image described. Other pairs keep their records: an install
    /// leaves the partitions its release has no image for as they are.
    pub fn record_partitions(
        &mut self,
        slot: SlotId,
        images: impl IntoIterator<Item = (String, PartitionRecord)>,
    ) {
        for (pair, record) in images {
            self.partitions
                .entry(pair)
                .or_default()
                .insert(slot, record);
        }
    }

    /// The chunks of partition image `asset` known durable in `slot`'s partition of its pair
    /// from an interrupted write of the same image by `release` (0: none, write from the
    /// start). The resumed write hashes them again before it goes on.
    pub fn durable_partition_chunks(
        &self,
        slot: SlotId,
        release: &Release,
        asset: &str,
        sha256: &str,
    ) -> u64 {
        let writing_it = matches!(&self.phase, Phase::Writing { target, release: r, .. }
            if *target == slot && r.manifest_sha256 == release.manifest_sha256);
        self.partitions
            .get(asset)
            .and_then(|records| records.get(&slot))
            .filter(|r| writing_it && !r.complete && r.sha256 == sha256)
            .map_or(0, |r| r.durable_chunks)
    }

    /// Records that the first `durable_chunks` chunks of the image being written into
    /// `slot`'s partition of pair `asset` are synced (a checkpoint of its write).
    pub fn record_partition_progress(&mut self, slot: SlotId, asset: &str, durable_chunks: u64) {
        let record = self
            .partitions
            .get_mut(asset)
            .and_then(|records| records.get_mut(&slot));
        if let Some(record) = record.filter(|r| !r.complete) {
            record.durable_chunks = durable_chunks;
        }
    }

    /// Whether the phase has `slot` in a trial: written for it to boot, or booted and
    /// being judged. Such a slot is unproven, and the other one is the last known good.
    pub fn in_trial(&self, slot: SlotId) -> bool {
        matches!(&self.phase,
            Phase::Trial { target, .. } | Phase::Written { target, .. } if *target == slot)
    }
}

/// What one slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRecord {
    pub release: Release,
    /// Passed its health checks once: a fallback the agent may switch back to.
    pub committed: bool,
}

/// The partition image one partition of a pair holds, as the agent wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRecord {
    /// The release that carried the image.
    pub product: String,
    pub version: String,
    /// The image asset's name (the pair's name) and signed size and SHA-256 (lowercase hex).
    pub asset: String,
    pub size: u64,
    pub sha256: String,
    /// The image was written and read back whole; `false` while (or after an interrupted)
    /// install writes it.
    pub complete: bool,
    /// While not `complete`: how many of the image's chunks are synced to the partition
    /// (its write's last checkpoint), where an interrupted install of the same release
    /// resumes. Absent from files of agents before it, and left out while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub durable_chunks: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for AgentState {
    fn default() -> Self {
        AgentState {
            format: STATE_FORMAT,
            phase: Phase::Idle,
            slots: BTreeMap::new(),
            legacy_security_floor: 0,
            legacy_channel_versions: BTreeMap::new(),
            rolled_back_versions: BTreeSet::new(),
            partitions: BTreeMap::new(),
            lease: None,
            reboot_wait: None,
        }
    }
}

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the state file {path} is damaged ({reason}); moving it away starts the agent from Idle \
         (the trust and anti-rollback counters live apart from it and are kept, and the \
         security floor has a second copy in the disk's GPT that no file move lowers)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Reads and atomically replaces the state file through the I/O seam.
#[derive(Debug, Clone)]
pub struct StateStore {
    fs: Arc<dyn FileStore>,
    path: PathBuf,
}

impl StateStore {
    /// `path` is relative to the root of `fs`.
    pub fn new(fs: Arc<dyn FileStore>, path: impl Into<PathBuf>) -> Self {
        StateStore {
            fs,
            path: path.into(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, or the initial one when no file exists yet.
    pub fn load(&self) -> Result<AgentState, StateError> {
        let bytes = match self.fs.read(&self.path, MAX_STATE_FILE) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AgentState::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let state: AgentState =
            serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e.to_string()))?;
        if state.format != STATE_FORMAT {
            return Err(self.corrupt(format!("unknown format {}", state.format)));
        }
        Ok(state)
    }

    /// Durably replaces the state file with `state`.
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| write_error(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        bytes.push(b'\n');
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.fs.create_dir_all(dir).map_err(write_error)?;
        }
        self.fs
            .write_atomic(&self.path, &bytes)
            .map_err(write_error)
    }

    fn corrupt(&self, reason: String) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use partitions::io::MemFs;

    fn release(version: &str) -> Release {
        Release {
            product: "acme-edge".into(),
            version: version.into(),
            security_version: 2,
            manifest_sha256: "ab".repeat(32),
            image_size: 4096,
            image_sha256: "cd".repeat(32),
        }
    }

    #[test]
    fn a_missing_file_is_the_initial_state() {
        let store = StateStore::new(Arc::new(MemFs::new()), "var/lib/tandem/state.json");
        assert_eq!(store.load().unwrap(), AgentState::default());
    }

    #[test]
    fn every_phase_round_trips() {
        let store = StateStore::new(Arc::new(MemFs::new()), "state.json");
        let phases = [
            Phase::Idle,
            Phase::Writing {
                target: SlotId::B,
                release: release("2.0.0"),
                durable_chunks: 17,
            },
            Phase::Written {
                target: SlotId::B,
                release: release("2.0.0"),
                activated: true,
            },
            Phase::Trial {
                target: SlotId::B,
                release: release("2.0.0"),
            },
            Phase::Committed {
                slot: SlotId::B,
                release: release("2.0.0"),
            },
            Phase::RolledBack {
                slot: SlotId::A,
                release: release("3.0.0"),
                reason: "health check failed".into(),
            },
        ];
        for phase in phases {
            let mut state = AgentState {
                phase,
                ..AgentState::default()
            };
            state.rolled_back_versions.insert("3.0.0".into());
            state.slots.insert(
                SlotId::A,
                SlotRecord {
                    release: release("1.0.0"),
                    committed: true,
                },
            );
            store.save(&state).unwrap();
            assert_eq!(store.load().unwrap(), state);
        }
    }

    #[test]
    fn partition_records_round_trip_and_a_file_without_them_loads() {
        let fs = Arc::new(MemFs::new());
        let store = StateStore::new(fs.clone(), "state.json");
        // As agents before the partition records wrote it.
        let older = br#"{"format": 1, "phase": {"phase": "idle"}, "slots": {},
            "rolled_back_versions": []}"#;
        fs.write_atomic(Path::new("state.json"), older).unwrap();
        assert_eq!(store.load().unwrap(), AgentState::default());

        let mut state = AgentState::default();
        let record = PartitionRecord {
            product: "acme-edge".into(),
            version: "2.0.0".into(),
            asset: "verity".into(),
            size: 4096,
            sha256: "ef".repeat(32),
            complete: true,
            durable_chunks: 0,
        };
        state.record_partitions(SlotId::B, [("verity".to_owned(), record.clone())]);
        store.save(&state).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.partitions["verity"][&SlotId::B], record);
        assert_eq!(loaded, state);
    }

    #[test]
    fn a_partition_write_resumes_only_in_the_same_install_of_the_same_image() {
        let (v2, sha) = (release("2.0.0"), "ef".repeat(32));
        let record = PartitionRecord {
            product: "acme-edge".into(),
            version: "2.0.0".into(),
            asset: "verity".into(),
            size: 4 << 20,
            sha256: sha.clone(),
            complete: false,
            durable_chunks: 0,
        };
        let mut state = AgentState {
            phase: Phase::Writing {
                target: SlotId::B,
                release: v2.clone(),
                durable_chunks: 9,
            },
            ..AgentState::default()
        };
        state.record_partitions(SlotId::B, [("verity".to_owned(), record)]);
        state.record_partition_progress(SlotId::B, "verity", 4);
        let store = StateStore::new(Arc::new(MemFs::new()), "state.json");
        store.save(&state).unwrap();
        let state = store.load().unwrap();
        assert_eq!(
            state.durable_partition_chunks(SlotId::B, &v2, "verity", &sha),
            4
        );

        let other_release = Release {
            manifest_sha256: "12".repeat(32),
            ..v2.clone()
        };
        for (slot, release, sha256) in [
            (SlotId::A, &v2, sha.as_str()),
            (SlotId::B, &other_release, sha.as_str()),
            (SlotId::B, &v2, "00"),
        ] {
            assert_eq!(
                state.durable_partition_chunks(slot, release, "verity", sha256),
                0
            );
        }
        // Written whole: a later checkpoint count is not recorded, nor resumed from.
        let mut done = state.clone();
        let written = done.partitions.get_mut("verity").unwrap();
        let record = written.get_mut(&SlotId::B).unwrap();
        (record.complete, record.durable_chunks) = (true, 0);
        done.record_partition_progress(SlotId::B, "verity", 7);
        assert_eq!(
            done.durable_partition_chunks(SlotId::B, &v2, "verity", &sha),
            0
        );
        let json = serde_json::to_string(&done).unwrap();
        assert!(
            !json.contains("durable_chunks\":0") && json.contains("\"complete\":true"),
            "{json}"
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let fs = Arc::new(MemFs::new());
        fs.write_atomic(Path::new("state.json"), b"{\"format\": 1, \"pha")
            .unwrap();
        let store = StateStore::new(fs, "state.json");
        let error = store.load().unwrap_err().to_string();
        assert!(
            error.contains("state.json") && error.contains("damaged"),
            "{error}"
        );
    }
}
