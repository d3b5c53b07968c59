//! The dashboard in a real browser: headless Chromium loads `/` from a server holding
//! reports of 50 nodes, the test reads what the page shows, types the admin token, presses
//! pause and resume, and checks the channel through the API. Screenshots (desktop and phone
//! widths) are saved under `target/dashboard/` for a person to look at.
use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::util::{client, TestServer, ADMIN_TOKEN, REPORT_TOKEN};

/// A reason with markup in it: the page must show it as text.
const MARKUP_REASON: &str = "<img src=x onerror=alert(1)> stalled at chunk 7";

/// What each install of nodes 3 to 19 fetched, reused and installed: 12.3 MB fetched and
/// 240 MB reused over the 17. Nodes 0 to 2 and 20 to 29 run agents from before transfers.
const FETCHED: u64 = 723_530;
const REUSED: u64 = 14_117_648;
const BUNDLE: u64 = 15_000_000;

/// 50 nodes: 20 committed 2.0.0 (after installing it), 10 installed it, 5 failed, 5 rolled
/// back, 10 committed the older 1.0.0. 2.0.0 is the channel's current release.
fn fleet_reports() -> Vec<Value> {
    let report = |i: usize, from: &str, to: &str, outcome: &str, reason: Option<String>| {
        json!({"node_id": format!("node-{i:02}"), "channel": "stable", "from_version": from,
               "to_version": to, "outcome": outcome, "reason": reason})
    };
    let mut reports = Vec::new();
    for i in 0..50 {
        match i {
            0..20 => {
                let mut install = report(i, "1.0.0", "2.0.0", "installed", None);
                if i >= 3 {
                    install["transfer"] = json!({"bytes_fetched": FETCHED,
                        "bytes_reused": REUSED, "bundle_bytes": BUNDLE});
                }
                reports.push(install);
                reports.push(report(i, "1.0.0", "2.0.0", "committed", None));
            }
            20..30 => reports.push(report(i, "1.0.0", "2.0.0", "installed", None)),
            30..34 => {
                let why = format!("download stalled at chunk {i}");
                reports.push(report(i, "1.0.0", "2.0.0", "failed", Some(why)));
            }
            34 => {
                let why = Some(MARKUP_REASON.to_owned());
                reports.push(report(i, "1.0.0", "2.0.0", "failed", why));
            }
            35..40 => {
                let why = format!("health check web failed on node-{i}");
                reports.push(report(i, "1.0.0", "2.0.0", "rolled-back", Some(why)));
            }
            _ => reports.push(report(i, "0.9.0", "1.0.0", "committed", None)),
        }
    }
    reports
}

fn post_all(s: &TestServer, reports: &[Value]) {
    for r in reports {
        let resp = client()
            .post(s.url("/v1/reports"))
            .bearer_auth(REPORT_TOKEN)
            .json(r)
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{r}");
    }
}

