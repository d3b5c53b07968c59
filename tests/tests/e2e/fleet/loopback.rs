//! The quick start's story as a test: the real `tandem-server` on loopback, the agent's
//! daemon installs v2 over HTTP, the reference firmware boots it, boot-check commits; a
//! broken v3 rolls back; slots by SHA-256 and the server's status JSON at each step.

use partitions::SlotId::{A, B};
use serde_json::json;
use updater::daemon::Poll;
use updater::state::Phase;
use updater::BootCheck;
use updater::Refusal;

use super::{daemon, Fleet, TandemServer, CHANNEL};

#[test]
fn v2_commits_and_a_broken_v3_rolls_back_over_tandem_server() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    let v3 = f.w.release("3.0.0", 1, 3);
    f.publish(&v2, 100);
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    f.point_at(&server.url, "node-1", Some(&server.report_token_file));
    let a_v1 = f.w.slot_hash(A);

    // The daemon's poll installs v2 over HTTP into slot B and reports it.
    let agent = f.agent(A);
    let mut d = daemon(&agent);
    match d.poll_once().unwrap() {
        Poll::Installed(o) => assert_eq!((o.target, o.release.version.as_str()), (B, "2.0.0")),
        other => panic!("expected an install of 2.0.0, got: {other}"),
    }
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    assert_eq!(f.w.slot_hash(A), a_v1, "the active slot was written");
    assert!(
        agent.reports().pending().unwrap().is_empty(),
        "the report was not sent"
    );
    let status = server.status(CHANNEL);
    assert_eq!(status["current_release"]["version"], "2.0.0", "{status:#}");
    assert_eq!(
        status["current_release"]["outcomes"]["installed"], 1,
        "{status:#}"
    );
    assert_eq!(
        status["nodes"]["by_version"],
        json!({"factory": 1}),
        "a node on its factory image says so: {status:#}"
    );
    // The node has not rebooted yet: the next poll asks for the reboot again.
    match d.poll_once().unwrap() {
        Poll::RebootPending { version } => assert_eq!(version, "2.0.0"),
        other => panic!("expected the reboot to be asked again, got: {other}"),
    }
    drop(d);

    // Reboot: the firmware tries B; boot-check runs the health check and commits.
    assert_eq!(f.w.boot(), B);
    let agent = f.agent(B);
    let check = agent.boot_check().unwrap();
    assert_eq!(
        check,
        BootCheck::Committed {
            slot: B,
            version: "2.0.0".into(),
            checks: 1,
        }
    );
    daemon(&agent).report_boot_check(&check);
    assert!(f.w.boot_state(B).successful);
    let status = server.status(CHANNEL);
    assert_eq!(
        status["current_release"]["outcomes"]["committed"], 1,
        "{status:#}"
    );
    assert_eq!(
        status["nodes"]["by_version"],
        json!({"2.0.0": 1}),
        "{status:#}"
    );
    assert_eq!(status["paused"], false);

    // v3 is broken: installed into A, tried, fails its health check, rolled back.
    f.publish(&v3, 100);
    f.w.set_healthy(false);
    let b_v2 = f.w.slot_hash(B);
    match daemon(&agent).poll_once().unwrap() {
        Poll::Installed(o) => assert_eq!((o.target, o.release.version.as_str()), (A, "3.0.0")),
        other => panic!("expected an install of 3.0.0, got: {other}"),
    }
    assert!(f.holds(A, &v3), "slot A does not hold v3's image");
    assert_eq!(f.w.slot_hash(B), b_v2, "the active slot was written");
    assert_eq!(f.w.boot(), A);
    let agent = f.agent(A);
    let check = agent.boot_check().unwrap();
    assert!(
        matches!(&check, BootCheck::RolledBack { slot: A, version, .. } if version == "3.0.0"),
        "{check:?}"
    );
    daemon(&agent).report_boot_check(&check);
    assert_eq!(f.w.boot(), B, "the firmware must go back to v2");
    let agent = f.agent(B);
    assert_eq!(
        agent.boot_check().unwrap(),
        BootCheck::Nothing { booted: B }
    );
    // v3 is not tried again while it is the channel's release.
    match daemon(&agent).poll_once().unwrap() {
        Poll::Skipped(Refusal::RolledBackHere { version }) => assert_eq!(version, "3.0.0"),
        other => panic!("expected v3 to be skipped, got: {other}"),
    }
    assert_eq!(f.w.slot_hash(B), b_v2);
    assert!(f.w.boot_state(B).successful && !f.w.boot_state(A).successful);
    assert!(
        matches!(f.w.state().phase, Phase::RolledBack { slot: A, ref release, .. } if release.version == "3.0.0"),
        "{:?}",
        f.w.state().phase
    );

    let status = server.status(CHANNEL);
    let current = &status["current_release"];
    assert_eq!(current["version"], "3.0.0", "{status:#}");
    assert_eq!(current["outcomes"]["rolled-back"], 1, "{status:#}");
    assert_eq!(current["outcomes"]["committed"], 0, "{status:#}");
    assert_eq!(current["failures"][0]["node_id"], "node-1", "{status:#}");
    assert_eq!(
        current["failures"][0]["from_version"], "2.0.0",
        "{status:#}"
    );
    assert_eq!(
        status["nodes"]["by_version"],
        json!({"2.0.0": 1}),
        "{status:#}"
    );
    assert_eq!(status["nodes"]["total"], 1, "{status:#}");
}
