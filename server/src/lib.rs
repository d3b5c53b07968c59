//! `tandem-server`: serves a Tandem repository over HTTP(S), collects install reports and lets
//! an operator pause a channel (docs/DESIGN.md §1, §4 and §7).
//!
//! The repository is a directory of static files; this crate serves it with validators
//! (`ETag`, `Last-Modified`), conditional and `Range` requests, and adds three small APIs: node
//! reports (`POST /v1/reports`), channel status (`GET /v1/channels/NAME/status`) and the pause
//! switch (`POST /v1/channels/NAME/pause|resume`), reboot leases over the FleetLock protocol
//! (`POST /v1/pre-reboot`, `POST /v1/steady-state`), an automatic pause of a release over its
//! failure budget, nodes' own keys (enrollment, signed reports and leases, each key speaking
//! only for its node: `nodeauth`, `nodekeys`), plus a fleet dashboard at `/` reading
//! `GET /v1/channels` and `GET /v1/nodes`, and Prometheus metrics at `/metrics` (all reads
//! behind an optional status token).
//!
//! **Architecture invariant:** this crate never reads, links or needs a signing key (it
//! verifies nodes' signatures with their public keys only). Channel
//! metadata is read as plain JSON only to *display* it; nodes verify it themselves. The pause
//! file it writes is an unsigned hint that can only stop installs.
//!
//! Entry point: [`Server::bind`] then [`Server::run`]; the `tandem-server` binary is a thin
//! wrapper over them.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod access;
pub mod api;
pub mod app;
pub mod auth;
pub mod body;
pub mod budget;
pub mod channels;
pub mod config;
pub mod db;
pub mod error;
pub mod files;
pub mod fleetlock;
pub mod httpdate;
pub mod known;
pub mod metrics;
pub mod nodeauth;
pub mod nodekeys;
pub mod page;
pub mod path;
pub mod range;
pub mod ratelimit;
pub mod replay;
pub mod repo;
pub mod request;
pub mod route;
pub mod routes;
pub mod sendfile;
pub mod server;
pub mod status;
pub mod timed_io;
pub mod tls;

pub use config::{
    Config, FailureBudget, Leases, Limits, NodeAuth, ReportRate, Retention, TlsFiles, Token,
};
pub use error::Error;
pub use server::Server;
