//! A tree index (FORMAT §3.2.1): the chunk index split so that a node fetches the chunk hashes
//! only of the regions it does not hold. Three parts, one after the other: the records'
//! lengths (one zstd frame), a table with one SHA-256 per group of `group` consecutive chunks
//! that has a stored chunk, and the column of the stored chunks' SHA-256s. The signed hash
//! covers the lengths and the table; a group's entry is the SHA-256 of its column bytes, so
//! the column is proven group by group, and a node that finds a group's chunks in its own
//! slot, at the group's offset, proves them by the same entry without fetching them.
//!
//! Every hash that accepts data keeps its 256 bits: a chunk is still checked by its own
//! SHA-256, now proven through its group's.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use super::record::{IndexWriter, Record, RecordForm};
use crate::digest::{Sha256Digest, ZeroDigests};
use crate::error::{Error, FormatError, Section};

/// Bytes of one hash, in the table and the column.
pub const HASH_LEN: u64 = 32;

/// The layout a manifest signs for a tree index: chunks per group, and the lengths of the
/// lengths frame and of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tree {
    /// Chunks per group.
    pub group: u32,
    /// The lengths frame's stored bytes.
    pub lengths: u64,
    /// The table's bytes: [`HASH_LEN`] per group with a stored chunk.
    pub table: u64,
}

/// Chunks per group the signer writes: 256 KiB of 4 KiB chunks. Smaller groups would fetch
/// fewer hashes around a change and more table (32 bytes a group, always fetched).
pub const GROUP: u32 = 64;

/// The allowed group sizes: powers of two within these.
pub const GROUP_MIN: u32 = 8;
/// See [`GROUP_MIN`].
pub const GROUP_MAX: u32 = 4096;

impl Tree {
    /// Checks the signed layout against the stored index's signed `size`.
    pub fn check(&self, size: u64) -> Result<(), String> {
        if !self.group.is_power_of_two() || !(GROUP_MIN..=GROUP_MAX).contains(&self.group) {
            return Err(format!(
                "group {} is not a power of two from {GROUP_MIN} to {GROUP_MAX}",
                self.group
            ));
        }
        if self.table % HASH_LEN != 0 {
            return Err(format!("table {} is not whole hashes", self.table));
        }
        match self.lengths.checked_add(self.table) {
            Some(head) if head <= size && (size - head) % HASH_LEN == 0 => Ok(()),
            _ => Err(format!(
                "lengths {} and table {} do not leave whole hashes of the {size} bytes",
                self.lengths, self.table
            )),
        }
    }

    /// The bytes the signed hash covers: the lengths and the table.
    pub fn head_len(&self) -> u64 {
        self.lengths + self.table
    }
}

/// Writes a tree index as the signer streams the image's records, never holding them: the
/// lengths, the column and the table each go to a file of the caller's (unnamed temporary
/// files: [`TreeFiles`]).
pub struct TreeWriter {
    lengths: IndexWriter<File>,
    column: BufWriter<File>,
    table: BufWriter<File>,
    group: Group,
    count: u64,
}

/// Empty files, read and written by the writer alone, for a tree index's three parts.
pub struct TreeFiles {
    /// The lengths frame.
    pub lengths: File,
    /// The column of hashes.
    pub column: File,
    /// The table.
    pub table: File,
}

/// The open group: its records so far, and the hash of its stored chunks' hashes.
struct Group {
    size: u32,
    taken: u32,
    stored: bool,
    hasher: Sha256,
}

impl Group {
    /// The hash of a group just filled (none when it holds no stored chunk), and the next one
    /// opened.
    fn close(&mut self) -> Option<[u8; 32]> {
        let stored = std::mem::take(&mut self.stored);
        self.taken = 0;
        let hash: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        stored.then_some(hash)
    }
}

/// What a finished tree index is: its signed layout, hash and size.
#[derive(Debug, Clone, Copy)]
pub struct TreeSummary {
    /// The layout to sign.
    pub tree: Tree,
    /// SHA-256 of the lengths and the table.
    pub sha256: Sha256Digest,
    /// The stored index's length.
    pub size: u64,
    /// The records written.
    pub count: u64,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(format!("{what} the chunk index"))
}

impl TreeWriter {
    /// A writer of records in groups of `group` chunks into `files`, with store frame
    /// lengths when `store`.
    pub fn new(group: u32, store: bool, files: TreeFiles) -> Result<TreeWriter, Error> {
        Ok(TreeWriter {
            lengths: IndexWriter::new(files.lengths, RecordForm::lengths(store))?,
            column: BufWriter::new(files.column),
            table: BufWriter::new(files.table),
            group: Group {
                size: group,
                taken: 0,
                stored: false,
                hasher: Sha256::new(),
            },
            count: 0,
        })
    }

    /// Appends the next record.
    pub fn push(&mut self, record: &Record) -> Result<(), Error> {
        self.lengths.push(record)?;
        if record.frame_len != 0 {
            self.column
                .write_all(&record.sha256.0)
                .map_err(io("writing"))?;
            self.group.hasher.update(record.sha256.0);
            self.group.stored = true;
        }
        self.count += 1;
        self.group.taken += 1;
        if self.group.taken == self.group.size {
            self.close_group()?;
        }
        Ok(())
    }

