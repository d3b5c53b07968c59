//! The daemon's reboot into a new slot under the `[reboot]` policy (docs/DESIGN.md §6): an
//! install that must wait is staged (written, not activated); at each poll the daemon asks
//! whether it may reboot — inside a window, while the channel is not paused, then with a
//! FleetLock lease taken with the node's signed request or the fleet's report token — and only then flips the boot entry
//! and reboots. While it waits, the state says what for and until when (`status` shows it) and one report says so. The lease
//! is recorded in the state before the reboot and given back (`steady-state`) once
//! boot-check judged the slot, at the boot-check or at any later poll until the server
//! accepts: a crash between reboot and release still releases.

use jiff::Timestamp;
use proto::fleetlock::{self, ClientParams};
use proto::Outcome;

use crate::daemon::{running_version, Daemon, Poll};
use crate::error::{Error, Result};
use crate::reboot::Gate;
use crate::snapshot::NodeSnapshot;
use crate::state::{HeldLease, Phase, RebootWait};

impl Daemon<'_> {
    /// Reboots for a poll that wants it when the policy allows now: inside a window, with
    /// a lease; a staged install is activated first. Otherwise records the wait.
    pub fn reboot_when_allowed(&self, poll: &Poll) -> Result<Gate> {
        let version = match poll {
            Poll::Installed(outcome) => outcome.release.version.clone(),
            Poll::RebootPending { version } => version.clone(),
            _ => return Err(Error::usage("nothing waits for a reboot".to_owned())),
        };
        {
            let _lock = self.agent.lock()?;
            let mut snapshot = NodeSnapshot::default();
            if let Some(gate) = self.closed(&mut snapshot, &version)? {
                return Ok(gate);
            }
            let state = self.agent.state(&mut snapshot)?;
            if matches!(
                state.phase,
                Phase::Written {
                    activated: false,
                    ..
                }
            ) {
                self.agent.activate_written(state)?;
            }
            // An immediate reboot writes nothing more than it did before a policy existed.
            if state.reboot_wait.take().is_some() {
                self.agent.store.save(state)?;
            }
        }
        self.reboot(poll)?;
        Ok(Gate::Rebooted)
    }

    /// Why the node may not reboot now (the wait recorded), if it may not.
    fn closed(&self, snapshot: &mut NodeSnapshot, version: &str) -> Result<Option<Gate>> {
        let policy = &self.agent.config().reboot_policy;
        let now =
            Timestamp::from_second(self.agent.unix_now()).unwrap_or_else(|_| Timestamp::now());
        if let Some(opens) = policy.window_closed_until(now) {
            self.record_wait(snapshot, version, "window", Some(opens))?;
            return Ok(Some(Gate::Window { opens }));
        }
        if !policy.takes_lease() {
            return Ok(None);
        }
        // A release the fleet stopped (by hand, or the failure budget) does not boot on
        // nodes still waiting for their turn.
        if let Some(pause) = self.pause(&self.server.channel)? {
            self.record_wait(snapshot, version, "resume", None)?;
            return Ok(Some(Gate::Paused {
                reason: pause.reason.unwrap_or_default(),
            }));
        }
        match self.take_lease(snapshot)? {
            None => Ok(None),
            Some(reason) => {
                tracing::info!(%reason, "reboot lease refused: waiting");
                self.record_wait(snapshot, version, "lease", None)?;
                Ok(Some(Gate::Lease { reason }))
            }
        }
    }

    /// Saves the wait, and reports it when it is new.
    fn record_wait(
        &self,
        snapshot: &mut NodeSnapshot,
        version: &str,
        waiting_for: &str,
        until: Option<Timestamp>,
    ) -> Result<()> {
        let wait = RebootWait {
            version: version.to_owned(),
            waiting_for: waiting_for.to_owned(),
            until: until.map(|t| t.to_string()),
        };
        let (state, booted) = self.agent.state_and_booted(snapshot)?;
        if state.reboot_wait.as_ref() == Some(&wait) {
            return Ok(());
        }
        tracing::info!("{}", wait.describe());
        state.reboot_wait = Some(wait.clone());
        let from = running_version(state, booted);
        self.agent.store.save(state)?;
        let reason = Some(wait.describe());
        self.queue(snapshot, &from, version, Outcome::Installed, reason, None);
        self.send_reports();
        Ok(())
    }

    /// Asks for the node's lease (`pre-reboot`); `Some(reason)` when the group is full.
    /// A grant is recorded in the state before anything reboots.
    fn take_lease(&self, snapshot: &mut NodeSnapshot) -> Result<Option<String>> {
        let group = self.agent.config().reboot_policy.group.clone();
        let answer = self.fleetlock(snapshot, fleetlock::PRE_REBOOT, &group)?;
        match answer {
            Err(refusal) => Ok(Some(refusal)),
            Ok(()) => {
                let state = self.agent.state(snapshot)?;
                let taken_at = Timestamp::now().to_string();
                state.lease = Some(HeldLease { group, taken_at });
                self.agent.store.save(state)?;
                Ok(None)
            }
        }
    }

    /// Gives back the lease the state records once boot-check judged the slot it was
    /// taken for; a failure is logged and retried at the next poll.
    pub fn give_back_lease(&self, snapshot: &mut NodeSnapshot) {
        if let Err(error) = self.try_give_back_lease(snapshot) {
            let error = crate::error::chain(&error);
            tracing::warn!(%error, "cannot give back the reboot lease: retrying at the next poll");
        }
    }

    fn try_give_back_lease(&self, snapshot: &mut NodeSnapshot) -> Result<()> {
        let state = self.agent.state(snapshot)?;
        let Some(lease) = state.lease.clone() else {
            return Ok(());
        };
        // Written (the reboot may not have happened yet) or in trial: not judged yet.
        if matches!(state.phase, Phase::Written { .. } | Phase::Trial { .. }) {
            return Ok(());
        }
        if let Err(refusal) = self.fleetlock(snapshot, fleetlock::STEADY_STATE, &lease.group)? {
            return Err(Error::usage(format!(
                "the server refused to take the lease back: {refusal}"
            )));
        }
        let state = self.agent.state(snapshot)?;
        state.lease = None;
        self.agent.store.save(state)?;
        tracing::info!(group = %lease.group, "reboot lease given back");
        Ok(())
    }

    /// One FleetLock request for this node in `group`: `Ok(Ok(()))` on a 2xx,
    /// `Ok(Err(reason))` when the group is full (409) or the server asks to come back
    /// later (429, 503), an error for any other answer.
    fn fleetlock(
        &self,
        snapshot: &mut NodeSnapshot,
        path: &str,
        group: &str,
    ) -> Result<std::result::Result<(), String>> {
        let body = fleetlock::Request {
            client_params: ClientParams {
                id: snapshot.node_id(self.agent.config())?,
                group: group.to_owned(),
            },
        };
        let path = path.trim_start_matches('/');
        let header = [(fleetlock::HEADER, fleetlock::HEADER_VALUE)];
        let answer = self
            .http
            .post_answer(path, self.credential(), &header, &body)?;
        let reason = || {
            serde_json::from_slice::<fleetlock::ErrorBody>(&answer.body).map_or_else(
                |_| String::from_utf8_lossy(&answer.body).into_owned(),
                |e| format!("{}: {}", e.kind, e.value),
            )
        };
        match answer.status {
            200..=299 => Ok(Ok(())),
            // The group is full, or the server sheds load: ask again later.
            409 | 429 | 503 => Ok(Err(reason())),
            status => Err(Error::Network {
                method: "POST",
                url: self.http.url(path),
                reason: format!("status {status}: {}", reason()),
            }),
        }
    }
}
