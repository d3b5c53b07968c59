//! Reboot leases: the FleetLock protocol driven with curl as Zincati's protocol document
//! describes it, on both report stores; who may take a lease; expiry and an operator's
//! release; a simulated fleet of 50 nodes whose lease log never shows more reboots at once
//! than a group's slots; and two server processes on one PostgreSQL granting exactly the
//! slots to nodes racing for them.
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::util::{
    client, on_both_backends, Backend, PgCluster, TestServer, ADMIN_TOKEN, REPORT_TOKEN,
};

/// `curl` POSTing `body` to `base` + `path` the way the protocol document shows (`-d`, so
/// curl's own form content type); extra arguments before the URL. The status and the body
/// read as JSON (`null` when it is not JSON).
pub fn curl(base: &str, path: &str, body: &str, extra: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-w", "\n%{http_code}", "-d", body])
        .args(extra)
        .arg(format!("{base}{path}"))
        .output()
        .expect("curl is missing: apt-get install curl (scripts/test.sh installs it)");
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(json).unwrap_or(Value::Null),
    )
}

const HEADER: &str = "fleet-lock-protocol: true";

fn params(id: &str, group: &str) -> String {
    json!({"client_params": {"id": id, "group": group}}).to_string()
}

/// A FleetLock request as Zincati sends it: the header, the body, no credentials.
fn zincati(s: &TestServer, path: &str, id: &str, group: &str) -> (u16, Value) {
    curl(&s.url(""), path, &params(id, group), &["-H", HEADER])
}

