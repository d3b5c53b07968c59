//! Enrolling node keys (docs/DESIGN.md §7, "Node keys"; docs/fleet.md for the operator's
//! steps): a node asks with its key, an enrollment token or an operator approves it, an
//! operator may reject or revoke it. Every step is in the audit log.
//!
//! | route | method | auth | answers |
//! |---|---|---|---|
//! | `/v1/enroll` | POST | signed by the key enrolled (proof of possession) | 200 `{node_id, key_id, status: "approved"}`; 202 `… "pending"`; 400, 401, 403 (a used, expired or unknown token; a rejected or revoked key), 409 (the key is another node's; another key of the node waits), 415 |
//! | `/v1/enrollment-tokens` | POST | operate role | 201 `{"token", "expires_at"}` (shown once), body `{"expires_in_secs"?, "reason"?}` (default 1 day, at most 30) |
//! | `/v1/enrollments` | GET, HEAD | status token, if set | 200 `{"pending": [...], "enrolled": [...]}` |
//! | `/v1/enrollments/NODE/approve`, `…/reject` | POST | operate role | 200; 404 without a pending key (or not the `key_id` given), body `{"key_id"?, "reason"?}` |
//! | `/v1/nodes/NODE/revoke` | POST | operate role | 200; 404 without an approved key, body `{"reason"?}` |
//!
//! An enrollment with a valid one-time token is approved at once and takes the token; without
//! one it waits for an operator. A node already enrolled with another key is never re-keyed
//! by a token: the new key waits for an operator, whose approval revokes the old one.
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use proto::nodeauth::{self as wire, EnrollAnswer, EnrollRequest, KeyStatus};
use serde::Deserialize;

use crate::access::{self, Actor};
use crate::api::{self, ApiError};
use crate::app::App;
use crate::body::ResponseBody;
use crate::config::Role;
use crate::db::nodekeys::{Decision, NodeKey, BY_TOKEN};
use crate::nodeauth;
use crate::request::read_json_body;

/// Default life of an enrollment token (seconds): a day.
pub const DEFAULT_TOKEN_LIFE: u64 = 86_400;
/// Longest life of an enrollment token (seconds): 30 days.
pub const MAX_TOKEN_LIFE: u64 = 30 * 86_400;
/// The role the audit log gives a node enrolling itself.
const NODE_ROLE: &str = "node";

/// `POST /v1/enroll`.
pub async fn enroll(app: &App, req: Request<Incoming>) -> Result<Response<ResponseBody>, ApiError> {
    if !app.node_auth.takes_keys() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this server takes no node keys (--node-auth shared)",
        ));
    }
    let now = nodeauth::now();
    let value = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| wire::NodeAuth::is_scheme(v))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "sign the enrollment with the key it enrolls (Authorization: Tandem-Node …)",
                nodeauth::CHALLENGE,
            )
        })?;
    let claim = nodeauth::claim(value, now)?;
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let body = read_json_body(req, wire::MAX_ENROLL_BODY, app.limits.body_read_timeout).await?;
    let (asked, public) = EnrollRequest::parse(&body).map_err(ApiError::bad_request)?;
    let key_id = nodeauth::key_id(&public);
    if claim.key_id != key_id {
        return Err(ApiError::unauthorized(
            format!(
                "the enrollment is signed by key {}, not by the key it enrolls ({key_id})",
                claim.key_id
            ),
            nodeauth::CHALLENGE,
        ));
    }
    nodeauth::verify(&app.seen, &claim, &public, &method, &path, &body, now)?;
    let status = decide(app, &asked, &key_id, now).await?;
    let code = match status {
        KeyStatus::Approved => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok(api::json(
        code,
        &EnrollAnswer {
            node_id: asked.node_id,
            key_id,
            status,
        },
    ))
}

/// Where the enrollment of `key_id` for `asked.node_id` stands after this request.
async fn decide(
    app: &App,
    asked: &EnrollRequest,
    key_id: &str,
    now: u64,
) -> Result<KeyStatus, ApiError> {
    let node = asked.node_id.as_str();
    let failed = |e: crate::error::DbError| ApiError::internal("cannot store the enrollment", &e);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let known = app.db.node_key(key_id).await.map_err(failed)?;
    match &known {
        Some(k) if k.node_id != node => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "key {key_id} is enrolled for node {}, not {node}",
                    k.node_id
                ),
            ))
        }
        Some(k) if k.status == KeyStatus::Approved => return Ok(KeyStatus::Approved),
        Some(k) if k.status != KeyStatus::Pending => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "key {key_id} was {}: the node needs a new key, and an operator",
                    k.status.as_str()
                ),
            ))
        }
        _ => {}
    }
    let public = asked.public_key.as_str();
    let enrolled = app.db.node_enrolled(node).await.map_err(failed)?;
    if let (Some(token), false) = (&asked.token, enrolled) {
        let digest = access::digest(token);
        if !app
            .db
            .enroll_by_token(node, key_id, public, &digest, now)
            .await
            .map_err(failed)?
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the enrollment token is unknown, used or expired: ask an operator for a new one",
            ));
        }
        access::record(
            app,
            BY_TOKEN,
            NODE_ROLE,
            "enroll",
            &target(node, key_id),
            None,
        )
        .await?;
        tracing::info!(node, key_id, "node key enrolled by token");
        return Ok(KeyStatus::Approved);
    }
    if known.is_some() {
        return Ok(KeyStatus::Pending);
    }
    if !app
        .db
        .enroll_pending(node, key_id, public, now)
        .await
        .map_err(failed)?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "node {node} has another key waiting for approval (or too many enrollments \
                 wait): an operator must reject it first"
            ),
        ));
    }
    let why = enrolled.then(|| "the node is enrolled with another key".to_owned());
    access::record(
        app,
        node,
        NODE_ROLE,
        "request-enrollment",
        &target(node, key_id),
        why,
    )
    .await?;
    tracing::info!(node, key_id, "node key waits for approval");
    Ok(KeyStatus::Pending)
}

