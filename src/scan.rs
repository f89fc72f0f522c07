//! The scan pipeline: debounce, look up, decide, store, record, give feedback, log.
//!
//! Online: `passByScanCode`, the decision, then the accepted scan is written to the store as
//! *pending* (durably, before anything is sent) and `createScanEvent` sends it; the answer
//! marks it sent (or refused). Offline (the link is down, the API failed, or the budget ran
//! out): the offline policy decides, the scan is written, then feedback is given. Every scan
//! is in the store before its feedback.
//!
//! The whole scan has a budget (`api.timeout_ms`, counted from the code's last byte). The
//! online part runs as its own task so the budget can end the wait without cutting a request
//! in half: a lookup that answers after the budget is dropped before anything is recorded; a
//! `createScanEvent` already on its way is left to finish, and its late answer updates the row.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::api::classify::ErrorClass;
use crate::api::{ApiError, Client, ScanEventInput};
use crate::debounce::Debouncer;
use crate::decision::{
    self, CacheView, Direction, OfflinePolicy, OfflineRules, PassFacts, Reason, Rules, UseChange,
    Verdict,
};
use crate::link::Link;
use crate::mask::{mask_code, scrub};
use crate::outputs::feedback::LaneFeedback;
use crate::reader::ReaderEvent;
use crate::store::{now_ms, NewScan, Store, StoreHandle};

/// How a scan was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    /// Decided with the API's answer (true) or offline (false).
    pub online: bool,
    pub scan_id: Uuid,
    /// The server's ScanEvent id, for an online accept.
    pub event_id: Option<String>,
    pub detail: Option<String>,
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    pub device: String,
    /// The reader's name and direction, and its place in [`Shared::readers`].
    pub reader: String,
    pub direction: Direction,
    pub reader_index: usize,
    pub rules: Rules,
    pub offline: OfflineRules,
    pub cache_ttl: Duration,
    pub budget: Duration,
    pub debounce: Duration,
    pub max_pending: u64,
}

/// What the scan pipeline, the replay worker and the status writer share.
#[derive(Clone)]
pub struct Shared {
    pub store: StoreHandle,
    pub link: Link,
    /// Scan ids whose `createScanEvent` is on its way from the live path: replay skips them.
    pub inflight: Arc<Mutex<HashSet<String>>>,
    /// Unsent scan events (kept current by the replay worker, raised by each pending insert).
    pub pending: Arc<AtomicI64>,
    /// Wakes the replay worker (a new pending row).
    pub replay_wake: Arc<Notify>,
    /// When the server last acknowledged a scan event (unix ms; 0: never).
    pub last_sync_ms: Arc<AtomicI64>,
    /// The last auth error, for status (empty: none).
    pub auth_error: Arc<Mutex<String>>,
    /// Wakes the status writer (something `status` shows changed).
    pub status_wake: Arc<Notify>,
    /// The last scans, for the status page (masked codes only).
    pub recent: Arc<Mutex<std::collections::VecDeque<RecentScan>>>,
    /// Each reader, for status.
    pub readers: Arc<Mutex<Vec<ReaderState>>>,
    /// The door contact, when there is one.
    pub door: Arc<Mutex<Option<DoorState>>>,
    pub enrolled: Arc<std::sync::atomic::AtomicBool>,
}

/// A reader as status shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReaderState {
    pub name: String,
    pub direction: &'static str,
    pub connected: bool,
}

/// The door contact as status shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct DoorState {
    /// `closed`, `open` or `unknown` (not read yet).
    pub state: &'static str,
    /// Since when (unix ms; 0: since start).
    pub since_ms: i64,
    /// Open longer than `held_open_secs`.
    pub held_open: bool,
}

/// A scan as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentScan {
    pub at: String,
    pub code: String,
    pub verdict: &'static str,
    pub reason: &'static str,
    pub mode: &'static str,
    pub latency_ms: f64,
    pub reader: String,
    pub direction: &'static str,
}

pub const RECENT: usize = 20;

