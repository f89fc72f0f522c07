//! Opening hours: weekly windows and closed dates, in the device's time zone. Pure: the parse
//! and the rule take the time as an argument.
//!
//! A window is `DAYS HH:MM-HH:MM`: `Mon-Fri 07:00-19:00`, `Sat,Sun 10:00-14:00`,
//! `Daily 00:00-24:00`, `Fri 22:00-02:00` (ends the next morning: the window belongs to the day
//! it starts on). The times are wall-clock times in the zone (civil time): across a
//! daylight-saving change a window is open while the clock on the wall shows a time inside it,
//! so a night window `Sat 22:00-06:00` over the change is 7 hours long in spring and 9 in
//! autumn, and a boundary inside the skipped hour is passed when the clock jumps over it. A closed date
//! (`2026-12-25`) closes the whole local day, including the tail of a window that began the
//! evening before. No windows at all: always open (closed dates still close).

use std::collections::BTreeSet;
use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Weekly windows and closed dates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hours {
    windows: Vec<Window>,
    closed: BTreeSet<Date>,
}

/// One weekly window: the days it starts on, and its start and end in minutes of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// Monday first.
    days: [bool; 7],
    start: u16,
    /// 1..=1440; at or before `start`: the window ends the next day.
    end: u16,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl Hours {
    /// Parses `rules.hours` and `rules.closed_dates`; an error names the entry and says what
    /// was expected.
    pub fn parse(windows: &[String], closed_dates: &[String]) -> Result<Hours, HoursError> {
        let windows = windows
            .iter()
            .enumerate()
            .map(|(i, w)| Window::parse(w).map_err(|why| HoursError::Window { index: i, why }))
            .collect::<Result<Vec<_>, _>>()?;
        let closed = closed_dates
            .iter()
            .enumerate()
            .map(|(i, d)| {
                parse_date(d).ok_or_else(|| HoursError::Date {
                    index: i,
                    got: d.clone(),
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(Hours { windows, closed })
    }

    /// These hours with `windows` and/or `closed_dates` given anew (a reader's own over
    /// `[rules]`'s: each part not given is kept). An error says which key it is in.
    pub fn overridden(
        &self,
        windows: Option<&[String]>,
        closed_dates: Option<&[String]>,
    ) -> Result<Hours, Vec<(&'static str, HoursError)>> {
        let mut out = self.clone();
        let mut errors = Vec::new();
        if let Some(w) = windows {
            match Hours::parse(w, &[]) {
                Ok(h) => out.windows = h.windows,
                Err(e) => errors.push(("hours", e)),
            }
        }
        if let Some(c) = closed_dates {
            match Hours::parse(&[], c) {
                Ok(h) => out.closed = h.closed,
                Err(e) => errors.push(("closed_dates", e)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Whether anything is configured (no windows and no closed dates: always open).
    pub fn is_set(&self) -> bool {
        !self.windows.is_empty() || !self.closed.is_empty()
    }

    /// Whether the door is open at the wall-clock time `local`.
    pub fn is_open_at(&self, local: DateTime) -> bool {
        if self.closed.contains(&local.date()) {
            return false;
        }
        if self.windows.is_empty() {
            return true;
        }
        let day = local.weekday().to_monday_zero_offset() as usize;
        let yesterday = (day + 6) % 7;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.windows.iter().any(|w| {
            if w.start < w.end {
                w.days[day] && w.start <= minute && minute < w.end
            } else {
                (w.days[day] && minute >= w.start) || (w.days[yesterday] && minute < w.end)
            }
        })
    }

    /// Whether the door is open at `now` in `zone`.
    pub fn is_open(&self, now: Timestamp, zone: &TimeZone) -> bool {
        self.is_open_at(zone.to_datetime(now))
    }
}

impl Window {
    fn parse(text: &str) -> Result<Window, String> {
        let expected = "expected days and a time range like \"Mon-Fri 07:00-19:00\"";
        let mut parts = text.split_whitespace();
        let (Some(days), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(expected.into());
        };
        let days = parse_days(days)?;
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| format!("\"{times}\": {expected}"))?;
        let start = parse_time(start, false)?;
        let end = parse_time(end, true)?;
        if start == end % 1440 && end != 1440 {
            return Err(format!(
                "\"{times}\" is empty (for the whole day write 00:00-24:00)"
            ));
        }
        Ok(Window { days, start, end })
    }
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if ["daily", "every", "all"].contains(&text.to_ascii_lowercase().as_str()) {
        return Ok([true; 7]);
    }
    for part in text.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (day_index(a)?, day_index(b)?),
            None => {
                let d = day_index(part)?;
                (d, d)
            }
        };
        // Mon-Fri, or a range over the week's end such as Fri-Mon.
        let mut d = a;
        loop {
            days[d] = true;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

fn day_index(text: &str) -> Result<usize, String> {
    let t = text.trim();
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(t) || (t.len() > 3 && full_day(d).eq_ignore_ascii_case(t)))
        .ok_or_else(|| {
            format!(
                "\"{t}\" is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun, a range like Mon-Fri, a list like Sat,Sun, or Daily)"
            )
        })
}

fn full_day(short: &str) -> &'static str {
    match short {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    }
}

/// `HH:MM`, 00:00 to 23:59; `24:00` too where it ends a window.
fn parse_time(text: &str, end: bool) -> Result<u16, String> {
    let bad = || format!("\"{text}\" is not a time of day (HH:MM, 24-hour)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    match (h, m) {
        (24, 0) if end => Ok(1440),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

fn parse_date(text: &str) -> Option<Date> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i16 = text[0..4].parse().ok()?;
    let m: i8 = text[5..7].parse().ok()?;
    let d: i8 = text[8..10].parse().ok()?;
    Date::new(y, m, d).ok()
}

/// What is wrong with an hours setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoursError {
    Window { index: usize, why: String },
    Date { index: usize, got: String },
}

impl fmt::Display for HoursError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoursError::Window { index, why } => write!(f, "entry {}: {why}", index + 1),
            HoursError::Date { index, got } => write!(
                f,
                "entry {}: \"{got}\" is not a date (YYYY-MM-DD, like \"2026-12-25\")",
                index + 1
            ),
        }
    }
}

/// What to do about opening hours while the clock is not synced (a Pi has no real-time
/// clock: until NTP answers after a boot its time may be the last shutdown's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsyncedClock {
    /// Decide as if there were no hours (the door works; a wrong clock cannot lock it).
    #[default]
    IgnoreHours,
    /// Reject every code as `outside_hours` until the clock is synced.
    Reject,
}

impl UnsyncedClock {
    pub fn as_str(self) -> &'static str {
        match self {
            UnsyncedClock::IgnoreHours => "ignore_hours",
            UnsyncedClock::Reject => "reject",
        }
    }
}

/// Why a code is outside the hours, or `None` when the door is open: the one rule, hours and
/// the clock's state together.
pub fn closed_now(
    hours: &Hours,
    unsynced: UnsyncedClock,
    clock_synced: bool,
    now: Timestamp,
    zone: &TimeZone,
) -> Option<&'static str> {
    if !hours.is_set() {
        return None;
    }
    if !clock_synced {
        return match unsynced {
            UnsyncedClock::IgnoreHours => None,
            UnsyncedClock::Reject => {
                Some("the clock is not synced, so the hours cannot be told (rules.unsynced_clock = \"reject\")")
            }
        };
    }
    (!hours.is_open(now, zone)).then_some("outside the opening hours")
}

