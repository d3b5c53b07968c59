//! The server's integration tests: one binary, one module per feature, a real server on
//! 127.0.0.1:0 per test (see `util`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod api;
mod browser;
#[cfg(feature = "cli")]
mod cli;
mod dashboard;
mod files;
mod fleetlock;
mod flood;
mod hardening;
mod metrics;
mod nodekeys;
mod pg;
mod roles;
mod shared_db;
mod util;
