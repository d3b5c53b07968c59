//! HTTP dates (IMF-fixdate, RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`. Only this form is
//! parsed; the obsolete forms are treated as absent, which only costs a full response.
use std::time::SystemTime;

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

const IMF_FIXDATE: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// Formats a time as an HTTP date (seconds precision).
pub fn format(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    t.format(IMF_FIXDATE).unwrap_or_default()
}

/// Seconds since the Unix epoch of an HTTP date, or `None` when unparsable.
pub fn parse(s: &str) -> Option<i64> {
    let t = PrimitiveDateTime::parse(s.trim(), IMF_FIXDATE).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// Seconds since the Unix epoch (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    OffsetDateTime::from(t).unix_timestamp()
}

/// The current time as RFC 3339 (for JSON documents).
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(format(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
