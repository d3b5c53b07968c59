//! `GET /metrics`: the exposition text parsed as Prometheus would, after known traffic.
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::header::{CONNECTION, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde_json::json;

use crate::util::{client, TestServer, ADMIN_TOKEN, BUNDLE_LEN, REPORT_TOKEN};

/// One sample: metric name and labels.
type Series = (String, BTreeMap<String, String>);

/// Parses the text format: `name{label="value",…} number` lines; comments skipped. The
/// text must end with the OpenMetrics `# EOF` marker.
fn parse(text: &str) -> BTreeMap<Series, f64> {
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        let previous = samples.insert((name.to_owned(), labels), value.parse().unwrap());
        assert!(previous.is_none(), "duplicate sample {line}");
    }
    samples
}

fn scrape(s: &TestServer) -> BTreeMap<Series, f64> {
    let r = client()
        .get(s.url("/metrics"))
        .header(CONNECTION, "close")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    parse(&r.text().unwrap())
}

fn value(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let series = (name.to_owned(), labels);
    samples
        .get(&series)
        .copied()
        .unwrap_or_else(|| panic!("no sample {series:?} in {samples:#?}"))
}

fn get(s: &TestServer, path: &str, etag: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client().get(s.url(path)).header(CONNECTION, "close");
    if let Some(etag) = etag {
        req = req.header(IF_NONE_MATCH, etag);
    }
    req.send().unwrap()
}

