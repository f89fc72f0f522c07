//! A scan's stages, timed: when each step of a scan was reached, counted from the code's last
//! byte. The lane and the scan's online task mark them as they pass; the commit step logs
//! them as one `scan stages` line (target `tiketo_gate::stages`, level debug) when that
//! target is enabled: `TIKETO_GATE_LOG=info,tiketo_gate::stages=debug`. It is how a slow
//! scan is taken apart (which step its time went to) without a debugger, and what the
//! latency bench's `--stages` trace reads.
//!
//! Marking costs one clock read and one atomic store; nothing is logged unless asked for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// The steps of a scan, in the order a scan passes them (an online accept passes all; a
/// scan decided otherwise skips some).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The lane took the code from the reader's channel.
    Lane,
    /// The online task began (the lookup is about to leave).
    Task,
    /// `passByScanCode` answered.
    LookedUp,
    /// The pending row's write has the store's connection (a blocking thread took it up and
    /// nothing else held the store).
    RowStore,
    /// The pending row's commit returned.
    RowDone,
    /// The pending row of an accept was written (the online task has the answer back).
    Written,
    /// `createScanEvent` answered.
    Recorded,
    /// The lane has the decision.
    Decided,
    /// The commit's store step is done.
    Stored,
    /// The outputs were told (relay, LEDs).
    Feedback,
    /// The tidy-up (row marked sent, pass cached) is done.
    Tidied,
    /// Metrics, status page, screen and the `scan` line are done.
    Done,
}

impl Stage {
    pub const ALL: [Stage; 12] = [
        Stage::Lane,
        Stage::Task,
        Stage::LookedUp,
        Stage::RowStore,
        Stage::RowDone,
        Stage::Written,
        Stage::Recorded,
        Stage::Decided,
        Stage::Stored,
        Stage::Feedback,
        Stage::Tidied,
        Stage::Done,
    ];

    /// The field name in the `scan stages` line (microseconds since the last byte).
    pub fn field(self) -> &'static str {
        match self {
            Stage::Lane => "lane_us",
            Stage::Task => "task_us",
            Stage::LookedUp => "looked_up_us",
            Stage::RowStore => "row_store_us",
            Stage::RowDone => "row_done_us",
            Stage::Written => "written_us",
            Stage::Recorded => "recorded_us",
            Stage::Decided => "decided_us",
            Stage::Stored => "stored_us",
            Stage::Feedback => "feedback_us",
            Stage::Tidied => "tidied_us",
            Stage::Done => "done_us",
        }
    }
}

const UNSET: u32 = u32::MAX;

/// When each stage of one scan was reached.
#[derive(Debug)]
pub struct Stages {
    start: Instant,
    marks: [AtomicU32; Stage::ALL.len()],
}

impl Stages {
    /// The stages of a scan whose last byte came at `start`.
    pub fn new(start: Instant) -> Self {
        Stages {
            start,
            marks: std::array::from_fn(|_| AtomicU32::new(UNSET)),
        }
    }

    /// `stage` is reached now.
    pub fn mark(&self, stage: Stage) {
        self.mark_at(stage, Instant::now());
    }

    /// `stage` was reached at `at` (a time before the start counts as 0).
    pub fn mark_at(&self, stage: Stage, at: Instant) {
        let us = at.saturating_duration_since(self.start).as_micros();
        let us = u32::try_from(us).unwrap_or(UNSET - 1);
        self.marks[stage as usize].store(us, Ordering::Relaxed);
    }

    /// Microseconds from the last byte to `stage`, if it was reached.
    pub fn at(&self, stage: Stage) -> Option<u32> {
        match self.marks[stage as usize].load(Ordering::Relaxed) {
            UNSET => None,
            us => Some(us),
        }
    }

    /// `field=µs` for each stage reached, in order: the `scan stages` line's fields.
    pub fn render(&self) -> String {
        Stage::ALL
            .iter()
            .filter_map(|&s| self.at(s).map(|us| format!("{}={us}", s.field())))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Logs the `scan stages` line when its target is enabled. `last_byte_mono_us`: the last
    /// byte on `CLOCK_MONOTONIC` (µs), so that another process on the same machine (the bench)
    /// can tell the time before the reader's read returned from the time after the relay.
    pub fn log(&self, scan_id: &str) {
        if tracing::enabled!(target: "tiketo_gate::stages", tracing::Level::DEBUG) {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let now_us = now.tv_sec as u128 * 1_000_000 + now.tv_nsec as u128 / 1000;
            let last_byte_mono_us = now_us.saturating_sub(self.start.elapsed().as_micros());
            tracing::debug!(target: "tiketo_gate::stages", scan_id = %scan_id, last_byte_mono_us = %last_byte_mono_us, stages = %self.render(), "scan stages");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn marks_count_from_the_start_and_render_in_order() {
        let t0 = Instant::now();
        let s = Stages::new(t0);
        s.mark_at(Stage::Feedback, t0 + Duration::from_micros(900));
        s.mark_at(Stage::Lane, t0 + Duration::from_micros(40));
        s.mark_at(Stage::LookedUp, t0 + Duration::from_micros(300));
        assert_eq!(s.at(Stage::Lane), Some(40));
        assert_eq!(s.at(Stage::Written), None);
        assert_eq!(s.render(), "lane_us=40 looked_up_us=300 feedback_us=900");
    }

    #[test]
    fn a_time_before_the_start_is_zero_and_a_huge_one_is_capped() {
        let t0 = Instant::now() + Duration::from_millis(5);
        let s = Stages::new(t0);
        s.mark_at(Stage::Lane, t0 - Duration::from_millis(1));
        assert_eq!(s.at(Stage::Lane), Some(0));
        s.mark_at(Stage::Done, t0 + Duration::from_secs(10_000));
        assert_eq!(s.at(Stage::Done), Some(UNSET - 1));
    }

    #[test]
    fn every_stage_has_its_own_field() {
        let mut fields: Vec<_> = Stage::ALL.iter().map(|s| s.field()).collect();
        fields.sort();
        fields.dedup();
        assert_eq!(fields.len(), Stage::ALL.len());
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
