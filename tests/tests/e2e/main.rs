//! Tandem's end-to-end tests: one binary (CONTRIBUTING.md §9), modules by feature. The harness is
//! the `tandem_tests` library (`tests/src/lib.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod airgap;
mod boot_files;
mod cli;
mod failpoints;
mod fleet;
mod lifecycle;
mod maintenance;
mod operator;
mod partition_pairs;
mod planted;
mod power_loss;
mod proxy;
mod refusals;
mod regression;
mod resume;
mod verity;
