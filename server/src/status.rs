//! Channel status (`GET /v1/channels/NAME/status`): the published release (as read, not
//! verified), whether the channel is paused, nodes per version and the outcomes of the
//! current release, from the report database; and every channel's status at once
//! (`GET /v1/channels`, what the dashboard reads).
use std::collections::BTreeMap;
use std::time::SystemTime;

use hyper::{Response, StatusCode};
use proto::{ChannelDoc, ReleaseDoc, RolloutDoc};
use serde::Serialize;

use crate::api::{self, ApiError};
use crate::app::App;
use crate::body::ResponseBody;
use crate::channels;
use crate::db::{self, Failure, TransferTotals};
use crate::httpdate;
use proto::Pause;

/// The status document of one channel.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelStatus {
    /// Channel name.
    pub channel: String,
    /// Whether `channels/NAME.pause` pauses installs (a file saying `"paused": false` does
    /// not; one that cannot be read does).
    pub paused: bool,
    /// The pause file's content when paused.
    pub pause: Option<Pause>,
    /// `signed.version` of the channel metadata.
    pub metadata_version: u64,
    /// `signed.expires`.
    pub expires: String,
    /// `signed.release` as published.
    pub release: ReleaseDoc,
    /// `signed.rollout` as published.
    pub rollout: RolloutDoc,
    /// Nodes per running version.
    pub nodes: NodeCounts,
    /// Outcomes of the current release.
    pub current_release: ReleaseOutcomes,
}

/// Node counts from each node's latest report.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCounts {
    /// Nodes that ever reported on this channel.
    pub total: u64,
    /// Nodes per running version.
    pub by_version: BTreeMap<String, u64>,
}

/// What happened to the current release.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseOutcomes {
    /// `release.version`, if the metadata has one.
    pub version: Option<String>,
    /// Nodes per latest outcome for this version.
    pub outcomes: BTreeMap<String, u64>,
    /// Failed and rolled-back nodes with their reasons (newest first, ≤ 100).
    pub failures: Vec<Failure>,
    /// Reports about this release per hour of the last 24 hours, oldest first; hours
    /// without reports are left out.
    pub hourly: Vec<HourCounts>,
    /// Bytes its installs fetched and reused, over `transfer_reports` installed reports
    /// (flattened: `bytes_fetched`, `bytes_reused`, `transfer_reports`).
    #[serde(flatten)]
    pub transfer: TransferTotals,
}

/// Reports of one hour, per outcome.
#[derive(Debug, Clone, Serialize)]
pub struct HourCounts {
    /// Start of the hour (RFC 3339).
    pub hour: String,
    /// Reports per outcome in that hour.
    pub outcomes: BTreeMap<String, u64>,
}

/// Every channel's status (`GET /v1/channels`).
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// When the server assembled this (RFC 3339).
    pub generated_at: String,
    /// Channels by name, at most [`channels::MAX_LISTED`].
    pub channels: Vec<ChannelStatus>,
    /// Channels whose status could not be read, with why.
    pub errors: Vec<ChannelFailure>,
}

/// A channel whose status could not be built.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelFailure {
    /// Channel name.
    pub channel: String,
    /// What went wrong.
    pub error: String,
}

/// Builds the status of `name`; `Ok(None)` when the channel has no metadata file.
pub async fn build(app: &App, name: &str) -> Result<Option<ChannelStatus>, ApiError> {
    let repo = app.repo.path().to_owned();
    let owned = name.to_owned();
    let (info, pause) = tokio::task::spawn_blocking(move || {
        let info = channels::read_info(&repo, &owned)
            .map_err(|e| ApiError::internal(format!("channel {owned}: metadata unreadable"), &e))?;
        let pause = channels::read_pause(&repo, &owned).map_err(|e| {
            ApiError::internal(format!("channel {owned}: pause file unreadable"), &e)
        })?;
        Ok::<_, ApiError>((info, pause))
    })
    .await
    .map_err(|e| ApiError::internal("status worker failed", &e))??;
    let Some(info) = info else {
        return Ok(None);
    };
    let version = Some(info.release.version.clone());
    let summary = app
        .db
        .summary(name.to_owned(), version.clone())
        .await
        .map_err(|e| ApiError::internal("could not read reports", &e))?;
    Ok(Some(assemble(name, info, pause, version, summary)))
}

fn assemble(
    name: &str,
    info: ChannelDoc,
    pause: Option<Pause>,
    version: Option<String>,
    summary: crate::db::Summary,
) -> ChannelStatus {
    // A cached summary may hold hours that have left the window since it was computed.
    let since = httpdate::unix_seconds(SystemTime::now()) - db::HOURLY_WINDOW_SECS;
    let hourly = summary
        .hourly
        .into_iter()
        .filter(|(hour, _)| hour + 3600 > since)
        .map(|(hour, outcomes)| HourCounts {
            hour: httpdate::rfc3339(hour),
            outcomes,
        })
        .collect();
    ChannelStatus {
        channel: name.to_owned(),
        paused: pause.as_ref().is_some_and(|p| p.paused),
        pause: pause.filter(|p| p.paused),
        metadata_version: info.version,
        expires: info.expires,
        release: info.release,
        rollout: info.rollout,
        nodes: NodeCounts {
            total: summary.nodes,
            by_version: summary.by_version,
        },
        current_release: ReleaseOutcomes {
            version,
            outcomes: summary.outcomes,
            failures: summary.failures,
            hourly,
            transfer: summary.transfer,
        },
    }
}

/// The HTTP answer for `GET /v1/channels/NAME/status`.
pub async fn response(app: &App, name: &str) -> Result<Response<ResponseBody>, ApiError> {
    match build(app, name).await? {
        Some(status) => Ok(api::json(StatusCode::OK, &status)),
        None => Err(ApiError::not_found(format!(
            "no channel {name} in the repository"
        ))),
    }
}

/// Every listed channel's status, in name order.
pub async fn fleet(app: &App) -> Result<FleetStatus, ApiError> {
    let repo = app.repo.path().to_owned();
    let names = tokio::task::spawn_blocking(move || channels::list(&repo))
        .await
        .map_err(|e| ApiError::internal("status worker failed", &e))?
        .map_err(|e| ApiError::internal("cannot list channels", &e))?;
    let mut fleet = FleetStatus {
        generated_at: httpdate::now_rfc3339(),
        channels: Vec::with_capacity(names.len()),
        errors: Vec::new(),
    };
    for name in names {
        match build(app, &name).await {
            Ok(Some(s)) => fleet.channels.push(s),
            Ok(None) => {}
            Err(e) => fleet.errors.push(ChannelFailure {
                channel: name,
                error: e.message,
            }),
        }
    }
    Ok(fleet)
}
