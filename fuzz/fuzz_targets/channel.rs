//! A channel document (`channels/NAME.json`): verified against the fuzz root the way the
//! agent verifies it, and read without a signature the way the publisher reads its previous
//! document. Contract: no panic; a channel that parses survives the publisher's round trip:
//! its fields written back as a channel spec, signed and verified give the same channel.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signer::metadata::{channel_signed_bytes, read_channel_unverified, sign_document, ChannelSpec};
use signer::verify::verify_channel;
use signer::{Channel, RoleKind};
use tandem_fuzz::{limits, now, trust};

fn spec(c: &Channel) -> ChannelSpec {
    ChannelSpec {
        channel: c.channel.clone(),
        version: c.version,
        expires: c.expires,
        product: c.release.product.clone(),
        release_version: c.release.version.clone(),
        security_version: c.release.security_version,
        bundle: c.release.bundle.clone(),
        size: c.release.size,
        manifest_sha256: c.release.manifest_sha256,
        percent: c.rollout.percent,
        salt: c.rollout.salt.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let t = trust();
    let _ = verify_channel(&t.root, data, "stable", 0, now(), &limits);
    let Ok(parsed) = read_channel_unverified(data, &limits) else {
        return;
    };
    let signed = channel_signed_bytes(&spec(&parsed)).expect("a parsed channel is a valid spec");
    let doc =
        sign_document(RoleKind::Channel, &signed, std::slice::from_ref(&t.key)).expect("signing");
    let verified = verify_channel(
        &t.root,
        &doc,
        &parsed.channel,
        parsed.version,
        now(),
        &limits,
    );
    match verified {
        Ok(v) => assert_eq!(*v, parsed, "round trip changed the channel"),
        Err(signer::Error::Verify(signer::VerifyError::Expired { .. })) => {}
        Err(e) => panic!("the re-signed channel is refused: {e}"),
    }
});
