//! What an unauthenticated node sends first: the `Authorization: Tandem-Node …` value of a
//! report, lease or enrollment request (parsed before any key is looked up), and the body of
//! `POST /v1/enroll`. The first byte picks which. Contract: no panic; a credential that is
//! accepted names a key id and a nonce by their rules, is at most `MAX_HEADER_LEN` bytes,
//! and formats back to a value that parses to itself; an enrollment that is accepted names a
//! node by the node id rule, its key is 32 bytes, and its JSON parses back to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::nodeauth::{self, EnrollRequest, NodeAuth};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(auth) = NodeAuth::parse(text) {
            assert!(text.len() <= nodeauth::MAX_HEADER_LEN);
            assert!(nodeauth::is_key_id(&auth.key_id), "{auth:?}");
            assert!(nodeauth::is_nonce(&auth.nonce), "{auth:?}");
            assert_eq!(NodeAuth::parse(&auth.header()), Ok(auth));
        }
    } else if let Ok((request, key)) = EnrollRequest::parse(rest) {
        assert!(
            proto::check_node_id(&request.node_id).is_ok(),
            "{request:?}"
        );
        assert_eq!(nodeauth::public_key_bytes(&request.public_key), Some(key));
        let json = serde_json::to_vec(&request).expect("encodes");
        assert_eq!(EnrollRequest::parse(&json).ok(), Some((request, key)));
    }
});
