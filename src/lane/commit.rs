//! The commit step: the one place where a decided scan becomes facts, in this order.
//!
//! 1. **Store.** The scan's row, before anything a guest can see: a pending row (the only
//!    record of an admitted guest) waits for fsync, a rejected one does not. An online accept
//!    wrote its row while its event was on its way ([`Decision::WrittenAhead`]); an offline
//!    decision is made inside the store's transaction, from the cache and the use count it
//!    reads there ([`Decision::Offline`]). A store that fails does not hold the door: the
//!    verdict stands (offline: the policy alone decides) and an error line says what was not
//!    recorded.
//! 2. **Feedback.** Relay and green, or red and the beeps.
//! 3. **Tidy-up.** Updates of a row that is already stored (an acknowledged event marked
//!    sent, the pass cached): after the feedback, so that the guest does not wait for them.
//! 4. **Record.** The outbox count (and the replay's wake-up), the metrics, the recent scans
//!    of the status page, a full queue's alarm, the guest screen (with the holder's
//!    `parameters`: the lookup's online, the cached pass's offline).
//! 5. **Log.** The `scan` line.
//!
//! The store and the outputs are seams ([`CommitStore`], [`Signal`]), so the order is tested
//! with recording fakes.

use std::future::Future;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::decision::{Direction, PassFacts, Reason, UseChange, Verdict};
use crate::mask::{mask_code, scrub};
use crate::outputs::feedback::LaneFeedback;
use crate::state::{RecentScan, Shared};
use crate::store::{NewScan, StoreHandle};

use super::offline::OfflineInput;

/// How a scan was decided: with the API's answer, by the offline policy, or here alone (a
/// malformed read, a device not enrolled yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Online,
    Offline,
    Local,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
            Mode::Local => "local",
        }
    }
}

/// What the store takes before the feedback of a scan decided without the offline policy.
#[derive(Debug, Clone)]
pub enum Row {
    /// A rejected scan; `cache`: what the lookup said of the pass, to remember.
    Rejected {
        row: Box<NewScan>,
        cache: Option<Option<PassFacts>>,
    },
    /// The server refused the event of a row written ahead.
    Refused { scan_id: String, detail: String },
}

/// The verdict and what it costs the store.
#[derive(Debug)]
pub enum Decision {
    /// Decided; `row`: what to store first (none for a malformed read: there is no code).
    Decided {
        verdict: Verdict,
        reason: Reason,
        row: Option<Row>,
    },
    /// An online accept whose row was written while its event was on its way (feedback waited
    /// for both); how that write went.
    WrittenAhead(crate::store::Result<()>),
    /// The offline policy decides in the store's transaction.
    Offline(Box<OfflineInput>),
}

/// An update of a row already stored, done after the feedback.
#[derive(Debug, Clone)]
pub enum Tidy {
    /// The server has the event: mark it sent, cache the pass, and (an exit) reset the
    /// pass's offline uses.
    Sent {
        scan_id: String,
        event_id: String,
        code: String,
        pass: PassFacts,
        exit: bool,
        /// When the scan was made (its lookup's time: the venue's record keeps the online
        /// entry made with it).
        scanned_at_ms: i64,
    },
}

/// A decided scan, ready to commit.
#[derive(Debug)]
pub struct Commit {
    /// The code (None for a malformed read).
    pub code: Option<String>,
    /// The scan's id (None for a malformed read: it has no row).
    pub scan_id: Option<Uuid>,
    pub last_byte: Instant,
    pub mode: Mode,
    pub decision: Decision,
    pub tidy: Option<Tidy>,
    pub event_id: Option<String>,
    pub detail: Option<String>,
    /// Its stages, timed (the lane's; none in tests).
    pub stages: Option<std::sync::Arc<super::stages::Stages>>,
}

/// How a scan ended, as the lane reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    pub mode: Mode,
    pub scan_id: Option<Uuid>,
    pub event_id: Option<String>,
    pub detail: Option<String>,
}

