//! The server's `Range` header interpretation, for a file length taken from the first 8
//! bytes and a header value from the rest. Contract: no panic; a partial answer is a
//! non-empty range inside the file; an unsatisfiable answer only when the file is empty or
//! the range starts at or past its end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::range::{parse, RangeAnswer};

fuzz_target!(|data: &[u8]| {
    let Some((len, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let len = u64::from_le_bytes(*len) >> (len[0] % 64);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    match parse(header, len) {
        RangeAnswer::Partial(r) => {
            assert!(r.start() <= r.end(), "{header:?} {len}: {r:?}");
            assert!(*r.end() < len, "{header:?} {len}: {r:?} past the end");
        }
        RangeAnswer::Unsatisfiable => {
            let start = header
                .split_once('=')
                .and_then(|(_, s)| s.trim().split_once('-'));
            let first = start.map(|(f, _)| f.trim()).unwrap_or_default();
            let past_end = first.parse::<u64>().is_ok_and(|f| f >= len);
            assert!(
                len == 0 || past_end || first.is_empty(),
                "{header:?} {len}: 416"
            );
        }
        RangeAnswer::Full => {}
    }
});
