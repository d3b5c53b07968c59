//! `root.json` (FORMAT §6.2): the keys, and per role (`root`, `release`) the trusted key ids
//! and threshold, with a version and an expiry.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::parse_lower_hex;
use crate::error::{FormatError, Section};
use crate::keys::{KeyId, PublicKey};
use crate::limits::Limits;
use crate::role::{Role, RoleKind, RoleName, Threshold};
use crate::time_util::parse_rfc3339;

/// Wire form of the signed part of `root.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §6.2).
#[allow(missing_docs)]
pub struct RootDoc {
    pub expires: String,
    #[serde(deserialize_with = "unique_map")]
    pub keys: BTreeMap<KeyId, KeyDoc>,
    pub roles: RolesDoc,
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §6.2).
#[allow(missing_docs)]
pub struct KeyDoc {
    pub keytype: String,
    pub public: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §6.2).
#[allow(missing_docs)]
pub struct RolesDoc {
    pub release: RoleDoc,
    pub root: RoleDoc,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// The wire form: each field is the JSON member of the same name (FORMAT §6.2).
#[allow(missing_docs)]
pub struct RoleDoc {
    pub keyids: Vec<KeyId>,
    pub threshold: Threshold,
}

/// A map whose keys must be unique (serde's maps silently keep the last duplicate).
fn unique_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<KeyId, KeyDoc>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<KeyId, KeyDoc>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of key id to key")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<KeyId, KeyDoc>()? {
                if out.insert(k, v).is_some() {
                    return Err(serde::de::Error::custom(format!("duplicate key id {k}")));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// The trusted key ids of one role and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleKeys {
    keyids: Vec<KeyId>,
    threshold: Threshold,
}

impl RoleKeys {
    /// The trusted key ids, sorted.
    pub fn keyids(&self) -> &[KeyId] {
        &self.keyids
    }

    /// The threshold.
    pub fn threshold(&self) -> Threshold {
        self.threshold
    }
}

/// A validated root document (not necessarily verified: see [`crate::Verified`]).
#[derive(Debug, Clone)]
pub struct Root {
    version: NonZeroU64,
    expires: OffsetDateTime,
    keys: BTreeMap<KeyId, PublicKey>,
    root: RoleKeys,
    release: RoleKeys,
    bytes: Vec<u8>,
}

impl Role for Root {
    const KIND: RoleKind = RoleKind::Root;
}

impl Root {
    /// The version (1 for the first root).
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// When this root stops being trusted.
    pub fn expires(&self) -> OffsetDateTime {
        self.expires
    }

    /// The keys of a role.
    pub fn role(&self, role: RoleName) -> &RoleKeys {
        match role {
            RoleName::Root => &self.root,
            RoleName::Release => &self.release,
        }
    }

    /// A key listed in this root.
    pub fn key(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// The whole document as it was read (what a device stores as its trusted root).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Validates the wire form; `bytes` is the whole document it came from.
    pub(crate) fn from_doc(
        doc: RootDoc,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Root, FormatError> {
        let bad =
            |field: &str, reason: String| FormatError::field(Section::Metadata, field, reason);
        let version = NonZeroU64::new(doc.version)
            .ok_or_else(|| bad("version", "must be at least 1".into()))?;
        let expires = parse_rfc3339(&doc.expires)
            .ok_or_else(|| bad("expires", "not an RFC 3339 time".into()))?;
        if doc.keys.len() > limits.max_keys {
            return Err(bad(
                "keys",
                format!("{} keys, at most {}", doc.keys.len(), limits.max_keys),
            ));
        }
        let keys = doc
            .keys
            .iter()
            .map(|(id, k)| parse_key(id, k))
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let root = role_keys("roles.root", &doc.roles.root, &keys)?;
        let release = role_keys("roles.release", &doc.roles.release, &keys)?;
        Ok(Root {
            version,
            expires,
            keys,
            root,
            release,
            bytes: bytes.to_vec(),
        })
    }
}

fn parse_key(id: &KeyId, k: &KeyDoc) -> Result<(KeyId, PublicKey), FormatError> {
    let field = format!("keys.{id}");
    if k.keytype != "ed25519" {
        return Err(FormatError::field(
            Section::Metadata,
            field,
            format!("keytype `{}` is not `ed25519`", k.keytype),
        ));
    }
    let raw = parse_lower_hex::<32>(&k.public).ok_or_else(|| {
        FormatError::field(
            Section::Metadata,
            &field,
            "public: expected 64 lowercase hex digits",
        )
    })?;
    let key = PublicKey::from_raw(&raw)
        .map_err(|e| FormatError::field(Section::Metadata, &field, e.to_string()))?;
    if key.id() != *id {
        return Err(FormatError::field(
            Section::Metadata,
            field,
            "key id is not the sha256 of the public key",
        ));
    }
    Ok((*id, key))
}

fn role_keys(
    field: &str,
    doc: &RoleDoc,
    keys: &BTreeMap<KeyId, PublicKey>,
) -> Result<RoleKeys, FormatError> {
    let bad = |reason: String| FormatError::field(Section::Metadata, field, reason);
    let mut ids = doc.keyids.clone();
    ids.sort();
    ids.dedup();
    if ids.len() != doc.keyids.len() {
        return Err(bad("a key id is listed twice".into()));
    }
    if let Some(missing) = ids.iter().find(|id| !keys.contains_key(id)) {
        return Err(bad(format!("key id {missing} is not in `keys`")));
    }
    if doc.threshold.get() as usize > ids.len() {
        return Err(bad(format!(
            "threshold {} is more than the {} keys listed",
            doc.threshold.get(),
            ids.len()
        )));
    }
    Ok(RoleKeys {
        keyids: ids,
        threshold: doc.threshold,
    })
}
