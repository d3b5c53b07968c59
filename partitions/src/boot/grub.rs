//! The `grub` backend: boot state in a GRUB environment block (the 1024-byte `grubenv`),
//! read and counted down at boot by the shipped `docs/grub.cfg.example`.
//!
//! Variables (values are plain ASCII; every other variable in the block is preserved):
//!
//! | variable | values | meaning |
//! |---|---|---|
//! | `TANDEM_ORDER` | `a b`, `b a`, `a`, `b`, empty | slots GRUB may boot, best first |
//! | `TANDEM_A_TRIES`, `TANDEM_B_TRIES` | `0`..`15` | tries left (absent = 0) |
//! | `TANDEM_A_OK`, `TANDEM_B_OK` | `1` / `0` | successful (absent = 0) |
//! | `TANDEM_A_PARTUUID`, `TANDEM_B_PARTUUID` | GUID | for `root=PARTUUID=` (written by [`BootControl::prepare`]) |
//!
//! Mapping to [`SlotBootState`]: a slot absent from `TANDEM_ORDER` has priority 0; the first
//! slot listed has priority 2, the second 1. Only the order of priorities is stored, so
//! `set_state(slot, s)` puts the slot first when `s.priority` is above the other slot's
//! priority *as read back* (2 or 1), or equal to it and the slot is A (the tie rule of
//! [`super::select`]); priority 0 takes the slot out of the order.
//! GRUB boots the first slot in `TANDEM_ORDER` that has `OK=1`, or tries left (then it
//! decrements them and `save_env`s before booting): exactly [`super::select`].
//!
//! Writing: the block is rewritten **in place**, 1024 bytes at offset 0, then fsynced
//! ([`FileStore::overwrite`]), never replaced by a new file. GRUB's `save_env` writes through
//! the file's block list and refuses a file that is not contiguous; on a FAT ESP a new file
//! from a rename could land in other clusters (and a FAT rename is not atomic across a power
//! cut anyway). To make a torn write harmless, the Tandem variables are written first, right
//! after the header lines, and a `#` filler line pads the first 512-byte sector, so the other
//! variables always start at byte 512: a change of Tandem state rewrites only the first
//! sector, and a cut that keeps one sector and not the other leaves the old or the new block,
//! never a mix. (When the other variables need more than the second sector, or comments fill
//! the first, the filler is left out and only the Tandem values are protected.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::gpt::PairEntries;
use super::{mark, BackendKind, BootControl, BootFiles, SlotBootState, SlotId};
use crate::error::{BootStateError, Error, Result, UsageError};
use crate::io::FileStore;
use crate::model::check_nibble;
use crate::slots::{Disk, SlotPair};

pub use super::grubenv::{GrubEnv, ENVBLK_SIZE, HEADER};

fn var(slot: SlotId, what: &str) -> String {
    format!("TANDEM_{}_{what}", slot.letter().to_ascii_uppercase())
}

/// Boot state in a grubenv file.
#[derive(Debug, Clone)]
pub struct GrubEnvBootControl {
    store: Arc<dyn FileStore>,
    path: PathBuf,
    pair_entries: PairEntries,
}

impl GrubEnvBootControl {
    /// The grubenv at `path` in `store`, for `pair` on `disk` (the grubenv must exist before
    /// any other call; see [`BootControl::prepare`]).
    pub fn new(
        store: Arc<dyn FileStore>,
        path: impl Into<PathBuf>,
        disk: &Disk,
        pair: &SlotPair,
    ) -> Self {
        Self {
            store,
            path: path.into(),
            pair_entries: PairEntries::new(disk.device().clone(), pair),
        }
    }

