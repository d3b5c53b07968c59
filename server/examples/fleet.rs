//! Load generator for `bench/fleet.sh` (a benchmark, not a test): simulates a fleet of nodes
//! against a running tandem-server on loopback.
//!
//! Every node polls `channels/CHANNEL.json` with `If-None-Match` once per `interval /
//! speedup` seconds (spread evenly over the interval), sends an `installed` and then a
//! `committed` report (each with its own id) at two random polls, and re-sends a share of its
//! reports with the same id, as an agent whose answer was lost would. Before its reboot (the
//! `committed` report) a node takes a reboot lease of its group (`POST /v1/pre-reboot`,
//! asked again at each poll while the group's slots are taken) and gives it back after (`POST
//! /v1/steady-state`); nodes are spread over `groups` groups. A bounded number of
//! 1 MiB `Range` downloads of the bundle run beside. It prints one `key=value` line per
//! measure: the script checks the stored rows against `reports_unique`.
//!
//! ```text
//! fleet URL REPORT_TOKEN [nodes=10000] [interval=60] [speedup=10] [duration=60]
//!       [retry_percent=10] [ranges=40] [groups=100] [bundle=bundles/demo-os-2.0.0.tandem]
//!       [channel=stable]
//! ```
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ETAG, IF_NONE_MATCH, RANGE};
use reqwest::{Client, StatusCode};
use serde_json::json;

/// The run's settings.
#[derive(Debug, Clone)]
struct Settings {
    url: String,
    token: String,
    nodes: u64,
    interval: f64,
    speedup: f64,
    duration: f64,
    retry_percent: u64,
    ranges: u64,
    groups: u64,
    bundle: String,
    channel: String,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Settings, String> {
        let [url, token, rest @ ..] = args else {
            return Err("usage: fleet URL REPORT_TOKEN [key=value ...]".into());
        };
        let mut kv: HashMap<&str, &str> = HashMap::new();
        for a in rest {
            let (k, v) = a.split_once('=').ok_or(format!("not key=value: {a}"))?;
            kv.insert(k, v);
        }
        let num = |k: &str, default: f64| -> Result<f64, String> {
            kv.get(k)
                .map_or(Ok(default), |v| v.parse().map_err(|_| format!("{k}={v}")))
        };
        let text = |k: &str, default: &str| kv.get(k).copied().unwrap_or(default).to_owned();
        Ok(Settings {
            url: url.trim_end_matches('/').to_owned(),
            token: token.clone(),
            nodes: num("nodes", 10_000.0)? as u64,
            interval: num("interval", 60.0)?,
            speedup: num("speedup", 10.0)?,
            duration: num("duration", 60.0)?,
            retry_percent: num("retry_percent", 10.0)? as u64,
            ranges: num("ranges", 40.0)? as u64,
            groups: (num("groups", 100.0)? as u64).max(1),
            bundle: text("bundle", "bundles/demo-os-2.0.0.tandem"),
            channel: text("channel", "stable"),
        })
    }

    /// Seconds between two polls of one node, compressed.
    fn period(&self) -> Duration {
        Duration::from_secs_f64(self.interval / self.speedup)
    }

    fn polls_per_node(&self) -> u64 {
        (self.duration / self.period().as_secs_f64()).floor() as u64
    }
}

/// Latencies (µs) and counters of one kind of request.
#[derive(Default)]
struct Series {
    micros: Mutex<Vec<u32>>,
    errors: AtomicU64,
}

