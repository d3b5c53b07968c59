//! `tandem-updater daemon`: poll the update server, install what the channel offers when the
//! rollout selects this node, report every outcome (docs/DESIGN.md §4, §7).
//!
//! A poll is one conditional GET of the channel file (a 304 costs the server nothing). The
//! body of that GET is verified once into a [`ChannelOffer`]; the rollout, pause and
//! rolled-back checks decide on it, and the install writes the bundle it names: decision and
//! install act on the same signed document. The server's pause file can only *stop* an
//! install. With a node key (`[server] enroll`), the daemon enrolls it first and then signs
//! its reports and lease requests (`enrolling`). Failures back off exponentially with jitter, so a 404 or 5xx storm never makes a
//! fleet hammer its server.

use std::cell::Cell;
use std::thread;
use std::time::Duration;

use proto::{Outcome, Pause, Transfer};
use rand::Rng;
use repo_client::http::{Conditional, Credential, Http};

use crate::agent::Agent;
use crate::config::{ConfigError, Server};
use crate::error::{Error, Refusal, Result};
use crate::installing::{InstallOptions, InstallOutcome};
use crate::lifecycle::BootCheck;
use crate::metrics::Event;
use crate::nodekey::{FileKey, RequestSigner};
use crate::offer::ChannelOffer;
use crate::reboot::Gate;
use crate::reports::Report;
use crate::snapshot::NodeSnapshot;
use crate::state::{AgentState, Phase, FACTORY_VERSION};
use crate::SlotId;

/// The most the wait between polls grows to after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// What one poll decided.
#[derive(Debug)]
pub enum Poll {
    /// The channel file did not change since the last poll.
    NotModified,
    /// The channel offers what this node already runs (or has written and waits to boot).
    UpToDate { version: String },
    /// The channel offers something this node does not install now (paused, not in the
    /// rollout yet, rolled back here, the booted slot in trial).
    Skipped(Refusal),
    /// A release is written and activated but the node has not rebooted into it (the
    /// reboot command failed): reboot again.
    RebootPending { version: String },
    /// Installed and activated: the node should reboot into it.
    Installed(Box<InstallOutcome>),
}

impl Poll {
    /// Whether the node should now reboot into a new slot.
    pub fn wants_reboot(&self) -> bool {
        matches!(self, Poll::Installed(_) | Poll::RebootPending { .. })
    }
}

impl std::fmt::Display for Poll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Poll::NotModified => write!(f, "the channel did not change"),
            Poll::UpToDate { version } => write!(f, "up to date with {version}"),
            Poll::Skipped(refusal) => write!(f, "nothing installed: {refusal}"),
            Poll::RebootPending { version } => {
                write!(f, "{version} is installed and waits for a reboot")
            }
            Poll::Installed(outcome) => write!(
                f,
                "installed {} into slot {} ({})",
                outcome.release.version, outcome.target, outcome
            ),
        }
    }
}

/// The polling loop of one node.
pub struct Daemon<'a> {
    pub(crate) agent: &'a Agent,
    pub(crate) server: Server,
    /// The one client of the repository, built from the configuration.
    pub(crate) http: Http,
    /// The fleet's shared report token. Without it and without a node key, nothing is
    /// queued: a static server takes no reports.
    pub(crate) token: Option<String>,
    /// The node's own key, when it enrolls one (`[server] enroll`).
    pub(crate) signer: Option<RequestSigner>,
    /// Whether the server approved that key: then reports and leases are signed.
    pub(crate) approved: Cell<bool>,
    /// Whether this process heard the server's word on the key (an approval recorded by an
    /// earlier one is confirmed once, so a revocation since is seen).
    pub(crate) confirmed: Cell<bool>,
    channel_etag: Option<String>,
}

