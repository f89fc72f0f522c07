//! Time as the daemon tells it: the wall clock in unix ms and as RFC 3339, and what a scan row
//! records about time on a board without a real-time clock (the boot id, a monotonic
//! timestamp in ms since boot, and whether the wall clock is synced to NTP).

use std::sync::OnceLock;
use std::time::Instant;

use time::OffsetDateTime;

/// The wall clock, unix ms.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 in UTC with milliseconds: `2026-11-27T21:25:23.123Z`.
pub fn rfc3339_ms(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// A unix ms time as RFC 3339 (the epoch for one out of range).
pub fn rfc3339_from_ms(ms: i64) -> String {
    rfc3339_ms(
        OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

struct Boot {
    id: String,
    uptime_ms_at: u64,
    at: Instant,
}

fn boot() -> &'static Boot {
    static BOOT: OnceLock<Boot> = OnceLock::new();
    BOOT.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let uptime_ms_at = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map(|secs| (secs * 1000.0) as u64)
            .unwrap_or(0);
        Boot {
            id,
            uptime_ms_at,
            at: Instant::now(),
        }
    })
}

/// The kernel's boot id (changes at every boot).
pub fn boot_id() -> &'static str {
    &boot().id
}

/// Milliseconds since boot (monotonic; not moved by clock corrections).
pub fn mono_ms() -> u64 {
    let b = boot();
    b.uptime_ms_at + b.at.elapsed().as_millis() as u64
}

/// Whether the wall clock is synced: systemd-timesyncd creates this file once it has synced
/// (chrony and ntpd users can create it from their own hooks). Without it, scan times are
/// flagged as taken before sync.
pub fn clock_synced() -> bool {
    std::path::Path::new("/run/systemd/timesync/synchronized").exists()
}

#[cfg(test)]
mod tests {
    #[test]
    fn boot_facts_are_read() {
        assert!(!super::boot_id().is_empty());
        let a = super::mono_ms();
        let b = super::mono_ms();
        assert!(b >= a && a > 0);
    }
}
