//! The pause hint `channels/NAME.pause`: unsigned, written by the server's admin API (or by
//! hand on a static server), honoured by agents only to *stop* installs (docs/DESIGN.md §4).
//!
//! Format: a JSON object `{"paused": true|false, "since"?: RFC 3339, "reason"?: string,
//! "automatic"?: bool}`;
//! unknown fields are ignored. A file that cannot be read as this object still pauses:
//! stopping is always the safe reading of an unsigned hint.

use serde::{Deserialize, Serialize};

/// Largest pause file read (bytes).
pub const MAX_PAUSE_FILE: u64 = 4096;

/// The content of a pause file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Whether installs stop. `false` is the same as no file.
    pub paused: bool,
    /// When it was paused (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Why, as the operator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the server paused by itself (a release over its failure budget) rather than
    /// an operator; absent means `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub automatic: bool,
}

impl Pause {
    /// Reads a pause file's bytes; unreadable content pauses (see the module docs).
    pub fn parse(bytes: &[u8]) -> Pause {
        serde_json::from_slice(bytes).unwrap_or(Pause {
            paused: true,
            since: None,
            reason: Some("unreadable pause file".into()),
            automatic: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_false_does_not_pause_and_garbage_does() {
        assert!(!Pause::parse(br#"{"paused": false}"#).paused);
        assert!(Pause::parse(br#"{"paused": true, "reason": "bad canary"}"#).paused);
        assert!(Pause::parse(b"").paused);
        assert!(Pause::parse(b"yes").paused);
        assert!(Pause::parse(br#"{"paused": "no"}"#).paused);
    }
}
