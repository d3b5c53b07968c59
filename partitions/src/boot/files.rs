//! The slots' boot files (docs/DESIGN.md §5.1): each slot's kernel, initramfs or UKI and
//! command line in one directory, `<base>/<slot>/`, at fixed names ([`BootFile`]), beside the
//! backend's own files; and their replacement ([`Staging`]).
//!
//! Replacing a slot's files never changes what the loader reads until everything new is
//! durable: each new file is streamed under a temporary name (`.new-<file name>`) and
//! finished (fsynced), the caller reads it back, then [`Staging::commit`] renames each into
//! place and only then removes the old files the new set does not have. A cut before the
//! commit leaves the old files; a cut inside it leaves every final-name file complete (old or
//! new), and the next [`BootFiles::stage`] starts over. Callers stage only a slot that is
//! unbootable (the updater's install order), so a mix is never booted.
//!
//! For GRUB, which cannot read a plain file into a variable, the commit also keeps
//! `cmdline.env` beside `cmdline`: a GRUB environment block holding the same text as
//! `TANDEM_CMDLINE`, encoded by the grub backend's [`GrubEnv`].

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::grubenv::GrubEnv;
use super::SlotId;
use crate::error::{BootStateError, Error, Result, UsageError};
use crate::io::{FileStore, NewFile};

/// The GRUB environment block beside `cmdline` (with [`BootFiles::with_grub_env`]).
pub const CMDLINE_ENV: &str = "cmdline.env";
/// The variable of [`CMDLINE_ENV`] holding the command line.
pub const CMDLINE_VAR: &str = "TANDEM_CMDLINE";
/// The prefix of a staged file's name.
pub const STAGED_PREFIX: &str = ".new-";
/// The longest `cmdline` read (bytes).
pub const MAX_CMDLINE: u64 = 4096;

/// One file a slot boots with, at a fixed name in the slot's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootFile {
    /// A Unified Kernel Image, `uki.efi`.
    Uki,
    /// A kernel, `vmlinuz`.
    Kernel,
    /// An initramfs, `initrd.img`.
    Initrd,
    /// The kernel command line, `cmdline` (one line of text).
    Cmdline,
}

impl BootFile {
    /// Every boot file, in the order listings use.
    pub const ALL: [BootFile; 4] = [
        BootFile::Uki,
        BootFile::Kernel,
        BootFile::Initrd,
        BootFile::Cmdline,
    ];

    /// The file's name in the slot's directory.
    pub fn file_name(self) -> &'static str {
        match self {
            BootFile::Uki => "uki.efi",
            BootFile::Kernel => "vmlinuz",
            BootFile::Initrd => "initrd.img",
            BootFile::Cmdline => "cmdline",
        }
    }

    fn staged_name(self) -> String {
        format!("{STAGED_PREFIX}{}", self.file_name())
    }
}

impl fmt::Display for BootFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// The slots' boot files: `<base>/<slot>/` in a [`FileStore`].
#[derive(Debug, Clone)]
pub struct BootFiles {
    store: Arc<dyn FileStore>,
    base: PathBuf,
    grub_env: bool,
}

impl BootFiles {
    /// The boot files under `base` (relative to the store's root; empty for the root).
    pub fn new(store: Arc<dyn FileStore>, base: impl Into<PathBuf>) -> Self {
        Self {
            store,
            base: base.into(),
            grub_env: false,
        }
    }

    /// Also keep `cmdline.env` (a GRUB environment block with `TANDEM_CMDLINE`) beside
    /// `cmdline`, for GRUB.
    pub fn with_grub_env(mut self) -> Self {
        self.grub_env = true;
        self
    }

    /// The slot's directory, relative to the store's root (`tandem/b`).
    pub fn dir(&self, slot: SlotId) -> PathBuf {
        self.base.join(slot.to_string())
    }

    /// A boot file's path, relative to the store's root (`tandem/b/uki.efi`).
    pub fn path(&self, slot: SlotId, file: BootFile) -> PathBuf {
        self.dir(slot).join(file.file_name())
    }

