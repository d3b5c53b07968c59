//! Test harness: a fresh repository and data directory per test, an in-process server on
//! 127.0.0.1:0 running on its own runtime thread, raw-socket helpers for requests a normal
//! client would refuse to send, and a throwaway PostgreSQL cluster for the tests that run on
//! both report stores ([`Backend`], [`on_both_backends!`]).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use server::{Config, Server, Token};
use tempfile::TempDir;

pub use crate::pg::PgCluster;

pub const REPORT_TOKEN: &str = "report-token-0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abc";
/// Size of the fixture bundle (3 MiB + 123 bytes, so ranges cross chunk boundaries).
pub const BUNDLE_LEN: usize = 3 * 1024 * 1024 + 123;

pub struct TestServer {
    pub addr: SocketAddr,
    pub root: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Dropped after the server has stopped (it may hold the PostgreSQL cluster).
    backend: Backend,
}

/// The report store a test server uses.
#[derive(Clone)]
pub enum Backend {
    /// `DATA/tandem.db`, the default.
    Sqlite,
    /// A PostgreSQL cluster, possibly shared by several servers.
    Postgres(Arc<PgCluster>),
}

impl Backend {
    /// A fresh PostgreSQL cluster of its own.
    pub fn postgres() -> Backend {
        Backend::Postgres(Arc::new(PgCluster::start()))
    }

    /// Points `config` at this store.
    pub fn configure(&self, config: &mut Config) {
        if let Backend::Postgres(pg) = self {
            config.database_url = Some(pg.url());
        }
    }
}

/// Generates one `#[test]` per backend for each listed `fn name(backend: Backend)`:
/// `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name($crate::util::Backend::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name($crate::util::Backend::postgres())
            })*
        }
    };
}
pub(crate) use on_both_backends;

/// Deterministic, non-repeating-looking bytes.
pub fn bundle_bytes() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..BUNDLE_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

pub fn channel_doc(metadata_version: u64, release: &str) -> String {
    serde_json::json!({
        "signed": {
            "channel": "stable", "version": metadata_version, "expires": "2030-01-01T00:00:00Z",
            "release": {"product": "demo-os", "version": release, "security_version": 1,
                        "bundle": format!("bundles/demo-os-{release}.tandem"),
                        "size": BUNDLE_LEN, "manifest_sha256": "00".repeat(32)},
            "rollout": {"percent": 30, "salt": "s1"}
        },
        "signatures": [{"keyid": "ab", "sig": "cd"}]
    })
    .to_string()
}

/// `root/repo` with the docs/DESIGN.md §4 layout, `root/outside/secret.json` next to it.
fn make_repo(root: &Path) -> PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("channels")).unwrap();
    std::fs::create_dir_all(repo.join("bundles")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::write(root.join("outside/secret.json"), "TOP-SECRET").unwrap();
    std::fs::write(
        repo.join("root.json"),
        r#"{"signed":{"version":1},"signatures":[]}"#,
    )
    .unwrap();
    std::fs::write(repo.join("channels/stable.json"), channel_doc(1, "2.0.0")).unwrap();
    std::fs::write(repo.join("bundles/demo-os-2.0.0.tandem"), bundle_bytes()).unwrap();
    std::os::unix::fs::symlink(
        root.join("outside/secret.json"),
        repo.join("channels/escape.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../root.json", repo.join("bundles/alias.json")).unwrap();
    repo
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts a server with both tokens, short timeouts, and `tweak` applied.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on_with(Backend::Sqlite, tweak)
    }

    /// Starts a server keeping its reports in `backend`.
    pub fn start_on(backend: Backend) -> Self {
        Self::start_on_with(backend, |_| {})
    }

    /// [`Self::start_with`] on `backend`.
    pub fn start_on_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let root = tempfile::tempdir().unwrap();
        let repo = make_repo(root.path());
        let mut config = Config::new(
            repo,
            "127.0.0.1:0".parse().unwrap(),
            root.path().join("data"),
        );
        config.report_token = Some(Token::new("report", REPORT_TOKEN).unwrap());
        config.admin_token = Some(Token::new("admin", ADMIN_TOKEN).unwrap());
        config.limits.header_read_timeout = Duration::from_secs(2);
        config.limits.body_read_timeout = Duration::from_secs(2);
        config.limits.shutdown_grace = Duration::from_secs(2);
        // The fixture fleets fail more than the default budget on purpose; the tests of the
        // budget turn it on.
        config.failure_budget.enabled = false;
        backend.configure(&mut config);
        tweak(&mut config);
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::bind(config).await.unwrap();
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server did not start");
        TestServer {
            addr,
            root,
            stop: Some(stop),
            thread: Some(thread),
            backend,
        }
    }

    pub fn repo(&self) -> PathBuf {
        self.root.path().join("repo")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Reports stored in the database.
    pub fn stored_reports(&self) -> i64 {
        const COUNT: &str = "SELECT COUNT(*) FROM reports";
        match &self.backend {
            Backend::Sqlite => {
                let conn =
                    rusqlite::Connection::open(self.root.path().join("data/tandem.db")).unwrap();
                conn.query_row(COUNT, [], |r| r.get(0)).unwrap()
            }
            Backend::Postgres(pg) => pg.query_ints(COUNT)[0],
        }
    }

    /// The lease log as "GROUP NODE EVENT" lines, in the order the events happened.
    pub fn lease_events(&self) -> Vec<String> {
        const EVENTS: &str =
            "SELECT grp || ' ' || node_id || ' ' || event FROM lease_log ORDER BY id";
        match &self.backend {
            Backend::Sqlite => {
                let conn =
                    rusqlite::Connection::open(self.root.path().join("data/tandem.db")).unwrap();
                let mut stmt = conn.prepare(EVENTS).unwrap();
                let rows = stmt.query_map([], |r| r.get(0)).unwrap();
                rows.collect::<Result<_, _>>().unwrap()
            }
            Backend::Postgres(pg) => pg.query_texts(EVENTS),
        }
    }

    /// Sends raw bytes on a fresh connection and returns everything read until EOF.
    pub fn raw(&self, request: &[u8]) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `GET path` as a raw request line (no client-side normalisation); the status code.
    pub fn raw_get_status(&self, target: &str) -> (u16, String) {
        let resp = self.raw(
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        (status_of(&resp), resp)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The status code of a raw HTTP response (0 when there is none).
pub fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
