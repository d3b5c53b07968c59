//! The library's error types: start-up failures grouped by cause. Per-request failures are
//! not errors of this kind: they become HTTP responses (see [`crate::api::ApiError`]).
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is unusable (caller mistake).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The report database could not be opened or used.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Underlying error.
        source: io::Error,
    },
}

/// A configuration mistake, caught before serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The repository directory is missing or unreadable.
    #[error("repository directory {path}: {source}")]
    Repo {
        /// The path given.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The repository path is not a directory.
    #[error("repository {0} is not a directory")]
    RepoNotDir(PathBuf),
    /// A token file could not be read.
    #[error("token file {path}: {source}")]
    TokenFile {
        /// The path given.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A token is too short, too long or has characters outside visible ASCII.
    #[error("{what} token is invalid: {why}")]
    BadToken {
        /// Which token (report, admin).
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A limit is out of its allowed range.
    #[error("limit {name} is out of range: {why}")]
    BadLimit {
        /// The limit's name.
        name: &'static str,
        /// Allowed range.
        why: &'static str,
    },
}

/// TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate chain file is unreadable or holds no certificate.
    #[error("TLS certificate {path}: {why}")]
    Cert {
        /// The path given.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The private key file is unreadable or holds no key.
    #[error("TLS private key {path}: {why}")]
    Key {
        /// The path given.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The report database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path given.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// SQLite failed to open or migrate the database.
    #[error("database {path}: {source}")]
    Open {
        /// Database file.
        path: PathBuf,
        /// Underlying error.
        source: rusqlite::Error,
    },
    /// An SQLite statement failed.
    #[error("database query failed: {0}")]
    Query(#[from] rusqlite::Error),
    /// A PostgreSQL statement failed, or the connection did.
    #[error("PostgreSQL: {}", pg_cause(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The `--database-password-file` could not be read.
    #[error("PostgreSQL password file {path}: {source}")]
    PasswordFile {
        /// The file given.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The `--database` URL does not parse.
    #[error("database URL: {0}")]
    Url(String),
    /// No PostgreSQL connection could be had from the pool.
    #[error("PostgreSQL connection: {0}")]
    Pool(String),
    /// A stored value is not of the type the server wrote there.
    #[error("unexpected value in the database: {0}")]
    Decode(String),
    /// The database was migrated by a newer server than this one.
    #[error("the database schema is at version {current}; this server knows up to {latest}")]
    SchemaTooNew {
        /// The database's version.
        current: i64,
        /// The newest this server knows.
        latest: i64,
    },
    /// A database worker task panicked or the lock was poisoned (file a bug).
    #[error("database worker failed: {0}")]
    Worker(String),
}

/// A PostgreSQL error with the server's own words when it sent any (`database "x" does not
/// exist`, its SQLSTATE, detail and hint): the client's summary of such an error is only
/// "db error". Other errors (a refused connection, say) come with their source chain.
pub(crate) fn pg_cause(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(&format!(": {more}"));
        }
        source = cause.source();
    }
    text
}
