//! A repository over HTTP(S) for `mirror` and `log`: a minimal blocking client (the binary's
//! alone, CONTRIBUTING.md §1). Bodies are read through the library's caps (metadata at the
//! metadata limit, a bundle at the size its channel states, ranges at their length); a server
//! that stalls for longer than the read timeout fails the read.

use std::io::{self, Read};
use std::ops::Range;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::RANGE;
use reqwest::StatusCode;
use signer::repo::RepoReader;
use signer::Error;

/// How long a connection may take, and how long a read may stall.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A repository at an `http://` or `https://` base URL.
pub struct HttpReader {
    base: String,
    client: Client,
}

impl HttpReader {
    /// A client for the repository at `base`.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let client = Client::builder()
            .timeout(STALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tandem-signer/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpReader {
            base: format!("{}/", base.trim_end_matches('/')),
            client,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str, range: Option<&Range<u64>>) -> Result<Response, Error> {
        let url = self.url(path);
        let mut request = self.client.get(&url);
        if let Some(r) = range {
            request = request.header(RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        request
            .send()
            .map_err(|e| Error::io(format!("GET {url}"))(io::Error::other(e)))
    }
}

/// The error of a response that is not the one asked for.
fn status_error(url: &str, status: StatusCode) -> Error {
    Error::io(format!("GET {url}"))(io::Error::other(format!("HTTP {status}")))
}

impl RepoReader for HttpReader {
    fn name(&self) -> String {
        self.base.clone()
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + '_>>, Error> {
        let response = self.get(path, None)?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => Ok(Some(Box::new(response))),
            other => Err(status_error(&self.url(path), other)),
        }
    }

    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>, Error> {
        let url = self.url(path);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let response = self.get(path, Some(&range))?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Err(status_error(&url, response.status()));
        }
        let len = range.end - range.start;
        let mut bytes = Vec::new();
        response
            .take(len)
            .read_to_end(&mut bytes)
            .map_err(Error::io(format!("GET {url}")))?;
        if bytes.len() as u64 != len {
            return Err(Error::io(format!("GET {url}"))(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} bytes of the {len} asked for", bytes.len()),
            )));
        }
        Ok(bytes)
    }

    fn channel_names(&self) -> Result<Option<Vec<String>>, Error> {
        Ok(None)
    }

    fn bundle_files(&self) -> Result<Option<Vec<(String, u64)>>, Error> {
        Ok(None)
    }
}
