//! Token checks. Writes (`POST /v1/reports`, pause/resume) take only `Authorization: Bearer
//! <token>`: a browser never sends that on its own, so another site cannot make it pause a
//! channel. Reads guarded by the status token (the page, the status JSON, the metrics) also
//! take HTTP Basic with the token as the password, so a browser asks for it once and keeps it
//! for the session; a read changes nothing and another site cannot read the answer. Reports
//! and reboot leases name their [`Caller`]: the fleet's report token, a node's own key, or
//! nobody where anonymous FleetLock clients are allowed.
use base64::Engine;
use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, StatusCode};

use crate::api::ApiError;
use crate::config::Token;

/// The challenge of a refused write.
pub const BEARER_CHALLENGE: &str = "Bearer";
/// The challenge of a refused read: browsers answer it with a login prompt.
pub const READ_CHALLENGE: &str = "Basic realm=\"tandem-server status\", charset=\"UTF-8\"";

/// Checks the request's bearer token against `expected`. No configured token means the route
/// is disabled (403); a missing or wrong token is 401.
pub fn require(expected: Option<&Token>, headers: &HeaderMap, route: &str) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{route} is disabled: the server has no token configured for it"),
        ));
    };
    let presented = credential(headers, "bearer").ok_or_else(|| {
        ApiError::unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'",
            BEARER_CHALLENGE,
        )
    })?;
    if expected.matches(&presented) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid bearer token",
            BEARER_CHALLENGE,
        ))
    }
}

/// Who a node-facing request (a report, a reboot lease) comes from. Every node of a fleet
/// shares the report token, so a holder of it may speak for any node; a request without
/// credentials, where the operator allows it for leases, likewise. A node's own enrolled key
/// speaks only for its node ([`crate::nodeauth`]): [`Caller::may_act_for`] is the one check
/// the report and lease handlers make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Presented the fleet's shared report token.
    Fleet,
    /// Presented nothing, on a server that lets anonymous clients take leases.
    Anonymous,
    /// Signed with an approved node key.
    Node {
        /// The node the key was enrolled as.
        node_id: String,
        /// The key's id.
        key_id: String,
    },
}

impl Caller {
    /// Whether this caller may speak for `node` (report as it, take or release its lease).
    pub fn may_act_for(&self, node: &str) -> bool {
        match self {
            Caller::Fleet | Caller::Anonymous => true,
            Caller::Node { node_id, .. } => node_id == node,
        }
    }

    /// The node a key authenticated, if one did.
    pub fn node(&self) -> Option<&str> {
        match self {
            Caller::Node { node_id, .. } => Some(node_id),
            Caller::Fleet | Caller::Anonymous => None,
        }
    }

    /// The refusal of a request whose body names `node` when this caller may not speak for
    /// it (403).
    pub fn check_acts_for(&self, node: &str) -> Result<(), ApiError> {
        if self.may_act_for(node) {
            return Ok(());
        }
        let (key, own) = match self {
            Caller::Node { node_id, key_id } => (key_id.as_str(), node_id.as_str()),
            Caller::Fleet | Caller::Anonymous => ("", ""),
        };
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("key {key} is enrolled as node {own}: it may not speak for node {node}"),
        ))
    }
}

/// Identifies the caller of a node request by the report token as a bearer, or, when
/// `anonymous` is allowed, no `Authorization` header at all (a wrong token is refused
/// either way); `what` names the request in refusals.
pub fn node_caller(
    report_token: Option<&Token>,
    anonymous: bool,
    headers: &HeaderMap,
    what: &str,
) -> Result<Caller, ApiError> {
    if anonymous && !headers.contains_key(AUTHORIZATION) {
        return Ok(Caller::Anonymous);
    }
    require(report_token, headers, what).map(|()| Caller::Fleet)
}

/// Checks a read guarded by the status token: open when none is configured; else the token
/// as a bearer, or as the password of HTTP Basic (any user name).
pub fn require_read(expected: Option<&Token>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match read_credential(headers) {
        Some(token) if expected.matches(&token) => Ok(()),
        Some(_) => Err(ApiError::unauthorized(
            "invalid status token",
            READ_CHALLENGE,
        )),
        None => Err(ApiError::unauthorized(
            "this server's status needs its status token: send 'Authorization: Bearer <token>'",
            READ_CHALLENGE,
        )),
    }
}

/// The bearer token of a request, if it sent one (what writes accept).
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    credential(headers, "bearer")
}

/// The token of a read: a bearer token, or the password of HTTP Basic.
pub fn read_credential(headers: &HeaderMap) -> Option<String> {
    credential(headers, "bearer").or_else(|| basic_password(headers))
}

/// The credential of an `Authorization: <scheme> …` header, if well-formed.
fn credential(headers: &HeaderMap, scheme: &str) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (given, credential) = value.trim().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| credential.trim().to_owned())
}

/// The password of an `Authorization: Basic base64(user:password)` header.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let encoded = credential(headers, "basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn with(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        h
    }

    #[test]
    fn reads_take_bearer_or_basic_and_writes_only_bearer() {
        let token = Token::new("status", "status-token-0123456789").unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode("any:status-token-0123456789");
        let basic = with(&format!("Basic {basic}"));
        let bearer = with("Bearer status-token-0123456789");
        assert!(require_read(Some(&token), &bearer).is_ok());
        assert!(require_read(Some(&token), &basic).is_ok());
        assert!(require_read(None, &HeaderMap::new()).is_ok());
        let refused = require_read(Some(&token), &HeaderMap::new()).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(refused.challenge, Some(READ_CHALLENGE));
        assert!(require_read(Some(&token), &with("Basic !!!")).is_err());
        assert!(require_read(Some(&token), &with("Bearer wrong-token-0123456789")).is_err());
        assert!(require(Some(&token), &bearer, "x").is_ok());
        assert!(require(Some(&token), &basic, "x").is_err());
    }

    #[test]
    fn a_lease_caller_needs_the_report_token_unless_anonymous_is_allowed() {
        let token = Token::new("report", "report-token-0123456789").unwrap();
        let none = HeaderMap::new();
        let good = with("Bearer report-token-0123456789");
        let bad = with("Bearer wrong-token-0123456789");
        assert_eq!(
            node_caller(Some(&token), false, &good, "x"),
            Ok(Caller::Fleet)
        );
        assert!(node_caller(Some(&token), false, &none, "x").is_err());
        assert_eq!(
            node_caller(Some(&token), true, &none, "x"),
            Ok(Caller::Anonymous)
        );
        assert!(
            node_caller(Some(&token), true, &bad, "x").is_err(),
            "a wrong token is refused"
        );
        assert!(node_caller(None, false, &good, "x").is_err());
        assert!(Caller::Anonymous.may_act_for("n1"));
        let node = Caller::Node {
            node_id: "n1".into(),
            key_id: "k".into(),
        };
        assert!(node.may_act_for("n1") && !node.may_act_for("n2"));
        assert_eq!(
            node.check_acts_for("n2").unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }
}
