//! The report store: one SQLite database (`DATA/tandem.db`, WAL mode) owned behind a mutex;
//! every call runs on tokio's blocking pool so the async workers never wait on SQLite.
//!
//! Schema: `reports(id, received_at, node_id, channel, from_version, to_version, outcome,
//! reason)`, appended to and pruned by [`Retention`] (by age and by row count). Aggregates
//! use each node's *latest* report in a channel.
//!
//! A channel's [`Summary`] is computed once and then served from memory until a report for
//! that channel arrives (or a pruning deletes rows): a dashboard polling the status costs no
//! query. This holds because this process is the database's only writer.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::config::Retention;
use crate::error::DbError;
use proto::{Outcome, Report};

/// Most failures listed per channel status.
pub const MAX_FAILURES_LISTED: u32 = 100;
/// Most nodes one page of [`Db::nodes`] returns.
pub const MAX_NODES_PAGE: u32 = 500;
/// The window of [`Summary::hourly`]: the last 24 hours.
pub const HOURLY_WINDOW_SECS: i64 = 24 * 3600;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at  INTEGER NOT NULL,
    node_id      TEXT NOT NULL,
    channel      TEXT NOT NULL,
    from_version TEXT NOT NULL,
    to_version   TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS reports_channel_node ON reports(channel, node_id, id);
CREATE INDEX IF NOT EXISTS reports_received_at ON reports(received_at);
";

/// Summaries by channel, with the release each was computed for. Filled and invalidated only
/// while the connection lock is held, so a summary computed before an insert is never stored
/// after that insert's invalidation.
type SummaryCache = Arc<Mutex<HashMap<String, (Option<String>, Summary)>>>;

/// Handle on the report database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    summaries: SummaryCache,
}

/// The cache, also after a panic elsewhere: a map of finished entries stays usable.
fn locked(cache: &SummaryCache) -> MutexGuard<'_, HashMap<String, (Option<String>, Summary)>> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// Opens (creating if needed) `data_dir/tandem.db`.
    pub fn open(data_dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(data_dir).map_err(|source| DbError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join("tandem.db");
        let conn = open_conn(&path).map_err(|source| DbError::Open { path, source })?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            summaries: SummaryCache::default(),
        })
    }

    /// Stores a (validated) report; returns its id.
    pub async fn insert(&self, report: Report, received_at: i64) -> Result<i64, DbError> {
        let cache = Arc::clone(&self.summaries);
        self.with_conn(move |c| {
            c.execute(
                "INSERT INTO reports (received_at, node_id, channel, from_version, to_version, outcome, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    received_at,
                    report.node_id,
                    report.channel,
                    report.from_version,
                    report.to_version,
                    report.outcome.as_str(),
                    report.reason
                ],
            )?;
            locked(&cache).remove(&report.channel);
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Aggregates of `channel`, with outcomes of `release` (the current version) if given.
    pub async fn summary(
        &self,
        channel: String,
        release: Option<String>,
    ) -> Result<Summary, DbError> {
        if let Some((_, hit)) = locked(&self.summaries)
            .get(&channel)
            .filter(|(cached_for, _)| *cached_for == release)
        {
            return Ok(hit.clone());
        }
        let cache = Arc::clone(&self.summaries);
        self.with_conn(move |c| {
            let summary = summarize(c, &channel, release.as_deref())?;
            locked(&cache).insert(channel, (release, summary.clone()));
            Ok(summary)
        })
        .await
    }

    /// The latest report of each node in each channel whose id contains `query.search`,
    /// newest first, one page of at most [`MAX_NODES_PAGE`] rows.
    pub async fn nodes(&self, query: NodeQuery) -> Result<NodePage, DbError> {
        self.with_conn(move |c| list_nodes(c, &query)).await
    }

    /// Deletes what `retention` does not keep at time `now` (Unix seconds): reports older
    /// than `max_age`, then all but the newest `max_rows`. Returns the number deleted.
    pub async fn prune(&self, retention: &Retention, now: i64) -> Result<u64, DbError> {
        let age = i64::try_from(retention.max_age.as_secs()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(age);
        let keep = i64::try_from(retention.max_rows).unwrap_or(i64::MAX);
        let cache = Arc::clone(&self.summaries);
        self.with_conn(move |c| {
            let old = c.execute("DELETE FROM reports WHERE received_at < ?1", [cutoff])?;
            let surplus = c.execute(
                "DELETE FROM reports WHERE id <=
                   (SELECT id FROM reports ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [keep],
            )?;
            if old + surplus > 0 {
                locked(&cache).clear();
            }
            Ok((old + surplus) as u64)
        })
        .await
    }

    /// Number of stored reports (for tests and the page).
    pub async fn count(&self) -> Result<u64, DbError> {
        self.with_conn(|c| {
            let n: Option<i64> = c
                .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))
                .optional()?;
            Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
        })
        .await
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| DbError::Worker("database lock poisoned".into()))?;
            f(&guard).map_err(DbError::Query)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }
}

