//! What the lanes, the replay, the keep-alive, enrolment, the door and the HTTP endpoint
//! share, split by what it is:
//!
//! - [`ApiState`]: the API as this device sees it, reachable or not ([`Link`]) and whether it
//!   takes the token; [`ApiState::observe`] is the one place where the result of an API call
//!   becomes that state (the rule itself, [`effect`], is pure).
//! - [`Outbox`]: the scan events still to send: the pending count, the ids on their way from
//!   the live path, the replay's wake-up, the last acknowledgement.
//! - [`Board`]: what status shows about the device itself: its readers, its door, whether it is
//!   enrolled, the last scans, and the status writer's wake-up.
//!
//! [`Shared`] bundles the three with the store handle; each is cheap to clone.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::api::classify::ErrorClass;
use crate::api::ApiError;
use crate::clock::now_ms;
use crate::link::Link;
use crate::store::StoreHandle;

/// How many scans the status page lists.
pub const RECENT: usize = 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything the daemon's tasks share.
#[derive(Clone)]
pub struct Shared {
    pub store: StoreHandle,
    pub api: ApiState,
    pub outbox: Outbox,
    pub board: Board,
    /// The guest screen's verdicts (nothing until `[display]` configures it).
    pub display: crate::display::Hub,
}

impl Shared {
    pub fn new(store: StoreHandle, link: Link) -> Self {
        let board = Board::default();
        let outbox = Outbox::new(board.status_wake.clone());
        let api = ApiState::new(link, board.status_wake.clone());
        Shared {
            store,
            api,
            outbox,
            board,
            display: Default::default(),
        }
    }
}

/// Who made an API call: the same answer means a little more or less for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A live scan's lookup (`passByScanCode`).
    Lookup,
    /// A live scan's scan event (`createScanEvent`).
    Scan,
    /// A replay batch.
    Replay,
    /// The keep-alive or the offline probe.
    KeepAlive,
    /// `registerDevice`, with the workspace token.
    Enrolment,
}

/// What one API call's result does to the API state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The API answered and took the token: online, no auth error.
    Reachable,
    /// The workspace token was taken (enrolment): no auth error; the link is not watched yet.
    TokenTaken,
    /// The API could not be reached: one failure towards going offline.
    Unreachable,
    /// The API (its authorizer) refused the token.
    AuthRefused,
    /// The API answered that the request does not fit its schema, or with an answer the
    /// daemon cannot read: reachable, but an alarm (see [`ApiState::mismatch`]).
    Mismatch,
    /// Nothing to learn about the link or the token.
    Nothing,
}

/// The rule, in one place (pure):
/// - an answer is `Reachable` (`TokenTaken` for enrolment, which runs before the link is
///   watched);
/// - an auth error is `AuthRefused`, whoever asked;
/// - a retryable failure (transport, timeout, 5xx, 429) is `Unreachable` for the live scan
///   and the keep-alive; for a replay batch only a transport failure is (a throttled or
///   failing bulk request says nothing about the live path's next request); enrolment runs
///   before the link is watched, and its retries are its own;
/// - a schema mismatch is `Mismatch`, whoever asked: the API answered (it is reachable), but
///   not in the language this daemon speaks;
/// - a refusal of the request itself (permanent, ambiguous) is `Nothing`: the API answered,
///   but about this request, not about the link or the token.
pub fn effect(caller: Caller, result: Result<(), &ApiError>) -> Effect {
    let e = match result {
        Ok(()) if caller == Caller::Enrolment => return Effect::TokenTaken,
        Ok(()) => return Effect::Reachable,
        Err(e) => e,
    };
    match (e.class, caller) {
        (ErrorClass::Auth, _) => Effect::AuthRefused,
        (ErrorClass::Mismatch, _) => Effect::Mismatch,
        (ErrorClass::Retryable { .. }, Caller::Lookup | Caller::Scan | Caller::KeepAlive) => {
            Effect::Unreachable
        }
        (ErrorClass::Retryable { .. }, Caller::Replay) if e.status.is_none() => Effect::Unreachable,
        (ErrorClass::Retryable { .. }, _) => Effect::Nothing,
        (ErrorClass::Permanent | ErrorClass::Ambiguous, _) => Effect::Nothing,
    }
}

