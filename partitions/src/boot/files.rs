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

use super::grub::GrubEnv;
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
        let path = self.path(slot, BootFile::Cmdline);
        let data = match self.store.read(&path, MAX_CMDLINE) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &path, e)),
        };
        let bad = |reason: &str| -> Error {
            BootStateError::Cmdline {
                path: path.clone(),
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

    /// Write (the slot has a `cmdline`) or remove (it has none) its `cmdline.env`.
    fn sync_grub_env(&self, slot: SlotId) -> Result<()> {
        let path = self.dir(slot).join(CMDLINE_ENV);
        let Some(cmdline) = self.cmdline(slot)? else {
            return self.remove_if_present(&path);
        };
        let mut env = GrubEnv::default();
        env.set(CMDLINE_VAR, &cmdline);
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
    /// staged (an old `vmlinuz` when the new release has a UKI, …). Refuses
    /// ([`UsageError::NotFinished`]) before changing anything when a staged file was never
    /// finished.
    pub fn commit(self) -> Result<()> {
        if let Some((file, _)) = self.staged.iter().find(|(_, f)| !f.load(Ordering::SeqCst)) {
            return Err(UsageError::NotFinished {
                path: self.staged_path(*file),
            }
            .into());
        }
        let files = &self.files;
        let staged = |file: BootFile| self.staged.iter().any(|(f, _)| *f == file);
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
            if staged(BootFile::Cmdline) {
                files.sync_grub_env(self.slot)?;
            } else {
                files.remove_if_present(&files.dir(self.slot).join(CMDLINE_ENV))?;
            }
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
