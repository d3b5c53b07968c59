//! Hostile and careless clients: traversal, long URLs and headers, slow and idle clients,
//! many concurrent pollers, the connection cap.
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use reqwest::header::{ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;

use crate::util::{client, TestServer};

#[test]
fn traversal_attempts_are_refused() {
    let s = TestServer::start();
    for target in [
        "/../outside/secret.json",
        "/channels/../../outside/secret.json",
        "/channels/%2e%2e/%2e%2e/outside/secret.json",
        "/channels/%2E%2E/%2E%2E/outside/secret.json",
        "/channels/..%2F..%2Foutside%2Fsecret.json",
        "/channels%2F..%2F..%2Foutside%2Fsecret.json",
        "/channels/%2e%2e%2f%2e%2e%2foutside/secret.json",
        "/channels/..\\..\\outside\\secret.json",
        "/channels/%5c..%5csecret.json",
        "/channels/secret%00.json",
        "//outside/secret.json",
        "/%2Foutside/secret.json",
        "/channels/.stable.json.tmp",
        "http://t/../outside/secret.json",
    ] {
        let (status, resp) = s.raw_get_status(target);
        assert!((400..500).contains(&status), "{target} answered {status}");
        assert!(!resp.contains("TOP-SECRET"), "{target} leaked the file");
    }
}

#[test]
fn absolute_paths_are_not_files_of_the_host() {
    let s = TestServer::start();
    let secret = s.root.path().join("outside/secret.json");
    for target in [
        secret.to_str().unwrap(),
        "/etc/passwd",
        "/outside/secret.json",
    ] {
        let (status, resp) = s.raw_get_status(target);
        assert!(
            (400..500).contains(&status),
            "{target}: looked up inside the repository only"
        );
        assert!(
            !resp.contains("TOP-SECRET") && !resp.contains("root:"),
            "{target} leaked"
        );
    }
}

#[test]
fn symlink_out_of_the_repository_is_refused() {
    let s = TestServer::start();
    let r = client().get(s.url("/channels/escape.json")).send().unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r.text().unwrap().contains("TOP-SECRET"));
}

#[test]
fn over_long_url_and_headers_are_refused() {
    let s = TestServer::start();
    let long = format!("/bundles/{}.tandem", "a".repeat(1100));
    assert_eq!(s.raw_get_status(&long).0, 414);
    assert_eq!(
        s.raw_get_status(&format!("/v1/channels/{}/status", "a".repeat(1100)))
            .0,
        414
    );
    let big_header = format!(
        "GET /root.json HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(32 * 1024)
    );
    let resp = s.raw(big_header.as_bytes());
    assert_eq!(crate::util::status_of(&resp), 431, "{resp:.200}");
}

/// Reads until EOF or error; how long that took.
fn time_to_close(mut sock: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

/// Whether the server still holds `sock` open: nothing to read and no end of stream yet.
fn still_open(sock: &TcpStream) -> bool {
    sock.set_nonblocking(true).unwrap();
    let open = matches!(sock.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    sock.set_nonblocking(false).unwrap();
    open
}

#[test]
fn slow_client_does_not_block_others_and_is_dropped() {
    let s = TestServer::start_with(|c| c.limits.header_read_timeout = Duration::from_secs(3));
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET /channels/stable.json HTTP/1.1\r\nHost: t\r\nX-Half: ")
        .unwrap();
    let idle = TcpStream::connect(s.addr).unwrap();
    for _ in 0..5 {
        let r = client().get(s.url("/channels/stable.json")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Proven by the stalled connection being still open, not by a clock that a loaded
    // machine can stretch.
    assert!(
        still_open(&slow),
        "others were served while the stalled client held its connection"
    );
    let slow_closed = time_to_close(slow, Duration::from_secs(15));
    assert!(
        slow_closed < Duration::from_secs(8),
        "stalled client dropped after ~3 s: {slow_closed:?}"
    );
    let idle_closed = time_to_close(idle, Duration::from_secs(15));
    assert!(
        idle_closed < Duration::from_secs(8),
        "idle connection dropped: {idle_closed:?}"
    );
}

#[test]
fn slow_body_is_cut_off() {
    let s = TestServer::start_with(|c| c.limits.body_read_timeout = Duration::from_millis(500));
    let mut sock = TcpStream::connect(s.addr).unwrap();
    let head = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"node_id\":",
        crate::util::REPORT_TOKEN
    );
    sock.write_all(head.as_bytes()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let _ = sock.read_to_string(&mut out);
    assert_eq!(crate::util::status_of(&out), 408, "{out}");
    assert_eq!(s.stored_reports(), 0);
}

#[test]
fn two_hundred_concurrent_pollers() {
    const POLLERS: usize = 200;
    const ROUNDS: usize = 5;
    let s = TestServer::start();
    let url = s.url("/channels/stable.json");
    let etag = client().get(&url).send().unwrap().headers()[ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    let barrier = Arc::new(Barrier::new(POLLERS));
    let workers: Vec<_> = (0..POLLERS)
        .map(|_| {
            let (url, etag, barrier) = (url.clone(), etag.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let c = client();
                barrier.wait();
                (0..ROUNDS)
                    .map(|_| {
                        c.get(&url)
                            .header(IF_NONE_MATCH, &etag)
                            .send()
                            .map(|r| r.status())
                    })
                    .filter(|r| !matches!(r, Ok(StatusCode::NOT_MODIFIED)))
                    .count()
            })
        })
        .collect();
    let failures: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(failures, 0, "every conditional GET answered 304");
}

#[test]
fn connection_cap_queues_extra_clients() {
    let s = TestServer::start_with(|c| {
        c.limits.max_connections = 1;
        c.limits.header_read_timeout = Duration::from_secs(1);
    });
    let hog = TcpStream::connect(s.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let r = client().get(s.url("/root.json")).send().unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        waited >= Duration::from_millis(700),
        "served only once the idle hog was dropped: {waited:?}"
    );
    drop(hog);
}
