//! The facts of a scan's row that do not depend on its verdict: its id, and its time by the
//! wall clock, since boot, and whether the clock was synced.

use std::time::Instant;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::decision::{Direction, Reason, Verdict};
use crate::store::NewScan;

use super::LaneSettings;

/// The row facts of a scan that do not depend on the verdict.
#[derive(Debug, Clone)]
pub struct RowBase {
    pub scan_id: Uuid,
    pub code: String,
    pub scanned_at: OffsetDateTime,
    pub boot_id: String,
    pub mono_ms: u64,
    pub clock_synced: bool,
    pub device: String,
    pub reader: String,
    pub direction: Direction,
}

impl RowBase {
    /// A new scan of `code` whose last byte arrived at `last_byte`: its id, and its time by
    /// the wall clock (taken back to that byte) and since boot.
    pub fn new(code: &str, last_byte: Instant, s: &LaneSettings) -> Self {
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

    pub fn row(
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
