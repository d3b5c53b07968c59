//! A report body as `POST /v1/reports` receives it. Contract: no panic; a report that is
//! accepted validates, keeps its bounds, and its JSON parses back to the same report; and
//! whatever text a node puts through `clean_reason` is a reason the server accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::report::{clean_reason, MAX_REASON};
use proto::{Outcome, Report};

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = Report::from_json(data) {
        assert!(report.validate().is_ok());
        assert!(report.reason.as_ref().map_or(0, |r| r.chars().count()) <= MAX_REASON);
        let json = serde_json::to_vec(&report).expect("encodes");
        assert_eq!(Report::from_json(&json), Ok(report));
    }
    let cleaned = Report {
        id: None,
        node_id: "node-1".into(),
        channel: "stable".into(),
        from_version: "1.0.0".into(),
        to_version: "2.0.0".into(),
        outcome: Outcome::Failed,
        reason: Some(clean_reason(&String::from_utf8_lossy(data))),
        transfer: None,
    };
    assert_eq!(cleaned.validate(), Ok(()), "{:?}", cleaned.reason);
});
