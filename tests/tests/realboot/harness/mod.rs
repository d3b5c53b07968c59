//! The real-boot harness: tools, the artefacts shared by every run (cached under
//! `target/realboot/cache/`), one node's disk and USB stick, a QEMU machine that boots them,
//! and the disk read back on the host.
//!
//! No root, mounts or loop devices: filesystems are made as image files (`mkfs.vfat -C`,
//! `mke2fs -d`), filled with mtools, `dd conv=notrunc`-ed into place and read back the same
//! way (mtools at an offset, `debugfs` on a copy of the partition).
//!
//! One module per concern, each using only the ones listed before it:
//! `env` (the tools, the kernel, the workspace's binaries), `os` (the busybox test OS: its
//! releases, their boot assets and the updater's configuration inside it), `cache` (one entry
//! per key, built once), `uki` (unified kernel images from systemd's stub), `artefacts` (what
//! goes into the cache), `serial` (one boot's console log), `vm` (QEMU), `node` (a disk and a
//! USB stick, and their state read back), `server` (the real `tandem-server`), `realos` (the
//! real Debian OS of `scripts/build-os.sh`, its releases and their bundles), `secureboot` (that
//! OS with signed UKIs and dm-verity roots, for OVMF in Secure Boot mode).

mod artefacts;
mod cache;
mod env;
mod node;
mod os;
pub mod realos;
pub mod secureboot;
mod serial;
mod server;
mod uki;
mod vm;

pub use artefacts::Artefacts;
pub use env::Env;
pub use node::{Node, SlotBoot};
pub use os::{boot_assets, Backend, FACTORY, TRIES};
pub use realos::RealOs;
pub use serial::SerialLog;
pub use server::Server;
pub use vm::Vm;