/// The zone named in `device.timezone` (IANA, from the system's tz database), or the system's.
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        Some(n) => TimeZone::get(n).map_err(|e| {
            format!("\"{n}\" is not a time zone this system knows (an IANA name like \"Europe/Prague\"; {e})")
        }),
        None => Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(w: &[&str], c: &[&str]) -> Hours {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Hours::parse(&s(w), &s(c)).unwrap()
    }

    /// Central Europe's rules as a POSIX TZ string: no tz database needed for the tests.
    fn prague() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn weekly_windows() {
        let h = hours(&["Mon-Fri 07:00-19:00", "Sat 09:00-13:00"], &[]);
        let local = |s: &str| s.parse::<DateTime>().unwrap();
        // 2026-12-07 is a Monday.
        for (t, open) in [
            ("2026-12-07T06:59", false),
            ("2026-12-07T07:00", true),
            ("2026-12-07T18:59", true),
            ("2026-12-07T19:00", false),
            ("2026-12-11T12:00", true),
            ("2026-12-12T08:59", false),
            ("2026-12-12T09:00", true),
            ("2026-12-12T13:00", false),
            ("2026-12-13T12:00", false),
        ] {
            assert_eq!(h.is_open_at(local(t)), open, "{t}");
        }
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let h = hours(&["Fri,Sat 22:00-02:00"], &[]);
        let local = |s: &str| s.parse::<DateTime>().unwrap();
        for (t, open) in [
            ("2026-12-11T21:59", false), // Fri
            ("2026-12-11T22:00", true),
            ("2026-12-11T23:59", true),
            ("2026-12-12T00:00", true), // Sat, Friday's night
            ("2026-12-12T01:59", true),
            ("2026-12-12T02:00", false),
            ("2026-12-12T22:30", true),
            ("2026-12-13T01:00", true), // Sun, Saturday's night
            ("2026-12-13T22:30", false),
            ("2026-12-14T01:00", false), // Mon: Sunday has no night
        ] {
            assert_eq!(h.is_open_at(local(t)), open, "{t}");
        }
        let all_day = hours(&["Daily 00:00-24:00"], &[]);
        assert!(all_day.is_open_at(local("2026-12-13T23:59")));
        assert!(all_day.is_open_at(local("2026-12-14T00:00")));
    }

    #[test]
    fn closed_dates_close_the_whole_local_day() {
        let h = hours(&["Daily 20:00-03:00"], &["2026-12-25"]);
        let local = |s: &str| s.parse::<DateTime>().unwrap();
        assert!(h.is_open_at(local("2026-12-24T23:00")));
        assert!(
            !h.is_open_at(local("2026-12-25T01:00")),
            "the tail of the 24th's night"
        );
        assert!(!h.is_open_at(local("2026-12-25T21:00")));
        assert!(h.is_open_at(local("2026-12-26T01:00")));
        let only_dates = hours(&[], &["2026-12-25"]);
        assert!(only_dates.is_set());
        assert!(only_dates.is_open_at(local("2026-12-24T12:00")));
        assert!(!only_dates.is_open_at(local("2026-12-25T12:00")));
    }

    #[test]
    fn across_daylight_saving_changes_the_wall_clock_rules() {
        let z = prague();
        // Spring forward: 29 Mar 2026, 02:00 CET -> 03:00 CEST (01:00 UTC).
        let h = hours(&["Sun 02:30-03:30"], &[]);
        assert!(!h.is_open(at("2026-03-29T00:59:59Z"), &z), "01:59:59 CET");
        // 01:00 UTC is 03:00 CEST: the skipped 02:30 start is passed when the clock jumps.
        assert!(h.is_open(at("2026-03-29T01:00:00Z"), &z));
        assert!(h.is_open(at("2026-03-29T01:29:59Z"), &z), "03:29:59 CEST");
        assert!(!h.is_open(at("2026-03-29T01:30:00Z"), &z), "03:30 CEST");
        // A night window over the change is 7 hours long (22:00 CET to 06:00 CEST).
        let night = hours(&["Sat 22:00-06:00"], &[]);
        let minutes_open = |from: &str| {
            (0..24 * 60)
                .filter(|m| night.is_open(at(from) + jiff::SignedDuration::from_mins(*m), &z))
                .count()
        };
        assert_eq!(minutes_open("2026-03-28T12:00:00Z"), 7 * 60);
        // Fall back: 25 Oct 2026, 03:00 CEST -> 02:00 CET (01:00 UTC): 02:xx twice, open both
        // times, and the night window is 9 hours long.
        let h = hours(&["Sun 02:00-02:30"], &[]);
        assert!(h.is_open(at("2026-10-25T00:10:00Z"), &z), "02:10 CEST");
        assert!(!h.is_open(at("2026-10-25T00:40:00Z"), &z), "02:40 CEST");
        assert!(h.is_open(at("2026-10-25T01:10:00Z"), &z), "02:10 CET");
        assert_eq!(minutes_open("2026-10-24T12:00:00Z"), 9 * 60);
    }

    #[test]
    fn midnight_in_the_zone_not_in_utc() {
        let z = prague();
        let h = hours(&["Mon 00:00-01:00"], &[]);
        // Monday 7 Dec 2026 00:30 CET is Sunday 23:30 UTC.
        assert!(h.is_open(at("2026-12-06T23:30:00Z"), &z));
        assert!(!h.is_open(at("2026-12-07T00:30:00Z"), &z), "01:30 CET");
        let closed = hours(&[], &["2026-12-07"]);
        assert!(!closed.is_open(at("2026-12-06T23:30:00Z"), &z));
        assert!(closed.is_open(at("2026-12-06T22:30:00Z"), &z));
    }

    #[test]
    fn the_clock_rule() {
        let z = prague();
        let h = hours(&["Mon 07:00-08:00"], &[]);
        let noon = at("2026-12-07T11:00:00Z");
        assert_eq!(
            closed_now(&h, UnsyncedClock::IgnoreHours, true, noon, &z),
            Some("outside the opening hours")
        );
        assert_eq!(
            closed_now(&h, UnsyncedClock::IgnoreHours, false, noon, &z),
            None
        );
        assert!(closed_now(&h, UnsyncedClock::Reject, false, noon, &z)
            .unwrap()
            .contains("not synced"));
        let none = Hours::default();
        assert_eq!(
            closed_now(&none, UnsyncedClock::Reject, false, noon, &z),
            None
        );
    }

    #[test]
    fn bad_entries_say_what_was_expected() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for (w, want) in [
            ("Mon-Fri", "expected days and a time range"),
            ("Mon-Fry 07:00-19:00", "\"Fry\" is not a day"),
            ("Mon 7:00-19:00", "\"7:00\" is not a time"),
            ("Mon 07:00-25:00", "\"25:00\" is not a time"),
            ("Mon 24:00-25:00", "\"24:00\" is not a time"),
            ("Mon 07:00", "expected days and a time range"),
            ("Mon 07:00-07:00", "is empty"),
            ("Mon 07:00-19:00 extra", "expected days"),
        ] {
            let e = Hours::parse(&s(&["Sat 09:00-13:00", w]), &[]).unwrap_err();
            assert!(e.to_string().starts_with("entry 2: "), "{e}");
            assert!(e.to_string().contains(want), "{w}: {e}");
        }
        for d in ["2026-13-01", "2026-02-30", "26-12-25", "2026-12-25T00:00"] {
            let e = Hours::parse(&[], &s(&[d])).unwrap_err();
            assert!(e.to_string().contains("is not a date"), "{d}: {e}");
        }
        assert_eq!(
            hours(&["Fri-Mon 10:00-11:00"], &[]).windows[0].days,
            [true, false, false, false, true, true, true]
        );
        assert_eq!(
            hours(&["monday,Sun 10:00-11:00"], &[]).windows[0].days,
            [true, false, false, false, false, false, true]
        );
    }

    #[test]
    fn zones_by_name() {
        assert!(zone(Some("Mars/Olympus"))
            .unwrap_err()
            .contains("not a time zone"));
        assert!(zone(None).is_ok());
    }
}
