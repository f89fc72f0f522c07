//! The scan pipeline: debounce, look up, decide, record, give feedback, log.
//!
//! The whole scan has a budget (`api.timeout_ms`, counted from the code's last byte). The
//! online part runs as its own task so that the budget can end the wait without cutting a
//! request in half: a lookup that answers after the budget is dropped before anything is
//! recorded; a `createScanEvent` already on its way is left to finish and its late answer is
//! logged. When the budget runs out, or the API is unavailable (transport, 5xx, 429,
//! throttling, auth), the offline policy decides.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::api::classify::ErrorClass;
use crate::api::{ApiError, Client, ScanEventInput};
use crate::debounce::Debouncer;
use crate::decision::{self, OfflinePolicy, Reason, Rules, Verdict};
use crate::mask::{mask_code, scrub};
use crate::outputs::feedback::Feedback;
use crate::reader::ReaderEvent;

/// How a scan was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    /// Decided with the API's answer (true) or by the offline policy (false).
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
    pub rules: Rules,
    pub policy: OfflinePolicy,
    pub budget: Duration,
    pub debounce: Duration,
}

const LOOKING_UP: u8 = 0;
const RECORDING: u8 = 1;
const ABANDONED: u8 = 2;
const LATE: u8 = 3;

enum Online {
    Rejected(Reason),
    Recorded {
        event_id: String,
    },
    Refused(String),
    /// The API could not answer: the offline policy decides.
    Unavailable(ApiError),
    /// A permanent error on the lookup.
    Failed(ApiError),
    /// The budget ran out first (the task stopped before recording anything).
    Abandoned,
}

pub struct Scanner {
    client: Client,
    settings: ScanSettings,
    feedback: Feedback,
    debouncer: Debouncer,
}

impl Scanner {
    pub fn new(client: Client, settings: ScanSettings, feedback: Feedback) -> Self {
        let debouncer = Debouncer::new(settings.debounce);
        Scanner {
            client,
            settings,
            feedback,
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
                tracing::info!(
                    code = "-",
                    verdict = %Verdict::Reject,
                    reason = %Reason::Malformed,
                    mode = "local",
                    latency_ms = %format_ms(last_byte.elapsed()),
                    detail = %kind,
                    "scan"
                );
                None
            }
            ReaderEvent::Connected { path } => {
                tracing::info!(path = %path.display(), "reader connected");
                None
            }
            ReaderEvent::Disconnected { path, error } => {
                tracing::warn!(path = %path.display(), "reader disconnected ({error}); reopening when it is back");
                None
            }
            ReaderEvent::Eof => None,
        }
    }

    async fn scan(&mut self, code: String, last_byte: Instant) -> Outcome {
        let scan_id = Uuid::new_v4();
        let scanned_at = OffsetDateTime::now_utc() - last_byte.elapsed();
        let deadline = tokio::time::Instant::from_std(last_byte) + self.settings.budget;
        let phase = Arc::new(AtomicU8::new(LOOKING_UP));
        let mut task = tokio::spawn(online(
            self.client.clone(),
            code.clone(),
            self.settings.clone(),
            scan_id,
            scanned_at,
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
                    // createScanEvent is on its way: let it finish and log its answer.
                    phase.store(LATE, Ordering::Release);
                }
                Online::Abandoned
            }
        };
        let (verdict, reason, online, event_id, detail) = match answer {
            Online::Recorded { event_id } => {
                (Verdict::Accept, Reason::Valid, true, Some(event_id), None)
            }
            Online::Rejected(reason) => (Verdict::Reject, reason, true, None, None),
            Online::Refused(detail) => (Verdict::Reject, Reason::Refused, true, None, Some(detail)),
            Online::Failed(e) => (
                Verdict::Reject,
                Reason::ApiError,
                true,
                None,
                Some(e.to_string()),
            ),
            Online::Unavailable(e) => (
                self.settings.policy.verdict(),
                Reason::OfflinePolicy,
                false,
                None,
                Some(e.to_string()),
            ),
            Online::Abandoned => (
                self.settings.policy.verdict(),
                Reason::OfflinePolicy,
                false,
                None,
                Some(format!(
                    "no answer within {} ms",
                    self.settings.budget.as_millis()
                )),
            ),
        };
        match verdict {
            Verdict::Accept => self.feedback.accept(),
            Verdict::Reject => self.feedback.reject(),
        }
        let latency = last_byte.elapsed();
        let detail = detail.map(|d| scrub(&d, &code));
        tracing::info!(
            code = %mask_code(&code),
            verdict = %verdict,
            reason = %reason,
            mode = %if online { "online" } else { "offline" },
            latency_ms = %format_ms(latency),
            scan_id = %scan_id,
            event_id = %event_id.as_deref().unwrap_or("-"),
            detail = %detail.as_deref().unwrap_or("-"),
            "scan"
        );
        if verdict == Verdict::Accept && !online {
            tracing::warn!(
                scan_id = %scan_id,
                "admitted by the offline policy: this scan has no scan event at Tiketo (the durable offline queue is not built yet)"
            );
        }
        Outcome {
            verdict,
            reason,
            online,
            scan_id,
            event_id,
            detail,
        }
    }
}