/// Whether a call by `ok` that succeeded shows that the operation a mismatch was raised by
/// (`by`) fits the server again (pure): the same operation answered. A live scan event and a
/// replay batch send the same mutation.
pub fn clears_mismatch(by: Caller, ok: Caller) -> bool {
    use Caller::*;
    matches!(
        (by, ok),
        (Lookup, Lookup)
            | (Scan | Replay, Scan | Replay)
            | (KeepAlive, KeepAlive)
            | (Enrolment, Enrolment)
    )
}

/// A schema mismatch, while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Who met it: what must succeed again to end it, each ([`clears_mismatch`]).
    pub by: Vec<Caller>,
    /// The server's latest message (pass codes scrubbed by the caller).
    pub detail: String,
    /// The lanes skip the API until then, and then one scan tries it again (and sets this
    /// further off if it still does not fit: [`lanes_retry_after`]). So the alarm also ends
    /// when nothing else could show it (a lookup, or a scan event with nothing pending).
    pub retry_at: tokio::time::Instant,
    /// How many times it was met in a row.
    pub tries: u32,
}

/// How long the lanes leave the API alone after meeting a mismatch the `tries`-th time in a
/// row (pure): 1 s, 2 s, 4 s... at most a minute, so one guest a minute at most pays a round
/// trip before the offline policy decides.
pub fn lanes_retry_after(tries: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1u64 << tries.saturating_sub(1).min(6))
        .min(std::time::Duration::from_secs(60))
}

/// The API as this device sees it.
#[derive(Clone)]
pub struct ApiState {
    pub link: Link,
    /// The last auth error, for status (empty: none).
    auth_error: Arc<Mutex<String>>,
    /// The schema mismatch, while it lasts (a watch: the status LED follows it).
    mismatch: Arc<tokio::sync::watch::Sender<Option<Mismatch>>>,
    status_wake: StatusWake,
    /// Told when the token is taken again after an auth error (the paused replay resumes).
    auth_back: Arc<Notify>,
}

impl ApiState {
    fn new(link: Link, status_wake: StatusWake) -> Self {
        ApiState {
            link,
            auth_error: Default::default(),
            mismatch: Arc::new(tokio::sync::watch::channel(None).0),
            status_wake,
            auth_back: Default::default(),
        }
    }

    /// An API call's result, read into link and auth state by [`effect`].
    pub fn observe<T>(&self, caller: Caller, result: &Result<T, ApiError>) -> Effect {
        let effect = effect(caller, result.as_ref().map(|_| ()));
        match (&effect, result) {
            (Effect::Reachable, _) => {
                self.link.success();
                self.set_auth_error(None);
                self.mismatch_answered(caller);
            }
            (Effect::TokenTaken, _) => {
                self.set_auth_error(None);
                self.mismatch_answered(caller);
            }
            (Effect::Unreachable, Err(e)) => self.link.failure(&e.to_string()),
            (Effect::AuthRefused, Err(e)) => self.set_auth_error(Some(e)),
            (Effect::Mismatch, Err(e)) => {
                self.link.success();
                self.set_auth_error(None);
                self.set_mismatch(caller, e);
            }
            _ => {}
        }
        effect
    }

    /// The schema mismatch, while it lasts: scans are decided by the offline policy, events
    /// wait, status and `/healthz` say so.
    pub fn mismatch(&self) -> Option<Mismatch> {
        self.mismatch.borrow().clone()
    }

    pub fn has_mismatch(&self) -> bool {
        self.mismatch.borrow().is_some()
    }

    /// Whether a lane should leave the API alone now (a mismatch, and not yet its time to try
    /// again).
    pub fn lanes_skip_api(&self) -> bool {
        self.mismatch
            .borrow()
            .as_ref()
            .is_some_and(|m| tokio::time::Instant::now() < m.retry_at)
    }

