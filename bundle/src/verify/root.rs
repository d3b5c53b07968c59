//! The root of trust (docs/DESIGN.md §2, FORMAT §6.2, §8.1): a trusted root is self-signed by a
//! threshold of its own root keys; a new root is accepted only if its version is exactly the
//! trusted version + 1 and a threshold of the old root keys *and* of its own root keys signed
//! it. Expiry is checked on the root that ends up trusted.

use time::OffsetDateTime;

use super::{check_expiry, check_threshold, Verified};
use crate::error::{Error, FormatError, Section, VerifyError};
use crate::limits::Limits;
use crate::role::{Role, RoleKind};
use crate::schema::{parse_envelope, Root, RootDoc};

/// Trusts `bytes` as the initial root (shipped with the device or given on the command line):
/// checks structure, its own root-role threshold and expiry.
pub fn trust_root(
    bytes: &[u8],
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Verified<Root>, Error> {
    let root = parse_root_ignoring_expiry(bytes, limits)?;
    check_expiry(RoleKind::Root, root.expires(), now)?;
    Ok(root)
}

/// A self-signed root whose expiry is NOT checked: the start of a chain walk (an old trusted
/// root may have expired while the device was off) and `root rotate`. Crate-internal.
pub fn parse_root_ignoring_expiry(bytes: &[u8], limits: &Limits) -> Result<Verified<Root>, Error> {
    let root = parse_root(bytes, limits)?;
    let env = parse_envelope(bytes, limits)?;
    check_threshold::<Root>(&root, env.signed, &env.signatures)?;
    Ok(Verified::new(root))
}

fn parse_root(bytes: &[u8], limits: &Limits) -> Result<Root, Error> {
    let env = parse_envelope(bytes, limits)?;
    let doc: RootDoc = serde_json::from_slice(env.signed).map_err(|source| FormatError::Json {
        section: Section::Metadata,
        source,
    })?;
    Ok(Root::from_doc(doc, bytes, limits)?)
}

/// Accepts `new_bytes` as the successor of `trusted` (FORMAT §8.1) and checks it has not
/// expired at `now`.
pub fn verify_root_update(
    trusted: &Verified<Root>,
    new_bytes: &[u8],
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Verified<Root>, Error> {
    let new = rotate_step(trusted, new_bytes, limits)?;
    check_expiry(RoleKind::Root, new.expires(), now)?;
    Ok(new)
}

fn rotate_step(trusted: &Root, new_bytes: &[u8], limits: &Limits) -> Result<Verified<Root>, Error> {
    let env = parse_envelope(new_bytes, limits)?;
    // 1. A threshold of the OLD root keys, over the raw bytes, before parsing them.
    check_threshold::<Root>(trusted, env.signed, &env.signatures)?;
    // 2. Parse and validate.
    let new = parse_root(new_bytes, limits)?;
    // 3. Exactly one version up.
    let expected = trusted.version() + 1;
    if new.version() != expected {
        return Err(VerifyError::RootVersion {
            trusted: trusted.version(),
            expected,
            found: new.version(),
        }
        .into());
    }
    // 4. A threshold of the NEW root's own root keys.
    check_threshold::<Root>(&new, env.signed, &env.signatures)?;
    debug_assert_eq!(Root::KIND, RoleKind::Root);
    Ok(Verified::new(new))
}

/// Walks the chain from a trusted root: fetches version N+1, N+2, … with `fetch` (which
/// returns `None` when there is no newer root) and accepts each as in
/// [`verify_root_update`]. Intermediate roots may have expired; the final one must not.
/// At most `limits.max_root_rotations` steps.
pub fn load_chain(
    trusted_bytes: &[u8],
    fetch: impl FnMut(u64) -> Result<Option<Vec<u8>>, Error>,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Verified<Root>, Error> {
    let walk = walk_chain::<Error>(trusted_bytes, fetch, |_| Ok(()), limits)?;
    if !walk.complete {
        return Err(VerifyError::TooManyRootRotations {
            max: limits.max_root_rotations,
        }
        .into());
    }
    walk.fresh(now)
}

/// Where a walk of the root chain stopped.
#[derive(Debug)]
pub struct ChainWalk {
    /// The newest root reached (its expiry not yet checked).
    pub root: Verified<Root>,
    /// `false` when the walk stopped after `max_root_rotations` steps with newer roots left:
    /// the caller keeps `root` and walks on from it later (FORMAT §8.1).
    pub complete: bool,
}

impl ChainWalk {
    /// The root reached, if it has not expired at `now`.
    pub fn fresh(self, now: OffsetDateTime) -> Result<Verified<Root>, Error> {
        check_expiry(RoleKind::Root, self.root.expires(), now)?;
        Ok(self.root)
    }
}

/// The chain walk of [`load_chain`], step by step: `on_step` sees every root as soon as it
/// verified (so a device can store it before fetching the next), and the walk stops,
/// without error, after `limits.max_root_rotations` steps.
/// `E` lets the callbacks fail with the caller's own errors.
pub fn walk_chain<E: From<Error>>(
    trusted_bytes: &[u8],
    mut fetch: impl FnMut(u64) -> Result<Option<Vec<u8>>, E>,
    mut on_step: impl FnMut(&Verified<Root>) -> Result<(), E>,
    limits: &Limits,
) -> Result<ChainWalk, E> {
    let mut root = parse_root_ignoring_expiry(trusted_bytes, limits)?;
    for _ in 0..limits.max_root_rotations {
        let Some(next) = fetch(root.version() + 1)? else {
            return Ok(ChainWalk {
                root,
                complete: true,
            });
        };
        root = rotate_step(&root, &next, limits)?;
        on_step(&root)?;
    }
    let complete = fetch(root.version() + 1)?.is_none();
    Ok(ChainWalk { root, complete })
}
