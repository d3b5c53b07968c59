//! Who may do what, and the record of what they did. A request's token names an [`Actor`]
//! with a [`Role`]: the `--admin-token-file` token is `admin-token` (admin), the
//! `--status-token-file` token is `status-token` (read), and tokens an admin creates
//! (`POST /v1/tokens`) carry their own name and role, kept in the store as a SHA-256 only.
//! Reads need a token only when a status token is configured (as before named tokens);
//! operating (pause, resume, freeing a lease) needs `operate`, managing tokens `admin`. Every
//! operate and admin action, and the failure budget's automatic pause, is appended to the
//! audit log: who, what, on what, when, why.
//!
//! | route | method | role | answers |
//! |---|---|---|---|
//! | `/v1/tokens` | GET | admin | 200 `{"tokens": [{name, role, created_at, created_by, revoked_at}]}` |
//! | `/v1/tokens` | POST | admin | 201 `{"name", "role", "token"}` (the token shown once); 400, 409 |
//! | `/v1/tokens/NAME/revoke` | POST | admin | 200; 404 |
//! | `/v1/audit?limit=` | GET | read | 200 `{"entries": [...]}`, newest first |
use std::io::Read;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::{self, ApiError};
use crate::app::App;
use crate::auth;
use crate::body::ResponseBody;
use crate::config::Role;
use crate::db::access::AuditEntry;
use crate::httpdate;
use crate::request::read_json_body;

/// The name the `--admin-token-file` token acts under.
pub const ADMIN_TOKEN_NAME: &str = "admin-token";
/// The name the `--status-token-file` token acts under.
pub const STATUS_TOKEN_NAME: &str = "status-token";
/// The actor of the failure budget's automatic pauses.
pub const BUDGET_ACTOR: &str = "failure-budget";
/// Audit entries `GET /v1/audit` returns unless asked for fewer.
const AUDIT_SHOWN: u32 = 100;

/// Who sent a request, by their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// The hex SHA-256 of a token's text: what the store keeps and looks up.
pub fn digest(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The actor a token names: the configured tokens, else a named token not revoked.
async fn actor_of(app: &App, token: &str) -> Result<Option<Actor>, ApiError> {
    let configured = [
        (&app.admin_token, ADMIN_TOKEN_NAME, Role::Admin),
        (&app.status_token, STATUS_TOKEN_NAME, Role::Read),
    ];
    for (expected, name, role) in configured {
        if expected.as_ref().is_some_and(|t| t.matches(token)) {
            return Ok(Some(Actor {
                name: name.to_owned(),
                role,
            }));
        }
    }
    let found = app
        .db
        .token_by_digest(&digest(token))
        .await
        .map_err(|e| ApiError::internal("cannot read the tokens", &e))?;
    Ok(found.and_then(|(name, role)| Role::parse(&role).map(|role| Actor { name, role })))
}

/// Checks a write's bearer token for `need` (`Operate` or `Admin`). Without an admin token
/// configured and no named token presented, the route is disabled (403), as before roles.
pub async fn require(
    app: &App,
    headers: &HeaderMap,
    need: Role,
    what: &str,
) -> Result<Actor, ApiError> {
    let disabled = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{what} is disabled: the server has no admin token configured"),
        )
    };
    let Some(token) = auth::bearer(headers) else {
        if app.admin_token.is_none() {
            return Err(disabled());
        }
        return Err(ApiError::unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'",
            auth::BEARER_CHALLENGE,
        ));
    };
    match actor_of(app, &token).await? {
        Some(actor) if actor.role >= need => Ok(actor),
        Some(actor) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {} has the role {}: {what} needs {}",
                actor.name,
                actor.role.as_str(),
                need.as_str()
            ),
        )),
        None if app.admin_token.is_none() => Err(disabled()),
        None => Err(ApiError::unauthorized(
            "invalid bearer token",
            auth::BEARER_CHALLENGE,
        )),
    }
}

/// Checks a read: open without a status token; else the status token or any token whose
/// role reads (every role does), as a bearer or the password of HTTP Basic.
pub async fn require_read(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = match auth::require_read(app.status_token.as_ref(), headers) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let Some(token) = auth::read_credential(headers) else {
        return Err(refused);
    };
    match actor_of(app, &token).await? {
        Some(_) => Ok(()),
        None => Err(refused),
    }
}

