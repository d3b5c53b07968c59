//! Power-cut simulators for tests: a disk ([`PowerLossDisk`]) and a file store
//! ([`PowerLossFs`]) that, after a chosen number of writes, lose power and come back with what
//! a real power cut leaves (what was synced plus a seeded subset of the rest), and the seeded
//! generator they use ([`SplitMix64`]). Built with the `sim` feature only.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::block::{check_range, BlockDevice};
use super::fs::{FileStore, NewFile};
use super::mem::{lock, normalize, MemDisk, MemFs, SparseBytes};
/// One write not yet made durable by a sync.
#[derive(Debug, Clone)]
enum Pending {
    Data(u64, Vec<u8>),
    Zero(u64, u64),
}

#[derive(Debug)]
struct LossState {
    durable: SparseBytes,
    view: SparseBytes,
    pending: Vec<Pending>,
    writes_done: u64,
    cut_after: Option<u64>,
    powered: bool,
}

/// A simulated disk with a page cache that loses data on a power cut.
///
/// Writes go to a cache (`read_at` sees them); `sync` makes them durable. After
/// [`cut_after_writes`](Self::cut_after_writes)`(k)`, the `k+1`-th write (and everything after)
/// fails as if the power went off. [`after_power_cut`](Self::after_power_cut)`(seed)` returns
/// the disk as it would be found at the next boot: everything synced, plus a seeded pseudo-random
/// subset of the writes made after the last sync (applied in their original order).
/// Writes are never torn inside one call: one `write_at` is kept whole or lost whole.
#[derive(Debug, Clone)]
pub struct PowerLossDisk {
    state: Arc<Mutex<LossState>>,
}

impl PowerLossDisk {
    /// A zeroed disk of `size` bytes, power on.
    pub fn new(size: u64) -> Self {
        Self::from_durable(SparseBytes::new(size))
    }

    /// A disk whose durable content is a copy of `disk`'s content.
    pub fn from_mem(disk: &MemDisk) -> Self {
        Self::from_durable(disk.sparse_bytes())
    }

    fn from_durable(durable: SparseBytes) -> Self {
        Self {
            state: Arc::new(Mutex::new(LossState {
                view: durable.clone(),
                durable,
                pending: Vec::new(),
                writes_done: 0,
                cut_after: None,
                powered: true,
            })),
        }
    }

    /// Cut the power when `k` more writes (`write_at` or `zero_range`) have completed.
    pub fn cut_after_writes(&self, k: u64) {
        let mut s = lock(&self.state);
        s.cut_after = Some(s.writes_done + k);
        if k == 0 {
            s.powered = false;
        }
    }

    /// Cut the power now: every later call fails.
    pub fn cut_now(&self) {
        lock(&self.state).powered = false;
    }

    /// Whether the power is still on.
    pub fn powered(&self) -> bool {
        lock(&self.state).powered
    }

    /// Writes completed so far (for choosing cut points).
    pub fn writes_done(&self) -> u64 {
        lock(&self.state).writes_done
    }

    /// Writes made since the last sync (what a cut could lose).
    pub fn unsynced_writes(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// The disk found after the power comes back: synced data plus the seeded subset of
    /// unsynced writes. The result is a fresh, powered-on disk.
    pub fn after_power_cut(&self, seed: u64) -> PowerLossDisk {
        let s = lock(&self.state);
        let mut durable = s.durable.clone();
        let mut rng = SplitMix64(seed);
        for p in &s.pending {
            if rng.next() & 1 == 1 {
                // In range: each pending write was checked when it was made.
                let _ = match p {
                    Pending::Data(off, data) => durable.write(data, *off),
                    Pending::Zero(off, len) => durable.zero(*off, *len),
                };
            }
        }
        Self::from_durable(durable)
    }

    fn record(&self, p: Pending) -> io::Result<()> {
        let mut s = lock(&self.state);
        if !s.powered {
            return Err(power_off());
        }
        if s.cut_after.is_some_and(|k| s.writes_done >= k) {
            s.powered = false;
            return Err(power_off());
        }
        match &p {
            Pending::Data(off, data) => s.view.write(data, *off)?,
            Pending::Zero(off, len) => s.view.zero(*off, *len)?,
        }
        s.pending.push(p);
        s.writes_done += 1;
        Ok(())
    }
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut: the disk is off")
}

/// A tiny deterministic generator (SplitMix64), so simulations are reproducible from a seed
/// without pulling a random-number crate into the library.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 pseudo-random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl BlockDevice for PowerLossDisk {
    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.state).view.size)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = lock(&self.state);
        if !s.powered {
            return Err(power_off());
        }
        s.view.read(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size()?)?;
        self.record(Pending::Data(offset, buf.to_vec()))
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.size()?)?;
        self.record(Pending::Zero(offset, len))
    }
    fn sync(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        if !s.powered {
            return Err(power_off());
        }
        s.durable = s.view.clone();
        s.pending.clear();
        Ok(())
    }
}