impl Shared {
    pub fn new(store: StoreHandle, link: Link) -> Self {
        Shared {
            store,
            link,
            inflight: Default::default(),
            pending: Default::default(),
            replay_wake: Default::default(),
            last_sync_ms: Default::default(),
            auth_error: Default::default(),
            status_wake: Default::default(),
            recent: Default::default(),
            readers: Default::default(),
            door: Default::default(),
            enrolled: Default::default(),
        }
    }

    /// Registers the readers (all disconnected until they say otherwise).
    pub fn set_readers(&self, readers: &[crate::config::ReaderConfig]) {
        *self.readers.lock().unwrap_or_else(|p| p.into_inner()) = readers
            .iter()
            .map(|r| ReaderState {
                name: r.name.clone(),
                direction: r.direction.as_str(),
                connected: false,
            })
            .collect();
    }

    /// Records a decided scan for the status page and the metrics.
    #[allow(clippy::too_many_arguments)]
    pub fn record_scan(
        &self,
        code: Option<&str>,
        verdict: Verdict,
        reason: Reason,
        mode: &'static str,
        latency: Duration,
        reader: &str,
        direction: Direction,
    ) {
        crate::metrics::scan(
            verdict.as_str(),
            reason.as_str(),
            mode,
            latency.as_secs_f64(),
        );
        crate::metrics::metrics()
            .reader_scans
            .get_or_create(&crate::metrics::ReaderLabels {
                reader: reader.to_owned(),
                direction: direction.as_str(),
                verdict: verdict.as_str(),
            })
            .inc();
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(RecentScan {
            at: rfc3339_ms(OffsetDateTime::now_utc()),
            code: code.map(mask_code).unwrap_or_else(|| "-".into()),
            verdict: verdict.as_str(),
            reason: reason.as_str(),
            mode,
            latency_ms: (latency.as_secs_f64() * 1e6).round() / 1e3,
            reader: reader.to_owned(),
            direction: direction.as_str(),
        });
    }

    /// Reader `index` is connected or not.
    pub fn set_reader_connected(&self, index: usize, on: bool) {
        if let Some(r) = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(index)
        {
            r.connected = on;
        }
        crate::metrics::metrics()
            .reader_connected
            .set(self.all_readers_connected() as i64);
        self.status_wake.notify_one();
    }

    /// How many readers there are, and the names of those that are not connected.
    pub fn disconnected_readers(&self) -> (usize, Vec<String>) {
        let r = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let down = r.iter().filter(|r| !r.connected).map(|r| r.name.clone());
        (r.len(), down.collect())
    }

    /// Every reader is connected (what `/healthz` and the metric say).
    pub fn all_readers_connected(&self) -> bool {
        let (n, down) = self.disconnected_readers();
        n > 0 && down.is_empty()
    }

    pub fn set_door(&self, door: Option<DoorState>) {
        *self.door.lock().unwrap_or_else(|p| p.into_inner()) = door;
        self.status_wake.notify_one();
    }

    /// The server acknowledged scan events just now.
    pub fn synced(&self) {
        let now = now_ms();
        let before = self.last_sync_ms.swap(now, Ordering::Relaxed);
        // Status shows the first sync at once; later ones ride the writer's 10 s round
        // (one meta write per scan would double the scan path's fsyncs).
        if now - before > 10_000 {
            self.status_wake.notify_one();
        }
    }

    pub fn inflight_ids(&self) -> Vec<String> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn set_inflight(&self, id: &str, on: bool) {
        let mut s = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            s.insert(id.to_owned());
        } else {
            s.remove(id);
        }
    }

    pub fn note_auth_error(&self, e: Option<&ApiError>) {
        let mut a = self.auth_error.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Some(e) => {
                if a.is_empty() {
                    tracing::error!("the API refuses the token: {e}; scans are decided offline and replay is paused");
                    self.status_wake.notify_one();
                }
                *a = e.to_string();
            }
            None => {
                if !a.is_empty() {
                    a.clear();
                    self.status_wake.notify_one();
                }
            }
        }
    }
}

const LOOKING_UP: u8 = 0;
const RECORDING: u8 = 1;
const ABANDONED: u8 = 2;
const LATE: u8 = 3;

