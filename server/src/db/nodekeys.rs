//! Node keys and enrollment tokens in the report store (so every server sharing a PostgreSQL
//! database knows the same keys, and a revocation holds on all of them at once).
//!
//! A key is a row of `node_keys`: its id, its node, its public key and where it stands
//! (`proto::nodeauth::KeyStatus`). The schema keeps at most one approved and one pending key
//! per node (partial unique indexes), so a second key for an enrolled node waits for an
//! operator and never replaces the first by itself; a key id belongs to one node for good.
//! Enrollment tokens are stored as SHA-256 digests, used at most once (a conditional
//! `UPDATE`, so two servers cannot both take one).
use proto::nodeauth::KeyStatus;
use serde::Serialize;

use super::sql::{Row, Val};
use super::Db;
use crate::error::DbError;

/// Most keys [`Db::node_keys`] lists.
pub const MAX_KEYS_LISTED: i64 = 1000;
/// Most enrollments waiting for an operator at once: beyond, an enrollment without a token
/// is refused (anyone may ask, so the table is bounded).
pub const MAX_PENDING: i64 = 10_000;

/// A node's key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeKey {
    /// Its id (hex SHA-256 of the public key).
    pub key_id: String,
    /// The node it speaks for.
    pub node_id: String,
    /// The raw public key, base64.
    pub public_key: String,
    /// Where it stands.
    pub status: KeyStatus,
    /// When the node asked (Unix seconds).
    pub requested_at: i64,
    /// When it was last decided on (approved, rejected, revoked), if it was.
    pub decided_at: Option<i64>,
    /// Who decided: a token's name, or `enrollment-token` for a key a token approved.
    pub decided_by: Option<String>,
}

/// The actor recorded for a key an enrollment token approved.
pub const BY_TOKEN: &str = "enrollment-token";

/// What an operator decides about a node's pending key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Approve it (revoking the node's approved key, if any).
    Approve,
    /// Reject it.
    Reject,
}

/// Takes enrollment token `$1` at `$2` for key `$3` of node `$4`, if unused and unexpired
/// and the node has no approved key.
const TAKE_TOKEN: &str = "UPDATE enrollment_tokens SET used_at = $2, used_by = $3
     WHERE digest = $1 AND used_at IS NULL AND expires_at > $2
       AND NOT EXISTS (SELECT 1 FROM node_keys WHERE node_id = $4 AND status = 'approved')
     RETURNING digest";
/// Inserts key `$1` of node `$2` (public key `$3`) at `$4` as approved by a token, if
/// [`TAKE_TOKEN`] just took one for it and the node has no approved key.
const INSERT_BY_TOKEN: &str = "INSERT INTO node_keys
     (key_id, node_id, public_key, status, requested_at, decided_at, decided_by)
     SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), 'approved',
            CAST($4 AS BIGINT), CAST($4 AS BIGINT), 'enrollment-token'
     WHERE EXISTS (SELECT 1 FROM enrollment_tokens WHERE used_by = $1 AND used_at = $4)
       AND NOT EXISTS (SELECT 1 FROM node_keys WHERE node_id = $2 AND status = 'approved')
     ON CONFLICT DO NOTHING RETURNING key_id";
/// Approves the pending key `$1` at `$2` by a token, if [`TAKE_TOKEN`] just took one for
/// it and its node has no approved key.
const APPROVE_BY_TOKEN: &str = "UPDATE node_keys
     SET status = 'approved', decided_at = $2, decided_by = 'enrollment-token'
     WHERE key_id = $1 AND status = 'pending'
       AND EXISTS (SELECT 1 FROM enrollment_tokens WHERE used_by = $1 AND used_at = $2)
       AND NOT EXISTS (SELECT 1 FROM node_keys o WHERE o.node_id = node_keys.node_id
                       AND o.status = 'approved')
     RETURNING key_id";
/// Inserts key `$1` of node `$2` (public key `$3`) at `$4` as pending, unless the node has a
/// pending key already or [`MAX_PENDING`] (`$5`) keys wait.
const INSERT_PENDING: &str =
    "INSERT INTO node_keys (key_id, node_id, public_key, status, requested_at)
     SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), 'pending', CAST($4 AS BIGINT)
     WHERE (SELECT COUNT(*) FROM node_keys WHERE status = 'pending') < $5
     ON CONFLICT DO NOTHING RETURNING key_id";
/// Revokes node `$1`'s approved key at `$2` by `$3`, when it has a pending key (`$4` its id,
/// or any for `''`) an approval is about to replace it with.
const REVOKE_REPLACED: &str =
    "UPDATE node_keys SET status = 'revoked', decided_at = $2, decided_by = $3
     WHERE node_id = $1 AND status = 'approved'
       AND EXISTS (SELECT 1 FROM node_keys p WHERE p.node_id = $1 AND p.status = 'pending'
                   AND ($4 = '' OR p.key_id = $4))
     RETURNING key_id";
/// Sets node `$1`'s pending key (`$4` its id, or any for `''`) to `$5` at `$2` by `$3`.
const DECIDE: &str = "UPDATE node_keys SET status = $5, decided_at = $2, decided_by = $3
     WHERE node_id = $1 AND status = 'pending' AND ($4 = '' OR key_id = $4)
     RETURNING key_id";
/// Revokes node `$1`'s approved key at `$2` by `$3`.
const REVOKE: &str = "UPDATE node_keys SET status = 'revoked', decided_at = $2, decided_by = $3
     WHERE node_id = $1 AND status = 'approved' RETURNING key_id";

