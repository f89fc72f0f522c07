//! AppSync's date and time scalars as AppSync defines them (its "Scalar types" reference):
//! extended ISO 8601, which is wider than RFC 3339.
//!
//! - `AWSDate`: `YYYY-MM-DD`, with an optional offset (`1970-01-01Z`, `1970-01-01-07:00`).
//! - `AWSTime`: `hh:mm`, `hh:mm:ss` or `hh:mm:ss.f` (1 to 9 digits of fraction), with an
//!   optional offset.
//! - `AWSDateTime`: `YYYY-MM-DDThh:mm[:ss[.f]]` and a compulsory offset.
//! - an offset is `Z`, `+hh:mm` or `+hh:mm:ss` (or `-`): the seconds are AppSync's own
//!   extension, not ISO 8601's.
//!
//! Read leniently where nothing is lost by it (`t` and `z` in lower case); what the daemon
//! sends is always `YYYY-MM-DDThh:mm:ss.sssZ` (`clock::rfc3339_ms`), the form every reader
//! takes. Pure: no IO.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Parses an `AWSDateTime`.
pub fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    let (date, rest) = s.split_at_checked(10)?;
    let rest = rest.strip_prefix(['T', 't'])?;
    let date = parse_date_only(date)?;
    let (time, offset) = split_offset(rest)?;
    let offset = parse_offset(offset?)?;
    let time = parse_time_only(time)?;
    // In UTC: an instant that only exists with its offset (9999-12-31T23:00-05:00 is in the
    // year 10000 in UTC) is out of range, not a time to carry around.
    PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)
}

/// Parses an `AWSDate`; the offset, when there is one, comes with it.
pub fn parse_date(s: &str) -> Option<(Date, Option<UtcOffset>)> {
    let (date, rest) = s.split_at_checked(10)?;
    let offset = if rest.is_empty() {
        None
    } else {
        Some(parse_offset(rest)?)
    };
    Some((parse_date_only(date)?, offset))
}

/// Parses an `AWSTime`; the offset, when there is one, comes with it.
pub fn parse_time(s: &str) -> Option<(Time, Option<UtcOffset>)> {
    let (time, offset) = split_offset(s)?;
    let offset = match offset {
        None => None,
        Some(o) => Some(parse_offset(o)?),
    };
    Some((parse_time_only(time)?, offset))
}

/// Parses an `AWSTimestamp`: whole seconds since the epoch, as a number.
pub fn parse_timestamp(v: &serde_json::Value) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(v.as_i64()?).ok()
}

/// `n` ASCII digits as a number.
fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

fn parse_date_only(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&s[0..4], 4)? as i32;
    let month = Month::try_from(digits(&s[5..7], 2)? as u8).ok()?;
    let day = digits(&s[8..10], 2)? as u8;
    Date::from_calendar_date(year, month, day).ok()
}

/// Splits a time from its offset (`Z`, `+...`, `-...`), if it has one.
fn split_offset(s: &str) -> Option<(&str, Option<&str>)> {
    match s.find(['Z', 'z', '+', '-']) {
        Some(0) => None,
        Some(i) => Some((&s[..i], Some(&s[i..]))),
        None => Some((s, None)),
    }
}

fn parse_time_only(s: &str) -> Option<Time> {
    let (hms, fraction) = match s.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (s, None),
    };
    let mut parts = hms.split(':');
    let hour = digits(parts.next()?, 2)? as u8;
    let minute = digits(parts.next()?, 2)? as u8;
    let second = match parts.next() {
        Some(p) => digits(p, 2)? as u8,
        // A fraction needs seconds to belong to.
        None if fraction.is_some() => return None,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) => {
            let v = digits(f, f.len())?;
            v * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    Time::from_hms_nano(hour, minute, second, nanos).ok()
}

