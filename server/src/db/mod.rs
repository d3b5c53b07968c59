//! The report store: an embedded SQLite database (`DATA/tandem.db`, the default) or a
//! PostgreSQL database shared by several servers (`--database postgres://…`). The report
//! logic here is written once against [`store::Store`]; the two backends differ only in
//! placeholders, migrations ([`schema`]) and how a cached summary is known to be current.
//!
//! Schema: `reports(id, received_at, node_id, channel, from_version, to_version, outcome,
//! reason, report_id, bytes_fetched, bytes_reused, bundle_bytes)`, appended to and pruned by [`Retention`] (by age and by row count).
//! A report with an id is stored once per (node, id): a retried POST finds the first row.
//! Aggregates use each node's *latest* report in a channel.
//!
//! A channel's [`Summary`] is computed once and then served from memory while the channel's
//! [`sql::Stamp`] is unchanged: with SQLite (this process the only writer) the stamp is
//! kept in memory and a cache hit costs no query; with PostgreSQL it is one primary-key
//! lookup, so reports stored by another server invalidate this server's cache too.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::config::Retention;
use crate::error::DbError;
use proto::{Outcome, Report, Transfer};

pub mod access;
pub mod budget;
pub mod leases;
pub mod nodekeys;
pub mod postgres;
pub mod schema;
pub mod sql;
pub mod sqlite;
pub mod store;

use sql::{Row, Stamp, Val};
use store::Store;

/// Most failures listed per channel status.
pub const MAX_FAILURES_LISTED: u32 = 100;
/// Most nodes one page of [`Db::nodes`] returns.
pub const MAX_NODES_PAGE: u32 = 500;
/// The window of [`Summary::hourly`]: the last 24 hours.
pub const HOURLY_WINDOW_SECS: i64 = 24 * 3600;

/// A cached summary: the release it was computed for and the channel's stamp read before.
type Cached = (Option<String>, Stamp, Summary);
/// Cached summaries by channel.
type SummaryCache = Arc<Mutex<HashMap<String, Cached>>>;

/// Handle on the report database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    store: Store,
    summaries: SummaryCache,
    /// Reports this server stored since it last counted the table against the row cap.
    since_count: Arc<AtomicU64>,
    /// Held while the row cap is enforced, so concurrent requests do not all count.
    capping: Arc<tokio::sync::Mutex<()>>,
}

/// The cache, also after a panic elsewhere: a map of finished entries stays usable.
fn locked(cache: &SummaryCache) -> MutexGuard<'_, HashMap<String, Cached>> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a report went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stored {
    /// Its row id.
    pub id: i64,
    /// `false` when the node had already sent this report (same id): nothing was added.
    #[serde(skip)]
    pub new: bool,
}

/// A failed or rolled-back node of the current release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The node.
    pub node_id: String,
    /// `failed` or `rolled-back`.
    pub outcome: Outcome,
    /// The node's explanation.
    pub reason: Option<String>,
    /// Version it came from.
    pub from_version: String,
    /// When the report arrived (RFC 3339).
    pub received_at: String,
}

/// Aggregates of one channel's reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Nodes that ever reported on this channel.
    pub nodes: u64,
    /// Nodes per running version, from each node's latest report (committed: `to_version`;
    /// installed, failed, rolled-back: `from_version`, the slot it still runs).
    pub by_version: BTreeMap<String, u64>,
    /// For the release asked about: nodes per latest outcome (all four keys present).
    pub outcomes: BTreeMap<String, u64>,
    /// Its failures, newest first, at most [`MAX_FAILURES_LISTED`].
    pub failures: Vec<Failure>,
    /// Its reports per hour (Unix seconds of the hour's start) and outcome, for the hours
    /// within [`HOURLY_WINDOW_SECS`] of when the summary was computed. Counts reports, not
    /// nodes: a node that installed then committed counts in both.
    pub hourly: BTreeMap<i64, BTreeMap<String, u64>>,
    /// What its `installed` reports say the installs fetched and reused.
    pub transfer: TransferTotals,
}