/// The lock of every enrollment transaction of `node`.
fn node_lock(node: &str) -> String {
    format!("tandem-enroll:{node}")
}

impl Db {
    /// The key whose id is `key_id`.
    pub async fn node_key(&self, key_id: &str) -> Result<Option<NodeKey>, DbError> {
        let rows = self
            .store
            .query(
                "SELECT key_id, node_id, public_key, status, requested_at, decided_at, decided_by
                 FROM node_keys WHERE key_id = $1",
                vec![key_id.into()],
            )
            .await?;
        rows.first().map(key_of).transpose()
    }

    /// Whether `node` has an approved key.
    pub async fn node_enrolled(&self, node: &str) -> Result<bool, DbError> {
        let rows = self
            .store
            .query(
                "SELECT key_id FROM node_keys WHERE node_id = $1 AND status = 'approved'",
                vec![node.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Stores an enrollment token (its digest) valid until `expires_at`.
    pub async fn create_enrollment_token(
        &self,
        digest: &str,
        created_by: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), DbError> {
        self.store
            .execute(
                "INSERT INTO enrollment_tokens (digest, created_at, created_by, expires_at)
                 VALUES ($1, $2, $3, $4)",
                vec![
                    digest.into(),
                    now.into(),
                    created_by.into(),
                    expires_at.into(),
                ],
            )
            .await
            .map(drop)
    }

    /// Approves key `key_id` of `node` with the enrollment token whose digest is `digest`,
    /// taking the token: inserts it approved, or approves it if it was pending. `false` when
    /// the token is unknown, used or expired, or the node has an approved key (the token is
    /// then not taken).
    pub async fn enroll_by_token(
        &self,
        node: &str,
        key_id: &str,
        public_key: &str,
        digest: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let results = self
            .store
            .transaction(
                &node_lock(node),
                vec![
                    (
                        TAKE_TOKEN,
                        vec![digest.into(), now.into(), key_id.into(), node.into()],
                    ),
                    (
                        INSERT_BY_TOKEN,
                        vec![key_id.into(), node.into(), public_key.into(), now.into()],
                    ),
                    (APPROVE_BY_TOKEN, vec![key_id.into(), now.into()]),
                ],
            )
            .await?;
        Ok(results.iter().skip(1).any(|rows| !rows.is_empty()))
    }

    /// Stores key `key_id` of `node` as pending; `false` when the node has another pending
    /// key or too many keys wait ([`MAX_PENDING`]).
    pub async fn enroll_pending(
        &self,
        node: &str,
        key_id: &str,
        public_key: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let rows = self
            .store
            .query(
                INSERT_PENDING,
                vec![
                    key_id.into(),
                    node.into(),
                    public_key.into(),
                    now.into(),
                    MAX_PENDING.into(),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Approves or rejects `node`'s pending key (only the one whose id is `key_id`, when
    /// given); approving revokes the key it replaces. The key decided on, `None` when the node
    /// has no such pending key.
    pub async fn decide_enrollment(
        &self,
        node: &str,
        key_id: Option<&str>,
        decision: Decision,
        by: &str,
        now: i64,
    ) -> Result<Option<String>, DbError> {
        let key = key_id.unwrap_or("");
        let status = match decision {
            Decision::Approve => KeyStatus::Approved,
            Decision::Reject => KeyStatus::Rejected,
        };
        let decide: Vec<Val> = vec![
            node.into(),
            now.into(),
            by.into(),
            key.into(),
            status.as_str().into(),
        ];
        let mut steps = Vec::new();
        if decision == Decision::Approve {
            steps.push((
                REVOKE_REPLACED,
                vec![node.into(), now.into(), by.into(), key.into()],
            ));
        }
        steps.push((DECIDE, decide));
        let results = self.store.transaction(&node_lock(node), steps).await?;
        results
            .last()
            .and_then(|rows| rows.first())
            .map(|row| row.text(0))
            .transpose()
    }

    /// Revokes `node`'s approved key; its id, `None` when the node has none.
    pub async fn revoke_node_key(
        &self,
        node: &str,
        by: &str,
        now: i64,
    ) -> Result<Option<String>, DbError> {
        let rows = self
            .store
            .query(REVOKE, vec![node.into(), now.into(), by.into()])
            .await?;
        rows.first().map(|row| row.text(0)).transpose()
    }

    /// The pending and approved keys, by node, at most [`MAX_KEYS_LISTED`].
    pub async fn node_keys(&self) -> Result<Vec<NodeKey>, DbError> {
        let rows = self
            .store
            .query(
                "SELECT key_id, node_id, public_key, status, requested_at, decided_at, decided_by
                 FROM node_keys WHERE status IN ('pending', 'approved')
                 ORDER BY node_id, status LIMIT $1",
                vec![MAX_KEYS_LISTED.into()],
            )
            .await?;
        rows.iter().map(key_of).collect()
    }
}

fn key_of(row: &Row) -> Result<NodeKey, DbError> {
    let status = row.text(3)?;
    Ok(NodeKey {
        key_id: row.text(0)?,
        node_id: row.text(1)?,
        public_key: row.text(2)?,
        status: KeyStatus::parse(&status)
            .ok_or_else(|| DbError::Decode(format!("unknown key status {status}")))?,
        requested_at: row.int(4)?,
        decided_at: opt_int(row, 5),
        decided_by: row.opt_text(6)?,
    })
}

fn opt_int(row: &Row, i: usize) -> Option<i64> {
    match row.0.get(i) {
        Some(Val::Int(v)) => Some(*v),
        _ => None,
    }
}
