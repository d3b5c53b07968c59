//! What one operation knows of its node: the state file, the anti-rollback counters, the
//! trusted root, the booted slot, the node id and the recorded metrics, each read the first
//! time a step asks for it and then kept for the rest of the operation.
//!
//! One operation (a poll, an install, a boot-check, a rollback) holds one [`NodeSnapshot`]
//! and passes it to every step, so a poll reads `state.json`, `counters.json`, the kernel
//! command line and the machine id once each. The agent holds the state directory's lock
//! for the whole operation, so what it read stays true except for its own writes, and every
//! step that writes the state or the counters changes the snapshot's copy first (the saves
//! themselves stay where the durable protocol puts them). Facts are read lazily, at the
//! point the first step needs them, so every read — and every error it gives — happens
//! where it happened when each step read its own. When that first read of the counters had
//! to bring a copy of the floor level (a rebuilt `counters.json`, a raised GPT record), the
//! next step sees them as a read after those writes would
//! ([`TrustStore::counters_again`]), still without reading the file.

use std::path::Path;

use bundle::verify::Verified;
use bundle::Root;
use partitions::io::FileStore;
use partitions::{SlotId, SlotPair};

use crate::cmdline::{booted_from, entry_selected, roothash, BootedFrom, LOADER_ENTRY_SELECTED};
use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::metrics::Recorded;
use crate::state::{AgentState, StateStore};
use crate::trust::{Counters, TrustStore};

/// Where the node id comes from when the configuration names none.
const MACHINE_ID: &str = "/etc/machine-id";

/// The facts of one operation, each read at most once (see the module's documentation).
#[derive(Default)]
pub struct NodeSnapshot {
    state: Option<AgentState>,
    counters: Option<Counters>,
    /// The first read of the counters wrote (a copy was behind): the next step sees them as
    /// a read after that write would, once.
    counters_written: bool,
    trusted_root: Option<Verified<Root>>,
    booted: Option<SlotId>,
    node_id: Option<String>,
    recorded: Option<Recorded>,
}

impl NodeSnapshot {
    /// The agent's state, as saved in `store` (read the first time).
    pub fn state(&mut self, store: &StateStore) -> Result<&mut AgentState> {
        let state = match self.state.take() {
            Some(state) => state,
            None => store.load()?,
        };
        Ok(self.state.insert(state))
    }

    /// The anti-rollback counters, read (and brought level, as [`TrustStore::counters`]
    /// does) the first time; steps that change them change this copy and store it.
    pub fn counters(&mut self, store: &StateStore, trust: &TrustStore) -> Result<&mut Counters> {
        Ok(self.state_and_counters(store, trust)?.1)
    }

    /// The state and the counters together, for steps that read or change both.
    pub fn state_and_counters(
        &mut self,
        store: &StateStore,
        trust: &TrustStore,
    ) -> Result<(&mut AgentState, &mut Counters)> {
        let counters = match self.counters.take() {
            Some(counters) if self.counters_written => {
                self.counters_written = false;
                trust.counters_again(&counters)?
            }
            Some(counters) => counters,
            None => {
                let (counters, written) = trust.counters_and_writes(self.state(store)?)?;
                self.counters_written = written;
                counters
            }
        };
        let state = match self.state.take() {
            Some(state) => state,
            None => store.load()?,
        };
        Ok((self.state.insert(state), self.counters.insert(counters)))
    }

    /// The newest root this node trusts (read the first time); a walk of the rotation
    /// chain replaces it with the root it reached.
    pub fn trusted_root(&mut self, trust: &TrustStore) -> Result<Verified<Root>> {
        match &self.trusted_root {
            Some(root) => Ok(root.clone()),
            None => {
                let root = trust.trusted_root()?;
                self.trusted_root = Some(root.clone());
                Ok(root)
            }
        }
    }

    /// Records the root a walk of the rotation chain reached (and stored).
    pub fn walked_to(&mut self, root: &Verified<Root>) {
        self.trusted_root = Some(root.clone());
    }

    /// The slot the running system booted from (read the first time); `root_hashes` gives
    /// each slot's verity root hash (A, B), asked only when the command line has `roothash=`.
    pub fn booted(
        &mut self,
        config: &AgentConfig,
        pair: &SlotPair,
        root_hashes: &dyn Fn() -> Result<[Option<String>; 2]>,
    ) -> Result<SlotId> {
        if let Some(slot) = self.booted {
            return Ok(slot);
        }
        let slot = read_booted_slot(config, pair, root_hashes)?;
        self.booted = Some(slot);
        Ok(slot)
    }

