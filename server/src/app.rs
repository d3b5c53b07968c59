//! The state every connection shares: the repository, the report store, the tokens, the
//! node credentials' mode and replay memory, the
//! limits and the metrics. Routes, the status and the page read it; none of them owns it, so no module has to
//! import the router to reach it.
use crate::config::{FailureBudget, Leases, Limits, NodeAuth, Retention, Token};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::replay::Seen;
use crate::repo::Repo;

/// Shared state of all connections.
pub struct App {
    /// The repository.
    pub repo: Repo,
    /// Report store.
    pub db: Db,
    /// Token for `POST /v1/reports`.
    pub report_token: Option<Token>,
    /// Which credentials nodes present.
    pub node_auth: NodeAuth,
    /// Signatures of node requests seen within the timestamp window (replays refused).
    pub seen: Seen,
    /// Token for pause/resume.
    pub admin_token: Option<Token>,
    /// Token for the page, the status JSON and the metrics (open to anyone when `None`).
    pub status_token: Option<Token>,
    /// Limits.
    pub limits: Limits,
    /// Counters and gauges for `GET /metrics`.
    pub metrics: Metrics,
    /// Each node's report rate.
    pub report_rate: Limiter,
    /// The report table's bounds (its row cap is checked as reports arrive).
    pub retention: Retention,
    /// Reboot lease groups, their slots and expiry.
    pub leases: Leases,
    /// When a failing release pauses its channel.
    pub failure_budget: FailureBudget,
}
