//! Command-line flags (the "low" arguments, as typed) and their conversion, in one place, into
//! a validated [`server::Config`].
//!
//! Tokens are never taken as flag values (they would show in `ps`): each comes from a file
//! (`--report-token-file`, `--admin-token-file`, `--status-token-file`, e.g. a systemd
//! credential) or else from the environment (`TANDEM_REPORT_TOKEN`, `TANDEM_ADMIN_TOKEN`,
//! `TANDEM_STATUS_TOKEN`). Giving both is an error.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use server::{
    Config, FailureBudget, Leases, Limits, NodeAuth, ReportRate, Retention, TlsFiles, Token,
};

/// Serves a Tandem repository, collects node reports and pauses rollouts.
#[derive(Debug, Parser)]
#[command(name = "tandem-server", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a repository directory over HTTP or HTTPS.
    Serve(Serve),
}

#[derive(Debug, clap::Args)]
pub struct Serve {
    /// Repository directory (root.json, channels/, bundles/).
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for the report database (tandem.db) [default: $STATE_DIRECTORY, else
    /// /var/lib/tandem-server].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Keep reports in this PostgreSQL database instead (postgres://USER@HOST:PORT/DB, or
    /// `host=/run/postgresql dbname=tandem`); several servers may share one. The schema is
    /// migrated at start. Plain connections only: a Unix socket or a trusted network.
    #[arg(long, value_name = "URL", conflicts_with = "data")]
    database: Option<String>,
    /// File holding the PostgreSQL password (e.g. a systemd credential), so that it is not in
    /// the --database URL, which the process list shows.
    #[arg(long, value_name = "FILE", requires = "database")]
    database_password_file: Option<PathBuf>,
    /// TLS certificate chain, PEM (serves HTTPS; needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File holding the fleet's report token [else env TANDEM_REPORT_TOKEN; none: reports refused].
    #[arg(long, value_name = "FILE")]
    report_token_file: Option<PathBuf>,
    /// Which credentials nodes present for reports and reboot leases: `keys` (each node's own
    /// enrolled key: a node speaks only for itself), `shared` (the report token: any holder
    /// speaks for any node), or `either`.
    #[arg(long, value_name = "MODE", default_value = "either", value_parser = node_auth)]
    node_auth: NodeAuth,
    /// File holding the admin token for pause/resume [else env TANDEM_ADMIN_TOKEN; none: refused].
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// File holding the token to read the status page, status JSON and metrics [else env
    /// TANDEM_STATUS_TOKEN; none: readable by anyone].
    #[arg(long, value_name = "FILE")]
    status_token_file: Option<PathBuf>,
    /// Reports older than this are deleted (at start, then hourly).
    #[arg(long, value_name = "DURATION", default_value = "180days", value_parser = humantime::parse_duration)]
    report_max_age: Duration,
    /// At most N reports are kept, checked as reports arrive (every 1 % of N, at most 1,000);
    /// the surplus goes from the nodes with the most reports first.
    #[arg(long, value_name = "N", default_value_t = Retention::default().max_rows)]
    report_max_rows: u64,
    /// Reports one node id may send at once; beyond it and its rate, 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = ReportRate::default().burst)]
    report_burst: u32,
    /// Time that earns a node one more report beyond its burst, e.g. 6s (10 a minute).
    #[arg(long, value_name = "DURATION", default_value = "6s", value_parser = humantime::parse_duration)]
    report_interval: Duration,
    /// Most node ids whose report rate is tracked at once (idle ones are forgotten first).
    #[arg(long, value_name = "N", default_value_t = ReportRate::default().max_nodes)]
    report_rate_nodes: usize,
    /// Reboot slots of every lease group not named by --reboot-group (nodes of one group
    /// rebooting at once).
    #[arg(long, value_name = "N", default_value_t = Leases::default().default_slots)]
    reboot_slots: u32,
    /// Slots of one group, as GROUP=N (repeat for more groups).
    #[arg(long, value_name = "GROUP=N", value_parser = group_slots)]
    reboot_group: Vec<(String, u32)>,
    /// A reboot lease never released is reclaimed this long after it was granted.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Let clients without credentials take and release reboot leases (Zincati sends none);
    /// by default they need the report token.
    #[arg(long)]
    anonymous_leases: bool,
    /// Never pause a channel automatically, whatever its current release's failures.
    #[arg(long)]
    no_failure_budget: bool,
    /// Nodes that must have reported on a release before its failure budget can pause it.
    #[arg(long, value_name = "N", default_value_t = FailureBudget::default().min_nodes)]
    failure_budget_nodes: u64,
    /// Pause a channel when more than this percentage of the nodes that reported on its
    /// current release failed or rolled back.
    #[arg(long, value_name = "PERCENT", default_value_t = FailureBudget::default().percent)]
    failure_budget_percent: u8,
    /// Most connections served at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Time a client has to send a request head (also the keep-alive idle limit), e.g. 10s.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Time a client has to send a request body.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// A response write stalled this long closes the connection.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    write_timeout: Duration,
}

impl Serve {
    /// Builds the validated configuration.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let retention = self.retention()?;
        let limits = self.limits()?;
        let report_rate = self.report_rate()?;
        let leases = self.leases()?;
        let failure_budget = self.failure_budget()?;
        let data = self.data.unwrap_or_else(default_data_dir);
        let mut config = Config::new(self.repo, self.listen, data);
        config.database_url = self.database;
        config.database_password_file = self.database_password_file;
        config.tls = self
            .tls_cert
            .zip(self.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key });
        config.report_token = token(
            "report",
            self.report_token_file.as_deref(),
            "TANDEM_REPORT_TOKEN",
        )?;
        config.admin_token = token(
            "admin",
            self.admin_token_file.as_deref(),
            "TANDEM_ADMIN_TOKEN",
        )?;
        config.status_token = token(
            "status",
            self.status_token_file.as_deref(),
            "TANDEM_STATUS_TOKEN",
        )?;
        config.node_auth = self.node_auth;
        if config.node_auth == NodeAuth::Keys && config.report_token.is_some() {
            bail!("--node-auth keys takes no report token: drop --report-token-file (or TANDEM_REPORT_TOKEN)");
        }
        config.retention = retention;
        config.limits = limits;
        config.report_rate = report_rate;
        config.leases = leases;
        config.failure_budget = failure_budget;
        if config.report_token.is_none() && config.node_auth == NodeAuth::Shared {
            tracing::warn!(
                "no report token: POST /v1/reports is refused (set --report-token-file)"
            );
        }
        Ok(config)
    }

    fn retention(&self) -> anyhow::Result<Retention> {
        let retention = Retention {
            max_age: self.report_max_age,
            max_rows: self.report_max_rows,
            ..Retention::default()
        };
        retention
            .validate()
            .context("fix --report-max-age or --report-max-rows")?;
        Ok(retention)
    }

    fn report_rate(&self) -> anyhow::Result<ReportRate> {
        let rate = ReportRate {
            burst: self.report_burst,
            interval: self.report_interval,
            max_nodes: self.report_rate_nodes,
        };
        rate.validate()
            .context("fix --report-burst, --report-interval or --report-rate-nodes")?;
        Ok(rate)
    }

    fn leases(&self) -> anyhow::Result<Leases> {
        let leases = Leases {
            default_slots: self.reboot_slots,
            groups: self.reboot_group.iter().cloned().collect(),
            ttl: self.lease_ttl,
            anonymous: self.anonymous_leases,
        };
        leases
            .validate()
            .context("fix --reboot-slots, --reboot-group or --lease-ttl")?;
        Ok(leases)
    }

    fn failure_budget(&self) -> anyhow::Result<FailureBudget> {
        let budget = FailureBudget {
            enabled: !self.no_failure_budget,
            min_nodes: self.failure_budget_nodes,
            percent: self.failure_budget_percent,
        };
        budget
            .validate()
            .context("fix --failure-budget-nodes or --failure-budget-percent")?;
        Ok(budget)
    }

    fn limits(&self) -> anyhow::Result<Limits> {
        let limits = Limits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_timeout,
            body_read_timeout: self.body_timeout,
            write_stall_timeout: self.write_timeout,
            ..Limits::default()
        };
        limits
            .validate()
            .context("fix the limit flags (--max-connections, --*-timeout)")?;
        Ok(limits)
    }
}

