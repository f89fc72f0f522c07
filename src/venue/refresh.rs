//! The background refresh (`offline.refresh_per_minute`): while the API answers and the doors
//! are quiet, the venue's cached passes whose verification is getting old are verified again
//! with `Query.pass(projectId, id)`, oldest first, by one door of the venue (the connection
//! decides which: [`crate::mqtt::venue::VenueTopics::refresher`]). A pass found voided, expired
//! or gone is shared at once (the record goes to the broker like any change), so every door
//! knows it before the network fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::lane::ApiSlot;
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// How old a verification may get before the refresh takes it again: a quarter of
/// `offline.cache_ttl`, at most 15 minutes (pure).
pub fn refresh_age(cache_ttl: Duration) -> Duration {
    (cache_ttl / 4).min(Duration::from_secs(15 * 60))
}

/// The time between two requests at `per_minute` (pure; `None`: the refresh is off).
pub fn interval(per_minute: u32) -> Option<Duration> {
    (per_minute > 0).then(|| Duration::from_millis(60_000 / per_minute as u64))
}

/// The refresh's life until the daemon stops.
pub async fn run(
    shared: Shared,
    api: ApiSlot,
    refresher: Arc<AtomicBool>,
    per_minute: u32,
    cache_ttl: Duration,
    mut shutdown: Shutdown,
) {
    let Some(every) = interval(per_minute) else {
        return;
    };
    let age = refresh_age(cache_ttl).as_millis() as i64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        if !refresher.load(Ordering::Relaxed) || shared.api.link.is_offline() {
            continue;
        }
        let Some(client) = api.current() else {
            continue;
        };
        // A guest at the door comes first.
        shared.outbox.wait_quiet(every).await;
        let before = crate::clock::now_ms() - age;
        let due = match shared.store.read(move |s| s.venue_due(before, 1)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("venue refresh: cannot read the store: {e}");
                continue;
            }
        };
        let Some((address, project, id)) = due.into_iter().next() else {
            continue;
        };
        let count = |outcome: &str| {
            crate::metrics::count_outcome(&crate::metrics::metrics().venue_refreshes, outcome)
        };
        let answer = tokio::select! {
            a = client.pass(&project, &id) => a,
            _ = shutdown.recv() => return,
        };
        match answer {
            Ok(facts) => {
                if failing {
                    failing = false;
                    tracing::info!("venue refresh: the API answers again");
                }
                count(if facts.is_some() { "ok" } else { "gone" });
                let news = match &facts {
                    None => Some("gone"),
                    Some(f) if f.voided => Some("voided"),
                    Some(f)
                        if f.expires
                            .is_some_and(|t| t <= time::OffsetDateTime::now_utc()) =>
                    {
                        Some("expired")
                    }
                    _ => None,
                };
                let now = crate::clock::now_ms();
                let stored = shared
                    .store
                    .run(move |s| s.venue_refreshed(&address, facts.as_ref(), now))
                    .await;
                match (stored, news) {
                    (Err(e), _) => tracing::warn!("venue refresh: the answer not stored: {e}"),
                    (Ok(()), Some(what)) => {
                        tracing::info!(pass = %id, "venue refresh: a cached pass is {what} now; shared with the venue's doors")
                    }
                    (Ok(()), None) => {}
                }
            }
            Err(e) => {
                count("error");
                if !failing {
                    failing = true;
                    tracing::warn!(
                        "venue refresh: Query.pass failed ({e}); trying again at the next turn"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_follows_the_settings() {
        assert_eq!(
            refresh_age(Duration::from_secs(24 * 3600)),
            Duration::from_secs(900)
        );
        assert_eq!(refresh_age(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(interval(10), Some(Duration::from_secs(6)));
        assert_eq!(interval(600), Some(Duration::from_millis(100)));
        assert_eq!(interval(0), None);
    }
}
