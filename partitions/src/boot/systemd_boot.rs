//! The `systemd-boot` backend: Boot Loader Specification type #1 entries with boot counting
//! in their file names, in `loader/entries/` of an ESP, following the rules systemd-boot and
//! systemd-bless-boot use.
//!
//! Per slot there is at most one entry, `tandem-a…` / `tandem-b…` (prefix configurable):
//!
//! | file | [`SlotBootState`] |
//! |---|---|
//! | none | priority 0, no tries, not successful (unbootable) |
//! | `tandem-b.conf` | successful (systemd-bless-boot's "good": the counter removed) |
//! | `tandem-b+3-0.conf` | not successful, 3 tries left (0 done) |
//! | `tandem-b+0-3.conf` | not successful, no tries left ("bad": sorted last, never picked) |
//!
//! Priority comes from the order systemd-boot sorts entries in: every entry carries
//! `sort-key tandem` and a `version` equal to the update generation (one more than the
//! highest version present, at each `set_trial`), so the newest trial sorts first; a version
//! tie falls back to the file id, descending (`tandem-b` before `tandem-a`), as systemd-boot
//! does. The first entry has priority 2, the second 1 (`set_state` compares the priority it
//! is given with the other slot's priority as read back, like the grub backend). systemd-boot sorts entries with 0
//! tries left last; those are never bootable here, so [`super::select`] picks what
//! systemd-boot picks. `loader.conf` must have no `default` line (it would pin an entry and
//! defeat the fallback): writes refuse to proceed when it has one.
//!
//! What systemd-boot 252 does at boot (seen under QEMU + OVMF): for an entry with a counter
//! and tries left, it renames `+3-0` → `+2-1` *before* starting the kernel and puts the new
//! name in the EFI variable `LoaderBootCountPath`. This backend never needs that variable:
//! it finds a slot's entry by listing the directory, whatever its counter.
//! [`BootControl::record_boot_attempt`] does the same rename.
//!
//! One difference from the real loader: when *no* entry is bootable (every entry out of
//! tries), systemd-boot still boots the first one; the reference firmware reports
//! "nothing bootable" instead.
//!
//! Durability and atomicity: renames (`mark_good`, `mark_bad`, a boot attempt) are one
//! rename + directory fsync. Writing an entry with new content (`set_trial`, `set_state`)
//! removes the slot's old entry first, then creates the new one atomically (temp file, fsync,
//! rename, directory fsync): a cut in between leaves the slot unbootable, never two entries.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use super::gpt::PairEntries;
use super::{mark, BackendKind, BootControl, BootFile, BootFiles, SlotBootState, SlotId};
use crate::error::{BootStateError, Error, Result, UsageError};
use crate::io::FileStore;
use crate::model::check_nibble;
use crate::slots::{Disk, SlotPair};

/// Where entries live in the ESP.
pub const ENTRIES_DIR: &str = "loader/entries";
/// The loader configuration.
pub const LOADER_CONF: &str = "loader/loader.conf";
/// Where the slots' boot files live in the ESP (`tandem/<slot>/`).
pub const BOOT_FILES_DIR: &str = "tandem";
/// The `sort-key` of every Tandem entry.
pub const SORT_KEY: &str = "tandem";
const MAX_ENTRY_SIZE: u64 = 64 * 1024;

/// How to write a new entry for a slot. In every field, `{slot}` becomes `a`/`b`,
/// `{SLOT}` `A`/`B`, and `{partuuid}` the slot's PARTUUID. Deserializes from a map of the
/// fields, each optional (the default's value when absent).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntryTemplate {
    /// `title`.
    pub title: String,
    /// `linux` (path on the ESP).
    pub linux: String,
    /// `initrd` lines.
    pub initrd: Vec<String>,
    /// `options` (the kernel command line).
    pub options: String,
}

impl Default for EntryTemplate {
    fn default() -> Self {
        Self {
            title: "Tandem (slot {slot})".into(),
            linux: "/tandem/{slot}/vmlinuz".into(),
            initrd: vec!["/tandem/{slot}/initrd.img".into()],
            options: "root=PARTUUID={partuuid} rw tandem.slot={slot}".into(),
        }
    }
}

impl EntryTemplate {
    /// Whether the kernel command line says which slot booted (`tandem.slot={slot}` or
    /// `root=PARTUUID={partuuid}`), so the running system can tell.
    pub fn names_the_slot(&self) -> bool {
        self.options.contains("tandem.slot={slot}")
            || self.options.contains("root=PARTUUID={partuuid}")
    }