/// A [`FileStore`] that loses power: after [`cut_after_ops`](Self::cut_after_ops)`(k)`, the
/// `k+1`-th mutating call fails and so does everything after it. Mutating calls are those of
/// [`FileStore`] that change files, and, for a streamed file ([`FileStore::create`]), each
/// `write` and the `finish`, so a cut can land inside a streamed write.
///
/// Every completed call was durable (that is the [`FileStore`] contract), so the files found
/// at the next boot ([`after_power_cut`](Self::after_power_cut)) are those of the completed
/// calls, plus the interrupted one: an atomic call (`write_atomic`, `rename`, `remove`,
/// `create`) is applied whole or not at all (seeded), and an interrupted in-place `overwrite`
/// is torn: a seeded subset of its 512-byte sectors is kept, as a disk may do. A streamed file
/// not finished before the cut is what a page cache leaves: a seeded prefix of the bytes
/// written to it (the interrupted write included), or its content from before `create`.
#[derive(Debug, Clone, Default)]
pub struct PowerLossFs {
    state: Arc<Mutex<LossFsState>>,
}

#[derive(Debug, Default)]
struct LossFsState {
    files: MemFs,
    ops_done: u64,
    cut_after: Option<u64>,
    powered_off: bool,
    interrupted: Option<FsOp>,
    /// Streamed files not finished yet, by id.
    unfinished: BTreeMap<u64, Unfinished>,
    next_id: u64,
}

/// A streamed file whose data is not durable yet.
#[derive(Debug)]
struct Unfinished {
    /// Where it is now (`None` once removed or replaced).
    path: Option<PathBuf>,
    /// Its content before `create` truncated it (`None`: it did not exist).
    before: Option<Vec<u8>>,
    /// Every byte written to it, the interrupted write's included.
    written: Vec<u8>,
}

#[derive(Debug, Clone)]
enum FsOp {
    WriteAtomic(PathBuf, Vec<u8>),
    Overwrite(PathBuf, Vec<u8>),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
    Create(PathBuf),
}

/// Why a mutating call may not run.
enum Off {
    /// The power was off already.
    Already,
    /// This call is the one the power goes off in.
    Now,
}

impl LossFsState {
    /// Whether the next mutating call may run; when it is the cut point, the power goes off.
    fn begin(&mut self) -> Result<(), Off> {
        if self.powered_off {
            return Err(Off::Already);
        }
        if self.cut_after.is_some_and(|k| self.ops_done >= k) {
            self.powered_off = true;
            return Err(Off::Now);
        }
        Ok(())
    }

    fn check_on(&self) -> io::Result<()> {
        if self.powered_off {
            Err(power_off())
        } else {
            Ok(())
        }
    }

    /// Follow unfinished streamed files through a completed call that moved or dropped them.
    fn retarget(&mut self, op: &FsOp) {
        for u in self.unfinished.values_mut() {
            let Some(path) = u.path.clone() else { continue };
            match op {
                FsOp::Rename(from, to) if *from == path => u.path = Some(to.clone()),
                FsOp::Rename(_, p)
                | FsOp::WriteAtomic(p, _)
                | FsOp::Remove(p)
                | FsOp::Create(p)
                    if *p == path =>
                {
                    u.path = None
                }
                _ => {}
            }
        }
    }

    fn write_streamed(&mut self, id: u64, buf: &[u8]) -> io::Result<usize> {
        let cut = self.begin();
        let u = self
            .unfinished
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("write after finish"))?;
        match cut {
            Err(Off::Now) => {
                u.written.extend_from_slice(buf);
                return Err(power_off());
            }
            Err(Off::Already) => return Err(power_off()),
            Ok(()) => {}
        }
        // Writes to a removed file succeed and go nowhere, as on a real filesystem.
        let n = match &u.path {
            Some(p) => self.files.append(p, buf)?,
            None => buf.len(),
        };
        u.written.extend_from_slice(buf.get(..n).unwrap_or(buf));
        self.ops_done += 1;
        Ok(n)
    }

    fn finish_streamed(&mut self, id: u64) -> io::Result<()> {
        self.begin().map_err(|_| power_off())?;
        self.unfinished.remove(&id);
        self.ops_done += 1;
        Ok(())
    }
}

/// A streamed file of a [`PowerLossFs`].
struct LossNewFile {
    state: Arc<Mutex<LossFsState>>,
    id: u64,
}