/// A time in unix ms.
fn ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The store, as the commit step uses it.
pub trait CommitStore {
    fn write(&self, row: Row) -> impl Future<Output = crate::store::Result<()>> + Send;
    fn decide_offline(
        &self,
        input: OfflineInput,
    ) -> impl Future<Output = crate::store::Result<super::offline::OfflineVerdict>> + Send;
    fn tidy(&self, tidy: Tidy) -> impl Future<Output = crate::store::Result<()>> + Send;
}

/// The outputs, as the commit step uses them.
pub trait Signal {
    fn show(&self, verdict: Verdict, reason: Reason);
}

impl Signal for LaneFeedback {
    fn show(&self, verdict: Verdict, reason: Reason) {
        match verdict {
            Verdict::Accept => self.accept(),
            Verdict::Reject => self.reject(crate::outputs::feedback::Tone::of_reject(reason)),
        }
    }
}

impl CommitStore for StoreHandle {
    async fn write(&self, row: Row) -> crate::store::Result<()> {
        self.run(move |s| match row {
            Row::Rejected { row, cache } => {
                s.insert_scan(&row, UseChange::None)?;
                match cache {
                    Some(pass) => s.cache_put(&row.code, pass.as_ref(), ms(row.scanned_at)),
                    None => Ok(()),
                }
            }
            Row::Refused { scan_id, detail } => s.mark_refused(&scan_id, &detail),
        })
        .await
    }

    async fn decide_offline(
        &self,
        input: OfflineInput,
    ) -> crate::store::Result<super::offline::OfflineVerdict> {
        self.run(move |s| input.decide_in(s)).await
    }

    async fn tidy(&self, tidy: Tidy) -> crate::store::Result<()> {
        self.run(move |s| match tidy {
            Tidy::Sent {
                scan_id,
                event_id,
                code,
                pass,
                exit,
                scanned_at_ms,
            } => {
                s.mark_sent_live(&scan_id, &event_id)?;
                if exit {
                    // The guest is out: the next offline entry is not a second one.
                    s.reset_offline_uses(&code)?;
                }
                s.cache_put(&code, Some(&pass), scanned_at_ms)
            }
        })
        .await
    }
}

/// Where a lane's commits go.
pub struct Sinks<'a, S, F> {
    pub store: &'a S,
    pub signal: &'a F,
    pub shared: &'a Shared,
    pub reader: &'a str,
    pub direction: Direction,
    pub max_pending: u64,
}

