//! The real `tandem-server`, serving a node's repository on the host's loopback (port 0), as
//! the machine's update server: it takes the node's reports with the fleet's report token,
//! and the test reads the channel status and `/v1/nodes` from it. Killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::env::Env;

pub struct Server {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Serves `repo`, with its database and token files in `dir`; `report_token` is the one
    /// the node's image carries.
    pub fn start(env: &Env, dir: &Path, repo: &Path, report_token: &str) -> Server {
        let report = dir.join("report.token");
        let admin = dir.join("admin.token");
        std::fs::write(&report, format!("{report_token}\n")).expect("report token");
        std::fs::write(&admin, "admin-token-0123456789abcdef\n").expect("admin token");
        let mut child = env
            .bin("tandem-server")
            .arg("serve")
            .arg("--repo")
            .arg(repo)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("server-data"))
            .arg("--report-token-file")
            .arg(&report)
            .arg("--admin-token-file")
            .arg(&admin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tandem-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let (tx, rx) = mpsc::channel();
        // Keeps draining stderr, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listening_port(&line) {
                    let _ = tx.send(port);
                }
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok(port) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!(
                "tandem-server did not say where it listens within 20 s:\n{}",
                log.lock().expect("log")
            );
        };
        Server { child, port, log }
    }

    /// `GET path` as JSON (the status endpoints are open: no status token is set).
    pub fn get(&self, path: &str) -> Value {
        let body = self.get_text(path);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `GET path`: the body of a 200 answer.
    pub fn get_text(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("answer");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "GET {path}: {head}\n{body}\nserver log:\n{}",
            self.log()
        );
        body.to_string()
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of "listening on http://127.0.0.1:PORT".
fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.rsplit_once(':')?.1.parse().ok()
}