impl<'a> Daemon<'a> {
    pub fn new(agent: &'a Agent, server: Server) -> Result<Self> {
        let http = agent.http(&server.url)?;
        let token = server
            .report_token_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|source| {
                        Error::Config(ConfigError::Read {
                            path: path.clone(),
                            source,
                        })
                    })
            })
            .transpose()?;
        let signer = server
            .enroll
            .then(|| FileKey::load_or_create(agent.state_fs.as_ref()))
            .transpose()?
            .map(|key| RequestSigner(Box::new(key)));
        let daemon = Daemon {
            agent,
            server,
            http,
            token,
            signer,
            approved: Cell::new(false),
            confirmed: Cell::new(false),
            channel_etag: None,
        };
        if let Some(signer) = &daemon.signer {
            daemon.approved.set(daemon.recorded_approval(signer));
        }
        Ok(daemon)
    }

    /// Polls until `max_polls` (forever when `None`), rebooting after an install when
    /// `reboot` is set and the `[reboot]` policy allows; a reboot command that fails is
    /// retried at the next poll, a closed window or a refused lease asked again.
    pub fn run(&mut self, reboot: bool, max_polls: Option<u64>) -> Result<()> {
        let mut failures = 0u32;
        let mut refusals = 0u32;
        let mut polls = 0u64;
        loop {
            let mut wait = None;
            match self.poll_once() {
                Ok(poll) if poll.wants_reboot() && reboot => {
                    match self.reboot_when_allowed(&poll) {
                        Ok(Gate::Rebooted) => return Ok(()),
                        Ok(gate) => {
                            failures = 0;
                            refusals = refusals
                                .saturating_add(u32::from(matches!(gate, Gate::Lease { .. })));
                            wait = Some(gate_wait(&gate, self.server.poll_interval, refusals));
                        }
                        Err(error) => {
                            failures = failures.saturating_add(1);
                            tracing::warn!(%error, failures, "reboot failed: retrying");
                        }
                    }
                }
                Ok(decision) => {
                    failures = 0;
                    // An install logged itself as it finished (`decide`).
                    if !matches!(decision, Poll::Installed(_)) {
                        tracing::info!(%decision, "poll");
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %crate::error::chain(&error), failures, "poll failed");
                }
            }
            polls += 1;
            if max_polls.is_some_and(|max| polls >= max) {
                return Ok(());
            }
            thread::sleep(wait.unwrap_or_else(|| next_wait(self.server.poll_interval, failures)));
        }
    }

    /// Runs the reboot command for a poll that wants one, saying so in the log first; a
    /// failure is reported.
    pub fn reboot(&self, poll: &Poll) -> Result<()> {
        match poll {
            Poll::Installed(outcome) => tracing::info!(
                "rebooting into slot {} to boot {} {} as a trial",
                outcome.target,
                outcome.release.product,
                outcome.release.version
            ),
            Poll::RebootPending { version } => {
                tracing::info!("rebooting to boot {version}, written before, as a trial");
            }
            _ => {}
        }
        let result = self.agent.reboot();
        if let Err(error) = &result {
            let version = match poll {
                Poll::Installed(outcome) => outcome.release.version.clone(),
                Poll::RebootPending { version } => version.clone(),
                _ => return result,
            };
            let mut snapshot = NodeSnapshot::default();
            if let Ok(state) = self.agent.state(&mut snapshot) {
                let state = state.clone();
                let from = running_version(&state, self.agent.booted(&mut snapshot)?);
                self.queue(
                    &mut snapshot,
                    &from,
                    &version,
                    Outcome::Failed,
                    Some(error.report_reason()),
                    None,
                );
                self.send_reports();
            }
        }
        result
    }

    /// One poll: send queued reports, look at the channel, install if it is for us; then
    /// the metrics record what it decided (still under the lock: one writer at a time).
    /// Every step of the poll shares one [`NodeSnapshot`].
    pub fn poll_once(&mut self) -> Result<Poll> {
        let _lock = self.agent.lock()?;
        let mut snapshot = NodeSnapshot::default();
        let poll = self.poll(&mut snapshot);
        self.agent.record_metrics(&mut snapshot, poll_event(&poll));
        poll
    }

    fn poll(&mut self, snapshot: &mut NodeSnapshot) -> Result<Poll> {
        self.enroll(snapshot);
        self.send_reports();
        self.give_back_lease(snapshot);
        if let Some(version) = self.reboot_pending(snapshot)? {
            return Ok(Poll::RebootPending { version });
        }
        let channel = self.server.channel.clone();
        let path = format!("channels/{channel}.json");
        let max = bundle::Limits::default().max_metadata_len;
        let (body, etag) =
            match self
                .http
                .get_conditional(&path, self.channel_etag.as_deref(), max)?
            {
                Conditional::NotModified => return Ok(Poll::NotModified),
                Conditional::Missing => {
                    return Err(Error::usage(format!(
                        "{} does not exist: no such channel",
                        self.http.url(&path)
                    )))
                }
                Conditional::Fresh { body, etag } => (body, etag),
            };
        let decision = self.decide(snapshot, &channel, body)?;
        // Remember the file only once it was fully handled: a failed install retries, and
        // so do decisions that depend on more than the file (the pause hint, a trial that
        // boot-check has not judged yet), or the unchanged file would answer 304 forever.
        let depends_on_more = matches!(
            decision,
            Poll::Skipped(Refusal::Paused { .. } | Refusal::InTrial { .. })
        );
        if !depends_on_more {
            self.channel_etag = etag;
        }
        Ok(decision)
    }

    /// The version written and activated that the node has not booted yet, or written and
    /// staged while the `[reboot]` policy makes installs wait.
    fn reboot_pending(&self, snapshot: &mut NodeSnapshot) -> Result<Option<String>> {
        let gated = self.agent.config().reboot_policy.gated();
        let (state, booted) = self.agent.state_and_booted(snapshot)?;
        Ok(match &state.phase {
            Phase::Written {
                target,
                release,
                activated: false,
            } if gated && *target != booted => Some(release.version.clone()),
            Phase::Written {
                target,
                release,
                activated: true,
            } if *target != booted && self.agent.boots_next(*target)? => {
                Some(release.version.clone())
            }
            _ => None,
        })
    }

    fn decide(
        &mut self,
        snapshot: &mut NodeSnapshot,
        channel: &str,
        body: Vec<u8>,
    ) -> Result<Poll> {
        let offer = self
            .agent
            .channel_offer(snapshot, &self.http, channel, Some(body))?;
        let release = &offer.metadata.release;
        let (state, booted) = self.agent.state_and_booted(snapshot)?;
        let state = state.clone();
        if holds(&state, booted, &release.manifest_sha256.to_hex()) {
            return Ok(Poll::UpToDate {
                version: release.version.to_string(),
            });
        }
        if let Some(refusal) = self.skip_reason(snapshot, &state, booted, &offer)? {
            return Ok(Poll::Skipped(refusal));
        }
        let from = running_version(&state, booted);
        let to = release.version.to_string();
        let bundle = repo_client::display_path(&self.http, &release.bundle);
        let installed = self
            .agent
            .offer_of_channel(snapshot, &self.http, offer)
            .and_then(|offer| {
                // An install whose reboot waits is staged: it boots only once allowed.
                let stage = self.agent.config().reboot_policy.gated();
                let options = InstallOptions {
                    stage,
                    ..InstallOptions::default()
                };
                self.agent.install_offer(snapshot, offer, options)
            });
        match installed {
            Ok(outcome) => {
                log_installed(&outcome, &bundle);
                let transfer = Some(outcome.total().transfer());
                let to = &outcome.release.version;
                self.queue(snapshot, &from, to, Outcome::Installed, None, transfer);
                self.send_reports();
                Ok(Poll::Installed(Box::new(outcome)))
            }
            Err(error) => {
                self.queue(
                    snapshot,
                    &from,
                    &to,
                    Outcome::Failed,
                    Some(error.report_reason()),
                    None,
                );
                self.send_reports();
                Err(error)
            }
        }
    }

    /// Why the verified offer is not installed now, if it is not.
    fn skip_reason(
        &self,
        snapshot: &mut NodeSnapshot,
        state: &AgentState,
        booted: SlotId,
        offer: &ChannelOffer,
    ) -> Result<Option<Refusal>> {
        let metadata = &offer.metadata;
        let version = metadata.release.version.to_string();
        if state.in_trial(booted) {
            return Ok(Some(Refusal::InTrial { booted }));
        }
        if state.rolled_back_versions.contains(&version) {
            return Ok(Some(Refusal::RolledBackHere { version }));
        }
        if let Some(pause) = self.pause(&metadata.channel)? {
            return Ok(Some(Refusal::Paused {
                reason: pause.reason,
            }));
        }
        let node_id = snapshot.node_id(self.agent.config())?;
        if !metadata.rollout.selects(node_id.as_bytes()) {
            return Ok(Some(Refusal::NotInRollout {
                percent: metadata.rollout.percent,
            }));
        }
        Ok(None)
    }

    /// The server's pause hint for `channel`, when it pauses.
    pub(crate) fn pause(&self, channel: &str) -> Result<Option<Pause>> {
        let path = format!("channels/{channel}.pause");
        let bytes = self.http.get(&path, proto::pause::MAX_PAUSE_FILE)?;
        Ok(bytes.map(|b| Pause::parse(&b)).filter(|p| p.paused))
    }

    /// Queues the report of a boot-check and tries to send everything queued.
    pub fn report_boot_check(&self, check: &BootCheck) {
        self.report_boot_check_in(&mut NodeSnapshot::default(), check);
    }

    /// [`Daemon::report_boot_check`] with the state `snapshot` holds (the boot-check's own).
    pub fn report_boot_check_in(&self, snapshot: &mut NodeSnapshot, check: &BootCheck) {
        let Ok(state) = self.agent.state(snapshot).cloned() else {
            return;
        };
        let (slot, to, outcome, reason) = match check {
            BootCheck::Nothing { .. } | BootCheck::UnrecordedTrial { .. } => {
                // A lease a crash kept from being given back still is.
                self.give_back_lease(snapshot);
                return;
            }
            BootCheck::Committed {
                slot,
                version,
                checks,
            } => {
                let unchecked = (*checks == 0)
                    .then(|| "no health checks configured: committed unchecked".to_owned());
                (*slot, version, Outcome::Committed, unchecked)
            }
            BootCheck::RolledBack {
                slot,
                version,
                reason,
            } => (*slot, version, Outcome::RolledBack, Some(reason.clone())),
            BootCheck::FirmwareRolledBack { slot, version } => (
                *slot,
                version,
                Outcome::RolledBack,
                Some("the new slot never came up: the firmware fell back".into()),
            ),
        };
        let from = running_version(&state, slot.other());
        self.queue(snapshot, &from, to, outcome, reason, None);
        self.enroll(snapshot);
        self.send_reports();
        self.give_back_lease(snapshot);
    }

    /// Queues a report of `outcome`; `transfer` is what an install fetched and reused.
    pub(crate) fn queue(
        &self,
        snapshot: &mut NodeSnapshot,
        from: &str,
        to: &str,
        outcome: Outcome,
        reason: Option<String>,
        transfer: Option<Transfer>,
    ) {
        if !self.reports_on() {
            return;
        }
        // The queue gives the report its id.
        let report = snapshot.node_id(self.agent.config()).map(|node_id| Report {
            id: None,
            node_id,
            channel: self.server.channel.clone(),
            from_version: from.to_owned(),
            to_version: to.to_owned(),
            outcome,
            reason: reason.map(|r| proto::report::clean_reason(&r)),
            transfer,
        });
        let queued = report.and_then(|r| self.agent.reports().push(&r));
        if let Err(error) = queued {
            tracing::warn!(%error, "cannot queue a report");
        }
    }

    /// Best effort: a report that cannot be sent stays queued for the next poll.
    pub(crate) fn send_reports(&self) {
        let credential = self.credential();
        if matches!(credential, Credential::None) {
            // A key not approved yet, and no shared token: the reports wait in the queue.
            return;
        }
        let sent = self
            .agent
            .reports()
            .flush(|report| Ok(self.http.post_json("v1/reports", credential, report)?));
        if let Err(error) = sent {
            tracing::warn!(%error, "cannot read the report queue");
        }
    }
}

