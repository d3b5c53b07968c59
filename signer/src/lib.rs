//! Bundle format, keys, threshold signatures and channel metadata (see docs/FORMAT.md).
//! Not yet implemented: this crate is being built under issue 2.
