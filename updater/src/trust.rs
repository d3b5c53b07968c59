//! What the node trusts, and the counters that only ever go up (docs/DESIGN.md §2, §4).
//!
//! Two small files beside the state file, each replaced atomically and fsynced:
//! - `root.json`: the newest root this node verified. Every root of a rotation chain is
//!   stored as soon as it verifies, so a walk cut short (a lost connection, more rotations
//!   than one poll may take) continues from there next time.
//! - `counters.json`: the security floor, the highest channel versions seen (with the release
//!   keys that signed them) and the newest signed time verified.
//!
//! They live apart from the install phase (`state.json`) on purpose: moving a damaged state
//! file away must never reset anti-rollback. A lost counters file is rebuilt from what the
//! state file records (the committed releases), never from nothing when something is known.
//!
//! The security floor has a second copy outside the state directory, in the GPT entries of
//! the slot pair ([`partitions::boot::floor`]), raised before `counters.json` at each commit.
//! Whenever the counters are read the higher of the two copies is the floor, and a copy found
//! lower is raised to it: losing the whole state directory never lowers the floor
//! (docs/DESIGN.md §2).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bundle::verify::{walk_chain, Verified};
use bundle::{Limits, Root};
use partitions::boot::floor::FloorRecord;
use partitions::io::FileStore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Refusal, Result};
use crate::state::AgentState;

/// The newest verified root, kept beside the state file.
const TRUSTED_ROOT_FILE: &str = "root.json";
/// The anti-rollback counters, kept beside the state file.
const COUNTERS_FILE: &str = "counters.json";
const MAX_COUNTERS_FILE: u64 = 1 << 20;
const COUNTERS_FORMAT: u32 = 1;

/// The counters that only go up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    pub format: u32,
    /// Bundles with a lower `security_version` are refused (raised at each commit).
    pub security_floor: u64,
    /// Per channel: the highest metadata version seen, under which release keys.
    pub channels: BTreeMap<String, ChannelSeen>,
    /// The newest signed time verified (a manifest's `created`): the agent's clock never
    /// runs behind it, so a node whose clock is far behind still refuses expired metadata.
    #[serde(with = "time::serde::rfc3339::option")]
    pub newest_signed_time: Option<OffsetDateTime>,
    /// Where `security_floor` came from when it was read (not stored).
    #[serde(skip)]
    pub floor_source: FloorSource,
}

/// Which copy gave the security floor its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FloorSource {
    /// `counters.json`.
    #[default]
    CountersFile,
    /// Rebuilt from the committed releases the state file records.
    CommittedReleases,
    /// The record in the GPT entries of the slot pair (their 1-based numbers).
    GptEntries([u32; 2]),
    /// `counters.json` and the GPT record, which agree.
    CountersFileAndGpt([u32; 2]),
}

impl std::fmt::Display for FloorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FloorSource::CountersFile => write!(f, "{COUNTERS_FILE}"),
            FloorSource::CommittedReleases => write!(f, "the committed releases of the state file"),
            FloorSource::GptEntries([a, b]) => {
                write!(f, "the GPT entries {a} and {b} of the slot pair")
            }
            FloorSource::CountersFileAndGpt([a, b]) => write!(
                f,
                "{COUNTERS_FILE} and the GPT entries {a} and {b} of the slot pair"
            ),
        }
    }
}

/// The highest version of one channel seen, and the release role it was signed under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSeen {
    pub version: u64,
    /// [`release_role_id`] of the root that verified it.
    pub release_role: String,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            format: COUNTERS_FORMAT,
            security_floor: 0,
            channels: BTreeMap::new(),
            newest_signed_time: None,
            floor_source: FloorSource::CountersFile,
        }
    }
}

impl Counters {
    /// The lowest channel version still acceptable. Versions seen under other release keys
    /// do not count: after compromised keys signed a channel at version 2^64−1, a root that
    /// rotates the release role starts the channel's versions afresh (TUF's fast-forward
    /// attack recovery).
    pub fn min_channel_version(&self, channel: &str, root: &Root) -> u64 {
        let role = release_role_id(root);
        self.channels
            .get(channel)
            .filter(|seen| seen.release_role == role)
            .map_or(0, |seen| seen.version)
    }

    /// Records `version` of `channel` seen under `root`; whether anything changed.
    pub fn see_channel(&mut self, channel: &str, version: u64, root: &Root) -> bool {
        if version <= self.min_channel_version(channel, root) && self.channels.contains_key(channel)
        {
            return false;
        }
        self.channels.insert(
            channel.to_owned(),
            ChannelSeen {
                version,
                release_role: release_role_id(root),
            },
        );
        true
    }

