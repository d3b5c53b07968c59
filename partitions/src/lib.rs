//! GPT A/B slots, boot-control backends and the reference boot selector.
//! Not yet implemented: this crate is being built under issue 3.
