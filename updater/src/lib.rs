//! The on-node agent: install pipeline, sources (file, USB repository, HTTP), the power-safe
//! state machine, health checks and rollback (DESIGN.md §6).
#![forbid(unsafe_code)]

pub mod agent;
pub mod cmdline;
pub mod config;
pub mod daemon;
pub mod error;
pub mod health;
pub mod http;
pub mod install;
pub mod reports;
pub mod source;
pub mod state;

pub use agent::{Agent, BootCheck, InstallOutcome, InstallRequest, Io, Status};
pub use config::AgentConfig;
pub use error::{Error, Result};
pub use partitions::SlotId;
