//! The report a node sends after each install step (`POST /v1/reports`). Unknown fields are
//! refused, every string is bounded and identifiers use a small alphabet, so what the server
//! stores (and later shows on its page) is what the node meant to say.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::{check_name, check_node_id, check_report_id};

/// Longest version string.
pub const MAX_VERSION: usize = 64;
/// Longest `reason`, in characters.
pub const MAX_REASON: usize = 1024;
/// Most bytes a [`Transfer`] field may count (1 TiB): far above any bundle, and low enough
/// that the server's sums over millions of reports stay within an `i64`.
pub const MAX_TRANSFER_BYTES: u64 = 1 << 40;

/// The outcome of one install step on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new slot is written and selected; the node has not yet proven it healthy.
    Installed,
    /// The new slot passed its health checks and is committed.
    Committed,
    /// The new slot failed (health or boot) and the node runs the old one again.
    RolledBack,
    /// The install failed before the flip (download, verification, write).
    Failed,
}

impl Outcome {
    /// Every outcome, in display order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Installed,
        Outcome::Committed,
        Outcome::RolledBack,
        Outcome::Failed,
    ];

    /// The wire name (`rolled-back`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
        }
    }

    /// Whether this is a failure to show with its reason.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::RolledBack | Outcome::Failed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown outcome {s:?}"))
    }
}

/// A node's report, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The agent's id for this report ([`crate::names::REPORT_ID_RULE`]), the same on every
    /// retry: the server stores one report per (node, id). Agents before it send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The node's stable identifier ([`crate::names::NODE_ID_RULE`]).
    pub node_id: String,
    /// Channel the node follows.
    pub channel: String,
    /// Version it ran before this install (`[0-9A-Za-z.+-]`, ≤ 64).
    pub from_version: String,
    /// Version it tried to install.
    pub to_version: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why (≤ 1024 characters, no control or bidi-override characters), expected for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the install fetched and reused, sent with `installed`. Agents before it send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

/// How much of a bundle an install fetched, and how much it reused from the slots instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Compressed bytes fetched from the server.
    pub bytes_fetched: u64,
    /// Bytes copied from the slots instead of fetched.
    pub bytes_reused: u64,
    /// The whole bundle's size.
    pub bundle_bytes: u64,
}

impl Transfer {
    /// Checks every count is at most [`MAX_TRANSFER_BYTES`].
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("bytes_fetched", self.bytes_fetched),
            ("bytes_reused", self.bytes_reused),
            ("bundle_bytes", self.bundle_bytes),
        ] {
            if value > MAX_TRANSFER_BYTES {
                return Err(format!(
                    "transfer.{field} is larger than {MAX_TRANSFER_BYTES} bytes"
                ));
            }
        }
        Ok(())
    }
}

impl Report {
    /// Parses and validates a report body. The error is a message for the client.
    pub fn from_json(body: &[u8]) -> Result<Report, String> {
        let report: Report =
            serde_json::from_slice(body).map_err(|e| format!("invalid report: {e}"))?;
        report.validate()?;
        Ok(report)
    }

    /// Checks every field's length and alphabet.
    pub fn validate(&self) -> Result<(), String> {
        check_node_id(&self.node_id).map_err(|e| e.to_string())?;
        if let Some(id) = &self.id {
            check_report_id(id).map_err(|e| e.to_string())?;
        }
        check_name("channel", &self.channel).map_err(|e| e.to_string())?;
        check_version("from_version", &self.from_version)?;
        check_version("to_version", &self.to_version)?;
        if let Some(reason) = &self.reason {
            if reason.chars().count() > MAX_REASON {
                return Err(format!("reason is longer than {MAX_REASON} characters"));
            }
            if let Some(c) = reason.chars().find(|&c| is_hidden_control(c)) {
                return Err(format!(
                    "reason contains the control character U+{:04X}",
                    u32::from(c)
                ));
            }
        }
        if let Some(transfer) = &self.transfer {
            transfer.validate()?;
        }
        Ok(())
    }
}

/// `reason` as a sender should put it on the wire: control and bidi-override characters
/// become spaces and it is cut to [`MAX_REASON`] characters, so a failure message quoting
/// hostile input can still be reported.
pub fn clean_reason(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if is_hidden_control(c) { ' ' } else { c })
        .take(MAX_REASON)
        .collect()
}

