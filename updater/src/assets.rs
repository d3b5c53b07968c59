//! A release's boot assets on their way to the target slot (docs/DESIGN.md §5.1): every check
//! made before the first write, then each asset streamed from the bundle, verified chunk by
//! chunk and as a whole, written, read back and hashed again, and only then put in place.
//!
//! Partition images (`image` assets) go to the target's partition of the pair named like the
//! asset, through the root image's own pipeline ([`write_image`]): checkpointed, so a cut
//! install resumes where the partition's write was durable, and over a network copying the
//! chunks the node holds (in the active slot's partition of the pair, or already in place in
//! the target's) instead of fetching them. The UKI, kernel, initramfs and command line become
//! the target's boot files ([`BootFiles`]), staged under temporary names and renamed into
//! place together. The active slot's partition and boot files are never opened for writing.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use bundle::chunks::extract_asset;
use bundle::verify::Verified;
use bundle::{Asset, AssetKind, Manifest, Sha256Digest};
use partitions::boot::{BootFile, BootFiles, Staging};
use partitions::io::BlockDevice;
use partitions::{BootControl, Disk, SlotId, SlotPair};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Refusal, Result};
use crate::install::{source_failure, write_image, Sources, WriteOptions, WriteReport};
use crate::segments::ImageIndex;
use crate::state::{AgentState, PartitionRecord, Release};
use repo_client::BundleBytes;

/// Room kept free on the boot files' filesystem per new file: FAT rounds every file up to a
/// cluster (at most 64 KiB) and needs directory entries.
const SLACK_PER_FILE: u64 = 64 << 10;

/// Where each of a release's assets goes on this node, checked before the first write; it
/// keeps the verified manifest it was checked against, which its writes extract from.
pub(crate) struct AssetPlan<'m> {
    manifest: &'m Verified<Manifest>,
    /// The `image` assets and where each goes.
    partitions: Vec<PartitionPlan<'m>>,
    /// The boot files, when the release carries any.
    boot_files: Option<BootFilesPlan>,
}

/// A partition image and its pair's partitions on this node.
struct PartitionPlan<'m> {
    asset: &'m Asset,
    /// The target slot's partition, written.
    target: Arc<dyn BlockDevice>,
    /// The active slot's partition: read for the chunks it holds, never written.
    active: Arc<dyn BlockDevice>,
    /// Chunks durable in `target` from an interrupted write of the same image.
    resume: u64,
}

/// What the write of one partition image did, as the install reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionWrite {
    /// The image asset's name, which is its pair's.
    pub asset: String,
    /// What the write did: chunks written, reused, zeroed, resumed; bytes fetched and reused.
    pub write: WriteReport,
}

impl std::fmt::Display for PartitionWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "partition image {}: {}", self.asset, self.write)
    }
}

struct BootFilesPlan {
    staging: Staging,
    /// Each boot-file asset and the file it becomes.
    files: Vec<(Asset, BootFile)>,
}

impl<'m> AssetPlan<'m> {
    /// Checks that this node can take every asset of `manifest` into `target` (a partition
    /// pair for each image, large enough; boot files where the loader reads them, with room
    /// for the new ones beside the old) and prepares the target's boot files for staging.
    pub(crate) fn check(
        manifest: &'m Verified<Manifest>,
        boot: &dyn BootControl,
        disk: &Disk,
        root: &SlotPair,
        target: SlotId,
    ) -> Result<Self> {
        let mut partitions = Vec::new();
        let mut files = Vec::new();
        for asset in manifest.assets() {
            match boot_file_of(asset.kind()) {
                Some(file) => files.push((asset.clone(), file)),
                None => partitions.push(partition_for(disk, root, asset, target)?),
            }
        }
        let boot_files = match files.is_empty() {
            true => None,
            false => Some(plan_boot_files(boot, target, files)?),
        };
        Ok(AssetPlan {
            manifest,
            partitions,
            boot_files,
        })
    }