    /// Records a verified signed time; whether it was newer.
    pub fn see_signed_time(&mut self, time: OffsetDateTime) -> bool {
        let newer = !self.newest_signed_time.is_some_and(|t| time <= t);
        if newer {
            self.newest_signed_time = Some(time);
        }
        newer
    }

    /// Refuses a security version below the floor; `force` (rollback only) overrides it
    /// with a warning.
    pub fn check_floor(&self, security_version: u64, force: bool) -> Result<()> {
        if security_version >= self.security_floor {
            return Ok(());
        }
        if force {
            tracing::warn!(
                security_version,
                floor = self.security_floor,
                "going below the security floor (--force)"
            );
            return Ok(());
        }
        Err(Refusal::BelowSecurityFloor {
            offered: security_version,
            floor: self.security_floor,
            kept_in: self.floor_source.to_string(),
        }
        .into())
    }

    /// The time to check expiry against: the wall clock, but never before a time this node
    /// has seen signed.
    pub fn now(&self, wall_clock: OffsetDateTime) -> OffsetDateTime {
        self.newest_signed_time
            .map_or(wall_clock, |seen| wall_clock.max(seen))
    }

    /// Counters rebuilt from the state file when `counters.json` is lost: the floor of the
    /// committed releases, and what older agents kept in the state file itself.
    fn rebuilt_from(state: &AgentState) -> Counters {
        let committed_floor = state
            .slots
            .values()
            .filter(|record| record.committed)
            .map(|record| record.release.security_version)
            .max()
            .unwrap_or(0);
        Counters {
            security_floor: committed_floor.max(state.legacy_security_floor),
            floor_source: FloorSource::CommittedReleases,
            ..Counters::default()
        }
    }
}

/// Names a release role by its sorted key ids and threshold.
pub fn release_role_id(root: &Root) -> String {
    let role = root.role(bundle::role::RoleName::Release);
    let keys: Vec<String> = role.keyids().iter().map(|k| k.to_hex()).collect();
    format!("{}-of-{}", role.threshold().get(), keys.join(","))
}

/// Reads and writes the trust files through the I/O seam, and the floor's second copy
/// through the disk's.
pub struct TrustStore {
    fs: Arc<dyn FileStore>,
    /// The root shipped with the OS (`root` in updater.toml).
    shipped_root: PathBuf,
    limits: Limits,
    /// The security floor's copy in the slot pair's GPT entries.
    floor_record: FloorRecord,
}

/// The counters as read, and what to write back to bring both copies of the floor level.
struct Read {
    counters: Counters,
    /// `counters.json` is missing, damaged or below the GPT record: store `counters`.
    save_file: bool,
    /// The GPT record is below `counters.security_floor`: raise it.
    raise_record: bool,
}

impl TrustStore {
    pub fn new(
        fs: Arc<dyn FileStore>,
        shipped_root: PathBuf,
        limits: Limits,
        floor_record: FloorRecord,
    ) -> Self {
        TrustStore {
            fs,
            shipped_root,
            limits,
            floor_record,
        }
    }

    /// The counters, rebuilt from `state` (and stored) when the file is missing or damaged;
    /// the floor is the higher of `counters.json` and the GPT record, and the lower copy is
    /// raised to it.
    pub fn counters(&self, state: &AgentState) -> Result<Counters> {
        Ok(self.counters_and_writes(state)?.0)
    }

    /// [`TrustStore::counters`], and whether bringing the copies level wrote anything (a
    /// later read would then find the copies level and say so in `floor_source`).
    pub fn counters_and_writes(&self, state: &AgentState) -> Result<(Counters, bool)> {
        let (counters, save_file) = self.read_counters_file(state)?;
        self.bring_level(self.level(counters, save_file)?)
    }

    /// What [`TrustStore::counters`] would give now that `counters`, read earlier in the
    /// same operation (and stored since whenever they changed), are what `counters.json`
    /// holds: the floor and its source against the GPT record as it is now, without reading
    /// the file again.
    pub fn counters_again(&self, counters: &Counters) -> Result<Counters> {
        let as_stored = Counters {
            floor_source: FloorSource::CountersFile,
            ..counters.clone()
        };
        Ok(self.bring_level(self.level(as_stored, false)?)?.0)
    }

