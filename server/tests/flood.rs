//! A report flood from holders of the fleet's report token: one node id sending as fast as
//! keep-alive allows, and invented node ids. The per-node rate answers 429 with
//! `Retry-After`, the limiter tracks a bounded number of ids, and the row cap holds as
//! reports arrive, taken from the noisiest node's history and never a quiet node's latest.
//! Each test sends a fixed number of requests and asserts on counts, never on clocks.
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::util::{client, on_both_backends, Backend, TestServer, REPORT_TOKEN};

on_both_backends!(
    a_flooding_node_is_held_to_its_rate_and_others_still_report,
    the_row_cap_holds_as_reports_arrive_and_spares_quiet_nodes,
);

/// POSTs a report of `node` (`n`-th of its own) on the keep-alive `http` client.
fn send(http: &Client, s: &TestServer, node: &str, n: usize) -> reqwest::blocking::Response {
    http.post(s.url("/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .json(
            &json!({"id": format!("{node}-{n}"), "node_id": node, "channel": "stable",
                      "from_version": "1.0.0", "to_version": "2.0.0", "outcome": "installed"}),
        )
        .send()
        .unwrap()
}

/// How many of `n` reports from `node` got each status.
fn flood(s: &TestServer, node: &str, n: usize) -> (usize, usize) {
    let http = client();
    let (mut created, mut limited) = (0, 0);
    for i in 0..n {
        let r = send(&http, s, node, i);
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=3600).contains(&wait), "Retry-After: {wait}");
                let body: Value = r.json().unwrap();
                assert!(body["error"].as_str().unwrap().contains(node), "{body}");
                limited += 1;
            }
            other => panic!("report {i} of {node}: {other}"),
        }
    }
    (created, limited)
}

fn a_flooding_node_is_held_to_its_rate_and_others_still_report(backend: Backend) {
    let s = TestServer::start_on_with(backend, |c| {
        c.report_rate.burst = 5;
        c.report_rate.interval = Duration::from_secs(3600);
    });
    assert_eq!(flood(&s, "flooder", 200), (5, 195));
    assert_eq!(
        flood(&s, "quiet", 1),
        (1, 0),
        "another node is not held back"
    );
    assert_eq!(s.stored_reports(), 6);
}

fn the_row_cap_holds_as_reports_arrive_and_spares_quiet_nodes(backend: Backend) {
    let s = TestServer::start_on_with(backend, |c| {
        c.retention.max_rows = 20;
        c.report_rate.burst = 1000;
    });
    let quiet: Vec<String> = (0..8).map(|n| format!("quiet-{n}")).collect();
    for node in &quiet {
        assert_eq!(flood(&s, node, 2), (2, 0));
    }
    assert_eq!(flood(&s, "flooder", 150), (150, 0));
    assert_eq!(
        s.stored_reports(),
        20,
        "the cap holds without waiting for the hourly pruning"
    );
    let nodes: Value = client()
        .get(s.url("/v1/nodes?q=quiet"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        nodes["total"], 8,
        "every quiet node is still counted: {nodes}"
    );
    // 16 rows of quiet nodes and the flooder's 4 newest: its older history went first.
    let flooder: Value = client()
        .get(s.url("/v1/nodes?q=flooder"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(flooder["total"], 1, "{flooder}");
}

#[test]
fn invented_node_ids_cannot_grow_the_limiter_without_bound() {
    let s = TestServer::start_with(|c| {
        c.report_rate.burst = 1;
        c.report_rate.interval = Duration::from_secs(3600);
        c.report_rate.max_nodes = 10;
    });
    let outcomes: Vec<(usize, usize)> = (0..30).map(|n| flood(&s, &format!("id-{n}"), 1)).collect();
    let created = outcomes.iter().map(|o| o.0).sum::<usize>();
    assert_eq!(
        created, 10,
        "only as many ids as the limiter tracks: {outcomes:?}"
    );
    assert_eq!(s.stored_reports(), 10);
}
