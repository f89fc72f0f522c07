//! What the installer's `queue` commands do to the store: list the outbox (masked codes
//! only), put dead letters back, drop a row for good.

use rusqlite::params;
use serde::Serialize;

use super::{Result, Store};
use crate::clock::now_ms;

/// A row as `queue list` shows it (masked code only).
#[derive(Debug, Clone, Serialize)]
pub struct ListedRow {
    pub seq: i64,
    pub scan_id: String,
    pub code: String,
    /// The code's fingerprint ([`crate::fingerprint`]), `-` without the device's key.
    pub code_fp: String,
    pub verdict: String,
    pub reason: String,
    pub online: bool,
    pub scanned_at: String,
    pub clock_synced: bool,
    pub outbox: Option<String>,
    pub attempts: i64,
    pub event_id: Option<String>,
    pub last_error: Option<String>,
    pub reader: String,
    pub direction: String,
}

impl Store {
    /// Rows for `queue list`: pending (or dead), oldest first (no fingerprints).
    pub fn list(&self, dead: bool, limit: usize) -> Result<Vec<ListedRow>> {
        self.list_with(dead, limit, |_| "-".into())
    }

    /// The same, each row with its code's fingerprint `fp(code)` (the code itself stays
    /// here).
    pub fn list_with(
        &self,
        dead: bool,
        limit: usize,
        fp: impl Fn(&str) -> String,
    ) -> Result<Vec<ListedRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, scan_id, code_masked, verdict, reason, online, scanned_at, clock_synced, outbox, attempts, event_id, last_error,
                    reader, direction, code
             FROM scans WHERE outbox = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(
                params![if dead { "dead" } else { "pending" }, limit as i64],
                |r| {
                    Ok(ListedRow {
                        seq: r.get(0)?,
                        scan_id: r.get(1)?,
                        code: r.get(2)?,
                        code_fp: fp(&r.get::<_, String>(14)?),
                        verdict: r.get(3)?,
                        reason: r.get(4)?,
                        online: r.get(5)?,
                        scanned_at: r.get(6)?,
                        clock_synced: r.get(7)?,
                        outbox: r.get(8)?,
                        attempts: r.get(9)?,
                        event_id: r.get(10)?,
                        last_error: r.get(11)?,
                        reader: r.get(12)?,
                        direction: r.get(13)?,
                    })
                },
            )?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Puts dead rows back in the outbox (`None`: every dead row). Returns how many.
    pub fn retry(&self, id: Option<&str>) -> Result<usize> {
        Ok(match id {
            Some(id) => self.conn.execute(
                "UPDATE scans SET outbox = 'pending', attempts = 0 WHERE outbox = 'dead' AND (scan_id = ?1 OR CAST(seq AS TEXT) = ?1)",
                [id],
            )?,
            None => self.conn.execute("UPDATE scans SET outbox = 'pending', attempts = 0 WHERE outbox = 'dead'", [])?,
        })
    }

    /// Removes one pending or dead row from the outbox for good (it stays as a record, marked
    /// dropped). Returns whether a row matched.
    pub fn drop_row(&self, id: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE scans SET outbox = NULL, last_error = 'dropped by hand', done_at_ms = ?2
             WHERE outbox IN ('pending', 'dead') AND (scan_id = ?1 OR CAST(seq AS TEXT) = ?1)",
            params![id, now_ms()],
        )? > 0)
    }

    /// The full code of every scan id that is pending, for tests and the soak.
    pub fn all_scan_ids(&self, outbox: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT scan_id FROM scans WHERE outbox = ?1 ORDER BY seq")?;
        let ids = stmt
            .query_map([outbox], |r| r.get(0))?
            .collect::<std::result::Result<Vec<String>, _>>()?;
        Ok(ids)
    }
}
