//! Reports that cannot be sent (bad token, server down) stay queued on the node and go out
//! at the next poll; they never change the slot state. Poll backoff stays bounded.

use std::path::Path;
use std::time::Duration;

use partitions::SlotId::{A, B};
use serde_json::json;
use updater::daemon::{next_wait, Poll};
use updater::state::Phase;
use updater::BootCheck;

use super::{daemon, Fleet, RepoServer, TandemServer, CHANNEL};

fn queued(agent: &updater::Agent) -> Vec<(String, String)> {
    agent
        .reports()
        .pending()
        .unwrap()
        .into_iter()
        .map(|(_, r)| (r.outcome.to_string(), r.to_version))
        .collect()
}

#[test]
fn unsent_reports_stay_queued_and_go_out_at_the_next_poll() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let work = f.w.dir.path().to_owned();
    let server = TandemServer::start(&work, &f.repo);

    // A wrong report token: the server refuses the report, the install stands.
    let bad = f.w.path("bad.token");
    std::fs::write(&bad, "not-the-token\n").unwrap();
    f.point_at(&server.url, "node-7", Some(&bad));
    let agent = f.agent(A);
    assert!(matches!(
        daemon(&agent).poll_once().unwrap(),
        Poll::Installed(_)
    ));
    assert!(f.holds(B, &v2));
    assert_eq!(queued(&agent), [("installed".into(), "2.0.0".into())]);
    let pending = agent.reports().pending().unwrap();
    let transfer = pending[0]
        .1
        .transfer
        .expect("installed carries its transfer");
    assert!(
        transfer.bytes_fetched > 0 && transfer.bundle_bytes >= transfer.bytes_fetched,
        "{transfer:?}"
    );
    assert_eq!(server.status(CHANNEL)["nodes"]["total"], 0);

    // The server goes down; boot-check commits all the same, its report is queued too.
    drop(server);
    assert_eq!(f.w.boot(), B);
    let agent = f.agent(B);
    let check = agent.boot_check().unwrap();
    assert!(
        matches!(check, BootCheck::Committed { slot: B, .. }),
        "{check:?}"
    );
    let before = (f.slot_hashes(), f.w.boot_state(A), f.w.boot_state(B));
    daemon(&agent).report_boot_check(&check);
    assert_eq!(
        queued(&agent),
        [
            ("installed".into(), "2.0.0".into()),
            ("committed".into(), "2.0.0".into())
        ]
    );
    assert_eq!(
        (f.slot_hashes(), f.w.boot_state(A), f.w.boot_state(B)),
        before
    );
    assert!(matches!(
        f.w.state().phase,
        Phase::Committed { slot: B, .. }
    ));
    assert!(f.w.boot_state(B).successful);

    // Back up (same database, a new port), the right token: the next poll sends both.
    let server = TandemServer::start(&work, &f.repo);
    f.point_at(&server.url, "node-7", Some(&server.report_token_file));
    let agent = f.agent(B);
    match daemon(&agent).poll_once().unwrap() {
        Poll::UpToDate { version } => assert_eq!(version, "2.0.0"),
        other => panic!("expected up to date, got: {other}"),
    }
    assert!(queued(&agent).is_empty(), "{:?}", queued(&agent));
    assert_eq!(
        (f.slot_hashes(), f.w.boot_state(A), f.w.boot_state(B)),
        before
    );
    let status = server.status(CHANNEL);
    assert_eq!(
        status["nodes"]["by_version"],
        json!({"2.0.0": 1}),
        "{status:#}"
    );
    assert_eq!(
        status["current_release"]["outcomes"]["committed"], 1,
        "{status:#}"
    );
    let release = &status["current_release"];
    assert_eq!(release["transfer_reports"], 1, "{status:#}");
    assert_eq!(
        release["bytes_fetched"],
        json!(transfer.bytes_fetched),
        "{status:#}"
    );
    assert_eq!(
        release["bytes_reused"],
        json!(transfer.bytes_reused),
        "{status:#}"
    );
}

#[test]
fn poll_waits_grow_with_failures_and_stay_bounded() {
    let interval = Duration::from_secs(60);
    let cap = Duration::from_secs(6 * 3600);
    let mut previous_base = Duration::ZERO;
    for failures in 0..40u32 {
        let base = interval
            .saturating_mul(2u32.saturating_pow(failures.min(16)))
            .min(cap);
        let wait = next_wait(interval, failures);
        assert!(
            wait >= base.mul_f64(0.9) && wait <= base.mul_f64(1.1),
            "{failures} failures: {wait:?} (base {base:?})"
        );
        assert!(base >= previous_base);
        previous_base = base;
    }
    assert!(next_wait(interval, u32::MAX) <= cap.mul_f64(1.1));

    // A server that answers 404 for the channel makes a poll fail (counted for backoff)
    // and installs nothing.
    let mut f = Fleet::new();
    let server = RepoServer::start(&f.w.path("empty-repo"));
    f.point_at(&server.url, "node-1", None);
    let slots = f.slot_hashes();
    let agent = f.agent(A);
    let error = daemon(&agent).poll_once().unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert_eq!(f.slot_hashes(), slots);
}

