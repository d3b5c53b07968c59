//! An external sort of fixed 16-byte records, a pair of `u64` in tuple order (docs/DESIGN.md
//! §8 "Memory"): records are gathered in a bounded buffer, each full buffer sorted and written
//! to an unnamed file in the scratch directory (a run), and the runs merged k ways through a
//! binary heap over buffered readers. Runs are merged in tiers as they accumulate (every
//! [`Limits::fan_in`] runs of one tier become one run of the next), so the files open at once and the
//! readers' buffers stay bounded whatever the count, and each record is rewritten only once
//! per tier.
//!
//! Why not a crate: `extsort` needs `rayon` and makes its runs named files in a temporary
//! directory of its own; these runs are unnamed, in the directory the agent already writes
//! its scratch files to, and gone with the process.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A record: sorted by its first field, then its second.
pub(crate) type Record = (u64, u64);

/// Bytes of a record on disk: both fields little-endian.
const RECORD_BYTES: usize = 16;

/// How much a [`Sorter`] holds in memory and how many runs it merges at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Records sorted in memory before they are written as a run.
    pub(crate) run_records: usize,
    /// Runs of one tier merged into one of the next.
    pub(crate) fan_in: usize,
}

impl Default for Limits {
    /// Runs of 2 MiB, merged 16 at a time: at most 16 runs of 128 Ki records, 15 of 2 Mi and
    /// so on stay open, each read 64 KiB at a time.
    fn default() -> Limits {
        Limits {
            run_records: 128 << 10,
            fan_in: 16,
        }
    }
}

/// Bytes a run's reader reads at a time.
const READ_BYTES: usize = 64 << 10;

/// An unnamed file in `scratch`, or in the system's temporary directory without one.
pub(crate) fn scratch_file(scratch: Option<&Path>) -> std::io::Result<File> {
    match scratch {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
}

/// Sorts the records pushed into it, within a bounded buffer and unnamed files.
pub(crate) struct Sorter {
    what: &'static str,
    scratch: Option<PathBuf>,
    buffer: Vec<Record>,
    run_records: usize,
    fan_in: usize,
    /// Written runs and their tiers, the tiers never rising from first to last.
    runs: Vec<(Run, u32)>,
}

impl Sorter {
    /// A sorter of `what` (named in its I/O errors) writing its runs to `scratch`.
    pub(crate) fn new(what: &'static str, scratch: Option<&Path>, limits: Limits) -> Sorter {
        Sorter {
            what,
            scratch: scratch.map(Path::to_path_buf),
            buffer: Vec::new(),
            run_records: limits.run_records.max(1),
            fan_in: limits.fan_in.max(2),
            runs: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, record: Record) -> Result<()> {
        self.buffer.push(record);
        if self.buffer.len() >= self.run_records {
            self.spill()?;
        }
        Ok(())
    }

    /// The records pushed, in order: from memory when they never filled the buffer, else
    /// merged from the runs.
    pub(crate) fn sorted(mut self) -> Result<Sorted> {
        if self.runs.is_empty() {
            self.buffer.sort_unstable();
            return Ok(Sorted::Memory(std::mem::take(&mut self.buffer).into_iter()));
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        let runs = self.runs.iter().map(|(run, _)| run);
        Ok(Sorted::Merged(Merge::new(runs)?))
    }

    /// Writes the buffer as a run, then merges the last runs while `fan_in` of them share a
    /// tier.
    fn spill(&mut self) -> Result<()> {
        self.buffer.sort_unstable();
        let run = self.write(self.buffer.iter().copied().map(Ok))?;
        self.buffer.clear();
        self.runs.push((run, 0));
        while let Some(tier) = self.full_tier() {
            let from = self.runs.len() - self.fan_in;
            let merged = {
                let runs = self.runs.get(from..).unwrap_or_default();
                self.write(Merge::new(runs.iter().map(|(run, _)| run))?)?
            };
            self.runs.truncate(from);
            self.runs.push((merged, tier + 1));
        }
        Ok(())
    }

    /// The tier of the last `fan_in` runs, if they share one.
    fn full_tier(&self) -> Option<u32> {
        let from = self.runs.len().checked_sub(self.fan_in)?;
        let last = self.runs.get(from..)?;
        let tier = last.first()?.1;
        last.iter().all(|(_, t)| *t == tier).then_some(tier)
    }

    fn write(&self, records: impl Iterator<Item = Result<Record>>) -> Result<Run> {
        Run::write(self.what, self.scratch.as_deref(), records)
    }
}

/// Sorted records, in an unnamed file, read from the start as often as needed.
pub(crate) struct Run {
    what: &'static str,
    file: File,
    records: u64,
}

impl Run {
    /// Writes `records` (already in order) to a new unnamed file in `scratch`.
    pub(crate) fn write(
        what: &'static str,
        scratch: Option<&Path>,
        records: impl Iterator<Item = Result<Record>>,
    ) -> Result<Run> {
        let file = scratch_file(scratch).map_err(Error::io(format!(
            "creating a file for {what} in the scratch directory"
        )))?;
        let failed = || Error::io(format!("writing {what} to the scratch directory"));
        let mut out = BufWriter::with_capacity(READ_BYTES, file);
        let mut count = 0u64;
        for record in records {
            let (a, b) = record?;
            out.write_all(&a.to_le_bytes()).map_err(failed())?;
            out.write_all(&b.to_le_bytes()).map_err(failed())?;
            count += 1;
        }
        let file = out.into_inner().map_err(|e| failed()(e.into_error()))?;
        Ok(Run {
            what,
            file,
            records: count,
        })
    }

    /// A reader of the run from its first record.
    pub(crate) fn reader(&self) -> Result<RunReader> {
        let file = self.file.try_clone().map_err(Error::io(format!(
            "reopening {} in the scratch directory",
            self.what
        )))?;
        Ok(RunReader {
            what: self.what,
            file,
            at: 0,
            left: self.records,
            buf: Vec::new(),
            pos: 0,
        })
    }
}

/// Reads a run's records in order, [`READ_BYTES`] at a time, at its own position in the file.
pub(crate) struct RunReader {
    what: &'static str,
    file: File,
    /// Where the next read starts in the file.
    at: u64,
    /// Records in the file past `at`.
    left: u64,
    buf: Vec<u8>,
    /// The next record's first byte in `buf`.
    pos: usize,
}

impl RunReader {
    fn fill(&mut self) -> Result<()> {
        let records = self.left.min((READ_BYTES / RECORD_BYTES) as u64);
        self.buf.resize(records as usize * RECORD_BYTES, 0);
        self.file
            .read_exact_at(&mut self.buf, self.at)
            .map_err(Error::io(format!(
                "reading {} from the scratch directory",
                self.what
            )))?;
        self.at += self.buf.len() as u64;
        self.left -= records;
        self.pos = 0;
        Ok(())
    }
}

impl Iterator for RunReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.pos >= self.buf.len() {
            if self.left == 0 {
                return None;
            }
            if let Err(e) = self.fill() {
                self.left = 0;
                self.buf.clear();
                return Some(Err(e));
            }
        }
        let bytes = self.buf.get(self.pos..self.pos + RECORD_BYTES)?;
        self.pos += RECORD_BYTES;
        let (a, b) = bytes.split_at(RECORD_BYTES / 2);
        Some(Ok((u64_le(a), u64_le(b))))
    }
}

fn u64_le(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(word)
}

/// Runs merged in order: the smallest head of all readers first.
pub(crate) struct Merge {
    readers: Vec<RunReader>,
    heads: BinaryHeap<Reverse<(Record, usize)>>,
}

impl Merge {
    fn new<'a>(runs: impl Iterator<Item = &'a Run>) -> Result<Merge> {
        let mut merge = Merge {
            readers: runs.map(Run::reader).collect::<Result<_>>()?,
            heads: BinaryHeap::new(),
        };
        for at in 0..merge.readers.len() {
            merge.advance(at)?;
        }
        Ok(merge)
    }

    /// Puts reader `at`'s next record, if any, among the heads.
    fn advance(&mut self, at: usize) -> Result<()> {
        if let Some(record) = self.readers.get_mut(at).and_then(Iterator::next) {
            self.heads.push(Reverse((record?, at)));
        }
        Ok(())
    }
}

