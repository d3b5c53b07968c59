//! Per-node credentials (docs/DESIGN.md §7, "Node keys"): the header a node signs its reports
//! and reboot-lease requests with, the message it signs, and the enrollment of its key.
//!
//! ```text
//! Authorization: Tandem-Node key=<key id>, ts=<unix seconds>, nonce=<32 hex>, sig=<base64 Ed25519 signature>
//! ```
//!
//! The signature covers [`signed_message`]: a domain prefix, the method, the API path (from
//! `/v1/`, so a proxy mounting the server under a prefix changes nothing), the timestamp, a
//! random nonce (Ed25519 signatures are deterministic: without it, two alike requests within
//! one second would be one signature, the second refused as a replay) and the SHA-256 of the
//! body. A key id is the hex SHA-256 of the raw 32-byte public key, as for
//! release keys. This module parses and formats; it holds no key and verifies nothing (the
//! server verifies with `ed25519-dalek`, the agent signs through its `NodeSigner`).
#![deny(clippy::indexing_slicing)]

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::names::check_node_id;

/// The `Authorization` scheme of a signed node request.
pub const SCHEME: &str = "Tandem-Node";
/// What every signed node request's message starts with: no other signature Tandem makes
/// (releases: `"tandem-v1 <kind>\n"`) can verify as one.
pub const DOMAIN: &str = "tandem-v1 node-request\n";
/// How far a request's timestamp may be from the server's clock, either way (seconds).
pub const MAX_SKEW_SECS: u64 = 300;
/// Longest `Authorization` value parsed (a well-formed one is about 190 bytes).
pub const MAX_HEADER_LEN: usize = 512;
/// Length of a key id: 64 lowercase hex digits.
pub const KEY_ID_LEN: usize = 64;
/// Length of a nonce: 32 lowercase hex digits (16 random bytes).
pub const NONCE_LEN: usize = 32;
/// Where a node enrolls its key.
pub const ENROLL_PATH: &str = "/v1/enroll";
/// Largest enrollment request body.
pub const MAX_ENROLL_BODY: usize = 4096;
/// Longest enrollment token accepted.
pub const MAX_ENROLL_TOKEN: usize = 256;

/// Why an `Authorization: Tandem-Node …` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeAuthError {
    /// Over [`MAX_HEADER_LEN`].
    #[error("the Tandem-Node credential is longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    /// Another scheme (a bearer token, say).
    #[error("not a Tandem-Node credential")]
    OtherScheme,
    /// A parameter that is not `name=value`.
    #[error("the Tandem-Node credential has a parameter that is not name=value")]
    Malformed,
    /// A parameter other than `key`, `ts`, `nonce`, `sig`.
    #[error("the Tandem-Node credential has an unknown parameter {0:?}")]
    Unknown(String),
    /// A parameter given twice.
    #[error("the Tandem-Node credential gives {0} twice")]
    Duplicate(&'static str),
    /// A parameter missing.
    #[error("the Tandem-Node credential lacks {0}")]
    Missing(&'static str),
    /// `key` is not 64 lowercase hex digits.
    #[error("the Tandem-Node key is not a key id (64 lowercase hex digits)")]
    KeyId,
    /// `ts` is not a decimal number of seconds.
    #[error("the Tandem-Node ts is not a Unix time in seconds")]
    Timestamp,
    /// `nonce` is not 32 lowercase hex digits.
    #[error("the Tandem-Node nonce is not 32 lowercase hex digits")]
    Nonce,
    /// `sig` is not the base64 of 64 bytes.
    #[error("the Tandem-Node sig is not a base64 Ed25519 signature")]
    Signature,
}

/// A parsed `Authorization: Tandem-Node …` value (nothing verified yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAuth {
    /// The signing key's id.
    pub key_id: String,
    /// When the node signed, Unix seconds.
    pub timestamp: u64,
    /// The request's random nonce (32 lowercase hex digits).
    pub nonce: String,
    /// The Ed25519 signature of [`signed_message`].
    pub signature: [u8; 64],
}

