//! The one seam between the report logic (`db/mod.rs`) and a database: run a statement with
//! parameters and get plain rows back, whichever backend holds them. Statements are written
//! once, with PostgreSQL's `$N` placeholders ([`super::sql`]); each backend adapts them. What
//! really differs between the two (how an insert tells other servers' caches, migrations)
//! stays in `sqlite.rs` and `postgres.rs`.
use crate::error::DbError;

use super::postgres::Postgres;
use super::sql::{Row, Stamp, Val};
use super::sqlite::Sqlite;

/// A report database.
#[derive(Clone)]
pub enum Store {
    /// The embedded default: one SQLite file, this process its only writer.
    Sqlite(Sqlite),
    /// A PostgreSQL database, possibly shared by several servers.
    Postgres(Postgres),
}

impl Store {
    /// Rows of a `SELECT` (or anything `RETURNING`).
    pub async fn query(&self, sql: &'static str, params: Vec<Val>) -> Result<Vec<Row>, DbError> {
        match self {
            Store::Sqlite(s) => s.query(sql, params).await,
            Store::Postgres(p) => p.query(sql, params).await,
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub async fn execute(&self, sql: &'static str, params: Vec<Val>) -> Result<u64, DbError> {
        match self {
            Store::Sqlite(s) => s.execute(sql, params).await,
            Store::Postgres(p) => p.execute(sql, params).await,
        }
    }

    /// Runs [`super::sql::INSERT_REPORT`] and marks `channel` changed; the new row's id, or `None` when
    /// the (node, report id) pair was already stored.
    pub async fn insert_report(
        &self,
        channel: &str,
        params: Vec<Val>,
    ) -> Result<Option<i64>, DbError> {
        match self {
            Store::Sqlite(s) => s.insert_report(channel, params).await,
            Store::Postgres(p) => p.insert_report(params).await,
        }
    }

    /// Runs `steps` in order in one transaction and returns each one's rows (none for a
    /// statement without `RETURNING`). Transactions naming the same `lock` run one at a
    /// time, also across servers sharing a PostgreSQL database (an advisory lock on the
    /// text's hash); with SQLite this process is the only writer and every transaction is
    /// `IMMEDIATE`.
    pub async fn transaction(
        &self,
        lock: &str,
        steps: Vec<(&'static str, Vec<Val>)>,
    ) -> Result<Vec<Vec<Row>>, DbError> {
        match self {
            Store::Sqlite(s) => s.transaction(steps).await,
            Store::Postgres(p) => p.transaction(lock, steps).await,
        }
    }

    /// The current [`Stamp`] of `channel`.
    pub async fn stamp(&self, channel: &str) -> Result<Stamp, DbError> {
        match self {
            Store::Sqlite(s) => Ok(s.stamp(channel)),
            Store::Postgres(p) => p.stamp(channel).await,
        }
    }

    /// Marks every channel changed (after a pruning deleted rows).
    pub async fn touch_all(&self) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => {
                s.touch_all();
                Ok(())
            }
            Store::Postgres(p) => p.touch_all().await,
        }
    }
}
