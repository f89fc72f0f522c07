//! A lane: where one reader's events become verdicts, in order.
//!
//! Each reader is its own lane from the start: its thread feeds the lane's channel, and
//! lanes decide concurrently, each in order. One [`Lane`] owns one dispatcher and one
//! debouncer for its whole life, enrolled or not:
//!
//! 1. [`Lane::run`] takes a reader event: a code, a malformed read, the reader coming or
//!    going.
//! 2. A code is debounced (a repeat within `debounce_ms` is not a new scan).
//! 3. [`scan`] decides it: outside the reader's opening hours ([`crate::hours`]) or not
//!    enrolled yet (a state of the lane: [`ApiSlot`]) is a local reject; offline or out of
//!    budget, the offline policy; otherwise the API. The decision
//!    is a [`commit::Commit`]: what to commit, nothing done yet.
//! 4. [`commit::commit`] does it, in the one order: store, feedback, tidy-up, record, log.

pub mod commit;
pub mod offline;
pub mod row;
pub mod scan;
pub mod stages;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::api::Client;
use crate::debounce::Debouncer;
use crate::decision::{Direction, OfflineRules, Rules};
use crate::mask::mask_code;
use crate::outputs::feedback::LaneFeedback;
use crate::reader::ReaderEvent;
use crate::shutdown::Shutdown;
use crate::state::Shared;

pub use commit::{Mode, Outcome};
pub use scan::Budget;

/// A lane's settings.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    pub device: String,
    /// The reader's name and direction, and its place in the board's readers.
    pub reader: String,
    pub direction: Direction,
    pub reader_index: usize,
    pub rules: Rules,
    pub offline: OfflineRules,
    pub cache_ttl: Duration,
    pub budget: Budget,
    pub debounce: Duration,
    pub max_pending: u64,
    /// The reader's opening hours, their zone, and what an unsynced clock does to them.
    pub hours: crate::hours::Hours,
    pub zone: jiff::tz::TimeZone,
    pub unsynced_clock: crate::hours::UnsyncedClock,
}

/// The API client as the lanes see it: none until the device has its token.
#[derive(Clone)]
pub struct ApiSlot {
    client: watch::Receiver<Option<Client>>,
    /// The first enrolment attempt is on its way (a code read meanwhile waits for it).
    first_attempt: Arc<AtomicBool>,
}

/// The sending side of [`ApiSlot`], for whoever enrols the device.
pub struct ApiSlotSender {
    tx: watch::Sender<Option<Client>>,
    first_attempt: Arc<AtomicBool>,
}

/// A slot; `enrolling`: the first enrolment attempt is about to be made.
pub fn api_slot(enrolling: bool) -> (ApiSlotSender, ApiSlot) {
    let (tx, rx) = watch::channel(None);
    let first_attempt = Arc::new(AtomicBool::new(enrolling));
    (
        ApiSlotSender {
            tx,
            first_attempt: first_attempt.clone(),
        },
        ApiSlot {
            client: rx,
            first_attempt,
        },
    )
}

impl ApiSlotSender {
    /// The device has its token: the lanes use this client from now on.
    pub fn enrolled(&self, client: Client) {
        self.tx.send_replace(Some(client));
    }

    /// The first enrolment attempt failed: codes stop waiting for it.
    pub fn first_attempt_failed(&self) {
        self.first_attempt.store(false, Ordering::Release);
    }
}

impl ApiSlot {
    /// The client now, if the device is enrolled (for work that never waits for it).
    pub fn current(&self) -> Option<Client> {
        self.client.borrow().clone()
    }

    /// The client, if the device is enrolled; a code read while the first enrolment attempt
    /// is on its way waits for it until `deadline` (a device starting up with a guest already
    /// at the door).
    async fn client(&mut self, deadline: tokio::time::Instant) -> Option<Client> {
        if let Some(c) = self.client.borrow().clone() {
            return Some(c);
        }
        if !self.first_attempt.load(Ordering::Acquire) {
            return None;
        }
        tokio::time::timeout_at(deadline, self.client.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|c| c.clone()))
    }
}

/// Ends the lane's live mark however its work on an event ends.
struct Live(crate::state::Outbox);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.set_live(false);
    }
}

/// One reader's lane.
pub struct Lane {
    settings: LaneSettings,
    feedback: LaneFeedback,
    shared: Shared,
    api: ApiSlot,
    debouncer: Debouncer,
    /// Since when (monotonic ms + 1) the lane is busy with an event; 0: idle. The watchdog
    /// reads it.
    busy: Arc<AtomicI64>,
}