    /// This node's id in reports and rollout buckets (read the first time).
    pub fn node_id(&mut self, config: &AgentConfig) -> Result<String> {
        if let Some(id) = &self.node_id {
            return Ok(id.clone());
        }
        let id = read_node_id(config)?;
        self.node_id = Some(id.clone());
        Ok(id)
    }

    /// The metrics' last known values in `fs` (read the first time).
    pub fn recorded(&mut self, fs: &dyn FileStore) -> &mut Recorded {
        self.recorded.get_or_insert_with(|| Recorded::load(fs))
    }
}

/// The configured `booted_slot`, else the slot every witness names: the kernel command
/// line (`cmdline` in the configuration) by `tandem.slot=` or the PARTUUID of its root, by
/// `roothash=` (the one slot whose release has that root hash, and the slot whose partition
/// has the PARTUUID that root hash derives), and systemd-boot's
/// `LoaderEntrySelected` (in `efivars`). Witnesses that disagree are an error: the agent
/// does not act on a slot it is not sure of.
fn read_booted_slot(
    config: &AgentConfig,
    pair: &SlotPair,
    root_hashes: &dyn Fn() -> Result<[Option<String>; 2]>,
) -> Result<SlotId> {
    if let Some(slot) = &config.booted_slot {
        return slot.parse().map_err(Error::BootedSlot);
    }
    let path = &config.cmdline;
    let text = std::fs::read_to_string(path)
        .map_err(Error::io(format!("cannot read {}", path.display())))?;
    let mut witnesses: Vec<(String, SlotId)> = Vec::new();
    if let Some(from) = booted_from(&text) {
        witnesses.push((describe(&from), slot_of(from, pair)?));
    }
    if let Some(hash) = roothash(&text) {
        let hashes = root_hashes()?;
        let holders: Vec<SlotId> = [SlotId::A, SlotId::B]
            .into_iter()
            .zip(hashes)
            .filter(|(_, h)| h.as_deref() == Some(hash.as_str()))
            .map(|(slot, _)| slot)
            .collect();
        if let [slot] = holders[..] {
            witnesses.push((format!("roothash={hash}"), slot));
        }
        if let Some(witness) = partuuid_witness(&hash, pair) {
            witnesses.push(witness);
        }
    }
    let efivars = &config.efivars;
    if let Some(slot) = entry_selected(efivars).map_err(Error::io(format!(
        "cannot read {} in {}",
        LOADER_ENTRY_SELECTED,
        efivars.display()
    )))? {
        witnesses.push(("LoaderEntrySelected".into(), slot));
    }
    agreed(&witnesses, path)
}

/// The slot whose partition has the PARTUUID root hash `hash` derives (systemd's
/// convention, set by the install: docs/DESIGN.md §5.2); none when no slot has it (a
/// release installed before the agent set PARTUUIDs) or `hash` is no SHA-256.
fn partuuid_witness(hash: &str, pair: &SlotPair) -> Option<(String, SlotId)> {
    let uuid = bundle::verity::partuuid(&hash.parse().ok()?);
    let slot = pair.by_partuuid(&uuid)?;
    Some((format!("PARTUUID {uuid} of roothash={hash}"), slot))
}

/// The slot all `witnesses` name; an error when they disagree or there is none.
fn agreed(witnesses: &[(String, SlotId)], cmdline: &Path) -> Result<SlotId> {
    let Some((_, slot)) = witnesses.first() else {
        return Err(Error::BootedSlot(format!(
            "{} has neither tandem.slot=, root=PARTUUID= nor a roothash= of one slot's release, \
             and no LoaderEntrySelected names a Tandem entry",
            cmdline.display()
        )));
    };
    if witnesses.iter().all(|(_, other)| other == slot) {
        return Ok(*slot);
    }
    let said: Vec<String> = witnesses
        .iter()
        .map(|(witness, slot)| format!("{witness} says slot {slot}"))
        .collect();
    Err(Error::BootedSlot(format!(
        "{}: refusing to act on either slot",
        said.join(", ")
    )))
}

/// How a command-line witness is named in errors.
fn describe(from: &BootedFrom) -> String {
    match from {
        BootedFrom::Slot(letter) => format!("tandem.slot={letter}"),
        BootedFrom::PartUuid(uuid) => format!("root=PARTUUID={uuid}"),
    }
}