enum Online {
    /// The pass was looked up and rejected; nothing was written yet.
    Rejected {
        reason: Reason,
        pass: Option<PassFacts>,
    },
    Recorded {
        event_id: String,
        pass: PassFacts,
    },
    Refused(String),
    /// The API could not answer: the offline policy decides. `pass`: a lookup that did answer.
    Unavailable {
        error: ApiError,
        pass: Option<PassFacts>,
    },
    /// A permanent error on the lookup.
    Failed(ApiError),
    /// The budget ran out first.
    Abandoned,
}

/// The row facts of a scan that do not depend on the verdict.
#[derive(Debug, Clone)]
struct RowBase {
    scan_id: Uuid,
    code: String,
    scanned_at: OffsetDateTime,
    boot_id: String,
    mono_ms: u64,
    clock_synced: bool,
    device: String,
    reader: String,
    direction: Direction,
}

impl RowBase {
    /// A new scan of `code` whose last byte arrived at `last_byte`: its id, and its time by
    /// the wall clock (taken back to that byte) and since boot.
    fn new(code: &str, last_byte: Instant, s: &ScanSettings) -> Self {
        let ago = last_byte.elapsed();
        RowBase {
            scan_id: Uuid::new_v4(),
            code: code.to_owned(),
            scanned_at: OffsetDateTime::now_utc() - ago,
            boot_id: crate::clock::boot_id().to_owned(),
            mono_ms: crate::clock::mono_ms().saturating_sub(ago.as_millis() as u64),
            clock_synced: crate::clock::clock_synced(),
            device: s.device.clone(),
            reader: s.reader.clone(),
            direction: s.direction,
        }
    }

    fn row(
        &self,
        verdict: Verdict,
        reason: Reason,
        online: bool,
        reward_points: Option<i64>,
    ) -> NewScan {
        NewScan {
            scan_id: self.scan_id,
            code: self.code.clone(),
            verdict,
            reason,
            online,
            scanned_at: self.scanned_at,
            boot_id: self.boot_id.clone(),
            mono_ms: self.mono_ms,
            clock_synced: self.clock_synced,
            device: self.device.clone(),
            reader: self.reader.clone(),
            direction: self.direction,
            reward_points,
            pending: verdict == Verdict::Accept,
        }
    }
}

pub struct Scanner {
    client: Client,
    settings: ScanSettings,
    feedback: LaneFeedback,
    shared: Shared,
    debouncer: Debouncer,
}

impl Scanner {
    pub fn new(
        client: Client,
        settings: ScanSettings,
        feedback: LaneFeedback,
        shared: Shared,
    ) -> Self {
        let debouncer = Debouncer::new(settings.debounce);
        Scanner {
            client,
            settings,
            feedback,
            shared,
            debouncer,
        }
    }

    /// Handles one reader event. Returns the outcome for scans (None for repeats and status
    /// events).
    pub async fn handle(&mut self, ev: ReaderEvent) -> Option<Outcome> {
        match ev {
            ReaderEvent::Code { code, last_byte } => {
                if !self.debouncer.is_new_scan(&code, last_byte) {
                    tracing::debug!(code = %mask_code(&code), "repeat within the debounce window: not a new scan");
                    return None;
                }
                Some(self.scan(code, last_byte).await)
            }
            ReaderEvent::Malformed { kind, last_byte } => {
                self.feedback.reject();
                self.shared.record_scan(
                    None,
                    Verdict::Reject,
                    Reason::Malformed,
                    "local",
                    last_byte.elapsed(),
                    &self.settings.reader,
                    self.settings.direction,
                );
                tracing::info!(
                    code = "-",
                    verdict = %Verdict::Reject,
                    reason = %Reason::Malformed,
                    mode = %"local",
                    latency_ms = %format_ms(last_byte.elapsed()),
                    detail = %kind,
                    reader = %self.settings.reader,
                    direction = %self.settings.direction,
                    "scan"
                );
                None
            }
            ReaderEvent::Connected { .. } | ReaderEvent::Disconnected { .. } => {
                reader_link_event(
                    &self.shared,
                    &self.settings.reader,
                    self.settings.reader_index,
                    &ev,
                );
                None
            }
            ReaderEvent::Eof => None,
        }
    }

