//! The `tandem-server` binary: start, serve, stop on SIGTERM; token rules; TLS.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::util::TestServer;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tandem-server");

#[test]
fn binary_serves_and_stops_on_sigterm() {
    let fixture = TestServer::start();
    let token_file = fixture.root.path().join("report.token");
    std::fs::write(&token_file, "file-token-0123456789\n").unwrap();
    let status_token_file = fixture.root.path().join("status.token");
    std::fs::write(&status_token_file, "status-token-0123456789\n").unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
        .arg(fixture.repo())
        .arg("--data")
        .arg(fixture.root.path().join("bin-data"))
        .arg("--report-token-file")
        .arg(&token_file)
        .arg("--status-token-file")
        .arg(&status_token_file)
        .args(["--report-max-age", "30days", "--report-max-rows", "1000"])
        .env_remove("TANDEM_REPORT_TOKEN")
        .env_remove("TANDEM_STATUS_TOKEN")
        .env_remove("TANDEM_ADMIN_TOKEN");
    let (mut child, addr) = spawn_listening(&mut command);
    let r = crate::util::client()
        .get(format!("http://{addr}/root.json"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post_installed_report(&addr);
    assert_eq!(r.status(), StatusCode::CREATED);
    let page = format!("http://{addr}/");
    let r = crate::util::client().get(&page).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = crate::util::client()
        .get(&page)
        .bearer_auth("status-token-0123456789")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit: {status}");
}

/// POSTs node `n`'s "installed" report of `stable` to the server at `addr` with the report
/// token the tests give the binary.
fn post_installed_report(addr: &str) -> reqwest::blocking::Response {
    crate::util::client()
        .post(format!("http://{addr}/v1/reports"))
        .bearer_auth("file-token-0123456789")
        .json(
            &serde_json::json!({"node_id": "n", "channel": "stable", "from_version": "1",
                                  "to_version": "2", "outcome": "installed"}),
        )
        .send()
        .unwrap()
}

/// Starts the server `command` describes; the child and the address it logs it listens on.
/// Its log is read (and dropped) until it exits.
pub(crate) fn spawn_listening(command: &mut Command) -> (std::process::Child, String) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .take(20)
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("listening on http://")
                .nth(1)
                .map(|a| a.trim().to_owned())
        })
        .expect("listening line");
    // Keep reading: a closed pipe would fail the server's later log writes.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

#[test]
fn database_flag_keeps_reports_in_postgres_migrated_at_start() {
    let pg = crate::util::PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let fixture = TestServer::start();
    let conflicting = Command::new(BIN)
        .args(["serve", "--repo"])
        .arg(fixture.repo())
        .args(["--data", "x", "--database", &pg.url()])
        .output()
        .unwrap();
    assert!(
        !conflicting.status.success(),
        "--data or --database, not both"
    );
    let unreachable = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
        .arg(fixture.repo())
        .arg("--database")
        .arg(format!("host={} user=postgres", dir.path().display()))
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(err.contains("PostgreSQL"), "{err}");
    let (mut child, addr) = spawn_listening(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
            .arg(fixture.repo())
            .args(["--database", &pg.url()])
            .env("TANDEM_REPORT_TOKEN", "file-token-0123456789")
            .env_remove("TANDEM_STATUS_TOKEN")
            .env_remove("TANDEM_ADMIN_TOKEN"),
    );
    let versions = pg.query_ints("SELECT version FROM schema_version ORDER BY version");
    let r = crate::util::client()
        .post(format!("http://{addr}/v1/reports"))
        .bearer_auth("file-token-0123456789")
        .json(
            &serde_json::json!({"id": "r1", "node_id": "n", "channel": "stable",
                                  "from_version": "1", "to_version": "2", "outcome": "installed",
                                  "transfer": {"bytes_fetched": 11, "bytes_reused": 22,
                                               "bundle_bytes": 44}}),
        )
        .send()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(pg.query_ints("SELECT COUNT(*) FROM reports"), [1]);
    assert_eq!(
        pg.query_ints("SELECT bytes_fetched + bytes_reused + bundle_bytes FROM reports"),
        [77]
    );
}

