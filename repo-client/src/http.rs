//! The HTTP(S) client of the agent and of the signer's `mirror` and `log`: repository files
//! with size caps, conditional GETs, bundle byte ranges that resume after a cut or a stall
//! (docs/DESIGN.md §4, §9), and the agent's report POSTs. Proxies come from the environment
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, as reqwest reads them); extra CA certificates
//! from [`HttpOptions::ca_bundle`].
//!
//! The server is not trusted: every body is read with a cap (an endless body is cut off),
//! a resumed range must answer `206` with the exact `Content-Range` asked for, and `If-Range`
//! makes a server whose bundle changed since the first byte answer `200`, which is refused.
//! The bytes themselves are checked by the chunk hashes of the signed manifest.

use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use proto::chain;
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, ETAG, IF_NONE_MATCH, IF_RANGE, RANGE};
use reqwest::StatusCode;

use crate::error::{Error, Result};
use crate::{checked_relative, BundleBytes, Repository};

/// Network behaviour of a client.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// A read that makes no progress for this long is a stall: reconnect.
    pub read_timeout: Duration,
    /// How long a connection may take.
    pub connect_timeout: Duration,
    /// Reconnections allowed in a row without a byte of progress.
    pub max_retries: u32,
    /// First wait before reconnecting; doubles at each retry.
    pub retry_backoff: Duration,
    /// Extra CA certificates (PEM) trusted for `https://`.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Every request ends within this long plus the time its expected length takes at
    /// `min_throughput`: a server trickling bytes cannot hold the agent (slow retrieval).
    pub base_deadline: Duration,
    /// The slowest transfer accepted, in bytes per second: a bundle download slower than
    /// this (measured after `base_deadline`) reconnects.
    pub min_throughput: u64,
    /// The `User-Agent` of every request (the program and its version).
    pub user_agent: String,
}

impl HttpOptions {
    /// How long a request for at most `len` bytes may take, all told.
    pub fn deadline_for(&self, len: u64) -> Duration {
        self.base_deadline + Duration::from_secs(len / self.min_throughput.max(1))
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            read_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_retries: 5,
            retry_backoff: Duration::from_millis(500),
            ca_bundle: None,
            base_deadline: Duration::from_secs(30),
            min_throughput: 64 << 10,
            user_agent: concat!("tandem/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// The answer to a conditional GET.
pub enum Conditional {
    /// `304`: the file has the validator given.
    NotModified,
    /// The file, and its validator if the server gave one.
    Fresh {
        /// The body, within the cap.
        body: Vec<u8>,
        /// The `ETag`.
        etag: Option<String>,
    },
    /// `404`.
    Missing,
}

/// What the server did with a POSTed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// A `2xx`.
    Accepted,
    /// Refused for good (a `400`, `413` or `422`: retrying cannot change it), with the
    /// server's reason.
    Refused(String),
}

/// How a POST says who sends it.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// Nothing.
    None,
    /// `Authorization: Bearer <token>` (the fleet's shared report token).
    Bearer(&'a str),
    /// An `Authorization` value made over the request itself (the node's key signing the
    /// method, path and body, docs/DESIGN.md §7): the client serializes the body once and
    /// sends exactly the bytes signed.
    Signed(&'a dyn SignRequest),
}

/// What makes a [`Credential::Signed`] header: the agent's node key, behind a trait so this
/// crate holds no key and links no signature code.
pub trait SignRequest {
    /// The `Authorization` value for a `method` request to the URL path `path` with `body`;
    /// `Err(why)` when the key cannot sign.
    fn authorization(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::result::Result<String, String>;
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::None => "None",
            Credential::Bearer(_) => "Bearer(<redacted>)",
            Credential::Signed(_) => "Signed",
        })
    }
}

/// A status and the body that came with it ([`Http::post_answer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body, at most 4 KiB.
    pub body: Vec<u8>,
}

/// A repository served over HTTP(S).
#[derive(Debug, Clone)]
pub struct Http {
    client: Client,
    base: String,
    options: HttpOptions,
    /// Bytes received in bodies, for reports and tests.
    received: Arc<AtomicU64>,
}

impl Http {
    /// A client for the repository at `base` (`https://host/path/`).
    pub fn new(base: &str, options: HttpOptions) -> Result<Self> {
        let mut builder = Client::builder()
            .timeout(options.read_timeout)
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent.clone());
        if let Some(path) = &options.ca_bundle {
            for cert in read_ca_bundle(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| Error::Setup {
            path: options.ca_bundle.clone().unwrap_or_default(),
            message: format!("cannot set up HTTP: {}", chain(&e)),
        })?;
        Ok(Http {
            client,
            base: format!("{}/", base.trim_end_matches('/')),
            options,
            received: Arc::default(),
        })
    }

