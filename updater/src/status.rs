//! `status`: the slots, their boot states, releases and boot files, the further partition
//! pairs, the agent's phase, the anti-rollback counters and the node key's enrollment — read without the state lock,
//! so nothing here writes.

use partitions::{SlotBootState, SlotId};
use serde::Serialize;

use crate::agent::Agent;
use crate::assets::{boot_files_status, partition_pairs_status, BootFileStatus, PairStatus};
use crate::error::Result;
use crate::nodekey::Enrollment;
use crate::state::{AgentState, Release};
use crate::trust::Counters;

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
    /// Where the node key's enrollment stands, when the node enrolls one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<Enrollment>,
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
    /// The dm-verity root hash its command line names (`roothash=`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
}

impl Agent {
    /// Slots, boot states, releases and the agent's phase.
    pub fn status(&self) -> Result<Status> {
        let state = self.store.load()?;
        let [root_a, root_b] = crate::verity::slot_root_hashes(self.boot.as_ref())?;
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
                    root_hash: match slot.id {
                        SlotId::A => root_a.clone(),
                        SlotId::B => root_b.clone(),
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
            enrollment: Enrollment::load(self.state_fs.as_ref()),
            state,
        })
    }
}
