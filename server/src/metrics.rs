//! Prometheus metrics (`GET /metrics`), in the OpenMetrics text format that Prometheus
//! scrapes, built with `prometheus-client`. Counters run from the server's start; the pause
//! state is read from the repository at each scrape.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tandem_server_http_requests_total` | counter | `route`, `status` |
//! | `tandem_server_http_response_bytes_total` | counter | `route` |
//! | `tandem_server_http_open_connections` | gauge | – |
//! | `tandem_server_reports_total` | counter | `channel`, `version`, `outcome` |
//! | `tandem_server_channel_paused` | gauge (0/1) | `channel` |
//!
//! Every label value is bounded: routes are a fixed list ([`Route::label`]; `N.root.json`, whose
//! 404 is the agents' normal "no newer root", is `root_probe`, apart from errors), and report label sets
//! beyond [`MAX_REPORT_SERIES`] (a node holding the report token could invent versions) are
//! counted under `channel="_other", version="_other"`.
use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto::Report;

use crate::route::Route;

/// Most distinct (channel, version) pairs counted by name in `tandem_server_reports_total`.
pub const MAX_REPORT_SERIES: usize = 10_000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    channel: String,
    version: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    channel: String,
    version: String,
}

/// The server's metrics and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    response_bytes: Family<RouteLabels, Counter>,
    open_connections: Gauge,
    reports: Family<ReportLabels, Counter>,
    report_series: Mutex<HashSet<(String, String)>>,
    paused: Family<ChannelLabels, Gauge>,
    nodes: Family<VersionLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tandem_server");
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            response_bytes: Family::default(),
            open_connections: Gauge::default(),
            reports: Family::default(),
            report_series: Mutex::new(HashSet::new()),
            paused: Family::default(),
            nodes: Family::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status code",
            m.requests.clone(),
        );
        registry.register(
            "http_response_bytes",
            "Response body bytes sent, by route",
            m.response_bytes.clone(),
        );
        registry.register(
            "http_open_connections",
            "Connections open now",
            m.open_connections.clone(),
        );
        registry.register(
            "reports",
            "Reports stored, by channel, version installed and outcome",
            m.reports.clone(),
        );
        registry.register(
            "channel_paused",
            "Whether the channel's pause file stops installs (1) or not (0)",
            m.paused.clone(),
        );
        registry.register(
            "nodes",
            "Nodes per channel and the version they run, from each node's latest report",
            m.nodes.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts an answered request.
    pub fn request(&self, route: Route<'_>, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.label(),
                status,
            })
            .inc();
    }

    /// A guard counting one open connection until dropped.
    pub fn connection(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    /// Counts a stored report.
    pub fn report(&self, report: &Report) {
        let named = (report.channel.clone(), report.to_version.clone());
        let (channel, version) = match self.report_series.lock() {
            Ok(mut seen) if seen.contains(&named) || seen.len() < MAX_REPORT_SERIES => {
                seen.insert(named.clone());
                named
            }
            _ => ("_other".to_owned(), "_other".to_owned()),
        };
        self.reports
            .get_or_create(&ReportLabels {
                channel,
                version,
                outcome: report.outcome.as_str(),
            })
            .inc();
    }

    /// Replaces the pause gauges with `channels` (name, paused).
    pub fn set_paused(&self, channels: impl IntoIterator<Item = (String, bool)>) {
        self.paused.clear();
        for (channel, paused) in channels {
            self.paused
                .get_or_create(&ChannelLabels { channel })
                .set(i64::from(paused));
        }
    }

    /// Replaces the node gauges with `channels` (name, nodes per running version). Past
    /// [`MAX_REPORT_SERIES`] series, the rest of a channel's nodes count under `_other`.
    pub fn set_nodes(&self, channels: impl IntoIterator<Item = (String, BTreeMap<String, u64>)>) {
        self.nodes.clear();
        let mut series = 0;
        for (channel, by_version) in channels {
            for (version, count) in by_version {
                series += 1;
                let version = match series <= MAX_REPORT_SERIES {
                    true => version,
                    false => "_other".to_owned(),
                };
                let labels = VersionLabels {
                    channel: channel.clone(),
                    version,
                };
                self.nodes
                    .get_or_create(&labels)
                    .inc_by(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// `body`, counting the bytes it sends under `route`.
    pub fn metered<B>(&self, route: Route<'_>, body: B) -> Metered<B> {
        let counter = self
            .response_bytes
            .get_or_create(&RouteLabels {
                route: route.label(),
            })
            .clone();
        Metered { body, counter }
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A response body that counts the bytes of its data frames as hyper takes them.
#[derive(Debug)]
pub struct Metered<B> {
    body: B,
    counter: Counter,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Metered<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proto::Outcome;

    use super::*;

    #[test]
    fn invented_versions_cannot_grow_the_series_without_bound() {
        let metrics = Metrics::default();
        let report = |version: usize| Report {
            id: None,
            node_id: "n".into(),
            channel: "stable".into(),
            from_version: "1".into(),
            to_version: version.to_string(),
            outcome: Outcome::Failed,
            reason: None,
            transfer: None,
        };
        for version in 0..MAX_REPORT_SERIES + 5 {
            metrics.report(&report(version));
        }
        metrics.report(&report(0));
        let text = metrics.encode().unwrap();
        let series = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(
            series("tandem_server_reports_total{"),
            MAX_REPORT_SERIES + 1
        );
        assert!(text.contains(
            r#"tandem_server_reports_total{channel="_other",version="_other",outcome="failed"} 5"#
        ));
        assert!(text.contains(
            r#"tandem_server_reports_total{channel="stable",version="0",outcome="failed"} 2"#
        ));
    }
}