/// `tandem-server serve --repo DIR --data DIR/data` with `args` and the environment `env`,
/// which must fail at start: its standard error.
fn refused_at_start(dir: &std::path::Path, args: &[&std::ffi::OsStr], env: (&str, &str)) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--repo"])
        .arg(dir)
        .arg("--data")
        .arg(dir.join("data"))
        .args(args)
        .env(env.0, env.1)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn token_in_both_file_and_environment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("t");
    std::fs::write(&token_file, "file-token-0123456789").unwrap();
    let both = [
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--admin-token-file".as_ref(),
        token_file.as_os_str(),
    ];
    let err = refused_at_start(
        dir.path(),
        &both,
        ("TANDEM_ADMIN_TOKEN", "env-token-0123456789"),
    );
    assert!(err.contains("TANDEM_ADMIN_TOKEN"), "{err}");
    let err = refused_at_start(dir.path(), &[], ("TANDEM_REPORT_TOKEN", "short"));
    assert!(err.contains("shorter than 16"), "{err}");
    // Only node keys, yet a shared report token: ambiguous, refused.
    let keys = ["--node-auth".as_ref(), "keys".as_ref()];
    let err = refused_at_start(
        dir.path(),
        &keys,
        ("TANDEM_REPORT_TOKEN", "report-token-0123456789"),
    );
    assert!(
        err.contains("--node-auth keys takes no report token"),
        "{err}"
    );
}

#[test]
fn serves_https_with_rustls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
    ];
    openssl(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-subj", "/CN=test CA", "-keyout"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    );
    openssl(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-CA",
            ])
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let (c, k) = (cert.clone(), key.clone());
    let s = TestServer::start_with(move |cfg| cfg.tls = Some(server::TlsFiles { cert: c, key: k }));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let r = client
        .get(format!("https://127.0.0.1:{}/root.json", s.addr.port()))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().unwrap().contains("\"version\":1"));
    let plain = crate::util::client().get(s.url("/root.json")).send();
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "no plain HTTP on a TLS port"
    );
}

/// Runs an openssl command (scripts/test.sh installs openssl) and checks it worked.
fn openssl(cmd: &mut Command) {
    let out = cmd
        .output()
        .expect("openssl is needed for this test (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn output_to_a_closed_pipe_exits_quietly() {
    for args in [["--help"], ["--version"]] {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {}: {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn logs_carry_colour_only_on_a_terminal_without_no_color() {
    let dir = tempfile::tempdir().unwrap();
    // Shared-token reports with no token: the server logs a warning, then fails on the
    // missing repository.
    let serve = format!(
        "{BIN} serve --node-auth shared --repo {0}/missing --data {0}/data",
        dir.path().display()
    );
    let piped = Command::new("sh")
        .args(["-c", &serve])
        .env_remove("NO_COLOR")
        .env_remove("TANDEM_REPORT_TOKEN")
        .output()
        .unwrap();
    let log = |out: &std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text + &String::from_utf8_lossy(&out.stderr)
    };
    assert!(log(&piped).contains("no report token"), "{}", log(&piped));
    assert!(!log(&piped).contains('\x1b'), "a pipe: {}", log(&piped));
    // `script` gives the server a terminal for stdout and stderr.
    let on_terminal = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &serve, "/dev/null"])
            .env_remove("TANDEM_REPORT_TOKEN")
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            cmd.env("NO_COLOR", value);
        }
        let out = cmd
            .output()
            .expect("script (util-linux) is needed for this test");
        let text = log(&out);
        assert!(text.contains("no report token"), "{text}");
        text
    };
    assert!(on_terminal(None).contains('\x1b'), "a terminal is coloured");
    let text = on_terminal(Some("1"));
    assert!(!text.contains('\x1b'), "NO_COLOR: {text}");
}

/// `tandem-server serve --database SETTINGS [extra]` against an empty repository: its output
/// when it fails at start.
fn serve_database(settings: &str, extra: &[&std::ffi::OsStr]) -> std::process::Output {
    let fixture = TestServer::start();
    Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
        .arg(fixture.repo())
        .args(["--database", settings])
        .args(extra)
        .env("TANDEM_REPORT_TOKEN", "file-token-0123456789")
        .output()
        .unwrap()
}

