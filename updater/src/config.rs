//! The agent's configuration file (`/etc/tandem/updater.toml`).
//!
//! Parsing is strict: unknown keys and bad values are refused with the file, the line and the
//! reason, because a typo in an updater's configuration is found on the day an update fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use partitions::boot;

use crate::reboot::{RebootOn, RebootPolicy, Window};
use serde::{Deserialize, Deserializer};

/// Where the agent looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tandem/updater.toml";

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One health check run in the trial boot of a new slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// A command that must exit 0.
    Exec(Vec<String>),
    /// A URL that must answer GET with a 2xx status.
    Http(String),
}

/// A health check with its own time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    pub timeout: Duration,
}

/// The validated configuration of the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The disk (block device or image file) holding the slots.
    pub disk: PathBuf,
    /// Name of the slot pair: `root` means the partitions `root-a` and `root-b`.
    pub slots: String,
    /// The boot-control backend and where its files live (`boot`, `grubenv`, `esp`,
    /// `[systemd_boot]`: read and checked by `partitions`).
    pub boot: boot::Config,
    /// The agent's state file.
    pub state: PathBuf,
    /// The trusted root of trust shipped with the OS.
    pub root: PathBuf,
    /// Bundles for another product are refused.
    pub product: String,
    /// How this node names itself in reports and rollout buckets.
    pub node_id: Option<String>,
    /// Boot attempts a new slot gets before the firmware abandons it.
    pub tries: u8,
    /// Where the booted slot is read from (`tandem.slot=` or the root PARTUUID).
    pub cmdline: PathBuf,
    /// The efivarfs directory where systemd-boot's `LoaderEntrySelected` is read, a second
    /// witness of the booted slot (docs/booting.md, "Which slot booted").
    pub efivars: PathBuf,
    /// Overrides the booted slot read from `cmdline` (tests, simulators).
    pub booted_slot: Option<String>,
    /// The command that reboots the node.
    pub reboot: Vec<String>,
    /// When a reboot into a new slot may happen (`[reboot]`: immediately, with a lease, in
    /// a window).
    pub reboot_policy: RebootPolicy,
    /// Re-read the written slot and hash it before flipping (catches a lying disk).
    pub verify_readback: bool,
    pub health: Vec<HealthCheck>,
    /// All health checks together must pass within this time.
    pub health_deadline: Duration,
    /// The update server (`tandem-server` or any HTTP server of the repository).
    pub server: Option<Server>,
    /// Where the agent writes its metrics for node_exporter's textfile collector.
    pub metrics_textfile: Option<PathBuf>,
}

/// Where `daemon` polls and reports.
#[derive(Debug, Clone)]
pub struct Server {
    /// Base URL of the repository; reports go to `<url>/v1/reports`.
    pub url: String,
    /// The channel this node follows.
    pub channel: String,
    /// Time between polls (jittered).
    pub poll_interval: Duration,
    /// File holding the fleet's report token.
    pub report_token_file: Option<PathBuf>,
    /// Whether the node enrolls its own key and signs its reports and lease requests with it
    /// (docs/DESIGN.md §7, "Node keys"): `enroll = true`, or an `enrollment_token_file`.
    pub enroll: bool,
    /// File holding a one-time enrollment token: the key is approved at once with it, else
    /// it waits for an operator.
    pub enrollment_token_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for `https://`.
    pub ca_bundle: Option<PathBuf>,
}

/// The file as written, before cross-field validation: the agent's own keys (the boot
/// backend's are read by [`boot::Config`]; [`check_keys`] refuses any other).
#[derive(Debug, Deserialize)]
struct RawConfig {
    disk: PathBuf,
    #[serde(default = "default_slots")]
    slots: String,
    #[serde(default = "default_state")]
    state: PathBuf,
    #[serde(default = "default_root")]
    root: PathBuf,
    product: String,
    node_id: Option<String>,
    #[serde(default = "default_tries")]
    tries: u8,
    #[serde(default = "default_cmdline")]
    cmdline: PathBuf,
    #[serde(default = "default_efivars")]
    efivars: PathBuf,
    booted_slot: Option<String>,
    /// The reboot command (`reboot = [...]`), or the `[reboot]` table.
    reboot: Option<RawReboot>,
    #[serde(default = "default_true")]
    verify_readback: bool,
    #[serde(default)]
    health: Vec<toml::Spanned<RawHealth>>,
    #[serde(default = "default_health_deadline", deserialize_with = "duration")]
    health_deadline: Duration,
    server: Option<RawServer>,
    metrics_textfile: Option<PathBuf>,
}