    async fn scan(&mut self, code: String, last_byte: Instant) -> Outcome {
        let base = RowBase::new(&code, last_byte, &self.settings);
        let left = self.settings.budget.saturating_sub(last_byte.elapsed());
        let outcome = if self.shared.link.is_offline() || left.is_zero() {
            // Offline, or the code waited behind earlier scans at this reader until its
            // budget was gone: the offline policy decides, and the API is not to blame.
            let (verdict, reason) = self.decide_offline(&base, None).await;
            let detail = if left.is_zero() {
                "the budget ran out while earlier scans at this reader were decided"
            } else {
                "offline: the API was unreachable on earlier requests"
            };
            Outcome {
                verdict,
                reason,
                online: false,
                scan_id: base.scan_id,
                event_id: None,
                detail: Some(detail.into()),
            }
        } else {
            self.scan_online(&base, last_byte).await
        };
        // Feedback is given by the paths above, right after the durable write.
        let mode = if outcome.online { "online" } else { "offline" };
        self.shared.record_scan(
            Some(&code),
            outcome.verdict,
            outcome.reason,
            mode,
            last_byte.elapsed(),
            &self.settings.reader,
            self.settings.direction,
        );
        let detail = outcome.detail.as_deref().map(|d| scrub(d, &code));
        tracing::info!(
            code = %mask_code(&code),
            verdict = %outcome.verdict,
            reason = %outcome.reason,
            mode = %if outcome.online { "online" } else { "offline" },
            latency_ms = %format_ms(last_byte.elapsed()),
            scan_id = %outcome.scan_id,
            event_id = %outcome.event_id.as_deref().unwrap_or("-"),
            detail = %detail.as_deref().unwrap_or("-"),
            reader = %self.settings.reader,
            direction = %self.settings.direction,
            "scan"
        );
        outcome
    }

    fn give_feedback(&self, verdict: Verdict) {
        match verdict {
            Verdict::Accept => self.feedback.accept(),
            Verdict::Reject => self.feedback.reject(),
        }
    }