impl NodeAuth {
    /// Whether an `Authorization` value is of this scheme (case-insensitive), whatever follows.
    pub fn is_scheme(value: &str) -> bool {
        value
            .trim_start()
            .split_once(' ')
            .map_or(value.trim(), |(scheme, _)| scheme)
            .eq_ignore_ascii_case(SCHEME)
    }

    /// Parses `Tandem-Node key=…, ts=…, nonce=…, sig=…`: the four parameters each once, in
    /// any order, separated by commas with optional spaces; nothing else.
    pub fn parse(value: &str) -> Result<NodeAuth, NodeAuthError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(NodeAuthError::TooLong);
        }
        let (scheme, params) = value
            .trim()
            .split_once(' ')
            .ok_or(NodeAuthError::OtherScheme)?;
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(NodeAuthError::OtherScheme);
        }
        let (mut key, mut ts, mut nonce, mut sig) = (None, None, None, None);
        for param in params.split(',') {
            let (name, value) = param
                .trim()
                .split_once('=')
                .ok_or(NodeAuthError::Malformed)?;
            let (slot, label) = match name {
                "key" => (&mut key, "key"),
                "ts" => (&mut ts, "ts"),
                "nonce" => (&mut nonce, "nonce"),
                "sig" => (&mut sig, "sig"),
                other => return Err(NodeAuthError::Unknown(other.chars().take(32).collect())),
            };
            if slot.replace(value).is_some() {
                return Err(NodeAuthError::Duplicate(label));
            }
        }
        let key_id = key.ok_or(NodeAuthError::Missing("key"))?;
        if !is_key_id(key_id) {
            return Err(NodeAuthError::KeyId);
        }
        let ts = ts.ok_or(NodeAuthError::Missing("ts"))?;
        let timestamp = parse_seconds(ts).ok_or(NodeAuthError::Timestamp)?;
        let nonce = nonce.ok_or(NodeAuthError::Missing("nonce"))?;
        if !is_nonce(nonce) {
            return Err(NodeAuthError::Nonce);
        }
        let sig = sig.ok_or(NodeAuthError::Missing("sig"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or(NodeAuthError::Signature)?;
        Ok(NodeAuth {
            key_id: key_id.to_owned(),
            timestamp,
            nonce: nonce.to_owned(),
            signature,
        })
    }

    /// The header value: `Tandem-Node key=…, ts=…, nonce=…, sig=…`.
    pub fn header(&self) -> String {
        format!(
            "{SCHEME} key={}, ts={}, nonce={}, sig={}",
            self.key_id,
            self.timestamp,
            self.nonce,
            base64::engine::general_purpose::STANDARD.encode(self.signature)
        )
    }
}

/// A decimal number of seconds, at most 20 digits, no sign.
fn parse_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether `text` is a key id: 64 lowercase hex digits.
pub fn is_key_id(text: &str) -> bool {
    text.len() == KEY_ID_LEN && is_lower_hex(text)
}

/// Whether `text` is a nonce: 32 lowercase hex digits.
pub fn is_nonce(text: &str) -> bool {
    text.len() == NONCE_LEN && is_lower_hex(text)
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex of `bytes` (a key id from its SHA-256, a body digest).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The API path a request signs: the part from `/v1/` on, without the query (so a proxy
/// mounting the server under a prefix, or the agent's base URL having one, changes nothing).
/// `None` for a path that is no API path.
pub fn signed_path(path: &str) -> Option<&str> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.find("/v1/").and_then(|at| path.get(at..))
}

/// What a node signs a request over, besides the domain.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The method (`POST`).
    pub method: &'a str,
    /// The API path ([`signed_path`]).
    pub path: &'a str,
    /// When (Unix seconds).
    pub timestamp: u64,
    /// The request's nonce.
    pub nonce: &'a str,
    /// The SHA-256 of the body.
    pub body_sha256: &'a [u8; 32],
}

