//! Reboot leases (the FleetLock semaphore, docs/DESIGN.md §7) in the report store: a row of
//! `reboot_leases` per node allowed to reboot, at most the group's slots per group, and
//! `lease_log`, every grant, release and expiry in the order they happened; `lease_waiting`,
//! the nodes refused a lease that have not had one since (what the dashboard shows as
//! waiting).
//!
//! A grant is one transaction under the group's lock ([`super::store::Store::transaction`]): leases past
//! their expiry are logged and deleted, the caller's row is inserted only when it holds none
//! and the group has fewer rows than its slots, and the grant is logged. Two servers sharing
//! PostgreSQL take the same advisory lock, so the count they compare against the slots is
//! never stale: no more leases than slots exist at any time, whichever server granted them.
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::sql::{Row, Val};
use super::Db;
use crate::error::DbError;

/// Most leases [`Db::leases`] lists.
pub const MAX_LEASES_LISTED: i64 = 1000;
/// A waiting node that has not asked for this long (seconds) is forgotten: it gave up or went
/// away.
pub const WAITER_FORGOTTEN_AFTER: i64 = 24 * 3600;
/// Most events [`Db::lease_log`] returns.
pub const MAX_LOG_LISTED: u32 = 1000;

/// Logs the leases of group `$2` expired at `$1`.
const LOG_EXPIRED: &str = "INSERT INTO lease_log (at, grp, node_id, event)
     SELECT CAST($1 AS BIGINT), grp, node_id, 'expired' FROM reboot_leases
     WHERE grp = $2 AND expires_at <= $1";
/// Deletes the leases of group `$2` expired at `$1`.
const DELETE_EXPIRED: &str =
    "DELETE FROM reboot_leases WHERE expires_at <= $1 AND grp = $2 RETURNING node_id";
/// Inserts lease `$3` of node `$2` in group `$1` (from `$4` to `$5`) unless the node holds
/// one or the group already has `$6` leases.
const GRANT: &str = "INSERT INTO reboot_leases (grp, node_id, lease_id, acquired_at, expires_at)
     SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS BIGINT),
            CAST($5 AS BIGINT)
     WHERE NOT EXISTS (SELECT 1 FROM reboot_leases WHERE grp = $1 AND node_id = $2)
       AND (SELECT COUNT(*) FROM reboot_leases WHERE grp = $1) < $6
     RETURNING lease_id";
/// Logs the grant of lease `$1`, if [`GRANT`] inserted it.
const LOG_GRANTED: &str = "INSERT INTO lease_log (at, grp, node_id, event)
     SELECT acquired_at, grp, node_id, 'acquired' FROM reboot_leases WHERE lease_id = $1";
/// The holders of group `$1` and when their leases expire.
const HOLDERS: &str = "SELECT node_id, expires_at FROM reboot_leases WHERE grp = $1
     ORDER BY acquired_at, node_id";
/// Logs event `$4` at `$1` for the lease of node `$3` in group `$2`, if there is one.
const LOG_RELEASED: &str = "INSERT INTO lease_log (at, grp, node_id, event)
     SELECT CAST($1 AS BIGINT), grp, node_id, CAST($4 AS TEXT) FROM reboot_leases
     WHERE grp = $2 AND node_id = $3";
/// Notes that node `$2` of group `$1` asked at `$3` and holds no lease: it waits (since its
/// first refused request). `last_asked` moves only by a minute or more, so a node retrying
/// often does not make every refusal a write (and, on PostgreSQL, a flushed commit).
const NOTE_WAITING: &str = "INSERT INTO lease_waiting (grp, node_id, since, last_asked)
     SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT), CAST($3 AS BIGINT)
     WHERE NOT EXISTS (SELECT 1 FROM reboot_leases WHERE grp = $1 AND node_id = $2)
     ON CONFLICT (grp, node_id) DO UPDATE SET last_asked = excluded.last_asked
     WHERE lease_waiting.last_asked <= excluded.last_asked - 60";
/// Node `$2` of group `$1` no longer waits if it holds a lease `$3` is `1`, or
/// unconditionally for `$3` = `0`.
const STOP_WAITING: &str = "DELETE FROM lease_waiting WHERE grp = $1 AND node_id = $2
     AND (CAST($3 AS BIGINT) = 0 OR EXISTS (SELECT 1 FROM reboot_leases WHERE grp = $1 AND node_id = $2))";
/// Deletes the lease of node `$2` in group `$1`.
const RELEASE: &str = "DELETE FROM reboot_leases WHERE grp = $1 AND node_id = $2 RETURNING node_id";

/// What a lease request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The node holds a lease now: `new` when this request took it, `false` when the node
    /// held it already (the lock is recursive for its holder).
    Held {
        /// Whether this request took it.
        new: bool,
        /// When the lease expires unless given back (Unix seconds).
        expires_at: i64,
    },
    /// Every slot of the group is taken, by these nodes.
    Busy {
        /// The holders, oldest lease first.
        holders: Vec<String>,
    },
}