/// One line in the log (the journal, under the unit) for an install: what, into which slot,
/// from where, and what it fetched and reused (the root image and the partition images
/// together).
fn log_installed(outcome: &InstallOutcome, bundle: &str) {
    let write = outcome.total();
    tracing::info!(
        "installed {} {} into slot {} from {bundle}: {} bytes fetched of a {}-byte bundle, {} bytes reused from the slots",
        outcome.release.product,
        outcome.release.version,
        outcome.target,
        write.bytes_read,
        write.bundle_bytes,
        write.bytes_reused
    );
}

/// The metrics event of a poll: what it decided, and the refusal or error code.
pub fn poll_event(result: &Result<Poll>) -> Event {
    let (decision, reason) = match result {
        Ok(Poll::Installed(_)) => ("installed", String::new()),
        Ok(Poll::UpToDate { .. }) => ("up-to-date", String::new()),
        Ok(Poll::NotModified) => ("not-modified", String::new()),
        Ok(Poll::Skipped(refusal)) => ("skipped", refusal.code().into()),
        Ok(Poll::RebootPending { .. }) => ("reboot-pending", String::new()),
        Err(error) => ("error", error.code().into()),
    };
    Event::Poll { decision, reason }
}

/// The booted slot runs, or the other slot holds and waits to boot, this manifest.
fn holds(state: &AgentState, booted: SlotId, manifest_sha256: &str) -> bool {
    let runs = state
        .slots
        .get(&booted)
        .is_some_and(|r| r.release.manifest_sha256 == manifest_sha256);
    let waits = matches!(&state.phase, Phase::Written { target, release, .. }
        if *target != booted && release.manifest_sha256 == manifest_sha256);
    runs || waits
}

/// The version the node runs, as its reports give it: a slot the agent never wrote holds the
/// factory image, reported as `factory` (as `status` and the metrics name it).
pub(crate) fn running_version(state: &AgentState, slot: SlotId) -> String {
    state
        .slots
        .get(&slot)
        .map_or_else(|| FACTORY_VERSION.to_owned(), |r| r.release.version.clone())
}

/// How long the daemon sleeps before asking again after `gate` held a reboot back: until
/// the window opens (at most a poll interval); after a refused lease, the poll interval
/// backing off like a failure, but never past four doublings (a slot frees within a
/// reboot's time).
fn gate_wait(gate: &Gate, interval: Duration, refusals: u32) -> Duration {
    match gate {
        Gate::Rebooted => Duration::ZERO,
        Gate::Window { opens } => {
            let until = opens.duration_since(jiff::Timestamp::now());
            let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
            until.clamp(Duration::from_secs(1), interval.max(Duration::from_secs(1)))
        }
        Gate::Lease { .. } => next_wait(interval, refusals.min(4)),
        Gate::Paused { .. } => next_wait(interval, 0),
    }
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