/// Characters that would hide or reorder text where a report is shown: C0/C1 controls
/// (newline and tab included: a reason is one line), DEL, bidi embeddings, overrides and
/// isolates, and the zero-width joiners and marks.
fn is_hidden_control(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fn check_version(field: &str, value: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-');
    if value.is_empty() || value.len() > MAX_VERSION {
        return Err(format!("{field} must be 1 to {MAX_VERSION} characters"));
    }
    if !value.chars().all(ok) {
        return Err(format!("{field} contains a character that is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_good_report() {
        let r = Report::from_json(
            br#"{"node_id":"n-1","channel":"stable","from_version":"1.0.0","to_version":"2.0.0","outcome":"rolled-back","reason":"health"}"#,
        )
        .unwrap();
        assert_eq!(r.outcome, Outcome::RolledBack);
        assert_eq!(r.reason.as_deref(), Some("health"));
        assert_eq!(r.id, None, "an agent from before report ids");
        let with_id = Report::from_json(
            br#"{"id":"n-1.42_a","node_id":"n-1","channel":"stable","from_version":"1","to_version":"2","outcome":"installed"}"#,
        )
        .unwrap();
        assert_eq!(with_id.id.as_deref(), Some("n-1.42_a"));
        let too_long = format!(
            r#"{{"id":"{}","node_id":"n","channel":"s","from_version":"1","to_version":"2","outcome":"installed"}}"#,
            "a".repeat(65)
        );
        assert!(Report::from_json(too_long.as_bytes()).is_err());
    }

    #[test]
    fn refuses_bad_reports() {
        for body in [
            r#"{"node_id":"n","channel":"stable","from_version":"1","to_version":"2","outcome":"installed","extra":1}"#,
            r#"{"node_id":"n","channel":"stable","from_version":"1","to_version":"2","outcome":"exploded"}"#,
            r#"{"node_id":"","channel":"stable","from_version":"1","to_version":"2","outcome":"installed"}"#,
            r#"{"node_id":"a b","channel":"stable","from_version":"1","to_version":"2","outcome":"installed"}"#,
            r#"{"node_id":"n","channel":"../x","from_version":"1","to_version":"2","outcome":"installed"}"#,
            r#"{"node_id":"n","channel":"stable","from_version":"1 ","to_version":"2","outcome":"installed"}"#,
            r#"{"node_id":"n","channel":"stable","to_version":"2","outcome":"installed"}"#,
            r#"{"id":"","node_id":"n","channel":"s","from_version":"1","to_version":"2","outcome":"installed"}"#,
            r#"{"id":"a/b","node_id":"n","channel":"s","from_version":"1","to_version":"2","outcome":"installed"}"#,
            r#"{"id":7,"node_id":"n","channel":"s","from_version":"1","to_version":"2","outcome":"installed"}"#,
            r#"{"node_id":"n","channel":"s","from_version":"1","to_version":"2","outcome":"failed","reason":"a\u0000b"}"#,
            r#"{"node_id":"n","channel":"s","from_version":"1","to_version":"2","outcome":"failed","reason":"evil\u202egnp.exe"}"#,
            "not json",
        ] {
            assert!(Report::from_json(body.as_bytes()).is_err(), "{body}");
        }
        let long = format!(
            r#"{{"node_id":"n","channel":"s","from_version":"1","to_version":"2","outcome":"failed","reason":"{}"}}"#,
            "x".repeat(MAX_REASON + 1)
        );
        assert!(Report::from_json(long.as_bytes()).is_err());
    }

    #[test]
    fn a_transfer_is_optional_and_bounded() {
        let base = r#""node_id":"n","channel":"s","from_version":"1","to_version":"2","outcome":"installed""#;
        let old = Report::from_json(format!("{{{base}}}").as_bytes()).unwrap();
        assert_eq!(old.transfer, None, "an agent from before transfers");
        assert!(!serde_json::to_string(&old).unwrap().contains("transfer"));
        let sent = format!(
            r#"{{{base},"transfer":{{"bytes_fetched":10,"bytes_reused":90,"bundle_bytes":100}}}}"#
        );
        let with = Report::from_json(sent.as_bytes()).unwrap();
        let expected = Transfer {
            bytes_fetched: 10,
            bytes_reused: 90,
            bundle_bytes: 100,
        };
        assert_eq!(with.transfer, Some(expected));
        let round = serde_json::to_vec(&with).unwrap();
        assert_eq!(Report::from_json(&round).unwrap(), with);
        let max = MAX_TRANSFER_BYTES;
        for (transfer, field) in [
            (
                format!(
                    r#"{{"bytes_fetched":{},"bytes_reused":0,"bundle_bytes":0}}"#,
                    max + 1
                ),
                "bytes_fetched",
            ),
            (
                format!(
                    r#"{{"bytes_fetched":0,"bytes_reused":{},"bundle_bytes":0}}"#,
                    u64::MAX
                ),
                "bytes_reused",
            ),
            (
                format!(
                    r#"{{"bytes_fetched":0,"bytes_reused":0,"bundle_bytes":{}}}"#,
                    max + 1
                ),
                "bundle_bytes",
            ),
        ] {
            let body = format!(r#"{{{base},"transfer":{transfer}}}"#);
            let error = Report::from_json(body.as_bytes()).unwrap_err();
            assert!(error.contains(field), "{error}");
        }
        let at_max = format!(
            r#"{{{base},"transfer":{{"bytes_fetched":{max},"bytes_reused":{max},"bundle_bytes":{max}}}}}"#
        );
        assert!(Report::from_json(at_max.as_bytes()).is_ok());
        for bad in [
            r#"{"bytes_fetched":1,"bytes_reused":2}"#,
            r#"{"bytes_fetched":1,"bytes_reused":2,"bundle_bytes":3,"extra":4}"#,
            r#"{"bytes_fetched":-1,"bytes_reused":2,"bundle_bytes":3}"#,
        ] {
            let body = format!(r#"{{{base},"transfer":{bad}}}"#);
            assert!(Report::from_json(body.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cleaned_reason_is_accepted() {
        let hostile = format!("line one\nline two \u{202e}\u{0}{}", "é".repeat(2000));
        let report = Report {
            id: None,
            node_id: "n".into(),
            channel: "stable".into(),
            from_version: "1".into(),
            to_version: "2".into(),
            outcome: Outcome::Failed,
            reason: Some(clean_reason(&hostile)),
            transfer: None,
        };
        assert!(report.validate().is_ok());
        assert!(report.reason.unwrap().starts_with("line one line two"));
    }
}
