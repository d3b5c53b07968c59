//! The fleet over HTTP (docs/DESIGN.md §4, §7, §9): the real `tandem-server` on loopback with the
//! agent in-process, and a scripted test server (plain std TCP on 127.0.0.1) that cuts,
//! stalls, lies and never ends, to prove resume and the refusals of a hostile server.
//!
//! Helpers here; the tests are in the submodules.

mod attacks;
mod delta;
mod loopback;
/// The server tests' throwaway PostgreSQL cluster, shared rather than copied.
#[path = "../../../server/tests/pg.rs"]
#[allow(dead_code)] // the server's tests use all of it, these only some
mod pg;
mod reads;
mod reboots;
mod reports;
mod resume;
mod rollout;
mod trust;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use partitions::SlotId::{self, A};
use repo_client::HttpOptions;
use signer::publish::{publish, PublishOptions};
use signer::Limits;
use tandem_tests::{sha256_hex, Backend, Release, World};
use time::OffsetDateTime;
use updater::daemon::{Daemon, Poll};
use updater::{Agent, InstallOutcome};

pub const CHANNEL: &str = "stable";

/// Network options that keep the tests fast: short waits, few retries.
pub fn fast_http() -> HttpOptions {
    HttpOptions {
        read_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        max_retries: 6,
        retry_backoff: Duration::from_millis(5),
        ..HttpOptions::default()
    }
}

/// A node running v1 from slot A, and its vendor's repository directory.
pub struct Fleet {
    pub w: World,
    pub v1: Release,
    pub repo: PathBuf,
}

impl Fleet {
    pub fn new() -> Fleet {
        let w = World::new(Backend::Gpt);
        let v1 = w.release("1.0.0", 1, 1);
        w.provision(A, &v1);
        let repo = w.path("repo");
        Fleet { w, v1, repo }
    }

    /// The node polls `url` on `stable` as `node_id`, with the report token in `token`.
    pub fn point_at(&mut self, url: &str, node_id: &str, token: Option<&Path>) {
        let token = token.map_or_else(String::new, |t| {
            format!("report_token_file = \"{}\"\n", t.display())
        });
        self.w.extra_config = format!(
            "node_id = \"{node_id}\"\n[server]\nurl = \"{url}\"\nchannel = \"{CHANNEL}\"\n\
             poll_interval = \"1s\"\n{token}"
        );
    }

    /// A fresh agent (a new process) that booted `booted`, with fast network options.
    pub fn agent(&self, booted: SlotId) -> Agent {
        let mut agent = self.w.agent_for(booted);
        agent.http_options = fast_http();
        agent
    }

    /// Publishes `release` on `stable` to `percent` of the fleet.
    pub fn publish(&self, release: &Release, percent: u8) -> u64 {
        let now = OffsetDateTime::now_utc();
        publish(&PublishOptions {
            repo: &self.repo,
            channel: CHANNEL,
            bundle: &release.bundle,
            keys: &self.w.keys.signers(),
            expires: now + time::Duration::days(30),
            percent,
            root: Some(&self.w.root_path),
            now,
            limits: &Limits::default(),
        })
        .unwrap()
        .channel_version
    }

    /// The repository path of `release`'s bundle.
    pub fn bundle_path(release: &Release) -> String {
        format!(
            "bundles/{}-{}.tandem",
            tandem_tests::PRODUCT,
            release.version
        )
    }

    /// Hashes of both slots (to prove what a refusal did not write).
    pub fn slot_hashes(&self) -> [String; 2] {
        [self.w.slot_hash(SlotId::A), self.w.slot_hash(SlotId::B)]
    }

    /// Whether slot `slot` holds `release`'s complete image (by SHA-256).
    pub fn holds(&self, slot: SlotId, release: &Release) -> bool {
        let bytes = self.w.slot_bytes(slot);
        sha256_hex(&bytes[..release.image.len()]) == release.image_sha256
    }
}

/// The daemon of `agent`, with the agent's network options.
pub fn daemon(agent: &Agent) -> Daemon<'_> {
    let server = agent.config().server.clone().expect("a [server] section");
    Daemon::new(agent, server).unwrap()
}