/// A lease held (or past its expiry and not yet reclaimed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The reboot group.
    pub group: String,
    /// The node holding it.
    pub node_id: String,
    /// When it was granted (Unix seconds).
    pub acquired_at: i64,
    /// When it expires (Unix seconds): past this the next request of the group reclaims it.
    pub expires_at: i64,
}

/// A node refused a lease (its group full) that has not had one since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiter {
    /// The reboot group.
    pub group: String,
    /// The node.
    pub node_id: String,
    /// Its first refused request (Unix seconds).
    pub since: i64,
    /// Its latest request.
    pub last_asked: i64,
}

/// One line of the lease log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseEvent {
    /// Its position: events happened in this order.
    pub id: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// The reboot group.
    pub group: String,
    /// The node.
    pub node_id: String,
    /// `acquired`, `released`, `expired` or `freed` (released by an operator).
    pub event: String,
}

/// How a lease ends, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The node released it (`steady-state`).
    ByNode,
    /// An operator freed it.
    ByOperator,
}

impl Release {
    fn event(self) -> &'static str {
        match self {
            Release::ByNode => "released",
            Release::ByOperator => "freed",
        }
    }
}

/// The lock every transaction on `group`'s leases takes.
fn group_lock(group: &str) -> String {
    format!("tandem-lease:{group}")
}

/// A lease id no other grant has: time, process and a counter.
fn lease_id(now: i64) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{now}.{nanos:09}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The steps that reclaim `group`'s leases expired at `now`.
fn expiry_steps(group: &str, now: i64) -> Vec<(&'static str, Vec<Val>)> {
    vec![
        (LOG_EXPIRED, vec![now.into(), group.into()]),
        (DELETE_EXPIRED, vec![now.into(), group.into()]),
    ]
}

