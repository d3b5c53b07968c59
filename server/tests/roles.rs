//! Roles and the audit log: an admin creates named tokens with roles, each role does what it
//! may and is refused the rest, a revoked token stops working, and every operator action —
//! and the failure budget's pause — is in the audit log with who, what, on what and why.
use reqwest::blocking::RequestBuilder;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::util::{client, TestServer, ADMIN_TOKEN, REPORT_TOKEN};

const STATUS_TOKEN: &str = "status-token-0123456789";

fn create(s: &TestServer, by: &str, name: &str, role: &str) -> (StatusCode, Value) {
    let r = client()
        .post(s.url("/v1/tokens"))
        .bearer_auth(by)
        .json(&json!({"name": name, "role": role}))
        .send()
        .unwrap();
    (r.status(), r.json().unwrap())
}

fn send(req: RequestBuilder, token: &str) -> StatusCode {
    req.bearer_auth(token).send().unwrap().status()
}

fn pause(s: &TestServer, token: &str, action: &str, reason: &str) -> StatusCode {
    send(
        client()
            .post(s.url(&format!("/v1/channels/stable/{action}")))
            .json(&json!({ "reason": reason })),
        token,
    )
}

/// The audit log as "actor role action target reason" lines, oldest first.
fn audit(s: &TestServer, token: &str) -> Vec<String> {
    let body: Value = client()
        .get(s.url("/v1/audit"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut lines: Vec<String> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e["actor"].as_str().unwrap(),
                e["role"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or("-")
            )
        })
        .collect();
    lines.reverse();
    lines
}

#[test]
fn each_role_does_what_it_may_and_every_action_is_audited() {
    let s = TestServer::start_with(|c| {
        c.status_token = Some(server::Token::new("status", STATUS_TOKEN).unwrap());
        c.leases.anonymous = true;
    });
    let (code, ops) = create(&s, ADMIN_TOKEN, "alice-ops", "operate");
    assert_eq!(code, StatusCode::CREATED, "{ops}");
    let ops = ops["token"].as_str().unwrap().to_owned();
    assert_eq!(ops.len(), 64);
    let (_, reader) = create(&s, ADMIN_TOKEN, "grafana", "read");
    let reader = reader["token"].as_str().unwrap().to_owned();
    assert_eq!(
        create(&s, ADMIN_TOKEN, "grafana", "read").0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        create(&s, ADMIN_TOKEN, "bob", "root").0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        create(&s, &ops, "mallory", "admin").0,
        StatusCode::FORBIDDEN,
        "an operator cannot make tokens"
    );
    assert_eq!(
        create(&s, REPORT_TOKEN, "mallory", "admin").0,
        StatusCode::UNAUTHORIZED
    );
    // Reading: every role; the report token is no reading token.
    for token in [reader.as_str(), ops.as_str(), STATUS_TOKEN, ADMIN_TOKEN] {
        assert_eq!(
            send(client().get(s.url("/v1/channels")), token),
            StatusCode::OK
        );
    }
    assert_eq!(
        send(client().get(s.url("/v1/channels")), REPORT_TOKEN),
        StatusCode::UNAUTHORIZED
    );
    let basic = client()
        .get(s.url("/"))
        .basic_auth("grafana", Some(&reader))
        .send()
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK, "a browser's Basic login");
    // Operating: operate and admin, not read.
    assert_eq!(
        pause(&s, &reader, "pause", "x"),
        StatusCode::FORBIDDEN,
        "a reader cannot pause"
    );
    assert_eq!(
        pause(&s, &ops, "pause", "canary crash loop"),
        StatusCode::OK
    );
    assert_eq!(pause(&s, &ops, "resume", "fixed in 2.0.1"), StatusCode::OK);
    let lease = client()
        .post(s.url("/v1/pre-reboot"))
        .header("fleet-lock-protocol", "true")
        .body(r#"{"client_params": {"id": "n1", "group": "g"}}"#)
        .send()
        .unwrap();
    assert_eq!(lease.status(), StatusCode::OK);
    let free = client()
        .post(s.url("/v1/leases/g/n1/release"))
        .json(&json!({"reason": "node replaced"}));
    assert_eq!(send(free, &ops), StatusCode::OK);
    // Listing shows names and roles, never a secret.
    let listed = client()
        .get(s.url("/v1/tokens"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        listed.contains("alice-ops") && listed.contains("\"operate\""),
        "{listed}"
    );
    assert!(
        !listed.contains(&ops) && !listed.contains(&reader),
        "{listed}"
    );
    // A revoked token stops working at once.
    let revoke = client().post(s.url("/v1/tokens/alice-ops/revoke"));
    assert_eq!(send(revoke, ADMIN_TOKEN), StatusCode::OK);
    assert_eq!(pause(&s, &ops, "pause", "x"), StatusCode::UNAUTHORIZED);
    let again = client().post(s.url("/v1/tokens/alice-ops/revoke"));
    assert_eq!(send(again, ADMIN_TOKEN), StatusCode::NOT_FOUND);
    assert_eq!(
        audit(&s, &reader),
        [
            "admin-token admin create-token alice-ops (operate) -",
            "admin-token admin create-token grafana (read) -",
            "alice-ops operate pause stable canary crash loop",
            "alice-ops operate resume stable fixed in 2.0.1",
            "alice-ops operate release-lease g/n1 node replaced",
            "admin-token admin revoke-token alice-ops -",
        ]
    );
}

#[test]
fn the_failure_budgets_pause_is_audited_as_the_servers() {
    let s = TestServer::start_with(|c| c.failure_budget.enabled = true);
    for node in ["n1", "n2", "n3", "n4", "n5"] {
        let r = client()
            .post(s.url("/v1/reports"))
            .bearer_auth(REPORT_TOKEN)
            .json(
                &json!({"node_id": node, "channel": "stable", "from_version": "1.0.0",
                          "to_version": "2.0.0", "outcome": "rolled-back"}),
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(
        audit(&s, ADMIN_TOKEN),
        ["failure-budget server pause stable paused automatically: 5 of 5 nodes rolled back 2.0.0"]
    );
}
