//! Reboot leases over HTTP (docs/DESIGN.md §7): the FleetLock protocol Zincati speaks —
//! `POST /v1/pre-reboot` takes a lease in the caller's group, `POST /v1/steady-state` gives
//! it back — plus what operators read and do: `GET /v1/leases` (the leases held, with their
//! age and expiry, the nodes waiting for one, the groups' slots, the recent lease log) and `POST
//! /v1/leases/GROUP/NODE/release` (free a stuck lease, operate role).
//!
//! A FleetLock request must carry `fleet-lock-protocol: true` (else 400) and a body
//! `{"client_params": {"id": NODE, "group": GROUP}}` of any content type (Zincati's and
//! curl's alike); every refusal is a non-2xx status with `{"kind": …, "value": …}`
//! ([`proto::fleetlock::ErrorBody`]). A request signed by a node's key may take and release
//! only that node's lease (403 otherwise, [`crate::nodeauth`]). The lock is recursive: the holder asking again gets
//! 200. Releasing a lease not held is 200 too.
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use proto::fleetlock::{self, kind, ErrorBody};
use serde::Serialize;

use crate::api::{self, ApiError};
use crate::app::App;
use crate::body::ResponseBody;
use crate::db::leases::{Grant, Lease, LeaseEvent, Release, Waiter};
use crate::httpdate;
use crate::nodeauth::{self, BodyKind};

/// Lease log lines `GET /v1/leases` shows.
const LOG_SHOWN: u32 = 50;

/// What a FleetLock request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `pre-reboot`.
    Lease,
    /// `steady-state`.
    Release,
}

/// The answer of a FleetLock request that succeeded.
#[derive(Serialize)]
struct Granted<'a> {
    group: &'a str,
    id: &'a str,
    /// Whether the node holds a lease after this request.
    held: bool,
    /// When the lease held expires unless given back (Unix seconds); absent after a release.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// Answers `POST /v1/pre-reboot` or `POST /v1/steady-state`.
pub async fn handle(app: &App, ask: Ask, req: Request<Incoming>) -> Response<ResponseBody> {
    match serve(app, ask, req).await {
        Ok(resp) => resp,
        Err(e) => refusal(e),
    }
}

async fn serve(
    app: &App,
    ask: Ask,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Refusal> {
    if req.method() != hyper::Method::POST {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            kind::BAD_REQUEST,
            "use POST on this route",
        ));
    }
    let header_ok = req
        .headers()
        .get(fleetlock::HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(fleetlock::HEADER_VALUE));
    if !header_ok {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            kind::MISSING_HEADER,
            "send the header 'fleet-lock-protocol: true'",
        ));
    }
    let sent = nodeauth::read(
        app,
        req,
        "taking a reboot lease",
        app.leases.anonymous,
        fleetlock::MAX_BODY,
        BodyKind::Any,
    )
    .await?;
    let params = fleetlock::Request::parse(&sent.body)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, kind::BAD_REQUEST, e.to_string()))?
        .client_params;
    sent.caller.check_acts_for(&params.id)?;
    let now = httpdate::unix_seconds(SystemTime::now());
    let expires_at = match ask {
        Ask::Lease => Some(lease(app, &params.group, &params.id, now).await?),
        Ask::Release => {
            app.db
                .release_lease(&params.group, &params.id, Release::ByNode, now)
                .await
                .map_err(|e| db_failure(&e))?;
            None
        }
    };
    Ok(api::json(
        StatusCode::OK,
        &Granted {
            group: &params.group,
            id: &params.id,
            held: expires_at.is_some(),
            expires_at,
        },
    ))
}

/// Takes (or confirms) `node`'s lease, answering when it expires; a full group is 409
/// `failed_lock`.
async fn lease(app: &App, group: &str, node: &str, now: i64) -> Result<i64, Refusal> {
    let slots = app.leases.slots(group);
    let ttl = i64::try_from(app.leases.ttl.as_secs()).unwrap_or(i64::MAX);
    let grant = app
        .db
        .acquire_lease(group, node, slots, ttl, now)
        .await
        .map_err(|e| db_failure(&e))?;
    match grant {
        Grant::Held { new, expires_at } => {
            if new {
                tracing::info!(group, node, "reboot lease granted");
            }
            Ok(expires_at)
        }
        Grant::Busy { holders } => Err(Refusal::new(
            StatusCode::CONFLICT,
            kind::LOCK_BUSY,
            format!(
                "group {group} has {slots} reboot slot(s), all held (by {}): try again later",
                holders.join(", ")
            ),
        )),
    }
}

