//! The on-node agent: install pipeline, sources (file, USB repository, HTTP), the power-safe
//! state machine, health checks and rollback (docs/DESIGN.md §6).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
mod assets;
pub mod cmdline;
pub mod config;
pub mod daemon;
mod enrolling;
pub mod error;
pub mod health;
mod held_groups;
pub mod install;
pub mod installing;
pub mod lifecycle;
pub mod lock;
pub mod metrics;
pub mod nodekey;
pub mod offer;
pub mod reboot;
pub mod rebooting;
mod reporting;
pub mod reports;
mod seed;
pub mod segments;
pub mod snapshot;
mod sorted_runs;
pub mod source;
pub mod state;
pub mod status;
pub mod trust;
pub mod verity;

pub use agent::{Agent, Io};
pub use assets::{BootFileStatus, PairStatus, PartitionStatus, PartitionWrite};
pub use config::AgentConfig;
pub use error::{Error, Refusal, Result};
pub use installing::{InstallOptions, InstallOutcome, InstallRequest};
pub use lifecycle::BootCheck;
pub use offer::{ChannelOffer, Offer};
pub use partitions::SlotId;
pub use snapshot::NodeSnapshot;
pub use source::Source;
pub use status::{SlotStatus, Status};
