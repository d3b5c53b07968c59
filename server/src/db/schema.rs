//! Versioned schema migrations, run at start by both backends inside one transaction (and,
//! on PostgreSQL, under an advisory lock, so two servers starting at once migrate once).
//!
//! `schema_version` holds one row per applied migration. A database without that table is
//! at version 0: migration 1 creates today's tables only if they are missing, so the
//! database of an install from before versioning migrates in place.
use crate::error::DbError;

/// One step of the schema, in each dialect.
pub struct Migration {
    /// Its number: migrations run in this order, each once.
    pub version: i64,
    /// What it does, for the log.
    pub what: &'static str,
    /// The SQLite statements.
    pub sqlite: &'static str,
    /// The PostgreSQL statements.
    pub postgres: &'static str,
}

/// Creates the version table (both dialects).
pub const CREATE_VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
/// The version a database is at.
pub const CURRENT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
/// Records an applied migration: `$1` version, `$2` Unix seconds.
pub const RECORD_VERSION: &str = "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)";

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "reports table",
        sqlite: "
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
            CREATE INDEX IF NOT EXISTS reports_received_at ON reports(received_at);",
        postgres: "
            CREATE TABLE IF NOT EXISTS reports (
                id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                received_at  BIGINT NOT NULL,
                node_id      TEXT NOT NULL,
                channel      TEXT NOT NULL,
                from_version TEXT NOT NULL,
                to_version   TEXT NOT NULL,
                outcome      TEXT NOT NULL,
                reason       TEXT
            );
            CREATE INDEX IF NOT EXISTS reports_channel_node ON reports(channel, node_id, id);
            CREATE INDEX IF NOT EXISTS reports_received_at ON reports(received_at);",
    },
    Migration {
        version: 2,
        what: "report ids, one report per (node, id); summary generations (PostgreSQL)",
        sqlite: "
            ALTER TABLE reports ADD COLUMN report_id TEXT;
            CREATE UNIQUE INDEX reports_node_report ON reports(node_id, report_id);",
        // Several servers share one PostgreSQL: each keeps its summary cache valid by reading
        // the channel's generation, bumped with every report it stores (db/postgres.rs).
        postgres: "
            ALTER TABLE reports ADD COLUMN report_id TEXT;
            CREATE UNIQUE INDEX reports_node_report ON reports(node_id, report_id);
            CREATE TABLE report_generations (
                channel    TEXT PRIMARY KEY,
                generation BIGINT NOT NULL
            );",
    },
    Migration {
        version: 3,
        what: "bytes an install fetched and reused (NULL when the agent did not say)",
        sqlite: "
            ALTER TABLE reports ADD COLUMN bytes_fetched INTEGER;
            ALTER TABLE reports ADD COLUMN bytes_reused INTEGER;
            ALTER TABLE reports ADD COLUMN bundle_bytes INTEGER;",
        postgres: "
            ALTER TABLE reports ADD COLUMN bytes_fetched BIGINT;
            ALTER TABLE reports ADD COLUMN bytes_reused BIGINT;
            ALTER TABLE reports ADD COLUMN bundle_bytes BIGINT;",
    },
    Migration {
        version: 4,
        what: "reboot leases (FleetLock), their log, nodes waiting for one, failure budgets an operator resumed",
        // One row per lease held; the log keeps every grant, release and expiry, so the
        // number of reboots at once is checkable after the fact; a node refused a lease waits
        // in lease_waiting until it gets one (db/leases.rs).
        sqlite: "
            CREATE TABLE reboot_leases (
                grp         TEXT NOT NULL,
                node_id     TEXT NOT NULL,
                lease_id    TEXT NOT NULL UNIQUE,
                acquired_at INTEGER NOT NULL,
                expires_at  INTEGER NOT NULL,
                PRIMARY KEY (grp, node_id)
            );
            CREATE TABLE lease_log (
                id      INTEGER PRIMARY KEY AUTOINCREMENT,
                at      INTEGER NOT NULL,
                grp     TEXT NOT NULL,
                node_id TEXT NOT NULL,
                event   TEXT NOT NULL
            );
            CREATE INDEX lease_log_at ON lease_log(at);
            CREATE TABLE lease_waiting (
                grp        TEXT NOT NULL,
                node_id    TEXT NOT NULL,
                since      INTEGER NOT NULL,
                last_asked INTEGER NOT NULL,
                PRIMARY KEY (grp, node_id)
            );
            CREATE TABLE budget_resumed (
                channel    TEXT NOT NULL,
                version    TEXT NOT NULL,
                resumed_at INTEGER NOT NULL,
                PRIMARY KEY (channel, version)
            );",
        postgres: "
            CREATE TABLE reboot_leases (
                grp         TEXT NOT NULL,
                node_id     TEXT NOT NULL,
                lease_id    TEXT NOT NULL UNIQUE,
                acquired_at BIGINT NOT NULL,
                expires_at  BIGINT NOT NULL,
                PRIMARY KEY (grp, node_id)
            );
            CREATE TABLE lease_log (
                id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at      BIGINT NOT NULL,
                grp     TEXT NOT NULL,
                node_id TEXT NOT NULL,
                event   TEXT NOT NULL
            );
            CREATE INDEX lease_log_at ON lease_log(at);
            CREATE TABLE lease_waiting (
                grp        TEXT NOT NULL,
                node_id    TEXT NOT NULL,
                since      BIGINT NOT NULL,
                last_asked BIGINT NOT NULL,
                PRIMARY KEY (grp, node_id)
            );
            CREATE TABLE budget_resumed (
                channel    TEXT NOT NULL,
                version    TEXT NOT NULL,
                resumed_at BIGINT NOT NULL,
                PRIMARY KEY (channel, version)
            );",
    },
    Migration {
        version: 5,
        what: "named tokens with roles, the audit log of operators' actions",
        // A token is kept as its SHA-256 (hex); the audit log keeps who did what, when, why.
        sqlite: "
            CREATE TABLE api_tokens (
                name       TEXT PRIMARY KEY,
                role       TEXT NOT NULL,
                digest     TEXT NOT NULL UNIQUE,
                created_at INTEGER NOT NULL,
                created_by TEXT NOT NULL,
                revoked_at INTEGER
            );
            CREATE TABLE audit_log (
                id     INTEGER PRIMARY KEY AUTOINCREMENT,
                at     INTEGER NOT NULL,
                actor  TEXT NOT NULL,
                role   TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                reason TEXT
            );
            CREATE INDEX audit_log_at ON audit_log(at);",
        postgres: "
            CREATE TABLE api_tokens (
                name       TEXT PRIMARY KEY,
                role       TEXT NOT NULL,
                digest     TEXT NOT NULL UNIQUE,
                created_at BIGINT NOT NULL,
                created_by TEXT NOT NULL,
                revoked_at BIGINT
            );
            CREATE TABLE audit_log (
                id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at     BIGINT NOT NULL,
                actor  TEXT NOT NULL,
                role   TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                reason TEXT
            );
            CREATE INDEX audit_log_at ON audit_log(at);",
    },
    Migration {
        version: 6,
        what: "node keys (per-node credentials) and one-time enrollment tokens",
        // One row per key a node enrolled: its node, its public key, where it stands. At most
        // one approved and one pending key per node (partial unique indexes); a key id is
        // enrolled for one node only. Enrollment tokens are kept as their SHA-256 (hex).
        sqlite: "
            CREATE TABLE node_keys (
                key_id       TEXT PRIMARY KEY,
                node_id      TEXT NOT NULL,
                public_key   TEXT NOT NULL,
                status       TEXT NOT NULL,
                requested_at INTEGER NOT NULL,
                decided_at   INTEGER,
                decided_by   TEXT
            );
            CREATE INDEX node_keys_node ON node_keys(node_id);
            CREATE UNIQUE INDEX node_keys_one_approved ON node_keys(node_id) WHERE status = 'approved';
            CREATE UNIQUE INDEX node_keys_one_pending ON node_keys(node_id) WHERE status = 'pending';
            CREATE TABLE enrollment_tokens (
                digest     TEXT PRIMARY KEY,
                created_at INTEGER NOT NULL,
                created_by TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                used_at    INTEGER,
                used_by    TEXT
            );",
        postgres: "
            CREATE TABLE node_keys (
                key_id       TEXT PRIMARY KEY,
                node_id      TEXT NOT NULL,
                public_key   TEXT NOT NULL,
                status       TEXT NOT NULL,
                requested_at BIGINT NOT NULL,
                decided_at   BIGINT,
                decided_by   TEXT
            );
            CREATE INDEX node_keys_node ON node_keys(node_id);
            CREATE UNIQUE INDEX node_keys_one_approved ON node_keys(node_id) WHERE status = 'approved';
            CREATE UNIQUE INDEX node_keys_one_pending ON node_keys(node_id) WHERE status = 'pending';
            CREATE TABLE enrollment_tokens (
                digest     TEXT PRIMARY KEY,
                created_at BIGINT NOT NULL,
                created_by TEXT NOT NULL,
                expires_at BIGINT NOT NULL,
                used_at    BIGINT,
                used_by    TEXT
            );",
    },
];

/// The migrations a database at `current` still needs; an error for a database written by a
/// newer server (its schema is not this one's to change).
pub fn pending(current: i64) -> Result<&'static [Migration], DbError> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(DbError::SchemaTooNew { current, latest });
    }
    let applied = MIGRATIONS
        .iter()
        .take_while(|m| m.version <= current)
        .count();
    Ok(MIGRATIONS.get(applied..).unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_pending_ones_follow_the_current() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.what);
        }
        assert_eq!(pending(0).unwrap().len(), MIGRATIONS.len());
        assert_eq!(pending(1).unwrap()[0].version, 2);
        assert_eq!(pending(2).unwrap()[0].version, 3);
        assert_eq!(pending(3).unwrap()[0].version, 4);
        assert_eq!(pending(4).unwrap()[0].version, 5);
        assert_eq!(pending(5).unwrap()[0].version, 6);
        assert!(pending(MIGRATIONS.len() as i64).unwrap().is_empty());
        assert!(matches!(
            pending(99),
            Err(DbError::SchemaTooNew { current: 99, .. })
        ));
    }
}
