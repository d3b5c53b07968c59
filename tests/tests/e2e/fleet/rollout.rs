//! Staged rollouts are decided on the node (`sha256(salt || node_id) mod 100 < percent`);
//! the server can pause a channel (an unsigned hint that only stops installs).

use partitions::SlotId::{A, B};
use signer::verify::{load_chain, verify_channel};
use signer::{Limits, Rollout};
use time::OffsetDateTime;
use updater::daemon::Poll;
use updater::state::Phase;
use updater::Refusal;

use super::{daemon, Fleet, TandemServer, CHANNEL};

fn node_ids() -> Vec<String> {
    (0..1000).map(|i| format!("node-{i:04}")).collect()
}

/// The rollout of the channel file in the repository, as the agent verifies it.
fn published_rollout(f: &Fleet) -> Rollout {
    let now = OffsetDateTime::now_utc();
    let limits = Limits::default();
    let root = std::fs::read(&f.w.root_path).unwrap();
    let root = load_chain(&root, |_| Ok(None), now, &limits).unwrap();
    let bytes = std::fs::read(f.repo.join(format!("channels/{CHANNEL}.json"))).unwrap();
    let channel = verify_channel(&root, &bytes, CHANNEL, 0, now, &limits).unwrap();
    channel.rollout.clone()
}

#[test]
fn thirty_percent_selects_about_a_third_and_sixty_keeps_them() {
    let f = Fleet::new();
    f.publish(&f.v1, 30);
    let published = published_rollout(&f);
    assert_eq!(published.percent, 30);
    let salts = [
        published.salt.clone(),
        vec![0u8; 16],
        b"tandem-fleet-salt".to_vec(),
        vec![0xa5; 32],
    ];
    for salt in salts {
        let ids = node_ids();
        let at = |percent| {
            let mut r = published.clone();
            r.percent = percent;
            r.salt = salt.clone();
            r
        };
        let wave30: Vec<&String> = ids
            .iter()
            .filter(|id| at(30).selects(id.as_bytes()))
            .collect();
        let wave60: Vec<&String> = ids
            .iter()
            .filter(|id| at(60).selects(id.as_bytes()))
            .collect();
        eprintln!(
            "fleet rollout (salt {}): 30 % selects {} of 1000, 60 % selects {}",
            hex::encode(&salt[..4]),
            wave30.len(),
            wave60.len()
        );
        // The published salt is random: its share is only printed (the fixed salts make
        // the bounds deterministic).
        if salt != published.salt {
            assert!(
                (250..=350).contains(&wave30.len()),
                "30 %: {}",
                wave30.len()
            );
            assert!(
                (550..=650).contains(&wave60.len()),
                "60 %: {}",
                wave60.len()
            );
        }
        for id in &wave30 {
            assert!(wave60.contains(id), "{id} left the wave when it widened");
        }
        assert!(ids.iter().all(|id| at(100).selects(id.as_bytes())));
        assert!(!ids.iter().any(|id| at(0).selects(id.as_bytes())));
    }
}

#[test]
fn the_daemon_follows_the_rollout_and_the_pause() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 30);
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    let rollout = published_rollout(&f);
    assert_eq!(rollout.percent, 30);
    let ids = node_ids();
    let outside = ids
        .iter()
        .find(|id| rollout.bucket(id.as_bytes()) >= 60)
        .unwrap();
    let later = ids
        .iter()
        .find(|id| (30..60).contains(&rollout.bucket(id.as_bytes())))
        .unwrap();
    let slots = f.slot_hashes();

    // Not in the 30 % wave: nothing installed.
    f.point_at(&server.url, outside, Some(&server.report_token_file));
    let agent = f.agent(A);
    match daemon(&agent).poll_once().unwrap() {
        Poll::Skipped(Refusal::NotInRollout { percent: 30 }) => {}
        other => panic!("expected not selected at 30 %, got: {other}"),
    }
    assert_eq!(f.slot_hashes(), slots);
    assert!(
        matches!(f.w.state().phase, Phase::Idle),
        "{:?}",
        f.w.state().phase
    );

    // The wave widens to 60 % (same salt): `later` is in it, but the server paused the channel.
    f.publish(&v2, 60);
    assert_eq!(published_rollout(&f).salt, rollout.salt);
    f.point_at(&server.url, later, Some(&server.report_token_file));
    let agent = f.agent(A);
    let mut d = daemon(&agent);
    server.admin(CHANNEL, "pause");
    assert_eq!(server.status(CHANNEL)["paused"], true);
    assert!(f.repo.join("channels/stable.pause").is_file());
    match d.poll_once().unwrap() {
        Poll::Skipped(Refusal::Paused { .. }) => {}
        other => panic!("expected paused, got: {other}"),
    }
    assert_eq!(
        f.slot_hashes(),
        slots,
        "a paused channel installed something"
    );
    assert!(matches!(f.w.state().phase, Phase::Idle));

    // Resumed: the same daemon installs at its next poll (the channel file did not change).
    server.admin(CHANNEL, "resume");
    match d.poll_once().unwrap() {
        Poll::Installed(o) => assert_eq!((o.target, o.release.version.as_str()), (B, "2.0.0")),
        other => panic!("expected an install after the resume, got: {other}"),
    }
    assert!(f.holds(B, &v2));
    assert_eq!(f.w.slot_hash(A), slots[0]);

    // The node outside the wave still is (this simulated disk is shared with `later`,
    // whose install waits for its reboot, so the daemon may ask for that first).
    f.point_at(&server.url, outside, Some(&server.report_token_file));
    let agent = f.agent(A);
    assert!(matches!(
        daemon(&agent).poll_once().unwrap(),
        Poll::Skipped(Refusal::NotInRollout { percent: 60 }) | Poll::RebootPending { .. }
    ));
}

#[test]
fn a_release_offered_during_a_trial_installs_once_the_trial_is_committed() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    let v3 = f.w.release("3.0.0", 1, 3);
    f.publish(&v2, 100);
    let server = super::RepoServer::start(&f.repo);
    f.point_at(&server.url, "node-1", None);
    assert!(matches!(
        daemon(&f.agent(A)).poll_once().unwrap(),
        Poll::Installed(_)
    ));
    assert_eq!(f.w.boot(), B);
    // v3 arrives while B is still in its trial: the daemon waits for boot-check …
    f.publish(&v3, 100);
    let agent = f.agent(B);
    let mut d = daemon(&agent);
    match d.poll_once().unwrap() {
        Poll::Skipped(Refusal::InTrial { .. }) => {}
        other => panic!("expected to wait for the trial, got: {other}"),
    }
    assert!(
        f.holds(A, &f.v1),
        "slot A (last known good) was written during the trial"
    );
    // … and installs v3 at its next poll once B is committed (same channel file).
    assert!(matches!(
        agent.boot_check().unwrap(),
        updater::BootCheck::Committed { slot: B, .. }
    ));
    match d.poll_once().unwrap() {
        Poll::Installed(o) => assert_eq!((o.target, o.release.version.as_str()), (A, "3.0.0")),
        other => panic!("expected v3 after the commit, got: {other}"),
    }
    assert!(f.holds(A, &v3) && f.holds(B, &v2));
}