    /// Takes from `state` where each partition image's write resumes: the chunks an
    /// interrupted install of `release` made durable in `target`'s partition.
    pub(crate) fn resume_from(&mut self, state: &AgentState, release: &Release, target: SlotId) {
        for part in &mut self.partitions {
            let sha256 = part.asset.sha256().to_hex();
            part.resume =
                state.durable_partition_chunks(target, release, part.asset.name(), &sha256);
        }
    }

    /// What the state file records for each partition image of the plan, carried by
    /// `release`: `complete` once it is written and read back, else with the chunks known
    /// durable where a write resumes.
    pub(crate) fn partition_records(
        &self,
        release: &Release,
        complete: bool,
    ) -> Vec<(String, PartitionRecord)> {
        self.partitions
            .iter()
            .map(|part| {
                let asset = part.asset;
                let record = PartitionRecord {
                    product: release.product.clone(),
                    version: release.version.clone(),
                    asset: asset.name().to_owned(),
                    size: asset.size(),
                    sha256: asset.sha256().to_hex(),
                    complete,
                    durable_chunks: if complete { 0 } else { part.resume },
                };
                (asset.name().to_owned(), record)
            })
            .collect()
    }

    /// Writes every asset from `source` (partition images first, then the boot files) and
    /// returns when all are durable and read back with the manifest's hashes.
    /// `checkpoint(asset, n)` is called after a sync made the first `n` chunks of partition
    /// image `asset` durable.
    pub(crate) fn write(
        self,
        source: &dyn BundleBytes,
        options: &WriteOptions,
        mut checkpoint: impl FnMut(&str, u64) -> Result<()>,
    ) -> Result<Vec<PartitionWrite>> {
        let manifest = self.manifest;
        let mut written = Vec::new();
        for part in &self.partitions {
            let name = part.asset.name();
            tracing::info!(
                asset = name,
                bytes = part.asset.size(),
                resume = part.resume,
                "writing partition image"
            );
            let write = write_partition(manifest, part, source, options, &mut |durable| {
                checkpoint(name, durable)
            })
            .map_err(in_partition(name))?;
            tracing::info!(asset = name, "partition image written: {write}");
            written.push(PartitionWrite {
                asset: name.to_owned(),
                write,
            });
        }
        if let Some(plan) = self.boot_files {
            write_boot_files(manifest, source, plan)?;
        }
        Ok(written)
    }
}

/// The boot file an asset kind becomes; `None` for partition images.
fn boot_file_of(kind: AssetKind) -> Option<BootFile> {
    match kind {
        AssetKind::Uki => Some(BootFile::Uki),
        AssetKind::Kernel => Some(BootFile::Kernel),
        AssetKind::Initrd => Some(BootFile::Initrd),
        AssetKind::Cmdline => Some(BootFile::Cmdline),
        AssetKind::Image => None,
    }
}

/// The partitions of the pair `<name>-a`/`<name>-b`, if the target's can hold the image.
/// Never the root pair: the root image has its own place in the manifest.
fn partition_for<'m>(
    disk: &Disk,
    root: &SlotPair,
    asset: &'m Asset,
    target: SlotId,
) -> Result<PartitionPlan<'m>> {
    if asset.name() == root.name {
        return Err(Refusal::NoPartitionPair {
            asset: asset.name().into(),
            reason: format!("{0}-a/{0}-b hold the root image itself", root.name),
        }
        .into());
    }
    let pair = disk.slots(asset.name()).map_err(|e| {
        Error::Refused(Refusal::NoPartitionPair {
            asset: asset.name().into(),
            reason: e.to_string(),
        })
    })?;
    let slot = pair.slot(target);
    if asset.size() > slot.size {
        return Err(Refusal::TooLargeForPartition {
            asset: asset.name().into(),
            size: asset.size(),
            partition: slot.name.clone(),
            room: slot.size,
        }
        .into());
    }
    Ok(PartitionPlan {
        asset,
        target: disk.slot_device(slot)?,
        active: disk.slot_device(pair.slot(target.other()))?,
        resume: 0,
    })
}

