//! What the report logic and both backends share about SQL: the values of parameters and
//! columns ([`Val`]), result rows ([`Row`]), a channel's change [`Stamp`], and the statement
//! whose text both backends build on ([`INSERT_REPORT`]). It imports no backend: the backends
//! (`sqlite.rs`, `postgres.rs`) take their vocabulary from here, and only the seam
//! (`store.rs`), which dispatches to them, imports them.
use crate::error::DbError;

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// An integer (`BIGINT`).
    Int(i64),
    /// Text.
    Text(String),
    /// SQL `NULL`.
    Null,
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_owned())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}

impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        v.map_or(Val::Null, Val::Text)
    }
}

impl From<Option<u64>> for Val {
    /// A count, `NULL` when absent; one beyond `i64` (never validated) saturates.
    fn from(v: Option<u64>) -> Self {
        v.map_or(Val::Null, |v| {
            Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
        })
    }
}

/// One result row.
#[derive(Debug, Clone, Default)]
pub struct Row(pub Vec<Val>);

impl Row {
    fn at(&self, i: usize) -> Result<&Val, DbError> {
        self.0
            .get(i)
            .ok_or_else(|| DbError::Decode(format!("no column {i}")))
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        match self.at(i)? {
            Val::Int(v) => Ok(*v),
            other => Err(DbError::Decode(format!(
                "column {i}: {other:?} is no integer"
            ))),
        }
    }

    /// Column `i` as a count (a negative or missing value counts 0).
    pub fn count(&self, i: usize) -> Result<u64, DbError> {
        Ok(u64::try_from(self.int(i)?).unwrap_or(0))
    }

    /// Column `i` as a count, `None` for `NULL`.
    pub fn opt_count(&self, i: usize) -> Result<Option<u64>, DbError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.count(i).map(Some),
        }
    }

    /// Column `i` as text, `None` for `NULL`.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Val::Text(v) => Ok(Some(v.clone())),
            Val::Null => Ok(None),
            Val::Int(v) => Err(DbError::Decode(format!("column {i}: {v} is no text"))),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?
            .ok_or_else(|| DbError::Decode(format!("column {i} is NULL")))
    }
}

/// What tells whether a cached summary of a channel is still current: it changes whenever a
/// report of that channel is stored or reports are pruned.
pub type Stamp = (u64, i64);

/// The text of [`INSERT_REPORT`], for statements that embed it.
macro_rules! insert_report_sql {
    () => {
        "INSERT INTO reports
             (received_at, node_id, channel, from_version, to_version, outcome, reason, report_id,
              bytes_fetched, bytes_reused, bundle_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (node_id, report_id) DO NOTHING
             RETURNING id, channel"
    };
}
pub(crate) use insert_report_sql;

/// Stores a report unless its (node, report id) pair is already there: `$1` received_at,
/// `$2` node_id, `$3` channel, `$4` from_version, `$5` to_version, `$6` outcome, `$7` reason,
/// `$8` report id, `$9` bytes_fetched, `$10` bytes_reused, `$11` bundle_bytes (the last
/// three `NULL` for a report without a transfer). Returns the new row's id and channel; nothing for a repeat.
pub const INSERT_REPORT: &str = insert_report_sql!();
