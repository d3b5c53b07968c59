//! The commands: each opens what it needs through the library and prints the result.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use partitions::boot::{self, mark, ConfigError};
use partitions::create::{self, Layout};
use partitions::error::{BootStateError, LayoutError};
use partitions::{BackendKind, BootControl, Disk, FirmwareError, SlotBootState, SlotId, SlotPair};

use crate::args::{Args, BackendArgs, Command, Transition};

/// Run one command, writing its result to `out`.
pub fn run(args: Args, out: &mut dyn Write) -> Result<()> {
    match args.command {
        Command::Create {
            out: image,
            size,
            slot_size,
            esp,
            state,
            pairs,
        } => {
            let layout = Layout::for_disk(size, esp, slot_size, state, pairs)?;
            create::create_image(&image, size, &layout)?;
            let extra: String = layout
                .pairs
                .iter()
                .map(|(name, size)| format!(", {name}-a and {name}-b {size} each"))
                .collect();
            writeln!(
                out,
                "created {}: {size} bytes, ESP {esp}, root-a and root-b {} each, state {state}{extra}",
                image.display(),
                layout.slot
            )?;
            Ok(())
        }
        Command::WriteSlot {
            disk,
            slot,
            raw,
            no_activate,
            partuuid,
            backend,
        } => {
            let (d, pair, bc) = open(&disk, &backend, false)?;
            let s = pair.slot(slot);
            if let Some(uuid) = partuuid {
                partitions::table::update_unique_guid(d.device().as_ref(), s.index, uuid)
                    .with_context(|| format!("giving {} the PARTUUID {uuid}", s.name))?;
            }
            let dev = d.slot_device(s)?;
            let written =
                create::write_image(dev.as_ref(), s, &raw, (!no_activate).then_some(bc.as_ref()))
                    .with_context(|| format!("writing {} into {}", raw.display(), s.name))?;
            writeln!(out, "wrote {written} bytes into {}", s.name)?;
            Ok(())
        }
        Command::Show {
            disk,
            json,
            backend,
        } => show(&disk, &backend, json, out),
        Command::Boot { disk, backend } => {
            let (_d, _pair, bc) = open(&disk, &backend, false)?;
            let slot = partitions::select_and_boot(bc.as_ref())?;
            writeln!(out, "{slot}")?;
            Ok(())
        }
        Command::Set {
            disk,
            slot,
            priority,
            tries,
            successful,
            backend,
        } => {
            let (_d, _pair, bc) = open(&disk, &backend, false)?;
            let cur = bc.state(slot)?;
            let new = SlotBootState::new(
                priority.unwrap_or(cur.priority),
                tries.unwrap_or(cur.tries_left),
                successful.unwrap_or(cur.successful),
            )?;
            bc.set_state(slot, new)?;
            writeln!(out, "slot {slot}: {}", bc.state(slot)?)?;
            Ok(())
        }
        Command::Mark {
            disk,
            slot,
            transition,
            tries,
            backend,
        } => {
            let (_d, _pair, bc) = open(&disk, &backend, false)?;
            match transition {
                Transition::Trial => bc.set_trial(slot, tries)?,
                Transition::Good => bc.mark_good(slot)?,
                Transition::Bad => bc.mark_bad(slot)?,
                Transition::Unbootable => bc.set_unbootable(slot)?,
            }
            writeln!(out, "slot {slot}: {}", bc.state(slot)?)?;
            Ok(())
        }
        Command::InitBoot { disk, backend } => {
            let (_d, _pair, bc) = open(&disk, &backend, true)?;
            writeln!(
                out,
                "{} backend ready; next boot: {}",
                bc.kind(),
                describe(bc.next_boot()?)
            )?;
            Ok(())
        }
    }
}

fn describe(next: Option<SlotId>) -> String {
    next.map_or_else(|| "nothing bootable".to_string(), |s| s.to_string())
}

type Opened = (Disk, SlotPair, Box<dyn BootControl>);

/// Open the disk and its boot backend: the one the flags name or the disk recorded.
/// `prepare`: set the backend up first (`init-boot`).
fn open(disk: &Path, args: &BackendArgs, prepare: bool) -> Result<Opened> {
    if !disk.exists() {
        anyhow::bail!("{}: no such disk or image file", disk.display());
    }
    let d = Disk::open(disk).with_context(|| format!("reading {}", disk.display()))?;
    if d.using_backup_gpt() {
        eprintln!(
            "tandem-disk: warning: the primary GPT of {} is damaged; using the backup",
            disk.display()
        );
    }
    let pair = d.slots(&args.pair)?;
    let config = args.config(mark::recorded(d.device().clone(), &pair)?)?;
    if prepare && config.kind() == BackendKind::Gpt {
        anyhow::bail!(
            "init-boot is for --backend grub or systemd-boot (the GPT backend needs no setup)"
        );
    }
    let bc = boot::open(&config, &d, &pair, None)?;
    if prepare {
        bc.prepare()?;
    }
    Ok((d, pair, bc))
}

#[derive(serde::Serialize)]
struct ShowSlot<'a> {
    #[serde(flatten)]
    slot: &'a partitions::Slot,
    state: SlotBootState,
}

