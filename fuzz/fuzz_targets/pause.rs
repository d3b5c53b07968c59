//! A pause hint (`channels/NAME.pause`, unsigned). Contract: no panic; anything that is
//! not a well-formed `{"paused": false…}` pauses; a hint that parses re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::Pause;

fuzz_target!(|data: &[u8]| {
    let pause = Pause::parse(data);
    let well_formed = serde_json::from_slice::<Pause>(data).is_ok();
    assert!(
        pause.paused || well_formed,
        "only a well-formed hint un-pauses"
    );
    let json = serde_json::to_vec(&pause).expect("encodes");
    assert_eq!(Pause::parse(&json), pause);
});
