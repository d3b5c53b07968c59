//! `tandem-updater daemon`: poll the update server, install what the channel offers when the
//! rollout selects this node, report every outcome (DESIGN.md §4, §7).
//!
//! A poll is a conditional GET of the channel file (a 304 costs the server nothing). Only
//! verified metadata decides anything; the server's pause file can only *stop* an install.
//! Failures back off exponentially with jitter, so a 404 or 5xx storm never makes a fleet
//! hammer its server.

use std::thread;
use std::time::Duration;

use rand::Rng;

use crate::agent::{Agent, BootCheck, InstallOutcome, InstallRequest};
use crate::config::Server;
use crate::error::{Error, Result};
use crate::http::{Conditional, Http, HttpOptions};
use crate::reports::Report;
use crate::state::{AgentState, Phase};

/// The most the wait between polls grows to after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// The pause hint is a tiny file.
const MAX_PAUSE_FILE: u64 = 4096;

/// What one poll decided.
#[derive(Debug)]
pub enum Poll {
    /// The channel file did not change since the last poll.
    NotModified,
    /// The channel offers what this node already runs (or has written and waits to boot).
    UpToDate { version: String },
    /// The server paused the channel.
    Paused,
    /// The staged rollout does not include this node yet.
    NotSelected { percent: u8 },
    /// The offered version rolled back here before: skipped until a newer one is published.
    RolledBackHere { version: String },
    /// The booted slot is still in its trial: nothing is installed until it is judged.
    InTrial,
    /// Installed and activated: the node should reboot into it.
    Installed(Box<InstallOutcome>),
}

impl std::fmt::Display for Poll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Poll::NotModified => write!(f, "the channel did not change"),
            Poll::UpToDate { version } => write!(f, "up to date with {version}"),
            Poll::Paused => write!(f, "the channel is paused: nothing installed"),
            Poll::NotSelected { percent } => {
                write!(
                    f,
                    "the rollout ({percent} %) does not include this node yet"
                )
            }
            Poll::RolledBackHere { version } => {
                write!(
                    f,
                    "{version} rolled back on this node: skipped until a newer release"
                )
            }
            Poll::InTrial => write!(f, "the booted slot is in its trial: waiting for boot-check"),
            Poll::Installed(outcome) => write!(
                f,
                "installed {} into slot {}",
                outcome.release.version, outcome.target
            ),
        }
    }
}

/// The polling loop of one node.
pub struct Daemon<'a> {
    agent: &'a Agent,
    server: Server,
    http: Http,
    token: Option<String>,
    channel_etag: Option<String>,
}

