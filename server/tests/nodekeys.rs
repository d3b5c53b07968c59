//! Per-node credentials: a node enrolls its key (with a one-time token, or pending until an
//! operator approves), then signs its reports and lease requests; a key speaks only for its
//! own node, and stale, replayed, forged, unapproved and revoked requests are refused. On
//! both report stores.
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use proto::nodeauth::{self, NodeAuth};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::util::{client, on_both_backends, Backend, TestServer, ADMIN_TOKEN, REPORT_TOKEN};

/// A node with its key.
pub struct Node {
    id: String,
    key: SigningKey,
    /// Requests signed so far: each one's nonce.
    sent: std::cell::Cell<u64>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Node {
    pub fn new(id: &str, seed: u8) -> Node {
        Node {
            id: id.to_owned(),
            key: SigningKey::from_bytes(&[seed; 32]),
            sent: std::cell::Cell::new(0),
        }
    }

    pub fn key_id(&self) -> String {
        nodeauth::hex(&Sha256::digest(self.key.verifying_key().as_bytes()))
    }

    /// The `Authorization` value of `body` sent to `path`, signed at `ts` with a nonce
    /// never used before.
    fn sign(&self, path: &str, body: &[u8], ts: u64) -> String {
        self.sent.set(self.sent.get() + 1);
        let nonce = format!("{:032x}", self.sent.get());
        let digest: [u8; 32] = Sha256::digest(body).into();
        let message = nodeauth::signed_message(&nodeauth::Signed {
            method: "POST",
            path,
            timestamp: ts,
            nonce: &nonce,
            body_sha256: &digest,
        });
        NodeAuth {
            key_id: self.key_id(),
            timestamp: ts,
            nonce,
            signature: self.key.sign(&message).to_bytes(),
        }
        .header()
    }

    /// POSTs `body` to `path` with `authorization`; the status and the JSON answer.
    fn send(s: &TestServer, path: &str, body: &[u8], authorization: &str) -> (StatusCode, Value) {
        let r = client()
            .post(s.url(path))
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .header("fleet-lock-protocol", "true")
            .body(body.to_vec())
            .send()
            .unwrap();
        let status = r.status();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// POSTs `body` to `path`, signed now.
    fn post(&self, s: &TestServer, path: &str, body: &Value) -> (StatusCode, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        Node::send(s, path, &bytes, &self.sign(path, &bytes, now()))
    }

    pub fn enroll(&self, s: &TestServer, token: Option<&str>) -> (StatusCode, Value) {
        let mut body = json!({
            "node_id": self.id,
            "public_key": nodeauth::public_key_text(self.key.verifying_key().as_bytes()),
        });
        if let Some(token) = token {
            body["token"] = json!(token);
        }
        self.post(s, "/v1/enroll", &body)
    }

    fn report_as(&self, s: &TestServer, node: &str, id: &str) -> StatusCode {
        let report = json!({"id": id, "node_id": node, "channel": "stable",
            "from_version": "1.0.0", "to_version": "2.0.0", "outcome": "installed"});
        self.post(s, "/v1/reports", &report).0
    }

    pub fn report(&self, s: &TestServer, id: &str) -> StatusCode {
        self.report_as(s, &self.id, id)
    }

    fn lease_as(&self, s: &TestServer, path: &str, node: &str) -> StatusCode {
        let params = json!({"client_params": {"id": node, "group": "default"}});
        self.post(s, path, &params).0
    }
}

fn operate(s: &TestServer, path: &str, body: &Value) -> (StatusCode, Value) {
    let r = client()
        .post(s.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .unwrap();
    let status = r.status();
    (status, r.json().unwrap())
}

/// `report` sent with the fleet's shared report token.
fn shared_report(s: &TestServer, report: &Value) -> StatusCode {
    client()
        .post(s.url("/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .json(report)
        .send()
        .unwrap()
        .status()
}

pub fn enrollment_token(s: &TestServer) -> String {
    let (code, body) = operate(s, "/v1/enrollment-tokens", &json!({"reason": "rack 4"}));
    assert_eq!(code, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// `GET path` (reads are open on the test server) as JSON.
fn read(s: &TestServer, path: &str) -> Value {
    client().get(s.url(path)).send().unwrap().json().unwrap()
}

fn enrollments(s: &TestServer) -> Value {
    read(s, "/v1/enrollments")
}

/// The audit log as "actor action" lines, oldest first.
fn audit_actions(s: &TestServer) -> Vec<String> {
    let mut actions: Vec<String> = read(s, "/v1/audit")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap()
            )
        })
        .collect();
    actions.reverse();
    actions
}

fn enroll_with_a_token_once(backend: Backend) {
    let s = TestServer::start_on(backend);
    let token = enrollment_token(&s);
    let a = Node::new("node-a", 1);
    let (code, answer) = a.enroll(&s, Some(&token));
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "approved");
    assert_eq!(answer["key_id"], a.key_id());
    // Asking again with the same key is answered the same, the token being spent already.
    assert_eq!(a.enroll(&s, Some(&token)).0, StatusCode::OK);
    // The token is spent: another node cannot use it.
    let b = Node::new("node-b", 2);
    let (code, refused) = b.enroll(&s, Some(&token));
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("used"),
        "{refused}"
    );
    assert_eq!(a.report(&s, "r1"), StatusCode::CREATED);
    let listed = enrollments(&s);
    assert_eq!(listed["enrolled"][0]["node_id"], "node-a", "{listed}");
    assert_eq!(listed["enrolled"][0]["key_id"], a.key_id(), "{listed}");
    assert_eq!(
        audit_actions(&s),
        [
            "admin-token create-enrollment-token",
            "enrollment-token enroll"
        ]
    );
}

fn pending_until_an_operator_approves(backend: Backend) {
    let s = TestServer::start_on(backend);
    let a = Node::new("node-a", 1);
    let (code, answer) = a.enroll(&s, None);
    assert_eq!(
        (code, &answer["status"]),
        (StatusCode::ACCEPTED, &json!("pending"))
    );
    assert_eq!(a.enroll(&s, None).0, StatusCode::ACCEPTED, "asking again");
    assert_eq!(a.report(&s, "r1"), StatusCode::FORBIDDEN, "pending");
    // Another key for the same node waits behind the first: refused until it is decided.
    let rival = Node::new("node-a", 9);
    assert_eq!(rival.enroll(&s, None).0, StatusCode::CONFLICT);
    let listed = enrollments(&s);
    assert_eq!(listed["pending"][0]["key_id"], a.key_id(), "{listed}");
    let wrong_key = json!({"key_id": rival.key_id()});
    assert_eq!(
        operate(&s, "/v1/enrollments/node-a/approve", &wrong_key).0,
        StatusCode::NOT_FOUND,
        "the operator approves the key they saw, or nothing"
    );
    let (code, approved) = operate(
        &s,
        "/v1/enrollments/node-a/approve",
        &json!({"key_id": a.key_id(), "reason": "serial checked"}),
    );
    assert_eq!(code, StatusCode::OK, "{approved}");
    assert_eq!(a.report(&s, "r1"), StatusCode::CREATED);
    // A rejected enrollment stays refused.
    let b = Node::new("node-b", 2);
    assert_eq!(b.enroll(&s, None).0, StatusCode::ACCEPTED);
    assert_eq!(
        operate(&s, "/v1/enrollments/node-b/reject", &json!({})).0,
        StatusCode::OK
    );
    assert_eq!(b.enroll(&s, None).0, StatusCode::FORBIDDEN);
    assert_eq!(b.report(&s, "r1"), StatusCode::FORBIDDEN);
    assert_eq!(
        audit_actions(&s),
        [
            "node-a request-enrollment",
            "admin-token approve-enrollment",
            "node-b request-enrollment",
            "admin-token reject-enrollment"
        ]
    );
}

fn a_key_speaks_only_for_its_node(backend: Backend) {
    let s = TestServer::start_on(backend);
    let a = Node::new("node-a", 1);
    let token = enrollment_token(&s);
    assert_eq!(a.enroll(&s, Some(&token)).0, StatusCode::OK);
    assert_eq!(a.report(&s, "r1"), StatusCode::CREATED);
    let before = s.stored_reports();
    let report = json!({"id": "r2", "node_id": "node-b", "channel": "stable",
        "from_version": "1.0.0", "to_version": "2.0.0", "outcome": "failed"});
    let (code, refused) = a.post(&s, "/v1/reports", &report);
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("may not speak for node node-b"),
        "{refused}"
    );
    assert_eq!(s.stored_reports(), before, "nothing stored for node-b");
    // Leases likewise: its own, yes; another node's, no.
    assert_eq!(
        a.lease_as(&s, "/v1/pre-reboot", "node-b"),
        StatusCode::FORBIDDEN
    );
    assert_eq!(a.lease_as(&s, "/v1/pre-reboot", "node-a"), StatusCode::OK);
    assert_eq!(
        a.lease_as(&s, "/v1/steady-state", "node-b"),
        StatusCode::FORBIDDEN
    );
    assert_eq!(a.lease_as(&s, "/v1/steady-state", "node-a"), StatusCode::OK);
    // The shared token still speaks for anyone under the default `either`.
    assert_eq!(shared_report(&s, &report), StatusCode::CREATED);
}

fn replayed_stale_forged_and_unknown_requests_are_refused(backend: Backend) {
    let s = TestServer::start_on(backend);
    let a = Node::new("node-a", 1);
    let token = enrollment_token(&s);
    assert_eq!(a.enroll(&s, Some(&token)).0, StatusCode::OK);
    let body = serde_json::to_vec(
        &json!({"id": "r1", "node_id": "node-a", "channel": "stable",
        "from_version": "1.0.0", "to_version": "2.0.0", "outcome": "installed"}),
    )
    .unwrap();
    let header = a.sign("/v1/reports", &body, now());
    assert_eq!(
        Node::send(&s, "/v1/reports", &body, &header).0,
        StatusCode::CREATED
    );
    let (code, replay) = Node::send(&s, "/v1/reports", &body, &header);
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{replay}");
    assert!(
        replay["error"].as_str().unwrap().contains("replay"),
        "{replay}"
    );
    for ts in [
        now() - nodeauth::MAX_SKEW_SECS - 5,
        now() + nodeauth::MAX_SKEW_SECS + 5,
    ] {
        let stale = a.sign("/v1/reports", &body, ts);
        let (code, refused) = Node::send(&s, "/v1/reports", &body, &stale);
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("300 s"),
            "{refused}"
        );
    }
    // The signature binds the body and the path.
    let other_body = body
        .iter()
        .map(|b| if *b == b'2' { b'3' } else { *b })
        .collect::<Vec<_>>();
    let signed = a.sign("/v1/reports", &body, now());
    assert_eq!(
        Node::send(&s, "/v1/reports", &other_body, &signed).0,
        StatusCode::UNAUTHORIZED
    );
    let for_lease = a.sign("/v1/pre-reboot", &body, now());
    assert_eq!(
        Node::send(&s, "/v1/reports", &body, &for_lease).0,
        StatusCode::UNAUTHORIZED
    );
    let stranger = Node::new("node-a", 7);
    assert_eq!(
        stranger.report(&s, "r9"),
        StatusCode::UNAUTHORIZED,
        "unknown key"
    );
    assert_eq!(
        Node::send(&s, "/v1/reports", &body, "Tandem-Node key=zz").0,
        StatusCode::UNAUTHORIZED
    );
}

