//! Request routing and the API handlers. A request's path is parsed once, into a
//! [`Route`]; every request passes the path-length check first; then `/v1/…` goes to the API,
//! `/` to the status page, `/metrics` to the metrics, everything else to the static files;
//! every answer is counted under the route's label ([`crate::metrics`]).
//! Every refused API request is answered `{"error": "<why>"}` (see [`crate::api`]).
//!
//! | route | method | auth | answers |
//! |---|---|---|---|
//! | `/` | GET, HEAD | status token, if set | HTML fleet dashboard ([`crate::page`]); 401 |
//! | `/dashboard.js`, `/dashboard.css`, `/dashboard.svg` | GET, HEAD | – | the dashboard's script, style and icon (no data) |
//! | `/v1/channels` | GET, HEAD | status token, if set | 200 every channel's status JSON; 401 |
//! | `/v1/nodes?q=&limit=&offset=` | GET, HEAD | status token, if set | 200 one page of nodes' latest reports, each with its last install's transfer; 400, 401 |
//! | `/v1/reports` | POST | report token, or a node's key (signed, [`crate::nodeauth`]) | 201 `{"id"}`; 200 `{"id"}` of the first copy for a report id the node already sent; 400, 401, 403, 408, 413, 415; 429 with `Retry-After` beyond the node's rate |
//! | `/v1/channels/NAME/status` | GET, HEAD | status token, if set | 200 status JSON; 400, 401, 404 |
//! | `/metrics` | GET, HEAD | status token, if set | OpenMetrics text ([`crate::metrics`]); 401 |
//! | `/v1/channels/NAME/pause` | POST | operate role (admin token, or a named token) | 200 pause JSON; 400, 401, 403, 404 |
//! | `/v1/channels/NAME/resume` | POST | operate role | 200 `{"channel","paused":false}` |
//! | `/v1/pre-reboot`, `/v1/steady-state` | POST | report token, a node's key, or none where anonymous leases are allowed | FleetLock ([`crate::fleetlock`]): 200; 400, 401, 403, 409, 413; errors `{"kind","value"}` |
//! | `/v1/leases` | GET, HEAD | status token, if set | 200 leases held, groups, lease log |
//! | `/v1/leases/GROUP/NODE/release` | POST | operate role | 200; 400, 401, 403, 404 |
//! | `/v1/tokens`, `/v1/tokens/NAME/revoke`, `/v1/audit` | see [`crate::access`] | | |
//! | `/v1/enroll`, `/v1/enrollment-tokens`, `/v1/enrollments…`, `/v1/nodes/NODE/revoke` | see [`crate::nodekeys`] | | |
//! | anything else | GET, HEAD | – | repository file (see [`crate::files`]) |
use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use crate::api::{self, ApiError};
use crate::app::App;
use crate::body::ResponseBody;
use crate::config::Role;
use crate::fleetlock::{self, Ask};
use crate::metrics::Metered;
use crate::nodeauth::{self, BodyKind};
use crate::path::{self, PathRejection};
use crate::request::read_json_body;
use crate::route::{Api, ChannelAction, Route};
use crate::{access, budget, channels, db, files, httpdate, nodekeys, page, status};
use proto::{Pause, Report};

/// The hyper service function: parses the route once, answers it, then counts the answer and
/// its body's bytes under the route's label.
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Metered<ResponseBody>>, Infallible> {
    let raw = req.uri().path().to_owned();
    let route = Route::of(&raw);
    let resp = route_request(&app, &raw, route, req).await;
    app.metrics.request(route, resp.status().as_u16());
    Ok(resp.map(|body| app.metrics.metered(route, body)))
}

async fn route_request(
    app: &App,
    raw: &str,
    route: Route<'_>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if raw.len() > app.limits.max_path_len {
        return api::text(StatusCode::URI_TOO_LONG, "request path too long");
    }
    match route {
        Route::Dashboard => page_route(app, &req).await,
        Route::Asset(asset) => {
            if req.method() == Method::GET || req.method() == Method::HEAD {
                page::asset(asset)
            } else {
                method_not_allowed("GET, HEAD")
            }
        }
        Route::Metrics => metrics_route(app, &req)
            .await
            .unwrap_or_else(ApiError::into_response),
        Route::Api(api) => api_route(app, api, req)
            .await
            .unwrap_or_else(ApiError::into_response),
        Route::File(_) => static_route(app, raw, req.method(), req.headers()),
    }
}