impl Iterator for Merge {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        let Reverse((record, at)) = self.heads.pop()?;
        Some(self.advance(at).map(|()| record))
    }
}

/// A sorter's records in order.
pub(crate) enum Sorted {
    Memory(std::vec::IntoIter<Record>),
    Merged(Merge),
}

impl Iterator for Sorted {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        match self {
            Sorted::Memory(records) => records.next().map(Ok),
            Sorted::Merged(merge) => merge.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn sort(records: &[Record], run_records: usize, fan_in: usize) -> (Vec<Record>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            run_records,
            fan_in,
        };
        let mut sorter = Sorter::new("test records", Some(dir.path()), limits);
        for &record in records {
            sorter.push(record).unwrap();
        }
        let runs = sorter.runs.len();
        let sorted = sorter
            .sorted()
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap();
        // Runs are unnamed: nothing is left in the scratch directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (sorted, runs)
    }

    #[test]
    fn few_records_sort_in_memory() {
        let (sorted, runs) = sort(&[(3, 1), (1, 9), (3, 0), (1, 9)], 8, 2);
        assert_eq!(sorted, [(1, 9), (1, 9), (3, 0), (3, 1)]);
        assert_eq!(runs, 0);
    }

    #[test]
    fn runs_are_merged_in_tiers_and_the_open_runs_stay_few() {
        let records: Vec<Record> = (0..1000u64).map(|i| ((i * 7919) % 1000, i)).collect();
        let mut expected = records.clone();
        expected.sort_unstable();
        // 1000 runs of one record, four to a tier: at most 3 runs of each of 5 tiers remain.
        let (sorted, runs) = sort(&records, 1, 4);
        assert_eq!(sorted, expected);
        assert!(runs <= 3 * 5, "{runs} runs left open");
    }

    #[test]
    fn a_run_reads_from_the_start_each_time_and_across_read_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let count = 3 * (READ_BYTES / RECORD_BYTES) as u64 + 5;
        let run = Run::write(
            "test records",
            Some(dir.path()),
            (0..count).map(|i| Ok((i, !i))),
        )
        .unwrap();
        for _ in 0..2 {
            let read = run.reader().unwrap().collect::<Result<Vec<_>>>().unwrap();
            assert_eq!(read.len() as u64, count);
            assert!(read
                .iter()
                .enumerate()
                .all(|(i, &r)| r == (i as u64, !(i as u64))));
        }
    }

    #[test]
    fn a_run_cut_short_is_an_error_naming_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::write("test records", Some(dir.path()), (0..4).map(|i| Ok((i, i)))).unwrap();
        run.file.set_len(3 * RECORD_BYTES as u64).unwrap();
        let error = run
            .reader()
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap_err();
        assert!(
            error.to_string().contains("reading test records"),
            "{error}"
        );
    }

    proptest! {
        #[test]
        fn sorts_as_in_memory(
            records in proptest::collection::vec((0u64..64, any::<u64>()), 0..400),
            run_records in 1usize..16,
            fan_in in 2usize..5,
        ) {
            let mut expected = records.clone();
            expected.sort_unstable();
            prop_assert_eq!(sort(&records, run_records, fan_in).0, expected);
        }
    }
}
