//! Command-line flags as parsed (the "low" form), and their conversion into validated
//! values (the "high" form) in one place.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use partitions::boot::Config;
use partitions::{BackendKind, SlotId};

/// Make A/B disk images, write slots, show and change boot state, run the reference firmware.
#[derive(Debug, Parser)]
#[command(name = "tandem-disk", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a sparse GPT image: ESP, root-a, root-b, state (both slots unbootable).
    Create {
        /// The image file to create (must not exist).
        out: PathBuf,
        /// Disk size, e.g. 2GiB.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Size of each slot (default: split what is left).
        #[arg(long, value_parser = parse_size)]
        slot_size: Option<u64>,
        /// Size of the EFI system partition.
        #[arg(long, value_parser = parse_size, default_value = "64MiB")]
        esp: u64,
        /// Size of the state partition.
        #[arg(long, value_parser = parse_size, default_value = "64MiB")]
        state: u64,
        /// A further slot pair NAME-a/NAME-b of SIZE each (for a release's partition images,
        /// e.g. --pair verity=64MiB); repeat for several.
        #[arg(long = "pair", value_name = "NAME=SIZE", value_parser = parse_pair)]
        pairs: Vec<(String, u64)>,
    },
    /// Write a raw image into a slot (factory provisioning), then make it the good slot.
    WriteSlot {
        /// The disk image or block device.
        disk: PathBuf,
        /// a or b.
        slot: SlotId,
        /// The raw image.
        raw: PathBuf,
        /// Leave the boot state alone.
        #[arg(long)]
        no_activate: bool,
        /// Give the slot this PARTUUID first: for a root with a dm-verity tree, the one
        /// `tandem-signer verity` printed, which the release's UKI names.
        #[arg(long, value_name = "UUID")]
        partuuid: Option<uuid::Uuid>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Show slots, sizes, PARTUUIDs, boot state and which slot boots next.
    Show {
        /// The disk image or block device.
        disk: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Run the reference firmware once: print the slot it boots (`a` or `b`).
    Boot {
        /// The disk image or block device.
        disk: PathBuf,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Set raw boot-state fields of a slot (GPT exactly; grub and systemd-boot keep only
    /// the priority order).
    Set {
        /// The disk image or block device.
        disk: PathBuf,
        /// a or b.
        slot: SlotId,
        /// 0-15; 0 = never boot.
        #[arg(long)]
        priority: Option<u8>,
        /// 0-15.
        #[arg(long)]
        tries: Option<u8>,
        /// true or false.
        #[arg(long)]
        successful: Option<bool>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Apply a named transition to a slot, as the updater does.
    Mark {
        /// The disk image or block device.
        disk: PathBuf,
        /// a or b.
        slot: SlotId,
        /// What to do.
        transition: Transition,
        /// Tries for `trial`.
        #[arg(long, default_value_t = 3)]
        tries: u8,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Prepare a grub or systemd-boot backend: create the grubenv (with the PARTUUIDs) or
    /// the loader directories and a loader.conf without a `default` line.
    InitBoot {
        /// The disk image or block device.
        disk: PathBuf,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Transition {
    /// Boot next, N tries, not successful.
    Trial,
    /// Successful.
    Good,
    /// No tries, not successful.
    Bad,
    /// Never boot.
    Unbootable,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct BackendArgs {
    /// Where the boot state lives: gpt, grub or systemd-boot [default: the backend
    /// `init-boot` recorded on the disk, else the one whose path flag is given, else gpt].
    #[arg(long)]
    pub backend: Option<BackendKind>,
    /// The grubenv file (backend grub).
    #[arg(long)]
    pub grubenv: Option<PathBuf>,
    /// The ESP directory holding loader/entries (backend systemd-boot).
    #[arg(long)]
    pub esp: Option<PathBuf>,
    /// Slot pair name: partitions NAME-a and NAME-b.
    #[arg(long, default_value = partitions::DEFAULT_PAIR)]
    pub pair: String,
}

impl BackendArgs {
    /// The validated backend: the one asked for, else the one `recorded` on the disk, else
    /// the one whose path flag was given, else gpt. A backend other than the recorded one is
    /// refused later, by `boot::open`.
    pub fn config(&self, recorded: Option<BackendKind>) -> anyhow::Result<Config> {
        let inferred = match (&self.grubenv, &self.esp) {
            (Some(_), None) => Some(BackendKind::Grub),
            (None, Some(_)) => Some(BackendKind::SystemdBoot),
            _ => None,
        };
        let kind = self
            .backend
            .or(recorded)
            .or(inferred)
            .unwrap_or(BackendKind::Gpt);
        let config = Config::new(kind, self.grubenv.clone(), self.esp.clone(), None);
        match (self.backend, recorded) {
            (None, Some(set_up)) => config.with_context(|| {
                format!("the disk was set up for the {set_up} backend (by init-boot)")
            }),
            _ => Ok(config?),
        }
    }
}

/// Sizes like `2GiB`, `512MiB`, `64M`, `4096`: K/M/G/T and KiB/MiB/GiB/TiB are binary,
/// kB/MB/GB/TB decimal.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional unit, e.g. 2GiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use KiB, MiB, GiB, TiB, kB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// `NAME=SIZE` of `--pair`.
fn parse_pair(spec: &str) -> Result<(String, u64), String> {
    let (name, size) = spec
        .split_once('=')
        .ok_or_else(|| format!("`{spec}`: expected NAME=SIZE, like verity=64MiB"))?;
    Ok((name.to_string(), parse_size(size)?))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("2XB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