/// The message a node signs for one request: [`DOMAIN`], then the method, the API path, the
/// timestamp, the nonce and the hex SHA-256 of the body, each ended by `\n`.
pub fn signed_message(signed: &Signed<'_>) -> Vec<u8> {
    format!(
        "{DOMAIN}{}\n{}\n{}\n{}\n{}\n",
        signed.method,
        signed.path,
        signed.timestamp,
        signed.nonce,
        hex(signed.body_sha256)
    )
    .into_bytes()
}

/// The body of `POST /v1/enroll`, signed by the key it enrolls (proof of possession).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The node the key speaks for.
    pub node_id: String,
    /// The raw 32-byte Ed25519 public key, base64.
    pub public_key: String,
    /// A one-time enrollment token: with a valid one the key is approved at once; without,
    /// the enrollment waits for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl EnrollRequest {
    /// Parses and checks a request body: the node id by its rule, the key 32 bytes, the token
    /// bounded.
    pub fn parse(bytes: &[u8]) -> Result<(EnrollRequest, [u8; 32]), String> {
        let request: EnrollRequest =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid enrollment: {e}"))?;
        check_node_id(&request.node_id).map_err(|e| e.to_string())?;
        let key = public_key_bytes(&request.public_key)
            .ok_or("public_key is not the base64 of a 32-byte Ed25519 key")?;
        if request
            .token
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.len() > MAX_ENROLL_TOKEN)
        {
            return Err(format!("token must be 1 to {MAX_ENROLL_TOKEN} bytes"));
        }
        Ok((request, key))
    }
}

/// The 32 bytes of a base64 public key.
pub fn public_key_bytes(text: &str) -> Option<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}

/// A public key as [`EnrollRequest::public_key`] carries it.
pub fn public_key_text(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Where an enrolled key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Waiting for an operator.
    Pending,
    /// Speaks for its node.
    Approved,
    /// An operator refused the enrollment.
    Rejected,
    /// An operator revoked it, or approved another key for its node.
    Revoked,
}

impl KeyStatus {
    /// Every status.
    pub const ALL: [KeyStatus; 4] = [
        KeyStatus::Pending,
        KeyStatus::Approved,
        KeyStatus::Rejected,
        KeyStatus::Revoked,
    ];

