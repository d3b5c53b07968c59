//! Test harness: a fresh repository and data directory per test, an in-process server on
//! 127.0.0.1:0 running on its own runtime thread, raw-socket helpers for requests a normal
//! client would refuse to send, and a throwaway PostgreSQL cluster for the tests that run on
//! both report stores ([`Backend`], [`on_both_backends!`]).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use server::{Config, Server, Token};
use tempfile::TempDir;

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

/// A PostgreSQL cluster in a temporary directory, listening only on a Unix socket there (no
/// port to collide with another test); stopped when dropped. As root, its programs run as
/// the `postgres` user (PostgreSQL refuses root). A missing PostgreSQL fails the test:
/// `scripts/test.sh` installs Debian's `postgresql`.
pub struct PgCluster {
    dir: TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        PgCluster::start_with_hba("")
    }

    /// A cluster whose `pg_hba.conf` starts with `hba` (rules before the default `trust`).
    pub fn start_with_hba(hba: &str) -> PgCluster {
        let bin = pg_bin_dir().expect(
            "PostgreSQL (initdb, pg_ctl) is missing: apt-get install postgresql \
             (scripts/test.sh installs it)",
        );
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = rustix::process::geteuid().is_root();
        if as_postgres {
            let uid = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap();
            let uid: u32 = String::from_utf8_lossy(&uid.stdout).trim().parse().unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
        }
        let cluster = PgCluster {
            dir,
            bin,
            as_postgres,
        };
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let hba_file = data.join("pg_hba.conf");
        let rest = std::fs::read_to_string(&hba_file).unwrap();
        std::fs::write(&hba_file, format!("{hba}\n{rest}")).unwrap();
        let options = format!(
            "-k {} -c listen_addresses= -c fsync=off -c max_connections=200",
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        cluster
    }

    /// The connection settings of its `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres",
            self.dir.path().display()
        )
    }

    /// The socket directory (`host=` of a connection).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` and returns the first column of each row as an integer.
    pub fn query_ints(&self, sql: &str) -> Vec<i64> {
        self.first_column(sql, |r| r.get::<_, i64>(0))
    }

    /// Runs `sql` and returns the first column of each row as text.
    pub fn query_texts(&self, sql: &str) -> Vec<String> {
        self.first_column(sql, |r| r.get::<_, String>(0))
    }

    fn first_column<T>(&self, sql: &str, get: impl Fn(&tokio_postgres::Row) -> T) -> Vec<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let rows = client.query(sql, &[]).await.unwrap();
            rows.iter().map(get).collect()
        })
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{}\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap_or(""),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

/// Where `initdb` and `pg_ctl` are: on `PATH`, else Debian's versioned directory (newest).
fn pg_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, bin)| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

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
