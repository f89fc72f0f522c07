//! The decision step: a code becomes a [`Commit`], what to commit; the commit step does the
//! rest. The only IO here is the API's (and the row an online accept writes just before its
//! event leaves: the one write that cannot wait for the verdict).
//!
//! Online: `passByScanCode`, the decision, then for an accept the pending row is written
//! and only then does `createScanEvent` send it (nothing reaches the server that the store
//! does not hold); the answer says whether it was recorded. Offline (the link is down, the API failed, or the budget ran out):
//! the offline policy decides, in the store's transaction ([`OfflineInput::decide_in`]).
//!
//! The whole scan has a budget (`api.timeout_ms`, counted from the code's last byte,
//! [`Budget`]). The online part runs as its own task so the budget can end the wait without
//! cutting a request in half: a lookup that answers after the budget is dropped before
//! anything is recorded; a `createScanEvent` already on its way is left to finish, and its
//! late answer updates the row.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::api::classify::ErrorClass;
use crate::api::{ApiError, Client, ScanEventInput};
use crate::decision::{self, Direction, PassFacts, Reason, Rules, Verdict};
use crate::state::{Caller, Shared};
use crate::store::StoreError;

use super::commit::{Commit, Decision, Mode, Row, Tidy};
use super::offline::OfflineInput;
use super::row::RowBase;
use super::stages::{Stage, Stages};
use super::LaneSettings;

/// A scan's time budget, counted from the code's last byte.
#[derive(Debug, Clone, Copy)]
pub struct Budget(pub Duration);

impl Budget {
    /// When the scan must be decided.
    pub fn deadline(self, last_byte: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(last_byte) + self.0
    }

    /// What is left of it now.
    pub fn left(self, last_byte: Instant) -> Duration {
        self.0.saturating_sub(last_byte.elapsed())
    }
}

/// The commit of the scan `base`.
fn commit_of(base: &RowBase, last_byte: Instant, mode: Mode, decision: Decision) -> Commit {
    Commit {
        code: Some(base.code.clone()),
        scan_id: Some(base.scan_id),
        last_byte,
        mode,
        decision,
        tidy: None,
        event_id: None,
        detail: None,
        stages: None,
    }
}

/// A code read before the device has its token: rejected here, without the API.
pub fn not_enrolled(s: &LaneSettings, code: &str, last_byte: Instant) -> Commit {
    local_reject(s, code, last_byte, Reason::NotEnrolled)
}

/// A code read outside the reader's opening hours: rejected here, without the API, online
/// and offline alike. `why`: the detail of the scan line.
pub fn outside_hours(s: &LaneSettings, code: &str, last_byte: Instant, why: &str) -> Commit {
    let mut c = local_reject(s, code, last_byte, Reason::OutsideHours);
    c.detail = Some(why.into());
    c
}

/// A code read while the reader is in lockdown (a remote command): rejected here, without
/// the API, until `normal`.
pub fn lockdown(s: &LaneSettings, code: &str, last_byte: Instant) -> Commit {
    let mut c = local_reject(s, code, last_byte, Reason::Lockdown);
    c.detail = Some("lockdown: every scan rejected until a normal command".into());
    c
}

fn local_reject(s: &LaneSettings, code: &str, last_byte: Instant, reason: Reason) -> Commit {
    let base = RowBase::new(code, last_byte, s);
    let row = base.row(Verdict::Reject, reason, false, None);
    commit_of(
        &base,
        last_byte,
        Mode::Local,
        Decision::Decided {
            verdict: Verdict::Reject,
            reason,
            row: Some(Row::Rejected {
                row: Box::new(row),
                cache: None,
            }),
        },
    )
}

/// A read the framer refused: rejected, nothing to store.
pub fn malformed(kind: String, last_byte: Instant) -> Commit {
    Commit {
        code: None,
        scan_id: None,
        last_byte,
        mode: Mode::Local,
        decision: Decision::Decided {
            verdict: Verdict::Reject,
            reason: Reason::Malformed,
            row: None,
        },
        tidy: None,
        event_id: None,
        detail: Some(kind),
        stages: None,
    }
}