/// The top-level keys of [`RawConfig`].
const AGENT_KEYS: [&str; 16] = [
    "disk",
    "slots",
    "state",
    "root",
    "product",
    "node_id",
    "tries",
    "cmdline",
    "efivars",
    "booted_slot",
    "reboot",
    "verify_readback",
    "health",
    "health_deadline",
    "server",
    "metrics_textfile",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: String,
    channel: String,
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    poll_interval: Duration,
    report_token_file: Option<PathBuf>,
    enroll: Option<bool>,
    enrollment_token_file: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
}

/// `reboot`: the command alone, or the `[reboot]` table with the policy.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a command such as [\"systemctl\", \"reboot\"], or a [reboot] table"
)]
enum RawReboot {
    Command(Vec<String>),
    Table(toml::Table),
}

/// The `[reboot]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRebootTable {
    #[serde(default = "default_reboot")]
    command: Vec<String>,
    #[serde(default)]
    on: RebootOn,
    group: Option<String>,
    #[serde(default)]
    window: Vec<RawWindow>,
}

/// One `[[reboot.window]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    #[serde(default)]
    days: Vec<String>,
    start: String,
    end: String,
    #[serde(default = "default_time_zone")]
    time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    exec: Option<Vec<String>>,
    http: Option<String>,
    #[serde(default = "default_health_timeout", deserialize_with = "duration")]
    timeout: Duration,
}

fn default_slots() -> String {
    "root".into()
}
fn default_state() -> PathBuf {
    "/var/lib/tandem/state.json".into()
}
fn default_root() -> PathBuf {
    "/etc/tandem/root.json".into()
}
fn default_tries() -> u8 {
    3
}
fn default_cmdline() -> PathBuf {
    "/proc/cmdline".into()
}

fn default_efivars() -> PathBuf {
    "/sys/firmware/efi/efivars".into()
}

fn default_reboot() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}
fn default_true() -> bool {
    true
}
fn default_health_deadline() -> Duration {
    Duration::from_secs(300)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(600)
}

/// Reads durations written as `60s`, `5m`, `1h 30m`.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}")))
}

impl AgentConfig {
    /// Reads and validates the configuration file at `path`; its relative paths are taken
    /// from the file's own directory, not from wherever the agent was started.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config.relative_to(path.parent().unwrap_or(Path::new(""))))
    }

    /// The configuration with every relative file path joined to `dir` (absolute ones are
    /// kept). Commands (`reboot`, health checks) are run as written, looked up in `PATH`.
    fn relative_to(mut self, dir: &Path) -> Self {
        let anchor = |path: &mut PathBuf| *path = dir.join(&*path);
        for path in [
            &mut self.disk,
            &mut self.state,
            &mut self.root,
            &mut self.cmdline,
            &mut self.efivars,
        ] {
            anchor(path);
        }
        self.metrics_textfile.iter_mut().for_each(&anchor);
        if let Some(server) = &mut self.server {
            server.report_token_file.iter_mut().for_each(&anchor);
            server.enrollment_token_file.iter_mut().for_each(&anchor);
            server.ca_bundle.iter_mut().for_each(&anchor);
        }
        match &mut self.boot {
            boot::Config::Grub { grubenv } => anchor(grubenv),
            boot::Config::SystemdBoot { esp, .. } => anchor(esp),
            boot::Config::Gpt => {}
        }
        self
    }

    /// Parses configuration text; the error names the line and the reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        check_keys(text)?;
        let raw: RawConfig = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        let boot: boot::Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        raw.validate(text, boot)
    }
}