/// The online part of a scan: lookup, decision, record.
async fn online(
    client: Client,
    code: String,
    s: ScanSettings,
    scan_id: Uuid,
    scanned_at: OffsetDateTime,
    phase: Arc<AtomicU8>,
) -> Online {
    let pass = match client.pass_by_scan_code(&code).await {
        Ok(p) => p,
        Err(e) if e.class.is_unavailable() => return Online::Unavailable(e),
        Err(e) => return Online::Failed(e),
    };
    let pass = match decision::decide(pass.as_ref(), &s.rules, OffsetDateTime::now_utc()) {
        Err(reason) => return Online::Rejected(reason),
        Ok(()) => pass.expect("decide accepts only a pass"),
    };
    if phase
        .compare_exchange(LOOKING_UP, RECORDING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        tracing::debug!(scan_id = %scan_id, "lookup answered after the budget; nothing recorded");
        return Online::Abandoned;
    }
    let input = ScanEventInput {
        code: code.clone(),
        reward_points: decision::reward_points(&pass, &s.rules),
        data: scan_data(scan_id, scanned_at, &s.device),
    };
    let result = client.create_scan_event(&input).await;
    let late = phase.load(Ordering::Acquire) == LATE;
    let answer = match result {
        Ok(ack) if ack.voided => Online::Refused(format!("scan event {} came back voided", ack.id)),
        Ok(ack) => Online::Recorded { event_id: ack.id },
        Err(e) if e.class.is_unavailable() => Online::Unavailable(e),
        Err(e) => Online::Refused(e.to_string()),
    };
    if late {
        match &answer {
            Online::Recorded { event_id } => tracing::warn!(
                scan_id = %scan_id, event_id = %event_id,
                "scan event recorded after the budget; the offline policy had already decided this scan"
            ),
            _ => tracing::warn!(scan_id = %scan_id, "scan event after the budget was not recorded"),
        }
    }
    answer
}

/// `ScanEventInput.data`: what the server needs to recognise a replay and to know when the
/// scan really happened.
pub fn scan_data(scan_id: Uuid, scanned_at: OffsetDateTime, device: &str) -> String {
    serde_json::json!({
        "scanId": scan_id.to_string(),
        "scannedAt": rfc3339_ms(scanned_at),
        "device": device,
    })
    .to_string()
}

/// RFC 3339 in UTC with milliseconds: `2026-11-27T21:25:23.123Z`.
pub fn rfc3339_ms(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
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
        let v: serde_json::Value = serde_json::from_str(&scan_data(id, t, "front-door")).unwrap();
        assert_eq!(v["scanId"], id.to_string());
        assert_eq!(v["scannedAt"], "2025-11-27T21:25:23.123Z");
        assert_eq!(v["device"], "front-door");
    }
}