fn db_failure(e: &crate::error::DbError) -> Refusal {
    tracing::error!(error = %e, "reboot lease store failed");
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        kind::SERVER_ERROR,
        "the lease store failed",
    )
}

/// A refused FleetLock request: its status and [`ErrorBody`].
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    body: ErrorBody,
    challenge: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, kind: &str, value: impl Into<String>) -> Refusal {
        Refusal {
            status,
            body: ErrorBody {
                kind: kind.to_owned(),
                value: value.into(),
            },
            challenge: None,
        }
    }
}

impl From<ApiError> for Refusal {
    /// An authentication or body error, in FleetLock's shape.
    fn from(e: ApiError) -> Refusal {
        let kind = match e.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => kind::UNAUTHORIZED,
            s if s.is_server_error() => kind::SERVER_ERROR,
            _ => kind::BAD_REQUEST,
        };
        Refusal {
            challenge: e.challenge,
            ..Refusal::new(e.status, kind, e.message)
        }
    }
}

fn refusal(r: Refusal) -> Response<ResponseBody> {
    let mut resp = api::json(r.status, &r.body);
    if let Some(challenge) = r.challenge {
        resp.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static(challenge),
        );
    }
    resp
}

/// `GET /v1/leases`: what the dashboard shows of the reboot leases.
#[derive(Debug, Serialize)]
pub struct LeaseStatus {
    /// When this was assembled (Unix seconds).
    pub now: i64,
    /// Slots of a group not configured by name.
    pub default_slots: u32,
    /// Groups configured by name, with their slots.
    pub groups: std::collections::BTreeMap<String, u32>,
    /// Seconds a lease lasts unless released.
    pub ttl_secs: u64,
    /// Leases held, with their age; `expired` ones are reclaimed by the group's next request
    /// or the hourly sweep.
    pub leases: Vec<HeldLease>,
    /// Nodes refused a lease (their group full) that have not had one since, longest
    /// waiting first.
    pub waiting: Vec<Waiter>,
    /// The newest lease events, oldest first.
    pub log: Vec<LeaseEvent>,
}

/// A lease with what the page shows of it.
#[derive(Debug, Serialize)]
pub struct HeldLease {
    /// The lease.
    #[serde(flatten)]
    pub lease: Lease,
    /// Its group's slots.
    pub slots: u32,
    /// Seconds since it was granted.
    pub age_secs: i64,
    /// Whether it is past its expiry.
    pub expired: bool,
}

/// Builds [`LeaseStatus`].
pub async fn status(app: &App) -> Result<LeaseStatus, ApiError> {
    let failed = |e: crate::error::DbError| ApiError::internal("cannot read the leases", &e);
    let now = httpdate::unix_seconds(SystemTime::now());
    let leases = app.db.leases().await.map_err(failed)?;
    let log = app.db.lease_log(LOG_SHOWN).await.map_err(failed)?;
    let waiting = app.db.lease_waiters().await.map_err(failed)?;
    Ok(LeaseStatus {
        now,
        default_slots: app.leases.default_slots,
        groups: app.leases.groups.clone(),
        ttl_secs: app.leases.ttl.as_secs(),
        leases: leases
            .into_iter()
            .map(|lease| HeldLease {
                slots: app.leases.slots(&lease.group),
                age_secs: now.saturating_sub(lease.acquired_at),
                expired: lease.expires_at <= now,
                lease,
            })
            .collect(),
        waiting,
        log,
    })
}

/// `POST /v1/leases/GROUP/NODE/release` (role checked and audited by the caller): frees the lease,
/// logged as `freed`; 404 when the node holds none there.
pub async fn free(app: &App, group: &str, node: &str) -> Result<Response<ResponseBody>, ApiError> {
    proto::check_name("group", group).map_err(|e| ApiError::bad_request(e.to_string()))?;
    proto::check_node_id(node).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let now = httpdate::unix_seconds(SystemTime::now());
    let freed = app
        .db
        .release_lease(group, node, Release::ByOperator, now)
        .await
        .map_err(|e| ApiError::internal("cannot release the lease", &e))?;
    if !freed {
        return Err(ApiError::not_found(format!(
            "node {node} holds no lease in group {group}"
        )));
    }
    tracing::info!(group, node, "reboot lease freed by an operator");
    Ok(api::json(
        StatusCode::OK,
        &serde_json::json!({"group": group, "node_id": node, "freed": true}),
    ))
}
