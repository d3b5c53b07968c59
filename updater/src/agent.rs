//! The agent of one node: its seams (disk, slot pair, boot control, state and trust stores,
//! clock) and what every operation shares — the state directory's lock, the reboot command,
//! the repository client, the facts of a [`NodeSnapshot`]. The operations themselves live by
//! job: `offer` (what a source offers, verified), `installing` (an offer written into the
//! inactive slot), `lifecycle` (activate, boot-check, commit, rollback; docs/DESIGN.md §6),
//! `status`, `reporting` (metrics and the report queue).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bundle::Limits;
use partitions::boot;
use partitions::boot::floor::FloorRecord;
use partitions::io::{BlockDevice, FileDisk, FileStore, RealFs};
use partitions::{BootControl, Disk, SlotId, SlotPair};
use repo_client::{Http, HttpOptions};
use time::OffsetDateTime;

use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::install::WriteOptions;
use crate::lock::StateLock;
use crate::snapshot::NodeSnapshot;
use crate::state::{AgentState, StateStore};
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
    pub(crate) config: AgentConfig,
    pub(crate) disk: Disk,
    pub(crate) pair: SlotPair,
    pub(crate) boot: Box<dyn BootControl>,
    pub(crate) store: StateStore,
    pub(crate) trust: TrustStore,
    pub(crate) state_fs: Arc<dyn FileStore>,
    /// The state directory on the real filesystem, locked by mutating commands (`None` over
    /// simulated seams, where one process is all there is).
    lock_dir: Option<PathBuf>,
    clock: Clock,
    pub(crate) limits: Limits,
    /// Pipeline tuning (workers, checkpoints, read-back).
    pub write_options: WriteOptions,
    /// Network behaviour (timeouts, retries, CA bundle).
    pub http_options: HttpOptions,
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
        agent.write_options.scratch_dir = Some(state_dir.clone());
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
        // A bundle's chunk index is streamed from a proven copy on disk, never held: the
        // agent's memory stays flat whatever the image size (docs/DESIGN.md §8).
        let limits = Limits {
            max_index_in_head: 0,
            ..Limits::default()
        };
        let http_options = HttpOptions {
            ca_bundle: config.server.as_ref().and_then(|s| s.ca_bundle.clone()),
            user_agent: concat!("tandem-updater/", env!("CARGO_PKG_VERSION")).to_owned(),
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

    /// The time to check expiry against: the clock, never before a time seen signed.
    pub(crate) fn now(&self, counters: &Counters) -> OffsetDateTime {
        counters.now((self.clock)())
    }

    /// The clock's time in Unix seconds.
    pub(crate) fn unix_now(&self) -> i64 {
        (self.clock)().unix_timestamp()
    }

    /// The slot the running system booted from.
    pub fn booted_slot(&self) -> Result<SlotId> {
        self.booted(&mut NodeSnapshot::default())
    }

    /// This node's id in reports and rollout buckets: the configured `node_id` (checked
    /// when the configuration was read), else `/etc/machine-id`, held to the same rule.
    pub fn node_id(&self) -> Result<String> {
        NodeSnapshot::default().node_id(&self.config)
    }

    /// The booted slot, as `snapshot` knows it.
    pub(crate) fn booted(&self, snapshot: &mut NodeSnapshot) -> Result<SlotId> {
        let root_hashes = || crate::verity::slot_root_hashes(self.boot.as_ref());
        snapshot.booted(&self.config, &self.pair, &root_hashes)
    }

    /// The state, as `snapshot` knows it.
    pub(crate) fn state<'s>(&self, snapshot: &'s mut NodeSnapshot) -> Result<&'s mut AgentState> {
        snapshot.state(&self.store)
    }

    /// The state and then the booted slot, as `snapshot` knows them.
    pub(crate) fn state_and_booted<'s>(
        &self,
        snapshot: &'s mut NodeSnapshot,
    ) -> Result<(&'s mut AgentState, SlotId)> {
        snapshot.state(&self.store)?;
        let booted = self.booted(snapshot)?;
        Ok((snapshot.state(&self.store)?, booted))
    }

    /// The state and the anti-rollback counters, as `snapshot` knows them.
    pub(crate) fn state_and_counters<'s>(
        &self,
        snapshot: &'s mut NodeSnapshot,
    ) -> Result<(&'s mut AgentState, &'s mut Counters)> {
        snapshot.state_and_counters(&self.store, &self.trust)
    }

    /// Takes the state directory's lock: every command that changes anything holds it, so
    /// two agents never interleave their writes. `None` over simulated seams.
    pub fn lock(&self) -> Result<Option<StateLock>> {
        self.lock_dir.as_deref().map(StateLock::acquire).transpose()
    }

    /// Whether another agent holds the state directory's lock now ([`StateLock::is_held`]:
    /// nothing is written). `false` over simulated seams.
    pub fn lock_is_held(&self) -> bool {
        self.lock_dir.as_deref().is_some_and(StateLock::is_held)
    }

    /// A client for the repository at `url`, with the configured CA bundle and timeouts.
    pub fn http(&self, url: &str) -> Result<Http> {
        Ok(Http::new(url, self.http_options.clone())?)
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

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}