    /// Its name as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Pending => "pending",
            KeyStatus::Approved => "approved",
            KeyStatus::Rejected => "rejected",
            KeyStatus::Revoked => "revoked",
        }
    }

    /// The status of a name.
    pub fn parse(name: &str) -> Option<KeyStatus> {
        KeyStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The answer of `POST /v1/enroll`: 200 when approved, 202 while pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollAnswer {
    /// The node.
    pub node_id: String,
    /// The key's id.
    pub key_id: String,
    /// Where it stands.
    pub status: KeyStatus,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> NodeAuth {
        NodeAuth {
            key_id: "ab".repeat(32),
            timestamp: 1_765_000_000,
            nonce: "0c".repeat(16),
            signature: [7; 64],
        }
    }

    #[test]
    fn a_header_round_trips_and_parameters_may_come_in_any_order() {
        let auth = sample();
        assert_eq!(NodeAuth::parse(&auth.header()), Ok(auth.clone()));
        let sig = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        let reordered = format!(
            "tandem-node sig={sig},ts=1765000000 ,  key={}, nonce={}",
            "ab".repeat(32),
            "0c".repeat(16)
        );
        assert_eq!(NodeAuth::parse(&reordered), Ok(auth));
        assert!(NodeAuth::is_scheme("TANDEM-NODE key=x"));
        assert!(!NodeAuth::is_scheme("Bearer abc"));
    }

    #[test]
    fn malformed_credentials_are_refused_by_cause() {
        let key = "ab".repeat(32);
        let sig = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        let n = "0c".repeat(16);
        let cases = [
            ("Bearer token".to_owned(), NodeAuthError::OtherScheme),
            ("Tandem-Node".to_owned(), NodeAuthError::OtherScheme),
            (
                format!("Tandem-Node key={key}, ts=1, nonce={n}"),
                NodeAuthError::Missing("sig"),
            ),
            (
                format!("Tandem-Node key={key}, ts=1, sig={sig}"),
                NodeAuthError::Missing("nonce"),
            ),
            (
                format!("Tandem-Node key={key}, ts=1, nonce=0C0c, sig={sig}"),
                NodeAuthError::Nonce,
            ),
            (
                format!("Tandem-Node key={key}, key={key}, ts=1, nonce={n}, sig={sig}"),
                NodeAuthError::Duplicate("key"),
            ),
            (
                format!(
                    "Tandem-Node key={}, ts=1, nonce={n}, sig={sig}",
                    "AB".repeat(32)
                ),
                NodeAuthError::KeyId,
            ),
            (
                format!("Tandem-Node key={key}, ts=-1, nonce={n}, sig={sig}"),
                NodeAuthError::Timestamp,
            ),
            (
                format!("Tandem-Node key={key}, ts=1, nonce={n}, sig=AAAA"),
                NodeAuthError::Signature,
            ),
            (
                format!("Tandem-Node key={key}, ts=1, nonce={n}, sig={sig}, x=1"),
                NodeAuthError::Unknown("x".into()),
            ),
            (format!("Tandem-Node key={key} ts=1"), NodeAuthError::KeyId),
            (
                format!("Tandem-Node {}", "k".repeat(600)),
                NodeAuthError::TooLong,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(NodeAuth::parse(&text), Err(want), "{text}");
        }
    }

    #[test]
    fn the_message_binds_method_path_time_and_body() {
        let digest = [1u8; 32];
        let nonce = "0c".repeat(16);
        let m = signed_message(&Signed {
            method: "POST",
            path: "/v1/reports",
            timestamp: 5,
            nonce: &nonce,
            body_sha256: &digest,
        });
        let text = String::from_utf8(m).unwrap();
        assert!(text.starts_with(DOMAIN));
        assert!(text.ends_with(&format!(
            "POST\n/v1/reports\n5\n{nonce}\n{}\n",
            hex(&digest)
        )));
        assert_eq!(signed_path("/tandem/v1/reports?x=1"), Some("/v1/reports"));
        assert_eq!(signed_path("/bundles/a"), None);
    }

    #[test]
    fn an_enrollment_checks_its_node_key_and_token() {
        let key = public_key_text(&[9; 32]);
        let ok = format!(r#"{{"node_id":"n1","public_key":"{key}"}}"#);
        let (req, bytes) = EnrollRequest::parse(ok.as_bytes()).unwrap();
        assert_eq!((req.node_id.as_str(), bytes), ("n1", [9; 32]));
        for bad in [
            format!(r#"{{"node_id":"n 1","public_key":"{key}"}}"#),
            r#"{"node_id":"n1","public_key":"AAAA"}"#.to_owned(),
            format!(r#"{{"node_id":"n1","public_key":"{key}","token":""}}"#),
            format!(r#"{{"node_id":"n1","public_key":"{key}","extra":1}}"#),
        ] {
            assert!(EnrollRequest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in ".{0,600}") {
            if let Ok(auth) = NodeAuth::parse(&text) {
                prop_assert!(is_key_id(&auth.key_id));
                prop_assert_eq!(NodeAuth::parse(&auth.header()), Ok(auth));
            }
        }

        #[test]
        fn a_mutated_header_is_refused_or_reads_as_what_it_says(
            ts in any::<u64>(),
            sig in proptest::collection::vec(any::<u8>(), 64),
            at in 0usize..200,
            byte in any::<u8>(),
        ) {
            let auth = NodeAuth {
                key_id: "0f".repeat(32),
                timestamp: ts,
                nonce: "a1".repeat(16),
                signature: <[u8; 64]>::try_from(sig).unwrap(),
            };
            let header = auth.header();
            prop_assert_eq!(NodeAuth::parse(&header), Ok(auth.clone()));
            let mut bytes = header.into_bytes();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                if let Ok(parsed) = NodeAuth::parse(&text) {
                    prop_assert_eq!(NodeAuth::parse(&parsed.header()), Ok(parsed));
                }
            }
        }
    }
}