#[test]
fn metrics_count_requests_bytes_reports_pauses_and_nodes() {
    let s = TestServer::start();
    let first = get(&s, "/channels/stable.json", None);
    let etag = first.headers()[ETAG].to_str().unwrap().to_owned();
    let metadata_len = first.bytes().unwrap().len();
    for _ in 0..3 {
        let r = get(&s, "/channels/stable.json", Some(&etag));
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }
    assert_eq!(
        get(&s, "/bundles/demo-os-2.0.0.tandem", None)
            .bytes()
            .unwrap()
            .len(),
        BUNDLE_LEN
    );
    assert_eq!(get(&s, "/nothing", None).status(), StatusCode::NOT_FOUND);
    for (node, outcome) in [("n1", "installed"), ("n1", "committed"), ("n2", "failed")] {
        let r = client()
            .post(s.url("/v1/reports"))
            .bearer_auth(REPORT_TOKEN)
            .json(
                &json!({"node_id": node, "channel": "stable", "from_version": "1.0.0",
                          "to_version": "2.0.0", "outcome": outcome}),
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = client()
        .post(s.url("/v1/channels/stable/pause"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let m = scrape(&s);
    let requests = "tandem_server_http_requests_total";
    assert_eq!(
        value(&m, requests, &[("route", "channel"), ("status", "200")]),
        1.0
    );
    assert_eq!(
        value(&m, requests, &[("route", "channel"), ("status", "304")]),
        3.0
    );
    assert_eq!(
        value(&m, requests, &[("route", "other"), ("status", "404")]),
        1.0
    );
    assert_eq!(
        value(&m, requests, &[("route", "reports"), ("status", "201")]),
        3.0
    );
    assert_eq!(
        value(&m, requests, &[("route", "admin"), ("status", "200")]),
        1.0
    );
    let bytes = "tandem_server_http_response_bytes_total";
    assert_eq!(value(&m, bytes, &[("route", "bundle")]), BUNDLE_LEN as f64);
    assert_eq!(
        value(&m, bytes, &[("route", "channel")]),
        metadata_len as f64
    );
    let reports = "tandem_server_reports_total";
    for (outcome, n) in [("installed", 1.0), ("committed", 1.0), ("failed", 1.0)] {
        let labels = [
            ("channel", "stable"),
            ("version", "2.0.0"),
            ("outcome", outcome),
        ];
        assert_eq!(value(&m, reports, &labels), n);
    }
    let paused = "tandem_server_channel_paused";
    assert_eq!(value(&m, paused, &[("channel", "stable")]), 1.0);
    // n1 committed 2.0.0; n2 failed and still runs 1.0.0.
    let nodes = "tandem_server_nodes";
    for version in ["2.0.0", "1.0.0"] {
        let labels = [("channel", "stable"), ("version", version)];
        assert_eq!(value(&m, nodes, &labels), 1.0, "{version}");
    }

    let r = client()
        .post(s.url("/v1/channels/stable/resume"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = scrape(&s);
    assert_eq!(value(&m, paused, &[("channel", "stable")]), 0.0);
    assert_eq!(
        value(&m, requests, &[("route", "metrics"), ("status", "200")]),
        1.0
    );
}

/// Scrapes until `tandem_server_http_open_connections` is `want` (the scrape's own included).
#[test]
fn next_root_probes_are_labelled_apart_from_errors() {
    let s = TestServer::start();
    std::fs::copy(s.repo().join("root.json"), s.repo().join("1.root.json")).unwrap();
    assert_eq!(get(&s, "/1.root.json", None).status(), StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(
            get(&s, "/2.root.json", None).status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        get(&s, "/nothing.json", None).status(),
        StatusCode::NOT_FOUND
    );
    let m = scrape(&s);
    let requests = "tandem_server_http_requests_total";
    let probes = |status| value(&m, requests, &[("route", "root_probe"), ("status", status)]);
    assert_eq!((probes("200"), probes("404")), (1.0, 2.0));
    assert_eq!(
        value(&m, requests, &[("route", "root"), ("status", "404")]),
        1.0,
        "a missing file other than N.root.json is still counted as root 404"
    );
}

/// One parse serves both the router and the label: what each route answers and what it is
/// counted under agree, for the API routes that carry a channel and for the dashboard's files.
#[test]
fn each_answer_is_counted_under_the_route_it_was_dispatched_on() {
    let s = TestServer::start();
    let answers = [
        (
            "/v1/channels/Bad%20Name/frobnicate",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/channels/stable/frobnicate", StatusCode::NOT_FOUND),
        ("/v1/channels/stable/status", StatusCode::OK),
        ("/v1/channels/stable/pause", StatusCode::METHOD_NOT_ALLOWED),
        ("/dashboard.svg", StatusCode::OK),
    ];
    for (path, status) in answers {
        assert_eq!(get(&s, path, None).status(), status, "{path}");
    }
    let r = client().post(s.url("/dashboard.css")).send().unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let m = scrape(&s);
    let requests = |route, status| {
        value(
            &m,
            "tandem_server_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("other_api", "400"), 1.0);
    assert_eq!(requests("other_api", "404"), 1.0);
    assert_eq!(requests("status", "200"), 1.0);
    assert_eq!(requests("admin", "405"), 1.0);
    assert_eq!(requests("page", "200"), 1.0);
    assert_eq!(requests("page", "405"), 1.0);
}

fn await_open_connections(s: &TestServer, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = value(&scrape(s), "tandem_server_http_open_connections", &[]);
        if open == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "open connections stayed at {open}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn open_connections_are_a_gauge() {
    let s = TestServer::start();
    await_open_connections(&s, 1.0);
    let idle: Vec<_> = (0..3)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    await_open_connections(&s, 4.0);
    drop(idle);
    await_open_connections(&s, 1.0);
}

#[test]
fn the_status_token_guards_the_metrics() {
    let s = TestServer::start_with(|c| {
        c.status_token = Some(server::Token::new("status", "status-token-0123456789").unwrap());
    });
    assert_eq!(get(&s, "/metrics", None).status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .get(s.url("/metrics"))
        .bearer_auth("status-token-0123456789")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = parse(&r.text().unwrap());
    let refused = [("route", "metrics"), ("status", "401")];
    assert_eq!(
        value(&m, "tandem_server_http_requests_total", &refused),
        1.0
    );
}