fn api_paused(s: &TestServer) -> bool {
    let status: Value = client()
        .get(s.url("/v1/channels/stable/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    status["paused"].as_bool().unwrap()
}

/// Where screenshots go: `target/dashboard/`, beside the build.
fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("dashboard")
}

/// The trimmed text of the first element matching `selector` ("" when there is none).
fn text(b: &mut Browser, selector: &str) -> String {
    let quoted = serde_json::to_string(selector).unwrap();
    b.eval(&format!(
        "(document.querySelector({quoted})?.textContent ?? '').trim()"
    ))
    .as_str()
    .unwrap()
    .to_owned()
}

fn count(b: &mut Browser, selector: &str) -> u64 {
    let quoted = serde_json::to_string(selector).unwrap();
    b.eval(&format!("document.querySelectorAll({quoted}).length"))
        .as_u64()
        .unwrap()
}

/// A phone's viewport in CSS pixels.
const PHONE: (u32, u32) = (390, 844);

const ROW: &str = r#"#channel-table tr[data-channel="stable"]"#;

/// What the page shows once its script has read the API.
fn check_what_the_page_shows(b: &mut Browser) {
    b.wait_for(
        "document.querySelectorAll('#node-table tbody tr').length === 50",
        "the node table with 50 nodes",
    );
    assert_eq!(text(b, &format!("{ROW} .release")), "demo-os 2.0.0");
    assert_eq!(text(b, &format!("{ROW} .rollout")), "30 %");
    assert_eq!(text(b, &format!("{ROW} .state")), "active");
    assert_eq!(text(b, &format!("{ROW} .nodes")), "50");
    assert_eq!(
        text(b, &format!("{ROW} .transfer")),
        "fetched 12.3 MB, reused 240 MB over 17 installs (95 % reused)"
    );
    let bars = "#version-charts g.version";
    assert_eq!(count(b, bars), 2, "two versions run");
    assert_eq!(
        text(
            b,
            &format!(r#"{bars}[data-version="2.0.0"] text + rect + text"#)
        ),
        "20"
    );
    assert_eq!(
        text(
            b,
            &format!(r#"{bars}[data-version="1.0.0"] text + rect + text"#)
        ),
        "30"
    );
    // The legend counts what the bars count, reports (30 installs: 20 of the nodes that
    // committed installed first); the channel table counts nodes by their latest outcome.
    assert_eq!(
        text(b, "#outcome-charts .legend-what"),
        "reports, last 24 h:"
    );
    for (outcome, n) in [
        ("installed", 30),
        ("committed", 20),
        ("failed", 5),
        ("rolled-back", 5),
    ] {
        let shown = text(b, &format!(r#"#outcome-charts [data-outcome="{outcome}"]"#));
        assert_eq!(shown, format!("{outcome}: {n}"));
    }
    assert_eq!(
        text(b, &format!("{ROW} .outcomes")),
        "installed: 10, committed: 20, rolled-back: 5, failed: 5"
    );
    let heads = "[...document.querySelectorAll('#channel-table th')].map(th => th.textContent)";
    let heads = b.eval(heads);
    assert!(
        heads
            .as_array()
            .unwrap()
            .contains(&json!("nodes by latest outcome")),
        "{heads}"
    );
    assert!(
        count(b, "#outcome-charts svg rect") >= 2,
        "hourly bars drawn"
    );
    assert_eq!(count(b, "#failure-table tbody tr"), 10);
    let failure = r#"#failure-table tr[data-node="node-37"]"#;
    assert_eq!(
        text(b, &format!("{failure} .reason")),
        "health check web failed on node-37"
    );
    let markup = r#"#failure-table tr[data-node="node-34"] .reason"#;
    assert_eq!(text(b, markup), MARKUP_REASON, "markup shown as text");
    assert_eq!(count(b, "main img"), 0, "no element made from a reason");
    let node = r#"#node-table tr[data-node="node-25"]"#;
    assert_eq!(text(b, &format!("{node} .version")), "1.0.0");
    assert_eq!(text(b, &format!("{node} .outcome")), "installed");
    assert_eq!(
        text(b, &format!("{node} .transfer")),
        "",
        "its agent did not say"
    );
    assert_eq!(
        text(b, r#"#node-table tr[data-node="node-05"] .transfer"#),
        "fetched 724 kB, reused 14.1 MB (bundle 15.0 MB)",
        "a committed node shows its install"
    );
}

/// The search box asks the server: typing narrows the table to the matching nodes.
fn check_search(b: &mut Browser) {
    b.type_into("#node-query", "node-4");
    b.wait_for(
        "document.querySelectorAll('#node-table tbody tr').length === 10",
        "the 10 nodes matching node-4",
    );
    assert_eq!(text(b, "#node-count"), "10 nodes");
    assert_eq!(
        text(b, r#"#node-table tr[data-node="node-42"] .version"#),
        "1.0.0"
    );
}

/// Pause and resume with the mouse, the admin token typed once and kept across a reload.
fn check_pause_and_resume(b: &mut Browser, s: &TestServer) {
    let pause = format!(r#"{ROW} button[data-action="pause"]"#);
    assert_eq!(
        b.eval(&format!("document.querySelector('{pause}').disabled")),
        json!(true)
    );
    b.type_into("#admin-token", ADMIN_TOKEN);
    b.click("#admin-keep");
    b.wait_for(
        &format!("!document.querySelector('{pause}').disabled"),
        "an enabled pause button",
    );
    b.click(&pause);
    b.wait_for(
        &format!("document.querySelector('{ROW} .paused')"),
        "the channel paused",
    );
    assert!(
        api_paused(s),
        "the button paused the channel through the API"
    );
    b.navigate(&s.url("/"));
    let resume = format!(r#"{ROW} button[data-action="resume"]"#);
    b.wait_for(
        &format!("document.querySelector('{resume}')?.disabled === false"),
        "a resume button usable with the kept token",
    );
    let field = b.eval("document.getElementById('admin-token').value");
    assert_eq!(field, json!(""), "the token is not shown again");
    b.click(&resume);
    b.wait_for(
        &format!("document.querySelector('{ROW} .active')"),
        "the channel active",
    );
    assert!(
        !api_paused(s),
        "the button resumed the channel through the API"
    );
}

#[test]
fn chromium_shows_the_fleet_and_pauses_a_channel() {
    let s = TestServer::start();
    post_all(&s, &fleet_reports());
    let mut b = Browser::launch(1280, 900);
    b.navigate(&s.url("/"));
    check_what_the_page_shows(&mut b);
    let dir = screenshot_dir();
    b.screenshot(&dir.join("desktop.png"), (1280, 900), false);
    b.screenshot(&dir.join("phone.png"), PHONE, true);
    // Wide tables scroll inside their own box; nothing else may stick out of its section.
    let overflow = "[document.documentElement, ...document.querySelectorAll('header, section')] \
        .filter(e => e.scrollWidth > e.clientWidth) \
        .map(e => `${e.tagName} ${e.querySelector('h2')?.textContent ?? ''}: ${e.scrollWidth}`)";
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": PHONE.0, "height": PHONE.1, "deviceScaleFactor": 1, "mobile": true}),
    );
    assert_eq!(
        b.eval(overflow),
        json!([]),
        "nothing sticks out sideways on a phone"
    );
    b.call("Emulation.clearDeviceMetricsOverride", json!({}));
    b.wait_for("window.innerWidth === 1280", "the desktop viewport again");
    check_search(&mut b);
    check_pause_and_resume(&mut b, &s);
    assert_eq!(
        b.errors(),
        Vec::<String>::new(),
        "no script error or policy violation"
    );
}

#[test]
fn behind_the_status_token_the_dashboard_reads_with_the_browsers_credentials() {
    const STATUS_TOKEN: &str = "status-token-for-the-browser-0123";
    let s = TestServer::start_with(|c| {
        c.status_token = Some(server::Token::new("status", STATUS_TOKEN).unwrap());
    });
    post_all(&s, &fleet_reports()[..3]);
    let mut b = Browser::launch(1280, 900);
    // The operator answers the browser's Basic prompt once; the script's requests to this
    // origin then carry the same credentials.
    b.navigate(&format!("http://operator:{STATUS_TOKEN}@{}/", s.addr));
    b.wait_for(
        "document.querySelectorAll('#node-table tbody tr').length === 2",
        "the node table read through the status token",
    );
    assert_eq!(text(&mut b, &format!("{ROW} .nodes")), "2");
    assert_eq!(
        text(&mut b, &format!("{ROW} .transfer")),
        "no transfer figures yet",
        "installs without transfers show no zeros"
    );
    assert_eq!(b.errors(), Vec::<String>::new());
}

/// A reason as long as a report may carry, most of it one word: nothing to break it at.
fn long_reason() -> String {
    let word = "x".repeat(600);
    format!(
        "health check http://edge.example/{word} failed: {}",
        "timeout ".repeat(40)
    )
    .chars()
    .take(proto::report::MAX_REASON)
    .collect()
}

#[test]
fn at_1280px_the_pause_reason_shows_and_a_long_failure_leaves_the_button_in_view() {
    let s = TestServer::start();
    let failed = json!({"node_id": "node-long", "channel": "stable", "from_version": "1.0.0",
                        "to_version": "2.0.0", "outcome": "failed", "reason": long_reason()});
    post_all(&s, &[failed]);
    let reason = "waiting for the kernel fix";
    let r = client()
        .post(s.url("/v1/channels/stable/pause"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "reason": reason }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Without the script: the server's table shows the reason in the row, not in a tooltip.
    let html = client().get(s.url("/")).send().unwrap().text().unwrap();
    assert!(
        html.contains(&format!(r#"<span class="pause-reason">{reason}</span>"#)),
        "{html}"
    );

    let mut b = Browser::launch(1280, 900);
    b.navigate(&s.url("/"));
    let resume = format!(r#"{ROW} button[data-action="resume"]"#);
    b.wait_for(
        &format!("document.querySelector('{resume}')"),
        "the channel row drawn by the script",
    );
    assert_eq!(text(&mut b, &format!("{ROW} .pause-reason")), reason);
    assert_eq!(
        text(&mut b, &format!("{ROW} .state")),
        format!("paused{reason}")
    );
    b.type_into("#admin-token", ADMIN_TOKEN);
    b.click("#admin-keep");
    b.wait_for(
        &format!("document.querySelector('{resume}')?.disabled === false"),
        "an enabled resume button",
    );
    b.screenshot(
        &screenshot_dir().join("desktop-long-failure.png"),
        (1280, 900),
        false,
    );
    // In view as laid out, before anything scrolls it there.
    let right = b.eval(&format!(
        "document.querySelector('{resume}').getBoundingClientRect().right"
    ));
    let right = right.as_f64().unwrap();
    assert!(
        right > 0.0 && right <= 1280.0,
        "the button ends at x = {right}"
    );
    b.click(&resume);
    b.wait_for(
        &format!("document.querySelector('{ROW} .active')"),
        "the channel resumed",
    );
    assert!(!api_paused(&s));
    assert_eq!(b.errors(), Vec::<String>::new());
}

/// A lease past its expiry, written straight into the store: granted two hours ago, expired
/// one hour ago, never released.
fn insert_stuck_lease(s: &TestServer) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let conn = rusqlite::Connection::open(s.root.path().join("data/tandem.db")).unwrap();
    conn.execute(
        "INSERT INTO reboot_leases (grp, node_id, lease_id, acquired_at, expires_at)
         VALUES ('rack-b', 'node-stuck', 'stuck-1', ?1, ?2)",
        [now - 7200, now - 3600],
    )
    .unwrap();
}

#[test]
fn chromium_shows_leases_their_expiry_the_log_an_automatic_pause_and_the_audit_log() {
    let s = TestServer::start_with(|c| {
        c.leases.anonymous = true;
        // Half a minute past the hour, so the page shows "1 h 0 min" however long it
        // takes to load, and never sits on the edge between two minutes.
        c.leases.ttl = std::time::Duration::from_secs(3630);
        c.failure_budget.enabled = true;
    });
    let lease = client()
        .post(s.url("/v1/pre-reboot"))
        .header("fleet-lock-protocol", "true")
        .body(r#"{"client_params": {"id": "node-held", "group": "rack-a"}}"#)
        .send()
        .unwrap();
    assert_eq!(lease.status(), StatusCode::OK);
    insert_stuck_lease(&s);
    let waiting = client()
        .post(s.url("/v1/pre-reboot"))
        .header("fleet-lock-protocol", "true")
        .body(r#"{"client_params": {"id": "node-waiting", "group": "rack-a"}}"#)
        .send()
        .unwrap();
    assert_eq!(
        waiting.status(),
        StatusCode::CONFLICT,
        "rack-a's one slot is taken"
    );
    let failed = |i: usize| {
        json!({"node_id": format!("bad-{i}"), "channel": "stable", "from_version": "1.0.0",
               "to_version": "2.0.0", "outcome": "rolled-back", "reason": "health check failed"})
    };
    post_all(&s, &(0..5).map(failed).collect::<Vec<_>>());
    let mut b = Browser::launch(1280, 900);
    b.navigate(&s.url("/"));
    b.wait_for(
        "document.querySelectorAll('#lease-table tbody tr[data-node]').length === 2",
        "two leases in the lease table",
    );
    let held = r#"#lease-table tr[data-node="node-held"]"#;
    let stuck = r#"#lease-table tr[data-node="node-stuck"]"#;
    assert_eq!(
        text(&mut b, &format!("{held} .expiry")),
        "expires in 1 h 0 min"
    );
    assert_eq!(
        text(&mut b, &format!("{stuck} .expiry")),
        "expired 1 h 0 min ago, never released: reclaimed at the group's next request"
    );
    assert_eq!(text(&mut b, &format!("{stuck} .age")), "2 h 0 min");
    assert_eq!(
        text(&mut b, r#"#lease-log tr[data-event="acquired"] .node"#),
        "node-held"
    );
    assert!(
        text(&mut b, "#lease-summary").starts_with("2 held, 1 waiting; 1 reboot slot(s) per group")
    );
    assert_eq!(
        text(&mut b, r#"#lease-waiting tr[data-node="node-waiting"] td"#),
        "rack-a"
    );
    assert_eq!(
        text(&mut b, &format!("{ROW} .state")),
        "pausedby the failure budgetpaused automatically: 5 of 5 nodes rolled back 2.0.0"
    );
    // An operator frees the stuck lease from the page.
    b.type_into("#admin-token", ADMIN_TOKEN);
    b.click("#admin-keep");
    let release = format!(r#"{stuck} button[data-action="release"]"#);
    b.wait_for(
        &format!("document.querySelector('{release}')?.disabled === false"),
        "an enabled release button",
    );
    b.click(&release);
    b.wait_for(
        "document.querySelector('#lease-log tr[data-event=\"freed\"]')",
        "the freed lease in the log",
    );
    assert_eq!(
        count(&mut b, "#lease-table tbody tr[data-node]"),
        1,
        "only node-held still holds one"
    );
    b.wait_for(
        "document.querySelector('#audit-table tr[data-action=\"release-lease\"]')",
        "the release in the audit log",
    );
    let release_row = r#"#audit-table tr[data-action="release-lease"]"#;
    assert_eq!(
        text(&mut b, &format!("{release_row} .actor")),
        "admin-token"
    );
    assert_eq!(
        text(&mut b, &format!("{release_row} .target")),
        "rack-b/node-stuck"
    );
    let pause_row = r#"#audit-table tr[data-action="pause"]"#;
    assert_eq!(
        text(&mut b, &format!("{pause_row} .actor")),
        "failure-budget"
    );
    assert_eq!(b.errors(), Vec::<String>::new());
}

#[test]
fn chromium_approves_rejects_and_revokes_node_keys() {
    use crate::nodekeys::{enrollment_token, Node};
    let s = TestServer::start();
    let (waiting, refused, enrolled) = (
        Node::new("node-new", 1),
        Node::new("node-odd", 2),
        Node::new("node-old", 3),
    );
    assert_eq!(waiting.enroll(&s, None).0, StatusCode::ACCEPTED);
    assert_eq!(refused.enroll(&s, None).0, StatusCode::ACCEPTED);
    assert_eq!(
        enrolled.enroll(&s, Some(&enrollment_token(&s))).0,
        StatusCode::OK
    );
    let mut b = Browser::launch(1280, 900);
    b.navigate(&s.url("/"));
    b.wait_for(
        "document.querySelectorAll('#enrollment-table tbody tr[data-node]').length === 2",
        "two enrollments waiting",
    );
    let pending = |node: &str| format!(r#"#enrollment-table tr[data-node="{node}"]"#);
    let key_row = |node: &str| format!(r#"#key-table tr[data-node="{node}"]"#);
    assert_eq!(
        text(&mut b, &format!("{} .key", pending("node-new"))),
        format!("{}…", &waiting.key_id()[..16])
    );
    assert_eq!(
        text(&mut b, &format!("{} .actor", key_row("node-old"))),
        "enrollment-token"
    );
    assert_eq!(
        text(&mut b, "#key-summary"),
        "1 enrolled, 2 waiting for approval"
    );
    b.type_into("#admin-token", ADMIN_TOKEN);
    b.click("#admin-keep");
    let approve = format!(r#"{} button[data-action="approve"]"#, pending("node-new"));
    b.wait_for(
        &format!("document.querySelector('{approve}')?.disabled === false"),
        "an enabled approve button",
    );
    b.click(&approve);
    b.wait_for(
        &format!("document.querySelector('{}')", key_row("node-new")),
        "node-new enrolled",
    );
    b.click(&format!(
        r#"{} button[data-action="reject"]"#,
        pending("node-odd")
    ));
    b.wait_for(
        "document.querySelectorAll('#enrollment-table tbody tr[data-node]').length === 0",
        "no enrollment waiting",
    );
    b.click(&format!(
        r#"{} button[data-action="revoke"]"#,
        key_row("node-old")
    ));
    b.wait_for(
        &format!("!document.querySelector('{}')", key_row("node-old")),
        "node-old's key revoked",
    );
    b.wait_for(
        "document.querySelector('#audit-table tr[data-action=\"revoke-node-key\"]')",
        "the revocation in the audit log",
    );
    for action in ["approve-enrollment", "reject-enrollment"] {
        assert_eq!(
            count(
                &mut b,
                &format!(r#"#audit-table tr[data-action="{action}"]"#)
            ),
            1,
            "{action}"
        );
    }
    // What the page did holds for the nodes.
    assert_eq!(waiting.report(&s, "r1"), StatusCode::CREATED);
    assert_eq!(refused.report(&s, "r1"), StatusCode::FORBIDDEN);
    assert_eq!(enrolled.report(&s, "r1"), StatusCode::FORBIDDEN);
    assert_eq!(b.errors(), Vec::<String>::new());
}
