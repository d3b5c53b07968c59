//! Roles are types (CONTRIBUTING.md §5): each signed document kind has a [`RoleKind`] constant that fixes
//! both the domain-separation prefix of its signed message and the role whose keys sign it.

use std::fmt;
use std::num::NonZeroU32;

/// The kind of a signed document; its tag starts the signed message (FORMAT §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleKind {
    /// `root.json`, signed by the root role.
    Root,
    /// Channel metadata, signed by the release role.
    Channel,
    /// A bundle manifest, signed by the release role.
    Bundle,
}

impl RoleKind {
    /// The tag in the signed message: `root`, `channel`, `bundle`.
    pub fn tag(self) -> &'static str {
        match self {
            RoleKind::Root => "root",
            RoleKind::Channel => "channel",
            RoleKind::Bundle => "bundle",
        }
    }

    /// The role whose keys sign this kind.
    pub fn signed_by(self) -> RoleName {
        match self {
            RoleKind::Root => RoleName::Root,
            RoleKind::Channel | RoleKind::Bundle => RoleName::Release,
        }
    }

    /// The signed message: `"tandem-v1 " + tag + "\n"` followed by the exact signed bytes.
    pub fn message(self, signed: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(signed.len() + 20);
        m.extend_from_slice(b"tandem-v1 ");
        m.extend_from_slice(self.tag().as_bytes());
        m.push(b'\n');
        m.extend_from_slice(signed);
        m
    }
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// A role listed in `root.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleName {
    /// Signs root documents (rotates trust).
    Root,
    /// Signs bundles and channel metadata.
    Release,
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoleName::Root => "root",
            RoleName::Release => "release",
        })
    }
}

/// A signed document type. Verification is generic over it, so a signature made for one kind
/// never verifies as another.
pub trait Role {
    /// This document's kind.
    const KIND: RoleKind;
}

/// How many distinct trusted keys must sign: never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Threshold(pub NonZeroU32);

impl Threshold {
    /// The number.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// A threshold from a number; `None` for zero.
    pub fn new(n: u32) -> Option<Self> {
        NonZeroU32::new(n).map(Threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_domain_separated() {
        assert_eq!(RoleKind::Bundle.message(b"{}"), b"tandem-v1 bundle\n{}");
        assert_ne!(
            RoleKind::Bundle.message(b"{}"),
            RoleKind::Channel.message(b"{}")
        );
        assert!(serde_json::from_str::<Threshold>("0").is_err());
        assert_eq!(serde_json::from_str::<Threshold>("2").unwrap().get(), 2);
    }
}
