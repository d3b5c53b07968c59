//! Reboots under the `[reboot]` policy (docs/DESIGN.md §7) against the real `tandem-server`:
//! an install outside its window is staged and waits, inside it reboots; nodes of one group
//! with one slot take turns, as the server's lease log shows; the lease is given back after
//! boot-check and the state forgets it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use partitions::SlotId::{self, A, B};
use repo_client::http::Credential;
use time::OffsetDateTime;
use updater::daemon::Poll;
use updater::reboot::Gate;
use updater::state::Phase;
use updater::{Agent, AgentConfig, BootCheck};

use super::pg::PgCluster;
use super::{daemon, fast_http, http, Fleet, TandemServer, CHANNEL};

/// A node of the fleet `f` publishes to: its own disk, `f`'s root of trust, polling
/// `server` as `id` with the `[reboot]` table `reboot`.
struct Node {
    w: tandem_tests::World,
    /// The fleet's root of trust.
    root: PathBuf,
}

impl Node {
    /// A node reporting and asking for leases with the fleet's shared report token.
    fn new(f: &Fleet, server: &TandemServer, id: &str, reboot: &str) -> Node {
        let credential = format!(
            "report_token_file = \"{}\"",
            server.report_token_file.display()
        );
        Node::configured(f, server, id, reboot, |_| credential)
    }

    /// A node with a key of its own, enrolled with a one-time token the operator made for
    /// it: it signs every report and lease request, and shares no secret with the fleet.
    fn enrolled(f: &Fleet, server: &TandemServer, id: &str, reboot: &str) -> Node {
        let (code, body) = http(
            server.addr,
            "POST",
            "/v1/enrollment-tokens",
            Some(&server.admin_token),
            "",
        );
        assert_eq!(code, 201, "{body}");
        let token: serde_json::Value = serde_json::from_str(&body).unwrap();
        Node::configured(f, server, id, reboot, |dir| {
            let file = dir.join("enrollment.token");
            std::fs::write(&file, token["token"].as_str().unwrap()).unwrap();
            format!("enrollment_token_file = \"{}\"", file.display())
        })
    }

    /// A node whose `[server]` says who it is by `credential` (given the node's directory).
    fn configured(
        f: &Fleet,
        server: &TandemServer,
        id: &str,
        reboot: &str,
        credential: impl FnOnce(&Path) -> String,
    ) -> Node {
        let mut w = tandem_tests::World::new(tandem_tests::Backend::Gpt);
        w.provision(A, &f.v1);
        w.extra_config = format!(
            "node_id = \"{id}\"\n[server]\nurl = \"{url}\"\nchannel = \"{CHANNEL}\"\n\
             poll_interval = \"1s\"\n{credential}\n[reboot]\n\
             command = [\"true\"]\n{reboot}\n",
            url = server.url,
            credential = credential(w.dir.path()),
        );
        Node {
            w,
            root: f.w.root_path.clone(),
        }
    }

    /// A fresh agent on the node that booted `booted`, its clock at `now`.
    fn agent(&self, booted: SlotId, now: OffsetDateTime) -> Agent {
        let text = self
            .w
            .config_text(booted)
            .replace("reboot = [\"true\"]\n", "")
            .replace(
                &self.w.root_path.display().to_string(),
                &self.root.display().to_string(),
            );
        let config = AgentConfig::parse(&text).unwrap();
        let mut agent = Agent::with_io(config, self.w.io())
            .unwrap()
            .with_clock(move || now);
        agent.http_options = fast_http();
        agent
    }

    /// The reference firmware boots the node; boot-check judges the slot and its report
    /// gives the lease back.
    fn boot_and_check(&self, now: OffsetDateTime) -> BootCheck {
        let booted = self.w.boot();
        let agent = self.agent(booted, now);
        let check = agent.boot_check().unwrap();
        daemon(&agent).report_boot_check(&check);
        check
    }
}

impl Node {
    /// The daemon's life on this node, booted from `booted`: install (staged), ask for the
    /// group's lease until granted, reboot, boot-check (which gives the lease back). `None`
    /// when the channel was paused first: the node stops there, staged or not installed.
    fn update(&self, booted: SlotId, now: OffsetDateTime) -> Option<BootCheck> {
        let agent = self.agent(booted, now);
        let mut d = daemon(&agent);
        match d.poll_once().unwrap() {
            Poll::Installed(o) => assert!(!o.activated, "a waiting install must be staged"),
            Poll::Skipped(updater::Refusal::Paused { .. }) => return None,
            other => panic!("expected an install, got: {other}"),
        }
        loop {
            let pending = d.poll_once().unwrap();
            match d.reboot_when_allowed(&pending).unwrap() {
                Gate::Rebooted => break,
                // The daemon backs off by its poll interval; the test asks again sooner.
                Gate::Lease { .. } => std::thread::sleep(Duration::from_millis(20)),
                Gate::Paused { .. } => return None,
                other => panic!("a lease policy waits for nothing else: {other:?}"),
            }
        }
        Some(self.boot_and_check(now))
    }
}

