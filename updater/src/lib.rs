//! The on-node agent: install pipeline, sources (file, USB repository, HTTP), the power-safe
//! state machine, health checks and rollback (docs/DESIGN.md §6).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
mod assets;
pub mod cmdline;
pub mod config;
pub mod daemon;
pub mod error;
pub mod health;
pub mod http;
pub mod install;
pub mod lock;
pub mod metrics;
pub mod reports;
mod seed;
pub mod source;
pub mod state;
pub mod trust;

pub use agent::{
    Agent, BootCheck, ChannelOffer, InstallOptions, InstallOutcome, InstallRequest, Io, Offer,
    SlotStatus, Status,
};
pub use assets::{BootFileStatus, PairStatus, PartitionStatus};
pub use config::AgentConfig;
pub use error::{Error, Refusal, Result};
pub use partitions::SlotId;
pub use source::Source;
