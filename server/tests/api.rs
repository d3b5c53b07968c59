//! Reports, channel status, pause/resume and the status page.
use reqwest::blocking::{Body, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::util::{client, on_both_backends, Backend, TestServer, ADMIN_TOKEN, REPORT_TOKEN};

on_both_backends!(
    reports_are_aggregated_in_status,
    a_retried_report_is_stored_once,
    bad_or_missing_token_is_refused,
    malformed_reports_are_refused,
    status_page_lists_channels_and_escapes,
    the_node_list_is_searched_and_bounded_by_the_server,
    reasons_with_hidden_characters_are_refused_with_the_cause,
    channel_names_follow_the_signers_rule,
    old_and_surplus_reports_are_pruned_at_start,
    reports_are_pruned_while_serving,
    installed_transfers_are_summed_in_status,
    the_node_list_gives_each_nodes_last_install_transfer,
);

fn report(node: &str, from: &str, to: &str, outcome: &str, reason: Option<&str>) -> Value {
    let mut r = json!({"node_id": node, "channel": "stable", "from_version": from,
                       "to_version": to, "outcome": outcome});
    if let Some(reason) = reason {
        r["reason"] = json!(reason);
    }
    r
}

fn post_report(s: &TestServer, body: &Value) -> Response {
    client()
        .post(s.url("/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .json(body)
        .send()
        .unwrap()
}

fn status(s: &TestServer) -> Value {
    let r = client()
        .get(s.url("/v1/channels/stable/status"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().unwrap()
}

fn admin(s: &TestServer, action: &str, token: &str, body: Option<Value>) -> Response {
    let mut req = client()
        .post(s.url(&format!("/v1/channels/stable/{action}")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().unwrap()
}

/// A refusal: the status, a JSON `error` message, and nothing stored.
fn assert_refused(s: &TestServer, r: Response, status: StatusCode) {
    assert_eq!(r.status(), status);
    let body: Value = r.json().unwrap();
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(s.stored_reports(), 0, "nothing stored");
}

fn reports_are_aggregated_in_status(backend: Backend) {
    let s = TestServer::start_on(backend);
    let reports = [
        report("n1", "1.0.0", "2.0.0", "installed", None),
        report("n1", "1.0.0", "2.0.0", "committed", None),
        report("n2", "1.0.0", "2.0.0", "installed", None),
        report(
            "n3",
            "1.0.0",
            "2.0.0",
            "rolled-back",
            Some("health check web failed"),
        ),
        report(
            "n4",
            "1.0.0",
            "2.0.0",
            "failed",
            Some("chunk 7 hash mismatch"),
        ),
        report("n5", "0.9.0", "1.0.0", "committed", None),
    ];
    for r in &reports {
        let resp = post_report(&s, r);
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert!(resp.json::<Value>().unwrap()["id"].as_i64().is_some());
    }
    assert_eq!(s.stored_reports(), 6);
    let st = status(&s);
    assert_eq!(st["channel"], "stable");
    assert_eq!(st["paused"], false);
    assert_eq!(st["metadata_version"], 1);
    assert_eq!(st["release"]["version"], "2.0.0");
    assert_eq!(st["rollout"]["percent"], 30);
    assert_eq!(st["nodes"]["total"], 5);
    assert_eq!(st["nodes"]["by_version"], json!({"1.0.0": 4, "2.0.0": 1}));
    let cur = &st["current_release"];
    assert_eq!(cur["version"], "2.0.0");
    assert_eq!(
        cur["outcomes"],
        json!({"installed": 1, "committed": 1, "rolled-back": 1, "failed": 1})
    );
    let failures = cur["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0]["node_id"], "n4", "newest first");
    assert_eq!(failures[0]["reason"], "chunk 7 hash mismatch");
    assert_eq!(failures[1]["outcome"], "rolled-back");
    assert_eq!(failures[1]["reason"], "health check web failed");
}

/// A report carrying what its install fetched and reused.
fn with_transfer(mut report: Value, fetched: u64, reused: u64) -> Value {
    report["transfer"] =
        json!({"bytes_fetched": fetched, "bytes_reused": reused, "bundle_bytes": 1000});
    report
}

/// The status sums the transfers of the current release's installed reports, each stored
/// report once; reports without one (older agents), other outcomes and other releases add
/// nothing.
fn installed_transfers_are_summed_in_status(backend: Backend) {
    let s = TestServer::start_on(backend);
    let before = status(&s);
    let cur = &before["current_release"];
    assert_eq!(
        (
            &cur["bytes_fetched"],
            &cur["bytes_reused"],
            &cur["transfer_reports"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{before}"
    );
    let mut first = with_transfer(report("n1", "1.0.0", "2.0.0", "installed", None), 100, 900);
    first["id"] = json!("n1-install");
    for body in [
        first.clone(),
        first,
        with_transfer(report("n2", "1.0.0", "2.0.0", "installed", None), 300, 700),
        report("n3", "1.0.0", "2.0.0", "installed", None),
        with_transfer(report("n1", "1.0.0", "2.0.0", "committed", None), 5, 5),
        with_transfer(report("n4", "0.9.0", "1.0.0", "installed", None), 7, 7),
    ] {
        assert!(post_report(&s, &body).status().is_success(), "{body}");
    }
    assert_eq!(s.stored_reports(), 5, "the retried report is stored once");
    let st = status(&s);
    let cur = &st["current_release"];
    assert_eq!(cur["bytes_fetched"], 400, "{st}");
    assert_eq!(cur["bytes_reused"], 1600, "{st}");
    assert_eq!(cur["transfer_reports"], 2, "{st}");
    assert_eq!(cur["outcomes"]["installed"], 2, "{st}");
}

/// A report posted again with the same id (the agent retrying after a lost answer) is
/// answered 200 with the first copy's id and stored once; the first POST answers 201.
fn a_retried_report_is_stored_once(backend: Backend) {
    let s = TestServer::start_on(backend);
    let mut body = report("n1", "1.0.0", "2.0.0", "committed", None);
    body["id"] = json!("0f3a9c.retry-1");
    let first = post_report(&s, &body);
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().unwrap();
    for _ in 0..2 {
        let again = post_report(&s, &body);
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(again.json::<Value>().unwrap()["id"], first["id"]);
    }
    assert_eq!(s.stored_reports(), 1);
    let st = status(&s);
    assert_eq!(st["nodes"]["total"], 1);
    assert_eq!(st["current_release"]["outcomes"]["committed"], 1);
    let hourly: u64 = st["current_release"]["hourly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcomes"]["committed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(hourly, 1, "one report counted: {st}");
    body["id"] = json!("bad/id");
    assert_refused_kept(&s, post_report(&s, &body));
}

/// A refused report (400) leaves the one stored report alone.
fn assert_refused_kept(s: &TestServer, r: Response) {
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.stored_reports(), 1);
}

fn bad_or_missing_token_is_refused(backend: Backend) {
    let s = TestServer::start_on(backend);
    let good = report("n1", "1.0.0", "2.0.0", "committed", None);
    let r = client()
        .post(s.url("/v1/reports"))
        .json(&good)
        .send()
        .unwrap();
    assert_refused(&s, r, StatusCode::UNAUTHORIZED);
    let r = client()
        .post(s.url("/v1/reports"))
        .bearer_auth("wrong-token-0123456789")
        .json(&good)
        .send()
        .unwrap();
    assert_refused(&s, r, StatusCode::UNAUTHORIZED);
    let r = client()
        .post(s.url("/v1/reports"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&good)
        .send()
        .unwrap();
    assert_refused(&s, r, StatusCode::UNAUTHORIZED);
}

#[test]
fn reports_are_refused_when_no_token_is_configured() {
    let s = TestServer::start_with(|c| c.report_token = None);
    let r = post_report(&s, &report("n1", "1.0.0", "2.0.0", "committed", None));
    assert_refused(&s, r, StatusCode::FORBIDDEN);
}

#[test]
fn oversize_body_is_refused() {
    let s = TestServer::start();
    let big = report(
        "n1",
        "1.0.0",
        "2.0.0",
        "failed",
        Some(&"x".repeat(20 * 1024)),
    );
    let r = post_report(&s, &big);
    assert_refused(&s, r, StatusCode::PAYLOAD_TOO_LARGE);
    // Without Content-Length (chunked), the cap applies while reading.
    let bytes = serde_json::to_vec(&big).unwrap();
    let r = client()
        .post(s.url("/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .header("content-type", "application/json")
        .body(Body::new(std::io::Cursor::new(bytes)))
        .send()
        .unwrap();
    assert_refused(&s, r, StatusCode::PAYLOAD_TOO_LARGE);
}

fn malformed_reports_are_refused(backend: Backend) {
    let s = TestServer::start_on(backend);
    let mut unknown = report("n1", "1.0.0", "2.0.0", "committed", None);
    unknown["extra"] = json!(1);
    for body in [
        unknown,
        report("n1", "1.0.0", "2.0.0", "exploded", None),
        report("bad node", "1.0.0", "2.0.0", "committed", None),
        with_transfer(
            report("n1", "1.0.0", "2.0.0", "installed", None),
            1 << 41,
            0,
        ),
        json!({"node_id": "n1", "channel": "../etc", "from_version": "1", "to_version": "2", "outcome": "failed"}),
        json!({"node_id": "n1"}),
        json!([1, 2, 3]),
    ] {
        let r = post_report(&s, &body);
        assert_refused(&s, r, StatusCode::BAD_REQUEST);
    }
    let r = client()
        .post(s.url("/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_refused(&s, r, StatusCode::BAD_REQUEST);
    let r = client()
        .post(s.url("/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .unwrap();
    assert_refused(&s, r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = client().get(s.url("/v1/reports")).send().unwrap();
    assert_refused(&s, r, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn pause_and_resume() {
    let s = TestServer::start();
    let pause_file = s.repo().join("channels/stable.pause");
    let r = admin(
        &s,
        "pause",
        ADMIN_TOKEN,
        Some(json!({"reason": "v2 breaks printers"})),
    );
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().unwrap();
    assert_eq!(answer["paused"], true);
    assert_eq!(answer["channel"], "stable");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&pause_file).unwrap()).unwrap();
    assert_eq!(on_disk["paused"], true);
    assert_eq!(on_disk["reason"], "v2 breaks printers");
    assert!(on_disk["since"].as_str().unwrap().ends_with('Z'));
    // Agents see it as a repository file.
    let served = client()
        .get(s.url("/channels/stable.pause"))
        .send()
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let st = status(&s);
    assert_eq!(st["paused"], true);
    assert_eq!(st["pause"]["reason"], "v2 breaks printers");

    let r = admin(&s, "resume", ADMIN_TOKEN, None);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().unwrap()["paused"], false);
    assert!(!pause_file.exists());
    assert_eq!(status(&s)["paused"], false);
    let r = client()
        .get(s.url("/channels/stable.pause"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Pause without a body works too; resume is idempotent.
    assert_eq!(
        admin(&s, "pause", ADMIN_TOKEN, None).status(),
        StatusCode::OK
    );
    assert!(pause_file.exists());
    assert_eq!(
        admin(&s, "resume", ADMIN_TOKEN, None).status(),
        StatusCode::OK
    );
    assert_eq!(
        admin(&s, "resume", ADMIN_TOKEN, None).status(),
        StatusCode::OK
    );
}

#[test]
fn pause_needs_the_admin_token_and_a_real_channel() {
    let s = TestServer::start();
    let pause_file = s.repo().join("channels/stable.pause");
    for token in [REPORT_TOKEN, "not-the-admin-token-at-all"] {
        let r = admin(&s, "pause", token, None);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(!pause_file.exists());
    }
    let r = client()
        .post(s.url("/v1/channels/stable/pause"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .post(s.url("/v1/channels/nosuch/pause"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!s.repo().join("channels/nosuch.pause").exists());
    let r = admin(
        &s,
        "pause",
        ADMIN_TOKEN,
        Some(json!({"reason": "x", "force": true})),
    );
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!pause_file.exists());
    let (code, _) = s.raw_get_status("/v1/channels/Bad%20Name/status");
    assert_eq!(code, 400);
    for name in ["..%2fstable", "%2e%2e", "st%00able", "%ff"] {
        let (code, _) = s.raw_get_status(&format!("/v1/channels/{name}/status"));
        assert_eq!(code, 400, "{name}");
    }
    let r = client()
        .get(s.url("/v1/channels/nosuch/status"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = client().get(s.url("/v1/nothing")).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

fn status_page_lists_channels_and_escapes(backend: Backend) {
    let s = TestServer::start_on(backend);
    let evil = report(
        "n9",
        "1.0.0",
        "2.0.0",
        "failed",
        Some("<script>alert(1)</script>"),
    );
    assert_eq!(post_report(&s, &evil).status(), StatusCode::CREATED);
    assert_eq!(
        admin(&s, "pause", ADMIN_TOKEN, None).status(),
        StatusCode::OK
    );
    let r = client().get(s.url("/")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().unwrap();
    assert!(html.contains("<td>stable</td>"));
    assert!(html.contains("demo-os 2.0.0"));
    assert!(html.contains("30 %"));
    assert!(html.contains("paused"));
    assert!(html.contains("failed: 1"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"));
    assert!(html.contains("<td>no transfer figures yet</td>"), "{html}");
    let installed = with_transfer(report("n8", "1.0.0", "2.0.0", "installed", None), 100, 900);
    assert_eq!(post_report(&s, &installed).status(), StatusCode::CREATED);
    let html = client().get(s.url("/")).send().unwrap().text().unwrap();
    assert!(
        html.contains("<td>fetched 100 B, reused 900 B over 1 install (90 % reused)</td>"),
        "{html}"
    );
}

#[test]
fn the_dashboard_allows_only_its_own_script_and_style() {
    let s = TestServer::start();
    let page = client().get(s.url("/")).send().unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self';",
        "style-src 'self';",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("unsafe"),
        "no inline script or style, no eval: {csp}"
    );
    let html = page.text().unwrap();
    assert!(html.contains(r#"<script src="/dashboard.js" defer></script>"#));
    assert!(!html.contains(" style="), "no inline style attribute");
    for (path, kind) in [
        ("/dashboard.js", "text/javascript; charset=utf-8"),
        ("/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let r = client().get(s.url(path)).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], kind);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let text = r.text().unwrap();
        assert!(
            !text.contains("innerHTML") && !text.contains("eval("),
            "{path}"
        );
    }
    let posted = client().post(s.url("/dashboard.js")).send().unwrap();
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
}

fn nodes(s: &TestServer, query: &str) -> Response {
    client()
        .get(s.url(&format!("/v1/nodes{query}")))
        .send()
        .unwrap()
}

fn the_node_list_is_searched_and_bounded_by_the_server(backend: Backend) {
    let s = TestServer::start_on(backend);
    for node in ["edge-1", "edge-2", "core-1"] {
        let r = report(node, "1.0.0", "2.0.0", "committed", None);
        assert_eq!(post_report(&s, &r).status(), StatusCode::CREATED);
    }
    let failed = report("edge-1", "2.0.0", "3.0.0", "failed", Some("no space"));
    assert_eq!(post_report(&s, &failed).status(), StatusCode::CREATED);
    let page: Value = nodes(&s, "?q=edge&limit=1").json().unwrap();
    assert_eq!(page["total"], 2);
    assert_eq!(page["limit"], 1);
    assert_eq!(
        page["nodes"],
        json!([{"node_id": "edge-1", "channel": "stable", "version": "2.0.0",
                "to_version": "3.0.0", "outcome": "failed", "reason": "no space",
                "last_seen": page["nodes"][0]["last_seen"], "last_install_transfer": null}]),
        "the node's latest report, newest first"
    );
    let next: Value = nodes(&s, "?q=edge&limit=1&offset=1").json().unwrap();
    assert_eq!(next["nodes"][0]["node_id"], "edge-2");
    let all: Value = nodes(&s, "").json().unwrap();
    assert_eq!(
        (all["total"].clone(), all["limit"].clone()),
        (json!(3), json!(100))
    );
    let long_query = format!("?q={}", "x".repeat(129));
    for bad in [
        "?limit=501",
        "?limit=ten",
        "?offset=-1",
        "?order=id",
        long_query.as_str(),
    ] {
        let r = nodes(&s, bad);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let fleet: Value = client()
        .get(s.url("/v1/channels"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(fleet["channels"][0]["channel"], "stable");
    assert_eq!(fleet["channels"][0]["nodes"]["total"], 3);
    let hourly = &fleet["channels"][0]["current_release"]["hourly"];
    let committed: u64 = hourly
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcomes"]["committed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(committed, 3, "this hour's reports about 2.0.0: {hourly}");
}

/// Each node's row carries the transfer of its latest `installed` report in that channel,
/// whatever its latest report is; `null` when that install carried none (an older agent) or
/// the node never reported an install.
fn the_node_list_gives_each_nodes_last_install_transfer(backend: Backend) {
    let s = TestServer::start_on(backend);
    for body in [
        with_transfer(report("n1", "1.0.0", "2.0.0", "installed", None), 100, 900),
        report("n1", "1.0.0", "2.0.0", "committed", None),
        with_transfer(report("n2", "1.0.0", "2.0.0", "installed", None), 300, 700),
        report("n2", "1.0.0", "2.0.0", "installed", None),
        report("n3", "1.0.0", "2.0.0", "committed", None),
        with_transfer(report("n4", "1.0.0", "2.0.0", "installed", None), 50, 950),
        report("n4", "1.0.0", "2.0.0", "failed", Some("no space")),
    ] {
        assert_eq!(
            post_report(&s, &body).status(),
            StatusCode::CREATED,
            "{body}"
        );
    }
    let page: Value = nodes(&s, "").json().unwrap();
    let by_node: Vec<(&str, &Value)> = page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node_id"].as_str().unwrap(), &n["last_install_transfer"]))
        .collect();
    let transfer = |fetched: u64, reused: u64| json!({"bytes_fetched": fetched, "bytes_reused": reused, "bundle_bytes": 1000});
    assert_eq!(
        by_node,
        [
            ("n4", &transfer(50, 950)),
            ("n3", &Value::Null),
            ("n2", &Value::Null),
            ("n1", &transfer(100, 900)),
        ],
        "{page}"
    );
}

/// The body of a refused request: exactly `{"error": "…"}`, so an agent can log the reason.
fn refusal_reason(r: Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().unwrap();
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 1, "only an error field: {body}");
    object["error"].as_str().unwrap().to_owned()
}

fn reasons_with_hidden_characters_are_refused_with_the_cause(backend: Backend) {
    let s = TestServer::start_on(backend);
    for (reason, code_point) in [
        ("disk\u{0}full", "U+0000"),
        ("health \u{202e}exe.txt", "U+202E"),
        ("two\nlines", "U+000A"),
    ] {
        let r = post_report(&s, &report("n1", "1.0.0", "2.0.0", "failed", Some(reason)));
        let error = refusal_reason(r, StatusCode::BAD_REQUEST);
        assert!(error.contains(code_point), "{error}");
    }
    let r = post_report(&s, &report("bad node", "1.0.0", "2.0.0", "failed", None));
    let error = refusal_reason(r, StatusCode::BAD_REQUEST);
    assert!(error.contains("node_id"), "{error}");
    assert_eq!(s.stored_reports(), 0);
    let r = admin(
        &s,
        "pause",
        ADMIN_TOKEN,
        Some(json!({"reason": "bad\u{202e}txt"})),
    );
    let error = refusal_reason(r, StatusCode::BAD_REQUEST);
    assert!(error.contains("control"), "{error}");
    assert!(!s.repo().join("channels/stable.pause").exists());
}

fn channel_names_follow_the_signers_rule(backend: Backend) {
    let s = TestServer::start_on(backend);
    let channel = "Edge+fips";
    std::fs::write(
        s.repo().join(format!("channels/{channel}.json")),
        crate::util::channel_doc(4, "3.0.0"),
    )
    .unwrap();
    let mut body = report("n1", "2.0.0", "3.0.0", "committed", None);
    body["channel"] = json!(channel);
    assert_eq!(post_report(&s, &body).status(), StatusCode::CREATED);
    for path in ["Edge+fips", "Edge%2Bfips"] {
        let r = client()
            .get(s.url(&format!("/v1/channels/{path}/status")))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let st: Value = r.json().unwrap();
        assert_eq!(st["channel"], channel);
        assert_eq!(st["nodes"]["by_version"], json!({"3.0.0": 1}));
    }
    let html = client().get(s.url("/")).send().unwrap().text().unwrap();
    assert!(html.contains("<td>Edge+fips</td>"), "{html}");
}

#[test]
fn the_pause_file_is_read_not_just_seen() {
    let s = TestServer::start();
    let pause_file = s.repo().join("channels/stable.pause");
    std::fs::write(
        &pause_file,
        r#"{"paused": false, "reason": "resumed by hand"}"#,
    )
    .unwrap();
    let st = status(&s);
    assert_eq!(st["paused"], false);
    assert_eq!(st["pause"], Value::Null);
    std::fs::write(&pause_file, "stop!").unwrap();
    let st = status(&s);
    assert_eq!(st["paused"], true, "unreadable content pauses");
    std::fs::write(&pause_file, r#"{"paused": true, "reason": "by hand"}"#).unwrap();
    assert_eq!(status(&s)["pause"]["reason"], "by hand");
    let r = admin(&s, "resume", ADMIN_TOKEN, None);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"channel": "stable", "paused": false})
    );
    assert_eq!(status(&s)["paused"], false);
}

const STATUS_TOKEN: &str = "status-token-0123456789";

#[test]
fn status_token_guards_the_page_and_the_status() {
    let s = TestServer::start_with(|c| {
        c.status_token = Some(server::Token::new("status", STATUS_TOKEN).unwrap());
    });
    assert_eq!(
        post_report(&s, &report("secret-node", "1", "2.0.0", "failed", None)).status(),
        StatusCode::CREATED,
        "reports still take the report token"
    );
    for path in [
        "/",
        "/v1/channels/stable/status",
        "/v1/channels/nosuch/status",
        "/v1/channels",
        "/v1/nodes?q=secret",
    ] {
        for token in [None, Some(REPORT_TOKEN), Some("wrong-token-0123456789")] {
            let mut req = client().get(s.url(path));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let r = req.send().unwrap();
            assert!(
                r.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic realm="),
                "{path}: browsers ask for the token"
            );
            let error = refusal_reason(r, StatusCode::UNAUTHORIZED);
            assert!(!error.contains("secret-node"), "{error}");
        }
    }
    let r = client()
        .get(s.url("/v1/channels/stable/status"))
        .bearer_auth(STATUS_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let failures = &r.json::<Value>().unwrap()["current_release"]["failures"];
    assert_eq!(failures[0]["node_id"], "secret-node");
    let r = client()
        .get(s.url("/"))
        .basic_auth("operator", Some(STATUS_TOKEN))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().unwrap().contains("secret-node"));
    let r = client().get(s.url("/root.json")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "repository files stay public");
}

#[test]
fn admin_routes_take_no_basic_credentials() {
    let s = TestServer::start();
    let r = client()
        .post(s.url("/v1/channels/stable/pause"))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    refusal_reason(r, StatusCode::UNAUTHORIZED);
    assert!(!s.repo().join("channels/stable.pause").exists());
}

/// Stores reports received at the given times in the database of a server not yet started.
fn seed_reports(config: &server::Config, rows: &[(&str, i64)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = match &config.database_url {
            Some(url) => server::db::Db::connect(url, None).await.unwrap(),
            None => server::db::Db::open(&config.data_dir).unwrap(),
        };
        for (node, received_at) in rows {
            let report = serde_json::from_value(report(node, "1.0.0", "2.0.0", "committed", None));
            db.insert(report.unwrap(), *received_at).await.unwrap();
        }
    });
}

fn old_and_surplus_reports_are_pruned_at_start(backend: Backend) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = 24 * 3600;
    let s = TestServer::start_on_with(backend, |c| {
        seed_reports(
            c,
            &[
                ("ancient", 946_684_800),
                ("n1", now - 3 * day),
                ("n2", now - 2 * day),
                ("n3", now - day),
                ("n4", now),
            ],
        );
        c.retention.max_age = std::time::Duration::from_secs(30 * day as u64);
        c.retention.max_rows = 3;
    });
    assert_eq!(s.stored_reports(), 3);
    assert_eq!(status(&s)["nodes"]["total"], 3, "n2, n3 and n4 are kept");
}

fn reports_are_pruned_while_serving(backend: Backend) {
    let s = TestServer::start_on_with(backend, |c| {
        c.retention.max_rows = 2;
        c.retention.interval = std::time::Duration::from_millis(100);
    });
    for node in ["n1", "n2", "n3", "n4"] {
        let r = post_report(&s, &report(node, "1.0.0", "2.0.0", "committed", None));
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.stored_reports() > 2 {
        assert!(std::time::Instant::now() < deadline, "never pruned");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(s.stored_reports(), 2);
    assert_eq!(status(&s)["nodes"]["total"], 2);
}