    /// A new entry for `slot`: it boots the slot's UKI when it has one (`boot.uki`, the path
    /// on the ESP), else the template's `linux`/`initrd`; its options are the slot's
    /// `cmdline` (when it has one) followed by the template's.
    fn render(&self, slot: SlotId, partuuid: &Uuid, version: u64, boot: &SlotBoot) -> String {
        let sub = |s: &str| {
            s.replace("{slot}", &slot.to_string())
                .replace("{SLOT}", &slot.to_string().to_uppercase())
                .replace("{partuuid}", &partuuid.to_string())
        };
        let mut out = format!(
            "title {}\nsort-key {SORT_KEY}\nversion {version}\n",
            sub(&self.title)
        );
        match &boot.uki {
            Some(uki) => out.push_str(&format!("efi {uki}\n")),
            None => {
                out.push_str(&format!("linux {}\n", sub(&self.linux)));
                for i in &self.initrd {
                    out.push_str(&format!("initrd {}\n", sub(i)));
                }
            }
        }
        let options = sub(&self.options);
        match boot.cmdline.as_deref().filter(|c| !c.is_empty()) {
            // The release's parameters first: without Secure Boot systemd-stub takes these
            // options instead of the UKI's own `.cmdline` (docs/DESIGN.md §5.1).
            Some(cmdline) => out.push_str(&format!("options {cmdline} {options}\n")),
            None => out.push_str(&format!("options {options}\n")),
        }
        out
    }
}

/// What a slot's boot files put in its new entry.
#[derive(Debug, Default)]
struct SlotBoot {
    /// The UKI's path on the ESP, when the slot has one.
    uki: Option<String>,
    /// The slot's kernel command line, when it has one.
    cmdline: Option<String>,
}

impl SlotBoot {
    fn of(files: &BootFiles, slot: SlotId) -> Result<Self> {
        let has_uki = files
            .present(slot)?
            .iter()
            .any(|(f, _)| *f == BootFile::Uki);
        Ok(Self {
            uki: has_uki.then(|| files.loader_path(slot, BootFile::Uki)),
            cmdline: files.cmdline(slot)?,
        })
    }
}

/// One slot's entry file as found on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFile {
    /// File name.
    pub name: String,
    /// `(tries left, tries done)` when the name has a boot counter.
    pub counter: Option<(u8, u32)>,
    /// The `version` line.
    pub version: String,
    body: String,
}

/// Boot state as systemd-boot entries in an ESP.
#[derive(Debug, Clone)]
pub struct SystemdBootControl {
    store: Arc<dyn FileStore>,
    prefix: String,
    template: EntryTemplate,
    pair_entries: PairEntries,
    boot_files: BootFiles,
}

/// A boot counter as found in a file name: `(tries left, tries done)`.
type RawCounter = Option<(u64, u64)>;

/// Parse `<prefix>-<slot>[+L[-D]].conf`.
fn parse_name(prefix: &str, name: &str) -> Option<(SlotId, RawCounter)> {
    let stem = name.strip_suffix(".conf")?;
    let rest = stem.strip_prefix(prefix)?.strip_prefix('-')?;
    let (slot, counter) = match rest.split_once('+') {
        Some((s, c)) => (s, Some(c)),
        None => (rest, None),
    };
    let slot = match slot {
        "a" => SlotId::A,
        "b" => SlotId::B,
        _ => return None,
    };
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let counter = match counter {
        None => None,
        Some(c) => Some(match c.split_once('-') {
            Some((l, d)) => (digits(l)?, digits(d)?),
            None => (digits(c)?, 0),
        }),
    };
    Some((slot, counter))
}

/// The slot of a Tandem entry from the id systemd-boot gives it (`LoaderEntrySelected`):
/// the file name, with or without `.conf`, with or without its boot counter, any case.
pub fn slot_of_entry_id(id: &str) -> Option<SlotId> {
    let id = id.to_ascii_lowercase();
    let name = match id.ends_with(".conf") {
        true => id,
        false => format!("{id}.conf"),
    };
    parse_name(ENTRY_PREFIX, &name).map(|(slot, _)| slot)
}

/// The default prefix of the entries' file names.
const ENTRY_PREFIX: &str = "tandem";

