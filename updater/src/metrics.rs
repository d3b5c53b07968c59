//! The agent's metrics for node_exporter's textfile collector (docs/updater.md, "Metrics").
//!
//! The last known values live in `metrics.json` beside the state file, written atomically
//! through the agent's [`FileStore`]. After every poll, install, boot-check and rollback the
//! whole `.prom` file is rendered from them (plus the booted slot and the security floor as
//! the operation knows them) in the Prometheus text format 0.0.4 and replaced atomically: a
//! temporary file in the same directory, fsynced, then renamed, so node_exporter never reads
//! half a file.
//!
//! The text is written by hand: a dozen gauges with one sample each need no registry, and
//! the library keeps no dependency that only this file would use.

use std::fmt::{Display, Write as _};
use std::io;
use std::path::Path;

use partitions::io::FileStore;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::SlotId;

/// The file of last known values, beside the state file.
pub const METRICS_FILE: &str = "metrics.json";
/// `metrics.json` is a few hundred bytes; anything larger is not ours.
const MAX_LEN: u64 = 64 * 1024;
/// Every metric's name starts with this.
const PREFIX: &str = "tandem_updater_";

/// The last known values of the events the agent saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub poll: Option<PollRecord>,
    pub install: Option<InstallRecord>,
    pub boot_check: Option<BootCheckRecord>,
}

/// The last poll of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollRecord {
    /// Unix seconds.
    pub time: i64,
    /// `installed`, `up-to-date`, `not-modified`, `skipped`, `reboot-pending` or `error`.
    pub decision: String,
    /// The refusal code of a skip, the error code of a failure, else empty.
    pub reason: String,
}

/// The last successful install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallRecord {
    pub duration_seconds: f64,
    /// Compressed bytes read from the bundle (over the network for a URL).
    pub bytes_fetched: u64,
    /// Bytes copied from the slots instead.
    pub bytes_reused: u64,
    /// Of those, bytes already in place in the target slot (the rest: the active slot's).
    #[serde(default)]
    pub bytes_reused_in_place: u64,
    /// The bundle's size.
    #[serde(default)]
    pub bundle_bytes: u64,
}

/// The last boot-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootCheckRecord {
    /// Unix seconds.
    pub time: i64,
    /// The `outcome` of `boot-check --json`, or `error`.
    pub outcome: String,
}

/// Something that changes the metrics, as plain values: the daemon and the agent turn
/// their outcomes into one, so this module knows neither.
pub enum Event {
    /// A poll of the daemon: what it decided (`installed`, `up-to-date`, `not-modified`,
    /// `skipped`, `reboot-pending` or `error`) and why (the refusal code of a skip, the
    /// error code of a failure, else empty).
    Poll {
        decision: &'static str,
        reason: String,
    },
    /// A successful install.
    Install(InstallRecord),
    /// A boot-check: its `outcome` as `boot-check --json` names it, or `error`.
    BootCheck { outcome: &'static str },
    /// Only the booted slot or the floor may have changed (a rollback).
    Refresh,
}

impl Recorded {
    /// The values in `fs`; absent or damaged values start afresh (metrics are no state).
    pub fn load(fs: &dyn FileStore) -> Self {
        let parsed = fs
            .read(Path::new(METRICS_FILE), MAX_LEN)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::debug!(%error, "no usable {METRICS_FILE}: starting afresh");
                Recorded::default()
            }
        }
    }

    /// Writes the values to `fs` atomically.
    pub fn save(&self, fs: &dyn FileStore) -> crate::Result<()> {
        let context = || format!("cannot write {METRICS_FILE} beside the state file");
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io(context())(io::Error::other(e)))?;
        fs.write_atomic(Path::new(METRICS_FILE), &bytes)
            .map_err(Error::io(context()))
    }

    /// Takes `event`, seen at `now` (Unix seconds), into the values.
    pub fn apply(&mut self, event: Event, now: i64) {
        match event {
            Event::Poll { decision, reason } => {
                self.poll = Some(PollRecord {
                    time: now,
                    decision: decision.into(),
                    reason,
                });
            }
            Event::Install(record) => self.install = Some(record),
            Event::BootCheck { outcome } => {
                self.boot_check = Some(BootCheckRecord {
                    time: now,
                    outcome: outcome.into(),
                });
            }
            Event::Refresh => {}
        }
    }
}

/// Everything the `.prom` file shows.
pub struct Snapshot<'a> {
    pub booted_slot: SlotId,
    /// The release in the booted slot (`factory` for an image the agent did not write).
    pub booted_version: &'a str,
    pub security_floor: u64,
    pub recorded: &'a Recorded,
}