    /// The full URL of a repository path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    /// Body bytes received so far by this client and its clones.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// GET `path` with an `If-None-Match`; bodies over `max` bytes are refused.
    pub fn get_conditional(&self, path: &str, etag: Option<&str>, max: u64) -> Result<Conditional> {
        let url = self.url(path);
        let mut request = self
            .client
            .get(&url)
            .timeout(self.options.deadline_for(max));
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = request.send().map_err(network("GET", &url))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(Conditional::NotModified),
            StatusCode::NOT_FOUND => Ok(Conditional::Missing),
            status if status.is_success() => {
                let etag = header(&response, ETAG);
                let body = self.read_capped(response, max, &url)?;
                Ok(Conditional::Fresh { body, etag })
            }
            status => Err(http_status("GET", &url, status)),
        }
    }

    /// GET `path`; `None` when the server says 404.
    pub fn get(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        match self.get_conditional(path, None, max)? {
            Conditional::Fresh { body, .. } => Ok(Some(body)),
            Conditional::Missing | Conditional::NotModified => Ok(None),
        }
    }

    /// POSTs a JSON body with a credential. A 400, 413 or 422 refuses the body itself, for
    /// good, with the server's reason; other failures (a wrong token or a key not yet
    /// approved included, which the operator fixes) may be retried.
    pub fn post_json(
        &self,
        path: &str,
        credential: Credential<'_>,
        body: &impl serde::Serialize,
    ) -> Result<Posted> {
        let url = self.url(path);
        let response = self.send_post(&url, credential, &[], body)?;
        let status = response.status();
        if status.is_success() {
            return Ok(Posted::Accepted);
        }
        let refused_for_good = matches!(
            status,
            StatusCode::BAD_REQUEST
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNPROCESSABLE_ENTITY
        );
        if refused_for_good {
            let body = self
                .read_capped(response, MAX_ERROR_BODY, &url)
                .unwrap_or_default();
            return Ok(Posted::Refused(server_reason(status, &body)));
        }
        Err(http_status("POST", &url, status))
    }

    /// POST `body` as JSON with the extra `headers`, answering any status with its body
    /// (capped at 4 KiB): for protocols whose refusals carry meaning, such as FleetLock's
    /// `409` with `{"kind": …, "value": …}`. Only a network failure is an error.
    pub fn post_answer(
        &self,
        path: &str,
        credential: Credential<'_>,
        headers: &[(&str, &str)],
        body: &impl serde::Serialize,
    ) -> Result<Answer> {
        let url = self.url(path);
        let response = self.send_post(&url, credential, headers, body)?;
        let status = response.status().as_u16();
        let body = self.read_capped(response, MAX_ERROR_BODY, &url)?;
        Ok(Answer { status, body })
    }

    /// Sends `body` as JSON to `url` with the extra `headers` and the credential, within the
    /// base deadline; only a network failure (or a key that cannot sign) is an error.
    fn send_post(
        &self,
        url: &str,
        credential: Credential<'_>,
        headers: &[(&str, &str)],
        body: &impl serde::Serialize,
    ) -> Result<Response> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Network {
            method: "POST",
            url: url.to_owned(),
            reason: format!("cannot encode the body: {e}"),
        })?;
        let mut request = self
            .client
            .post(url)
            .timeout(self.options.base_deadline)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match credential {
            Credential::None => {}
            Credential::Bearer(token) => request = request.bearer_auth(token),
            Credential::Signed(signer) => {
                let path = reqwest::Url::parse(url)
                    .map_or_else(|_| url.to_owned(), |u| u.path().to_owned());
                let value = signer
                    .authorization("POST", &path, &bytes)
                    .map_err(|reason| Error::Network {
                        method: "POST",
                        url: url.to_owned(),
                        reason: format!("cannot sign the request: {reason}"),
                    })?;
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
        }
        request.body(bytes).send().map_err(network("POST", url))
    }

    fn read_capped(&self, response: Response, max: u64, url: &str) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        response
            .take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| Error::Network {
                method: "GET",
                url: url.to_owned(),
                reason: chain(&e),
            })?;
        self.received
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if body.len() as u64 > max {
            return Err(Error::Hostile {
                source_name: url.to_owned(),
                reason: format!("sent more than the {max} bytes allowed: cut off"),
            });
        }
        Ok(body)
    }

    /// Exactly the bytes `range` of `path`, or an error.
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let len = range.end - range.start;
        let mut reader = ResumingReader::new(self.clone(), path, range, None);
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| read_error(&self.url(path), e))?;
        Ok(bytes)
    }
}