#[test]
fn a_missing_database_or_role_is_named_in_the_error() {
    let pg = crate::util::PgCluster::start();
    let host = pg.socket_dir().display().to_string();
    for (settings, cause) in [
        (
            format!("host={host} user=postgres dbname=nosuch"),
            "database \"nosuch\" does not exist",
        ),
        (
            format!("host={host} user=nobody dbname=postgres"),
            "role \"nobody\" does not exist",
        ),
    ] {
        let out = serve_database(&settings, &[]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(cause), "{settings}: {err}");
    }
}

#[test]
fn the_database_password_comes_from_a_file_not_the_url() {
    let pg = crate::util::PgCluster::start_with_hba("local all tandem scram-sha-256");
    pg.query_ints("CREATE ROLE tandem LOGIN PASSWORD 'pass word 0123'");
    pg.query_ints("CREATE DATABASE tandem OWNER tandem");
    let settings = format!(
        "host={} user=tandem dbname=tandem",
        pg.socket_dir().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let out = serve_database(
        &settings,
        &["--database-password-file".as_ref(), wrong.as_ref()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("password authentication failed for user \"tandem\""),
        "{err}"
    );
    let right = dir.path().join("right");
    std::fs::write(&right, "pass word 0123\n").unwrap();
    let fixture = TestServer::start();
    let (mut child, addr) = spawn_listening(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
            .arg(fixture.repo())
            .args(["--database", &settings, "--database-password-file"])
            .arg(&right)
            .env("TANDEM_REPORT_TOKEN", "file-token-0123456789"),
    );
    let r = post_installed_report(&addr);
    let nodes: serde_json::Value = crate::util::client()
        .get(format!("http://{addr}/v1/nodes"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(nodes["total"], 1, "{nodes}");
}

/// `dist/tandem-server.service`'s `ExecStart` as arguments, with its variables expanded as
/// systemd would: `$TANDEM_SERVER_LISTEN` (split at spaces) from its `Environment=`,
/// `${STATE_DIRECTORY}` and `${CREDENTIALS_DIRECTORY}` to the given directories, and the
/// credential files its `LoadCredential=` lines name, each written with `token(name)`.
fn shipped_unit_args(state: &Path, creds: &Path, token: impl Fn(&str) -> String) -> Vec<String> {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/tandem-server.service");
    let unit = std::fs::read_to_string(unit_path)
        .unwrap()
        .replace("\\\n", " ");
    let setting = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
            .collect()
    };
    for credential in setting("LoadCredential=") {
        let name = credential.split(':').next().unwrap();
        std::fs::write(creds.join(name), token(name)).unwrap();
    }
    let listen = setting("Environment=\"TANDEM_SERVER_LISTEN=").concat();
    let exec = setting("ExecStart=").concat();
    exec.split_whitespace()
        .skip(1)
        .flat_map(|word| match word {
            "$TANDEM_SERVER_LISTEN" => listen.split_whitespace().map(str::to_owned).collect(),
            _ => vec![word
                .replace("${STATE_DIRECTORY}", &state.display().to_string())
                .replace("${CREDENTIALS_DIRECTORY}", &creds.display().to_string())],
        })
        .collect()
}

#[test]
fn the_shipped_unit_listens_on_loopback_and_guards_the_status() {
    let fixture = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token = |name: &str| format!("{name}-0123456789abcdef\n");
    let mut args = shipped_unit_args(dir.path(), dir.path(), token);
    let listen = args.iter().position(|a| a == "--listen").unwrap() + 1;
    assert_eq!(args[listen], "127.0.0.1:8080", "{args:?}");
    // Another test or program may hold 8080: the same host, any free port.
    args[listen] = "127.0.0.1:0".into();
    let repo = args.iter().position(|a| a == "/srv/tandem/repo").unwrap();
    args[repo] = fixture.repo().display().to_string();
    let (mut child, addr) = spawn_listening(
        Command::new(BIN)
            .args(&args)
            .env_remove("TANDEM_REPORT_TOKEN")
            .env_remove("TANDEM_STATUS_TOKEN")
            .env_remove("TANDEM_ADMIN_TOKEN"),
    );
    let page = |bearer: Option<&str>| {
        let request = crate::util::client().get(format!("http://{addr}/"));
        let request = match bearer {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        request.send().unwrap().status()
    };
    let (open, with_token) = (page(None), page(Some(token("status-token").trim())));
    let _ = child.kill();
    let _ = child.wait();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(open, StatusCode::UNAUTHORIZED);
    assert_eq!(with_token, StatusCode::OK);
}