fn plan_boot_files(
    boot: &dyn BootControl,
    target: SlotId,
    files: Vec<(Asset, BootFile)>,
) -> Result<BootFilesPlan> {
    let Some(boot_files) = boot.boot_files() else {
        return Err(Refusal::NoBootFiles {
            backend: boot.kind().to_string(),
            assets: files
                .iter()
                .map(|(a, _)| a.name())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    };
    // Staging first: it removes what an interrupted install left, which the room counts.
    let staging = boot_files.stage(target)?;
    check_room(&boot_files, target, &files)?;
    Ok(BootFilesPlan { staging, files })
}

/// The new files must fit while the slot's old ones still exist (they are removed last).
/// A UKI brings a `cmdline` file of its own, hence one more file than assets.
fn check_room(boot_files: &BootFiles, target: SlotId, files: &[(Asset, BootFile)]) -> Result<()> {
    let count = files.len() as u64 + 1;
    let need = files.iter().map(|(a, _)| a.size()).sum::<u64>() + count * SLACK_PER_FILE;
    let free = boot_files.free_space()?;
    if need > free {
        return Err(Refusal::NoRoomForBootFiles {
            dir: boot_files.dir(target).display().to_string(),
            need,
            free,
        }
        .into());
    }
    Ok(())
}

/// Writes a partition image into the target's partition from chunk `part.resume` on (the
/// chunks before it hashed again first), syncing at checkpoints, and hashes what the disk
/// returns at the end whatever `options` say of the read-back. Over a network, a chunk the
/// active partition holds (at any offset) or the target holds in place is copied, hashed
/// against the signed entry as it is read, not fetched.
fn write_partition(
    manifest: &Verified<Manifest>,
    part: &PartitionPlan<'_>,
    source: &dyn BundleBytes,
    options: &WriteOptions,
    checkpoint: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<WriteReport> {
    let index = ImageIndex::asset(manifest, part.asset);
    // A partition image's chunks are not in the release's chunk store.
    let sources = Sources {
        bundle: source,
        store: None,
    };
    let active = source.is_remote().then_some(part.active.as_ref());
    // The progress bar follows the root image; the read-back of a partition always runs.
    let options = WriteOptions {
        verify_readback: true,
        progress: None,
        ..options.clone()
    };
    let target = part.target.as_ref();
    write_image(
        &index,
        sources,
        target,
        active,
        part.resume,
        &options,
        checkpoint,
    )
}

/// An error of a partition image's write, naming the image.
fn in_partition(asset: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |error| match error {
        Error::Io { context, source } => Error::Io {
            context: format!("partition image {asset}: {context}"),
            source,
        },
        Error::Verify {
            source_name,
            source,
        } => Error::Verify {
            source_name: format!("{source_name} (partition image {asset})"),
            source,
        },
        other => other,
    }
}

fn write_boot_files(
    manifest: &Verified<Manifest>,
    source: &dyn BundleBytes,
    mut plan: BootFilesPlan,
) -> Result<()> {
    for (asset, file) in &plan.files {
        tracing::info!(
            slot = %plan.staging.slot(),
            file = file.file_name(),
            bytes = asset.size(),
            "writing boot file"
        );
        let mut out = plan.staging.create(*file)?;
        copy_asset(manifest, asset, source, &mut out)?;
        out.finish()
            .map_err(Error::io(format!("writing boot file {}", file.file_name())))?;
        let actual = hash_staged(&plan.staging, *file, asset.size())?;
        // A `cmdline` asset's text was checked against the rule by `extract_asset`.
        check_read_back(asset, actual, file.file_name())?;
        fail::fail_point!("install::boot-file-staged");
    }
    let has = |wanted: BootFile| plan.files.iter().any(|(_, f)| *f == wanted);
    if has(BootFile::Uki) && !has(BootFile::Cmdline) {
        stage_uki_cmdline(&mut plan.staging)?;
    }
    plan.staging.commit()?;
    Ok(())
}

/// The UKI's own `.cmdline`, kept as the slot's `cmdline` so the loader can pass it together
/// with the slot's parameters (docs/DESIGN.md §5.1). A UKI without one gets none.
fn stage_uki_cmdline(staging: &mut Staging) -> Result<()> {
    let mut read_at = |offset: u64, len: usize| {
        staging
            .read_staged_at(BootFile::Uki, offset, len)
            .ok()
            .filter(|b| b.len() == len)
    };
    let Some(cmdline) = bundle::uki::cmdline(&mut read_at) else {
        return Ok(());
    };
    let mut out = staging.create(BootFile::Cmdline)?;
    out.write_all(cmdline.as_bytes())
        .map_err(Error::io("writing the UKI's command line"))?;
    out.finish()
        .map_err(Error::io("writing the UKI's command line"))
}

fn hash_staged(staging: &Staging, file: BootFile, size: u64) -> Result<Sha256Digest> {
    hash_file(size, |offset, len| {
        Ok(staging.read_staged_at(file, offset, len)?)
    })
}

/// SHA-256 of a file of `size` bytes read in blocks with `read_at` (it stops early at a
/// short file, whose hash then cannot match).
fn hash_file(
    size: u64,
    mut read_at: impl FnMut(u64, usize) -> Result<Vec<u8>>,
) -> Result<Sha256Digest> {
    const BLOCK: usize = 1 << 20;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < size {
        let len = usize::try_from(size - offset).map_or(BLOCK, |n| n.min(BLOCK));
        let block = read_at(offset, len)?;
        if block.is_empty() {
            break;
        }
        hasher.update(&block);
        offset += block.len() as u64;
    }
    Ok(Sha256Digest(hasher.finalize().into()))
}

/// One boot file of a slot, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BootFileStatus {
    pub file: BootFile,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// A UKI's os-release `VERSION_ID`, a kernel's version string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The command line's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The boot files `slot` has now, each hashed and described (display only: nothing trusts
/// what the version readers return).
pub(crate) fn boot_files_status(files: &BootFiles, slot: SlotId) -> Result<Vec<BootFileStatus>> {
    files
        .present(slot)?
        .into_iter()
        .map(|(file, size)| {
            let read =
                |offset, len| -> Result<Vec<u8>> { Ok(files.read_at(slot, file, offset, len)?) };
            let mut read_exact =
                |offset: u64, len: usize| read(offset, len).ok().filter(|b| b.len() == len);
            let version = match file {
                BootFile::Uki => bundle::uki::version_id(&mut read_exact),
                BootFile::Kernel => bundle::kernel::version(&mut read_exact),
                BootFile::Initrd | BootFile::Cmdline => None,
            };
            let text = match file {
                BootFile::Cmdline => files.cmdline(slot)?,
                _ => None,
            };
            Ok(BootFileStatus {
                file,
                size,
                sha256: hash_file(size, read)?,
                version,
                text,
            })
        })
        .collect()
}

/// A further partition pair (`NAME-a`/`NAME-b`, for a release's partition images), as
/// `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PairStatus {
    pub name: String,
    /// Its partitions, A first.
    pub partitions: Vec<PartitionStatus>,
}

/// One partition of a [`PairStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub slot: SlotId,
    /// The partition's name (`verity-a`).
    pub partition: String,
    pub partuuid: String,
    pub size: u64,
    /// It belongs to the slot the node booted.
    pub booted: bool,
    /// What the agent wrote into it; `None`: nothing (an image provisioned at the factory).
    pub written: Option<PartitionRecord>,
}

/// Every pair on `disk` besides the root pair, with what the state file records of each
/// partition.
pub(crate) fn partition_pairs_status(
    disk: &Disk,
    root: &SlotPair,
    state: &AgentState,
    booted: SlotId,
) -> Vec<PairStatus> {
    let names = disk
        .table()
        .entries()
        .iter()
        .filter_map(|e| e.name.strip_suffix("-a").filter(|name| *name != root.name));
    // A name with no `-b` partition, or two of unequal size, is no pair the agent writes.
    names
        .filter_map(|name| disk.slots(name).ok())
        .map(|pair| {
            let recorded = state.partitions.get(&pair.name);
            let partitions = pair
                .slots()
                .into_iter()
                .map(|slot| PartitionStatus {
                    slot: slot.id,
                    partition: slot.name.clone(),
                    partuuid: slot.partuuid.to_string(),
                    size: slot.size,
                    booted: slot.id == booted,
                    written: recorded.and_then(|r| r.get(&slot.id)).cloned(),
                })
                .collect();
            PairStatus {
                name: pair.name,
                partitions,
            }
        })
        .collect()
}

fn check_read_back(asset: &Asset, actual: Sha256Digest, place: &str) -> Result<()> {
    if actual == asset.sha256() {
        return Ok(());
    }
    Err(Error::Io {
        context: format!("verifying asset {} in {place}", asset.name()),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it reads back with SHA-256 {}, the manifest says {}: the disk did not store what was written",
                actual.to_hex(),
                asset.sha256().to_hex()
            ),
        ),
    })
}