fn a_revoked_key_is_refused_and_a_new_key_needs_the_operator(backend: Backend) {
    let s = TestServer::start_on(backend);
    let a = Node::new("node-a", 1);
    assert_eq!(a.enroll(&s, Some(&enrollment_token(&s))).0, StatusCode::OK);
    // A second key for the enrolled node is not approved by a token: it waits.
    let new_key = Node::new("node-a", 2);
    let token = enrollment_token(&s);
    assert_eq!(new_key.enroll(&s, Some(&token)).0, StatusCode::ACCEPTED);
    assert_eq!(
        a.report(&s, "r1"),
        StatusCode::CREATED,
        "the old key still speaks"
    );
    assert_eq!(new_key.report(&s, "r2"), StatusCode::FORBIDDEN);
    // The token was not spent on it.
    assert_eq!(
        Node::new("node-c", 3).enroll(&s, Some(&token)).0,
        StatusCode::OK
    );
    // Approving the new key revokes the old one.
    assert_eq!(
        operate(&s, "/v1/enrollments/node-a/approve", &json!({})).0,
        StatusCode::OK
    );
    assert_eq!(a.report(&s, "r3"), StatusCode::FORBIDDEN);
    assert_eq!(new_key.report(&s, "r4"), StatusCode::CREATED);
    let (code, revoked) = operate(&s, "/v1/nodes/node-a/revoke", &json!({"reason": "stolen"}));
    assert_eq!(
        (code, &revoked["key_id"]),
        (StatusCode::OK, &json!(new_key.key_id()))
    );
    assert_eq!(new_key.report(&s, "r5"), StatusCode::FORBIDDEN);
    assert_eq!(
        new_key.lease_as(&s, "/v1/pre-reboot", "node-a"),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        new_key.enroll(&s, None).0,
        StatusCode::FORBIDDEN,
        "revoked for good"
    );
    assert_eq!(
        operate(&s, "/v1/nodes/node-a/revoke", &json!({})).0,
        StatusCode::NOT_FOUND
    );
    assert!(audit_actions(&s).contains(&"admin-token revoke-node-key".to_owned()));
}

on_both_backends!(
    enroll_with_a_token_once,
    pending_until_an_operator_approves,
    a_key_speaks_only_for_its_node,
    replayed_stale_forged_and_unknown_requests_are_refused,
    a_revoked_key_is_refused_and_a_new_key_needs_the_operator,
);

#[test]
fn with_keys_only_the_shared_token_speaks_for_no_one() {
    let s = TestServer::start_with(|c| {
        c.node_auth = server::NodeAuth::Keys;
        c.report_token = None;
    });
    let report = json!({"node_id": "node-a", "channel": "stable",
        "from_version": "1.0.0", "to_version": "2.0.0", "outcome": "installed"});
    assert_eq!(shared_report(&s, &report), StatusCode::UNAUTHORIZED);
    let a = Node::new("node-a", 1);
    assert_eq!(a.enroll(&s, Some(&enrollment_token(&s))).0, StatusCode::OK);
    assert_eq!(a.report(&s, "r1"), StatusCode::CREATED);
    // And with `shared`, a signature is not taken at all.
    let shared = TestServer::start_with(|c| c.node_auth = server::NodeAuth::Shared);
    assert_eq!(a.enroll(&shared, None).0, StatusCode::FORBIDDEN);
}
