//! The signer's integration tests: one binary (CONTRIBUTING.md §9), one module per feature. Negative
//! tests are named after the attack or failure they reproduce.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod util;

mod assets;
mod cli;
mod format;
mod frames;
mod handwritten;
mod hostile;
mod index;
mod limits;
mod metadata;
mod mirror;
mod openssl;
mod pkcs11;
mod requests;
mod roots;
mod roundtrip;
mod tamper;
mod threshold;