    /// Follows the mismatch (the status LED).
    pub fn watch_mismatch(&self) -> tokio::sync::watch::Receiver<Option<Mismatch>> {
        self.mismatch.subscribe()
    }

    fn set_mismatch(&self, by: Caller, e: &ApiError) {
        let detail = e.detail.clone();
        let now = tokio::time::Instant::now();
        let mut new = false;
        self.mismatch.send_if_modified(|m| match m {
            Some(old) => {
                // Met again: tell the watchers only when what status shows changed.
                old.tries += 1;
                old.retry_at = now + lanes_retry_after(old.tries);
                let mut changed = false;
                if !old.by.contains(&by) {
                    old.by.push(by);
                    changed = true;
                }
                if old.detail != detail {
                    old.detail = detail.clone();
                    changed = true;
                }
                changed
            }
            None => {
                *m = Some(Mismatch {
                    by: vec![by],
                    detail: detail.clone(),
                    retry_at: now + lanes_retry_after(1),
                    tries: 1,
                });
                new = true;
                true
            }
        });
        if new {
            tracing::error!(
                caller = ?by,
                "API MISMATCH: the API's schema does not fit this daemon: {detail}; scans are decided by the offline policy and scan events wait (nothing is dropped) until it fits again"
            );
            self.status_wake.notify();
        }
    }

    fn mismatch_answered(&self, ok: Caller) {
        let cleared = self.mismatch.send_if_modified(|m| match m {
            Some(old) if old.by.iter().any(|b| clears_mismatch(*b, ok)) => {
                old.by.retain(|b| !clears_mismatch(*b, ok));
                if old.by.is_empty() {
                    *m = None;
                    true
                } else {
                    false
                }
            }
            _ => false,
        });
        if cleared {
            tracing::info!(
                "the API's schema fits this daemon again; scans go online and the queue resumes"
            );
            self.status_wake.notify();
            self.auth_back.notify_one();
        }
    }

    /// No answer within a scan's budget: one failure towards going offline.
    pub fn no_answer(&self, why: &str) {
        self.link.failure(why);
    }

    /// Notified when the token is taken again after an auth error.
    pub fn auth_back(&self) -> Arc<Notify> {
        self.auth_back.clone()
    }

    /// The last auth error's text (empty: none).
    pub fn auth_error(&self) -> String {
        lock(&self.auth_error).clone()
    }

    pub fn has_auth_error(&self) -> bool {
        !lock(&self.auth_error).is_empty()
    }

    fn set_auth_error(&self, e: Option<&ApiError>) {
        let mut a = lock(&self.auth_error);
        match e {
            Some(e) => {
                if a.is_empty() {
                    tracing::error!("the API refuses the token: {e}; scans are decided offline and replay is paused");
                    self.status_wake.notify();
                }
                *a = e.to_string();
            }
            None => {
                if !a.is_empty() {
                    a.clear();
                    tracing::info!("the API takes the token again; replay resumes");
                    self.status_wake.notify();
                    self.auth_back.notify_one();
                }
            }
        }
    }
}

/// The scan events still to send.
#[derive(Clone)]
pub struct Outbox {
    /// Unsent scan events: counted from the store at start and by the replay worker, raised
    /// by each pending row a lane writes.
    pending: Arc<AtomicI64>,
    /// Scan ids whose `createScanEvent` is on its way from the live path: replay skips them.
    inflight: Arc<Mutex<Inflight>>,
    /// Wakes the replay worker.
    pub replay_wake: Arc<Notify>,
    /// When the server last acknowledged a scan event (unix ms; 0: never).
    last_sync_ms: Arc<AtomicI64>,
    /// Lanes deciding a scan now: the replay gives way to them ([`Outbox::wait_quiet`]).
    live: Arc<AtomicI64>,
    quiet: Arc<Notify>,
    status_wake: StatusWake,
}

impl Outbox {
    fn new(status_wake: StatusWake) -> Self {
        Outbox {
            pending: Default::default(),
            inflight: Default::default(),
            replay_wake: Default::default(),
            last_sync_ms: Default::default(),
            live: Default::default(),
            quiet: Default::default(),
            status_wake,
        }
    }

