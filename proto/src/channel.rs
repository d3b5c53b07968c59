//! The channel document's signed part on the wire (FORMAT §6.3): which release a channel
//! offers, until when, and to which share of nodes. The signer writes it, the agent reads it
//! after verifying its signatures (`bundle::verify`, which also checks each field: names,
//! times, versions, hex), and the server reads it for display, unverified. Only the shape
//! lives here: every member is required and no other is allowed.

use serde::{Deserialize, Serialize};

/// A channel document's signed part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDoc {
    /// The channel's name.
    pub channel: String,
    /// When nodes stop accepting the document (RFC 3339).
    pub expires: String,
    /// The release offered.
    pub release: ReleaseDoc,
    /// The staged rollout.
    pub rollout: RolloutDoc,
    /// The document's version, strictly increasing.
    pub version: u64,
}

/// The release a channel offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDoc {
    /// The bundle's path relative to the repository root.
    pub bundle: String,
    /// SHA-256 of the bundle's manifest region, 64 lowercase hex digits.
    pub manifest_sha256: String,
    /// The product (compatible string).
    pub product: String,
    /// The anti-rollback counter.
    pub security_version: u64,
    /// The bundle file's exact size in bytes.
    pub size: u64,
    /// The release version (SemVer).
    pub version: String,
}

/// Staged rollout parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutDoc {
    /// Share of nodes, 0–100.
    pub percent: u8,
    /// Per-channel salt, 2–128 lowercase hex digits.
    pub salt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"channel":"stable","expires":"2030-01-01T00:00:00Z",
        "release":{"bundle":"bundles/os-2.0.0.tandem","manifest_sha256":"00","product":"os",
        "security_version":1,"size":10,"version":"2.0.0"},
        "rollout":{"percent":30,"salt":"00"},"version":3}"#;

    #[test]
    fn the_shape_is_strict_and_round_trips() {
        let doc: ChannelDoc = serde_json::from_str(DOC).unwrap();
        assert_eq!(doc.release.version, "2.0.0");
        assert_eq!(doc.rollout.percent, 30);
        let again: ChannelDoc = serde_json::from_slice(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(again, doc);
        let extra = DOC.replace(r#""version":3}"#, r#""version":3,"extra":1}"#);
        assert!(serde_json::from_str::<ChannelDoc>(&extra).is_err());
        let missing = DOC.replace(r#""size":10,"#, "");
        assert!(serde_json::from_str::<ChannelDoc>(&missing).is_err());
    }
}
