//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, listening
//! on a Unix socket there only. The server's tests use it, and the fleet tests of
//! `tests/` include this file to run the real `tandem-server` on PostgreSQL.
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

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