    /// A lane starts (`true`) or ends (`false`) work on a reader event.
    pub fn set_live(&self, on: bool) {
        if on {
            self.live.fetch_add(1, Ordering::AcqRel);
        } else if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.quiet.notify_waiters();
        }
    }

    /// Returns when no lane is deciding a scan (at once if none is): a replay batch never
    /// competes with a guest at the door for the CPU or the connection. Waits at most
    /// `at_most`, so that a door that never pauses still drains its queue.
    pub async fn wait_quiet(&self, at_most: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + at_most;
        loop {
            let quiet = self.quiet.notified();
            if self.live.load(Ordering::Acquire) <= 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, quiet).await.is_err() {
                return;
            }
        }
    }

    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// The count the store gives (at start, and after each replay batch).
    pub fn set_pending(&self, n: i64) {
        self.pending.store(n, Ordering::Relaxed);
    }

    /// A lane wrote one more pending row: counted, and the replay worker woken.
    pub fn admitted(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.replay_wake.notify_one();
    }

    /// Whether the queue is at `max_pending` (nothing more is admitted offline).
    pub fn is_full(&self, max_pending: u64) -> bool {
        self.pending() >= max_pending as i64
    }

    /// The server acknowledged scan events just now.
    pub fn synced(&self) {
        let now = now_ms();
        let before = self.last_sync_ms.swap(now, Ordering::Relaxed);
        // Status shows the first sync at once; later ones ride the writer's 10 s round
        // (one meta write per scan would double the scan path's fsyncs).
        if now - before > 10_000 {
            self.status_wake.notify();
        }
    }

    pub fn last_sync_ms(&self) -> i64 {
        self.last_sync_ms.load(Ordering::Relaxed)
    }

    /// Where the in-flight marks stand now, for [`Outbox::skip_for_replay`].
    pub fn inflight_mark(&self) -> u64 {
        lock(&self.inflight).seq
    }

    /// How many events are on their way from the live path now.
    pub fn inflight_count(&self) -> usize {
        lock(&self.inflight).live.len()
    }

    /// The ids a replay batch read after `mark` must skip: those on their way from the live
    /// path, and those that finished since `mark` (the batch may have read such a row while it
    /// was still pending, just before the live path marked it sent).
    pub fn skip_for_replay(&self, mark: u64) -> HashSet<String> {
        let f = lock(&self.inflight);
        let mut skip = f.live.clone();
        skip.extend(
            f.cleared
                .iter()
                .filter(|(seq, _)| *seq > mark)
                .map(|(_, id)| id.clone()),
        );
        skip
    }

    /// Marks a scan id as on its way from the live path (or no longer).
    pub fn set_inflight(&self, id: &str, on: bool) {
        let mut f = lock(&self.inflight);
        if on {
            f.live.insert(id.to_owned());
        } else if f.live.remove(id) {
            f.seq += 1;
            let seq = f.seq;
            if f.cleared.len() == Inflight::REMEMBER {
                f.cleared.pop_front();
            }
            f.cleared.push_back((seq, id.to_owned()));
        }
    }
}

/// The live path's events on their way, and the last ones that finished.
#[derive(Default)]
struct Inflight {
    live: HashSet<String>,
    /// (sequence number, id) of the last events that finished, oldest first.
    cleared: VecDeque<(u64, String)>,
    seq: u64,
}

impl Inflight {
    /// Finished ids remembered: far more than can finish while one batch is read.
    const REMEMBER: usize = 1024;
}

/// A reader as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderState {
    pub name: String,
    pub direction: String,
    pub connected: bool,
}

/// The door contact as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoorState {
    /// `closed`, `open` or `unknown` (not read yet).
    pub state: String,
    /// Since when (unix ms; 0: since start).
    pub since_ms: i64,
    /// Open longer than `held_open_secs`.
    pub held_open: bool,
}

