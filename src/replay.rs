//! The replay worker: sends the pending scan events, oldest first, until the outbox is empty.
//!
//! - A batch waits while a lane is deciding a scan (up to [`GIVE_WAY_AT_MOST`]): a guest at
//!   the door never shares the CPU or the connection with a replay that can wait.
//! - Batches of up to `BATCH` events in one GraphQL document with aliases (`e0`, `e1`...):
//!   mutations in one document run in order and each alias is acknowledged or failed on its
//!   own. One HTTP client of its own, so live scans keep their warm connection. The size
//!   adapts ([`BatchSize`]): small at first, towards `BATCH` while requests stay short, down
//!   when the server is slow or a request times out (AppSync ends a request at 30 s).
//! - Retry with [`crate::backoff::replay`] (1 s doubling to 5 min, jittered); `Retry-After`
//!   (429, 503) replaces the next delay; a switch back online ends the wait at once.
//! - Auth errors pause replay (nothing is dropped) and show in status; the first call the API
//!   takes again (a live scan, the keep-alive, a probe) resumes it at once.
//! - Permanent errors (validation, mapping template, a refusal of a scan admitted offline)
//!   move that row to the dead letters with the error; the rest go on. `Lambda:Unhandled` is
//!   tried `AMBIGUOUS_TRIES` times, then dead-lettered; between its tries it is set aside
//!   ([`Aside`]: 1 s, then 2 s) and the events behind it go on. A whole batch refused as invalid is
//!   retried one row at a time, so one bad row cannot hold the others back.
//! - A schema mismatch (`api_mismatch`) keeps every event pending and raises the alarm; this
//!   worker then probes with the oldest events on [`crate::backoff::mismatch`]. A batch
//!   refused over one event's value (the server names the variable) is sent again without
//!   it: if the others go through, only that event is a dead letter.

use std::time::Duration;

use time::OffsetDateTime;

use crate::api::classify::ErrorClass;
use crate::api::scan_data;
use crate::api::{AliasOutcome, ApiError, Client, ScanEventInput};
use crate::link::Mode;
use crate::state::{Caller, Shared};
use crate::store::PendingRow;

/// The most events in one request.
pub const BATCH: usize = 100;
/// The first batch's size: small, until the server's time per event is known.
pub const FIRST_BATCH: usize = 10;
/// What a batch should take: well inside AppSync's 30 s limit.
pub const BATCH_TARGET: Duration = Duration::from_secs(5);
/// Batches in a row with nothing sent and an ambiguous failure before the failures are taken
/// for a Lambda that fails for everyone (then the whole queue waits, as for an outage).
pub const AMBIGUOUS_STREAK: u32 = 3;
pub const AMBIGUOUS_TRIES: i64 = 3;
/// How many events of one batch may be set aside over a refused value before the refusal is
/// taken for a schema that changed.
pub const SET_ASIDE_AT_MOST: usize = 5;
/// How long a batch waits for the lanes to finish their scans before it goes anyway.
pub const GIVE_WAY_AT_MOST: Duration = Duration::from_millis(500);

/// What to do with each row of a batch after the server's answer (pure).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Disposition {
    pub sent: Vec<(String, Option<String>)>,
    pub dead: Vec<(String, String)>,
    pub retry: Vec<(String, String)>,
    /// Not known to have run: sent again in the next batch, without waiting or counting.
    pub unrun: Vec<String>,
    /// Failed ambiguously, with tries left: set aside for a while (with their attempts
    /// counted in `retry`) so that the events behind them go on.
    pub aside: Vec<(String, i64)>,
    /// The strongest reason to wait before the next batch.
    pub wait: Option<ErrorClass>,
}

pub fn dispose(rows: &[PendingRow], outcomes: &[AliasOutcome]) -> Disposition {
    let mut d = Disposition::default();
    for (row, outcome) in rows.iter().zip(outcomes) {
        let id = row.scan_id.clone();
        match outcome {
            AliasOutcome::Sent {
                voided: false,
                event_id,
            } => d.sent.push((id, event_id.clone())),
            AliasOutcome::Sent {
                voided: true,
                event_id,
            } => d.dead.push((
                id,
                format!(
                    "refused: the server voided scan event {}",
                    event_id.as_deref().unwrap_or("?")
                ),
            )),
            AliasOutcome::Failed {
                class: ErrorClass::Permanent,
                detail,
            } => d.dead.push((id, format!("refused: {detail}"))),
            AliasOutcome::Failed {
                class: ErrorClass::Ambiguous,
                detail,
            } => {
                if row.attempts + 1 >= AMBIGUOUS_TRIES {
                    d.dead.push((
                        id,
                        format!("gave up after {AMBIGUOUS_TRIES} tries: {detail}"),
                    ));
                } else {
                    d.retry.push((id.clone(), detail.clone()));
                    d.aside.push((id, row.attempts + 1));
                }
            }
            AliasOutcome::Failed { class, detail } => {
                d.retry.push((id, detail.clone()));
                d.wait = Some(*class);
            }
            AliasOutcome::NotRun => d.unrun.push(id),
        }
    }
    d
}

