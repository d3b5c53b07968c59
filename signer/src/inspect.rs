//! What `tandem-signer inspect` reports about a bundle, read without trusting it: its
//! manifest (unverified), what each boot asset says about itself, and, given a root, who
//! signed it and whether the release threshold is met. Printing it (text or JSON) is the
//! binary's.

use std::io::{Read, Seek};

use crate::bundle::read_at::asset_read_at;
use crate::error::Error;
use crate::provenance::{signers_of, Signer, Trust};
use crate::{Asset, AssetKind, BundleHead, Limits, Manifest, RoleKind, Root, Verified};

/// A bundle as read for display: nothing in it is verified.
pub struct Inspection {
    head: BundleHead,
    manifest: Manifest,
    assets: Vec<AssetInfo>,
}

/// What an asset says about itself, for display: a UKI's `.osrel` `VERSION_ID` and
/// `.cmdline`, a kernel's version, a `cmdline` asset's text. Each is `None` for other kinds,
/// or when the bytes do not say (nothing here is verified, and every text has passed a
/// printable-ASCII rule, so a hostile bundle cannot paint the terminal).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AssetInfo {
    /// A UKI's `.osrel` `VERSION_ID`.
    pub osrel_version_id: Option<String>,
    /// A bzImage kernel's version string.
    pub kernel_version: Option<String>,
    /// A UKI's `.cmdline`, or a `cmdline` asset's text.
    pub cmdline: Option<String>,
    /// Why a `cmdline` asset's text is refused (every verifier refuses the bundle).
    pub cmdline_refused: Option<String>,
}

/// The bundle's signatures as a root sees them.
pub struct Signatures {
    /// Each signature: its key id and, with a root, its roles and validity. Only that root's
    /// keys are at hand: a key it no longer lists shows as not checked.
    pub signers: Vec<Signer>,
    /// With a root: whether the release threshold is met over the manifest.
    pub threshold_met: Option<bool>,
}

impl Inspection {
    /// Reads the head of the bundle `f` reads, its manifest, and what its assets say about
    /// themselves (from only the chunks those fields lie in, each checked against the
    /// manifest's hash).
    pub fn read<R: Read + Seek>(f: &mut R, limits: &Limits) -> Result<Self, Error> {
        let head = BundleHead::read(f, limits)?;
        let manifest = head.manifest_unverified(limits)?;
        let assets = manifest
            .assets()
            .iter()
            .map(|a| asset_info(f, &manifest, a))
            .collect();
        Ok(Inspection {
            head,
            manifest,
            assets,
        })
    }

    /// The manifest, unverified.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Each boot asset with what it says about itself, in the manifest's order.
    pub fn assets(&self) -> impl Iterator<Item = (&Asset, &AssetInfo)> {
        self.manifest.assets().iter().zip(&self.assets)
    }

    /// The image's size over the payload's: how much the frames compress.
    pub fn ratio(&self) -> f64 {
        self.manifest.image_size() as f64 / self.manifest.payload_len().max(1) as f64
    }

    /// The signatures as `root` sees them; without one, their key ids alone.
    pub fn signatures(&self, root: Option<&Verified<Root>>, limits: &Limits) -> Signatures {
        let signers = signers_of(
            root.map(|r| Trust {
                root: r,
                earlier: &[],
            }),
            RoleKind::Bundle,
            self.head.manifest_bytes(),
            self.head.signatures(),
        );
        Signatures {
            signers,
            threshold_met: root.map(|r| self.head.verify(r, limits).is_ok()),
        }
    }
}

/// Reads the fields of [`AssetInfo`] that `asset`'s kind has.
fn asset_info<R: Read + Seek>(f: &mut R, m: &Manifest, asset: &Asset) -> AssetInfo {
    let mut read_at = asset_read_at(f, m, asset);
    match asset.kind() {
        AssetKind::Uki => AssetInfo {
            osrel_version_id: crate::uki::version_id(&mut read_at),
            cmdline: crate::uki::cmdline(&mut read_at),
            ..AssetInfo::default()
        },
        AssetKind::Kernel => AssetInfo {
            kernel_version: crate::kernel::version(&mut read_at),
            ..AssetInfo::default()
        },
        AssetKind::Cmdline => {
            let text = usize::try_from(asset.size())
                .ok()
                .and_then(|len| match len {
                    0 => Some(Vec::new()),
                    len => read_at(0, len),
                })
                .map(|bytes| crate::verify::cmdline_asset_text(asset, &bytes));
            match text {
                Some(Ok(text)) => AssetInfo {
                    cmdline: Some(text),
                    ..AssetInfo::default()
                },
                Some(Err(e)) => AssetInfo {
                    cmdline_refused: Some(e.to_string()),
                    ..AssetInfo::default()
                },
                None => AssetInfo::default(),
            }
        }
        AssetKind::Initrd | AssetKind::Image => AssetInfo::default(),
    }
}