/// The slot a command-line witness names.
fn slot_of(from: BootedFrom, pair: &SlotPair) -> Result<SlotId> {
    match from {
        BootedFrom::Slot(letter) => letter.to_string().parse().map_err(Error::BootedSlot),
        BootedFrom::PartUuid(uuid) => uuid
            .parse()
            .ok()
            .and_then(|uuid| pair.by_partuuid(&uuid))
            .ok_or_else(|| {
                Error::BootedSlot(format!(
                    "root=PARTUUID={uuid} is neither slot of the pair {:?}",
                    pair.name
                ))
            }),
    }
}

/// The configured `node_id` (checked when the configuration was read), else
/// `/etc/machine-id`, held to the same rule.
fn read_node_id(config: &AgentConfig) -> Result<String> {
    if let Some(id) = &config.node_id {
        return Ok(id.clone());
    }
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

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use bundle::Limits;
    use partitions::boot::floor::FloorRecord;
    use partitions::io::{BlockDevice, MemDisk, MemFs};

    use super::*;
    use crate::state::Phase;

    /// A newly laid out 64 MiB disk in memory and its slot pair (the trust tests' too).
    pub(crate) fn pair() -> (Arc<dyn BlockDevice>, SlotPair) {
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDisk::new(64 << 20));
        let layout =
            partitions::create::Layout::for_disk(64 << 20, 1 << 20, None, 1 << 20, vec![]).unwrap();
        partitions::create::lay_out(&dev, &layout).unwrap();
        let pair = partitions::Disk::from_device(Arc::clone(&dev))
            .unwrap()
            .slots(partitions::DEFAULT_PAIR)
            .unwrap();
        (dev, pair)
    }

    #[test]
    fn each_fact_is_read_once_and_a_new_snapshot_reads_again() {
        let fs = Arc::new(MemFs::new());
        let store = StateStore::new(fs.clone(), "state.json");
        let (dev, pair) = pair();
        let trust = TrustStore::new(
            fs.clone(),
            PathBuf::from("/nonexistent/root.json"),
            Limits::default(),
            FloorRecord::new(dev, &pair),
        );
        let dir = tempfile::tempdir().unwrap();
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "quiet tandem.slot=b\n").unwrap();
        let config = AgentConfig::parse(&format!(
            "disk = \"/dev/sda\"\nboot = \"gpt\"\nstate = \"/var/lib/tandem/state.json\"\n\
             root = \"/etc/tandem/root.json\"\nproduct = \"acme-edge\"\n\
             cmdline = \"{}\"\nnode_id = \"node-1\"\nreboot = [\"true\"]\n",
            cmdline.display()
        ))
        .unwrap();

        let mut snapshot = NodeSnapshot::default();
        assert_eq!(snapshot.state(&store).unwrap().phase, Phase::Idle);
        assert_eq!(snapshot.counters(&store, &trust).unwrap().security_floor, 0);
        assert_eq!(
            snapshot
                .booted(&config, &pair, &|| Ok([None, None]))
                .unwrap(),
            SlotId::B
        );
        assert_eq!(snapshot.node_id(&config).unwrap(), "node-1");

        // Another writer changes every file: this operation keeps what it read.
        let mut state = AgentState::default();
        state.rolled_back_versions.insert("2.0.0".into());
        store.save(&state).unwrap();
        let raised = Counters {
            security_floor: 4,
            ..Counters::default()
        };
        trust.save_counters(&raised).unwrap();
        std::fs::write(&cmdline, "quiet tandem.slot=a\n").unwrap();
        assert!(snapshot
            .state(&store)
            .unwrap()
            .rolled_back_versions
            .is_empty());
        assert_eq!(snapshot.counters(&store, &trust).unwrap().security_floor, 0);
        assert_eq!(
            snapshot
                .booted(&config, &pair, &|| Ok([None, None]))
                .unwrap(),
            SlotId::B
        );

        // What a step changes in the snapshot is what the next step sees.
        let changed = snapshot.state(&store).unwrap();
        changed.rolled_back_versions.insert("3.0.0".into());
        assert!(snapshot
            .state(&store)
            .unwrap()
            .rolled_back_versions
            .contains("3.0.0"));
        snapshot.counters(&store, &trust).unwrap().security_floor = 2;
        assert_eq!(snapshot.counters(&store, &trust).unwrap().security_floor, 2);

        let mut next = NodeSnapshot::default();
        assert_eq!(next.state(&store).unwrap(), &state);
        assert_eq!(next.counters(&store, &trust).unwrap().security_floor, 4);
        assert_eq!(
            next.booted(&config, &pair, &|| Ok([None, None])).unwrap(),
            SlotId::A
        );
    }
}

#[cfg(test)]
mod witness_tests {
    use super::*;
    use crate::cmdline::LOADER_ENTRY_SELECTED;

