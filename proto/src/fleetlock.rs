//! The FleetLock wire format (the reboot-lease protocol Zincati speaks): `POST
//! /v1/pre-reboot` takes a reboot lease, `POST /v1/steady-state` gives it back. Each request
//! carries the header `fleet-lock-protocol: true` and the body
//! `{"client_params": {"id": NODE, "group": GROUP}}`; success is any 2xx, a refusal a non-2xx
//! status with `{"kind": …, "value": …}`. The server and the agent both take the format from
//! here. Unknown fields are ignored, as the protocol lets clients add some.
use serde::{Deserialize, Serialize};

use crate::names::{check_name, check_node_id, NameError};

/// The header every request carries, with the value [`HEADER_VALUE`].
pub const HEADER: &str = "fleet-lock-protocol";
/// The value of [`HEADER`].
pub const HEADER_VALUE: &str = "true";
/// Path that takes a lease.
pub const PRE_REBOOT: &str = "/v1/pre-reboot";
/// Path that gives it back.
pub const STEADY_STATE: &str = "/v1/steady-state";
/// Largest request body read.
pub const MAX_BODY: usize = 4096;
/// The group of a node that names none.
pub const DEFAULT_GROUP: &str = "default";

/// A request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who asks, for which group.
    pub client_params: ClientParams,
}

/// The `client_params` of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientParams {
    /// The node (Zincati sends its app-specific machine id).
    pub id: String,
    /// The reboot group.
    #[serde(default = "default_group")]
    pub group: String,
}

fn default_group() -> String {
    DEFAULT_GROUP.to_owned()
}

/// A refusal's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A machine-readable kind (see [`kind`]).
    pub kind: String,
    /// What a human should know.
    pub value: String,
}

/// The kinds of [`ErrorBody`] this implementation sends.
pub mod kind {
    /// The `fleet-lock-protocol: true` header is missing or has another value.
    pub const MISSING_HEADER: &str = "missing_fleet_lock_header";
    /// The body is not a request.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The caller may not speak for this node.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// Every slot of the group is taken: try again later.
    pub const LOCK_BUSY: &str = "failed_lock";
    /// The server failed.
    pub const SERVER_ERROR: &str = "server_error";
}

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON of the request's shape.
    #[error("the body is not {{\"client_params\": {{\"id\": …, \"group\": …}}}}: {0}")]
    Shape(#[from] serde_json::Error),
    /// The node id or group breaks its rule.
    #[error(transparent)]
    Name(#[from] NameError),
}

impl Request {
    /// Parses and checks a body: the node id by the node id rule, the group by the name rule.
    pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
        let request: Request = serde_json::from_slice(bytes)?;
        check_node_id(&request.client_params.id)?;
        check_name("group", &request.client_params.group)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zincati_body_parses_and_names_are_checked() {
        let r = Request::parse(
            br#"{"client_params": {"id": "c2a6b5e2d1", "group": "workers"}, "extra": 1}"#,
        );
        let r = r.map_err(|e| e.to_string());
        assert_eq!(
            r.map(|r| r.client_params),
            Ok(ClientParams {
                id: "c2a6b5e2d1".into(),
                group: "workers".into()
            })
        );
        let no_group = Request::parse(br#"{"client_params": {"id": "n1"}}"#);
        assert_eq!(
            no_group.map(|r| r.client_params.group).ok().as_deref(),
            Some(DEFAULT_GROUP)
        );
        for bad in [
            &br#"{"client_params": {"id": "a b", "group": "g"}}"#[..],
            br#"{"client_params": {"id": "n", "group": "../g"}}"#,
            br#"{"id": "n"}"#,
            b"",
        ] {
            assert!(
                Request::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