/// Commits one scan, in the order of this module's opening.
pub async fn commit<S: CommitStore, F: Signal>(c: Commit, to: &Sinks<'_, S, F>) -> Outcome {
    let id = c
        .scan_id
        .map(|i| i.to_string())
        .unwrap_or_else(|| "-".into());
    // 1. Store.
    let (verdict, reason, holder) = match c.decision {
        Decision::Decided {
            verdict,
            reason,
            row,
        } => {
            if let Some(row) = row {
                let refused = matches!(row, Row::Refused { .. });
                if let Err(e) = to.store.write(row).await {
                    if refused {
                        tracing::error!(scan_id = %id, "cannot mark the refused scan: {e}");
                    } else {
                        tracing::error!(scan_id = %id, "rejected scan not stored: {e}");
                    }
                }
            }
            (verdict, reason, None)
        }
        Decision::WrittenAhead(result) => {
            if let Err(e) = result {
                tracing::error!(scan_id = %id, "accepted scan not stored: {e}");
            }
            let holder = match &c.tidy {
                Some(Tidy::Sent { pass, .. }) => pass.parameters.clone(),
                None => None,
            };
            (Verdict::Accept, Reason::Valid, holder)
        }
        Decision::Offline(input) => {
            let alone = input.without_store();
            match to.store.decide_offline(*input).await {
                Ok(v) => v,
                Err(e) => {
                    // No store: the policy alone decides, and says loudly what is not recorded.
                    tracing::error!(scan_id = %id, "scan decided offline but NOT stored: {e}");
                    alone
                }
            }
        }
    };
    let mark = |stage| {
        if let Some(st) = &c.stages {
            st.mark(stage)
        }
    };
    use super::stages::Stage;
    mark(Stage::Stored);
    // 2. Feedback.
    to.signal.show(verdict, reason);
    mark(Stage::Feedback);
    // 3. Tidy-up.
    if let Some(t) = c.tidy {
        let Tidy::Sent { scan_id, .. } = &t;
        let scan_id = scan_id.clone();
        if let Err(e) = to.store.tidy(t).await {
            tracing::error!(scan_id = %id, "scan event sent but not marked sent ({e}); it may be sent twice (same scanId)");
        }
        to.shared.outbox.set_inflight(&scan_id, false);
        mark(Stage::Tidied);
    }
    // 4. Record.
    let latency = c.last_byte.elapsed();
    if c.mode == Mode::Offline && verdict == Verdict::Accept {
        to.shared.outbox.admitted();
    }
    if reason == Reason::QueueFull {
        to.shared.board.status_wake.notify();
        tracing::error!(
            max_pending = to.max_pending,
            "the queue of unsent scan events is full: nothing more is admitted offline until it drains"
        );
    }
    // The code's fingerprint, once for the status page and the scan line.
    let fp = c
        .code
        .as_deref()
        .map(crate::fingerprint::of)
        .unwrap_or_else(|| "-".into());
    record(to, c.code.as_deref(), &fp, verdict, reason, c.mode, latency);
    to.shared
        .display
        .verdict(to.reader, verdict, reason, holder.as_deref());
    // 5. Log.
    let detail = match (&c.detail, &c.code) {
        (Some(d), Some(code)) => Some(scrub(d, code)),
        (d, _) => d.clone(),
    };
    tracing::info!(
        code = %c.code.as_deref().map(mask_code).unwrap_or_else(|| "-".into()),
        verdict = %verdict,
        reason = %reason,
        mode = %c.mode.as_str(),
        latency_ms = %format_ms(c.last_byte.elapsed()),
        scan_id = %id,
        event_id = %c.event_id.as_deref().unwrap_or("-"),
        detail = %detail.as_deref().unwrap_or("-"),
        reader = %to.reader,
        direction = %to.direction,
        fp = %fp,
        "scan"
    );
    if let Some(st) = &c.stages {
        st.mark(Stage::Done);
        st.log(&id);
    }
    Outcome {
        verdict,
        reason,
        mode: c.mode,
        scan_id: c.scan_id,
        event_id: c.event_id,
        detail,
    }
}

/// The metrics and the status page's recent scans.
fn record<S, F>(
    to: &Sinks<'_, S, F>,
    code: Option<&str>,
    fp: &str,
    verdict: Verdict,
    reason: Reason,
    mode: Mode,
    latency: Duration,
) {
    let m = crate::metrics::metrics();
    crate::metrics::scan(
        verdict.as_str(),
        reason.as_str(),
        mode.as_str(),
        latency.as_secs_f64(),
    );
    m.reader_scans
        .get_or_create(&crate::metrics::ReaderLabels {
            reader: to.reader.to_owned(),
            direction: to.direction.as_str(),
            verdict: verdict.as_str(),
        })
        .inc();
    to.shared.board.push_recent(RecentScan {
        at: crate::clock::rfc3339_ms(time::OffsetDateTime::now_utc()),
        code: code.map(mask_code).unwrap_or_else(|| "-".into()),
        code_fp: fp.to_owned(),
        verdict: verdict.as_str(),
        reason: reason.as_str(),
        mode: mode.as_str(),
        latency_ms: (latency.as_secs_f64() * 1e6).round() / 1e3,
        reader: to.reader.to_owned(),
        direction: to.direction.as_str(),
    });
}

