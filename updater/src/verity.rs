//! A release's dm-verity root on the node (docs/DESIGN.md §5.2): before the first write,
//! every command line the release carries (its UKI's `.cmdline`, its `cmdline` asset) must
//! name the signed image's root hash if it names one; and each slot's root hash, read from
//! the `roothash=` of the command line in its boot files, for `status` and to tell which
//! slot booted; and the target slot's PARTUUID set to the one its root hash derives
//! (systemd's convention), so that one UKI's fixed command line finds the root in either slot.

use std::cell::Cell;

use bundle::read_at::asset_read_with;
use bundle::verify::asset_cmdline;
use bundle::verity::{check_cmdline, partuuid};
use bundle::Manifest;
use partitions::table::{update_unique_guid, GptTable};
use partitions::{BootControl, Disk, Slot, SlotId};
use uuid::Uuid;

use crate::cmdline::roothash;
use repo_client::BundleBytes;

use crate::error::{Refusal, Result};

/// Refuses `manifest`'s release when a command line it carries says `roothash=` other than
/// its image's verity root hash (or says one when the image has none). Reads only the
/// chunks of the UKI's headers and `.cmdline` section, each hash-checked.
pub(crate) fn check_release_cmdlines(manifest: &Manifest, source: &dyn BundleBytes) -> Result<()> {
    for asset in manifest.assets() {
        let failed = Cell::new(None);
        let fetch = |range: std::ops::Range<u64>| match source.read_exact(range) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                failed.set(Some(e.into()));
                None
            }
        };
        let mut read_at = asset_read_with(fetch, manifest, asset);
        let text = asset_cmdline(asset.kind(), asset.size(), &mut read_at);
        if let Some(e) = failed.take() {
            return Err(e);
        }
        let Some(text) = text else { continue };
        check_cmdline(&text, manifest.verity()).map_err(|reason| Refusal::RootHashMismatch {
            asset: format!("{} `{}`", asset.kind(), asset.name()),
            reason,
        })?;
    }
    Ok(())
}

/// Each slot's verity root hash (A, B): the last `roothash=` of the command line in its boot
/// files; `None` for a slot without one, or a backend that keeps no boot files.
pub fn slot_root_hashes(boot: &dyn BootControl) -> Result<[Option<String>; 2]> {
    let Some(files) = boot.boot_files() else {
        return Ok([None, None]);
    };
    let of =
        |slot| -> Result<Option<String>> { Ok(files.cmdline(slot)?.as_deref().and_then(roothash)) };
    Ok([of(SlotId::A)?, of(SlotId::B)?])
}

/// The PARTUUID `manifest`'s release needs its slot `target` to have: the one its verity
/// root hash derives; `None` without a tree (the slot keeps its own). Refuses the release
/// when another partition of the disk has it already: GPT unique GUIDs must stay unique,
/// and that partition is in practice the running slot holding the same root, which must
/// keep booting (docs/DESIGN.md §5.2). Reads the table as it is now; writes nothing.
pub(crate) fn target_partuuid(
    manifest: &Manifest,
    disk: &Disk,
    target: &Slot,
) -> Result<Option<Uuid>> {
    let Some(verity) = manifest.verity() else {
        return Ok(None);
    };
    let uuid = partuuid(&verity.root_hash());
    let table = GptTable::read(disk.device().as_ref())?;
    match table
        .entries()
        .iter()
        .find(|e| e.unique_guid == uuid && e.index != target.index)
    {
        Some(holder) => Err(Refusal::RootHashOnOtherSlot {
            root_hash: verity.root_hash().to_hex(),
            partuuid: uuid.to_string(),
            holder: holder.index,
            holder_name: holder.name.clone(),
        }
        .into()),
        None => Ok(Some(uuid)),
    }
}

/// Gives slot `target` the PARTUUID `uuid` (both GPT copies, power-safe; nothing written
/// when it has it already, so an install resumed after a cut redoes it for free).
pub(crate) fn set_partuuid(disk: &Disk, target: &Slot, uuid: Uuid) -> Result<()> {
    update_unique_guid(disk.device().as_ref(), target.index, uuid)?;
    tracing::info!(slot = %target.id, partuuid = %uuid, "the slot's PARTUUID is its release's root hash");
    Ok(())
}