    /// A node whose command line is `cmdline` and whose systemd-boot booted `entry`.
    fn node(cmdline: &str, entry: Option<&str>) -> (tempfile::TempDir, AgentConfig) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cmdline"), cmdline).unwrap();
        let efivars = dir.path().join("efivars");
        std::fs::create_dir(&efivars).unwrap();
        if let Some(id) = entry {
            let mut bytes = vec![6, 0, 0, 0];
            for unit in id.encode_utf16().chain([0]) {
                bytes.extend_from_slice(&unit.to_le_bytes());
            }
            std::fs::write(efivars.join(LOADER_ENTRY_SELECTED), bytes).unwrap();
        }
        let config = AgentConfig::parse(&format!(
            "disk = \"/dev/sda\"\nboot = \"gpt\"\nproduct = \"acme-edge\"\n\
             cmdline = \"{}\"\nefivars = \"{}\"\n",
            dir.path().join("cmdline").display(),
            efivars.display()
        ))
        .unwrap();
        (dir, config)
    }

    fn booted(cmdline: &str, entry: Option<&str>) -> Result<SlotId> {
        let (_dir, config) = node(cmdline, entry);
        let (_dev, pair) = tests::pair();
        let hashes = || Ok([Some("aa".repeat(32)), Some("bb".repeat(32))]);
        read_booted_slot(&config, &pair, &hashes)
    }

    #[test]
    fn a_fixed_command_line_and_the_selected_entry_agree_on_the_slot() {
        let b = format!("ro roothash={}", "bb".repeat(32));
        assert_eq!(booted(&b, Some("tandem-b+2-1.conf")).unwrap(), SlotId::B);
        assert_eq!(booted(&b, None).unwrap(), SlotId::B);
        assert_eq!(
            booted("ro quiet", Some("tandem-a.conf")).unwrap(),
            SlotId::A
        );
        assert_eq!(
            booted("tandem.slot=a", Some("tandem-a.conf")).unwrap(),
            SlotId::A
        );
    }

    #[test]
    fn witnesses_that_disagree_are_refused() {
        let b = format!("ro roothash={}", "bb".repeat(32));
        let err = booted(&b, Some("tandem-a.conf")).unwrap_err().to_string();
        assert!(
            err.contains("roothash=") && err.contains("LoaderEntrySelected says slot a"),
            "{err}"
        );
        assert!(booted(&format!("{b} tandem.slot=a"), None).is_err());
        assert!(booted("tandem.slot=b", Some("tandem-a.conf")).is_err());
        // A root hash no slot's release has is no witness; with nothing else, no answer.
        assert!(booted(&format!("roothash={}", "cc".repeat(32)), None).is_err());
    }

    /// A node whose slot B has the PARTUUID of root hash `bb…` (as an install sets it).
    fn booted_with_partuuid(
        cmdline: &str,
        entry: Option<&str>,
        boot_files: [Option<String>; 2],
    ) -> Result<SlotId> {
        let (_dir, config) = node(cmdline, entry);
        let (dev, pair) = tests::pair();
        let hash: bundle::Sha256Digest = "bb".repeat(32).parse().unwrap();
        let uuid = bundle::verity::partuuid(&hash);
        partitions::table::update_unique_guid(dev.as_ref(), pair.slot(SlotId::B).index, uuid)
            .unwrap();
        let pair = partitions::Disk::from_device(dev)
            .unwrap()
            .slots(partitions::DEFAULT_PAIR)
            .unwrap();
        read_booted_slot(&config, &pair, &|| Ok(boot_files.clone()))
    }

    #[test]
    fn the_partuuid_of_the_root_hash_witnesses_the_slot() {
        let b = format!("ro roothash={}", "bb".repeat(32));
        // Alone (no boot files name the root hash): it names B.
        assert_eq!(
            booted_with_partuuid(&b, None, [None, None]).unwrap(),
            SlotId::B
        );
        // With the boot files and the loader agreeing.
        let files = [None, Some("bb".repeat(32))];
        assert_eq!(
            booted_with_partuuid(&b, Some("tandem-b.conf"), files.clone()).unwrap(),
            SlotId::B
        );
        // The loader says A: refused, naming the PARTUUID witness.
        let err = booted_with_partuuid(&b, Some("tandem-a.conf"), [None, None])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PARTUUID") && err.contains("slot a"), "{err}");
        // The boot files say A holds the root hash, the partition says B: refused.
        let err = booted_with_partuuid(&b, None, [Some("bb".repeat(32)), None])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PARTUUID") && err.contains("refusing"),
            "{err}"
        );
    }
}
