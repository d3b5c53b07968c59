//! Validated server configuration: where the repository and database live, where to listen,
//! TLS files, bearer tokens and the [`Limits`] every connection is held to.
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::ConfigError;

/// Size, count and time limits, with safe defaults. Every request is bounded by these.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest accepted request path, in bytes (longer: 414). Default 1024.
    pub max_path_len: usize,
    /// Largest request head (request line + headers), in bytes (larger: 431). Default 16 KiB.
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head, also the idle keep-alive limit and
    /// the TLS handshake limit. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body. Default 10 s.
    pub body_read_timeout: Duration,
    /// A response write that makes no progress for this long closes the connection (a client
    /// that stops reading). Default 60 s.
    pub write_stall_timeout: Duration,
    /// Largest `POST /v1/reports` body. Default 16 KiB.
    pub max_report_body: usize,
    /// Largest pause/resume body. Default 4 KiB.
    pub max_admin_body: usize,
    /// Connections served at once; further ones wait in the kernel's accept queue. Default 1024.
    pub max_connections: usize,
    /// On shutdown, time given to open connections to finish. Default 10 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_path_len: 1024,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(60),
            max_report_body: 16 * 1024,
            max_admin_body: 4 * 1024,
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// Checks that every limit is usable (non-zero, within what hyper accepts).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name, why| Err(ConfigError::BadLimit { name, why });
        if self.max_path_len == 0 || self.max_path_len > 64 * 1024 {
            return bad("max_path_len", "1..=65536 bytes");
        }
        if self.max_header_bytes < 1024 || self.max_header_bytes > 1024 * 1024 {
            return bad("max_header_bytes", "1 KiB..=1 MiB");
        }
        if self.max_connections == 0 || self.max_connections > 1 << 20 {
            return bad("max_connections", "1..=1048576");
        }
        let zero = Duration::ZERO;
        if self.header_read_timeout == zero
            || self.body_read_timeout == zero
            || self.write_stall_timeout == zero
        {
            return bad("timeouts", "must be non-zero");
        }
        Ok(())
    }
}

/// How long the report table keeps its rows. Applied when the server starts and then every
/// `interval` while it serves; the newest reports of each node are what the status counts, so
/// a node silent for longer than `max_age` drops out of the counts.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Reports received longer ago than this are deleted. Default 180 days.
    pub max_age: Duration,
    /// At most this many reports are kept. Default 1,000,000 (about 200 MB). Checked as
    /// reports arrive (see [`Retention::check_every`]), not only at `interval`; the surplus
    /// goes from the nodes with the longest history first, so a flood erases the flooder's
    /// own old reports and never a quiet node's latest.
    pub max_rows: u64,
    /// Time between two prunings while serving. Default 1 hour.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(180 * 24 * 3600),
            max_rows: 1_000_000,
            interval: Duration::from_secs(3600),
        }
    }
}

impl Retention {
    /// How many reports a server stores between two counts of the table against
    /// `max_rows`: 1 % of it, at least 1 and at most 1,000. The table holds at most
    /// `max_rows` plus this many rows per server.
    pub fn check_every(&self) -> u64 {
        (self.max_rows / 100).clamp(1, 1_000)
    }

    /// Checks that every value is usable (non-zero).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name, why| Err(ConfigError::BadLimit { name, why });
        if self.max_age < Duration::from_secs(1) {
            return bad("report max age", "at least 1 s");
        }
        if self.max_rows == 0 || i64::try_from(self.max_rows).is_err() {
            return bad("report max rows", "1..=2^63-1");
        }
        if self.interval.is_zero() {
            return bad("report pruning interval", "must be non-zero");
        }
        Ok(())
    }
}

/// How many reports one node id may send ([`crate::ratelimit`]): `burst` at once, then one
/// more each `interval`; beyond that `POST /v1/reports` answers 429 with `Retry-After`. An
/// agent sends a handful of reports per release (installed, committed or rolled back, a
/// failure), so the defaults leave a node flushing a long queue room and a flooder none.
#[derive(Debug, Clone, Copy)]
pub struct ReportRate {
    /// Reports a node may send at once. Default 20.
    pub burst: u32,
    /// Time that earns a node one more report. Default 6 s (10 a minute).
    pub interval: Duration,
    /// Most node ids tracked at once (an attacker can invent ids): nodes idle long enough
    /// to have their burst back are forgotten first. Default 100,000 (about 10 MB).
    pub max_nodes: usize,
}

impl Default for ReportRate {
    fn default() -> Self {
        ReportRate {
            burst: 20,
            interval: Duration::from_secs(6),
            max_nodes: 100_000,
        }
    }
}

impl ReportRate {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name, why| Err(ConfigError::BadLimit { name, why });
        if self.burst == 0 || self.burst > 100_000 {
            return bad("report burst", "1..=100000");
        }
        if self.interval < Duration::from_millis(1) || self.interval > Duration::from_secs(86_400) {
            return bad("report interval", "1 ms..=1 day");
        }
        if self.max_nodes == 0 || self.max_nodes > 10_000_000 {
            return bad("report rate nodes", "1..=10000000");
        }
        Ok(())
    }
}