#[test]
fn a_report_refused_for_its_rate_stays_queued_until_the_server_takes_it() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let work = f.w.dir.path().to_owned();
    let one_an_hour = ["--report-burst", "1", "--report-interval", "1h"].map(Path::new);
    let server = TandemServer::start_with(&work, &f.repo, &one_an_hour);
    f.point_at(&server.url, "node-9", Some(&server.report_token_file));

    // The install's report spends the node's one report of the hour.
    let agent = f.agent(A);
    assert!(matches!(
        daemon(&agent).poll_once().unwrap(),
        Poll::Installed(_)
    ));
    assert!(queued(&agent).is_empty(), "{:?}", queued(&agent));

    // The commit's report is answered 429 with Retry-After: kept, at every poll, not dropped.
    assert_eq!(f.w.boot(), B);
    let agent = f.agent(B);
    let check = agent.boot_check().unwrap();
    let mut d = daemon(&agent);
    d.report_boot_check(&check);
    let committed = [("committed".to_owned(), "2.0.0".to_owned())];
    assert_eq!(queued(&agent), committed);
    assert!(matches!(d.poll_once().unwrap(), Poll::UpToDate { .. }));
    assert_eq!(queued(&agent), committed);
    let outcomes = server.status(CHANNEL)["current_release"]["outcomes"].clone();
    assert_eq!(
        (&outcomes["installed"], &outcomes["committed"]),
        (&json!(1), &json!(0))
    );
    drop(d);
    drop(server);

    // The server again with its default rate (same database): the next poll delivers it.
    let server = TandemServer::start(&work, &f.repo);
    f.point_at(&server.url, "node-9", Some(&server.report_token_file));
    let agent = f.agent(B);
    assert!(matches!(
        daemon(&agent).poll_once().unwrap(),
        Poll::UpToDate { .. }
    ));
    assert!(queued(&agent).is_empty(), "{:?}", queued(&agent));
    let status = server.status(CHANNEL);
    let outcomes = &status["current_release"]["outcomes"];
    assert_eq!(
        (&outcomes["installed"], &outcomes["committed"]),
        (&json!(0), &json!(1)),
        "{status:#}"
    );
}

#[test]
fn a_node_key_waits_for_approval_with_its_reports_queued_then_signs_them() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    // No report token: the node's own key, enrolled without a token, is all it has.
    f.point_at(&server.url, "node-k", None);
    f.w.extra_config.push_str("enroll = true\n");
    let agent = f.agent(A);
    assert!(matches!(
        daemon(&agent).poll_once().unwrap(),
        Poll::Installed(_)
    ));
    assert_eq!(
        queued(&agent),
        [("installed".into(), "2.0.0".into())],
        "a key waiting for approval sends nothing"
    );
    let enrollment = agent.status().unwrap().enrollment.expect("recorded");
    assert_eq!(enrollment.status.map(|s| s.as_str()), Some("pending"));
    assert!(
        enrollment
            .describe()
            .contains("pending: waits for an operator's approval"),
        "{}",
        enrollment.describe()
    );
    assert_eq!(server.status(CHANNEL)["nodes"]["total"], 0);

    // The operator approves the key the node shows; the next poll signs and sends.
    let approve = json!({ "key_id": enrollment.key_id }).to_string();
    let (code, body) = super::http(
        server.addr,
        "POST",
        "/v1/enrollments/node-k/approve",
        Some(&server.admin_token),
        &approve,
    );
    assert_eq!(code, 200, "{body}");
    let agent = f.agent(A);
    assert!(matches!(
        daemon(&agent).poll_once().unwrap(),
        Poll::RebootPending { .. }
    ));
    assert!(
        queued(&agent).is_empty(),
        "the queued report went out signed"
    );
    assert_eq!(server.status(CHANNEL)["nodes"]["total"], 1);
    let enrollment = agent.status().unwrap().enrollment.expect("recorded");
    assert_eq!(enrollment.status.map(|s| s.as_str()), Some("approved"));

    // Revoked: the next daemon asks again at its start, stops signing, and `status` says why.
    let (code, body) = super::http(
        server.addr,
        "POST",
        "/v1/nodes/node-k/revoke",
        Some(&server.admin_token),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let agent = f.agent(A);
    daemon(&agent).poll_once().unwrap();
    let enrollment = agent.status().unwrap().enrollment.expect("recorded");
    assert_eq!(enrollment.status, None);
    assert!(
        enrollment.describe().contains("was revoked"),
        "{}",
        enrollment.describe()
    );
}
