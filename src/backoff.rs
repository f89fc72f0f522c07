//! Every retry schedule of the daemon, in one place: exponential with jitter, never ending
//! (a door keeps trying for as long as it runs). `backon` builds them; who waits how long:
//!
//! | schedule | from | doubling to | used by |
//! |---|---|---|---|
//! | [`reconnect`] | 100 ms | 5 s | a reader whose device vanished |
//! | [`probe`] | 500 ms | 5 s | the offline probe of the API |
//! | [`replay`] | 1 s | 5 min | a replay batch that failed |
//! | [`enrolment`] | 1 s | 5 min | `registerDevice` until it succeeds |

use std::time::Duration;

use backon::BackoffBuilder;

/// The schedule's delays; jitter makes each up to twice as long (so a fleet that lost the
/// API together does not come back in step).
fn schedule(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Reopening a vanished reader: 100 ms doubling to 5 s.
pub fn reconnect() -> impl Iterator<Item = Duration> {
    schedule(Duration::from_millis(100), Duration::from_secs(5))
}

/// Probing an API that cannot be reached: 500 ms doubling to 5 s.
pub fn probe() -> impl Iterator<Item = Duration> {
    schedule(Duration::from_millis(500), Duration::from_secs(5))
}

/// A replay batch that failed: 1 s doubling to 5 min.
pub fn replay() -> impl Iterator<Item = Duration> {
    schedule(Duration::from_secs(1), Duration::from_secs(300))
}

/// Probing an API whose schema did not fit (a mismatch): 1 s doubling to 1 min, so a fixed
/// server is taken again within a minute without a restart.
pub fn mismatch() -> impl Iterator<Item = Duration> {
    schedule(Duration::from_secs(1), Duration::from_secs(60))
}

/// Enrolment until it succeeds: 1 s doubling to 5 min.
pub fn enrolment() -> impl Iterator<Item = Duration> {
    replay()
}

/// The longest a schedule can say, for an iterator that ended (they do not).
pub const LONGEST: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_grows_to_a_cap_and_never_ends() {
        let delays: Vec<Duration> = reconnect().take(50).collect();
        assert_eq!(delays.len(), 50);
        assert!(
            delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200),
            "{:?}",
            delays[0]
        );
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        assert!(delays[20] >= Duration::from_secs(5));
    }

    #[test]
    fn backoff_from_one_second_to_five_minutes() {
        let d: Vec<Duration> = replay().take(30).collect();
        assert!(
            d[0] >= Duration::from_secs(1) && d[0] <= Duration::from_secs(2),
            "{:?}",
            d[0]
        );
        assert!(d.iter().all(|x| *x <= Duration::from_secs(600)));
        assert!(d[25] >= Duration::from_secs(300));
    }

    #[test]
    fn the_probe_starts_at_half_a_second_and_stays_within_ten() {
        let d: Vec<Duration> = probe().take(40).collect();
        assert!(d[0] >= Duration::from_millis(500) && d[0] <= Duration::from_secs(1));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(10)), "{d:?}");
        assert!(d[30] >= Duration::from_secs(5));
    }
}
