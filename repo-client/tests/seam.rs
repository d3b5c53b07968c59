//! The seam: a repository served over HTTP answers through [`Repository`] exactly as the same
//! files in a directory do — a file within its cap, a missing one, one over the cap refused,
//! a bundle's ranges, a file streamed whole — so the agent and the signer's tools can take
//! either. The server is a minimal HTTP/1.1 one on 127.0.0.1 port 0 serving a directory, with
//! `Range` answered `206`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use repo_client::{DirRepository, Error, Http, HttpOptions, Repository};

/// Serves the files under `root` until the process ends; the base URL.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            answer(&root, stream.unwrap());
        }
    });
    url
}

fn answer(root: &Path, mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let path = line
        .split(' ')
        .nth(1)
        .unwrap()
        .trim_start_matches('/')
        .to_owned();
    let mut range = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some(r) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (a, b) = r.trim().split_once('-').unwrap();
            range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
        }
    }
    let (head, body) = match (std::fs::read(root.join(&path)), range) {
        (Err(_), _) => ("404 Not Found".to_owned(), Vec::new()),
        (Ok(all), None) => ("200 OK".to_owned(), all),
        (Ok(all), Some((a, b))) => (
            format!(
                "206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}",
                all.len()
            ),
            all[a..=b].to_vec(),
        ),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {head}\r\nETag: \"1\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}

#[test]
fn a_directory_and_its_http_server_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("channels")).unwrap();
    std::fs::create_dir_all(dir.path().join("bundles")).unwrap();
    std::fs::write(dir.path().join("channels/stable.json"), [b'x'; 100]).unwrap();
    let payload: Vec<u8> = (0..=255).collect();
    std::fs::write(dir.path().join("bundles/os.tandem"), &payload).unwrap();
    let options = HttpOptions {
        read_timeout: Duration::from_secs(5),
        max_retries: 0,
        ..HttpOptions::default()
    };
    let http = Http::new(&serve(dir.path().to_owned()), options).unwrap();
    let local = DirRepository::new(dir.path());
    for repo in [&local as &dyn Repository, &http] {
        let name = repo.name();
        let file = repo.fetch("channels/stable.json", 100).unwrap();
        assert_eq!(file.map(|f| f.len()), Some(100), "{name}");
        assert!(
            repo.fetch("channels/beta.json", 100).unwrap().is_none(),
            "{name}"
        );
        let over = repo.fetch("channels/stable.json", 99).unwrap_err();
        assert!(
            matches!(over, Error::TooLarge { .. } | Error::Hostile { .. }),
            "{name}: {over}"
        );
        let bundle = repo.bundle("bundles/os.tandem", 256).unwrap();
        assert_eq!(bundle.size().unwrap(), 256, "{name}");
        assert_eq!(
            bundle.read_exact(10..14).unwrap(),
            [10, 11, 12, 13],
            "{name}"
        );
        let mut tail = Vec::new();
        bundle
            .read_range(250..256)
            .unwrap()
            .read_to_end(&mut tail)
            .unwrap();
        assert_eq!(tail, [250, 251, 252, 253, 254, 255], "{name}");
        let mut whole = Vec::new();
        repo.open("bundles/os.tandem")
            .unwrap()
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole, payload, "{name}");
        assert!(repo.bundle("../os.tandem", 256).is_err(), "{name}");
    }
    assert!(http.bytes_received() > 256, "the HTTP reads were counted");
}