    /// Create the grubenv when it is missing (both slots unbootable), and its directory when
    /// that is missing too (as systemd-boot's `prepare` creates `loader/entries/`).
    fn create_if_missing(&self) -> Result<()> {
        match self.store.read(&self.path, ENVBLK_SIZE as u64 * 64) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = self.path.parent().unwrap_or(Path::new(""));
                self.store.create_dir_all(dir).map_err(|e| {
                    Error::io(
                        format!("creating the directory of {}", self.path.display()),
                        e,
                    )
                })?;
                let mut env = GrubEnv::default();
                env.set("TANDEM_ORDER", "");
                let block = self.block(&env)?;
                self.store
                    .write_atomic(&self.path, &block)
                    .map_err(|e| Error::io(format!("creating {}", self.path.display()), e))
            }
            Err(e) => Err(Error::io(format!("reading {}", self.path.display()), e)),
        }
    }

    /// The path of the grubenv in its store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read and parse the block.
    pub fn read_env(&self) -> Result<GrubEnv> {
        let data = self
            .store
            .read(&self.path, ENVBLK_SIZE as u64 * 64)
            .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
        if data.len() != ENVBLK_SIZE {
            return Err(self.bad(format!("{} bytes, not {ENVBLK_SIZE}", data.len())));
        }
        GrubEnv::parse(&data).map_err(|r| self.bad(r))
    }

    fn bad(&self, reason: String) -> Error {
        BootStateError::GrubEnv {
            path: self.path.clone(),
            reason,
        }
        .into()
    }

    fn block(&self, env: &GrubEnv) -> Result<Vec<u8>> {
        env.to_block().map_err(|needed| {
            BootStateError::GrubEnvFull {
                path: self.path.clone(),
                needed,
            }
            .into()
        })
    }

    fn order(&self, env: &GrubEnv) -> Result<Vec<SlotId>> {
        let raw = env.get("TANDEM_ORDER").unwrap_or_default();
        let mut order = Vec::new();
        for word in raw.split_whitespace() {
            let slot = match word {
                "a" => SlotId::A,
                "b" => SlotId::B,
                _ => {
                    return Err(self.bad_var(
                        "TANDEM_ORDER",
                        &raw,
                        "`a b`, `b a`, `a`, `b` or empty",
                    ))
                }
            };
            if order.contains(&slot) {
                return Err(self.bad_var("TANDEM_ORDER", &raw, "each slot at most once"));
            }
            order.push(slot);
        }
        Ok(order)
    }

    fn bad_var(&self, var: &str, value: &str, expected: &'static str) -> Error {
        BootStateError::GrubVar {
            path: self.path.clone(),
            var: var.to_string(),
            value: value.to_string(),
            expected,
        }
        .into()
    }

    fn slot_state(&self, env: &GrubEnv, order: &[SlotId], slot: SlotId) -> Result<SlotBootState> {
        let priority = match order.iter().position(|&s| s == slot) {
            Some(0) => 2,
            Some(_) => 1,
            None => 0,
        };
        let tries_var = var(slot, "TRIES");
        let tries_left = match env.get(&tries_var) {
            None => 0,
            Some(v) => match v.parse::<u8>() {
                Ok(n) if n <= 15 && v == n.to_string() => n,
                _ => return Err(self.bad_var(&tries_var, &v, "0 to 15")),
            },
        };
        let ok_var = var(slot, "OK");
        let successful = match env.get(&ok_var).as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(v) => return Err(self.bad_var(&ok_var, v, "0 or 1")),
        };
        Ok(SlotBootState {
            priority,
            tries_left,
            successful,
        })
    }

    /// Read, let `f` change the env, write it back in place (durable) if it changed.
    fn modify(&self, f: impl FnOnce(&mut GrubEnv) -> Result<()>) -> Result<()> {
        let mut env = self.read_env()?;
        let before = env.clone();
        f(&mut env)?;
        if env == before {
            return Ok(());
        }
        let block = self.block(&env)?;
        self.store
            .overwrite(&self.path, &block)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    /// Change one slot's state and its place in the order.
    fn put(&self, slot: SlotId, state: SlotBootState, place: Place) -> Result<()> {
        self.modify(|env| {
            let mut order = self.order(env)?;
            order.retain(|&s| s != slot);
            match place {
                Place::None => {}
                Place::First => order.insert(0, slot),
                Place::Keep(prev_first) if prev_first => order.insert(0, slot),
                Place::Keep(_) | Place::Last => order.push(slot),
            }
            let words: Vec<String> = order.iter().map(|s| s.to_string()).collect();
            env.set("TANDEM_ORDER", &words.join(" "));
            env.set(&var(slot, "TRIES"), &state.tries_left.to_string());
            env.set(&var(slot, "OK"), if state.successful { "1" } else { "0" });
            Ok(())
        })
    }

    /// The end of a trial: no tries left, `successful` as judged, the slot's place in the
    /// order kept (an unbootable slot stays out of it).
    fn settle(&self, slot: SlotId, successful: bool) -> Result<()> {
        let cur = self.state(slot)?;
        let state = SlotBootState {
            successful,
            tries_left: 0,
            ..cur
        };
        let place = if cur.priority == 0 {
            Place::None
        } else {
            Place::Keep(cur.priority == 2)
        };
        self.put(slot, state, place)
    }
}