impl Repository for Http {
    fn name(&self) -> String {
        self.url("")
    }

    fn fetch(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        self.get(checked_relative(path)?.to_str().unwrap_or(path), max)
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let url = self.url(checked_relative(path)?.to_str().unwrap_or(path));
        let response = self.client.get(&url).send().map_err(network("GET", &url))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => Ok(Some(Box::new(Counted {
                inner: response,
                received: Arc::clone(&self.received),
            }))),
            status => Err(http_status("GET", &url, status)),
        }
    }

    fn bundle(&self, path: &str, size: u64) -> Result<Box<dyn BundleBytes>> {
        checked_relative(path)?;
        Ok(Box::new(HttpBundle::new(self.clone(), path, size)))
    }
}

/// A body whose bytes count towards [`Http::bytes_received`].
struct Counted {
    inner: Response,
    received: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// GETs `url` once, all within `limit` (a workload's health endpoint, which the agent does
/// not read): `Ok` on a `2xx`, else what went wrong.
pub fn probe(url: &str, limit: Duration) -> std::result::Result<(), String> {
    let client = Client::builder()
        .timeout(limit)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// Largest error body read from a server, for its reason.
const MAX_ERROR_BODY: u64 = 4096;

fn network<'a>(method: &'static str, url: &'a str) -> impl FnOnce(reqwest::Error) -> Error + 'a {
    move |e| Error::Network {
        method,
        url: url.to_owned(),
        reason: with_hint(chain(&e)),
    }
}

/// A failed read of a body: the server stalled, cut or misbehaved.
/// A server file shorter than the signed size: not a network failure but the wrong file.
#[derive(Debug)]
struct ShortFile(String);

impl std::fmt::Display for ShortFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShortFile {}

fn read_error(url: &str, error: std::io::Error) -> Error {
    if let Some(short) = error.get_ref().and_then(|e| e.downcast_ref::<ShortFile>()) {
        return Error::Hostile {
            source_name: url.to_owned(),
            reason: short.to_string(),
        };
    }
    Error::Network {
        method: "GET",
        url: url.to_owned(),
        reason: chain(&error),
    }
}

/// What an operator can do about the common TLS set-up mistakes.
fn with_hint(reason: String) -> String {
    let hint = if reason.contains("CaUsedAsEndEntity") {
        " (the server presents a CA certificate as its own: issue a server certificate from \
         the CA and give the CA to ca_bundle; docs/updater.md shows how)"
    } else if reason.contains("UnknownIssuer") {
        " (the server's certificate is not issued by a trusted CA: set ca_bundle in [server])"
    } else {
        ""
    };
    format!("{reason}{hint}")
}

fn http_status(method: &'static str, url: &str, status: StatusCode) -> Error {
    Error::Network {
        method,
        url: url.to_owned(),
        reason: format!("the server answered {status}"),
    }
}

/// The reason in a server's error body: `{"error": "…"}` (tandem-server), else the text.
fn server_reason(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let reason = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned());
    proto::report::clean_reason(&format!("{status}: {reason}"))
}

fn header(response: &Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).map_err(|source| Error::CaBundleRead {
        path: path.to_owned(),
        source,
    })?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Setup {
        path: path.to_owned(),
        message: format!("not a PEM certificate bundle: {}", chain(&e)),
    })
}

/// A bundle served over HTTP; its size comes from the signed channel metadata, so a
/// server cannot make the agent read more.
pub struct HttpBundle {
    http: Http,
    path: String,
    size: u64,
}

impl HttpBundle {
    /// The `size` bytes of the bundle at `path` of the repository `http` serves.
    pub fn new(http: Http, path: &str, size: u64) -> Self {
        HttpBundle {
            http,
            path: path.to_owned(),
            size,
        }
    }
}

impl BundleBytes for HttpBundle {
    fn name(&self) -> String {
        self.http.url(&self.path)
    }

    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn read_exact(&self, range: Range<u64>) -> Result<Vec<u8>> {
        self.http.get_range(&self.path, range)
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn read_range(&self, range: Range<u64>) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(ResumingReader::new(
            self.http.clone(),
            &self.path,
            range,
            None,
        )))
    }
}

/// Reads a byte range over as many requests as cuts and stalls make necessary, each
/// resuming with `Range` where the last one stopped. Gives up after `max_retries`
/// reconnections in a row without progress, and when the whole range is not read within
/// its deadline ([`HttpOptions::deadline_for`]). A connection slower than `min_throughput`
/// counts as a failed one (slow retrieval).
struct ResumingReader {
    http: Http,
    path: String,
    position: u64,
    end: u64,
    /// The validator of the first answer: a later one must serve the same file.
    etag: Option<String>,
    response: Option<Response>,
    failures: u32,
    deadline: Instant,
    /// When the current connection started, and the bytes it brought.
    connected_at: Instant,
    connection_bytes: u64,
}