    /// Writes what `read` says is behind; whether it wrote.
    fn bring_level(&self, read: Read) -> Result<(Counters, bool)> {
        if read.raise_record {
            self.floor_record.raise(read.counters.security_floor)?;
        }
        if read.save_file {
            self.save_counters(&read.counters)?;
        }
        Ok((read.counters, read.raise_record || read.save_file))
    }

    /// The counters as [`TrustStore::counters`] gives them, without storing anything:
    /// for `status`, which runs without the state lock and must never write trust.
    pub fn peek_counters(&self, state: &AgentState) -> Result<Counters> {
        Ok(self.read_counters(state)?.counters)
    }

    /// Raises the security floor to `floor` (a commit): the GPT record first, then
    /// `counters.json`, so that a cut in between leaves the higher floor where losing the
    /// state directory does not lose it; the next read brings the file up to it. `counters`
    /// are the counters as [`TrustStore::counters`] read them, read before the record is
    /// raised: a commit's own raise is not a counters file left behind, and logging it as one
    /// would tell an operator of a healthy node that its state was lost (a first read may
    /// store what it rebuilt, at the floor as it stood, which a cut there leaves as it was
    /// before the commit).
    pub fn raise_floor(&self, floor: u64, counters: &mut Counters) -> Result<()> {
        self.floor_record.raise(floor)?;
        fail::fail_point!("boot-check::after-floor-record");
        self.update(counters, |counters| {
            let raised = floor > counters.security_floor;
            counters.security_floor = counters.security_floor.max(floor);
            raised
        })
    }

    /// The counters with the floor taken from the higher of the file (or its rebuild) and
    /// the GPT record.
    fn read_counters(&self, state: &AgentState) -> Result<Read> {
        let (counters, save_file) = self.read_counters_file(state)?;
        self.level(counters, save_file)
    }

    /// `counters` (from the file, or rebuilt: `save_file`) against the GPT record.
    fn level(&self, mut counters: Counters, save_file: bool) -> Result<Read> {
        let recorded = self.floor_record.read()?;
        let file_behind = recorded > counters.security_floor;
        if file_behind {
            tracing::warn!(
                recorded,
                floor = counters.security_floor,
                source = %counters.floor_source,
                "the floor recorded in the GPT is higher: taking it"
            );
            counters.security_floor = recorded;
        }
        if recorded > 0 && recorded == counters.security_floor {
            let indices = self.floor_record.indices();
            counters.floor_source = match counters.floor_source {
                FloorSource::CountersFile if !file_behind => {
                    FloorSource::CountersFileAndGpt(indices)
                }
                _ => FloorSource::GptEntries(indices),
            };
        }
        Ok(Read {
            raise_record: recorded < counters.security_floor,
            save_file: save_file || file_behind,
            counters,
        })
    }

    /// The stored counters, or (`true`) ones rebuilt from the state when the file is missing,
    /// damaged or of an unknown format.
    fn read_counters_file(&self, state: &AgentState) -> Result<(Counters, bool)> {
        match self.fs.read(Path::new(COUNTERS_FILE), MAX_COUNTERS_FILE) {
            Ok(bytes) => match serde_json::from_slice::<Counters>(&bytes) {
                Ok(counters) if counters.format == COUNTERS_FORMAT => return Ok((counters, false)),
                Ok(counters) => {
                    tracing::warn!(
                        format = counters.format,
                        "unknown counters format: rebuilding"
                    )
                }
                Err(error) => tracing::warn!(%error, "damaged counters file: rebuilding"),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot read {COUNTERS_FILE}"))(e)),
        }
        Ok((Counters::rebuilt_from(state), true))
    }

    /// Applies `change` to `counters` (as read by [`TrustStore::counters`]) and stores them
    /// when it says it changed something.
    pub fn update(
        &self,
        counters: &mut Counters,
        change: impl FnOnce(&mut Counters) -> bool,
    ) -> Result<()> {
        if change(counters) {
            self.save_counters(counters)?;
        }
        Ok(())
    }

    /// Durably replaces the counters.
    pub fn save_counters(&self, counters: &Counters) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(counters)
            .map_err(|e| Error::io("cannot encode the counters")(io::Error::other(e)))?;
        self.fs
            .write_atomic(Path::new(COUNTERS_FILE), &bytes)
            .map_err(Error::io(format!("cannot write {COUNTERS_FILE}")))
    }

