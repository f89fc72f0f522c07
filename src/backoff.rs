//! Every retry schedule of the daemon, in one place: exponential with jitter, never ending
//! (a door keeps trying for as long as it runs). `backon` builds them; who waits how long:
//!
//! | schedule | from | doubling to | used by |
//! |---|---|---|---|
//! | [`reconnect`] | 100 ms | 5 s | a reader whose device vanished |
//! | [`probe`] | 250 ms | 5 s, jittered *inside* each step (90-100 % of it) | the offline probe of the API |
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

/// Reconnecting to the MQTT broker: 250 ms doubling to 10 s, jittered (a venue's doors do
/// not come back in step when the broker restarts).
pub fn mqtt() -> impl Iterator<Item = Duration> {
    schedule(Duration::from_millis(250), Duration::from_secs(10))
}

/// The probe's steps: 250 ms doubling to [`PROBE_CAP`].
pub const PROBE_FIRST: Duration = Duration::from_millis(250);
/// The longest the probe waits between two tries (start to start): a door is back online
/// within this (plus one round trip) of the API answering again, and a door in a long outage
/// costs the API one request per 4.5 to 5 s.
pub const PROBE_CAP: Duration = Duration::from_secs(5);

/// Probing an API that cannot be reached: 250 ms, 500 ms, 1 s, 2 s, 4 s, then 5 s, each
/// jittered within 90-100 % of its step. The jitter stays inside the cap (so the cap bounds the
/// time back online) and spreads a fleet that lost the API together.
pub fn probe() -> impl Iterator<Item = Duration> {
    probe_schedule(fastrand::f64)
}

/// [`probe`] with its randomness given (pure): `unit` returns values in [0, 1).
pub fn probe_schedule(mut unit: impl FnMut() -> f64) -> impl Iterator<Item = Duration> {
    (0u32..).map(move |n| {
        let step = PROBE_FIRST.saturating_mul(1u32 << n.min(16)).min(PROBE_CAP);
        step.mul_f64(1.0 - 0.1 * unit().clamp(0.0, 1.0))
    })
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
    fn the_probe_is_jittered_inside_its_cap() {
        let ms = |d: Duration| d.as_millis();
        // The extremes of the jitter.
        let low: Vec<u128> = probe_schedule(|| 0.999_999).take(8).map(ms).collect();
        let high: Vec<u128> = probe_schedule(|| 0.0).take(8).map(ms).collect();
        assert_eq!(high, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(low, [225, 450, 900, 1800, 3600, 4500, 4500, 4500]);
        // The real one: never past the cap, never more often than every 4.5 s once it is there,
        // and the first try within a quarter second.
        let d: Vec<Duration> = probe().take(1000).collect();
        assert!(d.iter().all(|x| *x <= PROBE_CAP), "{d:?}");
        assert!(d[5..].iter().all(|x| *x >= Duration::from_millis(4500)));
        assert!(d[0] <= Duration::from_millis(250));
        // Spread: a fleet does not come back in step.
        let distinct: std::collections::BTreeSet<u128> = d[5..].iter().map(|x| ms(*x)).collect();
        assert!(distinct.len() > 100, "{}", distinct.len());
    }

    #[test]
    fn a_long_outage_costs_the_api_one_probe_per_four_and_three_quarter_seconds_on_average() {
        let hour = Duration::from_secs(3600);
        let mut t = Duration::ZERO;
        let mut probes = 0u32;
        for d in probe() {
            t += d;
            if t > hour {
                break;
            }
            probes += 1;
        }
        // 3600 / 4.75 = 758, plus the first steps.
        assert!((740..=790).contains(&probes), "{probes}");
    }
}
