//! What the agent tells others: the metrics textfile, rewritten after every operation from
//! the operation's own [`NodeSnapshot`], and the queue of reports for the server.

use std::path::Path;
use std::sync::Arc;

use crate::agent::Agent;
use crate::error::{Error, Result};
use crate::metrics::{self, Event, Snapshot};
use crate::reports::ReportQueue;
use crate::snapshot::NodeSnapshot;

impl Agent {
    /// Takes `event` into the metrics and rewrites the textfile, when `metrics_textfile` is
    /// configured; the booted slot, its release and the floor are those `snapshot` knows.
    /// A failure is logged, never returned: metrics never fail an operation.
    pub fn record_metrics(&self, snapshot: &mut NodeSnapshot, event: Event) {
        let Some(path) = &self.config.metrics_textfile else {
            return;
        };
        if let Err(error) = self.write_metrics(snapshot, path, event) {
            tracing::warn!(error = %crate::error::chain(&error), "cannot write the metrics");
        }
    }

    fn write_metrics(&self, snapshot: &mut NodeSnapshot, path: &Path, event: Event) -> Result<()> {
        let recorded = snapshot.recorded(self.state_fs.as_ref());
        recorded.apply(event, self.unix_now());
        recorded.save(self.state_fs.as_ref())?;
        let recorded = recorded.clone();
        let (_, booted_slot) = self.state_and_booted(snapshot)?;
        let (state, counters) = self.state_and_counters(snapshot)?;
        let text = metrics::render(&Snapshot {
            booted_slot,
            booted_version: state
                .slots
                .get(&booted_slot)
                .map_or("factory", |record| record.release.version.as_str()),
            security_floor: counters.security_floor,
            recorded: &recorded,
        });
        metrics::write_textfile(path, &text)
            .map_err(Error::io(format!("cannot write {}", path.display())))
    }

    /// Reports waiting to be sent to the server (kept beside the state file).
    pub fn reports(&self) -> ReportQueue {
        ReportQueue::new(Arc::clone(&self.state_fs))
    }
}
