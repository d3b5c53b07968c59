//! Building API responses: JSON bodies, and [`ApiError`], the one way a `/v1` request fails —
//! a status code and a human message, sent as `{"error": "..."}`.
use std::time::Duration;

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::body::ResponseBody;

/// A refused or failed API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status to answer with.
    pub status: StatusCode,
    /// Explanation for the client (never contains secrets).
    pub message: String,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<&'static str>,
    /// The `Retry-After` of a 429, in whole seconds.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            challenge: None,
            retry_after: None,
        }
    }

    /// 429 Too Many Requests, to be tried again after `wait` (rounded up to whole seconds).
    pub fn too_many(message: impl Into<String>, wait: Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    /// 401 Unauthorized with its `WWW-Authenticate` challenge.
    pub fn unauthorized(message: impl Into<String>, challenge: &'static str) -> Self {
        ApiError {
            challenge: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500, logged; the client sees only `message`.
    pub fn internal(message: impl Into<String>, cause: &dyn std::fmt::Display) -> Self {
        let message = message.into();
        tracing::error!(%cause, "{message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The JSON response for this error.
    pub fn into_response(self) -> Response<ResponseBody> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
        }
        let mut resp = json(
            self.status,
            &Body {
                error: &self.message,
            },
        );
        if let Some(challenge) = self.challenge {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A JSON response; `Cache-Control: no-store` since API answers change all the time.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut resp = Response::new(ResponseBody::bytes(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A short plain-text response (static-file errors).
pub fn text(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::bytes(format!("{message}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An operator's reason (a pause's, a lease release's, an enrollment decision's) is shown on
/// the status page like a report's: the same length and character rules.
pub fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.chars().count() > proto::report::MAX_REASON {
        return Err(ApiError::bad_request(format!(
            "reason is longer than {} characters",
            proto::report::MAX_REASON
        )));
    }
    if reason != proto::report::clean_reason(reason) {
        return Err(ApiError::bad_request(
            "reason contains a control or bidi-override character",
        ));
    }
    Ok(())
}
