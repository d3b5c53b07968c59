//! The GUID partition table: a bounded reader that validates each copy (primary and backup)
//! on its own, and a writer that patches partition attributes or a partition's unique GUID
//! in both copies in a power-safe order.
//!
//! Why not the `gpt` crate for reading: version 4.1 panics on an entry size other than 128
//! (`assert_eq!`), and when the primary header is intact but its entry array fails its CRC (the
//! state a power cut in the middle of a primary update leaves) it returns an error instead of
//! falling back to the backup. Here every field is range-checked before use, each copy is
//! judged whole (header CRC *and* entry-array CRC), and the primary is preferred only when
//! it is entirely valid. The `gpt` crate still lays out new tables (see [`crate::create`]).
//!
//! Write order for an attribute change ([`update_attributes`]) or a unique GUID change
//! ([`update_unique_guid`]), so that a cut at any instant
//! leaves one valid copy holding either the old or the new attributes, never a mix:
//! 1. backup entry array, backup header; sync;
//! 2. primary entry array, primary header; sync.
//!
//! Before the first sync the primary is untouched and valid: old state. After it, the backup
//! holds the new state; if the cut then keeps only part of step 2, the primary's header CRC or
//! entry-array CRC fails and readers fall back to the (new) backup; if step 2 is kept whole,
//! the primary is new. Either copy alone is always a complete, CRC-valid table.

use crate::error::{Error, GptError, HeaderProblem, Result};
use crate::io::BlockDevice;
use uuid::Uuid;

/// The GPT header signature.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Minimum header size (UEFI 2.x).
const MIN_HEADER_SIZE: u32 = 92;
/// Upper bound on the entry array we accept (the usual one is 16 KiB).
const MAX_ENTRY_ARRAY: u64 = 1 << 20;
/// Offset of the 64-bit attribute field inside an entry.
const ATTR_OFFSET: usize = 48;
/// Offset of the unique partition GUID inside an entry.
const UNIQUE_GUID_OFFSET: usize = 16;

/// Which copy of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableCopy {
    /// LBA 1.
    Primary,
    /// The last LBA.
    Backup,
}

/// A parsed, validated GPT header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    raw: Vec<u8>,
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other header.
    pub alternate_lba: u64,
    /// First LBA usable by partitions.
    pub first_usable: u64,
    /// Last LBA usable by partitions.
    pub last_usable: u64,
    /// Disk GUID.
    pub disk_guid: Uuid,
    /// First LBA of this copy's entry array.
    pub entries_lba: u64,
    /// Number of entries in the array.
    pub num_entries: u32,
    /// Size of one entry in bytes.
    pub entry_size: u32,
    /// CRC32 of the entry array.
    pub entries_crc: u32,
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based entry number, as `sgdisk -i N` and `cgpt -i N` count.
    pub index: u32,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID (the PARTUUID).
    pub unique_guid: Uuid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// The 64-bit attribute field.
    pub attributes: u64,
    /// Partition name (UTF-16 in the table).
    pub name: String,
}

/// A bounded little-endian reader over a byte slice (never reads past the end).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn guid(&mut self) -> Option<Uuid> {
        self.array().map(Uuid::from_bytes_le)
    }
}

fn read_exact(dev: &dyn BlockDevice, offset: u64, len: u64) -> Result<Vec<u8>, HeaderProblem> {
    let n = usize::try_from(len).map_err(|_| HeaderProblem::BadField("length"))?;
    let mut buf = vec![0u8; n];
    dev.read_at(&mut buf, offset)
        .map_err(|e| HeaderProblem::Unreadable(e.to_string()))?;
    Ok(buf)
}