impl<'a> Daemon<'a> {
    pub fn new(agent: &'a Agent, server: Server, mut http_options: HttpOptions) -> Result<Self> {
        http_options.ca_bundle = server.ca_bundle.clone().or(http_options.ca_bundle);
        let http = Http::new(&server.url, http_options)?;
        let token = server
            .report_token_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|t| t.trim().to_owned())
                    .map_err(Error::io(format!("cannot read {}", path.display())))
            })
            .transpose()?;
        Ok(Daemon {
            agent,
            server,
            http,
            token,
            channel_etag: None,
        })
    }

    /// Polls until `max_polls` (forever when `None`), rebooting after an install when
    /// `reboot` is set.
    pub fn run(&mut self, reboot: bool, max_polls: Option<u64>) -> Result<()> {
        let mut failures = 0u32;
        let mut polls = 0u64;
        loop {
            match self.poll_once() {
                Ok(Poll::Installed(outcome)) => {
                    failures = 0;
                    tracing::info!(version = %outcome.release.version, slot = %outcome.target, "installed");
                    if reboot {
                        return self.agent.reboot();
                    }
                }
                Ok(decision) => {
                    failures = 0;
                    tracing::info!(%decision, "poll");
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, failures, "poll failed");
                }
            }
            polls += 1;
            if max_polls.is_some_and(|max| polls >= max) {
                return Ok(());
            }
            thread::sleep(next_wait(self.server.poll_interval, failures));
        }
    }

    /// One poll: send queued reports, look at the channel, install if it is for us.
    pub fn poll_once(&mut self) -> Result<Poll> {
        self.send_reports();
        let channel = self.server.channel.clone();
        let path = format!("channels/{channel}.json");
        let max = signer::Limits::default().max_metadata_len;
        let etag = match self
            .http
            .get_conditional(&path, self.channel_etag.as_deref(), max)?
        {
            Conditional::NotModified => return Ok(Poll::NotModified),
            Conditional::Missing => {
                return Err(Error::Refused(format!(
                    "{} does not exist",
                    self.http.url(&path)
                )))
            }
            Conditional::Fresh { etag, .. } => etag,
        };
        let decision = self.decide(&channel)?;
        // Remember the file only once it was fully handled: a failed install retries, and
        // so do decisions that depend on more than the file (the pause hint, a trial that
        // boot-check has not judged yet), or the unchanged file would answer 304 forever.
        if !matches!(decision, Poll::Paused | Poll::InTrial) {
            self.channel_etag = etag;
        }
        Ok(decision)
    }

    fn decide(&mut self, channel: &str) -> Result<Poll> {
        let metadata = self.agent.verified_channel(&self.http, channel)?;
        let release = &metadata.release;
        let state = self.agent.load_state()?;
        let booted = self.agent.booted_slot()?;
        let offered = release.manifest_sha256.to_hex();
        if holds(&state, booted, &offered) {
            return Ok(Poll::UpToDate {
                version: release.version.to_string(),
            });
        }
        if in_trial(&state, booted) {
            return Ok(Poll::InTrial);
        }
        if state
            .rolled_back_versions
            .contains(&release.version.to_string())
        {
            return Ok(Poll::RolledBackHere {
                version: release.version.to_string(),
            });
        }
        if self
            .http
            .get(&format!("channels/{channel}.pause"), MAX_PAUSE_FILE)?
            .is_some()
        {
            return Ok(Poll::Paused);
        }
        let node_id = self.agent.node_id()?;
        if !metadata.rollout.selects(node_id.as_bytes()) {
            return Ok(Poll::NotSelected {
                percent: metadata.rollout.percent,
            });
        }
        let request = InstallRequest {
            source: self.server.url.clone().into(),
            channel: Some(channel.to_owned()),
            ..InstallRequest::default()
        };
        let from = running_version(&state, booted);
        match self.agent.install(&request) {
            Ok(outcome) => {
                self.queue(&from, &outcome.release.version, "installed", None);
                self.send_reports();
                Ok(Poll::Installed(Box::new(outcome)))
            }
            Err(error) => {
                self.queue(
                    &from,
                    &release.version.to_string(),
                    "failed",
                    Some(error.to_string()),
                );
                self.send_reports();
                Err(error)
            }
        }
    }

    /// Queues the report of a boot-check and tries to send everything queued.
    pub fn report_boot_check(&self, check: &BootCheck) {
        let Ok(state) = self.agent.load_state() else {
            return;
        };
        let (slot, to, outcome, reason) = match check {
            BootCheck::Nothing { .. } => return,
            BootCheck::Committed { slot, version } => (*slot, version, "committed", None),
            BootCheck::RolledBack {
                slot,
                version,
                reason,
            } => (*slot, version, "rolled-back", Some(reason.clone())),
            BootCheck::FirmwareRolledBack { slot, version } => (
                *slot,
                version,
                "rolled-back",
                Some("the new slot never came up: the firmware fell back".into()),
            ),
        };
        let from = running_version(&state, slot.other());
        self.queue(&from, to, outcome, reason);
        self.send_reports();
    }

    fn queue(&self, from: &str, to: &str, outcome: &str, reason: Option<String>) {
        let report = self.agent.node_id().map(|node_id| Report {
            node_id,
            channel: self.server.channel.clone(),
            from_version: from.to_owned(),
            to_version: to.to_owned(),
            outcome: outcome.to_owned(),
            reason: reason.map(|r| r.chars().take(1024).collect()),
        });
        let queued = report.and_then(|r| self.agent.reports().push(&r));
        if let Err(error) = queued {
            tracing::warn!(%error, "cannot queue a report");
        }
    }

    /// Best effort: a report that cannot be sent stays queued for the next poll.
    fn send_reports(&self) {
        let sent = self.agent.reports().flush(|report| {
            self.http
                .post_json("v1/reports", self.token.as_deref(), report)
        });
        if let Err(error) = sent {
            tracing::warn!(%error, "cannot read the report queue");
        }
    }
}

/// The booted slot runs, or the other slot holds and waits to boot, this manifest.
fn holds(state: &AgentState, booted: crate::SlotId, manifest_sha256: &str) -> bool {
    let runs = state
        .slots
        .get(&booted)
        .is_some_and(|r| r.release.manifest_sha256 == manifest_sha256);
    let waits = matches!(&state.phase, Phase::Written { target, release, .. }
        if *target != booted && release.manifest_sha256 == manifest_sha256);
    runs || waits
}

fn in_trial(state: &AgentState, booted: crate::SlotId) -> bool {
    matches!(&state.phase, Phase::Trial { target, .. } | Phase::Written { target, .. } if *target == booted)
}

fn running_version(state: &AgentState, slot: crate::SlotId) -> String {
    state
        .slots
        .get(&slot)
        .map_or_else(|| "unknown".to_owned(), |r| r.release.version.clone())
}

/// The poll interval, doubled per consecutive failure up to [`MAX_BACKOFF`], ±10 % jitter
/// so a fleet started together does not poll together.
pub fn next_wait(interval: Duration, failures: u32) -> Duration {
    let base = interval
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(MAX_BACKOFF.max(interval));
    base.mul_f64(rand::thread_rng().gen_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_failures_and_stay_bounded() {
        let interval = Duration::from_secs(60);
        let first = next_wait(interval, 0);
        assert!(first >= Duration::from_secs(54) && first <= Duration::from_secs(66));
        let third = next_wait(interval, 3);
        assert!(third >= Duration::from_secs(432) && third <= Duration::from_secs(528));
        let storm = next_wait(interval, 1000);
        assert!(storm <= MAX_BACKOFF.mul_f64(1.1) && storm >= MAX_BACKOFF.mul_f64(0.9));
    }
}