/// How the audit log names a node's key.
fn target(node: &str, key_id: &str) -> String {
    format!("{node} key {key_id}")
}

/// The body of an operator's request on node keys: what each route takes of it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorRequest {
    reason: Option<String>,
    key_id: Option<String>,
    expires_in_secs: Option<u64>,
}

/// Checks the operate role, then reads the optional body.
async fn operator(
    app: &App,
    req: Request<Incoming>,
    what: &str,
) -> Result<(Actor, OperatorRequest), ApiError> {
    let actor = access::require(app, req.headers(), Role::Operate, what).await?;
    if hyper::body::Body::is_end_stream(req.body()) {
        return Ok((actor, OperatorRequest::default()));
    }
    let body = read_json_body(req, app.limits.max_admin_body, app.limits.body_read_timeout).await?;
    let asked: OperatorRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
    if let Some(reason) = &asked.reason {
        api::check_reason(reason)?;
    }
    if asked.key_id.as_deref().is_some_and(|k| !wire::is_key_id(k)) {
        return Err(ApiError::bad_request(
            "key_id is not a key id (64 lowercase hex digits)",
        ));
    }
    Ok((actor, asked))
}

/// `POST /v1/enrollment-tokens` (operate).
pub async fn create_token(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let (actor, asked) = operator(app, req, "creating enrollment tokens").await?;
    let life = asked.expires_in_secs.unwrap_or(DEFAULT_TOKEN_LIFE);
    if !(60..=MAX_TOKEN_LIFE).contains(&life) {
        return Err(ApiError::bad_request(format!(
            "expires_in_secs must be 60 to {MAX_TOKEN_LIFE}"
        )));
    }
    let token =
        access::random_token().map_err(|e| ApiError::internal("cannot make a token", &e))?;
    let now = i64::try_from(nodeauth::now()).unwrap_or(i64::MAX);
    let expires_at = now.saturating_add(i64::try_from(life).unwrap_or(i64::MAX));
    app.db
        .create_enrollment_token(&access::digest(&token), &actor.name, now, expires_at)
        .await
        .map_err(|e| ApiError::internal("cannot store the enrollment token", &e))?;
    let what = format!("expires at {expires_at}");
    access::record_by(app, &actor, "create-enrollment-token", &what, asked.reason).await?;
    Ok(api::json(
        StatusCode::CREATED,
        &serde_json::json!({"token": token, "expires_at": expires_at}),
    ))
}

/// `POST /v1/enrollments/NODE/approve` or `…/reject` (operate).
pub async fn decide_enrollment(
    app: &App,
    node: &str,
    approve: bool,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    proto::check_node_id(node).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (decision, action) = if approve {
        (Decision::Approve, "approve-enrollment")
    } else {
        (Decision::Reject, "reject-enrollment")
    };
    let (actor, asked) = operator(app, req, action).await?;
    let now = i64::try_from(nodeauth::now()).unwrap_or(i64::MAX);
    let key = app
        .db
        .decide_enrollment(node, asked.key_id.as_deref(), decision, &actor.name, now)
        .await
        .map_err(|e| ApiError::internal("cannot decide the enrollment", &e))?
        .ok_or_else(|| ApiError::not_found(format!("node {node} has no such key waiting")))?;
    access::record_by(app, &actor, action, &target(node, &key), asked.reason).await?;
    let status = if approve {
        KeyStatus::Approved
    } else {
        KeyStatus::Rejected
    };
    Ok(api::json(
        StatusCode::OK,
        &EnrollAnswer {
            node_id: node.to_owned(),
            key_id: key,
            status,
        },
    ))
}

/// `POST /v1/nodes/NODE/revoke` (operate): the node's approved key is refused from now on.
pub async fn revoke(
    app: &App,
    node: &str,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    proto::check_node_id(node).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (actor, asked) = operator(app, req, "revoking node keys").await?;
    let now = i64::try_from(nodeauth::now()).unwrap_or(i64::MAX);
    let key = app
        .db
        .revoke_node_key(node, &actor.name, now)
        .await
        .map_err(|e| ApiError::internal("cannot revoke the key", &e))?
        .ok_or_else(|| ApiError::not_found(format!("node {node} has no enrolled key")))?;
    access::record_by(
        app,
        &actor,
        "revoke-node-key",
        &target(node, &key),
        asked.reason,
    )
    .await?;
    tracing::info!(node, key_id = key, "node key revoked");
    Ok(api::json(
        StatusCode::OK,
        &EnrollAnswer {
            node_id: node.to_owned(),
            key_id: key,
            status: KeyStatus::Revoked,
        },
    ))
}

/// `GET /v1/enrollments` (read, checked by the caller): the keys waiting and the keys
/// enrolled.
pub async fn list(app: &App) -> Result<Response<ResponseBody>, ApiError> {
    let keys = app
        .db
        .node_keys()
        .await
        .map_err(|e| ApiError::internal("cannot read the node keys", &e))?;
    let (pending, enrolled): (Vec<NodeKey>, Vec<NodeKey>) = keys
        .into_iter()
        .partition(|k| k.status == KeyStatus::Pending);
    Ok(api::json(
        StatusCode::OK,
        &serde_json::json!({"pending": pending, "enrolled": enrolled}),
    ))
}