fn parse_header(
    sector: &[u8],
    lba: u64,
    sector_size: u64,
    disk_sectors: u64,
) -> Result<Header, HeaderProblem> {
    let mut r = Reader::new(sector);
    if r.take(8) != Some(SIGNATURE.as_slice()) {
        return Err(HeaderProblem::NoSignature);
    }
    let bad = HeaderProblem::BadField;
    let _revision = r.u32().ok_or(bad("revision"))?;
    let header_size = r.u32().ok_or(bad("header size"))?;
    if header_size < MIN_HEADER_SIZE || u64::from(header_size) > sector_size {
        return Err(bad("header size"));
    }
    let crc = r.u32().ok_or(bad("header crc"))?;
    let raw = sector
        .get(..header_size as usize)
        .ok_or(bad("header size"))?
        .to_vec();
    let mut zeroed = raw.clone();
    zeroed.get_mut(16..20).ok_or(bad("header crc"))?.fill(0);
    if crc32fast::hash(&zeroed) != crc {
        return Err(HeaderProblem::HeaderCrc);
    }
    let _reserved = r.u32().ok_or(bad("reserved"))?;
    let h = Header {
        my_lba: r.u64().ok_or(bad("my lba"))?,
        alternate_lba: r.u64().ok_or(bad("alternate lba"))?,
        first_usable: r.u64().ok_or(bad("first usable lba"))?,
        last_usable: r.u64().ok_or(bad("last usable lba"))?,
        disk_guid: r.guid().ok_or(bad("disk guid"))?,
        entries_lba: r.u64().ok_or(bad("entries lba"))?,
        num_entries: r.u32().ok_or(bad("number of entries"))?,
        entry_size: r.u32().ok_or(bad("entry size"))?,
        entries_crc: r.u32().ok_or(bad("entries crc"))?,
        raw,
    };
    if h.my_lba != lba {
        return Err(bad("my lba (header is not where it says)"));
    }
    if h.alternate_lba >= disk_sectors || h.alternate_lba == h.my_lba {
        return Err(bad("alternate lba"));
    }
    if h.first_usable > h.last_usable || h.last_usable >= disk_sectors {
        return Err(bad("usable range"));
    }
    if h.entry_size < 128 || h.entry_size % 128 != 0 || h.entry_size > 4096 {
        return Err(bad("entry size"));
    }
    let array = h.array_bytes();
    if array == 0 || array > MAX_ENTRY_ARRAY {
        return Err(bad("entry array size"));
    }
    let end = h
        .entries_lba
        .checked_mul(sector_size)
        .and_then(|s| s.checked_add(array))
        .ok_or(bad("entries lba"))?;
    if h.entries_lba < 1 || h.entries_lba == h.my_lba || end > disk_sectors * sector_size {
        return Err(bad("entries lba"));
    }
    Ok(h)
}

impl Header {
    /// Bytes in the entry array.
    pub fn array_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    /// This header with new location fields and entry CRC, its own CRC recomputed.
    fn relocated(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> Vec<u8> {
        fn put(raw: &mut [u8], off: usize, bytes: &[u8]) {
            if let Some(dst) = raw.get_mut(off..off + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        let mut raw = self.raw.clone();
        put(&mut raw, 24, &my_lba.to_le_bytes());
        put(&mut raw, 32, &alternate_lba.to_le_bytes());
        put(&mut raw, 72, &entries_lba.to_le_bytes());
        put(&mut raw, 88, &entries_crc.to_le_bytes());
        put(&mut raw, 16, &[0; 4]);
        let crc = crc32fast::hash(&raw);
        put(&mut raw, 16, &crc.to_le_bytes());
        raw
    }
}

fn read_copy(
    dev: &dyn BlockDevice,
    lba: u64,
    sector_size: u64,
    disk_sectors: u64,
) -> Result<(Header, Vec<u8>), HeaderProblem> {
    let sector = read_exact(dev, lba * sector_size, sector_size)?;
    let h = parse_header(&sector, lba, sector_size, disk_sectors)?;
    let entries = read_exact(dev, h.entries_lba * sector_size, h.array_bytes())?;
    if crc32fast::hash(&entries) != h.entries_crc {
        return Err(HeaderProblem::EntriesCrc);
    }
    Ok((h, entries))
}

fn parse_entries(array: &[u8], entry_size: u32) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, raw) in array.chunks_exact(entry_size as usize).enumerate() {
        let mut r = Reader::new(raw);
        let (
            Some(type_guid),
            Some(unique_guid),
            Some(first_lba),
            Some(last_lba),
            Some(attributes),
            Some(name),
        ) = (r.guid(), r.guid(), r.u64(), r.u64(), r.u64(), r.take(72))
        else {
            continue;
        };
        if type_guid.is_nil() {
            continue;
        }
        let units: Vec<u16> = name
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&u| u != 0)
            .collect();
        out.push(Entry {
            index: u32::try_from(i + 1).unwrap_or(u32::MAX),
            type_guid,
            unique_guid,
            first_lba,
            last_lba,
            attributes,
            name: String::from_utf16_lossy(&units),
        });
    }
    out
}