/// The Prometheus text (format 0.0.4) of `snapshot`: one gauge family per value, each with
/// its HELP and TYPE lines; values not seen yet are left out.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = Text::default();
    let slot = snapshot.booted_slot.to_string();
    out.gauge(
        "booted_info",
        "The slot the node booted from and the release it holds.",
        &[("slot", &slot), ("version", snapshot.booted_version)],
        1,
    );
    out.gauge(
        "security_floor",
        "The lowest security version this node installs or rolls back to.",
        &[],
        snapshot.security_floor,
    );
    let recorded = snapshot.recorded;
    if let Some(poll) = &recorded.poll {
        out.gauge(
            "last_poll_timestamp_seconds",
            "When the daemon last polled its channel (Unix time).",
            &[],
            poll.time,
        );
        out.gauge(
            "last_poll_success",
            "Whether the last poll ended without an error (1) or not (0).",
            &[],
            u8::from(poll.decision != "error"),
        );
        out.gauge(
            "last_poll_info",
            "What the last poll decided, and why (refusal or error code).",
            &[("decision", &poll.decision), ("reason", &poll.reason)],
            1,
        );
    }
    if let Some(install) = &recorded.install {
        out.gauge(
            "last_install_duration_seconds",
            "How long the last successful install took.",
            &[],
            install.duration_seconds,
        );
        out.gauge(
            "last_install_bytes_fetched",
            "Compressed bytes the last install read from its bundle.",
            &[],
            install.bytes_fetched,
        );
        out.gauge(
            "last_install_bytes_reused",
            "Bytes the last install copied from the slots instead of fetching them.",
            &[],
            install.bytes_reused,
        );
        out.gauge(
            "last_install_bytes_reused_in_place",
            "Of the bytes reused, those already in place in the target slot.",
            &[],
            install.bytes_reused_in_place,
        );
        out.gauge(
            "last_install_bundle_bytes",
            "The size of the last installed bundle.",
            &[],
            install.bundle_bytes,
        );
    }
    if let Some(check) = &recorded.boot_check {
        out.gauge(
            "last_boot_check_timestamp_seconds",
            "When boot-check last ran (Unix time).",
            &[],
            check.time,
        );
        out.gauge(
            "last_boot_check_info",
            "What the last boot-check did.",
            &[("outcome", &check.outcome)],
            1,
        );
    }
    out.0
}

/// The text being rendered.
#[derive(Default)]
struct Text(String);

impl Text {
    /// A gauge family with its one sample.
    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: impl Display) {
        let text = &mut self.0;
        // Writing into a String cannot fail.
        let _ = writeln!(text, "# HELP {PREFIX}{name} {}", escape_help(help));
        let _ = writeln!(text, "# TYPE {PREFIX}{name} gauge");
        let _ = write!(text, "{PREFIX}{name}");
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(label, value)| format!("{label}=\"{}\"", escape_label(value)))
                .collect();
            let _ = write!(text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(text, " {value}");
    }
}