/// One poll of `agent`'s daemon, which must install: what the install did.
pub fn poll_installs(agent: &Agent) -> InstallOutcome {
    match daemon(agent).poll_once().unwrap() {
        Poll::Installed(outcome) => *outcome,
        other => panic!("expected an install, got: {other}"),
    }
}

/// A minimal HTTP/1.0 client: `(status, body)`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let kind = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/json\r\n".to_string()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}{kind}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    (status, body.to_owned())
}

/// The real `tandem-server` binary, serving a repository on 127.0.0.1 (killed on drop).
pub struct TandemServer {
    child: Child,
    pub addr: SocketAddr,
    pub url: String,
    pub admin_token: String,
    pub report_token_file: PathBuf,
    log: Arc<Mutex<String>>,
}

impl TandemServer {
    /// The binary next to the test executable (`cargo build --workspace --bins`).
    pub fn binary() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap();
        let bin = dir.join("tandem-server");
        assert!(
            bin.is_file(),
            "{} is missing: build it first with `cargo build --workspace --bins` \
             (scripts/test.sh does)",
            bin.display()
        );
        bin
    }

    /// Serves `repo` with report and admin tokens and the database under `work`.
    pub fn start(work: &Path, repo: &Path) -> TandemServer {
        Self::start_with(work, repo, &[])
    }

    /// [`TandemServer::start`] with more arguments (`--tls-cert`, `--tls-key`): the URL is
    /// the one the server says it listens on, `http://` or `https://`.
    pub fn start_with(work: &Path, repo: &Path, args: &[&Path]) -> TandemServer {
        let report_token_file = work.join("report.token");
        let admin_token_file = work.join("admin.token");
        if !report_token_file.exists() {
            std::fs::write(&report_token_file, "report-token-0123456789abcdef\n").unwrap();
            std::fs::write(&admin_token_file, "admin-token-0123456789abcdef\n").unwrap();
        }
        std::fs::create_dir_all(repo).unwrap();
        let mut child = Command::new(Self::binary())
            .arg("serve")
            .arg("--repo")
            .arg(repo)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--report-token-file")
            .arg(&report_token_file)
            .arg("--admin-token-file")
            .arg(&admin_token_file)
            .args(data_dir(work, args))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        // Keeps draining stderr so the server never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let said = line.find("listening on ").map(|at| &line[at..]);
                if let Some((scheme, rest)) =
                    said.and_then(|s| s["listening on ".len()..].split_once("://"))
                {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send((scheme.to_owned(), addr));
                }
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        let (scheme, addr) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(said) => said,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tandem-server did not say `listening on` within 20 s; its log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let addr: SocketAddr = addr.parse().unwrap();
        TandemServer {
            child,
            addr,
            url: format!("{scheme}://{addr}/"),
            admin_token: std::fs::read_to_string(&admin_token_file)
                .unwrap()
                .trim()
                .to_owned(),
            report_token_file,
            log,
        }
    }

    /// `GET /v1/channels/NAME/status` as JSON.
    pub fn status(&self, channel: &str) -> serde_json::Value {
        let (code, body) = http(
            self.addr,
            "GET",
            &format!("/v1/channels/{channel}/status"),
            None,
            "",
        );
        assert_eq!(code, 200, "status: {body}\nserver log:\n{}", self.log());
        serde_json::from_str(&body).unwrap()
    }

    /// `POST /v1/channels/NAME/{pause,resume}` with the admin token.
    pub fn admin(&self, channel: &str, action: &str) {
        let (code, body) = http(
            self.addr,
            "POST",
            &format!("/v1/channels/{channel}/{action}"),
            Some(&self.admin_token),
            "",
        );
        assert_eq!(code, 200, "{action}: {body}");
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// `--data WORK/server-data`, unless `args` name a PostgreSQL `--database` instead.
fn data_dir(work: &Path, args: &[&Path]) -> Vec<PathBuf> {
    if args.contains(&Path::new("--database")) {
        return Vec::new();
    }
    vec!["--data".into(), work.join("server-data")]
}

impl Drop for TandemServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the scripted server does beyond serving the repository's files.
#[derive(Default)]
pub struct Script {
    /// Served instead of the file at this repository path.
    pub overrides: HashMap<String, Vec<u8>>,
    /// Served for a path on its Nth request of a method (1-based) only, before `overrides`.
    pub nth: HashMap<(String, usize), Vec<u8>>,
    /// Paths whose bytes from a file offset on are sent slowly, a byte at a time.
    pub trickle: HashMap<String, Trickle>,
    /// Bundle body bytes (cumulated over all responses) at which the connection is cut.
    pub cut_at: Vec<u64>,
    /// … at which the server stops sending, without closing, for [`STALL`].
    pub stall_at: Vec<u64>,
    /// At the first cut, the bundle is replaced by these bytes (same path, new ETag).
    pub swap_at_cut: Option<Vec<u8>>,
    /// Paths whose body never ends (after the real bytes of the range, junk forever).
    pub endless: HashSet<String>,
    /// Bundle body bytes sent, over all responses.
    pub bundle_sent: u64,
    /// Body bytes sent for endless paths.
    pub endless_sent: u64,
    pub cuts: u32,
    pub stalls: u32,
    /// Request lines with their `Range` and `If-Range`, in order.
    pub log: Vec<String>,
    /// Each bundle request waits this long before it is answered (a distant server).
    pub delay: Duration,
    /// Bundle requests being answered now, and the most there ever were at once.
    pub in_flight: usize,
    pub most_in_flight: usize,
}

/// A slow-retrieval attack on one path: bytes at file offsets from `from` on are sent one
/// at a time, `every` apart.
#[derive(Clone, Copy)]
pub struct Trickle {
    pub from: u64,
    pub every: Duration,
}

impl Script {
    /// How many `method` requests for `path` the server received.
    pub fn requests(&self, method: &str, path: &str) -> usize {
        let prefix = format!("{method} {path} ");
        self.log.iter().filter(|l| l.starts_with(&prefix)).count()
    }
}

/// Counts a bundle request in flight while alive.
struct InFlight<'a>(&'a Mutex<Script>);