/// A GPT read from a device: the copy in use, the state of both copies, the used entries.
#[derive(Debug, Clone)]
pub struct GptTable {
    sector_size: u64,
    disk_size: u64,
    source: TableCopy,
    header: Header,
    array: Vec<u8>,
    primary: Result<Header, HeaderProblem>,
    backup: Result<Header, HeaderProblem>,
    backup_array: Option<Vec<u8>>,
    entries: Vec<Entry>,
}

impl GptTable {
    /// Read and validate the table. Prefers the primary copy; when the primary is damaged
    /// and the backup is valid, uses the backup and logs a warning (see
    /// [`source`](Self::source) and [`primary_problem`](Self::primary_problem)).
    pub fn read(dev: &dyn BlockDevice) -> Result<Self> {
        let disk_size = dev
            .size()
            .map_err(|e| Error::io("reading the disk size", e))?;
        let mut first_failure = None;
        for sector_size in [512u64, 4096] {
            let disk_sectors = disk_size / sector_size;
            if disk_sectors < 3 {
                first_failure.get_or_insert(GptError::TooSmall { size: disk_size });
                continue;
            }
            let primary = read_copy(dev, 1, sector_size, disk_sectors);
            let backup_lba = match &primary {
                Ok((h, _)) => h.alternate_lba,
                Err(_) => disk_sectors - 1,
            };
            let backup = read_copy(dev, backup_lba, sector_size, disk_sectors);
            let (source, header, array) = match (&primary, &backup) {
                (Ok((h, a)), _) => (TableCopy::Primary, h.clone(), a.clone()),
                (Err(_), Ok((h, a))) => (TableCopy::Backup, h.clone(), a.clone()),
                (Err(p), Err(b)) => {
                    first_failure.get_or_insert(GptError::NoValidTable {
                        primary: p.clone(),
                        backup: b.clone(),
                    });
                    continue;
                }
            };
            let entries = parse_entries(&array, header.entry_size);
            check_entries(&header, &entries)?;
            let table = Self {
                sector_size,
                disk_size,
                source,
                header,
                array,
                backup_array: backup.as_ref().ok().map(|(_, a)| a.clone()),
                primary: primary.map(|(h, _)| h),
                backup: backup.map(|(h, _)| h),
                entries,
            };
            table.log_health();
            return Ok(table);
        }
        Err(first_failure
            .unwrap_or(GptError::TooSmall { size: disk_size })
            .into())
    }

    fn log_health(&self) {
        if let Err(p) = &self.primary {
            tracing::warn!(problem = %p, "primary GPT is damaged: using the backup copy (the next boot-state write repairs it)");
        }
        if let Err(p) = &self.backup {
            tracing::warn!(problem = %p, "backup GPT is damaged (the next boot-state write repairs it)");
        }
        if self.copies_differ() {
            tracing::warn!("the two GPT copies differ (an interrupted update?): using the primary");
        }
    }

    /// Which copy is in use.
    pub fn source(&self) -> TableCopy {
        self.source
    }

    /// Why the primary copy was rejected, if it was.
    pub fn primary_problem(&self) -> Option<&HeaderProblem> {
        self.primary.as_ref().err()
    }

    /// Why the backup copy was rejected, if it was.
    pub fn backup_problem(&self) -> Option<&HeaderProblem> {
        self.backup.as_ref().err()
    }

    /// Both copies valid, but their entry arrays differ.
    pub fn copies_differ(&self) -> bool {
        matches!((&self.primary, &self.backup_array), (Ok(_), Some(b)) if *b != self.array)
    }

    /// Logical sector size (512 or 4096).
    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    /// Size of the device in bytes.
    pub fn disk_size(&self) -> u64 {
        self.disk_size
    }

    /// The header in use.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Used entries, in table order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entry by 1-based index.
    pub fn entry(&self, index: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.index == index)
    }
}