/// Reboot leases (`POST /v1/pre-reboot`, `POST /v1/steady-state`, docs/DESIGN.md §7): how
/// many nodes of a group may reboot at once, how long a lease lasts, who may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leases {
    /// Slots of a group not named in `groups`. Default 1: one reboot at a time.
    pub default_slots: u32,
    /// Slots of the named groups.
    pub groups: std::collections::BTreeMap<String, u32>,
    /// A lease never released is reclaimed this long after it was granted. Default 1 hour.
    pub ttl: Duration,
    /// Whether a request without credentials may take and release leases (a Zincati node
    /// that sends none). Default `false`: the report token is required.
    pub anonymous: bool,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            default_slots: 1,
            groups: std::collections::BTreeMap::new(),
            ttl: Duration::from_secs(3600),
            anonymous: false,
        }
    }
}

impl Leases {
    /// Most slots a group may have.
    pub const MAX_SLOTS: u32 = 100_000;

    /// The slots of `group`.
    pub fn slots(&self, group: &str) -> u32 {
        self.groups
            .get(group)
            .copied()
            .unwrap_or(self.default_slots)
    }

    /// Checks that every value is usable: slots 1 to [`Self::MAX_SLOTS`], group names by the
    /// name rule, a lease of 1 s to 7 days.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name, why| Err(ConfigError::BadLimit { name, why });
        let slots_ok = |n: u32| (1..=Self::MAX_SLOTS).contains(&n);
        if !slots_ok(self.default_slots) || !self.groups.values().copied().all(slots_ok) {
            return bad("reboot slots", "1..=100000");
        }
        if self
            .groups
            .keys()
            .any(|g| proto::check_name("group", g).is_err())
        {
            return bad(
                "reboot group",
                "a name: letters, digits, '.', '_', '-', '+'",
            );
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(7 * 86_400) {
            return bad("lease ttl", "1 s..=7 days");
        }
        Ok(())
    }
}

/// When the server pauses a channel by itself: once at least `min_nodes` nodes reported on
/// its current release and more than `percent` % of them failed or rolled back (each node's
/// latest report about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureBudget {
    /// Whether the budget is watched at all. Default on.
    pub enabled: bool,
    /// Nodes that must have reported before the budget can pause. Default 5.
    pub min_nodes: u64,
    /// Failed share that pauses, in percent (paused when strictly above). Default 20.
    pub percent: u8,
}

impl Default for FailureBudget {
    fn default() -> Self {
        FailureBudget {
            enabled: true,
            min_nodes: 5,
            percent: 20,
        }
    }
}

impl FailureBudget {
    /// Whether `failed` of `reported` nodes exceed the budget.
    pub fn exceeded(&self, failed: u64, reported: u64) -> bool {
        self.enabled
            && reported >= self.min_nodes
            && u128::from(failed) * 100 > u128::from(self.percent) * u128::from(reported)
    }

    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name, why| Err(ConfigError::BadLimit { name, why });
        if self.min_nodes == 0 {
            return bad("failure budget nodes", "at least 1");
        }
        if self.percent >= 100 {
            return bad("failure budget percent", "0..=99");
        }
        Ok(())
    }
}

/// Which credentials nodes present for reports and reboot leases (docs/DESIGN.md §7, "Node
/// keys"): the fleet's shared report token, each node's own signing key, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeAuth {
    /// The shared report token only: any holder may speak for any node.
    Shared,
    /// Signed requests by enrolled keys only: a node speaks only for itself.
    Keys,
    /// Either; a signed request is held to its node. The default, so a fleet moves to keys
    /// node by node (with no report token configured, only keys are taken).
    #[default]
    Either,
}

impl NodeAuth {
    /// Every mode.
    pub const ALL: [NodeAuth; 3] = [NodeAuth::Shared, NodeAuth::Keys, NodeAuth::Either];

    /// Its name: `shared`, `keys` or `either`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAuth::Shared => "shared",
            NodeAuth::Keys => "keys",
            NodeAuth::Either => "either",
        }
    }

    /// The mode of a name.
    pub fn parse(name: &str) -> Option<NodeAuth> {
        NodeAuth::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether the shared report token is taken.
    pub fn takes_shared(self) -> bool {
        self != NodeAuth::Keys
    }

    /// Whether signed requests are taken.
    pub fn takes_keys(self) -> bool {
        self != NodeAuth::Shared
    }
}