impl Lane {
    pub fn new(
        settings: LaneSettings,
        feedback: LaneFeedback,
        shared: Shared,
        api: ApiSlot,
    ) -> Self {
        let debouncer = Debouncer::new(settings.debounce);
        Lane {
            settings,
            feedback,
            shared,
            api,
            debouncer,
            busy: Default::default(),
        }
    }

    /// The watchdog's view of the lane.
    pub fn busy(&self) -> Arc<AtomicI64> {
        self.busy.clone()
    }

    /// The lane's life: its events in order until the reader's input ends (stdin) or the
    /// daemon stops. A stop drops a decision in progress (nothing of it is stored, and the
    /// outputs are already off); a commit, once begun, is finished (a few ms).
    pub async fn run(mut self, mut rx: mpsc::Receiver<ReaderEvent>, mut shutdown: Shutdown) {
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = shutdown.recv() => return,
            };
            let Some(ev) = ev else { return };
            if matches!(ev, ReaderEvent::Eof) {
                return;
            }
            // Monotonic (+1 so that 0 stays "idle"): a clock step at boot is no wedge.
            self.busy
                .store(crate::clock::mono_ms() as i64 + 1, Ordering::Relaxed);
            self.shared.outbox.set_live(true);
            let _live = Live(self.shared.outbox.clone());
            let decided = tokio::select! {
                c = self.decide_event(ev) => c,
                _ = shutdown.recv() => return,
            };
            if let Some(c) = decided {
                self.commit(c).await;
            }
            self.busy.store(0, Ordering::Relaxed);
        }
    }

    /// What one reader event comes to: a commit, or nothing (a repeat, the reader's own
    /// events, which are dealt with here).
    async fn decide_event(&mut self, ev: ReaderEvent) -> Option<commit::Commit> {
        match ev {
            ReaderEvent::Code { code, last_byte } => {
                if !self.debouncer.is_new_scan(&code, last_byte) {
                    tracing::debug!(code = %mask_code(&code), "repeat within the debounce window: not a new scan");
                    return None;
                }
                let stages = Arc::new(stages::Stages::new(last_byte));
                stages.mark(stages::Stage::Lane);
                let mut c = self.decide(&code, last_byte, &stages).await;
                stages.mark(stages::Stage::Decided);
                c.stages = Some(stages);
                Some(c)
            }
            ReaderEvent::Malformed { kind, last_byte } => {
                Some(scan::malformed(kind.to_string(), last_byte))
            }
            ReaderEvent::Connected { .. } | ReaderEvent::Disconnected { .. } => {
                self.reader_event(&ev);
                None
            }
            ReaderEvent::Eof => None,
        }
    }

    async fn commit(&self, c: commit::Commit) -> Outcome {
        let sinks = commit::Sinks {
            store: &self.shared.store,
            signal: &self.feedback,
            shared: &self.shared,
            reader: &self.settings.reader,
            direction: self.settings.direction,
            max_pending: self.settings.max_pending,
        };
        commit::commit(c, &sinks).await
    }

    async fn decide(
        &mut self,
        code: &str,
        last_byte: Instant,
        stages: &Arc<stages::Stages>,
    ) -> commit::Commit {
        let s = &self.settings;
        if self.shared.board.override_of(&s.reader) == Some(crate::store::OverrideMode::Lockdown) {
            return scan::lockdown(s, code, last_byte);
        }
        if let Some(why) = crate::hours::closed_now(
            &s.hours,
            s.unsynced_clock,
            crate::clock::clock_synced(),
            jiff::Timestamp::now(),
            &s.zone,
        ) {
            return scan::outside_hours(s, code, last_byte, why);
        }
        let deadline = self.settings.budget.deadline(last_byte);
        match self.api.client(deadline).await {
            Some(client) => {
                scan::decide(
                    &client,
                    &self.settings,
                    &self.shared,
                    code,
                    last_byte,
                    stages,
                )
                .await
            }
            None => scan::not_enrolled(&self.settings, code, last_byte),
        }
    }

    /// The reader came or went: status, metrics and a log line.
    fn reader_event(&self, ev: &ReaderEvent) {
        let (name, index) = (&self.settings.reader, self.settings.reader_index);
        match ev {
            ReaderEvent::Connected { path } => {
                self.shared.board.set_reader_connected(index, true);
                tracing::info!(reader = %name, path = %path.display(), "reader connected");
            }
            ReaderEvent::Disconnected { path, error } => {
                self.shared.board.set_reader_connected(index, false);
                tracing::warn!(reader = %name, path = %path.display(), "reader disconnected ({error}); reopening when it is back");
            }
            _ => {}
        }
    }
}
