//! What the failure budget (`crate::budget`) keeps in the store: the releases an operator
//! resumed after the budget paused them, so the budget does not pause the same release of
//! the same channel again. A new release is watched afresh.
use std::collections::BTreeMap;

use super::Db;
use crate::error::DbError;

impl Db {
    /// Records that an operator resumed `channel` while the budget held `release` paused.
    pub async fn resume_budget(
        &self,
        channel: &str,
        release: &str,
        now: i64,
    ) -> Result<(), DbError> {
        self.store
            .execute(
                "INSERT INTO budget_resumed (channel, version, resumed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (channel, version) DO NOTHING",
                vec![channel.into(), release.into(), now.into()],
            )
            .await
            .map(drop)
    }

    /// Nodes per latest outcome about `release` in `channel` (each node's latest report about
    /// it): one grouped count, lighter than a whole [`super::Summary`], since the budget asks
    /// after every failure report.
    pub async fn release_outcome_counts(
        &self,
        channel: &str,
        release: &str,
    ) -> Result<BTreeMap<String, u64>, DbError> {
        let rows = self
            .store
            .query(
                "SELECT r.outcome, COUNT(*) FROM reports r
                 JOIN (SELECT node_id, MAX(id) AS id FROM reports
                       WHERE channel = $1 AND to_version = $2 GROUP BY node_id) l
                   ON r.id = l.id
                 GROUP BY r.outcome",
                vec![channel.into(), release.into()],
            )
            .await?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let outcome = super::outcome_of(row.text(0)?);
            *counts.entry(outcome.as_str().to_owned()).or_default() += row.count(1)?;
        }
        Ok(counts)
    }

    /// Whether an operator resumed `release` of `channel` after the budget paused it.
    pub async fn budget_resumed(&self, channel: &str, release: &str) -> Result<bool, DbError> {
        let rows = self
            .store
            .query(
                "SELECT 1 FROM budget_resumed WHERE channel = $1 AND version = $2",
                vec![channel.into(), release.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}