/// A label value as the format wants it: `\`, `"` and line feeds escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text as the format wants it: `\` and line feeds escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Replaces `path` with `text` through [`atomic_file`] (a random temporary name node_exporter
/// ignores: it reads `*.prom` only; created exclusively without following links, so a link
/// planted in a directory others can write redirects nothing), mode 0644 whatever the umask
/// (node_exporter runs as its own user), fsynced, renamed over `path`, the directory fsynced.
pub fn write_textfile(path: &Path, text: &str) -> io::Result<()> {
    atomic_file::write_bytes(
        path,
        0o644,
        atomic_file::Overwrite::Replace,
        text.as_bytes(),
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{poll_event, Poll};
    use crate::error::Refusal;
    use crate::install::WriteReport;
    use crate::installing::install_event;
    use crate::lifecycle::{boot_check_event, BootCheck};
    use partitions::io::MemFs;
    use std::time::Duration;

    fn recorded() -> Recorded {
        let mut recorded = Recorded::default();
        let skipped = Ok(Poll::Skipped(Refusal::NothingStaged));
        recorded.apply(poll_event(&skipped), 1_700_000_000);
        let report = WriteReport {
            bytes_read: 1234,
            bytes_reused: 1 << 20,
            bytes_reused_in_place: 4096,
            bundle_bytes: 99_999,
            ..WriteReport::default()
        };
        recorded.apply(
            install_event(Duration::from_millis(2500), &report),
            1_700_000_100,
        );
        let check = Ok(BootCheck::Nothing { booted: SlotId::B });
        recorded.apply(boot_check_event(&check), 1_700_000_200);
        recorded
    }

    /// A parsed sample: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// One sample line: `name{labels} value`, labels parsed with the format's escapes.
    fn parse_sample(line: &str) -> Sample {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = value.parse().expect("a number");
        let Some((name, rest)) = series.split_once('{') else {
            return (series.into(), Vec::new(), value);
        };
        let body = rest.strip_suffix('}').expect("closing brace");
        let mut labels = Vec::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated value") {
                    '"' => break,
                    '\\' => match chars.next().expect("escape") {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("bad escape \\{c} in {line}"),
                    },
                    c => value.push(c),
                }
            }
            labels.push((label, value));
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        (name.into(), labels, value)
    }

    /// Every sample of `text`, checking that each family has its HELP and TYPE first.
    fn parse(text: &str) -> Vec<Sample> {
        let mut described = Vec::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                described.push(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(described.last().map(String::as_str), Some(name));
                assert_eq!(kind, "gauge");
            } else {
                let sample = parse_sample(line);
                assert!(sample.0.starts_with(PREFIX), "{line}");
                assert_eq!(described.last(), Some(&sample.0), "no HELP for {line}");
                samples.push(sample);
            }
        }
        samples
    }

    fn value(samples: &[Sample], name: &str) -> f64 {
        let name = format!("{PREFIX}{name}");
        samples.iter().find(|s| s.0 == name).expect(&name).2
    }

    #[test]
    fn every_value_is_a_described_sample() {
        let recorded = recorded();
        let text = render(&Snapshot {
            booted_slot: SlotId::B,
            booted_version: "2.0.1",
            security_floor: 7,
            recorded: &recorded,
        });
        let samples = parse(&text);
        assert_eq!(samples.len(), 12, "{text}");
        assert!(text.contains("tandem_updater_booted_info{slot=\"b\",version=\"2.0.1\"} 1\n"));
        assert!(text.contains(
            "tandem_updater_last_poll_info{decision=\"skipped\",reason=\"nothing-staged\"} 1\n"
        ));
        assert!(text.contains("tandem_updater_last_boot_check_info{outcome=\"nothing\"} 1\n"));
        assert_eq!(value(&samples, "security_floor"), 7.0);
        assert_eq!(value(&samples, "last_poll_success"), 1.0);
        assert_eq!(value(&samples, "last_poll_timestamp_seconds"), 1.7e9);
        assert_eq!(value(&samples, "last_install_duration_seconds"), 2.5);
        assert_eq!(value(&samples, "last_install_bytes_fetched"), 1234.0);
        assert_eq!(value(&samples, "last_install_bytes_reused"), 1048576.0);
        assert_eq!(
            value(&samples, "last_install_bytes_reused_in_place"),
            4096.0
        );
        assert_eq!(value(&samples, "last_install_bundle_bytes"), 99_999.0);
        assert_eq!(
            value(&samples, "last_boot_check_timestamp_seconds"),
            1_700_000_200.0
        );
    }

    #[test]
    fn values_not_seen_yet_are_left_out() {
        let text = render(&Snapshot {
            booted_slot: SlotId::A,
            booted_version: "factory",
            security_floor: 0,
            recorded: &Recorded::default(),
        });
        let names: Vec<String> = parse(&text).into_iter().map(|s| s.0).collect();
        assert_eq!(
            names,
            [
                "tandem_updater_booted_info",
                "tandem_updater_security_floor"
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let hostile = "1.0\"} 0\nevil{a=\"\\";
        let text = render(&Snapshot {
            booted_slot: SlotId::A,
            booted_version: hostile,
            security_floor: 0,
            recorded: &Recorded::default(),
        });
        assert_eq!(text.lines().count(), 6, "{text}");
        let samples = parse(&text);
        assert_eq!(samples[0].1[1], ("version".into(), hostile.into()));
    }

    #[test]
    fn a_failed_poll_is_recorded_with_its_code() {
        let mut recorded = Recorded::default();
        let failed = Err(Error::Busy {
            holder: "pid 1".into(),
        });
        recorded.apply(poll_event(&failed), 5);
        let poll = recorded.poll.clone().unwrap();
        assert_eq!(
            (poll.decision.as_str(), poll.reason.as_str()),
            ("error", "busy")
        );
        let text = render(&Snapshot {
            booted_slot: SlotId::A,
            booted_version: "1",
            security_floor: 0,
            recorded: &recorded,
        });
        assert_eq!(value(&parse(&text), "last_poll_success"), 0.0);
    }

    #[test]
    fn values_survive_a_restart_and_damage_starts_afresh() {
        let fs = MemFs::new();
        let recorded = recorded();
        recorded.save(&fs).unwrap();
        assert_eq!(Recorded::load(&fs), recorded);
        fs.write_atomic(Path::new(METRICS_FILE), b"{not json")
            .unwrap();
        assert_eq!(Recorded::load(&fs), Recorded::default());
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tandem.prom");
        write_textfile(&path, "old\n").unwrap();
        write_textfile(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "a temporary file was left behind");
        let missing = dir.path().join("no/such/dir/tandem.prom");
        assert!(write_textfile(&missing, "x").is_err());
    }
}
