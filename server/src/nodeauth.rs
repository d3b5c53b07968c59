//! Who a node request (a report, a reboot lease) comes from, and its body (docs/DESIGN.md
//! §7, "Node keys"). A signed request (`Authorization: Tandem-Node key=…, ts=…, nonce=…, sig=…`,
//! [`proto::nodeauth`]) is checked in this order: the header's form, its timestamp within
//! ±[`MAX_SKEW_SECS`] of the server's clock, the key approved (unknown: 401; pending,
//! rejected or revoked: 403), then the body read, the Ed25519 signature over the method, the
//! API path, the timestamp, the nonce and the body's SHA-256 verified strictly, and the signature not
//! seen before within the window ([`crate::replay`]). The request is then the key's node's,
//! and only its: the handlers refuse a body naming another node (403,
//! [`Caller::check_acts_for`]). Without a signature, the fleet's shared report token (or
//! nothing, for anonymous leases) is taken as before, unless `--node-auth keys`.
use std::time::SystemTime;

use ed25519_dalek::{Signature, VerifyingKey};
use hyper::body::{Bytes, Incoming};
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};
use proto::nodeauth::{self, NodeAuth, MAX_SKEW_SECS};
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::app::App;
use crate::auth::{self, Caller};
use crate::httpdate;
use crate::replay::{Refused, Seen};
use crate::request::{read_body, read_json_body};

/// The challenge of a refused signed request.
pub const CHALLENGE: &str = nodeauth::SCHEME;

/// A node request's caller and body.
#[derive(Debug)]
pub struct NodeRequest {
    /// Who sent it.
    pub caller: Caller,
    /// Its body, read within the limits.
    pub body: Bytes,
}

/// How a node request's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `Content-Type: application/json` required (reports, enrollments).
    Json,
    /// Any content type (FleetLock clients send what they like).
    Any,
}

/// Reads a node request: its credential first (a signature's key is looked up before the
/// body is read), then its body of at most `max` bytes. `what` names the request in
/// refusals; `anonymous` lets a request without credentials through as [`Caller::Anonymous`].
pub async fn read(
    app: &App,
    req: Request<Incoming>,
    what: &str,
    anonymous: bool,
    max: usize,
    kind: BodyKind,
) -> Result<NodeRequest, ApiError> {
    let present = req.headers().contains_key(AUTHORIZATION);
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match header {
        Some(value) if NodeAuth::is_scheme(&value) => {
            if !app.node_auth.takes_keys() {
                return Err(unauthorized(
                    "this server takes the fleet's report token, not node keys (--node-auth shared)",
                ));
            }
            signed(app, req, &value, max, kind).await
        }
        None if anonymous && !present => {
            let body = body(app, req, max, kind).await?;
            Ok(NodeRequest {
                caller: Caller::Anonymous,
                body,
            })
        }
        _ if !app.node_auth.takes_shared() => Err(unauthorized(&format!(
            "{what} needs the node's own key: send a Tandem-Node signature (--node-auth keys)"
        ))),
        _ => {
            let caller = auth::node_caller(app.report_token.as_ref(), false, req.headers(), what)?;
            let body = body(app, req, max, kind).await?;
            Ok(NodeRequest { caller, body })
        }
    }
}

/// A signed request by an approved key.
async fn signed(
    app: &App,
    req: Request<Incoming>,
    value: &str,
    max: usize,
    kind: BodyKind,
) -> Result<NodeRequest, ApiError> {
    let now = now();
    let claim = claim(value, now)?;
    let key = app
        .db
        .node_key(&claim.key_id)
        .await
        .map_err(|e| ApiError::internal("cannot read the node keys", &e))?
        .ok_or_else(|| {
            unauthorized(&format!(
                "key {} is not enrolled: enroll it first (POST {})",
                claim.key_id,
                nodeauth::ENROLL_PATH
            ))
        })?;
    if key.status != proto::nodeauth::KeyStatus::Approved {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "key {} of node {} is {}: it speaks for no node",
                key.key_id,
                key.node_id,
                key.status.as_str()
            ),
        ));
    }
    let public = nodeauth::public_key_bytes(&key.public_key)
        .ok_or_else(|| ApiError::internal("a stored node key is corrupt", &key.key_id))?;
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let body = body(app, req, max, kind).await?;
    verify(&app.seen, &claim, &public, &method, &path, &body, now)?;
    Ok(NodeRequest {
        caller: Caller::Node {
            node_id: key.node_id,
            key_id: key.key_id,
        },
        body,
    })
}

/// The parsed `Tandem-Node` credential of `value`, its timestamp within the window of `now`.
pub fn claim(value: &str, now: u64) -> Result<NodeAuth, ApiError> {
    let claim = NodeAuth::parse(value).map_err(|e| unauthorized(&e.to_string()))?;
    if claim.timestamp.abs_diff(now) > MAX_SKEW_SECS {
        return Err(unauthorized(&format!(
            "the request was signed at {} but the server's time is {now}: more than \
             {MAX_SKEW_SECS} s apart (a stale or replayed request, or the node's clock is wrong)",
            claim.timestamp
        )));
    }
    Ok(claim)
}

/// Verifies `claim`'s signature by `public` over this request, then remembers it: a
/// signature seen before within the window is a replay (401).
pub fn verify(
    seen: &Seen,
    claim: &NodeAuth,
    public: &[u8; 32],
    method: &str,
    path: &str,
    body: &[u8],
    now: u64,
) -> Result<(), ApiError> {
    let signed_path = nodeauth::signed_path(path)
        .ok_or_else(|| ApiError::bad_request("only API requests are signed"))?;
    let digest: [u8; 32] = Sha256::digest(body).into();
    let message = nodeauth::signed_message(&nodeauth::Signed {
        method,
        path: signed_path,
        timestamp: claim.timestamp,
        nonce: &claim.nonce,
        body_sha256: &digest,
    });
    let key = VerifyingKey::from_bytes(public)
        .map_err(|_| unauthorized("the node key is not a valid Ed25519 key"))?;
    key.verify_strict(&message, &Signature::from_bytes(&claim.signature))
        .map_err(|_| {
            unauthorized(&format!(
                "the signature of key {} does not verify over this request",
                claim.key_id
            ))
        })?;
    let oldest = now.saturating_sub(MAX_SKEW_SECS);
    match seen.remember(&claim.key_id, claim.timestamp, &claim.signature, oldest) {
        Ok(()) => Ok(()),
        Err(Refused::Replayed) => Err(unauthorized(
            "this signed request was received before: a replay is refused",
        )),
        Err(Refused::Full) => Err(ApiError::too_many(
            format!("key {} sends too many requests: retry later", claim.key_id),
            std::time::Duration::from_secs(MAX_SKEW_SECS),
        )),
    }
}

/// The id of a raw public key: the hex SHA-256 of its 32 bytes.
pub fn key_id(public: &[u8; 32]) -> String {
    nodeauth::hex(&Sha256::digest(public))
}

/// The server's clock, Unix seconds.
pub fn now() -> u64 {
    u64::try_from(httpdate::unix_seconds(SystemTime::now())).unwrap_or(0)
}

async fn body(
    app: &App,
    req: Request<Incoming>,
    max: usize,
    kind: BodyKind,
) -> Result<Bytes, ApiError> {
    let timeout = app.limits.body_read_timeout;
    match kind {
        BodyKind::Json => read_json_body(req, max, timeout).await,
        BodyKind::Any => read_body(req, max, timeout).await,
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::unauthorized(message, CHALLENGE)
}
