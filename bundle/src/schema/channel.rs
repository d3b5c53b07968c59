//! Channel metadata (FORMAT §6.3, docs/DESIGN.md §4): which release a channel offers, until when,
//! and to which share of nodes.

use time::OffsetDateTime;

use crate::digest::{parse_lower_hex, Sha256Digest};
use crate::error::{FormatError, Section};
use crate::role::{Role, RoleKind};
use crate::schema::names::{check_bundle_path, check_name, parse_version};
use crate::time_util::parse_rfc3339;

/// The wire form of a channel document's signed part: `proto`'s, the one shape the signer
/// writes, the agent verifies and the server shows.
pub use proto::channel::{ChannelDoc, ReleaseDoc, RolloutDoc};

/// A validated channel document (see [`crate::verify::verify_channel`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Channel {
    /// Channel name.
    pub channel: String,
    /// Strictly increasing version.
    pub version: u64,
    /// Expiry.
    pub expires: OffsetDateTime,
    /// The release offered.
    pub release: Release,
    /// The staged rollout.
    pub rollout: Rollout,
}

/// The release a channel offers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Release {
    /// Product (compatible string).
    pub product: String,
    /// Release version.
    pub version: semver::Version,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// Bundle path relative to the repository root (checked: no `..`, no absolute path).
    pub bundle: String,
    /// Exact bundle file size in bytes: fetch no more than this.
    pub size: u64,
    /// SHA-256 of the bundle's manifest region.
    pub manifest_sha256: Sha256Digest,
}

/// Staged rollout parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rollout {
    /// Share of nodes, 0–100.
    pub percent: u8,
    /// Per-channel salt (1–64 bytes).
    pub salt: Vec<u8>,
}

impl Rollout {
    /// The node's bucket, 0–99: the first 8 bytes of `sha256(salt || node_id)` as a big-endian
    /// integer, modulo 100 (FORMAT §6.3).
    pub fn bucket(&self, node_id: &[u8]) -> u8 {
        let d = Sha256Digest::of_parts(&[&self.salt, node_id]);
        let mut first = [0u8; 8];
        first.copy_from_slice(d.0.get(..8).unwrap_or(&[0; 8]));
        (u64::from_be_bytes(first) % 100) as u8
    }

    /// Whether this node is in the current wave: `bucket < percent`.
    pub fn selects(&self, node_id: &[u8]) -> bool {
        self.bucket(node_id) < self.percent
    }
}

impl Role for Channel {
    const KIND: RoleKind = RoleKind::Channel;
}

impl Channel {
    /// Checks every field of the wire form (FORMAT §6.3); says nothing about signatures.
    pub fn from_doc(doc: ChannelDoc) -> Result<Channel, FormatError> {
        let bad =
            |field: &str, reason: String| FormatError::field(Section::Metadata, field, reason);
        check_name("channel", &doc.channel).map_err(|e| bad("channel", e))?;
        let expires = parse_rfc3339(&doc.expires)
            .ok_or_else(|| bad("expires", "not an RFC 3339 time".into()))?;
        if doc.rollout.percent > 100 {
            return Err(bad(
                "rollout.percent",
                format!("{} is above 100", doc.rollout.percent),
            ));
        }
        let salt = parse_salt(&doc.rollout.salt)
            .ok_or_else(|| bad("rollout.salt", "expected 2–128 lowercase hex digits".into()))?;
        let r = doc.release;
        check_name("product", &r.product).map_err(|e| bad("release.product", e))?;
        check_bundle_path(&r.bundle).map_err(|e| bad("release.bundle", e))?;
        let version = parse_version(&r.version).map_err(|e| bad("release.version", e))?;
        let manifest_sha256 = r
            .manifest_sha256
            .parse::<Sha256Digest>()
            .map_err(|e| bad("release.manifest_sha256", e.to_string()))?;
        Ok(Channel {
            channel: doc.channel,
            version: doc.version,
            expires,
            release: Release {
                product: r.product,
                version,
                security_version: r.security_version,
                bundle: r.bundle,
                size: r.size,
                manifest_sha256,
            },
            rollout: Rollout {
                percent: doc.rollout.percent,
                salt,
            },
        })
    }
}

fn parse_salt(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() > 128 || s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(parse_lower_hex::<1>)
                .map(|b| b[0])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_bucket_is_stable_and_percent_bounds_it() {
        let r = Rollout {
            percent: 0,
            salt: vec![1, 2, 3],
        };
        assert!(!r.selects(b"node-1"));
        let all = Rollout {
            percent: 100,
            salt: vec![1, 2, 3],
        };
        assert!(all.selects(b"node-1"));
        let d = Sha256Digest::of(&[1, 2, 3, b'n', b'1']);
        let expect = u64::from_be_bytes(d.0[..8].try_into().unwrap()) % 100;
        assert_eq!(u64::from(r.bucket(b"n1")), expect);
        assert_eq!(parse_salt("00ff"), Some(vec![0, 255]));
        assert_eq!(parse_salt("0F"), None);
    }
}