impl ResumingReader {
    fn new(http: Http, path: &str, range: Range<u64>, etag: Option<String>) -> Self {
        let now = Instant::now();
        ResumingReader {
            deadline: now + http.options.deadline_for(range.end - range.start),
            http,
            path: path.to_owned(),
            position: range.start,
            end: range.end,
            etag,
            response: None,
            failures: 0,
            connected_at: now,
            connection_bytes: 0,
        }
    }

    /// The current connection has had its grace time and still runs below the minimum.
    fn too_slow(&self) -> bool {
        let elapsed = self.connected_at.elapsed();
        elapsed > self.http.options.base_deadline
            && (self.connection_bytes as f64 / elapsed.as_secs_f64())
                < self.http.options.min_throughput as f64
    }

    fn past_deadline(&self) -> std::io::Result<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "not received in time (at least {} bytes/s expected)",
                        self.http.options.min_throughput
                    ),
                )
            })
    }

    fn connect(&mut self) -> std::io::Result<Response> {
        // No request timeout here: it would replace the client's per-read stall timeout;
        // the deadline is checked between reads and at every reconnection instead.
        self.past_deadline()?;
        let url = self.http.url(&self.path);
        let mut request = self
            .http
            .client
            .get(&url)
            .header(RANGE, format!("bytes={}-{}", self.position, self.end - 1));
        if let Some(etag) = &self.etag {
            request = request.header(IF_RANGE, etag);
        }
        let response = request.send().map_err(std::io::Error::other)?;
        let expected = format!("bytes {}-{}/", self.position, self.end - 1);
        let range_ok = response.status() == StatusCode::PARTIAL_CONTENT
            && header(&response, CONTENT_RANGE).is_some_and(|v| v.starts_with(&expected));
        let total = header(&response, CONTENT_RANGE)
            .and_then(|v| v.rsplit_once('/').and_then(|(_, t)| t.parse::<u64>().ok()));
        if let Some(total) = total.filter(|&t| !range_ok && t < self.end) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                ShortFile(format!(
                    "{url}: the server's file is truncated: {total} bytes, but the signed metadata names one of at least {}",
                    self.end
                )),
            ));
        }
        if !range_ok {
            // A permanent refusal: the server ignores ranges or the file changed under us.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{url}: asked for bytes {}-{}, the server answered {} {}",
                    self.position,
                    self.end - 1,
                    response.status(),
                    header(&response, CONTENT_RANGE).unwrap_or_default()
                ),
            ));
        }
        if self.etag.is_none() {
            self.etag = header(&response, ETAG);
        }
        self.connected_at = Instant::now();
        self.connection_bytes = 0;
        Ok(response)
    }

    fn retry_or_fail(&mut self, error: std::io::Error) -> std::io::Result<()> {
        self.response = None;
        self.failures += 1;
        self.past_deadline()?;
        if error.kind() == std::io::ErrorKind::InvalidData
            || self.failures > self.http.options.max_retries
        {
            return Err(error);
        }
        let wait = self.http.options.retry_backoff * 2u32.saturating_pow(self.failures - 1);
        tracing::warn!(%error, position = self.position, ?wait, "download interrupted: resuming");
        thread::sleep(wait);
        Ok(())
    }
}

impl Read for ResumingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = usize::try_from(self.end - self.position)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        loop {
            let response = match self.response.take() {
                Some(response) => response,
                None => match self.connect() {
                    Ok(response) => response,
                    Err(e) => {
                        self.retry_or_fail(e)?;
                        continue;
                    }
                },
            };
            let mut response = response;
            let Some(window) = buf.get_mut(..want) else {
                return Ok(0);
            };
            match response.read(window) {
                Ok(0) => {
                    let cut = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed early",
                    );
                    self.retry_or_fail(cut)?;
                }
                Ok(n) => {
                    self.position += n as u64;
                    self.connection_bytes += n as u64;
                    self.http.received.fetch_add(n as u64, Ordering::Relaxed);
                    if self.too_slow() {
                        let slow = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the connection is slower than the minimum throughput",
                        );
                        self.retry_or_fail(slow)?;
                    } else {
                        self.failures = 0;
                        self.response = Some(response);
                    }
                    return Ok(n);
                }
                Err(e) => self.retry_or_fail(e)?,
            }
        }
    }
}
