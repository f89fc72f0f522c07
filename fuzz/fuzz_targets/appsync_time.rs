//! AppSync's date and time scalars: whatever string arrives, the parsers never panic; a
//! date-time they take formats to what the daemon sends and parses back to the same instant
//! (to the millisecond); and every RFC 3339 date-time (offset within AppSync's ±18:00, instant
//! within range in UTC) is taken, as the same instant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiketo_gate::api::scalars;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = scalars::parse_date(s);
    let _ = scalars::parse_time(s);
    let parsed = scalars::parse_datetime(s);
    if let Some(t) = parsed {
        let sent = tiketo_gate::clock::rfc3339_ms(t);
        let back = scalars::parse_datetime(&sent).expect("what the daemon sends parses");
        let ms = |t: OffsetDateTime| t.unix_timestamp_nanos().div_euclid(1_000_000);
        assert_eq!(ms(back), ms(t), "{s} -> {sent}");
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        // RFC 3339 also has leap seconds (:60) and fractions of any length, and the time
        // crate takes any character between date and time; AppSync's parser (Java's) takes
        // none of these.
        let fraction = s
            .split_once('.')
            .map(|(_, f)| f.bytes().take_while(u8::is_ascii_digit).count());
        let leap = s.get(17..19) == Some("60");
        let separator = matches!(s.as_bytes().get(10), Some(b'T' | b't'));
        if t.offset().whole_hours().abs() < 18 && fraction.unwrap_or(1) <= 9 && !leap && separator {
            // Out of range in UTC (the year 10000) is refused; the rest is the same instant.
            let utc = t.checked_to_offset(time::UtcOffset::UTC);
            assert_eq!(parsed, utc, "RFC 3339 {s:?} not taken");
        }
    }
});