    async fn scan_online(&mut self, base: &RowBase, last_byte: Instant) -> Outcome {
        let deadline = tokio::time::Instant::from_std(last_byte) + self.settings.budget;
        // How long the code waited before this attempt (behind earlier scans at its reader).
        let waited = last_byte.elapsed();
        let phase = Arc::new(AtomicU8::new(LOOKING_UP));
        let mut task = tokio::spawn(online(
            self.client.clone(),
            self.shared.clone(),
            base.clone(),
            self.settings.clone(),
            phase.clone(),
        ));
        let answer = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(join)) => Online::Failed(ApiError {
                class: ErrorClass::Permanent,
                status: None,
                detail: format!("scan task failed: {join}"),
            }),
            Err(_elapsed) => {
                if phase
                    .compare_exchange(LOOKING_UP, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // createScanEvent is on its way: let it finish and update the row.
                    phase.store(LATE, Ordering::Release);
                }
                Online::Abandoned
            }
        };
        let done = |verdict, reason, online, event_id, detail| Outcome {
            verdict,
            reason,
            online,
            scan_id: base.scan_id,
            event_id,
            detail,
        };
        match answer {
            Online::Recorded { event_id, pass } => {
                self.feedback.accept();
                self.shared.link.success();
                self.shared.note_auth_error(None);
                self.shared.synced();
                let (id, ev, code) = (
                    base.scan_id.to_string(),
                    event_id.clone(),
                    base.code.clone(),
                );
                let exit = self.settings.direction == Direction::Exit;
                let after = self.shared.store.run(move |s| {
                    s.mark_sent(&id, Some(&ev))?;
                    if exit {
                        // The guest is out: the next offline entry is not a second one.
                        s.reset_offline_uses(&code)?;
                    }
                    s.cache_put(&code, Some(&pass), now_ms())
                });
                if let Err(e) = after.await {
                    tracing::error!(scan_id = %base.scan_id, "scan event sent but not marked sent ({e}); it may be sent twice (same scanId)");
                }
                done(Verdict::Accept, Reason::Valid, true, Some(event_id), None)
            }
            Online::Refused(detail) => {
                self.feedback.reject();
                let (id, d) = (base.scan_id.to_string(), detail.clone());
                if let Err(e) = self
                    .shared
                    .store
                    .run(move |s| s.mark_refused(&id, &d))
                    .await
                {
                    tracing::error!(scan_id = %base.scan_id, "cannot mark the refused scan: {e}");
                }
                done(Verdict::Reject, Reason::Refused, true, None, Some(detail))
            }
            Online::Rejected { reason, pass } => {
                let row = base.row(Verdict::Reject, reason, true, None);
                let code = base.code.clone();
                let stored = self
                    .shared
                    .store
                    .run(move |s| {
                        s.insert_scan(&row, UseChange::None)?;
                        s.cache_put(&code, pass.as_ref(), now_ms())
                    })
                    .await;
                self.feedback.reject();
                if let Err(e) = stored {
                    tracing::error!(scan_id = %base.scan_id, "rejected scan not stored: {e}");
                }
                done(Verdict::Reject, reason, true, None, None)
            }
            Online::Failed(e) => {
                let row = base.row(Verdict::Reject, Reason::ApiError, true, None);
                let stored = self
                    .shared
                    .store
                    .run(move |s| s.insert_scan(&row, UseChange::None))
                    .await;
                self.feedback.reject();
                if let Err(se) = stored {
                    tracing::error!(scan_id = %base.scan_id, "rejected scan not stored: {se}");
                }
                done(
                    Verdict::Reject,
                    Reason::ApiError,
                    true,
                    None,
                    Some(e.to_string()),
                )
            }
            Online::Unavailable { error, pass } => {
                if error.class == ErrorClass::Auth {
                    self.shared.note_auth_error(Some(&error));
                } else {
                    self.shared.link.failure(&error.to_string());
                }
                let (verdict, reason) = self.decide_offline(base, pass).await;
                done(verdict, reason, false, None, Some(error.to_string()))
            }
            Online::Abandoned => {
                // Counted against the API only when it had a fair share of the budget (not
                // for a code that waited behind others until almost nothing was left).
                if self.settings.budget.saturating_sub(waited) >= self.settings.budget / 2 {
                    self.shared.link.failure("no answer within the scan budget");
                }
                let (verdict, reason) = self.decide_offline(base, None).await;
                let detail = format!("no answer within {} ms", self.settings.budget.as_millis());
                done(verdict, reason, false, None, Some(detail))
            }
        }
    }

    /// Decides offline, writes the scan (replacing the row the online attempt may have
    /// written), then gives feedback. `fresh`: what a lookup of this very scan said.
    async fn decide_offline(&self, base: &RowBase, fresh: Option<PassFacts>) -> (Verdict, Reason) {
        let settings = self.settings.clone();
        let queue_full = self.shared.pending.load(Ordering::Relaxed) >= settings.max_pending as i64;
        let b = base.clone();
        let result = self
            .shared
            .store
            .run(move |s| {
                let (verdict, reason, reward, uses) =
                    offline_verdict(s, &settings, &b.code, fresh, queue_full)?;
                s.upsert_offline_decision(&b.row(verdict, reason, false, reward), uses)?;
                Ok((verdict, reason))
            })
            .await;
        let (verdict, reason) = match result {
            Ok(v) => v,
            Err(e) => {
                // No store: decide by the policy alone, and say loudly what is not recorded.
                let o = &self.settings.offline;
                let v = decision::decide_offline(
                    o,
                    &CacheView::Unknown,
                    0,
                    queue_full,
                    &self.settings.rules,
                    OffsetDateTime::now_utc(),
                );
                let verdict = if v.is_ok() {
                    Verdict::Accept
                } else {
                    Verdict::Reject
                };
                tracing::error!(scan_id = %base.scan_id, "scan decided offline but NOT stored: {e}");
                (verdict, v.err().unwrap_or(Reason::OfflinePolicy))
            }
        };
        self.give_feedback(verdict);
        if verdict == Verdict::Accept {
            self.shared.pending.fetch_add(1, Ordering::Relaxed);
            self.shared.replay_wake.notify_one();
        }
        if reason == Reason::QueueFull {
            self.shared.status_wake.notify_one();
            tracing::error!(
                max_pending = self.settings.max_pending,
                "the queue of unsent scan events is full: nothing more is admitted offline until it drains"
            );
        }
        (verdict, reason)
    }
}