/// Sums over the `installed` reports of a release that carried a transfer (every report,
/// not each node's latest: a node that installed twice counts twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TransferTotals {
    /// Bytes the installs fetched.
    pub bytes_fetched: u64,
    /// Bytes they reused from the slots instead.
    pub bytes_reused: u64,
    /// How many reports these sums cover (agents before transfers send none).
    pub transfer_reports: u64,
}

/// A node's latest report in one channel: a row of the dashboard's node table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// The node.
    pub node_id: String,
    /// The channel it reported on.
    pub channel: String,
    /// The version it runs, by the rule of [`Summary::by_version`].
    pub version: String,
    /// The release its latest report is about.
    pub to_version: String,
    /// Its latest outcome.
    pub outcome: Outcome,
    /// The reason given with it, if any.
    pub reason: Option<String>,
    /// When that report arrived (RFC 3339).
    pub last_seen: String,
    /// What the node's latest `installed` report in this channel says the install fetched
    /// and reused; `None` (`null`) without such a report or when it carried no transfer.
    pub last_install_transfer: Option<Transfer>,
}

/// Which nodes [`Db::nodes`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeQuery {
    /// Only node ids containing this text (all when empty).
    pub search: String,
    /// Rows skipped, newest first.
    pub offset: u64,
    /// Rows returned, at most [`MAX_NODES_PAGE`].
    pub limit: u32,
}

/// One page of the node table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePage {
    /// Matching (node, channel) pairs in all.
    pub total: u64,
    /// Rows skipped.
    pub offset: u64,
    /// The page size asked for.
    pub limit: u32,
    /// The rows, newest report first.
    pub nodes: Vec<NodeRow>,
}

