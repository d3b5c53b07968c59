//! Downloads resume after cuts and stalls: a scripted server cuts the bundle's connection
//! several times, or stops sending without closing; the install completes from where it
//! stopped, fetching barely more than the bundle once.

use std::time::{Duration, Instant};

use partitions::SlotId::{A, B};
use updater::daemon::Poll;

use super::delta::scattered_delta;
use super::{daemon, poll_installs, Fleet, RepoServer, STALL};

fn installed_v2(poll: Poll) {
    match poll {
        Poll::Installed(o) => assert_eq!((o.target, o.release.version.as_str()), (B, "2.0.0")),
        other => panic!("expected an install of 2.0.0, got: {other}"),
    }
}

#[test]
fn cut_connections_resume_and_fetch_under_1_1_times_the_bundle() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let size = std::fs::metadata(&v2.bundle).unwrap().len();
    let server = RepoServer::start(&f.repo);
    let cuts: Vec<u64> = (1..=5).map(|k| k * size / 6).collect();
    server.script().cut_at = cuts.clone();
    f.point_at(&server.url, "node-1", None);
    let a_v1 = f.w.slot_hash(A);

    let agent = f.agent(A);
    installed_v2(daemon(&agent).poll_once().unwrap());

    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    assert_eq!(f.w.slot_hash(A), a_v1);
    let s = server.script();
    assert_eq!(s.cuts, 5, "every cut happened: {:#?}", s.log);
    let resumed = s
        .log
        .iter()
        .filter(|l| l.contains("bundles/") && l.contains("if-range=Some"))
        .count();
    assert!(resumed >= 5, "each cut resumed with If-Range: {:#?}", s.log);
    let ratio = s.bundle_sent as f64 / size as f64;
    eprintln!(
        "fleet resume: {} bundle bytes sent for a {size}-byte bundle over 5 cuts ({ratio:.4}x)",
        s.bundle_sent
    );
    assert!(
        ratio < 1.1,
        "{} bytes for {size}: {ratio:.3}x",
        s.bundle_sent
    );
}

#[test]
fn a_stalled_download_reconnects_after_the_read_timeout() {
    let mut f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let size = std::fs::metadata(&v2.bundle).unwrap().len();
    let server = RepoServer::start(&f.repo);
    server.script().stall_at = vec![size / 2];
    f.point_at(&server.url, "node-1", None);

    let mut agent = f.agent(A);
    agent.http_options.read_timeout = Duration::from_millis(500);
    let started = Instant::now();
    installed_v2(daemon(&agent).poll_once().unwrap());
    let took = started.elapsed();

    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    let s = server.script();
    assert_eq!(s.stalls, 1);
    // The stalled connection is held for STALL: finishing well before means the agent
    // gave up on it and resumed on a new one.
    assert!(
        took < STALL / 2,
        "the install took {took:?}: it waited for the stall"
    );
    let ratio = s.bundle_sent as f64 / size as f64;
    eprintln!("fleet stall: resumed after the read timeout in {took:?}, {ratio:.4}x the bundle");
    assert!(ratio < 1.1, "{ratio:.3}x");
}

#[test]
fn a_scattered_delta_fetched_several_parts_at_once_resumes_after_cuts() {
    let mut f = Fleet::new();
    let (v2, changed) = scattered_delta(&mut f);
    let server = RepoServer::start(&f.repo);
    let fetched = changed.len() as u64 * 4096;
    {
        let mut s = server.script();
        s.delay = Duration::from_millis(5);
        // Counted over all answers, so a cut falls on whichever part is being sent then.
        s.cut_at = (1..=3).map(|k| k * fetched / 4).collect();
    }
    f.point_at(&server.url, "node-1", None);

    let outcome = poll_installs(&f.agent(A));
    assert!(f.holds(B, &v2), "slot B does not hold v2's image");
    let n = changed.len() as u64;
    // A part resumed after a cut is still one part.
    assert_eq!(
        (outcome.report.chunks_written, outcome.report.ranges_read),
        (n, n - 2),
        "{:?}",
        outcome.report
    );
    let s = server.script();
    assert_eq!(s.cuts, 3, "every cut happened: {:#?}", s.log);
    let resumed = s
        .log
        .iter()
        .filter(|l| l.contains("bundles/") && l.contains("if-range=Some"))
        .count();
    assert!(resumed >= 3, "each cut resumed with If-Range: {:#?}", s.log);
}
