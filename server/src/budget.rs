//! The failure budget: after a failure report (failed or rolled back) about a channel's
//! current release, the server counts each node's latest report about that release and, when
//! the failed share passes the budget ([`crate::config::FailureBudget`]), pauses the channel by
//! itself. The pause file says so (`"automatic": true`) and why, in words: "paused
//! automatically: 6 of 10 nodes rolled back 2.0.0". Only an operator resumes it; after that
//! resume the budget leaves that release of that channel alone (`db/budget.rs`). The pause is
//! in the audit log under the actor `failure-budget`.
use std::collections::BTreeMap;

use proto::{Outcome, Pause, Report};

use crate::access;
use crate::app::App;
use crate::channels;
use crate::config::FailureBudget;

/// Checks the budget after `report` was stored; a failure to check is logged, never the
/// report's failure (it is stored already).
pub async fn after_report(app: &App, report: &Report) {
    if !app.failure_budget.enabled || !report.outcome.is_failure() {
        return;
    }
    match check(app, &report.channel, &report.to_version).await {
        Ok(Some(pause)) => {
            tracing::warn!(
                channel = report.channel,
                reason = pause.reason.as_deref().unwrap_or(""),
                "channel paused by its failure budget"
            );
            let logged = access::record(
                app,
                access::BUDGET_ACTOR,
                "server",
                "pause",
                &report.channel,
                pause.reason,
            );
            // An error is logged by `record`; the pause stands.
            let _ = logged.await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(channel = report.channel, error = %e, "cannot check the failure budget")
        }
    }
}

/// Pauses `channel` if its current release is `version` and over the budget; the pause
/// written, if any.
async fn check(app: &App, channel: &str, version: &str) -> Result<Option<Pause>, String> {
    let repo = app.repo.path().to_owned();
    let owned = channel.to_owned();
    let (info, pause) = tokio::task::spawn_blocking(move || {
        let info = channels::read_info(&repo, &owned).map_err(|e| e.to_string())?;
        let pause = channels::read_pause(&repo, &owned).map_err(|e| e.to_string())?;
        Ok::<_, String>((info, pause))
    })
    .await
    .map_err(|e| e.to_string())??;
    let current = info.as_ref().map(|i| i.release.version.as_str());
    if current != Some(version) || pause.is_some_and(|p| p.paused) {
        return Ok(None);
    }
    let db_err = |e: crate::error::DbError| e.to_string();
    if app
        .db
        .budget_resumed(channel, version)
        .await
        .map_err(db_err)?
    {
        return Ok(None);
    }
    let outcomes = app
        .db
        .release_outcome_counts(channel, version)
        .await
        .map_err(db_err)?;
    let Some(reason) = verdict(&app.failure_budget, &outcomes, version) else {
        return Ok(None);
    };
    let repo = app.repo.path().to_owned();
    let owned = channel.to_owned();
    tokio::task::spawn_blocking(move || channels::write_pause(&repo, &owned, Some(reason), true))
        .await
        .map_err(|e| e.to_string())?
        .map(Some)
        .map_err(|e| format!("cannot write the pause file: {e}"))
}

/// The pause reason when `outcomes` (nodes per latest outcome about `version`) are over
/// `budget`, else `None`.
pub fn verdict(
    budget: &FailureBudget,
    outcomes: &BTreeMap<String, u64>,
    version: &str,
) -> Option<String> {
    let count = |o: Outcome| outcomes.get(o.as_str()).copied().unwrap_or(0);
    let (failed, rolled_back) = (count(Outcome::Failed), count(Outcome::RolledBack));
    let reported: u64 = outcomes.values().sum();
    let bad = failed + rolled_back;
    if !budget.exceeded(bad, reported) {
        return None;
    }
    let what = match (failed, rolled_back) {
        (0, _) => "rolled back",
        (_, 0) => "failed to install",
        _ => "failed or rolled back",
    };
    let reason = format!("paused automatically: {bad} of {reported} nodes {what} {version}");
    // The version comes from unverified metadata: shown only by the shared reason rules.
    Some(
        proto::report::clean_reason(&reason)
            .chars()
            .take(proto::report::MAX_REASON)
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn outcomes(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn the_reason_names_the_share_and_what_went_wrong() {
        let budget = FailureBudget::default();
        let rolled = outcomes(&[("committed", 4), ("rolled-back", 6), ("installed", 0)]);
        assert_eq!(
            verdict(&budget, &rolled, "2.0.0").as_deref(),
            Some("paused automatically: 6 of 10 nodes rolled back 2.0.0")
        );
        let mixed = outcomes(&[("committed", 7), ("rolled-back", 2), ("failed", 1)]);
        assert_eq!(
            verdict(&budget, &mixed, "2").as_deref(),
            Some("paused automatically: 3 of 10 nodes failed or rolled back 2")
        );
        let within = outcomes(&[("committed", 8), ("failed", 2)]);
        assert_eq!(verdict(&budget, &within, "2"), None);
    }
}