fn static_route(
    app: &App,
    raw: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response<ResponseBody> {
    match path::repo_relative(raw, app.limits.max_path_len) {
        Ok(rel) => files::serve(&app.repo, &rel, method, headers),
        Err(PathRejection::TooLong) => api::text(StatusCode::URI_TOO_LONG, "request path too long"),
        Err(PathRejection::NotServed) => api::text(StatusCode::NOT_FOUND, "not found"),
        Err(PathRejection::Forbidden(why)) => {
            tracing::info!(path = raw, why, "refused request path");
            api::text(StatusCode::BAD_REQUEST, &format!("refused path: {why}"))
        }
    }
}

async fn page_route(app: &App, req: &Request<Incoming>) -> Response<ResponseBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    if let Err(e) = access::require_read(app, req.headers()).await {
        return e.into_response();
    }
    match page::render(app).await {
        Ok(html) => page::response(html),
        Err(e) => e.into_response(),
    }
}

/// `GET /metrics`: the pause gauges are refreshed from the repository, then all is encoded.
async fn metrics_route(
    app: &App,
    req: &Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(method_not_allowed("GET, HEAD"));
    }
    access::require_read(app, req.headers()).await?;
    let repo = app.repo.path().to_owned();
    let states = tokio::task::spawn_blocking(move || channels::pause_states(&repo))
        .await
        .map_err(|e| ApiError::internal("metrics worker failed", &e))?
        .map_err(|e| ApiError::internal("cannot read the channels' pause files", &e))?;
    let mut nodes = Vec::with_capacity(states.len());
    for (channel, _) in &states {
        let summary = app
            .db
            .summary(channel.clone(), None)
            .await
            .map_err(|e| ApiError::internal("cannot read the reports", &e))?;
        nodes.push((channel.clone(), summary.by_version));
    }
    app.metrics.set_paused(states);
    app.metrics.set_nodes(nodes);
    let text = app
        .metrics
        .encode()
        .map_err(|e| ApiError::internal("cannot encode the metrics", &e))?;
    let mut resp = Response::new(ResponseBody::bytes(text));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn api_route(
    app: &App,
    api: Api<'_>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    match api {
        Api::Reports => {
            only(&req, Method::POST)?;
            post_report(app, req).await
        }
        Api::Channels => {
            if let Some(refused) = read_only(app, &req).await? {
                return Ok(refused);
            }
            Ok(api::json(StatusCode::OK, &status::fleet(app).await?))
        }
        Api::Nodes => {
            if let Some(refused) = read_only(app, &req).await? {
                return Ok(refused);
            }
            let query = node_query(req.uri().query().unwrap_or(""))?;
            let page = app
                .db
                .nodes(query)
                .await
                .map_err(|e| ApiError::internal("could not read the nodes", &e))?;
            Ok(api::json(StatusCode::OK, &page))
        }
        Api::Channel { name, action } => {
            let name = &channel_name(name)?;
            match action {
                ChannelAction::Status => {
                    if let Some(refused) = read_only(app, &req).await? {
                        return Ok(refused);
                    }
                    status::response(app, name).await
                }
                ChannelAction::Pause | ChannelAction::Resume => {
                    only(&req, Method::POST)?;
                    pause_or_resume(app, name, action == ChannelAction::Pause, req).await
                }
                ChannelAction::Unknown => Err(ApiError::not_found("no such API route")),
            }
        }
        Api::PreReboot => Ok(fleetlock::handle(app, Ask::Lease, req).await),
        Api::SteadyState => Ok(fleetlock::handle(app, Ask::Release, req).await),
        Api::Leases => {
            if let Some(refused) = read_only(app, &req).await? {
                return Ok(refused);
            }
            Ok(api::json(StatusCode::OK, &fleetlock::status(app).await?))
        }
        Api::FreeLease { group, node } => {
            only(&req, Method::POST)?;
            free_lease(app, &decoded(group), &decoded(node), req).await
        }
        Api::Tokens => match *req.method() {
            Method::GET => access::list_tokens(app, req.headers()).await,
            Method::POST => access::create_token(app, req).await,
            _ => Ok(method_not_allowed("GET, POST")),
        },
        Api::RevokeToken { name } => {
            only(&req, Method::POST)?;
            access::revoke_token(app, &decoded(name), req.headers()).await
        }
        Api::Audit => {
            if let Some(refused) = read_only(app, &req).await? {
                return Ok(refused);
            }
            access::audit_log(app, req.uri().query().unwrap_or("")).await
        }
        Api::Enroll => {
            only(&req, Method::POST)?;
            nodekeys::enroll(app, req).await
        }
        Api::EnrollmentTokens => {
            only(&req, Method::POST)?;
            nodekeys::create_token(app, req).await
        }
        Api::Enrollments => {
            if let Some(refused) = read_only(app, &req).await? {
                return Ok(refused);
            }
            nodekeys::list(app).await
        }
        Api::DecideEnrollment { node, approve } => {
            only(&req, Method::POST)?;
            nodekeys::decide_enrollment(app, &decoded(node), approve, req).await
        }
        Api::RevokeNode { node } => {
            only(&req, Method::POST)?;
            nodekeys::revoke(app, &decoded(node), req).await
        }
        Api::Unknown => Err(ApiError::not_found("no such API route")),
    }
}

