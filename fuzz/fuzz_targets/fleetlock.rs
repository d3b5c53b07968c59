//! A FleetLock request body as `POST /v1/pre-reboot` and `POST /v1/steady-state` receive it
//! (from nodes that may send no credentials at all). Contract: no panic; a request that is
//! accepted names a node by the node id rule and a group by the name rule, and its JSON
//! parses back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::fleetlock::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::parse(data) {
        let params = &request.client_params;
        assert!(proto::check_node_id(&params.id).is_ok(), "{params:?}");
        assert!(
            proto::check_name("group", &params.group).is_ok(),
            "{params:?}"
        );
        let json = serde_json::to_vec(&request).expect("encodes");
        assert_eq!(Request::parse(&json).ok(), Some(request));
    }
});