fn format_ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{OfflinePolicy, OfflineRules, Rules};
    use crate::lane::row::RowBase;
    use crate::store::StoreError;
    use std::sync::{Arc, Mutex};

    /// Records every step, store and outputs alike, in one list: the order is the test.
    #[derive(Clone, Default)]
    struct Journal(Arc<Mutex<Vec<String>>>);

    impl Journal {
        fn push(&self, s: impl Into<String>) {
            self.0.lock().unwrap().push(s.into());
        }
        fn steps(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    struct FakeStore {
        journal: Journal,
        fail: bool,
    }

    impl CommitStore for FakeStore {
        async fn write(&self, row: Row) -> crate::store::Result<()> {
            let what = match row {
                Row::Rejected { .. } => "store rejected row",
                Row::Refused { .. } => "store refusal",
            };
            self.journal.push(what);
            self.result()
        }
        async fn decide_offline(
            &self,
            input: OfflineInput,
        ) -> crate::store::Result<super::super::offline::OfflineVerdict> {
            self.journal.push("store offline decision");
            self.result()?;
            Ok(input.without_store())
        }
        async fn tidy(&self, _: Tidy) -> crate::store::Result<()> {
            self.journal.push("store tidy-up");
            self.result()
        }
    }

    impl FakeStore {
        fn result(&self) -> crate::store::Result<()> {
            if self.fail {
                Err(StoreError("disk gone".into()))
            } else {
                Ok(())
            }
        }
    }

    struct FakeSignal(Journal);

    impl Signal for FakeSignal {
        fn show(&self, verdict: Verdict, _reason: Reason) {
            self.0.push(format!("feedback {verdict}"));
        }
    }

    fn shared() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreHandle::open(&dir.path().join("t.db"));
        std::mem::forget(dir);
        Shared::new(store, crate::link::Link::new(2))
    }

    fn offline_input(policy: OfflinePolicy) -> OfflineInput {
        OfflineInput {
            base: RowBase {
                scan_id: Uuid::new_v4(),
                code: "PASS-1234567".into(),
                scanned_at: time::OffsetDateTime::now_utc(),
                boot_id: "b".into(),
                mono_ms: 1,
                clock_synced: true,
                device: "d".into(),
                reader: "reader".into(),
                direction: Direction::Entry,
            },
            fresh: None,
            queue_full: false,
            rules: Rules::default(),
            offline: OfflineRules {
                policy,
                unknown_accepts: false,
                max_offline_uses: 1,
            },
            cache_ttl: Duration::from_secs(60),
        }
    }

    fn commit_of(mode: Mode, decision: Decision, tidy: Option<Tidy>) -> Commit {
        Commit {
            code: Some("PASS-1234567".into()),
            scan_id: Some(Uuid::new_v4()),
            last_byte: Instant::now(),
            mode,
            decision,
            tidy,
            event_id: None,
            detail: None,
            stages: None,
        }
    }

    async fn run(c: Commit, fail: bool) -> (Outcome, Vec<String>, Shared) {
        let journal = Journal::default();
        let store = FakeStore {
            journal: journal.clone(),
            fail,
        };
        let signal = FakeSignal(journal.clone());
        let shared = shared();
        let out = commit(
            c,
            &Sinks {
                store: &store,
                signal: &signal,
                shared: &shared,
                reader: "reader",
                direction: Direction::Entry,
                max_pending: 10,
            },
        )
        .await;
        (out, journal.steps(), shared)
    }

    fn rejected_row() -> Row {
        let base = offline_input(OfflinePolicy::Reject).base;
        Row::Rejected {
            row: Box::new(base.row(Verdict::Reject, Reason::Expired, true, None)),
            cache: None,
        }
    }

    #[tokio::test]
    async fn a_rejected_scan_is_stored_before_the_red() {
        let d = Decision::Decided {
            verdict: Verdict::Reject,
            reason: Reason::Expired,
            row: Some(rejected_row()),
        };
        let (out, steps, shared) = run(commit_of(Mode::Online, d, None), false).await;
        assert_eq!(steps, ["store rejected row", "feedback reject"]);
        assert_eq!(out.reason, Reason::Expired);
        let recent = shared.board.recent();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].reason, "expired");
        assert_ne!(recent[0].code, "PASS-1234567", "masked");
    }

    #[tokio::test]
    async fn a_store_that_fails_still_gives_the_verdict_after_the_attempt() {
        let d = Decision::Decided {
            verdict: Verdict::Reject,
            reason: Reason::Expired,
            row: Some(rejected_row()),
        };
        let (out, steps, _) = run(commit_of(Mode::Online, d, None), true).await;
        assert_eq!(steps, ["store rejected row", "feedback reject"]);
        assert_eq!(out.verdict, Verdict::Reject);
    }

    #[tokio::test]
    async fn an_offline_accept_is_decided_and_stored_before_the_door_opens_and_counted() {
        let d = Decision::Offline(Box::new(offline_input(OfflinePolicy::Accept)));
        let (out, steps, shared) = run(commit_of(Mode::Offline, d, None), false).await;
        assert_eq!(steps, ["store offline decision", "feedback accept"]);
        assert_eq!(
            (out.verdict, out.reason),
            (Verdict::Accept, Reason::OfflinePolicy)
        );
        assert_eq!(shared.outbox.pending(), 1, "one more pending event");
    }

    #[tokio::test]
    async fn without_a_store_the_offline_policy_alone_decides_after_the_attempt() {
        let d = Decision::Offline(Box::new(offline_input(OfflinePolicy::Accept)));
        let (out, steps, shared) = run(commit_of(Mode::Offline, d, None), true).await;
        assert_eq!(steps, ["store offline decision", "feedback accept"]);
        assert_eq!(out.verdict, Verdict::Accept, "policy accept, no store");
        assert_eq!(shared.outbox.pending(), 1);
        let d = Decision::Offline(Box::new(offline_input(OfflinePolicy::Cache)));
        let (out, _, _) = run(commit_of(Mode::Offline, d, None), true).await;
        assert_eq!(
            (out.verdict, out.reason),
            (Verdict::Reject, Reason::OfflinePolicy),
            "policy cache with no cache to read"
        );
    }

    #[tokio::test]
    async fn an_online_accept_opens_first_and_is_marked_sent_after() {
        let tidy = Tidy::Sent {
            scan_id: "s".into(),
            event_id: "e".into(),
            code: "PASS-1234567".into(),
            pass: PassFacts {
                id: "p".into(),
                template_id: "t".into(),
                project_id: None,
                expires: None,
                voided: false,
                scan_config: None,
                parameters: None,
            },
            exit: false,
            scanned_at_ms: 0,
        };
        let (out, steps, shared) = run(
            commit_of(Mode::Online, Decision::WrittenAhead(Ok(())), Some(tidy)),
            false,
        )
        .await;
        assert_eq!(steps, ["feedback accept", "store tidy-up"]);
        assert_eq!(out.verdict, Verdict::Accept);
        assert_eq!(shared.outbox.pending(), 0, "the server has it");
    }

    #[tokio::test]
    async fn a_refusal_is_stored_before_the_red() {
        let d = Decision::Decided {
            verdict: Verdict::Reject,
            reason: Reason::Refused,
            row: Some(Row::Refused {
                scan_id: "s".into(),
                detail: "no".into(),
            }),
        };
        let (_, steps, _) = run(commit_of(Mode::Online, d, None), false).await;
        assert_eq!(steps, ["store refusal", "feedback reject"]);
    }

    #[tokio::test]
    async fn a_malformed_read_stores_nothing_and_is_recorded_with_no_code() {
        let c = crate::lane::scan::malformed("too long".into(), Instant::now());
        let (out, steps, shared) = run(c, false).await;
        assert_eq!(steps, ["feedback reject"]);
        assert_eq!(out.reason, Reason::Malformed);
        assert_eq!(shared.board.recent()[0].code, "-");
    }
}
