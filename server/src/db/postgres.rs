//! The PostgreSQL backend (`tandem-server serve --database postgres://…`): a small pool of
//! connections (deadpool), statements prepared once per connection.
//!
//! Several servers may write one database, so no server can know from its own inserts when a
//! cached summary went stale. Each channel has a row in `report_generations`, bumped in the
//! same statement that stores a report of that channel and for every channel after a
//! pruning; a server reads it (a primary-key lookup) before answering from its cache.
//! Generations are bumped under the row's lock, so a server that reads generation `G` sees
//! every report stamped `≤ G` committed: a summary computed after reading `G` includes them.
use std::path::Path;
use std::time::SystemTime;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

use super::schema;
use super::sql::{insert_report_sql, Row, Stamp, Val};
use crate::error::DbError;
use crate::httpdate;

/// Connections kept per server.
const POOL_SIZE: usize = 16;
/// Key of the advisory lock that serialises migrations of servers starting at once.
const MIGRATION_LOCK: i64 = 0x7461_6e64_656d; // "tandem"

/// Stores a report ([`super::sql::INSERT_REPORT`]) and bumps its channel's generation in
/// the same statement.
const INSERT_AND_BUMP: &str = concat!(
    "WITH ins AS (",
    insert_report_sql!(),
    "), bump AS (
        INSERT INTO report_generations (channel, generation) SELECT channel, 1 FROM ins
        ON CONFLICT (channel) DO UPDATE SET generation = report_generations.generation + 1)
     SELECT id FROM ins"
);

/// In-process stripes of the transaction locks ([`Postgres::transaction`]).
const LOCK_STRIPES: usize = 64;

/// Handle on the pool; cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    /// Transactions on one lock name queue here first, in this process, so that a crowd of
    /// requests for one group waits without holding pooled connections (which every other
    /// request needs); the advisory lock then orders them against other servers.
    stripes: std::sync::Arc<[tokio::sync::Mutex<()>; LOCK_STRIPES]>,
}

impl Postgres {
    /// Connects to `url` (a `postgres://` URL or `key=value` settings), with the password
    /// read from `password_file` if given, and migrates the schema. Plain connections only:
    /// use a Unix socket or a trusted network.
    pub async fn connect(url: &str, password_file: Option<&Path>) -> Result<Postgres, DbError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| DbError::Url(e.to_string()))?;
        if let Some(path) = password_file {
            if config.get_password().is_some() {
                return Err(DbError::Url(format!(
                    "it has a password and {} gives one too: keep only the file",
                    path.display()
                )));
            }
            config.password(read_password(path)?);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let pg = Postgres {
            pool,
            stripes: std::sync::Arc::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
        };
        pg.migrate().await?;
        Ok(pg)
    }

    /// See [`super::store::Store::query`].
    pub async fn query(&self, sql: &'static str, params: Vec<Val>) -> Result<Vec<Row>, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        let boxed = boxed(params, stmt.params());
        let rows = client.query(&stmt, &refs(&boxed)).await?;
        rows.iter().map(row).collect()
    }

    /// See [`super::store::Store::execute`].
    pub async fn execute(&self, sql: &'static str, params: Vec<Val>) -> Result<u64, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        let boxed = boxed(params, stmt.params());
        Ok(client.execute(&stmt, &refs(&boxed)).await?)
    }

    /// See [`super::store::Store::insert_report`].
    pub async fn insert_report(&self, params: Vec<Val>) -> Result<Option<i64>, DbError> {
        let rows = self.query(INSERT_AND_BUMP, params).await?;
        rows.first().map(|r| r.int(0)).transpose()
    }

    /// See [`super::store::Store::transaction`].
    pub async fn transaction(
        &self,
        lock: &str,
        steps: Vec<(&'static str, Vec<Val>)>,
    ) -> Result<Vec<Vec<Row>>, DbError> {
        let _turn = self.stripe(lock).lock().await;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&lock],
        )
        .await?;
        let mut results = Vec::with_capacity(steps.len());
        for (sql, params) in steps {
            let stmt = tx.prepare_cached(sql).await?;
            let boxed = boxed(params, stmt.params());
            let rows = tx.query(&stmt, &refs(&boxed)).await?;
            results.push(rows.iter().map(row).collect::<Result<_, _>>()?);
        }
        tx.commit().await?;
        Ok(results)
    }

    /// The stripe of `lock`'s name.
    fn stripe(&self, lock: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        lock.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % LOCK_STRIPES as u64).unwrap_or(0);
        let [first, ..] = &*self.stripes;
        // `index < LOCK_STRIPES`: the fallback is never taken.
        self.stripes.get(index).unwrap_or(first)
    }

    /// See [`super::store::Store::stamp`].
    pub async fn stamp(&self, channel: &str) -> Result<Stamp, DbError> {
        let rows = self
            .query(
                "SELECT generation FROM report_generations WHERE channel = $1",
                vec![channel.into()],
            )
            .await?;
        Ok((0, rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0)))
    }

    /// See [`super::store::Store::touch_all`].
    pub async fn touch_all(&self) -> Result<(), DbError> {
        self.execute(
            "UPDATE report_generations SET generation = generation + 1",
            Vec::new(),
        )
        .await
        .map(drop)
    }

    async fn client(&self) -> Result<Object, DbError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => DbError::Pool(crate::error::pg_cause(&e)),
            other => DbError::Pool(other.to_string()),
        })
    }

    /// Applies the pending [`schema::MIGRATIONS`] in one transaction, under an advisory lock.
    async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(schema::CREATE_VERSION_TABLE).await?;
        let current: i64 = tx
            .query_one(schema::CURRENT_VERSION, &[])
            .await?
            .try_get(0)?;
        let now = httpdate::unix_seconds(SystemTime::now());
        for m in schema::pending(current)? {
            tx.batch_execute(m.postgres).await?;
            tx.execute(schema::RECORD_VERSION, &[&m.version, &now])
                .await?;
            tracing::info!(
                version = m.version,
                what = m.what,
                "PostgreSQL schema migrated"
            );
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The password in `path`: its content without the line break that ends it (a password may
/// hold spaces, so nothing else is trimmed).
fn read_password(path: &Path) -> Result<String, DbError> {
    let text = std::fs::read_to_string(path).map_err(|source| DbError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

type Param = Box<dyn ToSql + Sync + Send>;

/// The parameters to bind; a `NULL` takes the type the statement expects there.
fn boxed(params: Vec<Val>, types: &[Type]) -> Vec<Param> {
    params
        .into_iter()
        .enumerate()
        .map(|(n, v)| -> Param {
            match v {
                Val::Int(i) => Box::new(i),
                Val::Text(s) => Box::new(s),
                Val::Null if types.get(n) == Some(&Type::INT8) => Box::new(None::<i64>),
                Val::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn row(r: &tokio_postgres::Row) -> Result<Row, DbError> {
    let vals = r
        .columns()
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let ty = col.type_();
            if *ty == Type::INT8 {
                Ok(r.try_get::<_, Option<i64>>(i)?.map_or(Val::Null, Val::Int))
            } else if *ty == Type::INT4 {
                Ok(r.try_get::<_, Option<i32>>(i)?
                    .map_or(Val::Null, |v| Val::Int(v.into())))
            } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
                Ok(r.try_get::<_, Option<String>>(i)?
                    .map_or(Val::Null, Val::Text))
            } else {
                Err(DbError::Decode(format!("column {i} has type {ty}")))
            }
        })
        .collect::<Result<_, DbError>>()?;
    Ok(Row(vals))
}