#[derive(Debug, Clone, Copy)]
enum Place {
    None,
    First,
    Last,
    /// Keep the slot where it was (true = it was first); append when it was absent.
    Keep(bool),
}

impl BootControl for GrubEnvBootControl {
    fn kind(&self) -> BackendKind {
        BackendKind::Grub
    }

    /// `<grubenv's directory>/<slot>/`, with `cmdline.env` for `docs/grub.cfg.example`.
    fn boot_files(&self) -> Option<BootFiles> {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        Some(BootFiles::new(self.store.clone(), dir).with_grub_env())
    }

    /// Create the grubenv when it is missing (both slots unbootable), record the pair's
    /// PARTUUIDs in it (as the GPT has them now) (other variables are kept) and mark the disk as set up for grub.
    fn prepare(&self) -> Result<()> {
        self.create_if_missing()?;
        let partuuids = self.pair_entries.partuuids()?;
        self.modify(|env| {
            for (slot, partuuid) in [SlotId::A, SlotId::B].into_iter().zip(partuuids) {
                env.set(&var(slot, "PARTUUID"), &partuuid.to_string());
            }
            Ok(())
        })?;
        mark::record(&self.pair_entries, BackendKind::Grub)
    }

    fn state(&self, slot: SlotId) -> Result<SlotBootState> {
        let env = self.read_env()?;
        let order = self.order(&env)?;
        self.slot_state(&env, &order, slot)
    }

    fn set_state(&self, slot: SlotId, state: SlotBootState) -> Result<()> {
        check_nibble("priority", state.priority)?;
        check_nibble("tries", state.tries_left)?;
        let other = self.state(slot.other())?;
        let place = if state.priority == 0 {
            Place::None
        } else if state.priority > other.priority
            || (state.priority == other.priority && slot == SlotId::A)
        {
            Place::First
        } else {
            Place::Last
        };
        self.put(slot, state, place)
    }

    fn set_unbootable(&self, slot: SlotId) -> Result<()> {
        self.put(slot, SlotBootState::UNBOOTABLE, Place::None)
    }

    fn set_trial(&self, slot: SlotId, tries: u8) -> Result<()> {
        check_nibble("tries", tries)?;
        if tries == 0 {
            return Err(UsageError::ZeroTries.into());
        }
        let state = SlotBootState {
            priority: 2,
            tries_left: tries,
            successful: false,
        };
        self.put(slot, state, Place::First)
    }

    fn mark_good(&self, slot: SlotId) -> Result<()> {
        self.settle(slot, true)
    }

    fn mark_bad(&self, slot: SlotId) -> Result<()> {
        self.settle(slot, false)
    }

