//! The artefact cache: one directory per key under `target/realboot/cache/`, built once however
//! many tests ask for it at the same moment, as threads of one process (`cargo test`) or as
//! processes (nextest).
//!
//! Whoever looks at the cache holds an exclusive `flock` on `cache/lock` while it checks,
//! builds and prunes. flock locks belong to the open file, so two threads of one process
//! exclude each other as two processes do; the one that waited then finds the finished entry.
//! An entry is built in `KEY.tmp`, marked `done` and renamed into place, so a builder killed
//! midway leaves nothing that looks finished; the next builder, holding the lock, knows that
//! temporary directory is nobody's and starts afresh.

use std::fs;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// The name of the lock file in the cache directory.
const LOCK: &str = "lock";
/// The file that marks an entry complete.
const DONE: &str = "done";

/// The entry `cache/KEY`, built by `build` (given an empty directory) unless it is already
/// there. Every other entry is removed after a build: they belong to older binaries.
pub fn entry(cache: &Path, key: &str, build: impl FnOnce(&Path)) -> PathBuf {
    fs::create_dir_all(cache)
        .unwrap_or_else(|e| panic!("cannot create the cache {}: {e}", cache.display()));
    let lock_path = cache.join(LOCK);
    let lock = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
    flock(&lock, FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    let dir = cache.join(key);
    if !dir.join(DONE).is_file() {
        let tmp = cache.join(format!("{key}.tmp"));
        remove_if_there(&tmp);
        fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display()));
        build(&tmp);
        fs::write(tmp.join(DONE), "")
            .unwrap_or_else(|e| panic!("cannot mark {} done: {e}", tmp.display()));
        fs::rename(&tmp, &dir).unwrap_or_else(|e| {
            panic!("cannot rename {} to {}: {e}", tmp.display(), dir.display())
        });
        prune(cache, key);
    }
    // Dropping `lock` closes it, which releases the flock.
    dir
}

fn remove_if_there(dir: &Path) {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("cannot remove {}: {e}", dir.display()));
    }
}

/// Removes every entry but `key` (older binaries' entries are about 100 MB each).
fn prune(cache: &Path, key: &str) {
    for entry in fs::read_dir(cache).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name != key && name != LOCK {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The lock on `cache`, tried without waiting: true when somebody else holds it.
    fn locked(cache: &Path) -> bool {
        let file = fs::File::open(cache.join(LOCK)).unwrap();
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => false,
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => true,
            Err(e) => panic!("flock: {e}"),
        }
    }

    /// Two threads of one process ask for the same entry while the first is building it
    /// (what `cargo test` does with the two real-boot tests): one build, nothing of it
    /// removed, both get the finished entry.
    #[test]
    fn a_second_request_during_a_build_waits_for_it() {
        let cache = tempfile::tempdir().unwrap();
        let cache = cache.path();
        let builds = AtomicUsize::new(0);
        let (building_tx, building_rx) = mpsc::channel();
        let (finish_tx, finish_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            // Owned by this closure: if an assertion below fails, unwinding drops it and the
            // builder stops waiting, so the test fails instead of hanging.
            let finish_tx = finish_tx;
            let builds = &builds;
            let first = s.spawn(move || {
                entry(cache, "k", |dir| {
                    builds.fetch_add(1, Ordering::SeqCst);
                    fs::write(dir.join("half"), "").unwrap();
                    building_tx.send(()).unwrap();
                    finish_rx.recv().unwrap();
                    fs::write(dir.join("whole"), "").unwrap();
                })
            });
            building_rx.recv().unwrap();
            // Mid-build: the lock is held and no entry is visible under the key.
            assert!(locked(cache), "the builder does not hold the cache lock");
            assert!(!cache.join("k").exists(), "a half-built entry is visible");
            let second = s.spawn(move || {
                entry(cache, "k", |_| {
                    builds.fetch_add(1, Ordering::SeqCst);
                })
            });
            finish_tx.send(()).unwrap();
            let (a, b) = (first.join().unwrap(), second.join().unwrap());
            assert_eq!(a, b);
            assert_eq!(names(&a), ["done", "half", "whole"]);
        });
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "the entry was built twice"
        );
        assert_eq!(names(cache), ["k", "lock"]);
        assert!(!locked(cache), "the lock outlived the requests");
    }

    /// What a killed builder left (the temporary directory, here with a stale file in it, and
    /// the per-process temporaries of the layout before the lock) is replaced, and the
    /// entries of other keys are pruned after the build.
    #[test]
    fn leftovers_of_killed_builders_and_older_keys_go() {
        let cache = tempfile::tempdir().unwrap();
        let cache = cache.path();
        for leftover in ["k.tmp", "k.tmp-4242", "old"] {
            fs::create_dir_all(cache.join(leftover)).unwrap();
            fs::write(cache.join(leftover).join("stale"), "").unwrap();
        }
        let dir = entry(cache, "k", |dir| fs::write(dir.join("new"), "").unwrap());
        assert_eq!(names(&dir), ["done", "new"]);
        assert_eq!(names(cache), ["k", "lock"]);
    }

    /// A finished entry is used as it is, and nothing is pruned.
    #[test]
    fn a_finished_entry_is_not_rebuilt() {
        let cache = tempfile::tempdir().unwrap();
        let cache = cache.path();
        entry(cache, "k", |dir| fs::write(dir.join("first"), "").unwrap());
        fs::create_dir_all(cache.join("other")).unwrap();
        let dir = entry(cache, "k", |_| panic!("rebuilt a finished entry"));
        assert_eq!(names(&dir), ["done", "first"]);
        assert_eq!(names(cache), ["k", "lock", "other"]);
    }
}
