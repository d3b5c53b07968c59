//! The SQLite backend: one connection (WAL mode) behind a mutex; every call runs on tokio's
//! blocking pool so the async workers never wait on SQLite.
//!
//! This process is the database's only writer, so a channel's [`Stamp`] lives in memory:
//! bumped after each stored report of the channel (after its commit, so a summary computed
//! before the bump is stamped older), and for all channels after a pruning. A cached summary
//! costs no query.
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, params_from_iter, Connection, TransactionBehavior};

use super::schema;
use super::sql::{Row, Stamp, Val, INSERT_REPORT};
use crate::error::DbError;
use crate::httpdate;

/// Handle on the SQLite database; cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    stamps: Arc<Mutex<Stamps>>,
}

/// In-memory change counters: `epoch` counts prunings, `channels` stored reports.
#[derive(Default)]
struct Stamps {
    epoch: u64,
    channels: HashMap<String, i64>,
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Sqlite, DbError> {
        let mut conn = open_conn(path).map_err(|source| DbError::Open {
            path: path.to_owned(),
            source,
        })?;
        migrate(&mut conn)?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            stamps: Arc::default(),
        })
    }

    /// See [`super::store::Store::query`].
    pub async fn query(&self, sql: &'static str, params: Vec<Val>) -> Result<Vec<Row>, DbError> {
        self.with_conn(move |c| query(c, sql, params)).await
    }

    /// See [`super::store::Store::execute`].
    pub async fn execute(&self, sql: &'static str, params: Vec<Val>) -> Result<u64, DbError> {
        self.with_conn(move |c| {
            let n = c
                .prepare_cached(&dialect(sql))?
                .execute(params_from_iter(params.into_iter().map(value)))?;
            Ok(n as u64)
        })
        .await
    }

    /// See [`super::store::Store::insert_report`].
    pub async fn insert_report(
        &self,
        channel: &str,
        params: Vec<Val>,
    ) -> Result<Option<i64>, DbError> {
        let rows = self.query(INSERT_REPORT, params).await?;
        let id = rows.first().map(|r| r.int(0)).transpose()?;
        if id.is_some() {
            *self
                .stamps()
                .channels
                .entry(channel.to_owned())
                .or_default() += 1;
        }
        Ok(id)
    }

    /// See [`super::store::Store::transaction`].
    pub async fn transaction(
        &self,
        steps: Vec<(&'static str, Vec<Val>)>,
    ) -> Result<Vec<Vec<Row>>, DbError> {
        self.with_conn(move |c| {
            let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
            let results = steps
                .into_iter()
                .map(|(sql, params)| query(&tx, sql, params))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok(results)
        })
        .await
    }

    /// See [`super::store::Store::stamp`].
    pub fn stamp(&self, channel: &str) -> Stamp {
        let stamps = self.stamps();
        let generation = stamps.channels.get(channel).copied().unwrap_or(0);
        (stamps.epoch, generation)
    }

    /// See [`super::store::Store::touch_all`].
    pub fn touch_all(&self) {
        self.stamps().epoch += 1;
    }

    /// The counters, also after a panic elsewhere: they only ever grow.
    fn stamps(&self) -> MutexGuard<'_, Stamps> {
        self.stamps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| DbError::Worker("database lock poisoned".into()))?;
            f(&guard)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }
}

fn open_conn(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Applies the pending [`schema::MIGRATIONS`] in one write transaction.
fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(schema::CREATE_VERSION_TABLE)?;
    let current: i64 = tx.query_row(schema::CURRENT_VERSION, [], |r| r.get(0))?;
    let now = httpdate::unix_seconds(SystemTime::now());
    for m in schema::pending(current)? {
        tx.execute_batch(m.sqlite)?;
        tx.execute(&dialect(schema::RECORD_VERSION), params![m.version, now])?;
        tracing::info!(version = m.version, what = m.what, "SQLite schema migrated");
    }
    tx.commit()?;
    Ok(())
}

fn query(c: &Connection, sql: &str, params: Vec<Val>) -> Result<Vec<Row>, DbError> {
    let mut stmt = c.prepare_cached(&dialect(sql))?;
    let width = stmt.column_count();
    let mut rows = stmt.query(params_from_iter(params.into_iter().map(value)))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let vals = (0..width)
            .map(|i| row.get_ref(i).map_err(DbError::from).and_then(val))
            .collect::<Result<_, _>>()?;
        out.push(Row(vals));
    }
    Ok(out)
}

/// SQLite numbers its placeholders `?N`; the statements are written with `$N`.
fn dialect(sql: &str) -> String {
    sql.replace('$', "?")
}

fn value(v: Val) -> Value {
    match v {
        Val::Int(i) => Value::Integer(i),
        Val::Text(s) => Value::Text(s),
        Val::Null => Value::Null,
    }
}

fn val(v: ValueRef<'_>) -> Result<Val, DbError> {
    match v {
        ValueRef::Integer(i) => Ok(Val::Int(i)),
        ValueRef::Text(t) => String::from_utf8(t.to_vec())
            .map(Val::Text)
            .map_err(|e| DbError::Decode(e.to_string())),
        ValueRef::Null => Ok(Val::Null),
        ValueRef::Real(_) | ValueRef::Blob(_) => {
            Err(DbError::Decode("a real or blob column".into()))
        }
    }
}