    fn record_boot_attempt(&self, slot: SlotId) -> Result<()> {
        let cur = self.state(slot)?;
        if cur.successful || cur.priority == 0 {
            return Ok(());
        }
        self.modify(|env| {
            env.set(
                &var(slot, "TRIES"),
                &cur.tries_left.saturating_sub(1).to_string(),
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::io::MemFs;
    use crate::table::tests::small_disk;

    /// The grubenv of `store` for the pair of a fresh disk.
    fn over(store: impl FileStore + 'static) -> GrubEnvBootControl {
        let disk = Disk::from_device(Arc::new(small_disk())).unwrap();
        let pair = disk.slots("root").unwrap();
        GrubEnvBootControl::new(Arc::new(store), "grubenv", &disk, &pair)
    }

    fn fresh() -> (MemFs, GrubEnvBootControl) {
        let fs = MemFs::new();
        let mut env = GrubEnv::default();
        env.set("saved_entry", "x");
        fs.write_atomic(Path::new("grubenv"), &env.to_block().unwrap())
            .unwrap();
        let bc = over(fs.clone());
        (fs, bc)
    }

    #[test]
    fn prepare_creates_the_env_records_partuuids_and_marks_the_disk() {
        let disk = Disk::from_device(Arc::new(small_disk())).unwrap();
        let pair = disk.slots("root").unwrap();
        let fs = MemFs::new();
        let bc = GrubEnvBootControl::new(Arc::new(fs.clone()), "grubenv", &disk, &pair);
        assert!(bc.states().is_err(), "no grubenv yet");
        bc.prepare().unwrap();
        assert_eq!(bc.states().unwrap(), [SlotBootState::UNBOOTABLE; 2]);
        let env = bc.read_env().unwrap();
        assert_eq!(
            env.get("TANDEM_B_PARTUUID").unwrap(),
            pair.slot(SlotId::B).partuuid.to_string()
        );
        assert_eq!(
            mark::recorded(disk.device().clone(), &pair).unwrap(),
            Some(BackendKind::Grub)
        );
        bc.set_trial(SlotId::A, 2).unwrap();
        bc.prepare().unwrap();
        assert_eq!(bc.state(SlotId::A).unwrap().tries_left, 2, "idempotent");
        // A PARTUUID changed after the backend was opened is the one the next prepare records.
        let uuid = uuid::Uuid::from_bytes([0x42; 16]);
        let index = pair.slot(SlotId::B).index;
        crate::table::update_unique_guid(disk.device().as_ref(), index, uuid).unwrap();
        bc.prepare().unwrap();
        let env = bc.read_env().unwrap();
        assert_eq!(env.get("TANDEM_B_PARTUUID").unwrap(), uuid.to_string());
    }

    #[test]
    fn parse_grub_editenv_output_with_warning_line() {
        let mut data = b"# GRUB Environment Block\n# WARNING: Do not edit this file by tools other than grub-editenv!!!\nX=a\\\\b\nY=multi\\\nline\nZ=\n".to_vec();
        data.resize(1024, b'#');
        let env = GrubEnv::parse(&data).unwrap();
        assert_eq!(env.get("X").unwrap(), "a\\b");
        assert_eq!(env.get("Y").unwrap(), "multi\nline");
        assert_eq!(env.get("Z").unwrap(), "");
        let block = env.to_block().unwrap();
        assert_eq!(GrubEnv::parse(&block).unwrap(), env, "round trip");
        // The warning comment is kept; the other variables start in the second sector.
        assert!(block.starts_with(&data[..94]));
        assert!(block[512..].starts_with(b"X=a\\\\b\n"));
        assert!(block[94..511].iter().all(|&b| b == b'#') && block[511] == b'\n');
    }

    #[test]
    fn malformed_blocks_are_errors() {
        for bad in [
            &b"# GRUB Env\n"[..],
            b"# GRUB Environment Block\nnoequals\n",
            b"# GRUB Environment Block\nX=unterminated",
            b"# GRUB Environment Block\n=x\n",
            b"# GRUB Environment Block\n##x",
        ] {
            assert!(
                GrubEnv::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut env = GrubEnv::default();
        env.set("BIG", &"x".repeat(1000));
        assert_eq!(env.to_block(), Err(1030));
    }

    #[test]
    fn transitions_keep_unknown_variables_and_size() {
        let (fs, bc) = fresh();
        assert_eq!(bc.state(SlotId::A).unwrap(), SlotBootState::UNBOOTABLE);
        assert_eq!(bc.next_boot().unwrap(), None);
        bc.set_trial(SlotId::A, 1).unwrap();
        bc.mark_good(SlotId::A).unwrap();
        assert_eq!(
            bc.state(SlotId::A).unwrap(),
            SlotBootState::new(2, 0, true).unwrap()
        );
        bc.set_trial(SlotId::B, 3).unwrap();
        let env = bc.read_env().unwrap();
        assert_eq!(env.get("TANDEM_ORDER").unwrap(), "b a");
        assert_eq!(env.get("TANDEM_B_TRIES").unwrap(), "3");
        assert_eq!(env.get("saved_entry").unwrap(), "x");
        assert_eq!(
            bc.state(SlotId::A).unwrap(),
            SlotBootState::new(1, 0, true).unwrap()
        );
        bc.record_boot_attempt(SlotId::B).unwrap();
        assert_eq!(bc.state(SlotId::B).unwrap().tries_left, 2);
        bc.mark_bad(SlotId::B).unwrap();
        assert_eq!(bc.read_env().unwrap().get("TANDEM_ORDER").unwrap(), "b a");
        assert_eq!(
            bc.state(SlotId::B).unwrap(),
            SlotBootState::new(2, 0, false).unwrap()
        );
        assert_eq!(bc.next_boot().unwrap(), Some(SlotId::A));
        bc.set_unbootable(SlotId::B).unwrap();
        assert_eq!(bc.read_env().unwrap().get("TANDEM_ORDER").unwrap(), "a");
        let file = &fs.snapshot()[Path::new("grubenv")];
        assert_eq!(file.len(), 1024);
        // Tandem variables sit in the first sector.
        let text = String::from_utf8_lossy(&file[..512]);
        for v in [
            "TANDEM_ORDER=",
            "TANDEM_A_TRIES=",
            "TANDEM_A_OK=",
            "TANDEM_B_TRIES=",
            "TANDEM_B_OK=",
        ] {
            assert!(text.contains(v), "{v}");
        }
    }

    #[test]
    fn bad_tandem_values_are_reported() {
        let (fs, bc) = fresh();
        for (var, val) in [
            ("TANDEM_ORDER", "a c"),
            ("TANDEM_ORDER", "a a"),
            ("TANDEM_A_TRIES", "16"),
            ("TANDEM_A_TRIES", "03"),
            ("TANDEM_A_OK", "yes"),
        ] {
            let mut env = GrubEnv::default();
            env.set(var, val);
            fs.write_atomic(Path::new("grubenv"), &env.to_block().unwrap())
                .unwrap();
            let err = bc.states().unwrap_err();
            assert!(
                matches!(err, Error::BootState(BootStateError::GrubVar { .. })),
                "{var}={val}: {err}"
            );
        }
    }

    #[test]
    fn a_torn_write_leaves_the_old_or_the_new_state() {
        use crate::io::PowerLossFs;
        let (fs, bc) = fresh();
        let pad = "y".repeat(90);
        for i in 0..4 {
            let mut env = bc.read_env().unwrap();
            env.set(&format!("other{i}"), &pad);
            fs.overwrite(Path::new("grubenv"), &env.to_block().unwrap())
                .unwrap();
        }
        bc.set_trial(SlotId::A, 1).unwrap();
        bc.mark_good(SlotId::A).unwrap();
        bc.set_trial(SlotId::B, 10).unwrap();
        let others = |env: &GrubEnv| -> Vec<Option<String>> {
            (0..4).map(|i| env.get(&format!("other{i}"))).collect()
        };
        let want_others = others(&bc.read_env().unwrap());
        assert!(want_others
            .iter()
            .all(|o| o.as_deref() == Some(pad.as_str())));
        type Op = fn(&GrubEnvBootControl) -> Result<()>;
        let ops: [Op; 4] = [
            |b| b.record_boot_attempt(SlotId::B),
            |b| b.mark_good(SlotId::B),
            |b| b.mark_bad(SlotId::B),
            |b| b.set_trial(SlotId::A, 15),
        ];
        let mut kept_new = 0;
        for op in ops {
            let old = bc.states().unwrap();
            let done = MemFs::new();
            let block = fs.read(Path::new("grubenv"), 2048).unwrap();
            done.write_atomic(Path::new("grubenv"), &block).unwrap();
            op(&over(done.clone())).unwrap();
            let new = over(done).states().unwrap();
            assert_ne!(old, new);
            for seed in 0..16 {
                let cut = PowerLossFs::from_mem(&fs);
                cut.cut_after_ops(0);
                let cbc = over(cut.clone());
                assert!(op(&cbc).is_err());
                let after = over(cut.after_power_cut(seed));
                let got = after.states().unwrap();
                assert!(got == old || got == new, "seed {seed}: {got:?}");
                assert_eq!(others(&after.read_env().unwrap()), want_others);
                kept_new += usize::from(got == new);
            }
        }
        assert!(kept_new > 0, "some cuts kept the new first sector");
    }

    #[test]
    fn set_state_keeps_priority_order() {
        let (_fs, bc) = fresh();
        // Priorities read back as 2 (first) and 1 (second); set_state compares with those.
        bc.set_state(SlotId::B, SlotBootState::new(7, 2, false).unwrap())
            .unwrap();
        assert_eq!(bc.state(SlotId::B).unwrap().priority, 2);
        bc.set_state(SlotId::A, SlotBootState::new(1, 0, true).unwrap())
            .unwrap();
        assert_eq!(bc.read_env().unwrap().get("TANDEM_ORDER").unwrap(), "b a");
        bc.set_state(SlotId::A, SlotBootState::new(9, 0, true).unwrap())
            .unwrap();
        assert_eq!(bc.read_env().unwrap().get("TANDEM_ORDER").unwrap(), "a b");
        bc.set_state(SlotId::A, SlotBootState::new(0, 4, false).unwrap())
            .unwrap();
        assert_eq!(bc.read_env().unwrap().get("TANDEM_ORDER").unwrap(), "b");
    }
}