fn check_entries(h: &Header, entries: &[Entry]) -> Result<()> {
    for e in entries {
        if e.first_lba > e.last_lba || e.first_lba < h.first_usable || e.last_lba > h.last_usable {
            return Err(GptError::BadEntry {
                index: e.index,
                name: e.name.clone(),
                first: e.first_lba,
                last: e.last_lba,
                usable_first: h.first_usable,
                usable_last: h.last_usable,
            }
            .into());
        }
    }
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.first_lba);
    for pair in sorted.windows(2) {
        if let [x, y] = pair {
            if y.first_lba <= x.last_lba {
                return Err(GptError::Overlap {
                    a: x.index.min(y.index),
                    b: x.index.max(y.index),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Set the attribute field of some entries (1-based index → new 64-bit value), in both
/// copies, with both entry-array CRCs and header CRCs recomputed, in the power-safe order
/// described in the module documentation. The table is re-read first; a damaged or stale
/// copy is rewritten from the copy in use (which also repairs it). Entries not named, and
/// every other byte of the named entries, are untouched.
pub fn update_attributes(dev: &dyn BlockDevice, updates: &[(u32, u64)]) -> Result<GptTable> {
    let t = GptTable::read(dev)?;
    let mut array = t.array.clone();
    for &(index, value) in updates {
        patch_entry(&t, &mut array, index, ATTR_OFFSET, &value.to_le_bytes())?;
    }
    write_both(dev, &t, &array)
}

/// Set the unique GUID (the PARTUUID) of entry `index` (1-based), in both copies and in the
/// power-safe order of [`update_attributes`], every other byte untouched. Nothing is written
/// when the entry already has it (a retry after a cut is free); a GUID another entry of the
/// table has is refused ([`GptError::DuplicateGuid`]): GUIDs name partitions, and two equal
/// ones make `root=PARTUUID=` (and udev's `by-partuuid` link) name either.
pub fn update_unique_guid(dev: &dyn BlockDevice, index: u32, guid: Uuid) -> Result<GptTable> {
    let t = GptTable::read(dev)?;
    if t.entry(index).is_some_and(|e| e.unique_guid == guid) {
        return Ok(t);
    }
    if let Some(other) = t.entries().iter().find(|e| e.unique_guid == guid) {
        return Err(GptError::DuplicateGuid {
            guid,
            index,
            holder: other.index,
            holder_name: other.name.clone(),
        }
        .into());
    }
    let mut array = t.array.clone();
    patch_entry(
        &t,
        &mut array,
        index,
        UNIQUE_GUID_OFFSET,
        &guid.to_bytes_le(),
    )?;
    write_both(dev, &t, &array)
}

/// Overwrite `bytes` at `offset` of used entry `index` in `array` (the entry array of `t`).
fn patch_entry(
    t: &GptTable,
    array: &mut [u8],
    index: u32,
    offset: usize,
    bytes: &[u8],
) -> Result<()> {
    let failed = |why: &str, kind| {
        Error::io(
            format!("updating GPT entry {index}"),
            std::io::Error::new(kind, why.to_owned()),
        )
    };
    if t.entry(index).is_none() {
        return Err(failed("no such used entry", std::io::ErrorKind::NotFound));
    }
    let start = (index as usize - 1) * t.header.entry_size as usize + offset;
    array
        .get_mut(start..start + bytes.len())
        .ok_or_else(|| failed("entry outside the array", std::io::ErrorKind::InvalidData))?
        .copy_from_slice(bytes);
    Ok(())
}

/// Write `array` as the entry array of both copies of `t`'s table, headers and CRCs
/// recomputed: backup first, sync, then primary, sync (the module documentation says why);
/// returns the table read back.
fn write_both(dev: &dyn BlockDevice, t: &GptTable, array: &[u8]) -> Result<GptTable> {
    let ss = t.sector_size;
    let h = &t.header;
    let crc = crc32fast::hash(array);
    let entry_sectors = h.array_bytes().div_ceil(ss);

    let (backup_lba, primary_entries_lba, backup_entries_lba) = match t.source {
        TableCopy::Primary => (
            h.alternate_lba,
            h.entries_lba,
            match &t.backup {
                Ok(b) if b.array_bytes() == h.array_bytes() => b.entries_lba,
                _ => h.alternate_lba - entry_sectors,
            },
        ),
        TableCopy::Backup => (h.my_lba, 2, h.entries_lba),
    };
    let backup_header = h.relocated(backup_lba, 1, backup_entries_lba, crc);
    let primary_header = h.relocated(1, backup_lba, primary_entries_lba, crc);

    let w = |what: &str, data: &[u8], lba: u64| {
        dev.write_at(data, lba * ss)
            .map_err(|e| Error::io(format!("writing the {what}"), e))
    };
    let sync = || dev.sync().map_err(|e| Error::io("syncing the GPT", e));
    w("backup GPT entries", array, backup_entries_lba)?;
    w("backup GPT header", &backup_header, backup_lba)?;
    sync()?;
    w("primary GPT entries", array, primary_entries_lba)?;
    w("primary GPT header", &primary_header, 1)?;
    sync()?;
    GptTable::read(dev)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::io::{MemDisk, PowerLossDisk};

    /// A small disk laid out by our own `create` (which uses the gpt crate).
    pub(crate) fn small_disk() -> MemDisk {
        let disk = MemDisk::new(40 << 20);
        crate::create::lay_out(
            &(std::sync::Arc::new(disk.clone()) as std::sync::Arc<dyn BlockDevice>),
            &crate::create::Layout {
                esp: 4 << 20,
                slot: 8 << 20,
                state: 4 << 20,
                pairs: Vec::new(),
            },
        )
        .unwrap();
        disk
    }

    #[test]
    fn reads_both_copies() {
        let d = small_disk();
        let t = GptTable::read(&d).unwrap();
        assert_eq!(t.source(), TableCopy::Primary);
        assert!(t.primary_problem().is_none() && t.backup_problem().is_none());
        assert!(!t.copies_differ());
        let names: Vec<_> = t.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["ESP", "root-a", "root-b", "state"]);
    }

    #[test]
    fn damaged_primary_falls_back_to_backup() {
        let d = small_disk();
        d.write_at(&[0xff; 16], 512 + 100).unwrap(); // inside the header sector, past its fields: header CRC still fine
        d.write_at(&[0xff; 4], 512 + 8).unwrap(); // revision field: header CRC now wrong
        let t = GptTable::read(&d).unwrap();
        assert_eq!(t.source(), TableCopy::Backup);
        assert_eq!(t.primary_problem(), Some(&HeaderProblem::HeaderCrc));
        assert_eq!(t.entries().len(), 4);
        // A write repairs the primary.
        update_attributes(&d, &[(2, 1 << 48)]).unwrap();
        let t = GptTable::read(&d).unwrap();
        assert_eq!(t.source(), TableCopy::Primary);
        assert!(t.backup_problem().is_none());
        assert_eq!(t.entry(2).unwrap().attributes, 1 << 48);
    }

    #[test]
    fn damaged_primary_entries_fall_back() {
        let d = small_disk();
        d.write_at(&[0x55; 8], 2 * 512 + 128 * 5).unwrap();
        let t = GptTable::read(&d).unwrap();
        assert_eq!(t.source(), TableCopy::Backup);
        assert_eq!(t.primary_problem(), Some(&HeaderProblem::EntriesCrc));
    }

    #[test]
    fn both_copies_damaged_is_an_error() {
        let d = small_disk();
        d.write_at(&[0; 8], 512).unwrap();
        let size = d.size().unwrap();
        d.write_at(&[0; 8], size - 512).unwrap();
        let err = GptTable::read(&d).unwrap_err();
        assert!(
            matches!(err, Error::Gpt(GptError::NoValidTable { .. })),
            "{err}"
        );
        assert!(matches!(
            GptTable::read(&MemDisk::new(1 << 20)).unwrap_err(),
            Error::Gpt(GptError::NoValidTable { .. })
        ));
        assert!(matches!(
            GptTable::read(&MemDisk::new(1000)).unwrap_err(),
            Error::Gpt(GptError::TooSmall { .. })
        ));
    }

    #[test]
    fn hostile_header_fields_are_errors_not_panics() {
        // Every 4-byte field of the primary header set to extremes, CRC fixed up.
        let d = small_disk();
        let mut sector = vec![0u8; 512];
        d.read_at(&mut sector, 512).unwrap();
        for off in (8..92).step_by(4) {
            for val in [0u32, 1, 0x7fff_ffff, u32::MAX] {
                let mut s = sector.clone();
                s[off..off + 4].copy_from_slice(&val.to_le_bytes());
                let hs = u32::from_le_bytes(s[12..16].try_into().unwrap()).clamp(92, 512) as usize;
                s[16..20].fill(0);
                let crc = crc32fast::hash(&s[..hs]);
                s[16..20].copy_from_slice(&crc.to_le_bytes());
                let copy = d.deep_clone();
                copy.write_at(&s, 512).unwrap();
                // Either the primary is rejected and the backup used, or it parses: no panic.
                let _ = GptTable::read(&copy);
            }
        }
    }

    #[test]
    fn overlapping_partitions_are_refused() {
        let d = small_disk();
        let t = GptTable::read(&d).unwrap();
        // Make entry 3 start inside entry 2, in both copies via raw edit + CRC fix.
        let e2 = t.entry(2).unwrap().clone();
        let mut array = t.array.clone();
        let off = 2 * 128 + 32;
        array[off..off + 8].copy_from_slice(&(e2.last_lba - 1).to_le_bytes());
        write_raw_both(&d, &t, &array);
        let err = GptTable::read(&d).unwrap_err();
        assert!(
            matches!(err, Error::Gpt(GptError::Overlap { a: 2, b: 3 })),
            "{err}"
        );
    }

    /// Test helper: write a raw entry array to both copies with valid CRCs.
    pub(crate) fn write_raw_both(d: &dyn BlockDevice, t: &GptTable, array: &[u8]) {
        let h = t.header();
        let crc = crc32fast::hash(array);
        let b = t.backup.as_ref().unwrap();
        d.write_at(array, h.entries_lba * 512).unwrap();
        d.write_at(&h.relocated(1, h.alternate_lba, h.entries_lba, crc), 512)
            .unwrap();
        d.write_at(array, b.entries_lba * 512).unwrap();
        d.write_at(
            &b.relocated(b.my_lba, 1, b.entries_lba, crc),
            b.my_lba * 512,
        )
        .unwrap();
    }

    #[test]
    fn attribute_update_touches_only_the_attribute_field() {
        let d = small_disk();
        let before = d.to_vec().unwrap();
        let t = GptTable::read(&d).unwrap();
        let other_bits = 0x0000_0000_0000_0005u64 | (1 << 60);
        update_attributes(&d, &[(3, other_bits | (0xA << 48))]).unwrap();
        let after = d.to_vec().unwrap();
        let h = t.header();
        let b = t.backup.as_ref().unwrap();
        let attr_primary = (h.entries_lba * 512 + 2 * 128 + 48) as usize;
        let attr_backup = (b.entries_lba * 512 + 2 * 128 + 48) as usize;
        let diff: Vec<usize> = before
            .chunks(4096)
            .zip(after.chunks(4096))
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .flat_map(|(blk, _)| blk * 4096..(blk + 1) * 4096)
            .filter(|&i| before[i] != after[i])
            .collect();
        assert!(!diff.is_empty());
        for i in diff {
            let ok = (attr_primary..attr_primary + 8).contains(&i)
                || (attr_backup..attr_backup + 8).contains(&i)
                || (512 + 16..512 + 20).contains(&i) // header CRC
                || (512 + 88..512 + 92).contains(&i) // entries CRC
                || (b.my_lba as usize * 512 + 16..b.my_lba as usize * 512 + 20).contains(&i)
                || (b.my_lba as usize * 512 + 88..b.my_lba as usize * 512 + 92).contains(&i);
            assert!(ok, "byte {i} changed");
        }
        let t2 = GptTable::read(&d).unwrap();
        assert_eq!(t2.entry(3).unwrap().attributes, other_bits | (0xA << 48));
        assert!(!t2.copies_differ());
    }

    /// A cut after every possible number of writes, keeping each seeded subset of the
    /// unsynced ones: the table is always valid and holds the old or the new value.
    #[test]
    fn a_cut_anywhere_leaves_old_or_new_never_a_mix() {
        let base = small_disk();
        let old = GptTable::read(&base).unwrap().entry(2).unwrap().attributes;
        let new = old ^ (0xF << 48) ^ (1 << 56);
        let mut outcomes = (0, 0);
        for k in 0..=4 {
            for seed in 0..16 {
                let d = PowerLossDisk::from_mem(&base);
                d.cut_after_writes(k);
                let res = update_attributes(&d, &[(2, new)]);
                assert_eq!(res.is_ok(), k >= 4, "k={k}");
                let after = d.after_power_cut(seed);
                let t = GptTable::read(&after).unwrap();
                let got = t.entry(2).unwrap().attributes;
                assert!(got == old || got == new, "k={k} seed={seed}: {got:#x}");
                if got == old {
                    outcomes.0 += 1;
                } else {
                    outcomes.1 += 1;
                }
                // And the next write repairs whatever the cut left.
                update_attributes(&after, &[(2, new)]).unwrap();
                let t = GptTable::read(&after).unwrap();
                assert_eq!(t.source(), TableCopy::Primary);
                assert!(t.backup_problem().is_none() && !t.copies_differ());
            }
        }
        assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
    }

    /// The GUID lands where `sgdisk` and the kernel read it (mixed-endian, bytes 16..32 of
    /// the entry) in both copies; nothing else but the CRCs changes; a retry writes nothing;
    /// a GUID another entry has is refused.
    #[test]
    fn unique_guid_update_is_exact_idempotent_and_unique() {
        let d = small_disk();
        let t = GptTable::read(&d).unwrap();
        let guid = Uuid::parse_str("9f86d081-884c-7d65-9a2f-eaa0c55ad015").unwrap();
        update_unique_guid(&d, 3, guid).unwrap();
        let t2 = GptTable::read(&d).unwrap();
        assert_eq!(t2.entry(3).unwrap().unique_guid, guid);
        assert!(!t2.copies_differ());
        let b = t.backup.as_ref().unwrap();
        for lba in [t.header().entries_lba, b.entries_lba] {
            let mut raw = [0u8; 16];
            d.read_at(&mut raw, lba * 512 + 2 * 128 + 16).unwrap();
            assert_eq!(raw[..4], [0x81, 0xd0, 0x86, 0x9f], "mixed-endian on disk");
            assert_eq!(raw[8..], [0x9a, 0x2f, 0xea, 0xa0, 0xc5, 0x5a, 0xd0, 0x15]);
        }
        for index in [1, 2, 4] {
            assert_eq!(t2.entry(index), t.entry(index));
        }
        let before = d.to_vec().unwrap();
        update_unique_guid(&d, 3, guid).unwrap();
        assert_eq!(d.to_vec().unwrap(), before, "a retry wrote");
        let err = update_unique_guid(&d, 2, guid).unwrap_err();
        assert!(
            matches!(err, Error::Gpt(GptError::DuplicateGuid { holder: 3, .. })),
            "{err}"
        );
        assert_eq!(d.to_vec().unwrap(), before, "a refused GUID was written");
    }

    /// A cut after every write of a GUID update, each seeded subset of the unsynced writes
    /// kept: the table is valid and has the old or the new GUID; the retry completes it.
    #[test]
    fn a_cut_during_a_guid_update_leaves_old_or_new() {
        let base = small_disk();
        let old = GptTable::read(&base).unwrap().entry(3).unwrap().unique_guid;
        let new = Uuid::from_bytes([0x5a; 16]);
        let mut seen = (false, false);
        for k in 0..=4 {
            for seed in 0..8 {
                let d = PowerLossDisk::from_mem(&base);
                d.cut_after_writes(k);
                assert_eq!(update_unique_guid(&d, 3, new).is_ok(), k >= 4, "k={k}");
                let after = d.after_power_cut(seed);
                let got = GptTable::read(&after)
                    .unwrap()
                    .entry(3)
                    .unwrap()
                    .unique_guid;
                assert!(got == old || got == new, "k={k} seed={seed}: {got}");
                seen = (seen.0 || got == old, seen.1 || got == new);
                let t = update_unique_guid(&after, 3, new).unwrap();
                assert_eq!(t.entry(3).unwrap().unique_guid, new);
            }
        }
        assert_eq!(seen, (true, true));
    }
}