/// A scan as the status page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentScan {
    pub at: String,
    pub code: String,
    /// The code's fingerprint ([`crate::fingerprint`]), `-` without a key.
    pub code_fp: String,
    pub verdict: &'static str,
    pub reason: &'static str,
    pub mode: &'static str,
    pub latency_ms: f64,
    pub reader: String,
    pub direction: &'static str,
}

/// The venue (`mqtt.venue`) as this door sees it on the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VenueState {
    /// `mqtt.venue`.
    pub topic: String,
    /// The doors heard from lately (their presence), this one included.
    pub doors: Vec<String>,
    /// This door refreshes the venue's passes (the first by name that reaches the API).
    pub refreshing: bool,
    /// A message sealed with another venue key was seen.
    pub foreign_key: bool,
}

/// What status shows about the device itself.
#[derive(Clone, Default)]
pub struct Board {
    readers: Arc<Mutex<Vec<ReaderState>>>,
    door: Arc<Mutex<Option<DoorState>>>,
    enrolled: Arc<AtomicBool>,
    recent: Arc<Mutex<VecDeque<RecentScan>>>,
    /// The readers in lockdown or release (remote commands; the store holds them too).
    overrides: Arc<Mutex<Vec<crate::store::DoorOverride>>>,
    /// The venue as the broker shows it (`mqtt.venue`).
    venue: Arc<Mutex<Option<VenueState>>>,
    /// Something `status` shows changed: wakes the status writer and the MQTT state.
    pub status_wake: StatusWake,
}

/// "Something the status shows changed", for any number of watchers (the status writer, the
/// MQTT state): a counter in a watch channel, so each watcher sees every change, and one that
/// is busy when it comes sees it on its next wait. (A `Notify` wakes one waiter: with two, a
/// change woke one of them and the other learned of it up to 10 s later.)
#[derive(Clone)]
pub struct StatusWake(Arc<tokio::sync::watch::Sender<u64>>);

impl Default for StatusWake {
    fn default() -> Self {
        StatusWake(Arc::new(tokio::sync::watch::channel(0).0))
    }
}

impl StatusWake {
    /// Something changed.
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A watcher's receiver: `changed()` returns once per change since its last wait.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

impl Board {
    /// The readers in lockdown or release, as the store now says.
    pub fn set_overrides(&self, all: Vec<crate::store::DoorOverride>) {
        let m = crate::metrics::metrics();
        for r in lock(&self.readers).iter() {
            let mode = crate::store::override_of(&all, &r.name);
            let label = crate::metrics::ReaderOnly {
                reader: r.name.clone(),
            };
            m.lockdown
                .get_or_create(&label)
                .set((mode == Some(crate::store::OverrideMode::Lockdown)) as i64);
            m.release
                .get_or_create(&label)
                .set((mode == Some(crate::store::OverrideMode::Release)) as i64);
        }
        *lock(&self.overrides) = all;
        self.status_wake.notify();
    }

    /// A reader's lockdown or release.
    pub fn override_of(&self, reader: &str) -> Option<crate::store::OverrideMode> {
        crate::store::override_of(&lock(&self.overrides), reader)
    }

    pub fn overrides(&self) -> Vec<crate::store::DoorOverride> {
        lock(&self.overrides).clone()
    }

    /// The venue as the broker shows it now (wakes status when it changed).
    pub fn set_venue(&self, v: VenueState) {
        let changed = {
            let mut g = lock(&self.venue);
            let changed = g.as_ref() != Some(&v);
            *g = Some(v);
            changed
        };
        if changed {
            self.status_wake.notify();
        }
    }

    pub fn venue(&self) -> Option<VenueState> {
        lock(&self.venue).clone()
    }

    /// Registers the readers (all disconnected until they say otherwise).
    pub fn set_readers(&self, readers: &[crate::config::ReaderConfig]) {
        *lock(&self.readers) = readers
            .iter()
            .map(|r| ReaderState {
                name: r.name.clone(),
                direction: r.direction.as_str().to_owned(),
                connected: false,
            })
            .collect();
    }

    pub fn readers(&self) -> Vec<ReaderState> {
        lock(&self.readers).clone()
    }