/// A read guarded by the status token: `Ok(Some(405))` unless GET or HEAD, then a token that
/// reads ([`access::require_read`]).
async fn read_only(
    app: &App,
    req: &Request<Incoming>,
) -> Result<Option<Response<ResponseBody>>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(Some(method_not_allowed("GET, HEAD")));
    }
    access::require_read(app, req.headers())
        .await
        .map(|()| None)
}

/// A path segment percent-decoded (names are checked by the handler).
fn decoded(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// `POST /v1/leases/GROUP/NODE/release` (operate), `{"reason"?}`, audited.
async fn free_lease(
    app: &App,
    group: &str,
    node: &str,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let actor = access::require(app, req.headers(), Role::Operate, "releasing a lease").await?;
    let reason = action_reason(app, req).await?;
    let resp = fleetlock::free(app, group, node).await?;
    access::record_by(
        app,
        &actor,
        "release-lease",
        &format!("{group}/{node}"),
        reason,
    )
    .await?;
    Ok(resp)
}

/// Default page size of `GET /v1/nodes`.
const DEFAULT_NODES_PAGE: u32 = 100;

/// The query of `GET /v1/nodes`: `q` (text the node id contains, ≤ 128 characters),
/// `limit` (1 to [`db::MAX_NODES_PAGE`], default 100), `offset`; unknown keys are refused.
fn node_query(raw: &str) -> Result<db::NodeQuery, ApiError> {
    let mut query = db::NodeQuery {
        limit: DEFAULT_NODES_PAGE,
        ..db::NodeQuery::default()
    };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Forms and URLSearchParams encode a space as '+'.
        let value = percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| ApiError::bad_request(format!("{key} is not UTF-8")))?
            .into_owned();
        let number = |min: u64, max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| ApiError::bad_request(format!("{key} must be {min} to {max}")))
        };
        match key {
            "q" if value.chars().count() <= proto::names::MAX_NODE_ID => query.search = value,
            "q" => return Err(ApiError::bad_request("q is longer than a node id can be")),
            "limit" => {
                query.limit = u32::try_from(number(1, u64::from(db::MAX_NODES_PAGE))?)
                    .unwrap_or(db::MAX_NODES_PAGE);
            }
            "offset" => query.offset = number(0, u64::from(u32::MAX))?,
            _ => return Err(ApiError::bad_request(format!("unknown parameter {key}"))),
        }
    }
    Ok(query)
}

fn only(req: &Request<Incoming>, method: Method) -> Result<(), ApiError> {
    if req.method() == method {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("use {method} on this route"),
        ))
    }
}

fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut resp = api::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// The channel name of an API path segment, percent-decoded (`Edge%2Bfips` is `Edge+fips`),
/// following the one name rule.
fn channel_name(raw: &str) -> Result<String, ApiError> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("channel name is not UTF-8"))?;
    proto::check_name("channel", &decoded).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(decoded.into_owned())
}

