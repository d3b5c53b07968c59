//! Power loss with lost writes: the disk is a `PowerLossDisk` that cuts the power after `k`
//! writes and, at the next boot, keeps what was synced plus a seeded subset of the writes
//! after the last sync (a page cache's fate, which `kill -9` never shows). The state file
//! lives in a store that stops with the disk. Every write position of an update (install,
//! flip, firmware attempt, boot-check, commit or rollback) is cut with several seeds; after
//! each, the firmware must boot a complete signed image and the agent must settle.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use partitions::boot::Config;
use partitions::io::{FileStore, MemFs, NewFile, PowerLossDisk, SplitMix64};
use partitions::{select_and_boot, SlotId};
use tandem_tests::{
    image, recover, request, Backend, Release, World, CHUNK_SIZE, DISK_SIZE, PRODUCT,
};
use updater::{BootCheck, Io};

/// The state store: durable at every call (a `MemFs`), dead once the disk lost power.
#[derive(Debug)]
struct CutFs {
    inner: MemFs,
    disk: PowerLossDisk,
}

impl CutFs {
    fn check(&self) -> io::Result<()> {
        if self.disk.powered() {
            Ok(())
        } else {
            Err(io::Error::other(
                "simulated power cut: the state store is off",
            ))
        }
    }
}

impl FileStore for CutFs {
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
        self.check()?;
        self.inner.read(path, max_len)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write_atomic(path, data)
    }
    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.overwrite(path, data)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.check()?;
        self.inner.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn NewFile>> {
        self.check()?;
        self.inner.create(path)
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.check()?;
        self.inner.read_at(path, offset, len)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        self.check()?;
        self.inner.len(path)
    }
    fn free_space(&self) -> io::Result<u64> {
        self.check()?;
        self.inner.free_space()
    }
}

/// One update, as the node lives it, on `disk`: install, reboot, boot-check (and, when the
/// health check fails, the reboot back and its boot-check). Stops at the first error (the
/// power went off).
fn update(w: &World, disk: &PowerLossDisk, v2: &Release) -> Result<(), String> {
    let io = |disk: &PowerLossDisk| Io {
        disk: Arc::new(disk.clone()),
        state_fs: Arc::new(CutFs {
            inner: w.state_fs.clone(),
            disk: disk.clone(),
        }),
        boot_fs: None,
    };
    let agent = |booted: SlotId| {
        updater::Agent::with_io(w.config(booted), io(disk)).map(|mut a| {
            a.write_options.checkpoint_bytes = 4 * u64::from(tandem_tests::CHUNK_SIZE);
            a
        })
    };
    let e = |e: updater::Error| e.to_string();
    let firmware = || -> Result<SlotId, String> {
        let disk =
            partitions::Disk::from_device(Arc::new(disk.clone())).map_err(|e| e.to_string())?;
        let pair = disk.slots("root").map_err(|e| e.to_string())?;
        let bc =
            partitions::boot::open(&Config::Gpt, &disk, &pair, None).map_err(|e| e.to_string())?;
        select_and_boot(bc.as_ref()).map_err(|e| e.to_string())
    };
    agent(SlotId::A)
        .map_err(e)?
        .install(&request(&v2.bundle, false))
        .map_err(e)?;
    let slot = firmware()?;
    if let BootCheck::RolledBack { .. } = agent(slot).map_err(e)?.boot_check().map_err(e)? {
        let slot = firmware()?;
        agent(slot).map_err(e)?.boot_check().map_err(e)?;
    }
    Ok(())
}

#[test]
fn power_loss_with_lost_writes() {
    let seed: u64 = std::env::var("TANDEM_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x007A_4DE3);
    const SEEDS_PER_POINT: u64 = 6;
    let start = Instant::now();
    let factory_disk = PowerLossDisk::new(DISK_SIZE);
    let mut w = World::with_disk(Backend::Gpt, Arc::new(factory_disk.clone()));
    // Ten chunks (the last one short, two all-zero): every write position is cut.
    let len = 10 * CHUNK_SIZE as usize - 4096;
    let v1 = w.release_of("1.0.0", 1, image(len, 1), PRODUCT);
    let v2 = w.release_of("2.0.0", 2, image(len, 2), PRODUCT);
    w.provision(SlotId::A, &v1);
    assert_eq!(
        factory_disk.unsynced_writes(),
        0,
        "provisioning synced everything"
    );
    // A copy of the factory disk (nothing unsynced: every seed gives the same disk).
    let fresh = || factory_disk.after_power_cut(0);

    let mut rng = SplitMix64(seed);
    let mut cuts = 0u64;
    for healthy in [true, false] {
        // A dry run counts the writes of a whole update.
        let disk = fresh();
        w.disk = Arc::new(disk.clone());
        w.state_fs = MemFs::new();
        w.set_healthy(healthy);
        w.health_checks.set(!healthy);
        update(&w, &disk, &v2).unwrap_or_else(|e| panic!("the uncut update failed: {e}"));
        let total = disk.writes_done();
        assert!(total > v2.chunks, "{total} writes");
        for k in 0..total {
            for _ in 0..SEEDS_PER_POINT {
                let cut_seed = rng.next();
                let disk = fresh();
                disk.cut_after_writes(k);
                w.disk = Arc::new(disk.clone());
                w.state_fs = MemFs::new();
                w.set_healthy(healthy);
                // A failing trial needs the check; a passing one is as good without it.
                w.health_checks.set(!healthy);
                let result = update(&w, &disk, &v2);
                w.health_checks.set(false);
                assert!(
                    result.is_err() && !disk.powered(),
                    "cut after {k} of {total} writes did not stop the update: {result:?}"
                );
                let context = format!(
                    "lost writes: cut after write {k} of {total} (health {healthy}, cut seed {cut_seed}, \
                     {} unsynced writes, run seed {seed})",
                    disk.unsynced_writes()
                );
                w.disk = Arc::new(disk.after_power_cut(cut_seed));
                recover(&w, &v1, &v2, &context);
                cuts += 1;
            }
        }
    }
    println!(
        "power loss: {cuts} seeded cuts with lost writes, seed {seed} (TANDEM_POWER_SEED), {:?}",
        start.elapsed()
    );
}