impl Series {
    fn record(&self, started: Instant, ok: bool) {
        let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        if let Ok(mut v) = self.micros.lock() {
            v.push(us);
        }
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn print(&self, name: &str, elapsed: f64) {
        let mut v = self.micros.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_unstable();
        let pct = |p: f64| {
            let i = ((v.len() as f64 * p).ceil() as usize).saturating_sub(1);
            v.get(i).map_or(0.0, |&us| f64::from(us) / 1000.0)
        };
        println!("{name}={}", v.len());
        println!("{name}_per_s={:.0}", v.len() as f64 / elapsed);
        println!("{name}_p50_ms={:.2}", pct(0.50));
        println!("{name}_p99_ms={:.2}", pct(0.99));
        println!("{name}_max_ms={:.2}", pct(1.0));
        println!("{name}_errors={}", self.errors.load(Ordering::Relaxed));
    }
}

#[derive(Default)]
struct Stats {
    polls: Series,
    reports: Series,
    ranges: Series,
    leases: Series,
    leases_busy: AtomicU64,
    not_modified: AtomicU64,
    reports_unique: AtomicU64,
    reports_retried: AtomicU64,
}

/// One node's life: polls on its schedule, its two reports at two of them.
async fn node(client: Client, s: Arc<Settings>, stats: Arc<Stats>, index: u64, start: Instant) {
    let period = s.period();
    let offset = period.mul_f64(index as f64 / s.nodes as f64);
    let polls = s.polls_per_node().max(2);
    let install_at = rand::random::<u64>() % (polls - 1);
    let commit_at = install_at + 1 + rand::random::<u64>() % (polls - 1 - install_at);
    let mut etag: Option<String> = None;
    for k in 0..polls {
        tokio::time::sleep_until((start + offset + period * k as u32).into()).await;
        poll(&client, &s, &stats, &mut etag).await;
        match k {
            k if k == install_at => report(&client, &s, &stats, index, "installed").await,
            k if k == commit_at => reboot(&client, &s, &stats, index).await,
            _ => {}
        }
    }
}

/// The reboot: the lease (asked again at each poll while the group is full, as an agent
/// would; after ten polls the node reboots without one, which the script's check counts),
/// the `committed` report, the release.
async fn reboot(client: &Client, s: &Settings, stats: &Stats, index: u64) {
    let retry = s.period();
    let deadline = Instant::now() + s.period() * 10;
    while lease(client, s, stats, index, "pre-reboot").await == Some(StatusCode::CONFLICT)
        && Instant::now() < deadline
    {
        stats.leases_busy.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(retry).await;
    }
    report(client, s, stats, index, "committed").await;
    lease(client, s, stats, index, "steady-state").await;
}

/// One FleetLock request; its status, `None` when it failed to be answered.
async fn lease(
    client: &Client,
    s: &Settings,
    stats: &Stats,
    index: u64,
    what: &str,
) -> Option<StatusCode> {
    let body = json!({"client_params": {"id": format!("node-{index:05}"),
                                        "group": format!("group-{}", index % s.groups)}});
    let started = Instant::now();
    let sent = client
        .post(format!("{}/v1/{what}", s.url))
        .bearer_auth(&s.token)
        .header("fleet-lock-protocol", "true")
        .json(&body)
        .send()
        .await;
    let status = sent.ok().map(|r| r.status());
    let ok = status.is_some_and(|c| c.is_success() || c == StatusCode::CONFLICT);
    stats.leases.record(started, ok);
    status
}

async fn poll(client: &Client, s: &Settings, stats: &Stats, etag: &mut Option<String>) {
    let url = format!("{}/channels/{}.json", s.url, s.channel);
    let mut req = client.get(&url);
    if let Some(tag) = etag.as_deref() {
        req = req.header(IF_NONE_MATCH, tag);
    }
    let started = Instant::now();
    let ok = match req.send().await {
        Ok(resp) if resp.status() == StatusCode::NOT_MODIFIED => {
            stats.not_modified.fetch_add(1, Ordering::Relaxed);
            true
        }
        Ok(resp) if resp.status() == StatusCode::OK => {
            *etag = resp
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            resp.bytes().await.is_ok()
        }
        _ => false,
    };
    stats.polls.record(started, ok);
}

async fn report(client: &Client, s: &Settings, stats: &Stats, index: u64, outcome: &str) {
    let body = json!({
        "id": format!("{:032x}", rand::random::<u128>()),
        "node_id": format!("node-{index:05}"), "channel": s.channel,
        "from_version": "1.0.0", "to_version": "2.0.0", "outcome": outcome,
    });
    stats.reports_unique.fetch_add(1, Ordering::Relaxed);
    let copies = if rand::random::<u64>() % 100 < s.retry_percent {
        stats.reports_retried.fetch_add(1, Ordering::Relaxed);
        2
    } else {
        1
    };
    for _ in 0..copies {
        let started = Instant::now();
        let sent = client
            .post(format!("{}/v1/reports", s.url))
            .bearer_auth(&s.token)
            .json(&body)
            .send()
            .await;
        let ok = sent.is_ok_and(|r| r.status().is_success());
        stats.reports.record(started, ok);
    }
}

/// `ranges` 1 MiB Range downloads spread over the run, at rotating offsets.
async fn ranges(client: Client, s: Arc<Settings>, stats: Arc<Stats>, start: Instant) {
    const MIB: u64 = 1 << 20;
    let gap = Duration::from_secs_f64(s.duration / s.ranges.max(1) as f64);
    for i in 0..s.ranges {
        tokio::time::sleep_until((start + gap * i as u32).into()).await;
        let from = (i % 16) * MIB;
        let started = Instant::now();
        let sent = client
            .get(format!("{}/{}", s.url, s.bundle))
            .header(RANGE, format!("bytes={from}-{}", from + MIB - 1))
            .send()
            .await;
        let ok = match sent {
            Ok(r) if r.status() == StatusCode::PARTIAL_CONTENT => {
                r.bytes().await.is_ok_and(|b| b.len() as u64 == MIB)
            }
            _ => false,
        };
        stats.ranges.record(started, ok);
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let s = Arc::new(Settings::parse(&args)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(s))
}

async fn run(s: Arc<Settings>) -> Result<(), String> {
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(512)
        .build()
        .map_err(|e| e.to_string())?;
    let stats = Arc::new(Stats::default());
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for index in 0..s.nodes {
        let task = node(
            client.clone(),
            Arc::clone(&s),
            Arc::clone(&stats),
            index,
            start,
        );
        tasks.push(tokio::spawn(task));
    }
    tasks.push(tokio::spawn(ranges(
        client.clone(),
        Arc::clone(&s),
        Arc::clone(&stats),
        start,
    )));
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("nodes={}", s.nodes);
    println!("poll_period_s={:.2}", s.period().as_secs_f64());
    println!("elapsed_s={elapsed:.1}");
    stats.polls.print("polls", elapsed);
    println!("polls_304={}", stats.not_modified.load(Ordering::Relaxed));
    stats.reports.print("reports", elapsed);
    println!(
        "reports_unique={}",
        stats.reports_unique.load(Ordering::Relaxed)
    );
    println!(
        "reports_retried={}",
        stats.reports_retried.load(Ordering::Relaxed)
    );
    stats.ranges.print("ranges", elapsed);
    stats.leases.print("leases", elapsed);
    println!("leases_busy={}", stats.leases_busy.load(Ordering::Relaxed));
    Ok(())
}