/// The mode of `--node-auth`.
fn node_auth(text: &str) -> Result<NodeAuth, String> {
    NodeAuth::parse(text).ok_or_else(|| format!("{text:?} is not shared, keys or either"))
}

/// `GROUP=N` of `--reboot-group`.
fn group_slots(text: &str) -> Result<(String, u32), String> {
    let (group, slots) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not GROUP=N"))?;
    let slots = slots
        .parse()
        .map_err(|_| format!("{slots:?} is not a number of slots"))?;
    Ok((group.to_owned(), slots))
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/tandem-server"))
}

/// A token from its file, else from the environment; both given is ambiguous.
fn token(what: &'static str, file: Option<&Path>, env: &str) -> anyhow::Result<Option<Token>> {
    let from_env = std::env::var(env).ok().filter(|v| !v.is_empty());
    match (file, from_env) {
        (Some(_), Some(_)) => bail!(
            "the {what} token is given both by file and by {env}: unset {env} or drop the file flag"
        ),
        (Some(path), None) => Ok(Some(Token::from_file(what, path).with_context(|| {
            format!(
                "put a token of 16 to 4096 visible ASCII characters in {}",
                path.display()
            )
        })?)),
        (None, Some(value)) => Ok(Some(
            Token::new(what, &value).with_context(|| format!("fix {env}"))?,
        )),
        (None, None) => Ok(None),
    }
}