    /// A boot file's path as a loader sees it when the store is the root of its filesystem
    /// (the ESP): `/tandem/b/uki.efi`, as a boot loader entry names it.
    pub fn loader_path(&self, slot: SlotId, file: BootFile) -> String {
        let mut out = String::new();
        for part in self.path(slot, file).components() {
            out.push('/');
            out.push_str(&part.as_os_str().to_string_lossy());
        }
        out
    }

    /// The files the slot has now, with their lengths (in [`BootFile::ALL`] order).
    pub fn present(&self, slot: SlotId) -> Result<Vec<(BootFile, u64)>> {
        let names = self.names(slot)?;
        let mut out = Vec::new();
        for file in BootFile::ALL {
            if names.iter().any(|n| n == file.file_name()) {
                let path = self.path(slot, file);
                let len = self
                    .store
                    .len(&path)
                    .map_err(|e| io_err("reading", &path, e))?;
                out.push((file, len));
            }
        }
        Ok(out)
    }

    /// Up to `len` bytes of a slot's boot file at `offset` (fewer at its end).
    pub fn read_at(
        &self,
        slot: SlotId,
        file: BootFile,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let path = self.path(slot, file);
        self.store
            .read_at(&path, offset, len)
            .map_err(|e| io_err("reading", &path, e))
    }

    /// The slot's `cmdline` text without surrounding whitespace, if the slot has one (at
    /// most [`MAX_CMDLINE`] bytes of printable UTF-8: a line break would end a boot loader
    /// entry's `options` line and start another).
    pub fn cmdline(&self, slot: SlotId) -> Result<Option<String>> {
        self.read_cmdline(&self.path(slot, BootFile::Cmdline))
    }