#[derive(serde::Serialize)]
struct ShowJson<'a> {
    disk: String,
    size: u64,
    gpt: partitions::table::TableCopy,
    primary_gpt_problem: Option<String>,
    backup_gpt_problem: Option<String>,
    pair: &'a str,
    backend: partitions::BackendKind,
    slots: Vec<ShowSlot<'a>>,
    next_boot: Option<SlotId>,
}

fn show(disk: &Path, args: &BackendArgs, json: bool, out: &mut dyn Write) -> Result<()> {
    let (d, pair, bc) = open(disk, args, false)?;
    let states = bc.states()?;
    let next_boot = partitions::select(states[0], states[1]);
    let table = d.table();
    if json {
        let json = ShowJson {
            disk: disk.display().to_string(),
            size: table.disk_size(),
            gpt: table.source(),
            primary_gpt_problem: table.primary_problem().map(|p| p.to_string()),
            backup_gpt_problem: table.backup_problem().map(|p| p.to_string()),
            pair: &pair.name,
            backend: bc.kind(),
            slots: pair
                .slots()
                .into_iter()
                .zip(states)
                .map(|(slot, state)| ShowSlot { slot, state })
                .collect(),
            next_boot,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "disk {}: {} bytes, GPT copy in use: {:?}",
        disk.display(),
        table.disk_size(),
        table.source()
    )?;
    for (what, p) in [
        ("primary", table.primary_problem()),
        ("backup", table.backup_problem()),
    ] {
        if let Some(p) = p {
            writeln!(out, "  {what} GPT damaged: {p}")?;
        }
    }
    writeln!(out, "boot backend: {}", bc.kind())?;
    for (slot, state) in pair.slots().into_iter().zip(states) {
        writeln!(
            out,
            "  {}  {:<8} #{:<3} PARTUUID {}  offset {:>12}  size {:>12}  priority {:>2}  tries {:>2}  successful {}",
            slot.id, slot.name, slot.index, slot.partuuid, slot.offset, slot.size, state.priority, state.tries_left, state.successful
        )?;
    }
    writeln!(out, "next boot: {}", describe(next_boot))?;
    Ok(())
}

/// What to do about an error, when we know.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(FirmwareError::NothingBootable { .. }) = cause.downcast_ref::<FirmwareError>() {
            return Some("no slot may boot: provision one with `tandem-disk write-slot DISK SLOT IMAGE` and the flags `init-boot` had; on a disk set up for grub or systemd-boot before tandem-disk recorded the backend, pass --backend grub --grubenv FILE or --backend systemd-boot --esp DIR".into());
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return match e {
                ConfigError::Missing { key, .. } => Some(format!(
                    "pass --{key} with the path the disk was set up with (`tandem-disk init-boot`)"
                )),
                _ => None,
            };
        }
        if let Some(e) = cause.downcast_ref::<partitions::Error>() {
            return match e {
                partitions::Error::Layout(LayoutError::MissingSlot { .. }) => Some(
                    "check the partition names (`sgdisk -p DISK`) or pick another pair with --pair"
                        .into(),
                ),
                partitions::Error::BootState(BootStateError::LoaderDefault { .. }) => {
                    Some("delete the `default` line from loader/loader.conf".into())
                }
                partitions::Error::BootState(BootStateError::WrongBackend { set_up, .. }) => {
                    Some(match set_up {
                        BackendKind::Grub => {
                            "pass --backend grub --grubenv FILE (or only --grubenv FILE)".into()
                        }
                        BackendKind::SystemdBoot => {
                            "pass --backend systemd-boot --esp DIR (or only --esp DIR)".into()
                        }
                        BackendKind::Gpt => "leave out --backend".into(),
                    })
                }
                partitions::Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Some(
                        "for --backend grub or systemd-boot, run `tandem-disk init-boot` first"
                            .into(),
                    )
                }
                partitions::Error::Gpt(_) => {
                    Some("is this a GPT disk? `sgdisk -v DISK` tells what is wrong".into())
                }
                _ => None,
            };
        }
    }
    None
}

/// Whether the error is stdout going away (`tandem-disk show | head -c1`): not a failure
/// to report.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    /// Stdout of `tandem-disk show | head -c1` once `head` is gone.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stdout_is_a_broken_pipe_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        let args = |a: &[&str]| Args::try_parse_from(a).unwrap();
        let disk_arg = disk.to_str().unwrap();
        run(
            args(&["tandem-disk", "create", disk_arg, "--size", "256MiB"]),
            &mut Vec::new(),
        )
        .unwrap();
        for command in [
            &["tandem-disk", "show", disk_arg, "--json"][..],
            &["tandem-disk", "show", disk_arg],
        ] {
            let err = run(args(command), &mut ClosedPipe).unwrap_err();
            assert!(is_broken_pipe(&err), "{err:#}");
        }
        let err = run(args(&["tandem-disk", "boot", disk_arg]), &mut ClosedPipe).unwrap_err();
        assert!(
            !is_broken_pipe(&err),
            "nothing bootable is a real error: {err:#}"
        );
    }
}
