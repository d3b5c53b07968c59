//! Two servers on one PostgreSQL database serve one fleet: reports sent to either, retried
//! on the other with the same id, show up once in both status views.
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::util::{client, Backend, PgCluster, TestServer, REPORT_TOKEN};

const NODES: usize = 60;

fn post(s: &TestServer, body: &Value) -> StatusCode {
    client()
        .post(s.url("/v1/reports"))
        .bearer_auth(REPORT_TOKEN)
        .json(body)
        .send()
        .unwrap()
        .status()
}

fn status(s: &TestServer) -> Value {
    client()
        .get(s.url("/v1/channels/stable/status"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn report(node: usize, outcome: &str) -> Value {
    json!({"id": format!("{outcome}-{node}"), "node_id": format!("node-{node}"),
           "channel": "stable", "from_version": "1.0.0", "to_version": "2.0.0",
           "outcome": outcome})
}

/// Every node reports `outcome` to one server (alternating) and retries it on the other, from
/// four threads at once.
fn report_all(servers: &[TestServer; 2], outcome: &str) {
    std::thread::scope(|scope| {
        for worker in 0..4 {
            scope.spawn(move || {
                for node in (worker..NODES).step_by(4) {
                    let body = report(node, outcome);
                    let (first, retry) = (&servers[node % 2], &servers[1 - node % 2]);
                    assert_eq!(post(first, &body), StatusCode::CREATED);
                    assert_eq!(post(retry, &body), StatusCode::OK, "a retry is not stored");
                }
            });
        }
    });
}

fn assert_seen_by_both(servers: &[TestServer; 2], outcome: &str) {
    for s in servers {
        let st = status(s);
        assert_eq!(st["nodes"]["total"], NODES, "{st}");
        assert_eq!(st["current_release"]["outcomes"][outcome], NODES, "{st}");
    }
}

#[test]
fn two_servers_on_one_postgres_see_every_report_once() {
    let pg = Arc::new(PgCluster::start());
    // Started at once, both migrate the empty database: the advisory lock lets one do it.
    let servers = std::thread::scope(|scope| {
        let start = || TestServer::start_on(Backend::Postgres(Arc::clone(&pg)));
        let (a, b) = (scope.spawn(start), scope.spawn(start));
        [a.join().unwrap(), b.join().unwrap()]
    });
    // Both servers cache the empty summary first: the other's reports must invalidate it.
    for s in &servers {
        assert_eq!(status(s)["nodes"]["total"], 0);
    }
    report_all(&servers, "installed");
    assert_seen_by_both(&servers, "installed");
    report_all(&servers, "committed");
    assert_seen_by_both(&servers, "committed");
    assert_eq!(
        servers[0].stored_reports(),
        2 * NODES as i64,
        "none lost, none twice"
    );
    let ids = pg.query_ints("SELECT COUNT(DISTINCT (node_id, report_id)) FROM reports");
    assert_eq!(ids, [2 * NODES as i64]);
}