/// Decides one code with the API (or, offline or out of budget, by the offline policy).
pub async fn decide(
    client: &Client,
    s: &LaneSettings,
    shared: &Shared,
    code: &str,
    last_byte: Instant,
    stages: &Arc<Stages>,
) -> Commit {
    let base = RowBase::new(code, last_byte, s);
    let left = s.budget.left(last_byte);
    let mismatch = shared.api.lanes_skip_api();
    if shared.api.link.is_offline() || mismatch || left.is_zero() {
        // Offline, the API's schema does not fit this daemon, or the code waited behind
        // earlier scans at this reader until its budget was gone: the offline policy decides,
        // and the API is not to blame.
        let detail = if left.is_zero() {
            "the budget ran out while earlier scans at this reader were decided"
        } else if mismatch {
            "api mismatch: the API's schema does not fit this daemon (see status)"
        } else {
            "offline: the API was unreachable on earlier requests"
        };
        let input = OfflineInput::new(s, shared, base.clone(), None);
        let mut c = commit_of(
            &base,
            last_byte,
            Mode::Offline,
            Decision::Offline(Box::new(input)),
        );
        c.detail = Some(detail.into());
        return c;
    }
    // How long the code waited before this attempt (behind earlier scans at its reader).
    let waited = last_byte.elapsed();
    let phase = Arc::new(AtomicU8::new(LOOKING_UP));
    let mut task = tokio::spawn(online(
        client.clone(),
        shared.clone(),
        base.clone(),
        s.rules.clone(),
        phase.clone(),
        stages.clone(),
    ));
    let answer = match tokio::time::timeout_at(s.budget.deadline(last_byte), &mut task).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(join)) => Found::Failed(ApiError::new(
            ErrorClass::Permanent,
            None,
            format!("scan task failed: {join}"),
        )),
        Err(_elapsed) => {
            if phase
                .compare_exchange(LOOKING_UP, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // createScanEvent is on its way: let it finish and update the row.
                phase.store(LATE, Ordering::Release);
            }
            Found::Abandoned
        }
    };
    let offline = |fresh: Option<PassFacts>, detail: String| {
        let input = OfflineInput::new(s, shared, base.clone(), fresh);
        let mut c = commit_of(
            &base,
            last_byte,
            Mode::Offline,
            Decision::Offline(Box::new(input)),
        );
        c.detail = Some(detail);
        c
    };
    match answer {
        Found::Recorded {
            event_id,
            pass,
            stored,
        } => {
            let mut c = commit_of(
                &base,
                last_byte,
                Mode::Online,
                Decision::WrittenAhead(stored),
            );
            c.tidy = Some(Tidy::Sent {
                scan_id: base.scan_id.to_string(),
                event_id: event_id.clone(),
                code: base.code.clone(),
                pass,
                exit: s.direction == Direction::Exit,
                scanned_at_ms: (base.scanned_at.unix_timestamp_nanos() / 1_000_000) as i64,
            });
            c.event_id = Some(event_id);
            c
        }
        Found::Refused(detail) => {
            let row = Row::Refused {
                scan_id: base.scan_id.to_string(),
                detail: detail.clone(),
            };
            let mut c = commit_of(
                &base,
                last_byte,
                Mode::Online,
                rejected(Reason::Refused, row),
            );
            c.detail = Some(detail);
            c
        }
        Found::Rejected { reason, pass } => {
            let row = Row::Rejected {
                row: Box::new(base.row(Verdict::Reject, reason, true, None)),
                cache: Some(pass),
            };
            commit_of(&base, last_byte, Mode::Online, rejected(reason, row))
        }
        Found::Failed(e) => {
            let row = Row::Rejected {
                row: Box::new(base.row(Verdict::Reject, Reason::ApiError, true, None)),
                cache: None,
            };
            let mut c = commit_of(
                &base,
                last_byte,
                Mode::Online,
                rejected(Reason::ApiError, row),
            );
            c.detail = Some(e.to_string());
            c
        }
        Found::Unavailable { error, pass } => offline(pass, error.to_string()),
        Found::Abandoned => {
            // Counted against the API only when it had a fair share of the budget (not for a
            // code that waited behind others until almost nothing was left).
            if s.budget.0.saturating_sub(waited) >= s.budget.0 / 2 {
                shared.api.no_answer("no answer within the scan budget");
            }
            offline(
                None,
                format!("no answer within {} ms", s.budget.0.as_millis()),
            )
        }
    }
}

fn rejected(reason: Reason, row: Row) -> Decision {
    Decision::Decided {
        verdict: Verdict::Reject,
        reason,
        row: Some(row),
    }
}

const LOOKING_UP: u8 = 0;
const RECORDING: u8 = 1;
const ABANDONED: u8 = 2;
const LATE: u8 = 3;

