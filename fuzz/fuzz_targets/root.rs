//! `root.json`: trusted as an initial root (structure, self-signature threshold, expiry) and
//! as the successor of the fuzz root (old and new thresholds, version + 1). Contract: no
//! panic; a root that verifies keeps its bytes, stays within `max_keys`, and every role's
//! threshold is met by keys the root lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signer::verify::{trust_root, verify_root_update};
use signer::{Limits, RoleName, Root};
use tandem_fuzz::{limits, now, trust};

fn check(root: &Root, data: &[u8], limits: &Limits) {
    assert_eq!(root.bytes(), data);
    for role in [RoleName::Root, RoleName::Release] {
        let keys = root.role(role);
        assert!(keys.keyids().len() <= limits.max_keys);
        assert!(keys.threshold().get() as usize <= keys.keyids().len());
        for id in keys.keyids() {
            assert!(root.key(id).is_some(), "role key {id:?} is in the root");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    if let Ok(root) = trust_root(data, now(), &limits) {
        check(&root, data, &limits);
    }
    if let Ok(next) = verify_root_update(&trust().root, data, now(), &limits) {
        assert_eq!(next.version(), trust().root.version() + 1);
        check(&next, data, &limits);
    }
});