fn parse_offset(s: &str) -> Option<UtcOffset> {
    if s == "Z" || s == "z" {
        return Some(UtcOffset::UTC);
    }
    let sign: i8 = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut parts = s[1..].split(':');
    let h = digits(parts.next()?, 2)? as i8;
    let m = digits(parts.next()?, 2)? as i8;
    let sec = match parts.next() {
        Some(p) => digits(p, 2)? as i8,
        None => 0,
    };
    // Java's ZoneOffset (AppSync's parser) goes to ±18:00.
    if parts.next().is_some() || m > 59 || sec > 59 || h > 18 || (h == 18 && (m, sec) != (0, 0)) {
        return None;
    }
    UtcOffset::from_hms(sign * h, sign * m, sign * sec).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// AppSync's documented forms (its scalar reference and examples), and the edges.
    #[test]
    fn datetimes_in_every_form_appsync_takes() {
        let ok = [
            ("1930-01-01T16:00-07:00", datetime!(1930-01-01 23:00 UTC)),
            ("1930-01-01T16:00:00-07:00", datetime!(1930-01-01 23:00 UTC)),
            (
                "1930-01-01T16:00:00.000-07:00",
                datetime!(1930-01-01 23:00 UTC),
            ),
            (
                "1970-01-01T12:00:00.2Z",
                datetime!(1970-01-01 12:00:00.2 UTC),
            ),
            (
                "1970-01-01T12:00:00.277Z",
                datetime!(1970-01-01 12:00:00.277 UTC),
            ),
            (
                "1970-01-01T12:00:00.123456789Z",
                datetime!(1970-01-01 12:00:00.123456789 UTC),
            ),
            ("1970-01-01T12:00Z", datetime!(1970-01-01 12:00 UTC)),
            ("1970-01-01T12:00:00+05:30", datetime!(1970-01-01 06:30 UTC)),
            (
                "1970-01-01T12:00:00+05:30:10",
                datetime!(1970-01-01 06:29:50 UTC),
            ),
            (
                "1970-01-01T12:00:00-07:00:30",
                datetime!(1970-01-01 19:00:30 UTC),
            ),
            ("2099-12-31T23:59:59Z", datetime!(2099-12-31 23:59:59 UTC)),
            ("2099-12-31t23:59:59z", datetime!(2099-12-31 23:59:59 UTC)),
            ("2024-02-29T00:00:00Z", datetime!(2024-02-29 00:00 UTC)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_datetime(s), Some(want), "{s}");
        }
        let bad = [
            "1970-01-01T12:00:00",             // the offset is compulsory
            "1970-01-01",                      // a date is no date-time
            "1970-01-01 12:00:00Z",            // a space is no T
            "1970-01-01T12:00:00+0530",        // AppSync wants the colon
            "1970-01-01T12:00:00+05",          // and the minutes
            "1970-01-01T12:00:00.Z",           // a fraction has digits
            "1970-01-01T12:00:00.1234567890Z", // at most 9
            "1970-01-01T12:00.5Z",             // a fraction needs seconds
            "1970-01-01T24:00:00Z",
            "1970-01-01T12:60:00Z",
            "1970-01-01T12:00:60Z",
            "2023-02-29T00:00:00Z",
            "1970-13-01T00:00:00Z",
            "1970-1-01T00:00:00Z",
            "1970-01-01T12:00:00+25:00",
            "1970-01-01T12:00:00+05:60",
            "tomorrow",
            "",
            "1970-01-01T",
            "1970-01-01TZ",
            "١٩٧٠-01-01T12:00:00Z",
            "9999-12-31T23:00:00-05:00", // the year 10000 in UTC (found by the fuzzer)
        ];
        for s in bad {
            assert_eq!(parse_datetime(s), None, "{s}");
        }
    }

    #[test]
    fn dates_times_and_timestamps() {
        use time::macros::{date, offset, time};
        assert_eq!(
            parse_date("1970-01-01"),
            Some((date!(1970 - 01 - 01), None))
        );
        assert_eq!(
            parse_date("1970-01-01Z"),
            Some((date!(1970 - 01 - 01), Some(offset!(UTC))))
        );
        assert_eq!(
            parse_date("1970-01-01-07:00"),
            Some((date!(1970 - 01 - 01), Some(offset!(-7))))
        );
        assert_eq!(
            parse_date("1970-01-01+05:30:10"),
            Some((date!(1970 - 01 - 01), Some(offset!(+5:30:10))))
        );
        assert_eq!(parse_date("1970-01-01T00:00Z"), None);
        assert_eq!(parse_time("12:30"), Some((time!(12:30), None)));
        assert_eq!(parse_time("12:00:00.2"), Some((time!(12:00:00.2), None)));
        assert_eq!(
            parse_time("12:00:00.277+05:30"),
            Some((time!(12:00:00.277), Some(offset!(+5:30))))
        );
        assert_eq!(
            parse_time("12:00Z"),
            Some((time!(12:00), Some(offset!(UTC))))
        );
        assert_eq!(parse_time("12"), None);
        assert_eq!(parse_time("-07:00"), None);
        assert_eq!(
            parse_timestamp(&serde_json::json!(0)),
            Some(OffsetDateTime::UNIX_EPOCH)
        );
        assert_eq!(parse_timestamp(&serde_json::json!("0")), None);
        assert_eq!(parse_timestamp(&serde_json::json!(1.5)), None);
    }

    #[test]
    fn what_the_daemon_sends_parses_back_and_is_rfc3339() {
        let t = datetime!(2026-12-01 23:22:24.123456 +01:00);
        let s = crate::clock::rfc3339_ms(t);
        assert_eq!(s, "2026-12-01T22:22:24.123Z");
        assert_eq!(
            parse_datetime(&s),
            Some(datetime!(2026-12-01 22:22:24.123 UTC))
        );
        let rfc = OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339);
        assert!(rfc.is_ok());
    }
}