    /// The command line in the file at `path` (see [`cmdline`](Self::cmdline)).
    fn read_cmdline(&self, path: &Path) -> Result<Option<String>> {
        let data = match self.store.read(path, MAX_CMDLINE) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", path, e)),
        };
        let bad = |reason: &str| -> Error {
            BootStateError::Cmdline {
                path: path.to_path_buf(),
                reason: reason.into(),
            }
            .into()
        };
        let text = String::from_utf8(data).map_err(|_| bad("not UTF-8"))?;
        let text = text.trim();
        if text.chars().any(char::is_control) {
            return Err(bad("a control character (line break, tab, …) inside"));
        }
        Ok(Some(text.to_string()))
    }

    /// Bytes available for new files on the boot files' filesystem.
    pub fn free_space(&self) -> Result<u64> {
        self.store
            .free_space()
            .map_err(|e| io_err("measuring the free space under", &self.base, e))
    }

    /// Begin replacing the slot's boot files: create its directory and remove the `.new-*`
    /// files an interrupted earlier staging left. Changes nothing the loader reads.
    pub fn stage(&self, slot: SlotId) -> Result<Staging> {
        let dir = self.dir(slot);
        self.store
            .create_dir_all(&dir)
            .map_err(|e| io_err("creating", &dir, e))?;
        for name in self.names(slot)? {
            if name.starts_with(STAGED_PREFIX) {
                let path = dir.join(&name);
                self.store
                    .remove(&path)
                    .map_err(|e| io_err("removing", &path, e))?;
            }
        }
        Ok(Staging {
            files: self.clone(),
            slot,
            staged: Vec::new(),
        })
    }

    /// The names in the slot's directory (none when it does not exist).
    fn names(&self, slot: SlotId) -> Result<Vec<String>> {
        let dir = self.dir(slot);
        match self.store.list(&dir) {
            Ok(names) => Ok(names),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("listing", &dir, e)),
        }
    }

    fn remove_if_present(&self, path: &Path) -> Result<()> {
        match self.store.remove(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path, e)),
            _ => Ok(()),
        }
    }

    /// Write the slot's `cmdline.env` holding `cmdline`, or remove it when there is none.
    fn put_grub_env(&self, slot: SlotId, cmdline: Option<&str>) -> Result<()> {
        let path = self.dir(slot).join(CMDLINE_ENV);
        let Some(cmdline) = cmdline else {
            return self.remove_if_present(&path);
        };
        let mut env = GrubEnv::default();
        env.set(CMDLINE_VAR, cmdline);
        self.store
            .write_atomic(&path, &env.to_padded_block())
            .map_err(|e| io_err("writing", &path, e))
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// A replacement of one slot's boot files in progress ([`BootFiles::stage`]).
#[derive(Debug)]
pub struct Staging {
    files: BootFiles,
    slot: SlotId,
    /// The files created so far, and whether each was finished.
    staged: Vec<(BootFile, Arc<AtomicBool>)>,
}

impl Staging {
    /// The slot being staged.
    pub fn slot(&self) -> SlotId {
        self.slot
    }

    /// Create `.new-<file name>` for a streamed write; call [`NewFile::finish`] on it before
    /// [`commit`](Self::commit). Creating the same file again starts it over.
    pub fn create(&mut self, file: BootFile) -> Result<Box<dyn NewFile>> {
        let path = self.staged_path(file);
        let inner = self
            .files
            .store
            .create(&path)
            .map_err(|e| io_err("creating", &path, e))?;
        let finished = Arc::new(AtomicBool::new(false));
        self.staged.retain(|(f, _)| *f != file);
        self.staged.push((file, finished.clone()));
        Ok(Box::new(Tracked { inner, finished }))
    }

    /// Read back a staged file (for the caller's hash check).
    pub fn read_staged_at(&self, file: BootFile, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.staged_path(file);
        self.files
            .store
            .read_at(&path, offset, len)
            .map_err(|e| io_err("reading", &path, e))
    }

    /// Rename every staged file into place (each durable), write or remove `cmdline.env`
    /// (with [`BootFiles::with_grub_env`]), then remove the slot's boot files that were not
    /// staged (an old `vmlinuz` when the new release has a UKI, …). Refuses before changing
    /// anything when a staged file was never finished ([`UsageError::NotFinished`]) or the
    /// staged `cmdline` is not a command line ([`BootStateError::Cmdline`]).
    pub fn commit(self) -> Result<()> {
        if let Some((file, _)) = self.staged.iter().find(|(_, f)| !f.load(Ordering::SeqCst)) {
            return Err(UsageError::NotFinished {
                path: self.staged_path(*file),
            }
            .into());
        }
        let files = &self.files;
        let staged = |file: BootFile| self.staged.iter().any(|(f, _)| *f == file);
        let cmdline = if staged(BootFile::Cmdline) {
            files.read_cmdline(&self.staged_path(BootFile::Cmdline))?
        } else {
            None
        };
        for file in BootFile::ALL.into_iter().filter(|f| staged(*f)) {
            let (from, to) = (self.staged_path(file), files.path(self.slot, file));
            files.store.rename(&from, &to).map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", from.display(), to.display()),
                    e,
                )
            })?;
        }
        if files.grub_env {
            files.put_grub_env(self.slot, cmdline.as_deref())?;
        }
        for (file, _) in files.present(self.slot)? {
            if !staged(file) {
                files.remove_if_present(&files.path(self.slot, file))?;
            }
        }
        Ok(())
    }

    fn staged_path(&self, file: BootFile) -> PathBuf {
        self.files.dir(self.slot).join(file.staged_name())
    }
}

