//! The server's request path parser, run once per request before anything is served.
//! Contract: no panic; the label is one of the fixed list (so metrics stay bounded); an API
//! route only for a path under `/v1/`, and a channel's, group's, node's or token's name a
//! segment of that very path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::route::{Api, Route};

const LABELS: &[&str] = &[
    "page",
    "metrics",
    "reports",
    "status",
    "admin",
    "lease",
    "other_api",
    "root",
    "root_probe",
    "channel",
    "bundle",
    "other",
];

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let route = Route::of(path);
    assert!(
        LABELS.contains(&route.label()),
        "{path:?}: {}",
        route.label()
    );
    if let Route::Api(api) = route {
        assert!(path.starts_with("/v1/"), "{path:?}: {api:?}");
        let segments: Vec<&str> = match api {
            Api::Channel { name, .. } | Api::RevokeToken { name } => vec![name],
            Api::FreeLease { group, node } => vec![group, node],
            _ => Vec::new(),
        };
        for name in segments {
            assert!(!name.contains('/'), "{path:?}: {name:?}");
            assert!(path.split('/').any(|s| s == name), "{path:?}: {name:?}");
        }
    }
});