/// A reader came or went: status, metrics and a log line.
pub fn reader_link_event(shared: &Shared, name: &str, index: usize, ev: &ReaderEvent) {
    match ev {
        ReaderEvent::Connected { path } => {
            shared.set_reader_connected(index, true);
            tracing::info!(reader = %name, path = %path.display(), "reader connected");
        }
        ReaderEvent::Disconnected { path, error } => {
            shared.set_reader_connected(index, false);
            tracing::warn!(reader = %name, path = %path.display(), "reader disconnected ({error}); reopening when it is back");
        }
        _ => {}
    }
}

/// Rejects a scan without asking the API (the device is not enrolled yet): stored, red, logged.
pub async fn reject_locally(
    shared: &Shared,
    feedback: &LaneFeedback,
    settings: &ScanSettings,
    code: String,
    last_byte: Instant,
    reason: Reason,
) -> Outcome {
    let base = RowBase::new(&code, last_byte, settings);
    let row = base.row(Verdict::Reject, reason, false, None);
    let stored = shared
        .store
        .run(move |s| s.insert_scan(&row, UseChange::None))
        .await;
    feedback.reject();
    shared.record_scan(
        Some(&code),
        Verdict::Reject,
        reason,
        "local",
        last_byte.elapsed(),
        &settings.reader,
        settings.direction,
    );
    if let Err(e) = stored {
        tracing::error!(scan_id = %base.scan_id, "rejected scan not stored: {e}");
    }
    tracing::info!(
        code = %mask_code(&code),
        verdict = %Verdict::Reject,
        reason = %reason,
        mode = %"local",
        latency_ms = %format_ms(last_byte.elapsed()),
        scan_id = %base.scan_id,
        reader = %settings.reader,
        direction = %settings.direction,
        "scan"
    );
    Outcome {
        verdict: Verdict::Reject,
        reason,
        online: false,
        scan_id: base.scan_id,
        event_id: None,
        detail: None,
    }
}

/// The offline verdict, from the store's cache and use counts. Returns (verdict, reason,
/// reward points, what it does to the pass's offline uses).
fn offline_verdict(
    s: &mut Store,
    settings: &ScanSettings,
    code: &str,
    fresh: Option<PassFacts>,
    queue_full: bool,
) -> crate::store::Result<(Verdict, Reason, Option<i64>, UseChange)> {
    let now = now_ms();
    if let Some(f) = &fresh {
        s.cache_put(code, Some(f), now)?;
    }
    let view = if settings.offline.policy == OfflinePolicy::Cache {
        match s.cache_get(code, settings.cache_ttl, now)? {
            Some(entry) => CacheView::Known(entry.facts),
            None => CacheView::Unknown,
        }
    } else {
        CacheView::Unknown
    };
    let uses = decision::counted_uses(settings.direction, s.offline_uses(code)?);
    let d = decision::decide_offline(
        &settings.offline,
        &view,
        uses,
        queue_full,
        &settings.rules,
        OffsetDateTime::now_utc(),
    );
    let reward = match &view {
        CacheView::Known(Some(f)) => decision::reward_points(f, &settings.rules),
        _ => (settings.rules.reward_points != 0).then_some(settings.rules.reward_points),
    };
    Ok(match d {
        Ok(()) => {
            let known = settings.offline.policy == OfflinePolicy::Cache
                && matches!(view, CacheView::Known(Some(_)));
            let uses = decision::offline_use_change(settings.direction, true, known);
            (Verdict::Accept, Reason::OfflinePolicy, reward, uses)
        }
        Err(reason) => (Verdict::Reject, reason, None, UseChange::None),
    })
}

