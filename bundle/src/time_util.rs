//! Time helpers: the one time form of FORMAT §1 (`2026-01-31T12:00:00Z`), written and read,
//! and `--expires` values (a duration such as `365d`, or a time in that form).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a time as RFC 3339 in UTC with whole seconds (`2026-01-31T12:00:00Z`).
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses a time in the one form FORMAT §1 allows, a profile of RFC 3339:
/// `YYYY-MM-DDThh:mm:ssZ`, exactly 20 ASCII characters, an uppercase `T` and `Z`, UTC, no
/// fraction, a real calendar date, hours 00–23, minutes and seconds 00–59 (no leap second).
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ];
    if b.len() != 20 || !separators.iter().all(|&(i, c)| b.get(i) == Some(&c)) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u16> {
        b.get(from..to)?.iter().try_fold(0u16, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u16::from(c - b'0'))
        })
    };
    let small = |from: usize| number(from, from + 2).and_then(|n| u8::try_from(n).ok());
    let month = time::Month::try_from(small(5)?).ok()?;
    let date = time::Date::from_calendar_date(i32::from(number(0, 4)?), month, small(8)?).ok()?;
    let clock = time::Time::from_hms(small(11)?, small(14)?, small(17)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

/// Parses an expiry: a duration from `now` (`30d`, `12h`, `1y 2d`) or a time in the form of
/// [`parse_rfc3339`].
pub fn parse_expiry(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!(
            "`{s}` is neither a duration like `365d` nor a time like `2027-01-31T12:00:00Z`: {e}"
        )
    })?;
    let d = time::Duration::try_from(d).map_err(|e| format!("duration `{s}` too large: {e}"))?;
    now.checked_add(d)
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| format!("`{s}` from now is past the year 9999"))
}

/// The time now, whole seconds, UTC.
pub fn now_utc() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn expiry_accepts_durations_and_timestamps() {
        let now = datetime!(2026-01-01 0:00 UTC);
        assert_eq!(
            parse_expiry("30d", now).unwrap(),
            datetime!(2026-01-31 0:00 UTC)
        );
        assert_eq!(
            parse_expiry("2027-05-01T10:00:00Z", now).unwrap(),
            datetime!(2027-05-01 10:00 UTC)
        );
        assert!(parse_expiry("soon", now).is_err());
        assert!(parse_expiry("8000y", now).is_err());
        assert_eq!(
            format_rfc3339(datetime!(2026-01-31 0:00:00.5 UTC)),
            "2026-01-31T00:00:00Z"
        );
    }

    #[test]
    fn times_follow_the_one_grammar() {
        assert_eq!(
            parse_rfc3339("2027-12-02T19:00:15Z"),
            Some(datetime!(2027-12-02 19:00:15 UTC))
        );
        assert_eq!(
            parse_rfc3339("2028-02-29T23:59:59Z"),
            Some(datetime!(2028-02-29 23:59:59 UTC))
        );
        for bad in [
            "2027-12-02 19:00:15Z",
            "2027-12-02t19:00:15Z",
            "2027-12-02T19:00:15z",
            "2027-12-02T19:00:60Z",
            "2027-12-02T24:00:00Z",
            "2027-02-29T00:00:00Z",
            "2027-13-01T00:00:00Z",
            "2027-12-02T19:00:15.5Z",
            "2027-12-02T19:00:15+00:00",
            "2027-12-02T19:00:1Z",
            "+027-12-02T19:00:15Z",
            "2027-12-02T19:00:15Z ",
            "２027-12-02T19:00:15Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