/// A staged file that records whether it was finished.
struct Tracked {
    inner: Box<dyn NewFile>,
    finished: Arc<AtomicBool>,
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl NewFile for Tracked {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.inner.finish()?;
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use std::collections::BTreeMap;

    use super::*;
    use crate::io::{MemFs, PowerLossFs};

    type Set<'a> = &'a [(BootFile, &'a [u8])];

    /// Stage `set` for `slot`, each file in writes of 4 KiB, and commit.
    fn install(files: &BootFiles, slot: SlotId, set: Set) -> Result<()> {
        let mut staging = files.stage(slot)?;
        for (file, data) in set {
            let mut f = staging.create(*file)?;
            for piece in data.chunks(4096) {
                f.write_all(piece).map_err(|e| Error::io("writing", e))?;
            }
            f.finish().map_err(|e| Error::io("finishing", e))?;
            assert_eq!(staging.read_staged_at(*file, 0, data.len())?, *data);
        }
        staging.commit()
    }

    /// The slot directory's files: name → content.
    fn slot_files(fs: &MemFs, dir: &str) -> BTreeMap<String, Vec<u8>> {
        fs.snapshot()
            .into_iter()
            .filter_map(|(p, d)| {
                let name = p.strip_prefix(dir).ok()?.to_str()?.to_string();
                Some((name, d))
            })
            .collect()
    }

    fn named(set: Set) -> BTreeMap<String, Vec<u8>> {
        set.iter()
            .map(|(f, d)| (f.file_name().to_string(), d.to_vec()))
            .collect()
    }

    #[test]
    fn paths_as_the_store_and_the_loader_see_them() {
        let fs: Arc<dyn FileStore> = Arc::new(MemFs::new());
        let sd = BootFiles::new(fs.clone(), "tandem");
        assert_eq!(sd.dir(SlotId::B), Path::new("tandem/b"));
        assert_eq!(
            sd.loader_path(SlotId::B, BootFile::Uki),
            "/tandem/b/uki.efi"
        );
        let grub = BootFiles::new(fs, "");
        assert_eq!(grub.dir(SlotId::A), Path::new("a"));
        assert_eq!(grub.loader_path(SlotId::A, BootFile::Kernel), "/a/vmlinuz");
        let names: Vec<_> = BootFile::ALL.iter().map(|f| f.file_name()).collect();
        assert_eq!(names, ["uki.efi", "vmlinuz", "initrd.img", "cmdline"]);
        assert_eq!(
            serde_json::to_string(&BootFile::Initrd).unwrap(),
            "\"initrd\""
        );
    }

    #[test]
    fn present_read_at_cmdline_and_free_space() {
        let fs = MemFs::with_capacity(1 << 20);
        let files = BootFiles::new(Arc::new(fs.clone()), "tandem");
        assert!(
            files.present(SlotId::A).unwrap().is_empty(),
            "no directory yet"
        );
        assert_eq!(files.cmdline(SlotId::A).unwrap(), None);
        let kernel = vec![7u8; 5000];
        install(
            &files,
            SlotId::A,
            &[
                (BootFile::Kernel, &kernel),
                (BootFile::Cmdline, b" quiet console=ttyS0\n"),
            ],
        )
        .unwrap();
        assert_eq!(
            files.present(SlotId::A).unwrap(),
            [(BootFile::Kernel, 5000), (BootFile::Cmdline, 21)]
        );
        assert_eq!(
            files
                .read_at(SlotId::A, BootFile::Kernel, 4990, 100)
                .unwrap(),
            [7; 10]
        );
        assert_eq!(
            files.cmdline(SlotId::A).unwrap().as_deref(),
            Some("quiet console=ttyS0")
        );
        assert_eq!(files.free_space().unwrap(), (1 << 20) - 5021);
        assert!(files.present(SlotId::B).unwrap().is_empty());

        // A line break would end the entry's `options` line: refused, naming the file.
        fs.write_atomic(Path::new("tandem/a/cmdline"), b"quiet\ninitrd /evil")
            .unwrap();
        let err = files.cmdline(SlotId::A).unwrap_err();
        assert!(
            matches!(&err, Error::BootState(BootStateError::Cmdline { path, .. }) if path == Path::new("tandem/a/cmdline")),
            "{err}"
        );
        fs.write_atomic(Path::new("tandem/a/cmdline"), &[b'x'; 5000])
            .unwrap();
        let err = files.cmdline(SlotId::A).unwrap_err();
        assert!(err.to_string().contains("tandem/a/cmdline"), "{err}");
    }

    #[test]
    fn commit_puts_the_new_set_in_place_and_removes_the_rest() {
        let fs = MemFs::new();
        let files = BootFiles::new(Arc::new(fs.clone()), "tandem");
        let old: Set = &[
            (BootFile::Kernel, b"old kernel"),
            (BootFile::Initrd, b"old initrd"),
            (BootFile::Cmdline, b"old=1"),
        ];
        install(&files, SlotId::A, old).unwrap();
        install(&files, SlotId::B, old).unwrap();
        // Leftovers of an interrupted staging, and a file that is none of ours.
        fs.write_atomic(Path::new("tandem/b/.new-vmlinuz"), b"half")
            .unwrap();
        fs.write_atomic(Path::new("tandem/b/README"), b"keep")
            .unwrap();
        let new: Set = &[(BootFile::Uki, b"a uki")];
        let mut staging = files.stage(SlotId::B).unwrap();
        assert!(
            !slot_files(&fs, "tandem/b").contains_key(".new-vmlinuz"),
            "stage removes leftovers"
        );
        let mut f = staging.create(BootFile::Uki).unwrap();
        f.write_all(b"a uki").unwrap();
        f.finish().unwrap();
        assert_eq!(
            files.present(SlotId::B).unwrap().len(),
            3,
            "nothing the loader reads changed before the commit"
        );
        staging.commit().unwrap();
        let mut want = named(new);
        want.insert("README".into(), b"keep".to_vec());
        assert_eq!(slot_files(&fs, "tandem/b"), want);
        assert_eq!(slot_files(&fs, "tandem/a"), named(old), "the other slot");
    }

    #[test]
    fn commit_refuses_a_staged_file_never_finished() {
        let fs = MemFs::new();
        let files = BootFiles::new(Arc::new(fs.clone()), "");
        install(&files, SlotId::A, &[(BootFile::Kernel, b"old")]).unwrap();
        let mut staging = files.stage(SlotId::A).unwrap();
        let mut f = staging.create(BootFile::Kernel).unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        let err = staging.commit().unwrap_err();
        assert!(
            matches!(&err, Error::Usage(UsageError::NotFinished { path }) if path == Path::new("a/.new-vmlinuz")),
            "{err}"
        );
        assert_eq!(fs.read(Path::new("a/vmlinuz"), 10).unwrap(), b"old");
    }

    #[test]
    fn commit_refuses_a_staged_cmdline_that_would_break_an_entry() {
        let fs = MemFs::new();
        let files = BootFiles::new(Arc::new(fs.clone()), "tandem");
        let old: Set = &[(BootFile::Kernel, b"old"), (BootFile::Cmdline, b"quiet")];
        install(&files, SlotId::A, old).unwrap();
        let err = install(
            &files,
            SlotId::A,
            &[
                (BootFile::Uki, b"uki"),
                (BootFile::Cmdline, b"quiet\nlinux /evil"),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::BootState(BootStateError::Cmdline { path, .. }) if path == Path::new("tandem/a/.new-cmdline")),
            "{err}"
        );
        let mut kept = named(old);
        kept.insert(".new-uki.efi".into(), b"uki".to_vec());
        kept.insert(".new-cmdline".into(), b"quiet\nlinux /evil".to_vec());
        assert_eq!(slot_files(&fs, "tandem/a"), kept, "nothing put in place");
    }

    #[test]
    fn grub_gets_the_cmdline_as_an_environment_block() {
        let fs = MemFs::new();
        let files = BootFiles::new(Arc::new(fs.clone()), "").with_grub_env();
        let env_of = |fs: &MemFs| fs.read(Path::new("b/cmdline.env"), 1 << 20);
        let cmdline = "console=ttyS0 path=C:\\tandem quiet";
        install(
            &files,
            SlotId::B,
            &[(BootFile::Cmdline, cmdline.as_bytes())],
        )
        .unwrap();
        let block = env_of(&fs).unwrap();
        assert_eq!(block.len(), 1024);
        let env = GrubEnv::parse(&block).unwrap();
        assert_eq!(env.get(CMDLINE_VAR).as_deref(), Some(cmdline));
        assert!(String::from_utf8_lossy(&block).contains("path=C:\\\\tandem"));
        // A long command line gets a larger block, a multiple of 1024 bytes.
        let long = "x".repeat(3000);
        install(&files, SlotId::B, &[(BootFile::Cmdline, long.as_bytes())]).unwrap();
        let block = env_of(&fs).unwrap();
        assert_eq!(block.len(), 3072);
        assert_eq!(GrubEnv::parse(&block).unwrap().get(CMDLINE_VAR), Some(long));
        // A release without a command line: neither file is left.
        install(&files, SlotId::B, &[(BootFile::Uki, b"uki")]).unwrap();
        assert_eq!(slot_files(&fs, "b"), named(&[(BootFile::Uki, b"uki")]));
    }

    /// DESIGN §5.1: a cut anywhere while kernel + initrd are replaced by a UKI leaves the old
    /// set, the new set, or (inside the commit) complete files only; the next install always
    /// ends with exactly the new set.
    #[test]
    fn a_cut_anywhere_leaves_complete_files_and_the_next_install_succeeds() {
        let kernel = vec![1u8; 9000];
        let uki: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let old: Set = &[
            (BootFile::Kernel, &kernel),
            (BootFile::Initrd, b"old initrd"),
            (BootFile::Cmdline, b"old=1"),
        ];
        let new: Set = &[
            (BootFile::Uki, &uki),
            (BootFile::Cmdline, b"new=2 path=a\\b"),
        ];
        let (old_files, new_files) = (named(old), named(new));
        let mut mixes = 0;
        for grub in [false, true] {
            let open = |store: Arc<dyn FileStore>| {
                let files = BootFiles::new(store, "tandem");
                if grub {
                    files.with_grub_env()
                } else {
                    files
                }
            };
            let base = MemFs::new();
            install(&open(Arc::new(base.clone())), SlotId::A, old).unwrap();
            install(&open(Arc::new(base.clone())), SlotId::B, old).unwrap();
            base.write_atomic(Path::new("tandem/b/.new-uki.efi"), b"leftover")
                .unwrap();
            let env = |fs: &MemFs| {
                let block = fs.read(Path::new("tandem/b/cmdline.env"), 4096).ok()?;
                GrubEnv::parse(&block).unwrap().get(CMDLINE_VAR)
            };
            let old_env = env(&base);
            let (slot_a, total, commit_at) = {
                let fs = PowerLossFs::from_mem(&base);
                let files = open(Arc::new(fs.clone()));
                let mut staging = files.stage(SlotId::B).unwrap();
                for (file, data) in new {
                    let mut f = staging.create(*file).unwrap();
                    for piece in data.chunks(4096) {
                        f.write_all(piece).unwrap();
                    }
                    f.finish().unwrap();
                }
                let commit_at = fs.ops_done();
                staging.commit().unwrap();
                (slot_files(&base, "tandem/a"), fs.ops_done(), commit_at)
            };
            for k in 0..total {
                for seed in 0..6 {
                    let fs = PowerLossFs::from_mem(&base);
                    fs.cut_after_ops(k);
                    assert!(install(&open(Arc::new(fs.clone())), SlotId::B, new).is_err());
                    let after = fs.after_power_cut(seed);
                    let what = format!("grub {grub} k {k} seed {seed}");
                    assert_eq!(slot_files(&after, "tandem/a"), slot_a, "{what}");
                    let got: BTreeMap<_, _> = slot_files(&after, "tandem/b")
                        .into_iter()
                        .filter(|(n, _)| !n.starts_with(STAGED_PREFIX) && n != CMDLINE_ENV)
                        .collect();
                    if k < commit_at {
                        assert_eq!(got, old_files, "{what}: before the commit");
                        assert_eq!(env(&after), old_env, "{what}");
                    } else {
                        for (name, data) in &got {
                            assert!(
                                old_files.get(name) == Some(data)
                                    || new_files.get(name) == Some(data),
                                "{what}: {name} is neither the old nor the new file"
                            );
                        }
                        let e = env(&after);
                        assert!(
                            e.is_none() || e == old_env || e.as_deref() == Some("new=2 path=a\\b"),
                            "{what}: {e:?}"
                        );
                        mixes += usize::from(got != old_files && got != new_files);
                    }
                    install(&open(Arc::new(after.clone())), SlotId::B, new).unwrap();
                    let mut want = new_files.clone();
                    if grub {
                        let mut block = GrubEnv::default();
                        block.set(CMDLINE_VAR, "new=2 path=a\\b");
                        want.insert(CMDLINE_ENV.into(), block.to_padded_block());
                    }
                    assert_eq!(slot_files(&after, "tandem/b"), want, "{what}: reinstall");
                }
            }
        }
        assert!(mixes > 0, "some cuts landed inside the commit");
    }
}