/// What the online part found.
enum Found {
    /// The pass was looked up and rejected; nothing was written yet.
    Rejected {
        reason: Reason,
        pass: Option<PassFacts>,
    },
    /// The server recorded the event; `stored`: how the row written meanwhile went.
    Recorded {
        event_id: String,
        pass: PassFacts,
        stored: crate::store::Result<()>,
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

/// The online part of a scan: lookup, decision, durable pending row with the scan event.
async fn online(
    client: Client,
    shared: Shared,
    base: RowBase,
    rules: Rules,
    phase: Arc<AtomicU8>,
    stages: Arc<Stages>,
) -> Found {
    stages.mark(Stage::Task);
    let looked_up = client
        .look_up(&base.code, shared.display.wants_parameters())
        .await
        .map_err(|e| e.scrub(&base.code));
    stages.mark(Stage::LookedUp);
    shared.api.observe(Caller::Lookup, &looked_up);
    let pass = match looked_up {
        Ok(p) => p,
        Err(e) if e.class.is_unavailable() => {
            return Found::Unavailable {
                error: e,
                pass: None,
            }
        }
        Err(e) => return Found::Failed(e),
    };
    if let Err(reason) = decision::decide(pass.as_ref(), &rules, OffsetDateTime::now_utc()) {
        return Found::Rejected { reason, pass };
    }
    let facts = pass.expect("decide accepts only a pass");
    let reward_points = decision::reward_points(&facts, &rules);
    if phase
        .compare_exchange(LOOKING_UP, RECORDING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // The budget ran out meanwhile: the offline decision is what counts. Nothing is sent.
        tracing::debug!(scan_id = %base.scan_id, "lookup answered after the budget; nothing sent");
        return Found::Abandoned;
    }
    // The pending row is written before the event leaves (a write to the WAL, no fsync: a
    // fraction of a millisecond), so the server never holds an event the store does not: a
    // crash after the write leaves a pending row to replay (a duplicate at the server is
    // recognisable by its scanId), a crash before it leaves nothing anywhere. Sent
    // concurrently, a kill between the request and the write left the server with a scan the
    // device had never committed (the guest saw nothing, the pass was used).
    let row = base.row(Verdict::Accept, Reason::Valid, true, reward_points);
    let id = base.scan_id.to_string();
    shared.outbox.set_inflight(&id, true);
    let input = ScanEventInput {
        code: base.code.clone(),
        reward_points,
        data: crate::api::scan_data(
            base.scan_id,
            base.scanned_at,
            base.clock_synced,
            false,
            &base.device,
            &base.reader,
            base.direction,
        ),
    };
    let marks = stages.clone();
    let stored = shared
        .store
        .run(move |st| {
            marks.mark(Stage::RowStore);
            let r = st.insert_scan_if_absent(&row);
            marks.mark(Stage::RowDone);
            r
        })
        .await;
    stages.mark(Stage::Written);
    let result = client.create_scan_event(&input).await;
    stages.mark(Stage::Recorded);
    let result = result.map_err(|e| e.scrub(&base.code));
    shared.api.observe(Caller::Scan, &result);
    let late = phase.load(Ordering::Acquire) == LATE;
    let answer = match result {
        Ok(ack) if ack.voided => Found::Refused(format!("the server voided scan event {}", ack.id)),
        Ok(ack) => {
            shared.outbox.synced();
            Found::Recorded {
                event_id: ack.id,
                pass: facts,
                stored: stored
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| StoreError(e.0.clone())),
            }
        }
        Err(e) if e.class.is_unavailable() => Found::Unavailable {
            error: e,
            pass: Some(facts),
        },
        Err(e) => Found::Refused(e.to_string()),
    };
    if let (Err(e), false) = (&stored, matches!(answer, Found::Recorded { .. })) {
        tracing::error!(scan_id = %base.scan_id, "accepted scan not stored: {e}");
    }
    if late {
        // The offline policy already decided this scan; record what the server said.
        let id2 = id.clone();
        match &answer {
            Found::Recorded { event_id, .. } => {
                let ev = event_id.clone();
                tracing::warn!(scan_id = %base.scan_id, event_id = %ev, "scan event recorded after the budget");
                let _ = shared
                    .store
                    .run(move |st| st.mark_sent(&id2, Some(&ev)))
                    .await;
            }
            Found::Refused(d) => {
                let d = d.clone();
                tracing::warn!(scan_id = %base.scan_id, "scan event refused after the budget: {d}");
                let _ = shared.store.run(move |st| st.mark_dead(&id2, &d)).await;
            }
            _ => {
                tracing::info!(scan_id = %base.scan_id, "scan event not sent within the budget; the replay will send it")
            }
        }
    }
    if late {
        shared.outbox.set_inflight(&id, false);
        shared.outbox.replay_wake.notify_one();
    } else if !matches!(answer, Found::Recorded { .. }) {
        shared.outbox.set_inflight(&id, false);
    }
    // A recorded event stays in flight until the commit step has marked it sent: the replay
    // must not pick its row up as pending in between.
    answer
}
