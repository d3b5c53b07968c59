//! Time helpers: RFC 3339 formatting/parsing as the format uses it, and `--expires` values
//! (a duration such as `365d` or an RFC 3339 timestamp).

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

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Parses an expiry: a duration from `now` (`30d`, `12h`, `1y 2d`) or an RFC 3339 timestamp.
pub fn parse_expiry(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("`{s}` is neither a duration like `365d` nor an RFC 3339 time: {e}")
    })?;
    let d = time::Duration::try_from(d).map_err(|e| format!("duration `{s}` too large: {e}"))?;
    now.checked_add(d)
        .ok_or_else(|| format!("`{s}` from now is out of range"))
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
        assert_eq!(
            format_rfc3339(datetime!(2026-01-31 0:00:00.5 UTC)),
            "2026-01-31T00:00:00Z"
        );
    }
}
