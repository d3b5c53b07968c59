//! One poll, one read of each file: the steps of a daemon poll share what the first of them
//! read of the state directory (the agent's `NodeSnapshot`), counted here through a state
//! directory that records every read.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use partitions::io::{FileStore, MemFs, NewFile};
use partitions::SlotId::{A, B};
use updater::daemon::Poll;

use super::{daemon, fast_http, Fleet, TandemServer};

/// A state directory in memory that counts the reads of each file.
#[derive(Debug, Clone, Default)]
struct CountingFs {
    inner: MemFs,
    reads: Arc<Mutex<HashMap<PathBuf, usize>>>,
}

impl CountingFs {
    fn reads_of(&self, name: &str) -> usize {
        let reads = self.reads.lock().unwrap();
        reads.get(Path::new(name)).copied().unwrap_or(0)
    }

    fn count(&self, path: &Path) {
        *self.reads.lock().unwrap().entry(path.into()).or_default() += 1;
    }
}

impl FileStore for CountingFs {
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
        self.count(path);
        self.inner.read(path, max_len)
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.write_atomic(path, data)
    }
    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.overwrite(path, data)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn NewFile>> {
        self.inner.create(path)
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.count(path);
        self.inner.read_at(path, offset, len)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        self.inner.len(path)
    }
    fn free_space(&self) -> io::Result<u64> {
        self.inner.free_space()
    }
}

#[test]
fn an_installing_poll_reads_each_file_of_the_state_directory_once() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    f.point_at(&server.url, "node-1", Some(&server.report_token_file));
    let textfile = f.w.dir.path().join("tandem.prom");
    f.w.extra_config = format!(
        "metrics_textfile = \"{}\"\n{}",
        textfile.display(),
        f.w.extra_config
    );
    let state_dir = CountingFs {
        inner: f.w.state_fs.clone(),
        ..CountingFs::default()
    };
    let mut io = f.w.io();
    io.state_fs = Arc::new(state_dir.clone());
    let mut agent = f.w.agent_with(A, io);
    agent.http_options = fast_http();

    match daemon(&agent).poll_once().unwrap() {
        Poll::Installed(o) => assert_eq!((o.target, o.release.version.as_str()), (B, "2.0.0")),
        other => panic!("expected an install of 2.0.0, got: {other}"),
    }
    assert!(textfile.exists(), "the poll wrote no metrics");
    for name in ["state.json", "counters.json", "root.json", "metrics.json"] {
        assert_eq!(state_dir.reads_of(name), 1, "reads of {name} in one poll");
    }
}