/// Every node of `nodes` updates at once, each in its own thread.
fn update_all(
    nodes: Vec<Node>,
    booted: SlotId,
    now: OffsetDateTime,
) -> Vec<(Node, Option<BootCheck>)> {
    let threads: Vec<_> = nodes
        .into_iter()
        .map(|node| {
            std::thread::spawn(move || {
                let check = node.update(booted, now);
                (node, check)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// One poll that installs the release (staged: the policy makes it wait).
fn poll_stages(agent: &Agent) {
    match daemon(agent).poll_once().unwrap() {
        Poll::Installed(o) => assert!(!o.activated, "a waiting install must be staged"),
        other => panic!("expected an install, got: {other}"),
    }
}

/// `hh:mm` of `t` (UTC).
fn hhmm(t: OffsetDateTime) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// The server's lease log: `(group, node, event)` in order.
fn lease_log(server: &TandemServer) -> Vec<(String, String, String)> {
    let (code, body) = http(server.addr, "GET", "/v1/leases", None, "");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap().to_owned();
    status["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (field(e, "group"), field(e, "node_id"), field(e, "event")))
        .collect()
}

/// The most leases held at once in each group, replaying the log.
pub fn most_held_at_once(log: &[(String, String, String)]) -> BTreeMap<String, usize> {
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut most = BTreeMap::new();
    for (group, node, event) in log {
        let nodes = held.entry(group.clone()).or_default();
        if event == "acquired" {
            nodes.push(node.clone());
        } else {
            nodes.retain(|n| n != node);
        }
        let top = most.entry(group.clone()).or_insert(0);
        *top = (*top).max(nodes.len());
    }
    most
}

#[test]
fn outside_its_window_a_node_stages_and_waits_inside_it_reboots_and_gives_the_lease_back() {
    let f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    let now = OffsetDateTime::now_utc();
    let opens = (now + time::Duration::hours(2))
        .replace_second(0)
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap();
    let inside = now + time::Duration::minutes(150);
    let window = format!(
        "on = \"window\"\ngroup = \"edge\"\n[[reboot.window]]\nstart = \"{}\"\nend = \"{}\"\ntime_zone = \"UTC\"",
        hhmm(opens),
        hhmm(now + time::Duration::hours(3))
    );
    let node = Node::new(&f, &server, "node-w", &window);

    // Outside the window: written, not activated, and the state says until when.
    let agent = node.agent(A, now);
    poll_stages(&agent);
    let mut d = daemon(&agent);
    let pending = d.poll_once().unwrap();
    assert!(matches!(&pending, Poll::RebootPending { version } if version == "2.0.0"));
    let gate = d.reboot_when_allowed(&pending).unwrap();
    assert!(matches!(gate, Gate::Window { .. }), "{gate:?}");
    let state = node.w.state();
    assert!(matches!(
        state.phase,
        Phase::Written {
            activated: false,
            ..
        }
    ));
    let wait = state.reboot_wait.expect("the wait is recorded");
    assert_eq!(wait.waiting_for, "window");
    let until: OffsetDateTime = OffsetDateTime::parse(
        wait.until.as_deref().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(until, opens, "the wait names the window's opening");
    assert_eq!(
        node.w.boot(),
        A,
        "a staged install must not boot before its window"
    );
    assert!(
        lease_log(&server).is_empty(),
        "no lease is asked outside the window"
    );
    let status = agent.status().unwrap();
    assert_eq!(
        status.state.reboot_wait.map(|w| w.waiting_for).as_deref(),
        Some("window")
    );

    // Inside the window: a lease, the flip, the reboot; the lease is recorded until
    // boot-check, then given back.
    let agent = node.agent(A, inside);
    let mut d = daemon(&agent);
    let pending = d.poll_once().unwrap();
    assert_eq!(d.reboot_when_allowed(&pending).unwrap(), Gate::Rebooted);
    let state = node.w.state();
    assert_eq!(state.lease.as_ref().map(|l| l.group.as_str()), Some("edge"));
    assert!(state.reboot_wait.is_none());
    let check = node.boot_and_check(inside);
    assert!(
        matches!(check, BootCheck::Committed { slot: B, .. }),
        "{check:?}"
    );
    assert!(
        node.w.state().lease.is_none(),
        "the lease was not given back"
    );
    let events: Vec<String> = lease_log(&server).into_iter().map(|(_, _, e)| e).collect();
    assert_eq!(events, ["acquired", "released"]);
}

#[test]
fn two_nodes_of_a_group_with_one_slot_reboot_one_after_the_other() {
    let f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let server = TandemServer::start(f.w.dir.path(), &f.repo);
    let now = OffsetDateTime::now_utc();
    let lease = "on = \"lease\"\ngroup = \"pair\"";
    let nodes = [
        Node::new(&f, &server, "node-1", lease),
        Node::new(&f, &server, "node-2", lease),
    ];
    for node in &nodes {
        poll_stages(&node.agent(A, now));
    }
    let reboot = |node: &Node| {
        let agent = node.agent(A, now);
        let mut d = daemon(&agent);
        let pending = d.poll_once().unwrap();
        d.reboot_when_allowed(&pending).unwrap()
    };
    assert_eq!(reboot(&nodes[0]), Gate::Rebooted);
    // node-2 is refused while node-1 holds the group's one slot: it stays staged.
    assert!(matches!(reboot(&nodes[1]), Gate::Lease { .. }));
    let waiting = nodes[1].w.state();
    assert_eq!(
        waiting.reboot_wait.map(|w| w.waiting_for).as_deref(),
        Some("lease")
    );
    assert!(matches!(
        waiting.phase,
        Phase::Written {
            activated: false,
            ..
        }
    ));
    assert_eq!(
        nodes[1].w.boot(),
        A,
        "a node refused a lease must not boot the new slot"
    );
    // node-1's boot-check gives the slot back; node-2 takes it.
    assert!(matches!(
        nodes[0].boot_and_check(now),
        BootCheck::Committed { .. }
    ));
    assert_eq!(reboot(&nodes[1]), Gate::Rebooted);
    assert!(matches!(
        nodes[1].boot_and_check(now),
        BootCheck::Committed { .. }
    ));
    let log = lease_log(&server);
    let order: Vec<(&str, &str)> = log
        .iter()
        .map(|(_, n, e)| (n.as_str(), e.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("node-1", "acquired"),
            ("node-1", "released"),
            ("node-2", "acquired"),
            ("node-2", "released")
        ]
    );
    assert_eq!(most_held_at_once(&log)["pair"], 1);
}

/// Nodes in the fleet test, and their reboot groups (one slot each, the default).
const NODES: usize = 50;
const GROUPS: usize = 5;

/// Fifty nodes in five groups, each with its own enrolled key, update at once against the
/// real server on `pg` (SQLite when `None`): every node ends committed on v2; one node's key
/// is refused when it reports or asks a lease as another node; a failing v3 is paused by the
/// server's failure budget (whose reports all came signed) before most nodes boot it; and
/// the server's whole lease log (read from its database) never has two leases of one group
/// held at once.
fn fifty_nodes_update_one_reboot_at_a_time_per_group(pg: Option<&PgCluster>) {
    let f = Fleet::new();
    let v2 = f.w.release("2.0.0", 1, 2);
    f.publish(&v2, 100);
    let url = pg.map(PgCluster::url);
    let args: Vec<&Path> = match &url {
        Some(url) => vec![Path::new("--database"), Path::new(url)],
        None => Vec::new(),
    };
    let server = TandemServer::start_with(f.w.dir.path(), &f.repo, &args);
    let now = OffsetDateTime::now_utc();
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let policy = format!("on = \"lease\"\ngroup = \"g{}\"", i % GROUPS);
            Node::enrolled(&f, &server, &format!("node-{i:02}"), &policy)
        })
        .collect();
    let updated = update_all(nodes, A, now);
    for (node, check) in &updated {
        assert!(
            matches!(check, Some(BootCheck::Committed { slot: B, .. })),
            "{check:?}"
        );
        assert!(node.w.state().lease.is_none());
    }
    let query = |sql: &str| match pg {
        Some(pg) => pg.query_texts(sql),
        None => sqlite_lines(&f.w.dir.path().join("server-data/tandem.db"), sql),
    };
    let approved = query("SELECT CAST(COUNT(*) AS TEXT) FROM node_keys WHERE status = 'approved'");
    assert_eq!(approved, [NODES.to_string()], "every node enrolled its key");
    impostor_is_refused(&server, &updated[0].0, "node-01");
    assert_eq!(
        query("SELECT CAST(COUNT(*) AS TEXT) FROM reports WHERE report_id = 'forged'"),
        ["0"],
        "the forged report was not stored"
    );

    // 3.0.0 fails its health checks everywhere: the nodes that reboot into it roll back, the
    // failure budget pauses the channel, and the nodes still waiting never boot it.
    let v3 = f.w.release("3.0.0", 1, 3);
    let nodes: Vec<Node> = updated.into_iter().map(|(node, _)| node).collect();
    nodes.iter().for_each(|node| node.w.set_healthy(false));
    f.publish(&v3, 100);
    let tried = update_all(nodes, B, now);
    let rolled_back = tried
        .iter()
        .filter(|(_, c)| matches!(c, Some(BootCheck::RolledBack { .. })))
        .count();
    let spared = tried.iter().filter(|(_, c)| c.is_none()).count();
    eprintln!("3.0.0: {rolled_back} nodes rolled back, {spared} never booted it");
    assert_eq!(
        rolled_back + spared,
        NODES,
        "every node rolled back or was spared"
    );
    assert!(
        (1..NODES / 2).contains(&rolled_back),
        "the budget paused after {rolled_back} rollbacks"
    );
    for (node, _) in tried.iter().filter(|(_, c)| c.is_none()) {
        assert_eq!(node.w.boot(), B, "a spared node booted 3.0.0");
    }
    let pause = std::fs::read_to_string(f.repo.join(format!("channels/{CHANNEL}.pause"))).unwrap();
    let pause: serde_json::Value = serde_json::from_str(&pause).unwrap();
    assert_eq!(pause["automatic"], true, "{pause}");
    let reason = pause["reason"].as_str().unwrap();
    assert!(reason.contains("rolled back 3.0.0"), "{reason}");

    let lines = query("SELECT grp || ' ' || node_id || ' ' || event FROM lease_log ORDER BY id");
    let log: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let mut words = l.split(' ').map(str::to_owned);
            let mut next = || words.next().unwrap();
            (next(), next(), next())
        })
        .collect();
    assert_eq!(
        log.len(),
        2 * (NODES + rolled_back),
        "one grant and one release per reboot"
    );
    let most = most_held_at_once(&log);
    assert_eq!(most.len(), GROUPS, "{most:?}");
    assert!(most.values().all(|&m| m == 1), "{most:?}");
}

/// `node`'s own agent code, with `node`'s approved key, reports and asks a lease as `other`:
/// the server refuses both (403), naming the key's node.
fn impostor_is_refused(server: &TandemServer, node: &Node, other: &str) {
    let key = updater::nodekey::FileKey::load_or_create(&node.w.state_fs).unwrap();
    let signer = updater::nodekey::RequestSigner(Box::new(key));
    let http = repo_client::Http::new(&server.url, fast_http()).unwrap();
    let forged = serde_json::json!({"id": "forged", "node_id": other, "channel": CHANNEL,
        "from_version": "2.0.0", "to_version": "2.0.0", "outcome": "failed",
        "reason": "forged by another node"});
    let refused = http
        .post_json("v1/reports", Credential::Signed(&signer), &forged)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("403"), "{refused}");
    let lease = serde_json::json!({"client_params": {"id": other, "group": "g1"}});
    let header = [("fleet-lock-protocol", "true")];
    let answer = http
        .post_answer(
            "v1/pre-reboot",
            Credential::Signed(&signer),
            &header,
            &lease,
        )
        .unwrap();
    let said = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 403, "{said}");
    assert!(
        said.contains(&format!("may not speak for node {other}")),
        "{said}"
    );
}

/// The rows of `sql` in the SQLite database `db`, through the `sqlite3` tool.
fn sqlite_lines(db: &Path, sql: &str) -> Vec<String> {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 is missing: scripts/test.sh installs it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn fifty_nodes_on_sqlite_reboot_one_at_a_time_per_group() {
    fifty_nodes_update_one_reboot_at_a_time_per_group(None);
}

#[test]
fn fifty_nodes_on_postgres_reboot_one_at_a_time_per_group() {
    let pg = PgCluster::start();
    fifty_nodes_update_one_reboot_at_a_time_per_group(Some(&pg));
}
