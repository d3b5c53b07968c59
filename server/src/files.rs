//! Static repository files: resolution inside the repository, validators (`ETag`,
//! `Last-Modified`), conditional requests (304), single `Range` requests (206/416), `HEAD`.
//!
//! The strong `ETag` is derived from the inode, size and modification time (to the nanosecond)
//! of the file ([`crate::known::Validators`]), so a channel file replaced by rename (a new
//! inode) is served, with a new `ETag`, on the very next request.
//!
//! A conditional request (the poll of every node) for a file opened before is answered from a
//! fresh `statx` of its path while that still leads to the same inode ([`crate::known`]): a
//! 304 needs no open, no `fstat`, no close. Everything else opens the file beneath the
//! repository (`openat2`, [`crate::repo`]).
//!
//! Trade-off, deliberate: `statx`, `openat2` and `fstat` run inline on the async worker
//! (microseconds on a local file system); file *contents* go out with `sendfile` or are read on
//! the blocking pool ([`crate::body::FileBody`]).
use std::fs::{File, Metadata};
use std::io;
use std::path::Path;
use std::sync::Arc;

use hyper::header::{
    HeaderValue, ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};
use hyper::{HeaderMap, Method, Response, StatusCode};

use crate::api;
use crate::body::{FileBody, ResponseBody};
use crate::httpdate;
use crate::known::{Validators, Version};
use crate::range::{self, RangeAnswer};
use crate::repo::{OpenError, Repo};

/// Serves `rel` (already checked by [`crate::path::repo_relative`]) from the repository.
pub fn serve(
    repo: &Repo,
    rel: &Path,
    method: &Method,
    headers: &HeaderMap,
) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = api::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    if let Some(v) = known_unchanged(repo, rel, headers) {
        return with_validators(empty(StatusCode::NOT_MODIFIED), &v, rel);
    }
    let (file, meta) = match open_inside(repo, rel) {
        Ok(found) => found,
        Err(resp) => return *resp,
    };
    let v = repo.known().opened(rel, Version::of(&meta));
    if not_modified(headers, &v) {
        return with_validators(empty(StatusCode::NOT_MODIFIED), &v, rel);
    }
    let len = meta.len();
    let answer = match headers.get(RANGE).and_then(|r| r.to_str().ok()) {
        Some(r) if if_range_holds(headers, &v) => range::parse(r, len),
        _ => RangeAnswer::Full,
    };
    let head = method == Method::HEAD;
    let resp = match answer {
        RangeAnswer::Full => content(file, 0, len, head, StatusCode::OK),
        RangeAnswer::Partial(r) => {
            let (start, end) = (*r.start(), *r.end());
            let mut resp = content(
                file,
                start,
                end - start + 1,
                head,
                StatusCode::PARTIAL_CONTENT,
            );
            set(
                &mut resp,
                CONTENT_RANGE,
                &format!("bytes {start}-{end}/{len}"),
            );
            resp
        }
        RangeAnswer::Unsatisfiable => {
            let mut resp = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            set(&mut resp, CONTENT_RANGE, &format!("bytes */{len}"));
            resp
        }
    };
    with_validators(resp, &v, rel)
}

/// The validators of `rel` when the request is conditional, the file was opened before and
/// still is the same inode, and its current version matches the condition (so: 304).
fn known_unchanged(repo: &Repo, rel: &Path, headers: &HeaderMap) -> Option<Arc<Validators>> {
    if !headers.contains_key(IF_NONE_MATCH) && !headers.contains_key(IF_MODIFIED_SINCE) {
        return None;
    }
    let v = repo.known().get(rel, repo.stat(rel)?)?;
    not_modified(headers, &v).then_some(v)
}

/// Opens `rel` beneath the repository; failures are ready-made responses: 404 missing or not
/// a regular file, 403 resolving outside the repository.
fn open_inside(repo: &Repo, rel: &Path) -> Result<(File, Metadata), Box<Response<ResponseBody>>> {
    repo.open_file(rel).map_err(|e| {
        Box::new(match e {
            OpenError::NotFound => api::text(StatusCode::NOT_FOUND, "not found"),
            OpenError::Outside => {
                tracing::warn!(path = %rel.display(), "refused: resolves outside the repository");
                api::text(
                    StatusCode::FORBIDDEN,
                    "path resolves outside the repository",
                )
            }
            OpenError::Io(e) => io_failure(&e),
        })
    })
}

fn io_failure(e: &io::Error) -> Response<ResponseBody> {
    if e.kind() == io::ErrorKind::PermissionDenied {
        return api::text(StatusCode::FORBIDDEN, "forbidden");
    }
    tracing::error!(error = %e, "reading repository file");
    api::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file")
}

/// RFC 9110 §13.1.2/§13.1.3: `If-None-Match` (weak comparison) wins over `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, v: &Validators) -> bool {
    if let Some(inm) = headers.get(IF_NONE_MATCH) {
        let Ok(list) = inm.to_str() else {
            return false;
        };
        return list
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == v.etag);
    }
    headers
        .get(IF_MODIFIED_SINCE)
        .and_then(|h| h.to_str().ok())
        .and_then(httpdate::parse)
        .is_some_and(|since| v.modified <= since)
}

/// RFC 9110 §13.1.5: a `Range` counts only if `If-Range` (when present) names this version —
/// by strong `ETag`, or by exactly our `Last-Modified` date.
fn if_range_holds(headers: &HeaderMap, v: &Validators) -> bool {
    match headers.get(IF_RANGE).and_then(|h| h.to_str().ok()) {
        None => true,
        Some(cond) => {
            let cond = cond.trim();
            cond == v.etag || cond == v.last_modified
        }
    }
}

fn content(
    file: File,
    offset: u64,
    len: u64,
    head: bool,
    status: StatusCode,
) -> Response<ResponseBody> {
    let body = if head || len == 0 {
        ResponseBody::Empty
    } else {
        ResponseBody::File(FileBody::new(file, offset, len))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::Empty);
    *resp.status_mut() = status;
    resp
}

/// Headers every file response carries, 304s included.
fn with_validators(
    mut resp: Response<ResponseBody>,
    v: &Validators,
    rel: &Path,
) -> Response<ResponseBody> {
    let h = resp.headers_mut();
    h.insert(ETAG, v.etag_header.clone());
    h.insert(LAST_MODIFIED, v.last_modified_header.clone());
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (ctype, cache) = kind_of(rel);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

/// Content type and cache policy by extension: metadata must be revalidated on every use.
fn kind_of(rel: &Path) -> (&'static str, &'static str) {
    match rel.extension().and_then(|e| e.to_str()) {
        Some("json") | Some("pause") => ("application/json", "no-cache"),
        _ => ("application/octet-stream", "no-cache"),
    }
}

fn set(resp: &mut Response<ResponseBody>, name: hyper::header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}