    fn close_group(&mut self) -> Result<(), Error> {
        match self.group.close() {
            Some(hash) => self.table.write_all(&hash).map_err(io("writing")),
            None => Ok(()),
        }
    }

    /// The records written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the stored index to `out` (the lengths, the table, the column) and says what to
    /// sign of it.
    pub fn finish_into(mut self, out: &mut impl Write) -> Result<TreeSummary, Error> {
        if self.group.taken > 0 {
            self.close_group()?;
        }
        let group = self.group.size;
        let mut lengths = self.lengths.finish()?;
        let mut table = self
            .table
            .into_inner()
            .map_err(|e| io("writing")(e.into_error()))?;
        let mut column = self
            .column
            .into_inner()
            .map_err(|e| io("writing")(e.into_error()))?;
        let mut hasher = Sha256::new();
        let lengths_len = copy(&mut lengths, out, Some(&mut hasher))?;
        let table_len = copy(&mut table, out, Some(&mut hasher))?;
        let column_len = copy(&mut column, out, None)?;
        Ok(TreeSummary {
            tree: Tree {
                group,
                lengths: lengths_len,
                table: table_len,
            },
            sha256: Sha256Digest(hasher.finalize().into()),
            size: lengths_len + table_len + column_len,
            count: self.count,
        })
    }
}

/// Copies `file` from its start to `out`, hashing what it copies into `hasher` if given.
fn copy(
    file: &mut File,
    out: &mut impl Write,
    mut hasher: Option<&mut Sha256>,
) -> Result<u64, Error> {
    file.seek(SeekFrom::Start(0)).map_err(io("rewinding"))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut copied = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("reading back"))?;
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            return Ok(copied);
        };
        if let Some(hasher) = hasher.as_deref_mut() {
            hasher.update(bytes);
        }
        out.write_all(bytes).map_err(io("writing"))?;
        copied += n as u64;
    }
}

/// The records of a tree index whose lengths and table hash as signed: each record's hash
/// taken from the column (an all-zero chunk's is implied), handed out a group at a time, and
/// only once the group's column bytes hash to its table entry. After the last record, the
/// column and the table must be used up.
pub(crate) struct TreeRecords<L, C, T> {
    lengths: L,
    column: C,
    table: T,
    group: u32,
    zeros: ZeroDigests,
    /// The checked group, last record first.
    ready: Vec<Record>,
    number: u64,
    done: bool,
}

impl<L, C, T> TreeRecords<L, C, T>
where
    L: Iterator<Item = Result<Record, FormatError>>,
    C: Read,
    T: Read,
{
    pub(crate) fn new(lengths: L, column: C, table: T, group: u32) -> Self {
        TreeRecords {
            lengths,
            column,
            table,
            group,
            zeros: ZeroDigests::default(),
            ready: Vec::new(),
            number: 0,
            done: false,
        }
    }

    /// Reads and checks the next group into `ready`; false after the last.
    fn next_group(&mut self) -> Result<bool, FormatError> {
        let number = self.number;
        let bad =
            |reason: String| FormatError::field(Section::Index, format!("group {number}"), reason);
        let mut hasher = Sha256::new();
        let mut stored = false;
        for _ in 0..self.group {
            let Some(record) = self.lengths.next() else {
                break;
            };
            let mut record = record?;
            if record.frame_len == 0 {
                record.sha256 = self.zeros.of(record.raw_len);
            } else {
                let mut hash = [0u8; 32];
                self.column
                    .read_exact(&mut hash)
                    .map_err(|e| bad(format!("its column of hashes is cut short: {e}")))?;
                hasher.update(hash);
                record.sha256 = Sha256Digest(hash);
                stored = true;
            }
            self.ready.push(record);
        }
        if self.ready.is_empty() {
            return Ok(false);
        }
        self.ready.reverse();
        self.number += 1;
        if !stored {
            return Ok(true);
        }
        let mut entry = [0u8; 32];
        self.table
            .read_exact(&mut entry)
            .map_err(|e| bad(format!("the table has no entry for it: {e}")))?;
        let actual = Sha256Digest(hasher.finalize().into());
        if actual.0 != entry {
            return Err(bad(format!(
                "its hashes hash to {}, the table says {}",
                actual.to_hex(),
                Sha256Digest(entry).to_hex()
            )));
        }
        Ok(true)
    }

    /// After the last record: nothing left in the column or the table.
    fn check_used_up(&mut self) -> Result<(), FormatError> {
        for (what, rest) in [
            ("column of hashes", &mut self.column as &mut dyn Read),
            ("table", &mut self.table),
        ] {
            match rest.read(&mut [0u8; 1]) {
                Ok(0) => {}
                Ok(_) => {
                    return Err(FormatError::field(
                        Section::Index,
                        "",
                        format!("its {what} is longer than its records need"),
                    ))
                }
                Err(e) => {
                    return Err(FormatError::field(
                        Section::Index,
                        "",
                        format!("cannot read its {what}: {e}"),
                    ))
                }
            }
        }
        Ok(())
    }
}