/// Refuses a top-level key that neither the agent nor the boot backend reads, with its line
/// (the agent's keys and the backend's share the top level, so neither type can refuse
/// unknown keys by itself).
fn check_keys(text: &str) -> Result<(), String> {
    let keys: BTreeMap<toml::Spanned<String>, serde::de::IgnoredAny> =
        toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
    let known = || AGENT_KEYS.iter().chain(&boot::Config::KEYS);
    match keys.keys().find(|k| !known().any(|n| n == k.get_ref())) {
        Some(key) => Err(format!(
            "line {}: unknown field `{}`, expected one of {}",
            line_of(text, key.span().start),
            key.get_ref(),
            known()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => Ok(()),
    }
}

impl RawConfig {
    fn validate(self, text: &str, boot: boot::Config) -> Result<AgentConfig, String> {
        if !(1..=15).contains(&self.tries) {
            return Err(format!(
                "tries = {}: must be between 1 and 15 (the boot counters hold 4 bits)",
                self.tries
            ));
        }
        if self.slots.is_empty() || self.slots.contains(['/', ' ']) {
            return Err(format!(
                "slots = {:?}: must name a partition pair such as \"root\"",
                self.slots
            ));
        }
        if self.product.is_empty() {
            return Err("product must not be empty".into());
        }
        if let Some(node_id) = &self.node_id {
            // The server's rule: a node id it would refuse would block every report.
            proto::check_node_id(node_id).map_err(|e| e.to_string())?;
        }
        if let Some(slot) = &self.booted_slot {
            if slot != "a" && slot != "b" {
                return Err(format!("booted_slot = {slot:?}: must be \"a\" or \"b\""));
            }
        }
        let (reboot, reboot_policy) = reboot_policy(self.reboot)?;
        let server = self.server.map(validate_server).transpose()?;
        if let Some(path) = &self.metrics_textfile {
            // node_exporter reads `*.prom` files only: any other name is silently unread.
            if !path.extension().is_some_and(|e| e == "prom") {
                return Err(format!(
                    "metrics_textfile = {:?}: must name a `.prom` file (node_exporter reads no other)",
                    path.display().to_string()
                ));
            }
        }
        let health = self
            .health
            .into_iter()
            .map(|spanned| health_check(text, spanned))
            .collect::<Result<_, _>>()?;
        Ok(AgentConfig {
            disk: self.disk,
            slots: self.slots,
            boot,
            state: self.state,
            root: self.root,
            product: self.product,
            node_id: self.node_id,
            tries: self.tries,
            cmdline: self.cmdline,
            efivars: self.efivars,
            booted_slot: self.booted_slot,
            reboot,
            reboot_policy,
            verify_readback: self.verify_readback,
            health,
            health_deadline: self.health_deadline,
            server,
            metrics_textfile: self.metrics_textfile,
        })
    }
}

/// The reboot command and policy of `reboot = [...]` or `[reboot]`.
fn reboot_policy(raw: Option<RawReboot>) -> Result<(Vec<String>, RebootPolicy), String> {
    let table = match raw {
        None => return Ok((default_reboot(), RebootPolicy::default_group())),
        Some(RawReboot::Command(command)) => RawRebootTable {
            command,
            on: RebootOn::Immediate,
            group: None,
            window: Vec::new(),
        },
        Some(RawReboot::Table(table)) => table
            .try_into()
            .map_err(|e: toml::de::Error| format!("[reboot]: {}", e.message()))?,
    };
    if table.command.is_empty() {
        return Err("reboot must name a command, e.g. [\"systemctl\", \"reboot\"]".into());
    }
    let group = table
        .group
        .unwrap_or_else(|| proto::fleetlock::DEFAULT_GROUP.to_owned());
    proto::check_name("group", &group).map_err(|e| format!("[reboot] {e}"))?;
    let windows = table
        .window
        .iter()
        .map(|w| Window::parse(&w.days, &w.start, &w.end, &w.time_zone))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("[[reboot.window]] {e}"))?;
    match (table.on, windows.is_empty()) {
        (RebootOn::Window, true) => {
            return Err("[reboot] on = \"window\" needs at least one [[reboot.window]]".into())
        }
        (RebootOn::Immediate | RebootOn::Lease, false) => {
            return Err(
                "[[reboot.window]] is only read with [reboot] on = \"window\": set it, or remove the windows"
                    .into(),
            )
        }
        _ => {}
    }
    let policy = RebootPolicy {
        on: table.on,
        group,
        windows,
    };
    Ok((table.command, policy))
}

fn validate_server(raw: RawServer) -> Result<Server, String> {
    if !(raw.url.starts_with("http://") || raw.url.starts_with("https://")) {
        return Err(format!(
            "[server] url = {:?} is not an http(s) URL",
            raw.url
        ));
    }
    let name_ok = !raw.channel.is_empty()
        && raw
            .channel
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !name_ok {
        return Err(format!(
            "[server] channel = {:?}: use lowercase letters, digits, '.', '_' and '-'",
            raw.channel
        ));
    }
    if raw.poll_interval < Duration::from_secs(1) {
        return Err("[server] poll_interval must be at least 1s".into());
    }
    Ok(Server {
        url: raw.url,
        channel: raw.channel,
        poll_interval: raw.poll_interval,
        report_token_file: raw.report_token_file,
        enroll: raw.enroll.unwrap_or(raw.enrollment_token_file.is_some()),
        enrollment_token_file: raw.enrollment_token_file,
        ca_bundle: raw.ca_bundle,
    })
}

fn health_check(text: &str, spanned: toml::Spanned<RawHealth>) -> Result<HealthCheck, String> {
    let line = line_of(text, spanned.span().start);
    let raw = spanned.into_inner();
    let probe = match (raw.exec, raw.http) {
        (Some(argv), None) if !argv.is_empty() => HealthProbe::Exec(argv),
        (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
            HealthProbe::Http(url)
        }
        (None, Some(url)) => {
            return Err(format!(
                "line {line}: health check http = {url:?} is not an http(s) URL"
            ))
        }
        _ => {
            return Err(format!(
                "line {line}: a [[health]] check needs exactly one of exec = [\"cmd\", …] or http = \"URL\""
            ))
        }
    };
    Ok(HealthCheck {
        probe,
        timeout: raw.timeout,
    })
}

/// The 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message();
    match error.span() {
        // A span over the whole document (a check across keys) points at no line.
        Some(span) if span.start > 0 || span.end < text.trim_end().len() => {
            format!("line {}: {message}", line_of(text, span.start))
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The minimal file plus `tail`.
    fn with(tail: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(&format!(
            "disk = \"/dev/sda\"\nboot = \"gpt\"\nproduct = \"p\"\n{tail}"
        ))
    }

    #[test]
    fn reboot_is_a_command_or_a_policy_table() {
        let plain = with("reboot = [\"true\"]").unwrap();
        assert_eq!(plain.reboot, ["true"]);
        assert_eq!(plain.reboot_policy.on, RebootOn::Immediate);
        let table = with(
            "[reboot]\non = \"window\"\ngroup = \"edge\"\n[[reboot.window]]\n\
             days = [\"sat\", \"sun\"]\nstart = \"02:00\"\nend = \"04:00\"\n\
             time_zone = \"Europe/Berlin\"",
        )
        .unwrap();
        assert_eq!(table.reboot, ["systemctl", "reboot"]);
        assert_eq!(table.reboot_policy.group, "edge");
        assert_eq!(table.reboot_policy.windows.len(), 1);
        for (bad, says) in [
            ("[reboot]\non = \"window\"", "needs at least one"),
            (
                "[reboot]\non = \"lease\"\n[[reboot.window]]\nstart = \"01:00\"\nend = \"02:00\"",
                "only read",
            ),
            ("[reboot]\non = \"sometimes\"", "sometimes"),
            ("[reboot]\ngroup = \"../x\"", "group"),
            ("[reboot]\nwhen = 1", "when"),
            ("reboot = \"systemctl reboot\"", "a command such as"),
        ] {
            let error = with(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    const EXAMPLE: &str = r#"
disk = "/dev/sda"
slots = "root"
boot = "gpt"
state = "/var/lib/tandem/state.json"
root = "/etc/tandem/root.json"
product = "acme-edge"
tries = 3
cmdline = "/proc/cmdline"
reboot = ["systemctl", "reboot"]
[[health]]
exec = ["/usr/bin/systemctl", "is-active", "--quiet", "acme-app.service"]
timeout = "60s"
[[health]]
http = "http://127.0.0.1:8080/healthz"
"#;

    #[test]
    fn systemd_boot_entries_follow_the_template() {
        use partitions::boot::systemd_boot::EntryTemplate;
        let text = EXAMPLE.replace("boot = \"gpt\"", "boot = \"systemd-boot\"\nesp = \"/efi\"");
        let config = AgentConfig::parse(&format!(
            "{text}[systemd_boot]\noptions = \"root=PARTUUID={{partuuid}} tandem.slot={{slot}} console=ttyS0\"\n"
        ))
        .unwrap();
        let boot::Config::SystemdBoot { esp, entry } = config.boot else {
            panic!("{:?}", config.boot)
        };
        assert_eq!(esp, PathBuf::from("/efi"));
        assert!(entry.options.ends_with("console=ttyS0"));
        assert_eq!(entry.linux, EntryTemplate::default().linux);
        let error = AgentConfig::parse(&format!("{text}[systemd_boot]\noptions = \"quiet\"\n"))
            .unwrap_err();
        assert!(error.contains("tandem.slot"), "{error}");
    }

    #[test]
    fn a_server_section_is_validated() {
        let with = |section: &str| AgentConfig::parse(&format!("{EXAMPLE}{section}"));
        let config = with("[server]\nurl = \"http://127.0.0.1:8080/\"\nchannel = \"stable\"\npoll_interval = \"30s\"\n").unwrap();
        let server = config.server.unwrap();
        assert_eq!(server.channel, "stable");
        assert_eq!(server.poll_interval, Duration::from_secs(30));
        let error = with("[server]\nurl = \"ftp://x\"\nchannel = \"stable\"\n").unwrap_err();
        assert!(error.contains("not an http(s) URL"), "{error}");
        let error = with("[server]\nurl = \"http://x/\"\nchannel = \"../etc\"\n").unwrap_err();
        assert!(error.contains("channel"), "{error}");
    }

    #[test]
    fn the_documented_example_parses() {
        let config = AgentConfig::parse(EXAMPLE).unwrap();
        assert_eq!(config.disk, PathBuf::from("/dev/sda"));
        assert_eq!(config.boot, boot::Config::Gpt);
        assert_eq!(config.tries, 3);
        assert!(config.verify_readback);
        assert_eq!(config.health.len(), 2);
        assert_eq!(config.health[0].timeout, Duration::from_secs(60));
        assert_eq!(
            config.health[1].probe,
            HealthProbe::Http("http://127.0.0.1:8080/healthz".into())
        );
    }

    #[test]
    fn every_key_of_the_agent_and_the_backend_is_accepted() {
        let text = EXAMPLE.replace(
            "boot = \"gpt\"",
            "boot = \"grub\"\ngrubenv = \"/efi/grubenv\"\nnode_id = \"n1\"\nbooted_slot = \"a\"\n\
             verify_readback = false\nhealth_deadline = \"5m\"\n\
             metrics_textfile = \"/var/lib/node_exporter/textfile_collector/tandem.prom\"",
        );
        let text =
            format!("{text}[server]\nurl = \"http://127.0.0.1:8080/\"\nchannel = \"stable\"\n");
        let config = AgentConfig::parse(&text).unwrap();
        assert_eq!(
            config.boot,
            boot::Config::Grub {
                grubenv: "/efi/grubenv".into()
            }
        );
        assert!(!config.verify_readback);
        assert_eq!(
            config.metrics_textfile.as_deref(),
            Some(Path::new(
                "/var/lib/node_exporter/textfile_collector/tandem.prom"
            ))
        );
        let error =
            AgentConfig::parse(&format!("{text}[systemd_boot]\ntitle = \"x\"\n")).unwrap_err();
        assert!(error.contains("systemd_boot"), "{error}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = EXAMPLE.replace("tries = 3", "tries = 3\nretries = 4");
        let error = AgentConfig::parse(&text).unwrap_err();
        assert!(error.contains("line 9"), "{error}");
        assert!(error.contains("retries"), "{error}");
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let cases = [
            ("tries = 3", "tries = 0", "between 1 and 15"),
            ("boot = \"gpt\"", "boot = \"lilo\"", "line 4"),
            ("timeout = \"60s\"", "timeout = \"soon\"", "bad duration"),
            (
                "http = \"http://127.0.0.1:8080/healthz\"",
                "http = \"ftp://x\"",
                "line 14",
            ),
            ("boot = \"gpt\"", "boot = \"grub\"", "needs grubenv"),
            (
                "tries = 3",
                "tries = 3\nmetrics_textfile = \"/var/lib/node_exporter/tandem.txt\"",
                "must name a `.prom` file",
            ),
        ];
        for (from, to, expected) in cases {
            let error = AgentConfig::parse(&EXAMPLE.replace(from, to)).unwrap_err();
            assert!(error.contains(expected), "{to}: {error}");
        }
    }

    #[test]
    fn a_health_check_with_both_probes_is_refused() {
        let text = format!("{EXAMPLE}exec = [\"true\"]\n");
        let error = AgentConfig::parse(&text).unwrap_err();
        assert!(error.contains("exactly one"), "{error}");
    }

    #[test]
    fn load_names_the_file() {
        let error = AgentConfig::load(Path::new("/nonexistent/updater.toml")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/updater.toml"));
    }
}