fn leases_status(s: &TestServer) -> Value {
    client()
        .get(s.url("/v1/leases"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn anonymous_server(backend: Backend) -> TestServer {
    TestServer::start_on_with(backend, |c| {
        c.leases.anonymous = true;
        c.leases.groups.insert("workers".into(), 2);
    })
}

/// The refusal's `kind`, after checking it has the protocol's shape.
fn kind(body: &Value) -> &str {
    assert!(
        body["value"].as_str().is_some_and(|v| !v.is_empty()),
        "{body}"
    );
    body["kind"].as_str().unwrap()
}

fn zincati_protocol_driven_with_curl(backend: Backend) {
    let s = anonymous_server(backend);
    let base = s.url("");
    let (code, body) = curl(&base, "/v1/pre-reboot", &params("a", "default"), &[]);
    assert_eq!((code, kind(&body)), (400, "missing_fleet_lock_header"));
    let (code, body) = curl(
        &base,
        "/v1/pre-reboot",
        &params("a", "default"),
        &["-H", "fleet-lock-protocol: false"],
    );
    assert_eq!((code, kind(&body)), (400, "missing_fleet_lock_header"));
    // One reboot at a time in a group by default; the holder may ask again.
    let (code, granted) = zincati(&s, "/v1/pre-reboot", "a", "default");
    assert_eq!(code, 200);
    assert_eq!(
        (&granted["held"], &granted["group"]),
        (&json!(true), &json!("default"))
    );
    let expires = granted["expires_at"].as_i64().unwrap();
    let status = leases_status(&s);
    assert_eq!(status["leases"][0]["expires_at"], expires, "{status}");
    assert_eq!(
        zincati(&s, "/v1/pre-reboot", "a", "default").0,
        200,
        "recursive"
    );
    let (code, body) = zincati(&s, "/v1/pre-reboot", "b", "default");
    assert_eq!((code, kind(&body)), (409, "failed_lock"));
    assert!(body["value"].as_str().unwrap().contains('a'), "{body}");
    let waiting = &leases_status(&s)["waiting"];
    assert_eq!(waiting[0]["node_id"], "b", "{waiting}");
    assert_eq!(waiting.as_array().unwrap().len(), 1, "{waiting}");
    // Releasing what one does not hold is fine; a's release lets b in.
    let (code, released) = zincati(&s, "/v1/steady-state", "b", "default");
    assert_eq!((code, &released["held"]), (200, &json!(false)));
    assert_eq!(zincati(&s, "/v1/steady-state", "a", "default").0, 200);
    assert_eq!(zincati(&s, "/v1/steady-state", "a", "default").0, 200);
    assert_eq!(zincati(&s, "/v1/pre-reboot", "b", "default").0, 200);
    assert_eq!(
        leases_status(&s)["waiting"],
        json!([]),
        "b waits no more once it holds the lease"
    );
    // A group configured with two slots; groups do not share slots.
    assert_eq!(zincati(&s, "/v1/pre-reboot", "w1", "workers").0, 200);
    assert_eq!(zincati(&s, "/v1/pre-reboot", "w2", "workers").0, 200);
    assert_eq!(zincati(&s, "/v1/pre-reboot", "w3", "workers").0, 409);
    // Bodies that are not a request, and names that break the rules.
    for bad in [
        "",
        "{}",
        r#"{"client_params": {"id": "bad id", "group": "default"}}"#,
        r#"{"client_params": {"id": "n", "group": "../x"}}"#,
    ] {
        let (code, body) = curl(&base, "/v1/pre-reboot", bad, &["-H", HEADER]);
        assert_eq!((code, kind(&body)), (400, "bad_request"), "{bad}");
    }
    let too_big = params(&"x".repeat(5000), "default");
    let (code, body) = curl(&base, "/v1/pre-reboot", &too_big, &["-H", HEADER]);
    assert_eq!((code, kind(&body)), (413, "bad_request"));
    let (code, body) = curl(&base, "/v1/steady-state", "", &["-X", "GET", "-H", HEADER]);
    assert_eq!((code, kind(&body)), (405, "bad_request"));
    let status = leases_status(&s);
    let held: Vec<_> = status["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{} {}", l["group"], l["node_id"]).replace('"', ""))
        .collect();
    assert_eq!(held, ["default b", "workers w1", "workers w2"], "{status}");
    assert_eq!(
        s.lease_events(),
        [
            "default a acquired",
            "default a released",
            "default b acquired",
            "workers w1 acquired",
            "workers w2 acquired"
        ]
    );
}

on_both_backends!(
    zincati_protocol_driven_with_curl,
    the_failure_budget_pauses_a_failing_release,
    fifty_nodes_never_reboot_more_than_their_groups_slots_and_a_bad_release_stops_early,
);

#[test]
fn a_lease_needs_the_report_token_unless_the_operator_allows_anonymous_clients() {
    let s = TestServer::start();
    let base = s.url("");
    let body = params("n1", "default");
    let (code, refused) = curl(&base, "/v1/pre-reboot", &body, &["-H", HEADER]);
    assert_eq!((code, kind(&refused)), (401, "unauthorized"));
    let bearer = format!("Authorization: Bearer {REPORT_TOKEN}");
    let with_token = ["-H", HEADER, "-H", bearer.as_str()];
    assert_eq!(curl(&base, "/v1/pre-reboot", &body, &with_token).0, 200);
    assert_eq!(curl(&base, "/v1/steady-state", &body, &with_token).0, 200);
    let open = anonymous_server(Backend::Sqlite);
    let wrong = [
        "-H",
        HEADER,
        "-H",
        "Authorization: Bearer wrong-token-0123456789",
    ];
    let (code, refused) = curl(&open.url(""), "/v1/pre-reboot", &body, &wrong);
    assert_eq!(
        (code, kind(&refused)),
        (401, "unauthorized"),
        "a wrong token is refused even where anonymous clients are allowed"
    );
    let none = TestServer::start_with(|c| c.report_token = None);
    let (code, refused) = curl(&none.url(""), "/v1/pre-reboot", &body, &with_token);
    assert_eq!((code, kind(&refused)), (403, "unauthorized"));
}

/// Polls `GET /v1/leases` until `done` holds of it (a clock has to pass a lease's expiry).
fn wait_for_leases(s: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = leases_status(s);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unreleased_lease_expires_shows_as_expired_and_an_operator_can_free_one() {
    let s = TestServer::start_with(|c| {
        c.leases.anonymous = true;
        c.leases.ttl = Duration::from_secs(1);
    });
    assert_eq!(zincati(&s, "/v1/pre-reboot", "stuck", "default").0, 200);
    let status = wait_for_leases(&s, "expired", |st| st["leases"][0]["expired"] == true);
    assert_eq!(status["leases"][0]["node_id"], "stuck");
    assert_eq!(status["ttl_secs"], 1);
    // The next request of the group reclaims it.
    assert_eq!(zincati(&s, "/v1/pre-reboot", "next", "default").0, 200);
    assert_eq!(
        s.lease_events(),
        [
            "default stuck acquired",
            "default stuck expired",
            "default next acquired"
        ]
    );
    let free = |token: Option<&str>, node: &str| {
        let req = client().post(s.url(&format!("/v1/leases/default/{node}/release")));
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        req.send().unwrap().status()
    };
    assert_eq!(free(None, "next"), StatusCode::UNAUTHORIZED);
    assert_eq!(free(Some(REPORT_TOKEN), "next"), StatusCode::UNAUTHORIZED);
    assert_eq!(free(Some(ADMIN_TOKEN), "next"), StatusCode::OK);
    assert_eq!(free(Some(ADMIN_TOKEN), "next"), StatusCode::NOT_FOUND);
    assert_eq!(
        s.lease_events().last().map(String::as_str),
        Some("default next freed")
    );
    assert!(leases_status(&s)["leases"].as_array().unwrap().is_empty());
}

/// The most leases held at once per group, replaying the log.
fn most_at_once(events: &[String]) -> BTreeMap<String, i64> {
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    let mut most: BTreeMap<String, i64> = BTreeMap::new();
    for e in events {
        let mut words = e.split(' ');
        let (group, _node, event) = (
            words.next().unwrap(),
            words.next().unwrap(),
            words.next().unwrap(),
        );
        let now = held.entry(group.to_owned()).or_default();
        *now += if event == "acquired" { 1 } else { -1 };
        assert!(*now >= 0, "a release without a lease: {e}");
        let top = most.entry(group.to_owned()).or_default();
        *top = (*top).max(*now);
    }
    most
}

fn post_report(s: &TestServer, node: &str, to: &str, outcome: &str) -> StatusCode {
    client()
        .post(s.url("/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .json(
            &json!({"node_id": node, "channel": "stable", "from_version": "1.0.0",
                      "to_version": to, "outcome": outcome}),
        )
        .send()
        .unwrap()
        .status()
}

/// Takes `node`'s lease, retrying while its group is full (a node's lease loop).
fn take_lease(s: &TestServer, node: &str, group: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = zincati(s, "/v1/pre-reboot", node, group);
        if code == 200 {
            return;
        }
        assert_eq!((code, kind(&body)), (409, "failed_lock"));
        assert!(Instant::now() < deadline, "{node} never got a lease");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn channel_paused(s: &TestServer) -> bool {
    let r = client()
        .get(s.url("/channels/stable.pause"))
        .send()
        .unwrap();
    r.status() == StatusCode::OK && r.json::<Value>().unwrap()["paused"] == true
}

/// One node's update to `release`: unless the channel is paused, take the lease, install,
/// reboot (`outcome`), release. Whether it updated.
fn update(s: &TestServer, node: &str, group: &str, release: &str, outcome: &str) -> bool {
    if channel_paused(s) {
        return false;
    }
    take_lease(s, node, group);
    assert_eq!(
        post_report(s, node, release, "installed"),
        StatusCode::CREATED
    );
    assert_eq!(post_report(s, node, release, outcome), StatusCode::CREATED);
    assert_eq!(zincati(s, "/v1/steady-state", node, group).0, 200);
    true
}

/// Runs `update` for every node on 8 threads; how many updated.
fn update_fleet(s: &TestServer, nodes: &[(String, &str)], release: &str, outcome: &str) -> usize {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let updated = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some((node, group)) = nodes.get(i) else {
                    return;
                };
                if update(s, node, group, release, outcome) {
                    updated.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    updated.into_inner()
}

fn fifty_nodes_never_reboot_more_than_their_groups_slots_and_a_bad_release_stops_early(
    backend: Backend,
) {
    let s = TestServer::start_on_with(backend, |c| {
        c.leases.anonymous = true;
        c.leases.groups.insert("rack-b".into(), 3);
        c.failure_budget.enabled = true;
    });
    let nodes: Vec<(String, &str)> = (0..50)
        .map(|i| {
            let group = if i % 2 == 0 { "rack-a" } else { "rack-b" };
            (format!("node-{i:02}"), group)
        })
        .collect();
    assert_eq!(update_fleet(&s, &nodes, "2.0.0", "committed"), 50);
    let events = s.lease_events();
    let most = most_at_once(&events);
    assert_eq!(most["rack-a"], 1, "one reboot at a time by default");
    assert!(most["rack-b"] <= 3, "{most:?}");
    let granted = events.iter().filter(|e| e.ends_with(" acquired")).count();
    assert_eq!(granted, 50, "every node rebooted once");
    let status: Value = client()
        .get(s.url("/v1/channels/stable/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["current_release"]["outcomes"]["committed"], 50);
    // A release that rolls back everywhere: the budget pauses the channel after its fifth
    // node, while the threads already past the pause check finish theirs.
    std::fs::write(
        s.repo().join("channels/stable.json"),
        crate::util::channel_doc(2, "3.0.0"),
    )
    .unwrap();
    let updated = update_fleet(&s, &nodes, "3.0.0", "rolled-back");
    assert!(channel_paused(&s));
    assert!(
        (5..5 + 8).contains(&updated),
        "{updated} nodes got the bad release"
    );
}

fn pause_file(s: &TestServer) -> Value {
    serde_json::from_slice(&std::fs::read(s.repo().join("channels/stable.pause")).unwrap()).unwrap()
}

fn the_failure_budget_pauses_a_failing_release(backend: Backend) {
    let s = TestServer::start_on_with(backend, |c| c.failure_budget.enabled = true);
    for node in ["n1", "n2", "n3", "n4"] {
        assert_eq!(
            post_report(&s, node, "2.0.0", "committed"),
            StatusCode::CREATED
        );
    }
    assert_eq!(
        post_report(&s, "n5", "2.0.0", "rolled-back"),
        StatusCode::CREATED
    );
    assert!(!channel_paused(&s), "1 of 5 is within 20 %");
    assert_eq!(
        post_report(&s, "n6", "1.9.0", "failed"),
        StatusCode::CREATED
    );
    assert!(
        !channel_paused(&s),
        "an older release's failure does not count"
    );
    assert_eq!(
        post_report(&s, "n7", "2.0.0", "rolled-back"),
        StatusCode::CREATED
    );
    let pause = pause_file(&s);
    assert_eq!(pause["paused"], true);
    assert_eq!(pause["automatic"], true);
    assert_eq!(
        pause["reason"],
        "paused automatically: 2 of 6 nodes rolled back 2.0.0"
    );
    let status: Value = client()
        .get(s.url("/v1/channels/stable/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["pause"]["automatic"], true, "{status}");
    // Resuming is the operator's decision, and it stands for this release.
    let resumed = client()
        .post(s.url("/v1/channels/stable/resume"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::OK);
    assert_eq!(
        post_report(&s, "n8", "2.0.0", "failed"),
        StatusCode::CREATED
    );
    assert!(!channel_paused(&s), "the operator's resume stands");
    // The next release is watched afresh.
    std::fs::write(
        s.repo().join("channels/stable.json"),
        crate::util::channel_doc(2, "3.0.0"),
    )
    .unwrap();
    for node in ["n1", "n2", "n3", "n4", "n5"] {
        assert_eq!(
            post_report(&s, node, "3.0.0", "failed"),
            StatusCode::CREATED
        );
    }
    assert_eq!(
        pause_file(&s)["reason"],
        "paused automatically: 5 of 5 nodes failed to install 3.0.0"
    );
}

#[test]
fn a_budget_turned_off_never_pauses() {
    let s = TestServer::start();
    for node in ["n1", "n2", "n3", "n4", "n5", "n6"] {
        assert_eq!(
            post_report(&s, node, "2.0.0", "rolled-back"),
            StatusCode::CREATED
        );
    }
    assert!(!channel_paused(&s));
}

/// A server process, killed when dropped (also when the test fails).
#[cfg(feature = "cli")]
struct Process(std::process::Child);

#[cfg(feature = "cli")]
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `tandem-server` process on `pg` serving `repo` with three slots in group `g`, and the
/// address it listens on.
#[cfg(feature = "cli")]
fn server_process(pg: &PgCluster, repo: &std::path::Path) -> (Process, String) {
    let (child, addr) = crate::cli::spawn_listening(
        Command::new(crate::cli::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &pg.url()])
            .arg("--repo")
            .arg(repo)
            .args(["--reboot-group", "g=3", "--anonymous-leases"])
            .env_remove("TANDEM_REPORT_TOKEN")
            .env_remove("TANDEM_ADMIN_TOKEN")
            .env_remove("TANDEM_STATUS_TOKEN"),
    );
    (Process(child), addr)
}

/// Every round, 12 nodes ask the two servers for a lease at the same moment: exactly three
/// get one, whichever server they asked; the holders release and the others race again.
#[cfg(feature = "cli")]
#[test]
fn two_server_processes_on_one_postgres_never_grant_more_than_the_slots() {
    const RACERS: usize = 12;
    let fixture = TestServer::start();
    let pg = PgCluster::start();
    let servers = [
        server_process(&pg, &fixture.repo()),
        server_process(&pg, &fixture.repo()),
    ];
    let bases: Vec<String> = servers
        .iter()
        .map(|(_, addr)| format!("http://{addr}"))
        .collect();
    let mut waiting: Vec<String> = (0..RACERS).map(|i| format!("racer-{i:02}")).collect();
    let mut rounds = 0;
    while !waiting.is_empty() {
        rounds += 1;
        let start = Arc::new(Barrier::new(waiting.len()));
        let granted: Vec<String> = std::thread::scope(|scope| {
            let asks: Vec<_> = waiting
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let (start, base) = (Arc::clone(&start), &bases[i % 2]);
                    scope.spawn(move || {
                        start.wait();
                        let (code, body) =
                            curl(base, "/v1/pre-reboot", &params(node, "g"), &["-H", HEADER]);
                        assert!(code == 200 || code == 409, "{code} {body}");
                        (code == 200).then(|| node.clone())
                    })
                })
                .collect();
            asks.into_iter().filter_map(|a| a.join().unwrap()).collect()
        });
        assert_eq!(granted.len(), waiting.len().min(3), "round {rounds}");
        for (i, node) in granted.iter().enumerate() {
            let (code, _) = curl(
                &bases[i % 2],
                "/v1/steady-state",
                &params(node, "g"),
                &["-H", HEADER],
            );
            assert_eq!(code, 200);
        }
        waiting.retain(|n| !granted.contains(n));
    }
    assert_eq!(rounds, RACERS / 3);
    let events =
        pg.query_texts("SELECT grp || ' ' || node_id || ' ' || event FROM lease_log ORDER BY id");
    assert_eq!(events.len(), 2 * RACERS);
    assert_eq!(most_at_once(&events)["g"], 3);
}
