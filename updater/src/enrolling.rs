//! The daemon's enrollment of the node key (docs/DESIGN.md §7, "Node keys"): with `[server]
//! enroll` (or an `enrollment_token_file`), the daemon asks `POST /v1/enroll` — signed by the
//! key, with the one-time token when one is provisioned — at start (also when an approval is
//! recorded: a revocation since is seen) and at each poll until the server approves the key; while it waits, the log and `status` say so, and reports stay
//! queued unless the shared report token may carry them. Once approved, every report and
//! lease request is signed ([`Daemon::credential`]).
use proto::nodeauth::{self, EnrollAnswer, EnrollRequest, KeyStatus};
use repo_client::http::Credential;

use crate::daemon::Daemon;
use crate::error::Result;
use crate::nodekey::{Enrollment, RequestSigner};
use crate::snapshot::NodeSnapshot;

impl Daemon<'_> {
    /// How this node's POSTs say who sends them: its key once approved, else the fleet's
    /// report token, else nothing.
    pub(crate) fn credential(&self) -> Credential<'_> {
        match (&self.signer, self.approved.get(), &self.token) {
            (Some(signer), true, _) => Credential::Signed(signer),
            (_, _, Some(token)) => Credential::Bearer(token),
            _ => Credential::None,
        }
    }

    /// Whether the node reports at all: with a report token or a key of its own.
    pub(crate) fn reports_on(&self) -> bool {
        self.token.is_some() || self.signer.is_some()
    }

    /// Whether an earlier answer, recorded in the state directory, approved this key for
    /// this node at this server.
    pub(crate) fn recorded_approval(&self, signer: &RequestSigner) -> bool {
        let Some(recorded) = Enrollment::load(self.agent.state_fs.as_ref()) else {
            return false;
        };
        let node = NodeSnapshot::default()
            .node_id(self.agent.config())
            .unwrap_or_default();
        recorded.approves(&self.server.url, &node, &signer.0.key_id())
    }

    /// Enrolls the node key unless the server approved it already in this process's life
    /// (an approval recorded before is asked again once: a key revoked since stops being
    /// used, and `status` says so); best effort: a failure is logged, and the next poll asks
    /// again.
    pub fn enroll(&self, snapshot: &mut NodeSnapshot) {
        let Some(signer) = &self.signer else {
            return;
        };
        if self.approved.get() && self.confirmed.get() {
            return;
        }
        match self.ask_enrollment(snapshot, signer) {
            Ok(enrollment) => {
                let approved = enrollment.status == Some(KeyStatus::Approved);
                self.approved.set(approved);
                self.confirmed.set(true);
                if approved {
                    tracing::info!("{}", enrollment.describe());
                } else {
                    tracing::warn!("{}: asking again at the next poll", enrollment.describe());
                }
                if let Err(error) = enrollment.save(self.agent.state_fs.as_ref()) {
                    tracing::warn!(%error, "cannot record the enrollment");
                }
            }
            Err(error) => {
                let error = crate::error::chain(&error);
                tracing::warn!(%error, "cannot enroll the node key: retrying at the next poll");
            }
        }
    }

    fn ask_enrollment(
        &self,
        snapshot: &mut NodeSnapshot,
        signer: &RequestSigner,
    ) -> Result<Enrollment> {
        let node_id = snapshot.node_id(self.agent.config())?;
        let request = EnrollRequest {
            node_id: node_id.clone(),
            public_key: nodeauth::public_key_text(&signer.0.public_key()),
            token: self.enrollment_token(),
        };
        let path = nodeauth::ENROLL_PATH.trim_start_matches('/');
        let answer = self
            .http
            .post_answer(path, Credential::Signed(signer), &[], &request)?;
        let (status, message) = match serde_json::from_slice::<EnrollAnswer>(&answer.body) {
            Ok(said) if matches!(answer.status, 200 | 202) => (Some(said.status), None),
            _ => (None, Some(server_words(answer.status, &answer.body))),
        };
        Ok(Enrollment {
            server: self.server.url.clone(),
            node_id,
            key_id: signer.0.key_id(),
            status,
            message,
            at: jiff::Timestamp::now().to_string(),
        })
    }

    /// The provisioned one-time enrollment token, if its file is there (it may be removed
    /// once used).
    fn enrollment_token(&self) -> Option<String> {
        let path = self.server.enrollment_token_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "no enrollment token: enrolling without one, to wait for an operator");
                None
            }
        }
    }
}

/// The server's reason for a refusal: its `{"error": …}`, else the status.
fn server_words(status: u16, body: &[u8]) -> String {
    let said = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    match said {
        Some(error) => format!("status {status}: {}", proto::report::clean_reason(&error)),
        None => format!("status {status}"),
    }
}