/// Appends an entry to the audit log; a failure is logged and fails the request (an action
/// the log does not show must not pass unnoticed, and it has happened: the answer says so).
pub async fn record(
    app: &App,
    actor: &str,
    role: &str,
    action: &str,
    target: &str,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        id: 0,
        at: httpdate::unix_seconds(SystemTime::now()),
        actor: actor.to_owned(),
        role: role.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        reason,
    };
    tracing::info!(actor, action, target, "audited action");
    app.db
        .audit(&entry)
        .await
        .map_err(|e| ApiError::internal(format!("{action} {target} done, but not audited"), &e))
}

/// [`record`] for an [`Actor`].
pub async fn record_by(
    app: &App,
    actor: &Actor,
    action: &str,
    target: &str,
    reason: Option<String>,
) -> Result<(), ApiError> {
    record(
        app,
        &actor.name,
        actor.role.as_str(),
        action,
        target,
        reason,
    )
    .await
}

/// The body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

/// `GET /v1/tokens` (admin).
pub async fn list_tokens(
    app: &App,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    require(app, headers, Role::Admin, "listing tokens").await?;
    let tokens = app
        .db
        .tokens()
        .await
        .map_err(|e| ApiError::internal("cannot read the tokens", &e))?;
    Ok(api::json(
        StatusCode::OK,
        &serde_json::json!({ "tokens": tokens }),
    ))
}

/// `POST /v1/tokens` (admin): a new token of 32 random bytes (hex), its text answered once.
pub async fn create_token(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let actor = require(app, req.headers(), Role::Admin, "creating tokens").await?;
    let body = read_json_body(req, app.limits.max_admin_body, app.limits.body_read_timeout).await?;
    let asked: NewToken = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid token request: {e}")))?;
    proto::check_name("token name", &asked.name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if [ADMIN_TOKEN_NAME, STATUS_TOKEN_NAME, BUDGET_ACTOR].contains(&asked.name.as_str()) {
        return Err(ApiError::bad_request(format!(
            "{} is the name of a configured token or of the server",
            asked.name
        )));
    }
    let role = Role::parse(&asked.role)
        .ok_or_else(|| ApiError::bad_request("role must be read, operate or admin"))?;
    let token = random_token().map_err(|e| ApiError::internal("cannot make a token", &e))?;
    let now = httpdate::unix_seconds(SystemTime::now());
    let created = app
        .db
        .create_token(
            &asked.name,
            role.as_str(),
            &digest(&token),
            &actor.name,
            now,
        )
        .await
        .map_err(|e| ApiError::internal("cannot store the token", &e))?;
    if !created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a token named {} exists (or existed)", asked.name),
        ));
    }
    let what = format!("{} ({})", asked.name, role.as_str());
    record_by(app, &actor, "create-token", &what, None).await?;
    Ok(api::json(
        StatusCode::CREATED,
        &serde_json::json!({"name": asked.name, "role": role, "token": token}),
    ))
}

/// `POST /v1/tokens/NAME/revoke` (admin).
pub async fn revoke_token(
    app: &App,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    let actor = require(app, headers, Role::Admin, "revoking tokens").await?;
    let now = httpdate::unix_seconds(SystemTime::now());
    let revoked = app
        .db
        .revoke_token(name, now)
        .await
        .map_err(|e| ApiError::internal("cannot revoke the token", &e))?;
    if !revoked {
        return Err(ApiError::not_found(format!(
            "no token named {name} to revoke"
        )));
    }
    record_by(app, &actor, "revoke-token", name, None).await?;
    Ok(api::json(
        StatusCode::OK,
        &serde_json::json!({"name": name, "revoked": true}),
    ))
}

/// `GET /v1/audit?limit=N` (read): the newest entries, newest first.
pub async fn audit_log(app: &App, query: &str) -> Result<Response<ResponseBody>, ApiError> {
    let limit = match query.split_once('=') {
        None if query.is_empty() => AUDIT_SHOWN,
        Some(("limit", n)) => n
            .parse()
            .ok()
            .filter(|n| (1..=crate::db::access::MAX_AUDIT_LISTED).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be 1 to 1000"))?,
        _ => return Err(ApiError::bad_request("the only parameter is limit")),
    };
    let entries = app
        .db
        .audit_log(limit)
        .await
        .map_err(|e| ApiError::internal("cannot read the audit log", &e))?;
    Ok(api::json(
        StatusCode::OK,
        &serde_json::json!({ "entries": entries }),
    ))
}

/// 32 bytes from the kernel's random source, as 64 hex characters.
pub fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