    /// The newest root this node trusts: the stored one or the one shipped with the OS,
    /// whichever has the higher version (an OS that ships a newer root, with keys revoked,
    /// wins over an older stored copy). Expiry is not checked here: see [`Self::walk`].
    pub fn trusted_root(&self) -> Result<Verified<Root>> {
        let shipped = bundle::files::read_capped(&self.shipped_root, self.limits.max_metadata_len)
            .map_err(|e| match e {
                bundle::Error::Io { source, .. } => {
                    Error::Config(crate::config::ConfigError::Read {
                        path: self.shipped_root.clone(),
                        source,
                    })
                }
                other => Error::verify(self.shipped_root.display().to_string())(other),
            })?;
        let shipped = self.parse(&shipped, &self.shipped_root.display().to_string())?;
        match self
            .fs
            .read(Path::new(TRUSTED_ROOT_FILE), self.limits.max_metadata_len)
        {
            Ok(bytes) => {
                let stored = self.parse(&bytes, "the stored root")?;
                Ok(if shipped.version() > stored.version() {
                    shipped
                } else {
                    stored
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(shipped),
            Err(e) => Err(Error::io("cannot read the stored root")(e)),
        }
    }

    fn parse(&self, bytes: &[u8], name: &str) -> Result<Verified<Root>> {
        let walk = walk_chain::<bundle::Error>(bytes, |_| Ok(None), |_| Ok(()), &self.limits)
            .map_err(Error::verify(name))?;
        Ok(walk.root)
    }

    /// Walks the rotation chain from `trusted` (as [`TrustStore::trusted_root`] read it)
    /// with `fetch`, storing every root as soon as it verifies, and returns the newest if it
    /// has not expired at `now`. A chain longer than one walk may take is continued on the
    /// next call.
    pub fn walk(
        &self,
        trusted: &Verified<Root>,
        repository: &str,
        mut fetch: impl FnMut(u64) -> Result<Option<Vec<u8>>>,
        now: OffsetDateTime,
    ) -> Result<Verified<Root>> {
        let name = format!("{repository}: root chain");
        let walk = walk_chain(
            trusted.bytes(),
            |version| fetch(version).map_err(Walk::Agent),
            |root| self.store_root(root).map_err(Walk::Agent),
            &self.limits,
        )
        .map_err(|e| e.into_error(&name))?;
        if !walk.complete {
            let error = bundle::error::VerifyError::TooManyRootRotations {
                max: self.limits.max_root_rotations,
            };
            tracing::warn!(
                version = walk.root.version(),
                "more root rotations than one walk takes: continuing on the next"
            );
            return Err(Error::verify(name)(error.into()));
        }
        walk.fresh(now).map_err(Error::verify(name))
    }

    fn store_root(&self, root: &Verified<Root>) -> Result<()> {
        self.fs
            .write_atomic(Path::new(TRUSTED_ROOT_FILE), root.bytes())
            .map_err(Error::io("cannot store the rotated root"))?;
        tracing::info!(version = root.version(), "trusting a rotated root");
        Ok(())
    }
}

/// A chain walk fails on the chain (hostile or damaged) or on the agent's own I/O.
enum Walk {
    Chain(bundle::Error),
    Agent(Error),
}

impl From<bundle::Error> for Walk {
    fn from(error: bundle::Error) -> Self {
        Walk::Chain(error)
    }
}

impl Walk {
    fn into_error(self, name: &str) -> Error {
        match self {
            Walk::Chain(error) => Error::verify(name)(error),
            Walk::Agent(error) => error,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::{Release, SlotRecord};
    use partitions::SlotId;
    use time::macros::datetime;

    #[test]
    fn the_clock_never_runs_behind_a_signed_time() {
        let mut counters = Counters::default();
        let wall = datetime!(2020-01-01 0:00 UTC);
        assert_eq!(counters.now(wall), wall);
        assert!(counters.see_signed_time(datetime!(2026-12-01 0:00 UTC)));
        assert!(!counters.see_signed_time(datetime!(2026-11-01 0:00 UTC)));
        assert_eq!(counters.now(wall), datetime!(2026-12-01 0:00 UTC));
        let later = datetime!(2027-01-01 0:00 UTC);
        assert_eq!(counters.now(later), later);
    }

    /// A trust store over an empty state directory and a newly laid out disk, and the
    /// disk's floor record.
    fn store_on_a_new_disk() -> (TrustStore, FloorRecord) {
        let (dev, pair) = crate::snapshot::tests::pair();
        let record = FloorRecord::new(dev, &pair);
        let store = TrustStore::new(
            Arc::new(partitions::io::MemFs::new()),
            PathBuf::from("/nonexistent/root.json"),
            Limits::default(),
            record.clone(),
        );
        (store, record)
    }

    #[test]
    fn the_higher_copy_of_the_floor_wins_and_the_lower_is_raised() {
        let state = AgentState::default();
        let (store, record) = store_on_a_new_disk();
        let mut counters = store.counters(&state).unwrap();
        store.raise_floor(5, &mut counters).unwrap();
        assert_eq!(record.read().unwrap(), 5);
        let counters = store.counters(&state).unwrap();
        assert_eq!(
            (counters.security_floor, counters.floor_source),
            (5, FloorSource::CountersFileAndGpt([2, 3]))
        );

        // The state directory lost: the GPT record gives the floor, and the file gets it.
        store.fs.remove(Path::new(COUNTERS_FILE)).unwrap();
        let peeked = store.peek_counters(&state).unwrap();
        assert_eq!(peeked.security_floor, 5);
        assert!(matches!(peeked.floor_source, FloorSource::GptEntries(_)));
        assert!(peeked
            .floor_source
            .to_string()
            .contains("GPT entries 2 and 3"));
        assert!(
            store.fs.read(Path::new(COUNTERS_FILE), 1 << 20).is_err(),
            "peek wrote"
        );
        assert_eq!(store.counters(&state).unwrap().security_floor, 5);
        let stored: Counters =
            serde_json::from_slice(&store.fs.read(Path::new(COUNTERS_FILE), 1 << 20).unwrap())
                .unwrap();
        assert_eq!(stored.security_floor, 5);

        // A file above the record (written by an agent from before the record): the record
        // is raised to it, never the file lowered.
        store
            .save_counters(&Counters {
                security_floor: 8,
                ..Counters::default()
            })
            .unwrap();
        assert_eq!(record.read().unwrap(), 5);
        let counters = store.counters(&state).unwrap();
        assert_eq!(
            (counters.security_floor, counters.floor_source),
            (8, FloorSource::CountersFile)
        );
        assert_eq!(record.read().unwrap(), 8);
        let mut counters = store.counters(&state).unwrap();
        store.raise_floor(6, &mut counters).unwrap();
        assert_eq!(store.counters(&state).unwrap().security_floor, 8);
        assert_eq!(record.read().unwrap(), 8);
    }

    #[test]
    fn counters_read_again_see_the_copies_the_first_read_levelled() {
        let state = AgentState::default();
        let (store, record) = store_on_a_new_disk();
        record.raise(5).unwrap();
        let (first, wrote) = store.counters_and_writes(&state).unwrap();
        assert!(wrote, "the missing file was not stored");
        assert_eq!(
            (first.security_floor, first.floor_source),
            (5, FloorSource::GptEntries([2, 3]))
        );
        let again = store.counters_again(&first).unwrap();
        assert_eq!(
            (again.security_floor, again.floor_source),
            (5, FloorSource::CountersFileAndGpt([2, 3]))
        );
        assert_eq!(
            (again.security_floor, again.floor_source),
            {
                let read = store.counters(&state).unwrap();
                (read.security_floor, read.floor_source)
            },
            "not what reading the file again gives"
        );
    }

    #[test]
    fn a_lost_counters_file_is_rebuilt_from_the_committed_releases() {
        let mut state = AgentState::default();
        let mut release = Release::factory("acme");
        release.security_version = 7;
        state.slots.insert(
            SlotId::A,
            SlotRecord {
                release: release.clone(),
                committed: true,
            },
        );
        release.security_version = 9;
        state.slots.insert(
            SlotId::B,
            SlotRecord {
                release,
                committed: false,
            },
        );
        let (store, _) = store_on_a_new_disk();
        // `status` sees the rebuilt floor without writing trust (it holds no lock).
        assert_eq!(store.peek_counters(&state).unwrap().security_floor, 7);
        assert!(store.fs.read(Path::new(COUNTERS_FILE), 1 << 20).is_err());
        assert_eq!(store.counters(&state).unwrap().security_floor, 7);
        // Stored at once: a damaged copy is rebuilt the same way, never from nothing.
        store
            .fs
            .write_atomic(Path::new(COUNTERS_FILE), b"{\"format\": 1, \"secu")
            .unwrap();
        assert_eq!(store.counters(&state).unwrap().security_floor, 7);
    }
}