/// The online part of a scan: lookup, decision, durable pending row, record.
async fn online(
    client: Client,
    shared: Shared,
    base: RowBase,
    s: ScanSettings,
    phase: Arc<AtomicU8>,
) -> Online {
    let pass = match client.pass_by_scan_code(&base.code).await {
        Ok(p) => p,
        Err(e) if e.class.is_unavailable() => {
            return Online::Unavailable {
                error: e,
                pass: None,
            }
        }
        Err(e) => return Online::Failed(e),
    };
    if let Err(reason) = decision::decide(pass.as_ref(), &s.rules, OffsetDateTime::now_utc()) {
        return Online::Rejected { reason, pass };
    }
    let facts = pass.expect("decide accepts only a pass");
    let reward_points = decision::reward_points(&facts, &s.rules);
    if phase
        .compare_exchange(LOOKING_UP, RECORDING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // The budget ran out meanwhile: the offline decision is what counts. Nothing is sent.
        tracing::debug!(scan_id = %base.scan_id, "lookup answered after the budget; nothing sent");
        return Online::Abandoned;
    }
    // The pending row is written while the event is on its way; feedback waits for both.
    // A crash after the write leaves a pending row to replay (a duplicate at the server is
    // recognisable by its scanId); a crash before it leaves the event with the server.
    let row = base.row(Verdict::Accept, Reason::Valid, true, reward_points);
    let id = base.scan_id.to_string();
    shared.set_inflight(&id, true);
    let input = ScanEventInput {
        code: base.code.clone(),
        reward_points,
        data: scan_data(
            base.scan_id,
            base.scanned_at,
            base.clock_synced,
            false,
            &base.device,
            &base.reader,
            base.direction,
        ),
    };
    let write = shared.store.run(move |st| st.insert_scan_if_absent(&row));
    let (stored, result) = tokio::join!(write, client.create_scan_event(&input));
    if let Err(e) = &stored {
        tracing::error!(scan_id = %base.scan_id, "accepted scan not stored: {e}");
    }
    let late = phase.load(Ordering::Acquire) == LATE;
    let answer = match result {
        Ok(ack) if ack.voided => {
            Online::Refused(format!("the server voided scan event {}", ack.id))
        }
        Ok(ack) => Online::Recorded {
            event_id: ack.id,
            pass: facts.clone(),
        },
        Err(e) if e.class.is_unavailable() => Online::Unavailable {
            error: e,
            pass: Some(facts.clone()),
        },
        Err(e) => Online::Refused(e.to_string()),
    };
    if late {
        // The offline policy already decided this scan; record what the server said.
        let shared2 = shared.clone();
        let id2 = id.clone();
        match &answer {
            Online::Recorded { event_id, .. } => {
                let ev = event_id.clone();
                tracing::warn!(scan_id = %base.scan_id, event_id = %ev, "scan event recorded after the budget");
                let _ = shared2
                    .store
                    .run(move |st| st.mark_sent(&id2, Some(&ev)))
                    .await;
                shared.synced();
            }
            Online::Refused(d) => {
                let d = d.clone();
                tracing::warn!(scan_id = %base.scan_id, "scan event refused after the budget: {d}");
                let _ = shared2.store.run(move |st| st.mark_dead(&id2, &d)).await;
            }
            _ => {
                tracing::info!(scan_id = %base.scan_id, "scan event not sent within the budget; the replay will send it")
            }
        }
    }
    shared.set_inflight(&id, false);
    if late {
        shared.replay_wake.notify_one();
    }
    answer
}

/// `ScanEventInput.data`: what the server needs to recognise a replay and to know when the
/// scan really happened.
pub fn scan_data(
    scan_id: Uuid,
    scanned_at: OffsetDateTime,
    clock_synced: bool,
    offline: bool,
    device: &str,
    reader: &str,
    direction: Direction,
) -> String {
    serde_json::json!({
        "scanId": scan_id.to_string(),
        "scannedAt": rfc3339_ms(scanned_at),
        "clockSynced": clock_synced,
        "offline": offline,
        "device": device,
        "reader": reader,
        "direction": direction.as_str(),
    })
    .to_string()
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

fn format_ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_data_has_id_time_and_device() {
        let id = Uuid::new_v4();
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_764_278_723_123_456_789).unwrap();
        let v: serde_json::Value = serde_json::from_str(&scan_data(
            id,
            t,
            true,
            true,
            "front-door",
            "lane-2",
            Direction::Exit,
        ))
        .unwrap();
        assert_eq!(v["scanId"], id.to_string());
        assert_eq!(v["scannedAt"], "2025-11-27T21:25:23.123Z");
        assert_eq!(v["device"], "front-door");
        assert_eq!(v["offline"], true);
        assert_eq!(v["clockSynced"], true);
        assert_eq!(v["direction"], "exit");
        assert_eq!(v["reader"], "lane-2");
    }
}