impl Db {
    /// Opens (creating if needed) the SQLite database `data_dir/tandem.db` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(data_dir).map_err(|source| DbError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let sqlite = sqlite::Sqlite::open(&data_dir.join("tandem.db"))?;
        Ok(Db::with_store(Store::Sqlite(sqlite)))
    }

    /// Connects to the PostgreSQL database at `url` (with the password in `password_file`,
    /// if given) and migrates it.
    pub async fn connect(url: &str, password_file: Option<&Path>) -> Result<Db, DbError> {
        let pg = postgres::Postgres::connect(url, password_file).await?;
        Ok(Db::with_store(Store::Postgres(pg)))
    }

    fn with_store(store: Store) -> Db {
        Db {
            store,
            summaries: SummaryCache::default(),
            since_count: Arc::default(),
            capping: Arc::default(),
        }
    }

    /// Stores a (validated) report received at `received_at` (Unix seconds). A report whose
    /// id this node already sent is not stored again: the first one's row is returned.
    pub async fn insert(&self, report: Report, received_at: i64) -> Result<Stored, DbError> {
        // Twice at most: a first row pruned between the insert and the look-up is gone, and
        // the second insert stores the report.
        for _ in 0..2 {
            let params = vec![
                received_at.into(),
                report.node_id.clone().into(),
                report.channel.clone().into(),
                report.from_version.clone().into(),
                report.to_version.clone().into(),
                report.outcome.as_str().into(),
                report.reason.clone().into(),
                report.id.clone().into(),
                report.transfer.map(|t| t.bytes_fetched).into(),
                report.transfer.map(|t| t.bytes_reused).into(),
                report.transfer.map(|t| t.bundle_bytes).into(),
            ];
            if let Some(id) = self.store.insert_report(&report.channel, params).await? {
                return Ok(Stored { id, new: true });
            }
            let first = self
                .store
                .query(
                    "SELECT id FROM reports WHERE node_id = $1 AND report_id = $2",
                    vec![report.node_id.clone().into(), report.id.clone().into()],
                )
                .await?;
            if let Some(row) = first.first() {
                return Ok(Stored {
                    id: row.int(0)?,
                    new: false,
                });
            }
        }
        Err(DbError::Decode("a repeated report vanished twice".into()))
    }

    /// Aggregates of `channel`, with outcomes of `release` (the current version) if given.
    pub async fn summary(
        &self,
        channel: String,
        release: Option<String>,
    ) -> Result<Summary, DbError> {
        // Read before computing: a report stored meanwhile changes the stamp, so a summary
        // that may miss it is never served as current.
        let stamp = self.store.stamp(&channel).await?;
        if let Some((_, _, hit)) = locked(&self.summaries)
            .get(&channel)
            .filter(|(cached_for, at, _)| *cached_for == release && *at == stamp)
        {
            return Ok(hit.clone());
        }
        let summary = summarize(&self.store, &channel, release.as_deref()).await?;
        locked(&self.summaries).insert(channel, (release, stamp, summary.clone()));
        Ok(summary)
    }

    /// The latest report of each node in each channel whose id contains `query.search`,
    /// newest first, one page of at most [`MAX_NODES_PAGE`] rows.
    pub async fn nodes(&self, query: NodeQuery) -> Result<NodePage, DbError> {
        list_nodes(&self.store, &query).await
    }

    /// Deletes what `retention` does not keep at time `now` (Unix seconds): reports older
    /// than `max_age`, then the surplus over `max_rows` ([`SURPLUS`]). Returns the number
    /// deleted.
    pub async fn prune(&self, retention: &Retention, now: i64) -> Result<u64, DbError> {
        let age = i64::try_from(retention.max_age.as_secs()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(age);
        let old = self
            .store
            .execute(
                "DELETE FROM reports WHERE received_at < $1",
                vec![cutoff.into()],
            )
            .await?;
        let surplus = self.delete_surplus(retention.max_rows).await?;
        if old > 0 && surplus == 0 {
            self.store.touch_all().await?;
        }
        Ok(old + surplus)
    }

    /// Called after each report stored: every [`Retention::check_every`] of them, counts the
    /// table and deletes the surplus over `max_rows`, so a flood is bounded as it arrives
    /// rather than at the next hourly pruning. Returns the number deleted.
    pub async fn keep_within(&self, retention: &Retention) -> Result<u64, DbError> {
        let stored = self.since_count.fetch_add(1, Ordering::Relaxed) + 1;
        if stored < retention.check_every() {
            return Ok(0);
        }
        // Another request is counting already: this report will be in its count or the next.
        let Ok(_capping) = self.capping.try_lock() else {
            return Ok(0);
        };
        self.since_count.store(0, Ordering::Relaxed);
        self.delete_surplus(retention.max_rows).await
    }

    /// Deletes the reports beyond the first `keep` ([`SURPLUS`]: the longest node histories
    /// lose their oldest reports first).
    async fn delete_surplus(&self, keep: u64) -> Result<u64, DbError> {
        let surplus = self.count().await?.saturating_sub(keep);
        if surplus == 0 {
            return Ok(0);
        }
        let limit = i64::try_from(surplus).unwrap_or(i64::MAX);
        let deleted = self.store.execute(SURPLUS, vec![limit.into()]).await?;
        if deleted > 0 {
            self.store.touch_all().await?;
        }
        Ok(deleted)
    }

    /// Number of stored reports (for tests and the page).
    pub async fn count(&self) -> Result<u64, DbError> {
        let rows = self
            .store
            .query("SELECT COUNT(*) FROM reports", Vec::new())
            .await?;
        rows.first().map_or(Ok(0), |r| r.count(0))
    }
}

/// Deletes `$1` reports, the noisiest nodes' first: each report's depth is how many newer
/// reports its node has, and the deepest go first (the oldest among equals). A node that
/// floods loses its own history while every other node keeps its latest reports; only when
/// all nodes are down to one report each do the oldest of those go.
const SURPLUS: &str = "DELETE FROM reports WHERE id IN (
       SELECT id FROM (
         SELECT id, ROW_NUMBER() OVER (PARTITION BY node_id ORDER BY id DESC) AS depth
         FROM reports) ranked
       ORDER BY depth DESC, id ASC
       LIMIT $1)";