impl Write for LossNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.state).write_streamed(self.id, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl NewFile for LossNewFile {
    fn finish(self: Box<Self>) -> io::Result<()> {
        lock(&self.state).finish_streamed(self.id)
    }
}

impl PowerLossFs {
    /// A store holding a copy of `files`' content (and its capacity), power on.
    pub fn from_mem(files: &MemFs) -> Self {
        let copy = MemFs::from_files(files.snapshot(), files.capacity());
        Self {
            state: Arc::new(Mutex::new(LossFsState {
                files: copy,
                ..LossFsState::default()
            })),
        }
    }

    /// Cut the power when `k` more mutating calls have completed.
    pub fn cut_after_ops(&self, k: u64) {
        let mut s = lock(&self.state);
        s.cut_after = Some(s.ops_done + k);
    }

    /// Mutating calls completed so far.
    pub fn ops_done(&self) -> u64 {
        lock(&self.state).ops_done
    }

    /// Whether the power is still on.
    pub fn powered(&self) -> bool {
        !lock(&self.state).powered_off
    }

    /// The files found after the power comes back (a fresh, powered-on store).
    pub fn after_power_cut(&self, seed: u64) -> MemFs {
        let s = lock(&self.state);
        let out = MemFs::from_files(s.files.snapshot(), s.files.capacity());
        let mut rng = SplitMix64(seed);
        for u in s.unfinished.values() {
            if let Some(path) = &u.path {
                keep_some_of(&out, path, u, &mut rng);
            }
        }
        // Ignoring errors: an interrupted call on a missing file simply did nothing.
        let _ = match &s.interrupted {
            None => Ok(()),
            Some(FsOp::Overwrite(p, data)) => {
                let mut cur = out.read(p, u64::MAX).unwrap_or_default();
                for (i, sector) in data.chunks(512).enumerate() {
                    if rng.next() & 1 == 1 {
                        if let Some(dst) = cur.get_mut(i * 512..i * 512 + sector.len()) {
                            dst.copy_from_slice(sector);
                        }
                    }
                }
                out.write_atomic(p, &cur)
            }
            Some(_) if rng.next() & 1 == 0 => Ok(()),
            Some(FsOp::WriteAtomic(p, d)) => out.write_atomic(p, d),
            Some(FsOp::Rename(f, t)) => out.rename(f, t),
            Some(FsOp::Remove(p)) => out.remove(p),
            Some(FsOp::Create(p)) => out.write_atomic(p, &[]),
        };
        out
    }

    fn mutate(&self, op: FsOp) -> io::Result<()> {
        let mut s = lock(&self.state);
        match s.begin() {
            Ok(()) => {}
            Err(Off::Already) => return Err(power_off()),
            Err(Off::Now) => {
                s.interrupted = Some(op);
                return Err(power_off());
            }
        }
        match &op {
            FsOp::WriteAtomic(p, d) => s.files.write_atomic(p, d)?,
            FsOp::Overwrite(p, d) => s.files.overwrite(p, d)?,
            FsOp::Rename(f, t) => s.files.rename(f, t)?,
            FsOp::Remove(p) => s.files.remove(p)?,
            FsOp::Create(p) => s.files.write_atomic(p, &[])?,
        }
        s.retarget(&op);
        s.ops_done += 1;
        Ok(())
    }

    fn read_only<T>(&self, f: impl FnOnce(&MemFs) -> io::Result<T>) -> io::Result<T> {
        let s = lock(&self.state);
        s.check_on()?;
        f(&s.files)
    }
}

/// What a page cache leaves of an unfinished streamed file: a seeded prefix of what was
/// written, or the content from before it was created.
fn keep_some_of(out: &MemFs, path: &Path, u: &Unfinished, rng: &mut SplitMix64) {
    let n = u.written.len() as u64;
    let pick = rng.next() % (n + 2);
    // Ignoring errors: `out` is a plain in-memory map; removing a file already gone is fine.
    let _ = match (
        usize::try_from(pick).ok().and_then(|k| u.written.get(..k)),
        &u.before,
    ) {
        (Some(prefix), _) => out.write_atomic(path, prefix),
        (None, Some(before)) => out.write_atomic(path, before),
        (None, None) => out.remove(path),
    };
}

impl FileStore for PowerLossFs {
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
        self.read_only(|f| f.read(path, max_len))
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.mutate(FsOp::WriteAtomic(normalize(path)?, data.to_vec()))
    }
    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.mutate(FsOp::Overwrite(normalize(path)?, data.to_vec()))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate(FsOp::Rename(normalize(from)?, normalize(to)?))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.mutate(FsOp::Remove(normalize(path)?))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.read_only(|f| f.list(dir))
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        normalize(dir).map(|_| ())
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn NewFile>> {
        let path = normalize(path)?;
        let before = self.read_only(|f| Ok(f.read(&path, u64::MAX).ok()))?;
        self.mutate(FsOp::Create(path.clone()))?;
        let mut s = lock(&self.state);
        let id = s.next_id;
        s.next_id += 1;
        s.unfinished.insert(
            id,
            Unfinished {
                path: Some(path),
                before,
                written: Vec::new(),
            },
        );
        Ok(Box::new(LossNewFile {
            state: self.state.clone(),
            id,
        }))
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.read_only(|f| f.read_at(path, offset, len))
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        self.read_only(|f| f.len(path))
    }
    fn free_space(&self) -> io::Result<u64> {
        self.read_only(MemFs::free_space)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn power_loss_keeps_synced_and_a_seeded_subset() {
        let d = PowerLossDisk::new(4096);
        d.write_at(&[1], 0).unwrap();
        d.sync().unwrap();
        for i in 1..=32u8 {
            d.write_at(&[i], u64::from(i)).unwrap();
        }
        assert_eq!(d.unsynced_writes(), 32);
        let after = d.after_power_cut(42);
        let again = d.after_power_cut(42);
        let mut a = [0u8; 33];
        let mut b = [0u8; 33];
        after.read_at(&mut a, 0).unwrap();
        again.read_at(&mut b, 0).unwrap();
        assert_eq!(a, b, "same seed, same disk");
        assert_eq!(a[0], 1, "synced write kept");
        let kept = a[1..].iter().filter(|&&x| x != 0).count();
        assert!(kept > 0 && kept < 32, "a strict subset is kept ({kept})");
    }

    #[test]
    fn power_loss_fs_store() {
        crate::io::fs::tests::exercise_store(&PowerLossFs::default());
    }

    /// Streams `data` into the file `f` in writes of 4 bytes, then finishes it.
    fn stream(fs: &PowerLossFs, data: &[u8]) -> io::Result<()> {
        let mut f = fs.create(Path::new("f"))?;
        for piece in data.chunks(4) {
            f.write_all(piece)?;
        }
        f.finish()
    }

    #[test]
    fn an_unfinished_streamed_file_keeps_a_prefix_or_its_old_content() {
        let (old, new) = (b"old content!".as_slice(), b"new content!".as_slice());
        let base = PowerLossFs::default();
        stream(&base, old).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        // create, 3 writes, finish: cut before each, and after all.
        for k in 0..=5 {
            for seed in 0..16 {
                let fs = PowerLossFs::from_mem(&base.after_power_cut(0));
                fs.cut_after_ops(k);
                let done = stream(&fs, new).is_ok();
                assert_eq!(done, k == 5, "k {k}");
                let got = fs.after_power_cut(seed).read(Path::new("f"), 100).unwrap();
                if k == 5 {
                    assert_eq!(got, new);
                } else {
                    assert!(
                        got == old || new.starts_with(&got),
                        "k {k} seed {seed}: {got:?}"
                    );
                }
                seen.insert(got);
            }
        }
        assert!(seen.contains(old) && seen.contains(new) && seen.contains(&b""[..]));
        assert!(seen.len() > 4, "several prefixes: {seen:?}");
    }

    #[test]
    fn power_loss_fs_follows_a_renamed_unfinished_file_and_keeps_capacity() {
        let fs = PowerLossFs::from_mem(&MemFs::with_capacity(8));
        let mut f = fs.create(Path::new("x")).unwrap();
        f.write_all(b"1234").unwrap();
        fs.rename(Path::new("x"), Path::new("y")).unwrap();
        // Not finished: what the cache keeps of it follows the rename.
        let after = fs.after_power_cut(3);
        assert!(after.read(Path::new("x"), 10).is_err());
        let y = after.read(Path::new("y"), 10);
        assert!(
            y.as_deref().map_or(true, |d| b"1234".starts_with(d)),
            "{y:?}"
        );
        assert_eq!(fs.free_space().unwrap(), 4);
        assert_eq!(
            after.free_space().unwrap(),
            8 - after.len(Path::new("y")).unwrap_or(0)
        );
    }

    #[test]
    fn power_loss_cut_after_k_writes() {
        let d = PowerLossDisk::new(100);
        d.cut_after_writes(2);
        d.write_at(&[1], 0).unwrap();
        d.write_at(&[1], 1).unwrap();
        assert!(d.write_at(&[1], 2).is_err());
        assert!(!d.powered());
        assert!(d.sync().is_err());
    }
}
