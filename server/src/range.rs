//! `Range: bytes=…` parsing (RFC 9110 §14). One range only: `a-b`, `a-` and the suffix form
//! `-n`. A list of ranges (multi-range) is answered with the whole file (200), as RFC 9110
//! allows a server to ignore `Range`; so is a syntactically invalid header.
use std::ops::RangeInclusive;

/// What to send for a `Range` header against a file of a given length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Ignore the header: send the whole file (200).
    Full,
    /// Send these bytes (206).
    Partial(RangeInclusive<u64>),
    /// No byte of the file is in the range (416).
    Unsatisfiable,
}

/// Interprets a `Range` header value for a file of `len` bytes.
pub fn parse(header: &str, len: u64) -> RangeAnswer {
    let Some(spec) = strip_unit(header.trim()) else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return suffix(last, len);
    }
    let Some(start) = number(first) else {
        return RangeAnswer::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return RangeAnswer::Full,
        }
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial(start..=end.min(len - 1))
}

/// `bytes=` prefix, unit compared case-insensitively.
fn strip_unit(header: &str) -> Option<&str> {
    let (unit, spec) = header.split_once('=')?;
    unit.trim().eq_ignore_ascii_case("bytes").then_some(spec)
}

/// The last `n` bytes.
fn suffix(last: &str, len: u64) -> RangeAnswer {
    match number(last) {
        None => RangeAnswer::Full,
        Some(0) => RangeAnswer::Unsatisfiable,
        Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
        Some(n) => RangeAnswer::Partial(len.saturating_sub(n)..=len - 1),
    }
}

/// A decimal number of digits only (no sign, no spaces).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::RangeAnswer::*;
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-9", 100), Partial(0..=9));
        assert_eq!(parse("bytes=10-19", 100), Partial(10..=19));
        assert_eq!(parse("bytes=90-", 100), Partial(90..=99));
        assert_eq!(parse("bytes=-10", 100), Partial(90..=99));
        assert_eq!(parse("bytes=-1000", 100), Partial(0..=99));
        assert_eq!(parse("bytes=50-1000", 100), Partial(50..=99));
        assert_eq!(parse("Bytes = 0-0", 100), Partial(0..=0));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(parse("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse("bytes=200-300", 100), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn ignored() {
        for h in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=-",
            "bytes=1",
            "",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse(h, 100), Full, "{h}");
        }
    }
}