/// What a credential may do, each role including the ones before it: `Read` the dashboard,
/// the status JSON and the metrics; `Operate` the fleet (pause, resume, free a reboot lease);
/// `Admin` the credentials themselves (create and revoke tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Read,
    /// Reads and operates.
    Operate,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Read, Role::Operate, Role::Admin];

    /// Its name: `read`, `operate` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    /// The role of a name, `None` for anything else.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// A bearer token. Only its SHA-256 is kept, compared in constant time; `Debug` hides it.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl Token {
    /// Shortest accepted token, in bytes.
    pub const MIN_LEN: usize = 16;
    /// Longest accepted token, in bytes.
    pub const MAX_LEN: usize = 4096;

    /// Builds a token from its text; surrounding whitespace (a file's trailing newline) is
    /// dropped. `what` names the token in errors.
    pub fn new(what: &'static str, text: &str) -> Result<Token, ConfigError> {
        let text = text.trim();
        let bad = |why| Err(ConfigError::BadToken { what, why });
        if text.len() < Self::MIN_LEN {
            return bad("shorter than 16 characters");
        }
        if text.len() > Self::MAX_LEN {
            return bad("longer than 4096 characters");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("only visible ASCII characters are allowed");
        }
        Ok(Token {
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// Reads a token from a file (the first line's content, trimmed).
    pub fn from_file(what: &'static str, path: &Path) -> Result<Token, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
            path: path.to_owned(),
            source,
        })?;
        Token::new(what, &text)
    }

    /// Whether `candidate` is this token, in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        let other: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        let diff = self
            .digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A certificate chain and private key, both PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (leaf first), PEM.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
}

/// Everything [`crate::Server::bind`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The repository directory (docs/DESIGN.md §4 layout).
    pub repo: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for `tandem.db` (created if missing), unless `database_url` is set.
    pub data_dir: PathBuf,
    /// Keep reports in this PostgreSQL database (a `postgres://` URL or `key=value`
    /// settings) instead of SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// The PostgreSQL password, read from this file (kept out of the URL, which the process
    /// list shows).
    pub database_password_file: Option<PathBuf>,
    /// Serve HTTPS with these files; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Token nodes present to `POST /v1/reports`; reports are refused (403) without one.
    pub report_token: Option<Token>,
    /// Which credentials nodes present.
    pub node_auth: NodeAuth,
    /// Token operators present to pause/resume; those routes are refused (403) without one.
    pub admin_token: Option<Token>,
    /// Token to read the status page, the status JSON and the metrics; readable by anyone
    /// without one.
    pub status_token: Option<Token>,
    /// Request limits.
    pub limits: Limits,
    /// Report retention.
    pub retention: Retention,
    /// Per-node report rate.
    pub report_rate: ReportRate,
    /// Reboot leases.
    pub leases: Leases,
    /// The automatic pause of a failing release.
    pub failure_budget: FailureBudget,
}

impl Config {
    /// A plain-HTTP configuration with default limits and no tokens.
    pub fn new(repo: impl Into<PathBuf>, listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Config {
            repo: repo.into(),
            listen,
            data_dir: data_dir.into(),
            database_url: None,
            database_password_file: None,
            tls: None,
            report_token: None,
            node_auth: NodeAuth::default(),
            admin_token: None,
            status_token: None,
            limits: Limits::default(),
            retention: Retention::default(),
            report_rate: ReportRate::default(),
            leases: Leases::default(),
            failure_budget: FailureBudget::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_rules() {
        assert!(Token::new("t", "short").is_err());
        assert!(Token::new("t", "has a space in the middle").is_err());
        let t = Token::new("t", "0123456789abcdef\n").unwrap();
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeg"));
        assert!(!t.matches(""));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn the_failure_budget_pauses_above_its_share_once_enough_nodes_reported() {
        let budget = FailureBudget::default();
        assert!(budget.validate().is_ok());
        assert!(!budget.exceeded(4, 4), "fewer than 5 nodes reported");
        assert!(!budget.exceeded(2, 10), "20 % is within the budget");
        assert!(budget.exceeded(3, 10));
        assert!(budget.exceeded(6, 10));
        let off = FailureBudget {
            enabled: false,
            ..budget
        };
        assert!(!off.exceeded(10, 10));
    }

    #[test]
    fn lease_groups_have_one_slot_unless_configured() {
        let mut leases = Leases::default();
        leases.groups.insert("workers".into(), 3);
        assert!(leases.validate().is_ok());
        assert_eq!((leases.slots("workers"), leases.slots("db")), (3, 1));
        leases.groups.insert("bad name".into(), 1);
        assert!(leases.validate().is_err());
        let zero = Leases {
            default_slots: 0,
            ..Leases::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Read < Role::Operate && Role::Operate < Role::Admin);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn default_limits_are_valid() {
        assert!(Limits::default().validate().is_ok());
        let l = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert!(l.validate().is_err());
    }

    #[test]
    fn retention_must_keep_something() {
        assert!(Retention::default().validate().is_ok());
        for r in [
            Retention {
                max_rows: 0,
                ..Retention::default()
            },
            Retention {
                max_age: Duration::ZERO,
                ..Retention::default()
            },
            Retention {
                interval: Duration::ZERO,
                ..Retention::default()
            },
        ] {
            assert!(r.validate().is_err(), "{r:?}");
        }
    }
}
