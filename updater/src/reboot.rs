//! When the agent may reboot into a slot it installed (docs/DESIGN.md §6): `[reboot]` of
//! `updater.toml` — `on = "immediate"` (as soon as it is written), `"lease"` (after taking
//! a FleetLock reboot lease in its `group`) or `"window"` (inside one of its
//! `[[reboot.window]]`s, then with a lease). Windows are days of the week and a local start
//! and end time in an IANA time zone (read from the system's zoneinfo through `jiff`); an
//! end before the start crosses midnight.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// What a reboot into a new slot waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootOn {
    /// Nothing: reboot as soon as the slot is written.
    #[default]
    Immediate,
    /// A reboot lease from the server (FleetLock).
    Lease,
    /// One of the configured windows, then a lease.
    Window,
}

/// The validated `[reboot]` policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RebootPolicy {
    pub on: RebootOn,
    /// The FleetLock group (`default` when none is configured).
    pub group: String,
    pub windows: Vec<Window>,
}

impl RebootPolicy {
    /// Immediate reboots, in the default group.
    pub fn default_group() -> RebootPolicy {
        RebootPolicy {
            group: proto::fleetlock::DEFAULT_GROUP.to_owned(),
            ..RebootPolicy::default()
        }
    }

    /// Whether an install waits before its reboot (and is therefore staged, not activated,
    /// until it may reboot: a power cut while it waits boots the old slot).
    pub fn gated(&self) -> bool {
        self.on != RebootOn::Immediate
    }

    /// Whether the policy takes a lease before rebooting.
    pub fn takes_lease(&self) -> bool {
        self.gated()
    }

    /// `None` inside a window (or with no window to wait for), else when the next one
    /// opens.
    pub fn window_closed_until(&self, now: Timestamp) -> Option<Timestamp> {
        if self.on != RebootOn::Window {
            return None;
        }
        let mut next: Option<Timestamp> = None;
        for window in &self.windows {
            match window.closed_until(now) {
                None => return None,
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
            }
        }
        next
    }
}

/// What `Daemon::reboot_when_allowed` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The reboot command ran.
    Rebooted,
    /// Outside every window: staged until the next one opens.
    Window { opens: Timestamp },
    /// The group's reboot slots are all taken: asked again at the next poll.
    Lease { reason: String },
    /// The channel is paused: a staged release does not boot until it is resumed.
    Paused { reason: String },
}

/// One reboot window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The days it opens on (its start's day); every day when empty.
    pub days: Vec<Weekday>,
    pub start: Time,
    pub end: Time,
    pub time_zone: TimeZone,
}

/// A window that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("day {0:?}: expected mon, tue, wed, thu, fri, sat or sun")]
    Day(String),
    #[error("{field} = {value:?}: expected a time of day such as \"02:00\" ({reason})")]
    Time {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("time_zone = {value:?}: not an IANA time zone in the system's zoneinfo ({reason})")]
    Zone { value: String, reason: String },
    #[error("start and end are both {0}: a window must have a length")]
    Empty(String),
}

/// A weekday from its English name or its first three letters, any case.
pub fn parse_day(text: &str) -> Result<Weekday, WindowError> {
    let lower = text.to_ascii_lowercase();
    let days = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
        ("sat", Weekday::Saturday),
        ("sun", Weekday::Sunday),
    ];
    days.iter()
        .find(|(short, day)| lower == *short || lower == format!("{day:?}").to_ascii_lowercase())
        .map(|(_, day)| *day)
        .ok_or_else(|| WindowError::Day(text.to_owned()))
}

impl Window {
    /// A window from its configured strings.
    pub fn parse(
        days: &[String],
        start: &str,
        end: &str,
        time_zone: &str,
    ) -> Result<Window, WindowError> {
        let time = |field, value: &str| {
            value.parse::<Time>().map_err(|e| WindowError::Time {
                field,
                value: value.to_owned(),
                reason: e.to_string(),
            })
        };
        let (start, end) = (time("start", start)?, time("end", end)?);
        if start == end {
            return Err(WindowError::Empty(start.to_string()));
        }
        let time_zone = TimeZone::get(time_zone).map_err(|e| WindowError::Zone {
            value: time_zone.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Window {
            days: days
                .iter()
                .map(|d| parse_day(d))
                .collect::<Result<_, _>>()?,
            start,
            end,
            time_zone,
        })
    }

    /// `None` when `now` is inside the window, else when it next opens (within a week).
    pub fn closed_until(&self, now: Timestamp) -> Option<Timestamp> {
        let today = now.to_zoned(self.time_zone.clone()).date();
        let mut next = None;
        // Yesterday's opening may still be open (a window across midnight).
        for offset in -1i64..=7 {
            let Ok(day) = today.checked_add(offset.days()) else {
                continue;
            };
            if !self.days.is_empty() && !self.days.contains(&day.weekday()) {
                continue;
            }
            let end_day = if self.end > self.start {
                Ok(day)
            } else {
                day.checked_add(1.days())
            };
            let opens = day.to_datetime(self.start).to_zoned(self.time_zone.clone());
            let closes = end_day
                .map(|d| d.to_datetime(self.end))
                .and_then(|d| d.to_zoned(self.time_zone.clone()));
            let (Ok(opens), Ok(closes)) = (opens, closes) else {
                continue;
            };
            let (opens, closes) = (opens.timestamp(), closes.timestamp());
            if opens <= now && now < closes {
                return None;
            }
            if opens > now && next.is_none() {
                next = Some(opens);
            }
        }
        // Every day of the week can be named, so the eight days looked at always hold an
        // opening; were none found, asking again now is the safe answer.
        next.or(Some(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn sunday_night() -> Window {
        Window::parse(&["sun".into()], "02:00", "04:00", "Europe/Berlin").unwrap()
    }

    #[test]
    fn a_window_opens_on_its_day_in_its_time_zone() {
        let w = sunday_night();
        // 2026-12-06 is a Sunday; 02:00 in Berlin (winter) is 01:00 UTC.
        assert_eq!(w.closed_until(at("2026-12-06T01:30:00Z")), None);
        assert_eq!(
            w.closed_until(at("2026-12-06T03:00:00Z")),
            Some(at("2026-12-13T01:00:00Z"))
        );
        assert_eq!(
            w.closed_until(at("2026-12-05T12:00:00Z")),
            Some(at("2026-12-06T01:00:00Z"))
        );
    }

    #[test]
    fn a_window_across_midnight_stays_open_after_it() {
        let w = Window::parse(&[], "23:00", "01:00", "UTC").unwrap();
        assert_eq!(w.closed_until(at("2026-12-07T00:30:00Z")), None);
        assert_eq!(w.closed_until(at("2026-12-07T23:30:00Z")), None);
        assert_eq!(
            w.closed_until(at("2026-12-07T12:00:00Z")),
            Some(at("2026-12-07T23:00:00Z"))
        );
    }

    #[test]
    fn bad_windows_are_refused_with_the_reason() {
        assert!(matches!(parse_day("Sunday"), Ok(Weekday::Sunday)));
        assert!(Window::parse(&["funday".into()], "02:00", "04:00", "UTC").is_err());
        assert!(Window::parse(&[], "25:00", "04:00", "UTC").is_err());
        assert!(Window::parse(&[], "02:00", "02:00", "UTC").is_err());
        assert!(Window::parse(&[], "02:00", "04:00", "Mars/Olympus").is_err());
    }
}
