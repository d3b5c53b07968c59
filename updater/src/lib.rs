//! The on-node agent: install pipeline, sources (file, USB repository, HTTP), the power-safe
//! state machine, health checks and rollback (DESIGN.md §6).
#![forbid(unsafe_code)]

pub mod cmdline;
pub mod config;
pub mod health;