fn open_conn(path: &PathBuf) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Each node's latest report in a channel.
const LATEST: &str =
    "SELECT r.node_id, r.from_version, r.to_version, r.outcome, r.reason, r.received_at
     FROM reports r
     JOIN (SELECT node_id, MAX(id) AS id FROM reports WHERE channel = ?1 GROUP BY node_id) l
       ON r.id = l.id";

fn summarize(
    c: &Connection,
    channel: &str,
    release: Option<&str>,
) -> Result<Summary, rusqlite::Error> {
    let mut summary = Summary::default();
    let mut stmt = c.prepare_cached(LATEST)?;
    let mut rows = stmt.query([channel])?;
    while let Some(row) = rows.next()? {
        let outcome = outcome_of(row.get(3)?);
        let running = running_version(outcome, row.get(1)?, row.get(2)?);
        summary.nodes += 1;
        *summary.by_version.entry(running).or_default() += 1;
    }
    for o in Outcome::ALL {
        summary.outcomes.insert(o.as_str().to_owned(), 0);
    }
    if let Some(release) = release {
        release_outcomes(c, channel, release, &mut summary)?;
        let since = crate::httpdate::unix_seconds(std::time::SystemTime::now())
            .saturating_sub(HOURLY_WINDOW_SECS);
        summary.hourly = hourly_outcomes(c, channel, release, since)?;
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
fn hourly_outcomes(
    c: &Connection,
    channel: &str,
    release: &str,
    since: i64,
) -> Result<BTreeMap<i64, BTreeMap<String, u64>>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT received_at / 3600 * 3600 AS hour, outcome, COUNT(*) FROM reports
         WHERE channel = ?1 AND to_version = ?2 AND received_at >= ?3
         GROUP BY hour, outcome",
    )?;
    let mut rows = stmt.query(params![channel, release, since])?;
    let mut hourly: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let outcome = outcome_of(row.get(1)?);
        let count = u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0);
        *hourly
            .entry(row.get(0)?)
            .or_default()
            .entry(outcome.as_str().to_owned())
            .or_default() += count;
    }
    Ok(hourly)
}

/// Each (channel, node) pair's latest report matching the search, newest first.
fn list_nodes(c: &Connection, query: &NodeQuery) -> Result<NodePage, rusqlite::Error> {
    const MATCHING: &str = "SELECT MAX(id) AS id FROM reports
         WHERE ?1 = '' OR instr(node_id, ?1) > 0 GROUP BY channel, node_id";
    let limit = query.limit.min(MAX_NODES_PAGE);
    let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM ({MATCHING})"),
        [&query.search],
        |r| r.get(0),
    )?;
    let mut stmt = c.prepare_cached(&format!(
        "SELECT r.node_id, r.channel, r.from_version, r.to_version, r.outcome, r.reason,
                r.received_at
         FROM reports r JOIN ({MATCHING}) l ON r.id = l.id
         ORDER BY r.id DESC LIMIT ?2 OFFSET ?3"
    ))?;
    let mut rows = stmt.query(params![query.search, limit, offset])?;
    let mut nodes = Vec::new();
    while let Some(row) = rows.next()? {
        let outcome = outcome_of(row.get(4)?);
        let to_version: String = row.get(3)?;
        nodes.push(NodeRow {
            node_id: row.get(0)?,
            channel: row.get(1)?,
            version: running_version(outcome, row.get(2)?, to_version.clone()),
            to_version,
            outcome,
            reason: row.get(5)?,
            last_seen: crate::httpdate::rfc3339(row.get(6)?),
        });
    }
    Ok(NodePage {
        total: u64::try_from(total).unwrap_or(0),
        offset: query.offset,
        limit,
        nodes,
    })
}

/// Latest outcome per node among reports about `release`, and its failures.
fn release_outcomes(
    c: &Connection,
    channel: &str,
    release: &str,
    summary: &mut Summary,
) -> Result<(), rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT r.node_id, r.from_version, r.outcome, r.reason, r.received_at
         FROM reports r
         JOIN (SELECT node_id, MAX(id) AS id FROM reports
               WHERE channel = ?1 AND to_version = ?2 GROUP BY node_id) l
           ON r.id = l.id
         ORDER BY r.id DESC",
    )?;
    let mut rows = stmt.query(params![channel, release])?;
    while let Some(row) = rows.next()? {
        let outcome = outcome_of(row.get(2)?);
        *summary
            .outcomes
            .entry(outcome.as_str().to_owned())
            .or_default() += 1;
        if outcome.is_failure() && summary.failures.len() < MAX_FAILURES_LISTED as usize {
            summary.failures.push(Failure {
                node_id: row.get(0)?,
                outcome,
                reason: row.get(3)?,
                from_version: row.get(1)?,
                received_at: crate::httpdate::rfc3339(row.get(4)?),
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
            node_id: node.into(),
            channel: "stable".into(),
            from_version: "1".into(),
            to_version: "2".into(),
            outcome: Outcome::Committed,
            reason: None,
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
        let other = Connection::open(dir.path().join("tandem.db")).unwrap();
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
}
