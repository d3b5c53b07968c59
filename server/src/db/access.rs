//! Named tokens with roles and the audit log, in the report store (so every server sharing a
//! PostgreSQL database knows the same tokens and writes one log). A token is stored as the
//! hex SHA-256 of its text, never the text; a revoked token keeps its row (and its name) so
//! the audit log's names stay unambiguous.
use serde::Serialize;

use super::sql::Row;
use super::Db;
use crate::error::DbError;

/// Most tokens [`Db::tokens`] lists.
pub const MAX_TOKENS_LISTED: i64 = 1000;
/// Most audit entries [`Db::audit_log`] returns.
pub const MAX_AUDIT_LISTED: u32 = 1000;

/// A named token as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// `read`, `operate` or `admin`.
    pub role: String,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// One operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Its position (0 before it is stored).
    pub id: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// Who: a token's name, or `failure-budget` for the server itself.
    pub actor: String,
    /// The actor's role (`server` for the server itself).
    pub role: String,
    /// What: `pause`, `resume`, `release-lease`, `create-token`, `revoke-token`.
    pub action: String,
    /// On what: a channel, `GROUP/NODE`, a token's name.
    pub target: String,
    /// Why, as the actor said.
    pub reason: Option<String>,
}

impl Db {
    /// Stores a token under `name` (its digest, its role); `false` when the name is taken.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        created_by: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let rows = self
            .store
            .query(
                "INSERT INTO api_tokens (name, role, digest, created_at, created_by)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING name",
                vec![
                    name.into(),
                    role.into(),
                    digest.into(),
                    now.into(),
                    created_by.into(),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// The name and role of the unrevoked token whose digest is `digest`.
    pub async fn token_by_digest(&self, digest: &str) -> Result<Option<(String, String)>, DbError> {
        let rows = self
            .store
            .query(
                "SELECT name, role FROM api_tokens WHERE digest = $1 AND revoked_at IS NULL",
                vec![digest.into()],
            )
            .await?;
        rows.first()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .transpose()
    }

    /// Revokes the token `name`; `false` when there is no such unrevoked token.
    pub async fn revoke_token(&self, name: &str, now: i64) -> Result<bool, DbError> {
        let rows = self
            .store
            .query(
                "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL
                 RETURNING name",
                vec![name.into(), now.into()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Every named token, by name, at most [`MAX_TOKENS_LISTED`].
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, DbError> {
        let rows = self
            .store
            .query(
                "SELECT name, role, created_at, created_by, revoked_at FROM api_tokens
                 ORDER BY name LIMIT $1",
                vec![MAX_TOKENS_LISTED.into()],
            )
            .await?;
        rows.iter().map(token_of).collect()
    }

    /// Appends `entry` to the audit log (its `id` is ignored).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), DbError> {
        self.store
            .execute(
                "INSERT INTO audit_log (at, actor, role, action, target, reason)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    entry.at.into(),
                    entry.actor.clone().into(),
                    entry.role.clone().into(),
                    entry.action.clone().into(),
                    entry.target.clone().into(),
                    entry.reason.clone().into(),
                ],
            )
            .await
            .map(drop)
    }

    /// The newest `limit` audit entries (at most [`MAX_AUDIT_LISTED`]), newest first.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, DbError> {
        let rows = self
            .store
            .query(
                "SELECT id, at, actor, role, action, target, reason FROM audit_log
                 ORDER BY id DESC LIMIT $1",
                vec![i64::from(limit.min(MAX_AUDIT_LISTED)).into()],
            )
            .await?;
        rows.iter().map(entry_of).collect()
    }

    /// Deletes audit entries older than `cutoff` (Unix seconds); the number deleted.
    pub async fn prune_audit_log(&self, cutoff: i64) -> Result<u64, DbError> {
        self.store
            .execute("DELETE FROM audit_log WHERE at < $1", vec![cutoff.into()])
            .await
    }
}

fn token_of(row: &Row) -> Result<TokenInfo, DbError> {
    Ok(TokenInfo {
        name: row.text(0)?,
        role: row.text(1)?,
        created_at: row.int(2)?,
        created_by: row.text(3)?,
        revoked_at: match row.0.get(4) {
            Some(super::sql::Val::Int(at)) => Some(*at),
            _ => None,
        },
    })
}

fn entry_of(row: &Row) -> Result<AuditEntry, DbError> {
    Ok(AuditEntry {
        id: row.int(0)?,
        at: row.int(1)?,
        actor: row.text(2)?,
        role: row.text(3)?,
        action: row.text(4)?,
        target: row.text(5)?,
        reason: row.opt_text(6)?,
    })
}