/// Compare versions as systemd-boot does for ours (decimal generations); anything else
/// falls back to a byte comparison.
fn cmp_version(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn body_version(body: &str) -> Option<&str> {
    body.lines().find_map(|l| {
        let mut it = l.trim_start().splitn(2, char::is_whitespace);
        match (it.next(), it.next()) {
            (Some("version"), Some(v)) => Some(v.trim()),
            _ => None,
        }
    })
}

/// `body` with its `version` line set to `version` and `sort-key` set to [`SORT_KEY`].
fn with_version(body: &str, version: u64) -> String {
    let mut out = String::new();
    let (mut saw_v, mut saw_k) = (false, false);
    for line in body.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        match key {
            "version" => {
                if !saw_v {
                    out.push_str(&format!("version {version}\n"));
                }
                saw_v = true;
            }
            "sort-key" => {
                if !saw_k {
                    out.push_str(&format!("sort-key {SORT_KEY}\n"));
                }
                saw_k = true;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !saw_k {
        out.push_str(&format!("sort-key {SORT_KEY}\n"));
    }
    if !saw_v {
        out.push_str(&format!("version {version}\n"));
    }
    out
}

fn entry_path(name: &str) -> PathBuf {
    Path::new(ENTRIES_DIR).join(name)
}

impl SystemdBootControl {
    /// Entries `tandem-a…`/`tandem-b…` in the ESP `store`, new ones written from `template`
    /// with the PARTUUIDs of `pair` on `disk`.
    pub fn new(
        store: Arc<dyn FileStore>,
        disk: &Disk,
        pair: &SlotPair,
        template: EntryTemplate,
    ) -> Self {
        Self {
            boot_files: BootFiles::new(store.clone(), BOOT_FILES_DIR),
            store,
            prefix: ENTRY_PREFIX.into(),
            template,
            pair_entries: PairEntries::new(disk.device().clone(), pair),
        }
    }

    /// Use another file-name prefix than `tandem`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn check_loader_conf(&self) -> Result<()> {
        let data = match self.store.read(Path::new(LOADER_CONF), MAX_ENTRY_SIZE) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("reading {LOADER_CONF}"), e)),
        };
        let text = String::from_utf8_lossy(&data);
        if text
            .lines()
            .any(|l| l.split_whitespace().next() == Some("default"))
        {
            return Err(BootStateError::LoaderDefault {
                path: LOADER_CONF.into(),
            }
            .into());
        }
        Ok(())
    }

    /// The current entry of each slot (A, B).
    pub fn entries(&self) -> Result<[Option<EntryFile>; 2]> {
        let names = match self.store.list(Path::new(ENTRIES_DIR)) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(format!("listing {ENTRIES_DIR}"), e)),
        };
        let mut found: [Vec<(String, RawCounter)>; 2] = [Vec::new(), Vec::new()];
        for name in names {
            if let Some((slot, counter)) = parse_name(&self.prefix, &name) {
                if let Some(v) = found.get_mut(slot_index(slot)) {
                    v.push((name, counter));
                }
            }
        }
        let mut out: [Option<EntryFile>; 2] = [None, None];
        for slot in SlotId::ALL {
            let list = found.get(slot_index(slot)).cloned().unwrap_or_default();
            let entry = match list.as_slice() {
                [] => None,
                [(name, counter)] => Some(self.load(name, *counter)?),
                many => {
                    return Err(BootStateError::DuplicateEntries {
                        dir: ENTRIES_DIR.into(),
                        slot,
                        names: many.iter().map(|(n, _)| n.clone()).collect(),
                    }
                    .into())
                }
            };
            if let Some(o) = out.get_mut(slot_index(slot)) {
                *o = entry;
            }
        }
        Ok(out)
    }

    fn load(&self, name: &str, counter: RawCounter) -> Result<EntryFile> {
        let path = entry_path(name);
        let bad = |reason: &str| -> Error {
            BootStateError::Entry {
                path: path.clone(),
                reason: reason.to_string(),
            }
            .into()
        };
        let counter = match counter {
            None => None,
            Some((l, d)) if l <= 15 => Some((
                u8::try_from(l).map_err(|_| bad("tries left above 15"))?,
                u32::try_from(d).map_err(|_| bad("tries done too large"))?,
            )),
            Some(_) => return Err(bad("tries left above 15 are not supported")),
        };
        let data = self
            .store
            .read(&path, MAX_ENTRY_SIZE)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let body = String::from_utf8(data).map_err(|_| bad("not UTF-8"))?;
        let version = body_version(&body)
            .ok_or_else(|| bad("no `version` line (needed for the sort order)"))?
            .to_string();
        Ok(EntryFile {
            name: name.to_string(),
            counter,
            version,
            body,
        })
    }

    fn file_name(&self, slot: SlotId, counter: Option<(u8, u32)>) -> String {
        match counter {
            None => format!("{}-{slot}.conf", self.prefix),
            Some((l, d)) => format!("{}-{slot}+{l}-{d}.conf", self.prefix),
        }
    }

    fn priorities(entries: &[Option<EntryFile>; 2]) -> [u8; 2] {
        match entries {
            [Some(a), Some(b)] => {
                // systemd-boot: version descending, then id descending ("tandem-b" first).
                let a_first = cmp_version(&a.version, &b.version) == Ordering::Greater;
                if a_first {
                    [2, 1]
                } else {
                    [1, 2]
                }
            }
            [Some(_), None] => [2, 0],
            [None, Some(_)] => [0, 2],
            [None, None] => [0, 0],
        }
    }

    fn state_of(entries: &[Option<EntryFile>; 2], slot: SlotId) -> SlotBootState {
        let prio = Self::priorities(entries);
        let i = slot_index(slot);
        match entries.get(i).and_then(Option::as_ref) {
            None => SlotBootState::UNBOOTABLE,
            Some(e) => SlotBootState {
                priority: prio.get(i).copied().unwrap_or(0),
                tries_left: e.counter.map_or(0, |(l, _)| l),
                successful: e.counter.is_none(),
            },
        }
    }

    fn max_version(entries: &[Option<EntryFile>; 2]) -> u64 {
        entries
            .iter()
            .flatten()
            .filter_map(|e| e.version.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }

    /// The version of a new trial entry for `slot`: one above every version present, so the
    /// trial sorts first. Refused when the other slot's entry would still sort first (a
    /// version at `u64::MAX`, or not a decimal number, as only a hand edit leaves it).
    fn next_generation(entries: &[Option<EntryFile>; 2], slot: SlotId) -> Result<u64> {
        let next = Self::max_version(entries).saturating_add(1);
        let other = entries
            .get(slot_index(slot.other()))
            .and_then(Option::as_ref);
        match other {
            Some(e) if cmp_version(&next.to_string(), &e.version) != Ordering::Greater => {
                Err(BootStateError::Entry {
                    path: entry_path(&e.name),
                    reason: format!(
                        "version `{}` would still sort before a new trial of slot {slot}: \
                         set it to a decimal generation below {}",
                        e.version,
                        u64::MAX
                    ),
                }
                .into())
            }
            _ => Ok(next),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        if from == to {
            return Ok(());
        }
        self.store
            .rename(&entry_path(from), &entry_path(to))
            .map_err(|e| Error::io(format!("renaming {ENTRIES_DIR}/{from} to {to}"), e))
    }

    /// Replace the slot's entry with `body` under `name`: old one removed first.
    fn replace(&self, old: Option<&EntryFile>, name: &str, body: &str) -> Result<()> {
        if let Some(old) = old {
            if old.name == name && old.body == body {
                return Ok(());
            }
            self.store
                .remove(&entry_path(&old.name))
                .map_err(|e| Error::io(format!("removing {ENTRIES_DIR}/{}", old.name), e))?;
        }
        self.store
            .write_atomic(&entry_path(name), body.as_bytes())
            .map_err(|e| Error::io(format!("writing {ENTRIES_DIR}/{name}"), e))
    }

    fn new_body(&self, slot: SlotId, old: Option<&EntryFile>, version: u64) -> Result<String> {
        match old {
            Some(e) => Ok(with_version(&e.body, version)),
            None => {
                let [a, b] = self.pair_entries.partuuids()?;
                let uuid = match slot {
                    SlotId::A => a,
                    SlotId::B => b,
                };
                let boot = SlotBoot::of(&self.boot_files, slot)?;
                Ok(self.template.render(slot, &uuid, version, &boot))
            }
        }
    }
}

fn slot_index(slot: SlotId) -> usize {
    match slot {
        SlotId::A => 0,
        SlotId::B => 1,
    }
}

impl BootControl for SystemdBootControl {
    fn kind(&self) -> BackendKind {
        BackendKind::SystemdBoot
    }

    /// `<ESP>/tandem/<slot>/`.
    fn boot_files(&self) -> Option<BootFiles> {
        Some(self.boot_files.clone())
    }

    /// Create `loader/entries/` and, when missing, a `loader/loader.conf` without a
    /// `default` line (refusing an existing one that has it), and mark the disk as set up for
    /// systemd-boot.
    fn prepare(&self) -> Result<()> {
        self.store
            .create_dir_all(Path::new(ENTRIES_DIR))
            .map_err(|e| Error::io(format!("creating {ENTRIES_DIR}"), e))?;
        match self.store.read(Path::new(LOADER_CONF), MAX_ENTRY_SIZE) {
            Ok(_) => self.check_loader_conf(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self
                .store
                .write_atomic(
                    Path::new(LOADER_CONF),
                    b"# Written by tandem. No `default` line: it would pin one entry and\n# defeat the boot-counting fallback.\ntimeout 0\n",
                )
                .map_err(|e| Error::io(format!("writing {LOADER_CONF}"), e)),
            Err(e) => Err(Error::io(format!("reading {LOADER_CONF}"), e)),
        }?;
        mark::record(&self.pair_entries, BackendKind::SystemdBoot)
    }

    fn state(&self, slot: SlotId) -> Result<SlotBootState> {
        Ok(Self::state_of(&self.entries()?, slot))
    }

    fn states(&self) -> Result<[SlotBootState; 2]> {
        let e = self.entries()?;
        Ok([Self::state_of(&e, SlotId::A), Self::state_of(&e, SlotId::B)])
    }

    fn set_state(&self, slot: SlotId, state: SlotBootState) -> Result<()> {
        check_nibble("priority", state.priority)?;
        check_nibble("tries", state.tries_left)?;
        self.check_loader_conf()?;
        let entries = self.entries()?;
        let me = entries.get(slot_index(slot)).cloned().flatten();
        if state.priority == 0 {
            return self.set_unbootable(slot);
        }
        let other_state = Self::state_of(&entries, slot.other());
        let want_first = state.priority > other_state.priority
            || (state.priority == other_state.priority && slot == SlotId::A);
        let is_first = Self::state_of(&entries, slot).priority == 2;
        let max = Self::max_version(&entries);
        let mut my_version = me
            .as_ref()
            .and_then(|e| e.version.parse::<u64>().ok())
            .unwrap_or(0);
        if want_first && (!is_first || me.is_none()) {
            my_version = max + 1;
        } else if !want_first && (is_first || me.is_none()) {
            // Put the other slot's entry above ours.
            if let Some(o) = entries.get(slot_index(slot.other())).cloned().flatten() {
                my_version = if me.is_none() { 0 } else { my_version };
                let body = with_version(&o.body, max.max(my_version) + 1);
                self.replace(Some(&o), &o.name, &body)?;
            }
        }
        let done = me.as_ref().and_then(|e| e.counter).map_or(0, |(_, d)| d);
        let counter = (!state.successful).then_some((state.tries_left, done));
        let name = self.file_name(slot, counter);
        let body = self.new_body(slot, me.as_ref(), my_version)?;
        self.replace(me.as_ref(), &name, &body)
    }

    fn set_unbootable(&self, slot: SlotId) -> Result<()> {
        let entries = self.entries()?;
        match entries.get(slot_index(slot)).and_then(Option::as_ref) {
            None => Ok(()),
            Some(e) => self
                .store
                .remove(&entry_path(&e.name))
                .map_err(|err| Error::io(format!("removing {ENTRIES_DIR}/{}", e.name), err)),
        }
    }

    fn set_trial(&self, slot: SlotId, tries: u8) -> Result<()> {
        check_nibble("tries", tries)?;
        if tries == 0 {
            return Err(UsageError::ZeroTries.into());
        }
        self.check_loader_conf()?;
        let entries = self.entries()?;
        let me = entries.get(slot_index(slot)).cloned().flatten();
        let generation = Self::next_generation(&entries, slot)?;
        let name = self.file_name(slot, Some((tries, 0)));
        let body = self.new_body(slot, me.as_ref(), generation)?;
        self.replace(me.as_ref(), &name, &body)
    }

    fn mark_good(&self, slot: SlotId) -> Result<()> {
        let entries = self.entries()?;
        match entries.get(slot_index(slot)).and_then(Option::as_ref) {
            None => {
                // Priority 0 stays priority 0 (as in the other backends): nothing to rename.
                tracing::warn!(%slot, "mark_good: the slot has no boot entry (it is unbootable); nothing changed");
                Ok(())
            }
            Some(e) => self.rename(&e.name, &self.file_name(slot, None)),
        }
    }

    fn mark_bad(&self, slot: SlotId) -> Result<()> {
        let entries = self.entries()?;
        match entries.get(slot_index(slot)).and_then(Option::as_ref) {
            None => Ok(()),
            Some(e) => {
                let done = e.counter.map_or(0, |(_, d)| d);
                self.rename(&e.name, &self.file_name(slot, Some((0, done))))
            }
        }
    }

    fn record_boot_attempt(&self, slot: SlotId) -> Result<()> {
        let entries = self.entries()?;
        match entries.get(slot_index(slot)).and_then(Option::as_ref) {
            Some(EntryFile {
                name,
                counter: Some((left, done)),
                ..
            }) if *left > 0 => self.rename(
                name,
                &self.file_name(slot, Some((left - 1, done.saturating_add(1)))),
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::io::MemFs;
    use crate::slots::Disk;
    use crate::table::tests::small_disk;

    fn setup() -> (MemFs, SystemdBootControl) {
        let disk = Disk::from_device(Arc::new(small_disk())).unwrap();
        let pair = disk.slots("root").unwrap();
        let fs = MemFs::new();
        let bc =
            SystemdBootControl::new(Arc::new(fs.clone()), &disk, &pair, EntryTemplate::default());
        bc.prepare().unwrap();
        assert_eq!(
            mark::recorded(disk.device().clone(), &pair).unwrap(),
            Some(BackendKind::SystemdBoot)
        );
        (fs, bc)
    }

    fn names(fs: &MemFs) -> Vec<String> {
        fs.list(Path::new(ENTRIES_DIR)).unwrap_or_default()
    }

    /// Give `slot` these boot files, as an install does.
    fn give(bc: &SystemdBootControl, slot: SlotId, set: &[(BootFile, &[u8])]) {
        use std::io::Write;
        let mut staging = bc.boot_files().unwrap().stage(slot).unwrap();
        for (file, data) in set {
            let mut f = staging.create(*file).unwrap();
            f.write_all(data).unwrap();
            f.finish().unwrap();
        }
        staging.commit().unwrap();
    }

    #[test]
    fn a_new_entry_boots_the_slots_uki_with_its_cmdline_first() {
        let (fs, bc) = setup();
        let partuuid = |slot| bc.pair_entries.partuuids().unwrap()[slot_index(slot)];
        give(
            &bc,
            SlotId::B,
            &[
                (BootFile::Uki, b"MZ"),
                (BootFile::Cmdline, b"quiet splash\n"),
            ],
        );
        bc.set_trial(SlotId::A, 1).unwrap();
        bc.mark_good(SlotId::A).unwrap();
        bc.set_trial(SlotId::B, 3).unwrap();
        let b = fs
            .read(&entry_path("tandem-b+3-0.conf"), MAX_ENTRY_SIZE)
            .unwrap();
        assert_eq!(
            String::from_utf8(b).unwrap(),
            format!(
                "title Tandem (slot b)\nsort-key tandem\nversion 2\nefi /tandem/b/uki.efi\n\
                 options quiet splash root=PARTUUID={} rw tandem.slot=b\n",
                partuuid(SlotId::B)
            )
        );
        // Slot a has no boot files: the template's kernel and initrd, its options alone.
        let a = fs
            .read(&entry_path("tandem-a.conf"), MAX_ENTRY_SIZE)
            .unwrap();
        assert_eq!(
            String::from_utf8(a).unwrap(),
            format!(
                "title Tandem (slot a)\nsort-key tandem\nversion 1\nlinux /tandem/a/vmlinuz\n\
                 initrd /tandem/a/initrd.img\noptions root=PARTUUID={} rw tandem.slot=a\n",
                partuuid(SlotId::A)
            )
        );
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::B));

        // Kernel + initrd with a command line: the template's paths, the cmdline first.
        bc.set_unbootable(SlotId::A).unwrap();
        give(
            &bc,
            SlotId::A,
            &[
                (BootFile::Kernel, b"k"),
                (BootFile::Initrd, b"i"),
                (BootFile::Cmdline, b"console=ttyS0"),
            ],
        );
        bc.set_trial(SlotId::A, 2).unwrap();
        let a = fs
            .read(&entry_path("tandem-a+2-0.conf"), MAX_ENTRY_SIZE)
            .unwrap();
        let a = String::from_utf8(a).unwrap();
        assert!(
            a.contains("version 3\nlinux /tandem/a/vmlinuz\ninitrd /tandem/a/initrd.img\n"),
            "{a}"
        );
        assert!(
            a.ends_with(&format!(
                "options console=ttyS0 root=PARTUUID={} rw tandem.slot=a\n",
                partuuid(SlotId::A)
            )),
            "{a}"
        );
    }

    #[test]
    fn a_cmdline_with_a_line_break_is_refused_not_written_into_an_entry() {
        let (fs, bc) = setup();
        fs.write_atomic(Path::new("tandem/b/cmdline"), b"quiet\nlinux /evil")
            .unwrap();
        let err = bc.set_trial(SlotId::B, 3).unwrap_err();
        assert!(
            matches!(err, Error::BootState(BootStateError::Cmdline { .. })),
            "{err}"
        );
        assert!(names(&fs).is_empty(), "no entry written");
    }

    #[test]
    fn a_trial_is_refused_when_the_other_entry_would_still_sort_first() {
        // Found by the `bls` fuzz target: `u64::MAX + 1` panicked, and a non-decimal version
        // left the other slot first while `set_trial` reported success.
        for version in ["18446744073709551615", "x"] {
            let (fs, bc) = setup();
            let b = format!("title B\nversion {version}\n");
            fs.write_atomic(&entry_path("tandem-b.conf"), b.as_bytes())
                .unwrap();
            let err = bc.set_trial(SlotId::A, 3).unwrap_err();
            assert!(
                matches!(&err, Error::BootState(BootStateError::Entry { reason, .. }) if reason.contains(version)),
                "{err}"
            );
            assert_eq!(names(&fs), ["tandem-b.conf"], "nothing written");
            assert_eq!(bc.next_boot().unwrap(), Some(SlotId::B));
        }
        let (fs, bc) = setup();
        fs.write_atomic(
            &entry_path("tandem-b.conf"),
            b"version 18446744073709551614\n",
        )
        .unwrap();
        bc.set_trial(SlotId::A, 3).unwrap();
        assert_eq!(
            bc.next_boot().unwrap(),
            Some(SlotId::A),
            "the last generation still works"
        );
    }

    #[test]
    fn names_parse_like_systemd() {
        assert_eq!(
            parse_name("tandem", "tandem-a.conf"),
            Some((SlotId::A, None))
        );
        assert_eq!(
            parse_name("tandem", "tandem-b+3-0.conf"),
            Some((SlotId::B, Some((3, 0))))
        );
        assert_eq!(
            parse_name("tandem", "tandem-b+3.conf"),
            Some((SlotId::B, Some((3, 0))))
        );
        assert_eq!(parse_name("tandem", "tandem-c.conf"), None);
        assert_eq!(parse_name("tandem", "tandem-a+x-1.conf"), None);
        assert_eq!(parse_name("tandem", "other-a.conf"), None);
    }

    #[test]
    fn lifecycle_renames_like_systemd_boot() {
        let (fs, bc) = setup();
        assert_eq!(bc.next_boot().unwrap(), None);
        bc.set_trial(SlotId::A, 1).unwrap();
        bc.mark_good(SlotId::A).unwrap();
        assert_eq!(names(&fs), ["tandem-a.conf"]);
        bc.set_trial(SlotId::B, 3).unwrap();
        assert_eq!(names(&fs), ["tandem-a.conf", "tandem-b+3-0.conf"]);
        let body =
            String::from_utf8(fs.read(&entry_path("tandem-b+3-0.conf"), 9999).unwrap()).unwrap();
        assert!(body.contains("sort-key tandem\nversion 2\n"), "{body}");
        assert!(body.contains("tandem.slot=b"), "{body}");
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::B));
        bc.record_boot_attempt(SlotId::B).unwrap();
        assert_eq!(names(&fs), ["tandem-a.conf", "tandem-b+2-1.conf"]);
        bc.mark_bad(SlotId::B).unwrap();
        assert_eq!(names(&fs), ["tandem-a.conf", "tandem-b+0-1.conf"]);
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::A));
        bc.set_trial(SlotId::B, 2).unwrap();
        assert_eq!(names(&fs), ["tandem-a.conf", "tandem-b+2-0.conf"]);
        let body =
            String::from_utf8(fs.read(&entry_path("tandem-b+2-0.conf"), 9999).unwrap()).unwrap();
        assert!(body.contains("version 3\n"), "generation grows: {body}");
        bc.mark_good(SlotId::B).unwrap();
        assert_eq!(names(&fs), ["tandem-a.conf", "tandem-b.conf"]);
        assert_eq!(
            bc.state(SlotId::B).unwrap(),
            SlotBootState::new(2, 0, true).unwrap()
        );
        assert_eq!(
            bc.state(SlotId::A).unwrap(),
            SlotBootState::new(1, 0, true).unwrap()
        );
        bc.set_unbootable(SlotId::A).unwrap();
        assert_eq!(names(&fs), ["tandem-b.conf"]);
    }

    #[test]
    fn loader_default_line_is_refused() {
        let (fs, bc) = setup();
        fs.write_atomic(
            Path::new(LOADER_CONF),
            b"timeout 3\ndefault tandem-a.conf\n",
        )
        .unwrap();
        let err = bc.set_trial(SlotId::A, 3).unwrap_err();
        assert!(
            matches!(err, Error::BootState(BootStateError::LoaderDefault { .. })),
            "{err}"
        );
    }

    #[test]
    fn two_entries_for_one_slot_are_reported() {
        let (fs, bc) = setup();
        bc.set_trial(SlotId::A, 1).unwrap();
        fs.write_atomic(&entry_path("tandem-a.conf"), b"version 1\n")
            .unwrap();
        let err = bc.states().unwrap_err();
        assert!(
            matches!(
                err,
                Error::BootState(BootStateError::DuplicateEntries { .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn a_cut_in_any_write_leaves_one_entry_per_slot_at_most() {
        use crate::io::PowerLossFs;
        let (fs, bc) = setup();
        bc.set_trial(SlotId::A, 1).unwrap();
        bc.mark_good(SlotId::A).unwrap();
        bc.set_trial(SlotId::B, 3).unwrap();
        bc.record_boot_attempt(SlotId::B).unwrap();
        let disk = Disk::from_device(Arc::new(small_disk())).unwrap();
        let pair = disk.slots("root").unwrap();
        let over = |store: MemFs| {
            SystemdBootControl::new(Arc::new(store), &disk, &pair, EntryTemplate::default())
        };
        let names = |b: &SystemdBootControl| -> [Option<String>; 2] {
            b.entries().unwrap().map(|e| e.map(|e| e.name))
        };
        type Op = fn(&SystemdBootControl) -> Result<()>;
        let ops: [(SlotId, Op); 5] = [
            (SlotId::B, |b| b.set_trial(SlotId::B, 5)),
            (SlotId::A, |b| b.set_trial(SlotId::A, 2)),
            (SlotId::B, |b| b.mark_good(SlotId::B)),
            (SlotId::B, |b| b.mark_bad(SlotId::B)),
            (SlotId::B, |b| b.record_boot_attempt(SlotId::B)),
        ];
        let mut cuts = 0;
        for (i, (target, op)) in ops.into_iter().enumerate() {
            let old = names(&bc);
            let full = MemFs::new();
            for (p, d) in fs.snapshot() {
                full.write_atomic(&p, &d).unwrap();
            }
            let full = over(full);
            op(&full).unwrap();
            let new = names(&full);
            for k in 0..3 {
                for seed in 0..8 {
                    let cut = PowerLossFs::from_mem(&fs);
                    cut.cut_after_ops(k);
                    let cbc = SystemdBootControl::new(
                        Arc::new(cut.clone()),
                        &disk,
                        &pair,
                        EntryTemplate::default(),
                    );
                    let finished = op(&cbc).is_ok();
                    // `entries` fails on two entries for one slot: never happens.
                    let got = names(&over(cut.after_power_cut(seed)));
                    if finished {
                        assert_eq!(got, new, "op {i} k {k}");
                        continue;
                    }
                    cuts += 1;
                    let t = target as usize;
                    let o = 1 - t;
                    assert_eq!(got[o], old[o], "op {i} k {k} seed {seed}: other slot");
                    assert!(
                        got[t] == old[t] || got[t] == new[t] || got[t].is_none(),
                        "op {i} k {k} seed {seed}: {:?} not {:?} / {:?} / none",
                        got[t],
                        old[t],
                        new[t]
                    );
                }
            }
        }
        assert!(cuts > 0);
    }

    #[test]
    fn set_state_orders_by_version() {
        let (_fs, bc) = setup();
        // Priorities read back as 2 (first) and 1 (second); set_state compares with those.
        bc.set_state(SlotId::A, SlotBootState::new(5, 0, true).unwrap())
            .unwrap();
        bc.set_state(SlotId::B, SlotBootState::new(1, 2, false).unwrap())
            .unwrap();
        assert_eq!(
            bc.states().unwrap(),
            [
                SlotBootState::new(2, 0, true).unwrap(),
                SlotBootState::new(1, 2, false).unwrap()
            ]
        );
        bc.set_state(SlotId::B, SlotBootState::new(9, 2, false).unwrap())
            .unwrap();
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::B));
        bc.set_state(SlotId::B, SlotBootState::new(1, 2, false).unwrap())
            .unwrap();
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::A));
    }
}
