//! Interoperability and end-to-end tests of the `partitions` crate and `tandem-disk`, one
//! binary (modules by feature). External tools are required: a missing one fails the test
//! with the Debian package to install (`scripts/test.sh` installs them all).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod cli;
mod firmware;
mod gpt;
mod grub;
mod systemd_boot;
mod util;