    /// Reader `index` is connected or not.
    pub fn set_reader_connected(&self, index: usize, on: bool) {
        if let Some(r) = lock(&self.readers).get_mut(index) {
            r.connected = on;
        }
        crate::metrics::metrics()
            .reader_connected
            .set(self.all_readers_connected() as i64);
        self.status_wake.notify();
    }

    /// How many readers there are, and the names of those that are not connected.
    pub fn disconnected_readers(&self) -> (usize, Vec<String>) {
        let r = lock(&self.readers);
        let down = r.iter().filter(|r| !r.connected).map(|r| r.name.clone());
        (r.len(), down.collect())
    }

    /// Every reader is connected (what `/healthz` and the metric say).
    pub fn all_readers_connected(&self) -> bool {
        let (n, down) = self.disconnected_readers();
        n > 0 && down.is_empty()
    }

    pub fn door(&self) -> Option<DoorState> {
        lock(&self.door).clone()
    }

    pub fn set_door(&self, door: Option<DoorState>) {
        *lock(&self.door) = door;
        self.status_wake.notify();
    }

    pub fn enrolled(&self) -> bool {
        self.enrolled.load(Ordering::Relaxed)
    }

    pub fn set_enrolled(&self) {
        self.enrolled.store(true, Ordering::Relaxed);
    }

    /// Adds a decided scan to the recent list (the oldest goes at [`RECENT`]).
    pub fn push_recent(&self, scan: RecentScan) {
        let mut r = lock(&self.recent);
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(scan);
    }