/// `POST /v1/reports`: credential (the report token, or a node key, which may report only as
/// its own node: 403 otherwise), content type, size, JSON, then the node's rate (429 with
/// `Retry-After` beyond it, keyed on the node a key authenticated); stored only when all pass, and once per (node, report id): a
/// retry is answered 200 with the first copy's id, not counted. A new row counts against the
/// table's row cap.
async fn post_report(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let max = app.limits.max_report_body;
    let sent = nodeauth::read(app, req, "reporting", false, max, BodyKind::Json).await?;
    let report = Report::from_json(&sent.body).map_err(ApiError::bad_request)?;
    sent.caller.check_acts_for(&report.node_id)?;
    let node = sent.caller.node().unwrap_or(&report.node_id);
    app.report_rate
        .check(node, std::time::Instant::now())
        .map_err(|wait| {
            ApiError::too_many(
                format!(
                    "node {} sends reports too fast: retry later",
                    report.node_id
                ),
                wait,
            )
        })?;
    let now = httpdate::unix_seconds(SystemTime::now());
    let stored = app
        .db
        .insert(report.clone(), now)
        .await
        .map_err(|e| ApiError::internal("could not store the report", &e))?;
    if !stored.new {
        return Ok(api::json(StatusCode::OK, &stored));
    }
    app.metrics.report(&report);
    budget::after_report(app, &report).await;
    app.db
        .keep_within(&app.retention)
        .await
        .map_err(|e| ApiError::internal("could not bound the report table", &e))?;
    Ok(api::json(StatusCode::CREATED, &stored))
}

/// Optional body of an operator's action (pause, resume, freeing a lease): why.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    reason: Option<String>,
}

/// The answer of pause and resume: the channel and its pause state as now on disk.
#[derive(Serialize)]
struct PauseAnswer<'a> {
    channel: &'a str,
    #[serde(flatten)]
    pause: Pause,
}

async fn pause_or_resume(
    app: &App,
    name: &str,
    pause: bool,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let actor = access::require(app, req.headers(), Role::Operate, "pause/resume").await?;
    let reason = action_reason(app, req).await?;
    let written = reason.clone();
    let repo = app.repo.path().to_owned();
    let owned = name.to_owned();
    let (state, budget_release) = tokio::task::spawn_blocking(move || {
        if !channels::metadata_path(&repo, &owned).is_file() {
            return Ok(None);
        }
        if pause {
            return channels::write_pause(&repo, &owned, written, false).map(|p| Some((p, None)));
        }
        let budget_release = automatic_pause_release(&repo, &owned)?;
        channels::remove_pause(&repo, &owned).map(|()| Some((not_paused(), budget_release)))
    })
    .await
    .map_err(|e| ApiError::internal("pause worker failed", &e))?
    .map_err(|e| ApiError::internal("could not update the pause file", &e))?
    .ok_or_else(|| ApiError::not_found(format!("no channel {name} in the repository")))?;
    if let Some(release) = budget_release {
        let now = httpdate::unix_seconds(SystemTime::now());
        app.db
            .resume_budget(name, &release, now)
            .await
            .map_err(|e| ApiError::internal("could not record the resume", &e))?;
    }
    let action = if pause { "pause" } else { "resume" };
    access::record_by(app, &actor, action, name, reason).await?;
    tracing::info!(channel = name, paused = pause, "channel pause changed");
    Ok(api::json(
        StatusCode::OK,
        &PauseAnswer {
            channel: name,
            pause: state,
        },
    ))
}

fn not_paused() -> Pause {
    Pause {
        paused: false,
        since: None,
        reason: None,
        automatic: false,
    }
}

/// The current release of `channel` when its failure budget paused it: an operator resuming
/// such a pause overrides the budget for that release.
fn automatic_pause_release(
    repo: &std::path::Path,
    channel: &str,
) -> std::io::Result<Option<String>> {
    let automatic = channels::read_pause(repo, channel)?.is_some_and(|p| p.paused && p.automatic);
    if !automatic {
        return Ok(None);
    }
    let info = channels::read_info(repo, channel).map_err(std::io::Error::other)?;
    Ok(info.map(|i| i.release.version))
}

/// The reason of an operator's action: an empty body, or `{"reason": "…"}` (≤ 1024
/// characters).
async fn action_reason(app: &App, req: Request<Incoming>) -> Result<Option<String>, ApiError> {
    if req.body().is_end_stream() {
        return Ok(None);
    }
    let body = read_json_body(req, app.limits.max_admin_body, app.limits.body_read_timeout).await?;
    let parsed: ActionRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
    match parsed.reason {
        Some(r) => api::check_reason(&r).map(|()| Some(r)),
        None => Ok(None),
    }
}
