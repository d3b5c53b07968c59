//! A maintenance window through the binaries on a disk image file, against the real
//! `tandem-server`: outside its window `tandem-updater daemon` installs, stages and waits
//! (the boot entry unchanged, `status` saying until when); inside it takes the group's
//! lease, flips and reboots; `boot-check` commits and gives the lease back.

use time::OffsetDateTime;

use super::fleet::http;
use super::operator::{server_keys, stdout_of, Node};

/// `[reboot]` with one daily window from `start` to `end` (UTC) in group `maint`.
fn window(start: OffsetDateTime, end: OffsetDateTime) -> String {
    let hhmm = |t: OffsetDateTime| format!("{:02}:{:02}", t.hour(), t.minute());
    format!(
        "[reboot]\ncommand = [\"true\"]\non = \"window\"\ngroup = \"maint\"\n\
         [[reboot.window]]\nstart = \"{}\"\nend = \"{}\"\ntime_zone = \"UTC\"\n",
        hhmm(start),
        hhmm(end)
    )
}

#[test]
fn the_daemon_waits_for_its_window_then_reboots_with_a_lease_it_gives_back() {
    let n = Node::new();
    n.publish("v2.tandem");
    let server = n.server(&[]);
    let now = OffsetDateTime::now_utc();
    let hours = |h: i64| now + time::Duration::hours(h);
    let config = |booted: &str, reboot: &str| {
        let keys = server_keys(&server, None);
        n.config(
            booted,
            &format!("node_id = \"node-m\"\n{}{keys}{reboot}", n.health()),
        )
    };

    // Outside the window: installed and staged; the boot entry still names slot a.
    let closed = config("a", &window(hours(2), hours(3)));
    let out = n.updater(&closed, &["daemon", "--once"], 0);
    assert!(
        stdout_of(&out).contains("installed 2.0.0 into slot b"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(n.boot(), "a", "a staged install booted outside its window");
    let status = stdout_of(&n.updater(&closed, &["status"], 0));
    assert!(
        status.contains("reboot: 2.0.0 is staged and waits for a reboot window until"),
        "{status}"
    );
    let leases = |server: &super::fleet::TandemServer| {
        let (code, body) = http(server.addr, "GET", "/v1/leases", None, "");
        assert_eq!(code, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["node_id"].as_str().unwrap(),
                    e["event"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(
        leases(&server).is_empty(),
        "a lease was asked outside the window"
    );

    // Inside the window: the lease, the flip, the reboot.
    let open = config("a", &window(hours(-1), hours(1)));
    n.updater(&open, &["daemon", "--once"], 0);
    assert_eq!(
        n.boot(),
        "b",
        "the node did not reboot into v2 inside its window"
    );
    let status = stdout_of(&n.updater(&open, &["status"], 0));
    assert!(
        status.contains("reboot lease: held in group maint"),
        "{status}"
    );
    assert!(!status.contains("waits for a reboot"), "{status}");
    assert_eq!(leases(&server), ["node-m acquired"]);

    // boot-check commits and gives the lease back; the state forgets it.
    let on_b = config("b", &window(hours(-1), hours(1)));
    let out = n.updater(&on_b, &["boot-check"], 0);
    assert!(stdout_of(&out).contains("committed"), "{}", stdout_of(&out));
    assert_eq!(leases(&server), ["node-m acquired", "node-m released"]);
    let status = stdout_of(&n.updater(&on_b, &["status"], 0));
    assert!(!status.contains("reboot lease"), "{status}");
}