impl<L, C, T> Iterator for TreeRecords<L, C, T>
where
    L: Iterator<Item = Result<Record, FormatError>>,
    C: Read,
    T: Read,
{
    type Item = Result<Record, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(record) = self.ready.pop() {
            return Some(Ok(record));
        }
        if self.done {
            return None;
        }
        let next = self.next_group().and_then(|more| {
            if !more {
                self.check_used_up()?;
            }
            Ok(more)
        });
        match next {
            Ok(true) => self.ready.pop().map(Ok),
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::index::record::{decode, CONTINUED};
    use std::borrow::Cow;

    /// `kinds`: 0 an all-zero chunk, 1 a new frame, 2 continued.
    pub(crate) fn records(kinds: &[u8]) -> Vec<Record> {
        let mut zeros = ZeroDigests::default();
        kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| Record {
                sha256: match kind {
                    0 => zeros.of(4096),
                    _ => Sha256Digest::of(&(i as u64).to_le_bytes()),
                },
                raw_len: 4096,
                frame_len: match kind {
                    0 => 0,
                    1 => 100,
                    _ => CONTINUED,
                },
                store_len: 0,
            })
            .collect()
    }

    fn written(records: &[Record], group: u32) -> (Vec<u8>, TreeSummary) {
        let files = TreeFiles {
            lengths: tempfile::tempfile().unwrap(),
            column: tempfile::tempfile().unwrap(),
            table: tempfile::tempfile().unwrap(),
        };
        let mut writer = TreeWriter::new(group, false, files).unwrap();
        for r in records {
            writer.push(r).unwrap();
        }
        let mut out = Vec::new();
        let summary = writer.finish_into(&mut out).unwrap();
        (out, summary)
    }

    fn read(stored: &[u8], tree: Tree, count: u64) -> Result<Vec<Record>, FormatError> {
        let (head, column) = stored.split_at(tree.head_len() as usize);
        let (lengths, table) = head.split_at(tree.lengths as usize);
        let lengths = decode(Cow::Borrowed(lengths), 0, count, RecordForm::Lengths)?;
        TreeRecords::new(lengths, column, table, tree.group).collect()
    }

    #[test]
    fn a_tree_index_reads_back_its_records_and_signs_its_head() {
        let kinds: Vec<u8> = (0..300).map(|i| [1, 2, 2, 0, 0, 1][i % 6]).collect();
        let mut kinds = kinds;
        kinds[8..24].fill(0); // a group of zeros alone has no table entry
        let records = records(&kinds);
        let (stored, summary) = written(&records, 8);
        let stored_chunks = kinds.iter().filter(|&&k| k != 0).count() as u64;
        let groups_stored = kinds
            .chunks(8)
            .filter(|g| g.iter().any(|&k| k != 0))
            .count() as u64;
        assert_eq!(summary.tree.table, groups_stored * HASH_LEN);
        assert_eq!(
            summary.size - summary.tree.head_len(),
            stored_chunks * HASH_LEN
        );
        assert_eq!(
            summary.sha256,
            Sha256Digest::of(&stored[..summary.tree.head_len() as usize])
        );
        summary.tree.check(summary.size).unwrap();
        assert_eq!(read(&stored, summary.tree, 300).unwrap(), records);
    }

    #[test]
    fn a_group_whose_hashes_do_not_match_its_entry_is_refused_before_its_records() {
        let records = records(&[1, 2, 1, 2, 1, 2, 1, 2, 1, 1]);
        let (mut stored, summary) = written(&records, 8);
        let last = stored.len() - 1;
        stored[last] ^= 1; // the second group's one hash
        let error = read(&stored, summary.tree, 10).unwrap_err().to_string();
        assert!(
            error.contains("group 1") && error.contains("the table says"),
            "{error}"
        );

        // The column one hash short, or one too long.
        let short = &stored[..stored.len() - 32];
        let error = read(short, summary.tree, 10).unwrap_err().to_string();
        assert!(error.contains("cut short"), "{error}");
        let (good, _) = written(&records, 8);
        let mut long = good.clone();
        long.extend_from_slice(&[0; 32]);
        let error = read(&long, summary.tree, 10).unwrap_err().to_string();
        assert!(error.contains("longer than its records need"), "{error}");
    }

    #[test]
    fn a_layout_must_leave_whole_hashes() {
        let tree = Tree {
            group: 64,
            lengths: 100,
            table: 64,
        };
        assert!(tree.check(100 + 64 + 320).is_ok());
        for (bad, size) in [
            (Tree { group: 48, ..tree }, 484),
            (Tree { group: 4, ..tree }, 484),
            (Tree { table: 63, ..tree }, 483),
            (tree, 485),
            (tree, 150),
            (
                Tree {
                    lengths: u64::MAX,
                    ..tree
                },
                484,
            ),
        ] {
            assert!(bad.check(size).is_err(), "{bad:?} of {size}");
        }
    }
}
