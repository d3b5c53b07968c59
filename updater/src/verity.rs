//! A release's dm-verity root on the node (docs/DESIGN.md §5.2): before the first write,
//! every command line the release carries (its UKI's `.cmdline`, its `cmdline` asset) must
//! name the signed image's root hash if it names one; and each slot's root hash, read from
//! the `roothash=` of the command line in its boot files, for `status` and to tell which
//! slot booted.

use std::cell::Cell;

use bundle::read_at::asset_read_with;
use bundle::verify::asset_cmdline;
use bundle::verity::check_cmdline;
use bundle::Manifest;
use partitions::{BootControl, SlotId};

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