/// How many events the next batch holds (pure): starts at [`FIRST_BATCH`], grows (at most
/// doubling) towards [`BATCH`] while requests stay short of [`BATCH_TARGET`], shrinks to what
/// fits the target when the server is slow, and to a quarter after a request that timed out
/// (a 504, or no answer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSize {
    size: usize,
    /// Smoothed time per event.
    per_event: Option<Duration>,
}

impl Default for BatchSize {
    fn default() -> Self {
        BatchSize {
            size: FIRST_BATCH,
            per_event: None,
        }
    }
}

impl BatchSize {
    pub fn get(&self) -> usize {
        self.size
    }

    /// A request of `n` events took `took`; `timed_out`: it ended in a 504 or no answer.
    pub fn observe(&mut self, n: usize, took: Duration, timed_out: bool) {
        if n == 0 {
            return;
        }
        if timed_out {
            self.size = (n / 4).max(1);
            self.per_event = Some(took / n as u32);
            return;
        }
        let per = took / n as u32;
        let per = match self.per_event {
            // Weighted towards the newest: a server that slows down is followed quickly.
            Some(old) => (old + per * 3) / 4,
            None => per,
        };
        self.per_event = Some(per);
        let fits = if per.is_zero() {
            BATCH
        } else {
            (BATCH_TARGET.as_micros() / per.as_micros().max(1)) as usize
        };
        self.size = fits.min(self.size.max(n) * 2).clamp(1, BATCH);
    }
}

/// Events set aside after an ambiguous failure: not sent again before their time, so the
/// events behind them go on (their own tries still count).
#[derive(Debug, Default)]
pub struct Aside(std::collections::HashMap<String, tokio::time::Instant>);

impl Aside {
    /// Sets `id` aside after its `attempts`-th try: 1 s after the first, 2 s after the second...
    pub fn hold(&mut self, id: String, attempts: i64, now: tokio::time::Instant) {
        let wait = Duration::from_secs(1 << attempts.clamp(1, 6).saturating_sub(1));
        self.0.insert(id, now + wait);
    }

