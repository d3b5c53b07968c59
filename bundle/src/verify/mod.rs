//! Verification: the only module that builds [`Verified`] values (CONTRIBUTING.md §6). Every check of
//! FORMAT §8 runs inside the constructors below, so none can be skipped:
//! - [`trust_root`], [`verify_root_update`], [`load_chain`]: the root of trust (docs/DESIGN.md §2).
//! - [`verify_channel`], [`check_release`]: channel metadata (docs/DESIGN.md §4).
//! - [`verify_bundle`]: a bundle's manifest.
//!
//! All roles share one threshold function, [`check_threshold`], which counts distinct
//! trusted key ids over the domain-separated message of the role's kind.

mod bundle;
mod channel;
mod root;

use std::collections::BTreeSet;
use std::ops::Deref;

pub use bundle::{asset_cmdline, cmdline_asset_text, verify_bundle};
pub use channel::{check_release, verify_channel};
pub use root::parse_root_ignoring_expiry;
pub use root::{load_chain, trust_root, verify_root_update, walk_chain, ChainWalk};

use crate::error::{ThresholdReport, VerifyError};
use crate::keys::KeyId;
use crate::role::{Role, RoleKind, RoleName};
use crate::schema::{Root, Signature};

/// A value whose signatures, freshness and versions were checked. Only this module can
/// build one: the field is private and there is no `Deserialize`, `Default` or `From`.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    fn new(value: T) -> Self {
        Verified(value)
    }

    /// The inner value (which is then no longer marked verified).
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Counts the distinct key ids of `root`'s role for `T` whose signature over
/// `"tandem-v1 <kind>\n" + signed` verifies; succeeds with them if the threshold is met.
pub(crate) fn check_threshold<T: Role>(
    root: &Root,
    signed: &[u8],
    signatures: &[Signature],
) -> Result<Vec<KeyId>, VerifyError> {
    check_threshold_kind(T::KIND, root, signed, signatures)
}

fn check_threshold_kind(
    kind: RoleKind,
    root: &Root,
    signed: &[u8],
    signatures: &[Signature],
) -> Result<Vec<KeyId>, VerifyError> {
    let role = root.role(kind.signed_by());
    let message = kind.message(signed);
    let (mut valid, mut invalid, mut untrusted) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for sig in signatures {
        let key = role
            .keyids()
            .contains(&sig.keyid)
            .then(|| root.key(&sig.keyid))
            .flatten();
        match key {
            None => untrusted.insert(sig.keyid),
            Some(k) if k.verify(&message, &sig.sig) => valid.insert(sig.keyid),
            Some(_) => invalid.insert(sig.keyid),
        };
    }
    if valid.len() >= role.threshold().get() as usize {
        return Ok(valid.into_iter().collect());
    }
    let missing = role
        .keyids()
        .iter()
        .filter(|id| !valid.contains(id))
        .copied()
        .collect();
    Err(VerifyError::ThresholdNotMet(Box::new(ThresholdReport {
        kind,
        role: kind.signed_by(),
        threshold: role.threshold().get(),
        invalid: invalid.difference(&valid).copied().collect(),
        valid: valid.into_iter().collect(),
        untrusted: untrusted.into_iter().collect(),
        missing,
    })))
}

/// One signature as a root sees it, for display (`inspect --root`, `log`): never a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerStatus {
    /// The key id the signature names.
    pub keyid: KeyId,
    /// The roles of the root that trust this key (empty: the root does not list it for any).
    pub roles: Vec<RoleName>,
    /// Whether the signature verifies over the message of `kind`, with the key the root lists,
    /// else with the key the newest earlier root at hand listed; `None` when no root at hand
    /// lists the key (nothing to check it with).
    pub valid: Option<bool>,
    /// The earlier root whose key checked the signature, when the root no longer lists it.
    pub former_root: Option<u64>,
    /// The root's version.
    pub root_version: u64,
}

/// Who signed `signed` (a document's signed bytes or a bundle's manifest region), as `root`
/// sees it: for each signature its key's roles and whether it verifies as `kind`. A key the
/// root no longer lists is looked up in `earlier` roots (newest first), so a signature by a
/// rotated-out key shows as valid but untrusted rather than invalid.
pub fn signer_statuses(
    root: &Root,
    earlier: &[Verified<Root>],
    kind: RoleKind,
    signed: &[u8],
    signatures: &[Signature],
) -> Vec<SignerStatus> {
    let message = kind.message(signed);
    signatures
        .iter()
        .map(|sig| {
            let former = || {
                earlier
                    .iter()
                    .find_map(|r| Some((r.key(&sig.keyid)?, Some(r.version()))))
            };
            let key = root.key(&sig.keyid).map(|k| (k, None)).or_else(former);
            SignerStatus {
                keyid: sig.keyid,
                roles: [RoleName::Root, RoleName::Release]
                    .into_iter()
                    .filter(|role| root.role(*role).keyids().contains(&sig.keyid))
                    .collect(),
                valid: key.map(|(k, _)| k.verify(&message, &sig.sig)),
                former_root: key.and_then(|(_, v)| v),
                root_version: root.version(),
            }
        })
        .collect()
}

fn check_expiry(
    kind: RoleKind,
    expires: time::OffsetDateTime,
    now: time::OffsetDateTime,
) -> Result<(), VerifyError> {
    if now >= expires {
        return Err(VerifyError::Expired {
            kind,
            expires: crate::time_util::format_rfc3339(expires),
            now: crate::time_util::format_rfc3339(now),
        });
    }
    Ok(())
}