impl Db {
    /// Grants `node` a lease in `group` (at most `slots` held there at once) for `ttl`
    /// seconds from `now` (Unix seconds), reclaiming the group's expired leases first.
    pub async fn acquire_lease(
        &self,
        group: &str,
        node: &str,
        slots: u32,
        ttl: i64,
        now: i64,
    ) -> Result<Grant, DbError> {
        let id = lease_id(now);
        let mut steps = expiry_steps(group, now);
        steps.extend([
            (
                GRANT,
                vec![
                    group.into(),
                    node.into(),
                    id.clone().into(),
                    now.into(),
                    now.saturating_add(ttl).into(),
                    i64::from(slots).into(),
                ],
            ),
            (LOG_GRANTED, vec![id.into()]),
            (HOLDERS, vec![group.into()]),
            (NOTE_WAITING, vec![group.into(), node.into(), now.into()]),
            (STOP_WAITING, vec![group.into(), node.into(), 1_i64.into()]),
        ]);
        let results = self.store.transaction(&group_lock(group), steps).await?;
        let granted = results.get(2).is_some_and(|rows| !rows.is_empty());
        let holders = results
            .get(4)
            .map(|rows| {
                rows.iter()
                    .map(|r| Ok((r.text(0)?, r.int(1)?)))
                    .collect::<Result<Vec<_>, DbError>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(grant_of(granted, node, holders))
    }

    /// Ends `node`'s lease in `group`, logged as `how`; `false` when it held none.
    pub async fn release_lease(
        &self,
        group: &str,
        node: &str,
        how: Release,
        now: i64,
    ) -> Result<bool, DbError> {
        let steps = vec![
            (
                LOG_RELEASED,
                vec![now.into(), group.into(), node.into(), how.event().into()],
            ),
            (RELEASE, vec![group.into(), node.into()]),
            (STOP_WAITING, vec![group.into(), node.into(), 0_i64.into()]),
        ];
        let results = self.store.transaction(&group_lock(group), steps).await?;
        Ok(results.get(1).is_some_and(|rows| !rows.is_empty()))
    }

    /// Reclaims every group's leases expired at `now`; the number reclaimed.
    pub async fn expire_leases(&self, now: i64) -> Result<u64, DbError> {
        let groups = self
            .store
            .query(
                "SELECT DISTINCT grp FROM reboot_leases WHERE expires_at <= $1",
                vec![now.into()],
            )
            .await?;
        let mut reclaimed = 0;
        for row in groups {
            let group = row.text(0)?;
            let results = self
                .store
                .transaction(&group_lock(&group), expiry_steps(&group, now))
                .await?;
            reclaimed += results.get(1).map_or(0, |r| r.len() as u64);
        }
        Ok(reclaimed)
    }

    /// The leases held, by group then age, at most [`MAX_LEASES_LISTED`].
    pub async fn leases(&self) -> Result<Vec<Lease>, DbError> {
        let rows = self
            .store
            .query(
                "SELECT grp, node_id, acquired_at, expires_at FROM reboot_leases
                 ORDER BY grp, acquired_at, node_id LIMIT $1",
                vec![MAX_LEASES_LISTED.into()],
            )
            .await?;
        rows.iter().map(lease_of).collect()
    }

    /// The nodes refused a lease that have not had one since, longest waiting first, at most
    /// [`MAX_LEASES_LISTED`].
    pub async fn lease_waiters(&self) -> Result<Vec<Waiter>, DbError> {
        let rows = self
            .store
            .query(
                "SELECT grp, node_id, since, last_asked FROM lease_waiting
                 ORDER BY since, grp, node_id LIMIT $1",
                vec![MAX_LEASES_LISTED.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Waiter {
                    group: r.text(0)?,
                    node_id: r.text(1)?,
                    since: r.int(2)?,
                    last_asked: r.int(3)?,
                })
            })
            .collect()
    }

    /// Forgets waiting nodes that last asked before `cutoff` (they gave up or went away).
    pub async fn prune_lease_waiters(&self, cutoff: i64) -> Result<u64, DbError> {
        self.store
            .execute(
                "DELETE FROM lease_waiting WHERE last_asked < $1",
                vec![cutoff.into()],
            )
            .await
    }

    /// The newest `limit` lease events (at most [`MAX_LOG_LISTED`]), oldest first.
    pub async fn lease_log(&self, limit: u32) -> Result<Vec<LeaseEvent>, DbError> {
        let limit = i64::from(limit.min(MAX_LOG_LISTED));
        let rows = self
            .store
            .query(
                "SELECT id, at, grp, node_id, event FROM lease_log ORDER BY id DESC LIMIT $1",
                vec![limit.into()],
            )
            .await?;
        let mut events = rows.iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    /// Deletes lease log lines older than `cutoff` (Unix seconds); the number deleted.
    pub async fn prune_lease_log(&self, cutoff: i64) -> Result<u64, DbError> {
        self.store
            .execute("DELETE FROM lease_log WHERE at < $1", vec![cutoff.into()])
            .await
    }
}

/// The grant of `node`, from whether this request inserted its lease and the group's
/// holders (node, expiry) after it.
fn grant_of(granted: bool, node: &str, holders: Vec<(String, i64)>) -> Grant {
    match holders.iter().find(|(holder, _)| holder == node) {
        Some(&(_, expires_at)) => Grant::Held {
            new: granted,
            expires_at,
        },
        None => Grant::Busy {
            holders: holders.into_iter().map(|(holder, _)| holder).collect(),
        },
    }
}

fn lease_of(row: &Row) -> Result<Lease, DbError> {
    Ok(Lease {
        group: row.text(0)?,
        node_id: row.text(1)?,
        acquired_at: row.int(2)?,
        expires_at: row.int(3)?,
    })
}

fn event_of(row: &Row) -> Result<LeaseEvent, DbError> {
    Ok(LeaseEvent {
        id: row.int(0)?,
        at: row.int(1)?,
        group: row.text(2)?,
        node_id: row.text(3)?,
        event: row.text(4)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_grants_its_slots_recursively_and_reclaims_expired_leases() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let held = |new, expires_at| Grant::Held { new, expires_at };
        assert_eq!(
            db.acquire_lease("g", "a", 2, 10, 100).await.unwrap(),
            held(true, 110)
        );
        assert_eq!(
            db.acquire_lease("g", "a", 2, 10, 101).await.unwrap(),
            held(false, 110),
            "asking again does not extend the lease"
        );
        assert_eq!(
            db.acquire_lease("g", "b", 2, 10, 102).await.unwrap(),
            held(true, 112)
        );
        assert_eq!(
            db.acquire_lease("g", "c", 2, 10, 103).await.unwrap(),
            Grant::Busy {
                holders: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            db.acquire_lease("other", "c", 2, 10, 103).await.unwrap(),
            held(true, 113)
        );
        assert!(db
            .release_lease("g", "a", Release::ByNode, 104)
            .await
            .unwrap());
        assert!(!db
            .release_lease("g", "a", Release::ByNode, 105)
            .await
            .unwrap());
        // b's lease (granted at 102 for 10 s) has expired at 112: c gets a slot and b's is
        // reclaimed on the way.
        assert_eq!(
            db.acquire_lease("g", "c", 1, 10, 112).await.unwrap(),
            held(true, 122)
        );
        let log: Vec<_> = db
            .lease_log(100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| format!("{} {} {}", e.group, e.node_id, e.event))
            .collect();
        assert_eq!(
            log,
            [
                "g a acquired",
                "g b acquired",
                "other c acquired",
                "g a released",
                "g b expired",
                "g c acquired"
            ]
        );
        let leases = db.leases().await.unwrap();
        assert_eq!(leases.len(), 2);
        assert_eq!(db.expire_leases(10_000).await.unwrap(), 2);
        assert!(db.leases().await.unwrap().is_empty());
    }
}