/// Each node's latest report in a channel.
const LATEST: &str =
    "SELECT r.node_id, r.from_version, r.to_version, r.outcome, r.reason, r.received_at
     FROM reports r
     JOIN (SELECT node_id, MAX(id) AS id FROM reports WHERE channel = $1 GROUP BY node_id) l
       ON r.id = l.id";

async fn summarize(
    store: &Store,
    channel: &str,
    release: Option<&str>,
) -> Result<Summary, DbError> {
    let mut summary = Summary::default();
    for row in store.query(LATEST, vec![channel.into()]).await? {
        let outcome = outcome_of(row.text(3)?);
        let running = running_version(outcome, row.text(1)?, row.text(2)?);
        summary.nodes += 1;
        *summary.by_version.entry(running).or_default() += 1;
    }
    for o in Outcome::ALL {
        summary.outcomes.insert(o.as_str().to_owned(), 0);
    }
    if let Some(release) = release {
        release_outcomes(store, channel, release, &mut summary).await?;
        summary.transfer = release_transfer(store, channel, release).await?;
        let since = crate::httpdate::unix_seconds(std::time::SystemTime::now())
            .saturating_sub(HOURLY_WINDOW_SECS);
        summary.hourly = hourly_outcomes(store, channel, release, since).await?;
    }
    Ok(summary)
}

/// A stored outcome; a row that does not parse (written by hand) counts as a failure.
fn outcome_of(stored: String) -> Outcome {
    stored.parse().unwrap_or(Outcome::Failed)
}

/// The version a node runs after a report: the new one once committed, else the slot it
/// still boots.
fn running_version(outcome: Outcome, from_version: String, to_version: String) -> String {
    if outcome == Outcome::Committed {
        to_version
    } else {
        from_version
    }
}

/// Reports about `release` since `since` (Unix seconds), per hour and outcome.
async fn hourly_outcomes(
    store: &Store,
    channel: &str,
    release: &str,
    since: i64,
) -> Result<BTreeMap<i64, BTreeMap<String, u64>>, DbError> {
    let rows = store
        .query(
            "SELECT received_at / 3600 * 3600 AS hour, outcome, COUNT(*) FROM reports
             WHERE channel = $1 AND to_version = $2 AND received_at >= $3
             GROUP BY hour, outcome",
            vec![channel.into(), release.into(), since.into()],
        )
        .await?;
    let mut hourly: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    for row in rows {
        let outcome = outcome_of(row.text(1)?);
        *hourly
            .entry(row.int(0)?)
            .or_default()
            .entry(outcome.as_str().to_owned())
            .or_default() += row.count(2)?;
    }
    Ok(hourly)
}

/// The [`TransferTotals`] of `release`. The sums are cast back to `BIGINT`: PostgreSQL sums
/// them as `NUMERIC`.
async fn release_transfer(
    store: &Store,
    channel: &str,
    release: &str,
) -> Result<TransferTotals, DbError> {
    let rows = store
        .query(
            "SELECT CAST(COALESCE(SUM(bytes_fetched), 0) AS BIGINT),
                    CAST(COALESCE(SUM(bytes_reused), 0) AS BIGINT), COUNT(*)
             FROM reports
             WHERE channel = $1 AND to_version = $2 AND outcome = 'installed'
               AND bytes_fetched IS NOT NULL",
            vec![channel.into(), release.into()],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(TransferTotals::default());
    };
    Ok(TransferTotals {
        bytes_fetched: row.count(0)?,
        bytes_reused: row.count(1)?,
        transfer_reports: row.count(2)?,
    })
}

