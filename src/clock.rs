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

/// Who says the wall clock is synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncSource {
    /// The kernel (`adjtimex`): an NTP daemon disciplines the clock (systemd-timesyncd,
    /// chrony, ntpsec, ntpd, gpsd with chrony...). What `timedatectl` shows as "System clock
    /// synchronized".
    Kernel,
    /// systemd-timesyncd's file `/run/systemd/timesync/synchronized` (a second source, for a
    /// kernel that cannot be asked).
    Timesyncd,
}

impl SyncSource {
    /// The words in `status`, `status --json` (`clock_sync_source`) and doctor.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncSource::Kernel => "kernel",
            SyncSource::Timesyncd => "timesyncd",
        }
    }
}

/// The kernel's word on the clock, as `adjtimex` (read-only) gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelClock {
    /// `STA_UNSYNC` in the status: the kernel itself sets it once the maximum error has grown to
    /// its limit; some NTP daemons keep it set on purpose (chrony without `rtcsync`, so the
    /// kernel leaves the RTC alone).
    pub unsync_flag: bool,
    /// The maximum error, microseconds: an NTP daemon sets it small at each update and the
    /// kernel adds 500 µs a second after that, up to 16 s (its "never synced" value).
    pub maxerror_us: i64,
}

/// The kernel's maximum error at and above which the clock is not synced (16 s: the kernel's
/// `NTP_PHASE_LIMIT`, the value it starts with and grows back to without an NTP daemon).
pub const MAXERROR_UNSYNCED_US: i64 = 16_000_000;

/// The rule (pure): synced while the maximum error is below the kernel's limit, the rule
/// systemd's `timedatectl` uses ("System clock synchronized: yes"). `STA_UNSYNC` alone does not
/// decide: the kernel sets it when the error reaches the limit, and chrony without `rtcsync`
/// keeps it set while its clock is fine.
pub fn kernel_says_synced(k: KernelClock) -> bool {
    k.maxerror_us >= 0 && k.maxerror_us < MAXERROR_UNSYNCED_US
}

/// `STA_UNSYNC` in `timex.status`.
#[cfg(target_pointer_width = "64")]
const STA_UNSYNC: i32 = 0x0040;

/// Asks the kernel (`adjtimex` with no modes: a read, allowed without `CAP_SYS_TIME`). `None`
/// when it cannot be asked (a seccomp filter without `adjtimex`, a kernel without it, a 32-bit
/// build: see Cargo.toml).
#[cfg(target_pointer_width = "64")]
pub fn kernel_clock() -> Option<KernelClock> {
    let mut tx = rtime_clock::adjtime::Timex::new();
    rtime_clock::adjtime::adjtimex(&mut tx).ok()?;
    Some(KernelClock {
        unsync_flag: tx.0.status & STA_UNSYNC != 0,
        maxerror_us: tx.0.maxerror,
    })
}

/// 32-bit builds cannot ask the kernel (see Cargo.toml): timesyncd's file alone decides.
#[cfg(not(target_pointer_width = "64"))]
pub fn kernel_clock() -> Option<KernelClock> {
    None
}

/// systemd-timesyncd's own mark, made once it has synced.
pub const TIMESYNCD_FILE: &str = "/run/systemd/timesync/synchronized";

/// Who says the clock is synced, if anyone: the kernel first, then timesyncd's file.
pub fn sync_source() -> Option<SyncSource> {
    if kernel_clock().is_some_and(kernel_says_synced) {
        return Some(SyncSource::Kernel);
    }
    std::path::Path::new(TIMESYNCD_FILE)
        .exists()
        .then_some(SyncSource::Timesyncd)
}

/// Whether the wall clock is synced ([`sync_source`]). Without it, scan times are flagged as
/// taken before sync and `rules.unsynced_clock` decides about opening hours.
pub fn clock_synced() -> bool {
    sync_source().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_counts_a_clock_as_synced_as_timedatectl_does() {
        let k = |unsync_flag, maxerror_us| KernelClock {
            unsync_flag,
            maxerror_us,
        };
        // Never disciplined (how a board boots): the limit, and the flag.
        assert!(!kernel_says_synced(k(true, 16_000_000)));
        // An NTP daemon's update: small, flag clear.
        assert!(kernel_says_synced(k(false, 1_500)));
        // chrony without rtcsync keeps the flag set; the error says synced.
        assert!(kernel_says_synced(k(true, 250_000)));
        // Nine hours without an update: the error grew to the limit.
        assert!(!kernel_says_synced(k(false, 16_000_000)));
        assert!(kernel_says_synced(k(false, 15_999_999)));
        assert!(!kernel_says_synced(k(false, -1)));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_kernel_can_be_asked_here() {
        let k = kernel_clock().expect("adjtimex (read-only) answers");
        assert!(k.maxerror_us >= 0, "{k:?}");
    }

    #[test]
    fn boot_facts_are_read() {
        assert!(!super::boot_id().is_empty());
        let a = super::mono_ms();
        let b = super::mono_ms();
        assert!(b >= a && a > 0);
    }
}