    /// The recent scans, newest first.
    pub fn recent(&self) -> Vec<RecentScan> {
        lock(&self.recent).iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn err(class: ErrorClass, status: Option<u16>) -> ApiError {
        ApiError::new(class, status, "x")
    }

    #[test]
    fn one_rule_for_every_caller() {
        use Caller::*;
        let transport = err(ErrorClass::Retryable { retry_after: None }, None);
        let throttled = err(
            ErrorClass::Retryable {
                retry_after: Some(Duration::from_secs(2)),
            },
            Some(429),
        );
        let auth = err(ErrorClass::Auth, Some(401));
        let permanent = err(ErrorClass::Permanent, Some(200));
        let ambiguous = err(ErrorClass::Ambiguous, Some(200));
        let mismatch = err(ErrorClass::Mismatch, Some(200));
        assert_eq!(effect(Enrolment, Ok(())), Effect::TokenTaken);
        for c in [Lookup, Scan, Replay, KeepAlive, Enrolment] {
            assert_eq!(effect(c, Err(&mismatch)), Effect::Mismatch, "{c:?}");
            if c != Enrolment {
                assert_eq!(effect(c, Ok(())), Effect::Reachable, "{c:?}");
            }
            assert_eq!(effect(c, Err(&auth)), Effect::AuthRefused, "{c:?}");
            assert_eq!(effect(c, Err(&permanent)), Effect::Nothing, "{c:?}");
            assert_eq!(effect(c, Err(&ambiguous)), Effect::Nothing, "{c:?}");
        }
        assert_eq!(effect(Scan, Err(&transport)), Effect::Unreachable);
        assert_eq!(effect(Lookup, Err(&transport)), Effect::Unreachable);
        assert_eq!(effect(Scan, Err(&throttled)), Effect::Unreachable);
        assert_eq!(effect(KeepAlive, Err(&transport)), Effect::Unreachable);
        assert_eq!(effect(Replay, Err(&transport)), Effect::Unreachable);
        assert_eq!(
            effect(Replay, Err(&throttled)),
            Effect::Nothing,
            "a throttled batch"
        );
        assert_eq!(effect(Enrolment, Err(&transport)), Effect::Nothing);
    }

    #[test]
    fn an_answer_clears_the_auth_error_and_brings_the_link_back() {
        let link = Link::new(2);
        let api = ApiState::new(link.clone(), Default::default());
        let auth = err(ErrorClass::Auth, Some(401));
        let transport = err(ErrorClass::Retryable { retry_after: None }, None);
        api.observe::<()>(Caller::Scan, &Err(auth));
        assert!(api.has_auth_error());
        api.observe::<()>(Caller::KeepAlive, &Err(transport.clone()));
        api.observe::<()>(Caller::Scan, &Err(transport));
        assert!(link.is_offline());
        api.observe(Caller::KeepAlive, &Ok(()));
        assert!(!link.is_offline());
        assert!(!api.has_auth_error());
    }

    #[test]
    fn a_mismatch_lasts_until_the_operation_it_met_answers() {
        use Caller::*;
        let api = ApiState::new(Link::new(2), Default::default());
        let mismatch = err(ErrorClass::Mismatch, Some(200));
        api.observe::<()>(Scan, &Err(mismatch.clone()));
        let m = api.mismatch().unwrap();
        assert_eq!((m.by, m.detail, m.tries), (vec![Scan], "x".to_string(), 1));
        assert!(
            api.lanes_skip_api(),
            "the lanes leave the API alone for a while"
        );
        assert!(!api.link.is_offline(), "the API answered");
        // A lookup or the keep-alive says nothing about the mutation.
        api.observe(Lookup, &Ok(()));
        api.observe(KeepAlive, &Ok(()));
        assert!(api.has_mismatch());
        // A replay batch sends the same mutation.
        api.observe(Replay, &Ok(()));
        assert!(!api.has_mismatch());
        api.observe::<()>(Lookup, &Err(mismatch));
        api.observe(Scan, &Ok(()));
        assert!(api.has_mismatch());
        api.observe(Lookup, &Ok(()));
        assert!(!api.has_mismatch());
        for by in [Lookup, Scan, Replay, KeepAlive, Enrolment] {
            assert!(clears_mismatch(by, by), "{by:?}");
        }
        assert!(!clears_mismatch(Enrolment, Lookup));
        // Met by two operations: both must fit again.
        api.observe::<()>(Lookup, &Err(err(ErrorClass::Mismatch, Some(200))));
        api.observe::<()>(Replay, &Err(err(ErrorClass::Mismatch, Some(200))));
        assert_eq!(api.mismatch().unwrap().by, vec![Lookup, Replay]);
        assert_eq!(api.mismatch().unwrap().tries, 2);
        api.observe(Lookup, &Ok(()));
        assert!(api.has_mismatch(), "the scan event still does not fit");
        api.observe(Scan, &Ok(()));
        assert!(!api.has_mismatch());
    }

    #[test]
    fn the_lanes_try_again_after_a_growing_while() {
        let s = std::time::Duration::from_secs;
        let got: Vec<_> = (1..=9).map(lanes_retry_after).collect();
        assert_eq!(
            got,
            [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60), s(60)]
        );
    }

    #[tokio::test]
    async fn the_replay_waits_for_the_lanes_but_not_forever() {
        let o = Outbox::new(Default::default());
        o.wait_quiet(Duration::from_secs(60)).await;
        o.set_live(true);
        let t = tokio::time::Instant::now();
        o.wait_quiet(Duration::from_millis(30)).await;
        assert!(
            t.elapsed() >= Duration::from_millis(30),
            "waited for the lane"
        );
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.wait_quiet(Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        o.set_live(false);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when the lane is done")
            .unwrap();
    }

    #[test]
    fn a_batch_skips_what_is_in_flight_and_what_finished_while_it_was_read() {
        let o = Outbox::new(Default::default());
        o.set_inflight("a", true);
        let mark = o.inflight_mark();
        o.set_inflight("b", true);
        o.set_inflight("a", false);
        let skip = o.skip_for_replay(mark);
        assert!(skip.contains("a"), "finished after the mark");
        assert!(skip.contains("b"), "still on its way");
        let later = o.inflight_mark();
        assert!(!o.skip_for_replay(later).contains("a"), "finished before");
    }

    #[test]
    fn the_pending_count_and_the_full_queue() {
        let o = Outbox::new(Default::default());
        o.set_pending(2);
        assert!(!o.is_full(3));
        o.admitted();
        assert!(o.is_full(3));
        assert_eq!(o.pending(), 3);
    }
}
