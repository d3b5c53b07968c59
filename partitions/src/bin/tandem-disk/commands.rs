//! The commands: each opens what it needs through the library and prints the result.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use partitions::boot::grub::GrubEnvBootControl;
use partitions::boot::systemd_boot::{EntryTemplate, SystemdBootControl};
use partitions::create::{self, Layout};
use partitions::error::{BootStateError, LayoutError};
use partitions::io::{FileStore, RealFs};
use partitions::{BootControl, Disk, FirmwareError, SlotBootState, SlotId, SlotPair};

use crate::args::{Args, Backend, BackendArgs, Command, Transition};

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Create {
            out,
            size,
            slot_size,
            esp,
            state,
        } => {
            let layout = Layout::for_disk(size, esp, slot_size, state)?;
            create::create_image(&out, size, &layout)?;
            println!(
                "created {}: {size} bytes, ESP {esp}, root-a and root-b {} each, state {state}",
                out.display(),
                layout.slot
            );
            Ok(())
        }
        Command::WriteSlot {
            disk,
            slot,
            raw,
            no_activate,
            backend,
        } => {
            let (d, pair, bc) = open(&disk, &backend, false)?;
            let s = pair.slot(slot);
            let dev = d.slot_device(s)?;
            let written =
                create::write_image(dev.as_ref(), s, &raw, (!no_activate).then_some(bc.as_ref()))
                    .with_context(|| format!("writing {} into {}", raw.display(), s.name))?;
            println!("wrote {written} bytes into {}", s.name);
            Ok(())
        }
        Command::Show {
            disk,
            json,
            backend,
        } => show(&disk, &backend, json),
        Command::Boot { disk, backend } => {
            let (_d, _pair, bc) = open(&disk, &backend, false)?;
            let slot = partitions::select_and_boot(bc.as_ref())?;
            println!("{slot}");
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
            println!("slot {slot}: {}", bc.state(slot)?);
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
            println!("slot {slot}: {}", bc.state(slot)?);
            Ok(())
        }
        Command::InitBoot { disk, backend } => {
            let (_d, _pair, bc) = open(&disk, &backend, true)?;
            println!(
                "{} backend ready; next boot: {}",
                bc.kind(),
                next(bc.as_ref())?
            );
            Ok(())
        }
    }
}

fn next(bc: &dyn BootControl) -> Result<String> {
    Ok(bc
        .next_boot()?
        .map_or_else(|| "nothing bootable".to_string(), |s| s.to_string()))
}

/// Split a file path into a store on its directory and the file name.
fn store_for_file(path: &Path) -> Result<(Arc<dyn FileStore>, std::path::PathBuf)> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => ".".into(),
    };
    Ok((Arc::new(RealFs::new(dir)), name.into()))
}

type Opened = (Disk, SlotPair, Box<dyn BootControl>);

fn open(disk: &Path, args: &BackendArgs, init: bool) -> Result<Opened> {
    let backend = args.to_backend()?;
    let d = Disk::open(disk).with_context(|| format!("reading {}", disk.display()))?;
    if d.using_backup_gpt() {
        eprintln!(
            "tandem-disk: warning: the primary GPT of {} is damaged; using the backup",
            disk.display()
        );
    }
    let pair = d.slots(&args.pair)?;
    let bc: Box<dyn BootControl> = match backend {
        Backend::Gpt => {
            if init {
                anyhow::bail!("init-boot is for --backend grub or systemd-boot (the GPT backend needs no setup)");
            }
            Box::new(d.gpt_boot_control(&pair))
        }
        Backend::Grub { grubenv } => {
            let (store, name) = store_for_file(&grubenv)?;
            if init {
                Box::new(GrubEnvBootControl::init(store, name, &pair)?)
            } else {
                Box::new(GrubEnvBootControl::new(store, name))
            }
        }
        Backend::SystemdBoot { esp } => {
            let bc = SystemdBootControl::new(
                Arc::new(RealFs::new(esp)),
                &pair,
                EntryTemplate::default(),
            );
            if init {
                bc.init()?;
            }
            Box::new(bc)
        }
    };
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

fn show(disk: &Path, args: &BackendArgs, json: bool) -> Result<()> {
    let (d, pair, bc) = open(disk, args, false)?;
    let states = bc.states()?;
    let next_boot = partitions::select(states[0], states[1]);
    let table = d.table();
    if json {
        let out = ShowJson {
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
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "disk {}: {} bytes, GPT copy in use: {:?}",
        disk.display(),
        table.disk_size(),
        table.source()
    );
    for (what, p) in [
        ("primary", table.primary_problem()),
        ("backup", table.backup_problem()),
    ] {
        if let Some(p) = p {
            println!("  {what} GPT damaged: {p}");
        }
    }
    println!("boot backend: {}", bc.kind());
    for (slot, state) in pair.slots().into_iter().zip(states) {
        println!(
            "  {}  {:<8} #{:<3} PARTUUID {}  offset {:>12}  size {:>12}  priority {:>2}  tries {:>2}  successful {}",
            slot.id, slot.name, slot.index, slot.partuuid, slot.offset, slot.size, state.priority, state.tries_left, state.successful
        );
    }
    println!(
        "next boot: {}",
        next_boot.map_or_else(|| "nothing bootable".to_string(), |s| s.to_string())
    );
    Ok(())
}

/// What to do about an error, when we know.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(FirmwareError::NothingBootable { .. }) = cause.downcast_ref::<FirmwareError>() {
            return Some("no slot may boot: write one with `tandem-disk write-slot` or start a trial with `tandem-disk mark DISK SLOT trial`".into());
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
