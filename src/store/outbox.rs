//! The outbox: rows whose scan event is still to reach the server, how a replay batch's
//! answer moves them (sent, dead, tried again), and the counts status shows.

use rusqlite::params;
use serde::Serialize;

use super::{Result, Store};
use crate::clock::now_ms;

/// A row waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRow {
    pub seq: i64,
    pub scan_id: String,
    pub code: String,
    pub online: bool,
    pub scanned_at: String,
    pub clock_synced: bool,
    pub device: String,
    pub reward_points: Option<i64>,
    pub attempts: i64,
    pub reader: String,
    pub direction: crate::decision::Direction,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub scans: i64,
    pub pending: i64,
    pub dead: i64,
    pub sent: i64,
    pub oldest_pending_ms: Option<i64>,
}

impl Store {
    /// The server has the event.
    pub fn mark_sent(&mut self, scan_id: &str, event_id: Option<&str>) -> Result<()> {
        self.sync(false)?;
        self.conn.execute(
            "UPDATE scans SET outbox = 'sent', event_id = ?2, done_at_ms = ?3, last_error = NULL WHERE scan_id = ?1",
            params![scan_id, event_id, now_ms()],
        )?;
        Ok(())
    }

    /// The server has the event of a live scan (the guest is being admitted now): marked
    /// sent, and its event for the broker queued in the same transaction.
    pub fn mark_sent_live(&mut self, scan_id: &str, event_id: &str) -> Result<()> {
        self.sync(false)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE scans SET outbox = 'sent', event_id = ?2, done_at_ms = ?3, last_error = NULL WHERE scan_id = ?1",
            params![scan_id, event_id, now_ms()],
        )?;
        super::events::queue_scan_event(&tx, self.events, self.venue.as_ref(), scan_id)?;
        tx.commit()?;
        self.after_events();
        Ok(())
    }

    /// A live scan the server refused: it was not admitted (its event for the broker queued
    /// in the same transaction).
    pub fn mark_refused(&mut self, scan_id: &str, error: &str) -> Result<()> {
        self.sync(false)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE scans SET verdict = 'reject', reason = 'refused', outbox = NULL, last_error = ?2, done_at_ms = ?3 WHERE scan_id = ?1",
            params![scan_id, error, now_ms()],
        )?;
        super::events::queue_scan_event(&tx, self.events, self.venue.as_ref(), scan_id)?;
        tx.commit()?;
        self.after_events();
        Ok(())
    }

    /// A permanent failure: the row goes to the dead letters with the error.
    pub fn mark_dead(&self, scan_id: &str, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE scans SET outbox = 'dead', attempts = attempts + 1, last_error = ?2, done_at_ms = ?3
             WHERE scan_id = ?1 AND outbox = 'pending'",
            params![scan_id, error, now_ms()],
        )?;
        Ok(())
    }

    /// A failed attempt that may succeed later; returns the attempts so far.
    pub fn note_attempt(&self, scan_id: &str, error: &str) -> Result<i64> {
        self.conn.execute(
            "UPDATE scans SET attempts = attempts + 1, last_error = ?2 WHERE scan_id = ?1",
            params![scan_id, error],
        )?;
        Ok(self.conn.query_row(
            "SELECT attempts FROM scans WHERE scan_id = ?1",
            [scan_id],
            |r| r.get(0),
        )?)
    }

    /// Applies the outcome of one replay batch in one transaction, without waiting for fsync
    /// here: the caller makes it durable with [`super::StoreHandle::sync_wal`] once the store
    /// is free again (a sent row that came back after a power cut would be sent twice). The
    /// fsync held the scans' connection for 3 to 4 ms while a live scan's row waited behind
    /// it (`--mode busy --stages`).
    pub fn apply_replay(
        &mut self,
        sent: &[(String, Option<String>)],
        dead: &[(String, String)],
        retry: &[(String, String)],
    ) -> Result<()> {
        self.sync(false)?;
        let tx = self.conn.transaction()?;
        let now = now_ms();
        for (id, event) in sent {
            tx.execute(
                "UPDATE scans SET outbox = 'sent', event_id = ?2, done_at_ms = ?3, attempts = attempts + 1, last_error = NULL WHERE scan_id = ?1",
                params![id, event, now],
            )?;
        }
        for (id, err) in dead {
            tx.execute(
                "UPDATE scans SET outbox = 'dead', attempts = attempts + 1, last_error = ?2, done_at_ms = ?3 WHERE scan_id = ?1",
                params![id, err, now],
            )?;
        }
        for (id, err) in retry {
            tx.execute(
                "UPDATE scans SET attempts = attempts + 1, last_error = ?2 WHERE scan_id = ?1",
                params![id, err],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The oldest pending rows, in scan order, skipping `exclude` (sends in flight).
    pub fn pending_batch(&self, limit: usize, exclude: &[String]) -> Result<Vec<PendingRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, scan_id, code, online, scanned_at, clock_synced, device, reward_points, attempts,
                    reader, direction
             FROM scans WHERE outbox = 'pending' ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([(limit + exclude.len()) as i64], |r| {
                Ok(PendingRow {
                    seq: r.get(0)?,
                    scan_id: r.get(1)?,
                    code: r.get(2)?,
                    online: r.get(3)?,
                    scanned_at: r.get(4)?,
                    clock_synced: r.get(5)?,
                    device: r.get(6)?,
                    reward_points: r.get(7)?,
                    attempts: r.get(8)?,
                    reader: r.get(9)?,
                    direction: crate::decision::Direction::parse(&r.get::<_, String>(10)?)
                        .unwrap_or_default(),
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter(|r| !exclude.contains(&r.scan_id))
            .take(limit)
            .collect())
    }

    pub fn counts(&self) -> Result<Counts> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM scans),
                    (SELECT count(*) FROM scans WHERE outbox = 'pending'),
                    (SELECT count(*) FROM scans WHERE outbox = 'dead'),
                    (SELECT count(*) FROM scans WHERE outbox = 'sent'),
                    (SELECT min(scanned_at_ms) FROM scans WHERE outbox = 'pending')",
            [],
            |r| {
                Ok(Counts {
                    scans: r.get(0)?,
                    pending: r.get(1)?,
                    dead: r.get(2)?,
                    sent: r.get(3)?,
                    oldest_pending_ms: r.get(4)?,
                })
            },
        )?)
    }

    /// What the gauges show (pending, dead, the oldest pending), from the outbox's index
    /// alone: cheap enough for every scrape.
    pub fn outbox_counts(&self) -> Result<Counts> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM scans WHERE outbox = 'pending'),
                    (SELECT count(*) FROM scans WHERE outbox = 'dead'),
                    (SELECT min(scanned_at_ms) FROM scans WHERE outbox = 'pending')",
            [],
            |r| {
                Ok(Counts {
                    scans: 0,
                    pending: r.get(0)?,
                    dead: r.get(1)?,
                    sent: 0,
                    oldest_pending_ms: r.get(2)?,
                })
            },
        )?)
    }

    pub fn pending_count(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM scans WHERE outbox = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }
}