impl<'a> InFlight<'a> {
    fn enter(script: &'a Mutex<Script>) -> InFlight<'a> {
        let mut s = script.lock().unwrap();
        s.in_flight += 1;
        s.most_in_flight = s.most_in_flight.max(s.in_flight);
        InFlight(script)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.in_flight -= 1;
        }
    }
}

/// How long a stall holds the connection (the client must give up first).
pub const STALL: Duration = Duration::from_secs(20);
/// An endless body stops here at the latest (so a broken client fails, not hangs).
const ENDLESS_BOUND: u64 = 256 << 20;

/// A scripted HTTP/1.1 server of a repository directory on 127.0.0.1: `ETag`,
/// `If-None-Match`, single `Range`, `If-Range`; every response closes its connection.
pub struct RepoServer {
    pub addr: SocketAddr,
    pub url: String,
    pub script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl RepoServer {
    pub fn start(repo: &Path) -> RepoServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (repo, shared, halt) = (repo.to_owned(), script.clone(), stop.clone());
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (repo, script, halt) = (repo.clone(), shared.clone(), halt.clone());
                thread::spawn(move || {
                    let _ = serve(stream, &repo, &script, &halt);
                });
            }
        });
        RepoServer {
            addr,
            url: format!("http://{addr}/"),
            script,
            stop,
            accept: Some(accept),
        }
    }

    pub fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }
}

impl Drop for RepoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", &sha256_hex(bytes)[..16])
}