    /// Whether `id` is still set aside at `now` (and forgets the ones whose time came).
    pub fn holds(&mut self, id: &str, now: tokio::time::Instant) -> bool {
        match self.0.get(id) {
            Some(t) if *t > now => true,
            Some(_) => {
                self.0.remove(id);
                false
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// When the first one set aside is due.
    pub fn next_due(&self) -> Option<tokio::time::Instant> {
        self.0.values().min().copied()
    }
}

fn input_for(row: &PendingRow) -> ScanEventInput {
    let scanned_at = crate::api::scalars::parse_datetime(&row.scanned_at)
        .unwrap_or_else(OffsetDateTime::now_utc);
    let scan_id = row.scan_id.parse().unwrap_or_else(|_| uuid::Uuid::nil());
    ScanEventInput {
        code: row.code.clone(),
        reward_points: row.reward_points,
        // A replay is, by definition, a scan whose event did not reach the server live.
        data: scan_data(
            scan_id,
            scanned_at,
            row.clock_synced,
            true,
            &row.device,
            &row.reader,
            row.direction,
        ),
    }
}

/// Runs for the daemon's life.
pub async fn run(client: Client, shared: Shared) {
    let mut backoff = crate::backoff::replay();
    let mut link = shared.api.link.subscribe();
    let auth_back = shared.api.auth_back();
    let mut size = BatchSize::default();
    let mut one_at_a_time = false;
    let mut aside = Aside::default();
    let mut ambiguous_streak = 0;
    let mut mismatch_backoff = crate::backoff::mismatch();
    loop {
        let mut mismatch_wait = false;
        if shared.api.link.mode() == Mode::Offline {
            // The link keeper probes the API; wait for it to come back.
            let _ = link.changed().await;
            continue;
        }
        // A guest at the door goes first.
        shared.outbox.wait_quiet(GIVE_WAY_AT_MOST).await;
        // Events on their way from the live path are skipped; so is one that finished while
        // the batch was read (its row may have been read as pending just before it was marked
        // sent).
        let mark = shared.outbox.inflight_mark();
        let limit = if one_at_a_time { 1 } else { size.get() };
        let read = limit + shared.outbox.inflight_count() + aside.len();
        let rows = match shared.store.read(move |s| s.pending_batch(read, &[])).await {
            Ok(mut r) => {
                let skip = shared.outbox.skip_for_replay(mark);
                let now = tokio::time::Instant::now();
                r.retain(|row| !skip.contains(&row.scan_id) && !aside.holds(&row.scan_id, now));
                r.truncate(limit);
                r
            }
            Err(e) => {
                tracing::error!("replay cannot read the store: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if rows.is_empty() {
            if let Ok(n) = shared.store.read(|s| s.pending_count()).await {
                shared.outbox.set_pending(n);
            }
            let until = aside
                .next_due()
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(60));
            tokio::select! {
                _ = shared.outbox.replay_wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            continue;
        }
        let mut rows = rows;
        let mut inputs: Vec<ScanEventInput> = rows.iter().map(input_for).collect();
        let started = std::time::Instant::now();
        let mut result = send(&client, &rows, &inputs).await;
        observe_size(&mut size, rows.len(), started.elapsed(), &result);
        // A whole batch refused because the server would not take one event's value (AppSync
        // names the variable): one request more, without it. If the others go through, the
        // values were the fault (dead letters); if they are refused too (after at most
        // `SET_ASIDE_AT_MOST` values), the schema changed: an alarm, and nothing is dead.
        let mut refused_values = Vec::new();
        while let Err(e) = &result {
            let Some(k) = suspect(e, rows.len()) else {
                break;
            };
            if refused_values.len() >= SET_ASIDE_AT_MOST {
                break;
            }
            tracing::info!(
                scan_id = %rows[k].scan_id,
                "a replay batch was refused over one event's value ({e}); sending the others without it"
            );
            let bad = rows.remove(k);
            inputs.remove(k);
            refused_values.push((
                bad.scan_id,
                format!("refused: the server would not take its value: {}", e.detail),
            ));
            let started = std::time::Instant::now();
            result = send(&client, &rows, &inputs).await;
            observe_size(&mut size, rows.len(), started.elapsed(), &result);
        }
        if result.is_err() {
            // Not shown to be the values' fault: they stay pending.
            refused_values.clear();
        }
        shared.api.observe(Caller::Replay, &result);
        let wait = match result {
            Ok(outcomes) => {
                let mut d = dispose(&rows, &outcomes);
                d.dead.extend(refused_values);
                // One event failing ambiguously is set aside and the others go on; failures
                // with nothing sent, batch after batch, are a Lambda that fails for everyone:
                // the queue waits, as for an outage.
                if d.sent.is_empty() && !d.aside.is_empty() {
                    ambiguous_streak += 1;
                } else {
                    ambiguous_streak = 0;
                }
                let now = tokio::time::Instant::now();
                for (id, attempts) in d.aside.drain(..) {
                    tracing::info!(scan_id = %id, attempts, "a scan event failed ambiguously; set aside while the others go on");
                    aside.hold(id, attempts, now);
                }
                if ambiguous_streak >= AMBIGUOUS_STREAK {
                    d.wait.get_or_insert(ErrorClass::Ambiguous);
                }

                for (id, err) in &d.dead {
                    tracing::warn!(scan_id = %id, "scan event moved to the dead letters: {err}");
                }
                tracing::info!(
                    sent = d.sent.len(),
                    dead = d.dead.len(),
                    retry = d.retry.len() + d.unrun.len(),
                    "replayed a batch"
                );
                let wait = d.wait;
                let (sent, dead, retry) = (d.sent, d.dead, d.retry);
                match shared
                    .store
                    .run(move |s| s.apply_replay(&sent, &dead, &retry))
                    .await
                {
                    // Durable before the next batch, with the scans' connection free meanwhile.
                    Ok(()) => {
                        if let Err(e) = shared.store.sync_wal().await {
                            tracing::error!("replay cannot make its marks durable: {e}");
                        }
                    }
                    Err(e) => tracing::error!("replay cannot update the store: {e}"),
                }
                if let Ok(n) = shared.store.read(|s| s.pending_count()).await {
                    shared.outbox.set_pending(n);
                }
                shared.outbox.synced();
                one_at_a_time = false;
                wait.map(|class| ApiError::new(class, None, String::new()))
            }
            Err(e) => match e.class {
                ErrorClass::Mismatch => {
                    // `ApiState::observe` raised the alarm; the events stay pending and this
                    // worker is the probe: it tries again on its schedule.
                    mismatch_wait = true;
                    Some(e)
                }
                ErrorClass::Permanent | ErrorClass::Ambiguous if rows.len() > 1 => {
                    tracing::warn!(
                        "a replay batch was refused as a whole ({e}); sending one at a time"
                    );
                    one_at_a_time = true;
                    None
                }
                ErrorClass::Permanent | ErrorClass::Ambiguous => {
                    let row = &rows[0];
                    let d = dispose(
                        rows.as_slice(),
                        &[AliasOutcome::Failed {
                            class: e.class,
                            detail: e.to_string(),
                        }],
                    );
                    if !d.dead.is_empty() {
                        tracing::warn!(scan_id = %row.scan_id, "scan event moved to the dead letters: {e}");
                    }
                    let now = tokio::time::Instant::now();
                    for (id, attempts) in d.aside {
                        aside.hold(id, attempts, now);
                    }
                    let (sent, dead, retry) = (d.sent, d.dead, d.retry);
                    if shared
                        .store
                        .run(move |s| s.apply_replay(&sent, &dead, &retry))
                        .await
                        .is_ok()
                    {
                        if let Err(e) = shared.store.sync_wal().await {
                            tracing::error!("replay cannot make its marks durable: {e}");
                        }
                    }
                    one_at_a_time = false;
                    d.wait
                        .map(|class| ApiError::new(class, None, String::new()))
                }
                ErrorClass::Auth => Some(e),
                ErrorClass::Retryable { .. } => {
                    tracing::info!(pending = rows.len(), "replay will retry: {e}");
                    Some(e)
                }
            },
        };
        if !mismatch_wait {
            mismatch_backoff = crate::backoff::mismatch();
        }
        match wait {
            None => backoff = crate::backoff::replay(),
            Some(e) => {
                let next = if mismatch_wait {
                    mismatch_backoff.next().unwrap_or(crate::backoff::LONGEST)
                } else {
                    backoff.next().unwrap_or(crate::backoff::LONGEST)
                };
                let delay = match e.class {
                    ErrorClass::Retryable {
                        retry_after: Some(ra),
                    } => ra,
                    ErrorClass::Auth => Duration::from_secs(300),
                    _ => next,
                };
                let was_offline = shared.api.link.mode() == Mode::Offline;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    // Resume at once when the link comes back (not on a Retry-After wait).
                    _ = wait_online(&mut link), if was_offline || !matches!(e.class, ErrorClass::Retryable { retry_after: Some(_) }) && e.class != ErrorClass::Auth => {}
                    // Paused by an auth error: resume as soon as any call is taken again (a
                    // live scan, the keep-alive, a probe: `ApiState::observe`); by a
                    // mismatch: when the schema is seen to fit again.
                    _ = auth_back.notified(), if matches!(e.class, ErrorClass::Auth | ErrorClass::Mismatch) => {}
                }
            }
        }
    }
}

/// What a request says of the server's time per event: an answer does, and so does a
/// request that timed out (a 504, or none); a request that failed otherwise (refused, a
/// connection that would not open) does not.
fn observe_size(
    size: &mut BatchSize,
    n: usize,
    took: Duration,
    result: &Result<Vec<AliasOutcome>, ApiError>,
) {
    match result {
        Ok(_) => size.observe(n, took, false),
        Err(e) if e.status == Some(504) || e.detail.starts_with("timed out") => {
            size.observe(n, took, true)
        }
        Err(_) => {}
    }
}

/// One batch, its error's text scrubbed of the batch's pass codes (a server message may
/// quote a variable's value).
async fn send(
    client: &Client,
    rows: &[PendingRow],
    inputs: &[ScanEventInput],
) -> Result<Vec<AliasOutcome>, ApiError> {
    client
        .create_scan_events(inputs)
        .await
        .map_err(|e| rows.iter().fold(e, |e, r| e.scrub(&r.code)))
}

/// The row of a batch of `n` whose value the server refused, when a mismatch names one of
/// the batch's variables (`Variable 'i3' has an invalid value ...`) and there are others to
/// send without it (pure).
pub fn suspect(e: &ApiError, n: usize) -> Option<usize> {
    if e.class != ErrorClass::Mismatch || n < 2 {
        return None;
    }
    let k: usize = e.variable.as_deref()?.strip_prefix('i')?.parse().ok()?;
    (k < n).then_some(k)
}

async fn wait_online(rx: &mut tokio::sync::watch::Receiver<Mode>) {
    loop {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if *rx.borrow() == Mode::Online {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, attempts: i64) -> PendingRow {
        PendingRow {
            seq: 1,
            scan_id: id.into(),
            code: "C".into(),
            online: false,
            scanned_at: "2026-11-27T12:00:00.000Z".into(),
            clock_synced: false,
            device: "d".into(),
            reward_points: None,
            attempts,
            reader: "reader".into(),
            direction: crate::decision::Direction::Entry,
        }
    }

    #[test]
    fn dispositions() {
        let rows = [
            row("a", 0),
            row("b", 0),
            row("c", 0),
            row("d", 2),
            row("e", 0),
            row("f", 0),
        ];
        let outcomes = [
            AliasOutcome::Sent {
                event_id: Some("ea".into()),
                voided: false,
            },
            AliasOutcome::Sent {
                event_id: Some("eb".into()),
                voided: true,
            },
            AliasOutcome::Failed {
                class: ErrorClass::Permanent,
                detail: "MappingTemplate: x".into(),
            },
            AliasOutcome::Failed {
                class: ErrorClass::Ambiguous,
                detail: "Lambda:Unhandled".into(),
            },
            AliasOutcome::Failed {
                class: ErrorClass::Ambiguous,
                detail: "Lambda:Unhandled".into(),
            },
            AliasOutcome::Failed {
                class: ErrorClass::Retryable { retry_after: None },
                detail: "Throttling".into(),
            },
        ];
        let d = dispose(&rows, &outcomes);
        assert_eq!(d.sent, vec![("a".to_string(), Some("ea".to_string()))]);
        assert_eq!(
            d.dead.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
            ["b", "c", "d"]
        );
        assert!(d.dead[1].1.contains("MappingTemplate"));
        assert_eq!(
            d.retry.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
            ["e", "f"]
        );
        assert_eq!(d.wait, Some(ErrorClass::Retryable { retry_after: None }));
        assert_eq!(
            d.aside,
            vec![("e".to_string(), 1)],
            "set aside, not waited for"
        );
        // An ambiguous failure alone does not make the batch wait.
        let d = dispose(&rows[4..5], &outcomes[4..5]);
        assert_eq!(d.wait, None);
        assert_eq!(d.aside.len(), 1);
    }

    #[test]
    fn the_batch_grows_while_requests_are_short_and_shrinks_when_slow() {
        let mut b = BatchSize::default();
        assert_eq!(b.get(), FIRST_BATCH);
        // A fast server: doubling up to the most.
        let mut sizes = Vec::new();
        for _ in 0..5 {
            let n = b.get();
            b.observe(n, Duration::from_millis(n as u64), false);
            sizes.push(b.get());
        }
        assert_eq!(sizes, [20, 40, 80, 100, 100]);
        // A slow Lambda (300 ms an event): what fits in the target.
        b.observe(100, Duration::from_secs(30), false);
        let after_one = b.get();
        assert!(after_one < 100, "{after_one}");
        for _ in 0..10 {
            let n = b.get();
            b.observe(n, Duration::from_millis(300) * n as u32, false);
        }
        assert_eq!(b.get(), 16, "5 s / 300 ms");
        // A 504: a quarter.
        b.observe(16, Duration::from_secs(30), true);
        assert_eq!(b.get(), 4);
        b.observe(1, Duration::from_secs(31), true);
        assert_eq!(b.get(), 1, "never zero");
        // A short batch (fewer events pending) does not shrink a fast server's size.
        let mut b = BatchSize::default();
        b.observe(2, Duration::from_millis(2), false);
        assert_eq!(b.get(), 20);
    }

    #[test]
    fn an_event_set_aside_comes_back_in_its_time() {
        let t0 = tokio::time::Instant::now();
        let mut a = Aside::default();
        a.hold("x".into(), 1, t0);
        a.hold("y".into(), 2, t0);
        assert!(a.holds("x", t0 + Duration::from_millis(999)));
        assert!(!a.holds("x", t0 + Duration::from_secs(1)));
        assert!(a.holds("y", t0 + Duration::from_millis(1999)));
        assert_eq!(a.next_due(), Some(t0 + Duration::from_secs(2)));
        assert!(!a.holds("z", t0));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn replayed_data_says_offline_and_keeps_the_scan_time() {
        let r = row("6f1b2c3d-0000-4000-8000-000000000001", 0);
        let input = input_for(&r);
        let v: serde_json::Value = serde_json::from_str(&input.data).unwrap();
        assert_eq!(v["scanId"], "6f1b2c3d-0000-4000-8000-000000000001");
        assert_eq!(v["scannedAt"], "2026-11-27T12:00:00.000Z");
        assert_eq!(v["offline"], true);
        assert_eq!(v["clockSynced"], false);
    }
}