/// Streams `asset`'s raw bytes into `out`, every chunk and the whole asset checked against
/// the manifest by the signer's own extraction.
fn copy_asset(
    manifest: &Verified<Manifest>,
    asset: &Asset,
    source: &dyn BundleBytes,
    out: &mut dyn Write,
) -> Result<()> {
    let mut reader = SourceReader::new(source, manifest.file_len());
    let result = extract_asset(manifest, asset.name(), &mut reader, out, &mut |_| {});
    match (result, reader.failure.take()) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(failure)) => Err(failure),
        (Err(e), None) => Err(Error::verify(source.name())(e)),
    }
}

/// A [`BundleBytes`] read like a file: a seek only moves the position, and the next read
/// opens a range from there to the end unless the open stream already stands there, so
/// frames read in payload order cost one request. A failure of the source itself (the
/// network, the medium) is kept to be reported as such, not as a damaged bundle.
struct SourceReader<'a> {
    source: &'a dyn BundleBytes,
    len: u64,
    pos: u64,
    stream: Option<(u64, Box<dyn Read + Send>)>,
    failure: Option<Error>,
}

impl<'a> SourceReader<'a> {
    fn new(source: &'a dyn BundleBytes, len: u64) -> Self {
        SourceReader {
            source,
            len,
            pos: 0,
            stream: None,
            failure: None,
        }
    }

    /// Keeps `error` as the source's failure and hands the extraction an I/O error.
    fn failed(&mut self, error: Error) -> std::io::Error {
        let io = std::io::Error::other(error.to_string());
        self.failure = Some(error);
        io
    }

    fn next_stream(&mut self) -> std::io::Result<Box<dyn Read + Send>> {
        match self.stream.take() {
            Some((at, stream)) if at == self.pos => Ok(stream),
            _ => match self.source.read_range(self.pos..self.len) {
                Ok(stream) => Ok(stream),
                Err(e) => Err(self.failed(e.into())),
            },
        }
    }
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let mut stream = self.next_stream()?;
        let n = match stream.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let what = format!("the bundle at offset {}", self.pos);
                return Err(self.failed(source_failure(self.source, &what, e)));
            }
        };
        self.pos += n as u64;
        self.stream = Some((self.pos, stream));
        Ok(n)
    }
}

impl Seek for SourceReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}