fn serve(
    mut stream: TcpStream,
    repo: &Path,
    script: &Mutex<Script>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // The request head (bodies of POSTs are not read: nothing here takes them).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 << 10 || stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or("/"));
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let path = target.trim_start_matches('/').to_owned();
    let content = {
        let mut s = script.lock().unwrap();
        s.log.push(format!(
            "{method} {path} range={:?} if-range={:?}",
            headers.get("range"),
            headers.get("if-range")
        ));
        let nth = (path.clone(), s.requests(method, &path));
        match s.nth.get(&nth).or_else(|| s.overrides.get(&path)) {
            Some(bytes) => Some(bytes.clone()),
            None if method == "GET" && !path.contains("..") => std::fs::read(repo.join(&path)).ok(),
            None => None,
        }
    };
    // Held to the end of the answer.
    let in_flight = path
        .starts_with("bundles/")
        .then(|| InFlight::enter(script));
    if in_flight.is_some() {
        let delay = script.lock().unwrap().delay;
        thread::sleep(delay);
    }
    let Some(content) = content else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let etag = etag_of(&content);
    if headers.get("if-none-match") == Some(&etag) {
        return write!(
            stream,
            "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
        );
    }
    let len = content.len() as u64;
    let if_range_ok = headers.get("if-range").map_or(true, |v| *v == etag);
    let range = headers
        .get("range")
        .filter(|_| if_range_ok)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| {
            let start: u64 = a.parse().unwrap_or(0);
            let end = b.parse::<u64>().map_or(len, |e| (e + 1).min(len));
            start..end
        });
    let endless = script.lock().unwrap().endless.contains(&path);
    let (status, body_range) = match range {
        Some(r) if r.start >= len || r.start >= r.end => {
            return write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(r) => (
            format!(
                "206 Partial Content\r\nContent-Range: bytes {}-{}/{len}",
                r.start,
                r.end - 1
            ),
            r,
        ),
        None => ("200 OK".to_string(), 0..len),
    };
    let length = if endless {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body_range.end - body_range.start)
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nETag: {etag}\r\n{length}Connection: close\r\n\r\n"
    )?;
    let start = usize::try_from(body_range.start).unwrap();
    let end = usize::try_from(body_range.end).unwrap();
    let body = &content[start..end];
    let trickle = script.lock().unwrap().trickle.get(&path).copied();
    if let Some(trickle) = trickle {
        return send_trickled(&mut stream, body, body_range.start, trickle, stop);
    }
    let is_bundle = path.starts_with("bundles/");
    for piece in body.chunks(8 << 10) {
        if !is_bundle {
            stream.write_all(piece)?;
            continue;
        }
        // Cut or stall where the script says, counting bundle bytes over all responses.
        let mut piece = piece;
        loop {
            let mut s = script.lock().unwrap();
            let next_cut = s.cut_at.first().copied();
            let next_stall = s.stall_at.first().copied();
            let event = [next_cut, next_stall].into_iter().flatten().min();
            let room = event.map_or(u64::MAX, |e| e.saturating_sub(s.bundle_sent));
            let n = usize::try_from(room.min(piece.len() as u64)).unwrap();
            stream.write_all(&piece[..n])?;
            s.bundle_sent += n as u64;
            if event != Some(s.bundle_sent) {
                piece = &piece[n..];
                if piece.is_empty() {
                    break;
                }
                continue;
            }
            if next_cut == Some(s.bundle_sent) {
                s.cut_at.remove(0);
                s.cuts += 1;
                if let Some(swapped) = s.swap_at_cut.take() {
                    s.overrides.insert(path.clone(), swapped);
                }
                drop(s);
                stream.flush()?;
                return stream.shutdown(std::net::Shutdown::Both);
            }
            s.stall_at.remove(0);
            s.stalls += 1;
            drop(s);
            stream.flush()?;
            for _ in 0..STALL.as_millis() / 20 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            return stream.shutdown(std::net::Shutdown::Both);
        }
    }
    if endless {
        let junk = vec![b' '; 8 << 10];
        loop {
            let mut s = script.lock().unwrap();
            if stop.load(Ordering::SeqCst) || s.endless_sent > ENDLESS_BOUND {
                break;
            }
            s.endless_sent += junk.len() as u64;
            drop(s);
            stream.write_all(&junk)?;
        }
    }
    stream.flush()
}

/// Sends `body` (at file offset `offset`), slowly from `trickle.from` on, until the client
/// hangs up or the server stops.
fn send_trickled(
    stream: &mut TcpStream,
    body: &[u8],
    offset: u64,
    trickle: Trickle,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let fast = usize::try_from(trickle.from.saturating_sub(offset))
        .unwrap()
        .min(body.len());
    stream.write_all(&body[..fast])?;
    for byte in &body[fast..] {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        thread::sleep(trickle.every);
        stream.write_all(std::slice::from_ref(byte))?;
    }
    stream.flush()
}