/// The latest report id of each (channel, node) pair whose node id contains `$1` (all
/// when empty). `replace` is the substring test both dialects share, and takes no pattern.
macro_rules! matching_sql {
    () => {
        "SELECT MAX(id) AS id FROM reports
         WHERE $1 = '' OR replace(node_id, $1, '') <> node_id GROUP BY channel, node_id"
    };
}

/// Each (channel, node) pair's latest report matching the search, newest first.
async fn list_nodes(store: &Store, query: &NodeQuery) -> Result<NodePage, DbError> {
    const TOTAL: &str = concat!("SELECT COUNT(*) FROM (", matching_sql!(), ") m");
    // The page is cut first; then each of its rows (at most MAX_NODES_PAGE) looks up its
    // node's latest installed report, through the (channel, node_id, id) index.
    const PAGE: &str = concat!(
        "SELECT p.node_id, p.channel, p.from_version, p.to_version, p.outcome, p.reason,
                p.received_at, t.bytes_fetched, t.bytes_reused, t.bundle_bytes
         FROM (SELECT r.id, r.node_id, r.channel, r.from_version, r.to_version, r.outcome,
                      r.reason, r.received_at
               FROM reports r JOIN (",
        matching_sql!(),
        ") l ON r.id = l.id ORDER BY r.id DESC LIMIT $2 OFFSET $3) p
         LEFT JOIN reports t ON t.id =
           (SELECT MAX(i.id) FROM reports i
            WHERE i.channel = p.channel AND i.node_id = p.node_id AND i.outcome = 'installed')
         ORDER BY p.id DESC"
    );
    let limit = query.limit.min(MAX_NODES_PAGE);
    let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
    let search = Val::from(query.search.as_str());
    let total = store.query(TOTAL, vec![search.clone()]).await?;
    let rows = store
        .query(PAGE, vec![search, i64::from(limit).into(), offset.into()])
        .await?;
    Ok(NodePage {
        total: total.first().map_or(Ok(0), |r| r.count(0))?,
        offset: query.offset,
        limit,
        nodes: rows.iter().map(node_row).collect::<Result<_, _>>()?,
    })
}

fn node_row(row: &Row) -> Result<NodeRow, DbError> {
    let outcome = outcome_of(row.text(4)?);
    let to_version = row.text(3)?;
    Ok(NodeRow {
        node_id: row.text(0)?,
        channel: row.text(1)?,
        version: running_version(outcome, row.text(2)?, to_version.clone()),
        to_version,
        outcome,
        reason: row.opt_text(5)?,
        last_seen: crate::httpdate::rfc3339(row.int(6)?),
        last_install_transfer: transfer_at(row, 7)?,
    })
}

/// The transfer in columns `first..first + 3` (fetched, reused, bundle), `None` when any of
/// them is `NULL` (a report without one stores all three as `NULL`).
fn transfer_at(row: &Row, first: usize) -> Result<Option<Transfer>, DbError> {
    let (Some(bytes_fetched), Some(bytes_reused), Some(bundle_bytes)) = (
        row.opt_count(first)?,
        row.opt_count(first + 1)?,
        row.opt_count(first + 2)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Transfer {
        bytes_fetched,
        bytes_reused,
        bundle_bytes,
    }))
}

/// Latest outcome per node among reports about `release`, and its failures.
async fn release_outcomes(
    store: &Store,
    channel: &str,
    release: &str,
    summary: &mut Summary,
) -> Result<(), DbError> {
    let rows = store
        .query(
            "SELECT r.node_id, r.from_version, r.outcome, r.reason, r.received_at
             FROM reports r
             JOIN (SELECT node_id, MAX(id) AS id FROM reports
                   WHERE channel = $1 AND to_version = $2 GROUP BY node_id) l
               ON r.id = l.id
             ORDER BY r.id DESC",
            vec![channel.into(), release.into()],
        )
        .await?;
    for row in rows {
        let outcome = outcome_of(row.text(2)?);
        *summary
            .outcomes
            .entry(outcome.as_str().to_owned())
            .or_default() += 1;
        if outcome.is_failure() && summary.failures.len() < MAX_FAILURES_LISTED as usize {
            summary.failures.push(Failure {
                node_id: row.text(0)?,
                outcome,
                reason: row.opt_text(3)?,
                from_version: row.text(1)?,
                received_at: crate::httpdate::rfc3339(row.int(4)?),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(node: &str) -> Report {
        Report {
            id: None,
            node_id: node.into(),
            channel: "stable".into(),
            from_version: "1".into(),
            to_version: "2".into(),
            outcome: Outcome::Committed,
            reason: None,
            transfer: None,
        }
    }

    #[tokio::test]
    async fn retention_deletes_old_reports_then_the_oldest_surplus() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let day = 24 * 3600;
        let now = 1_000 * day;
        for (node, age_days) in [("old", 40), ("a", 3), ("b", 2), ("c", 1), ("d", 0)] {
            db.insert(report(node), now - age_days * day).await.unwrap();
        }
        let retention = Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_rows: 3,
            ..Retention::default()
        };
        assert_eq!(db.prune(&retention, now).await.unwrap(), 2);
        assert_eq!(db.count().await.unwrap(), 3);
        let summary = db.summary("stable".into(), None).await.unwrap();
        assert_eq!(summary.nodes, 3, "b, c and d are kept");
        assert_eq!(db.prune(&retention, now).await.unwrap(), 0, "idempotent");
    }

    #[tokio::test]
    async fn a_summary_is_served_from_memory_until_a_report_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        db.insert(report("a"), 1).await.unwrap();
        let release = Some("2".to_owned());
        assert_eq!(
            db.summary("stable".into(), release.clone())
                .await
                .unwrap()
                .nodes,
            1
        );
        // Rows deleted behind the server's back: the cached summary answers, no query ran.
        let other = rusqlite::Connection::open(dir.path().join("tandem.db")).unwrap();
        other.execute("DELETE FROM reports", []).unwrap();
        let cached = db.summary("stable".into(), release.clone()).await.unwrap();
        assert_eq!(cached.outcomes["committed"], 1);
        // Another release is another question; a report invalidates the channel.
        assert_eq!(
            db.summary("stable".into(), None).await.unwrap().outcomes["committed"],
            0
        );
        db.insert(report("b"), 2).await.unwrap();
        let fresh = db.summary("stable".into(), release).await.unwrap();
        assert_eq!(
            (fresh.nodes, fresh.outcomes["committed"]),
            (1, 1),
            "only b is left"
        );
    }

    #[tokio::test]
    async fn nodes_are_searched_and_paged_in_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        for (i, node) in ["rack1-a", "rack1-b", "rack2-a"].into_iter().enumerate() {
            let mut r = report(node);
            r.outcome = Outcome::Installed;
            db.insert(r, 10 + i as i64).await.unwrap();
        }
        let mut failed = report("rack1-a");
        failed.outcome = Outcome::Failed;
        failed.reason = Some("disk full".into());
        db.insert(failed, 20).await.unwrap();
        let query = |search: &str, offset, limit| NodeQuery {
            search: search.into(),
            offset,
            limit,
        };
        let page = db.nodes(query("rack1", 0, 10)).await.unwrap();
        assert_eq!(page.total, 2);
        let ids: Vec<_> = page.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, ["rack1-a", "rack1-b"], "newest report first");
        let latest = &page.nodes[0];
        assert_eq!(
            (
                latest.outcome,
                latest.reason.as_deref(),
                latest.version.as_str()
            ),
            (Outcome::Failed, Some("disk full"), "1"),
            "its latest report, and the version it still runs"
        );
        let second = db.nodes(query("", 1, 1)).await.unwrap();
        assert_eq!((second.total, second.nodes.len()), (3, 1));
        assert_eq!(second.nodes[0].node_id, "rack2-a");
        let capped = db.nodes(query("", 0, u32::MAX)).await.unwrap();
        assert_eq!(capped.limit, MAX_NODES_PAGE);
        assert!(db.nodes(query("%", 0, 10)).await.unwrap().nodes.is_empty());
    }

    #[tokio::test]
    async fn the_hourly_outcomes_cover_the_last_day_of_the_release() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let now = crate::httpdate::unix_seconds(std::time::SystemTime::now());
        let hour = now / 3600 * 3600;
        db.insert(report("old"), now - HOURLY_WINDOW_SECS - 7200)
            .await
            .unwrap();
        db.insert(report("a"), hour).await.unwrap();
        db.insert(report("b"), hour).await.unwrap();
        let mut other = report("c");
        other.to_version = "3".into();
        db.insert(other, hour).await.unwrap();
        let summary = db.summary("stable".into(), Some("2".into())).await.unwrap();
        assert_eq!(summary.hourly.len(), 1, "{:?}", summary.hourly);
        assert_eq!(summary.hourly[&hour]["committed"], 2);
    }

    #[tokio::test]
    async fn a_repeated_report_id_is_stored_once_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut first = report("a");
        first.id = Some("r1".into());
        let stored = db.insert(first.clone(), 1).await.unwrap();
        assert!(stored.new);
        let again = db.insert(first.clone(), 2).await.unwrap();
        assert_eq!(
            again,
            Stored {
                id: stored.id,
                new: false
            }
        );
        let mut other_node = first.clone();
        other_node.node_id = "b".into();
        assert!(
            db.insert(other_node, 3).await.unwrap().new,
            "ids are per node"
        );
        first.id = None;
        assert!(db.insert(first.clone(), 4).await.unwrap().new);
        assert!(
            db.insert(first, 5).await.unwrap().new,
            "no id: every copy counts"
        );
        assert_eq!(db.count().await.unwrap(), 4);
    }

    /// The schema of the releases before versioned migrations.
    const UNVERSIONED_SCHEMA: &str = "
        CREATE TABLE reports (
            id INTEGER PRIMARY KEY AUTOINCREMENT, received_at INTEGER NOT NULL,
            node_id TEXT NOT NULL, channel TEXT NOT NULL, from_version TEXT NOT NULL,
            to_version TEXT NOT NULL, outcome TEXT NOT NULL, reason TEXT);
        CREATE INDEX reports_channel_node ON reports(channel, node_id, id);
        CREATE INDEX reports_received_at ON reports(received_at);
        INSERT INTO reports (received_at, node_id, channel, from_version, to_version, outcome)
            VALUES (1, 'old-node', 'stable', '1', '2', 'committed');";

    #[tokio::test]
    async fn an_unversioned_database_migrates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        rusqlite::Connection::open(dir.path().join("tandem.db"))
            .unwrap()
            .execute_batch(UNVERSIONED_SCHEMA)
            .unwrap();
        let db = Db::open(dir.path()).unwrap();
        let summary = db.summary("stable".into(), None).await.unwrap();
        assert_eq!(summary.nodes, 1, "the old report is kept");
        let mut r = report("new-node");
        r.id = Some("r1".into());
        r.transfer = Some(proto::Transfer {
            bytes_fetched: 11,
            bytes_reused: 22,
            bundle_bytes: 44,
        });
        assert!(db.insert(r.clone(), 2).await.unwrap().new);
        assert!(!db.insert(r, 3).await.unwrap().new);
        drop(db);
        let conn = rusqlite::Connection::open(dir.path().join("tandem.db")).unwrap();
        let stored: Vec<Option<i64>> = conn
            .prepare("SELECT bytes_fetched + bytes_reused + bundle_bytes FROM reports ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, [None, Some(77)], "the old report has no transfer");
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
        // Opening again applies nothing; a newer schema is refused.
        Db::open(dir.path()).unwrap();
        conn.execute("INSERT INTO schema_version VALUES (99, 0)", [])
            .unwrap();
        assert!(matches!(
            Db::open(dir.path()),
            Err(DbError::SchemaTooNew { current: 99, .. })
        ));
    }
}
