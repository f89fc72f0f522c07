//! The broker's copy of the door's events (`[mqtt]`), the remote commands' ids, and the
//! door's lockdown or release.
//!
//! Each event for the broker is a row of `mqtt_events`, written in the same transaction as
//! what it tells of (a scan's row, a command's effect): a crash or a power cut loses none, and
//! none tells of something the store does not hold. The MQTT task publishes them in `seq`
//! order and deletes each once the broker has acknowledged it. `mqtt.max_pending` bounds the
//! table: past it the oldest go (counted and logged; the scans and their events for the API
//! are untouched).

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{params, Transaction};

use super::{Result, Store};
use crate::clock::now_ms;

/// A scan's event, built from its row as stored (masked code; never the full code).
const SCAN_EVENT: &str = "INSERT INTO mqtt_events (at_ms, body)
    SELECT ?2, json_object('type', 'scan', 'scanId', scan_id, 'scannedAt', scanned_at,
        'device', device, 'reader', reader, 'direction', direction, 'verdict', verdict,
        'reason', reason, 'mode', CASE WHEN online THEN 'online' ELSE 'offline' END,
        'code', code_masked)
    FROM scans WHERE scan_id = ?1";

/// The scan `scan_id`'s row is final (as its row now says): its event queued when events are
/// kept, and its admission written into the venue's memory when there is one.
pub(super) fn queue_scan_event(
    tx: &Transaction<'_>,
    events: Option<u64>,
    venue: Option<&super::VenueCtx>,
    scan_id: &str,
) -> Result<()> {
    if events.is_some() {
        tx.execute(SCAN_EVENT, params![scan_id, now_ms()])?;
    }
    if let Some(ctx) = venue {
        super::venue::note_final_scan(tx, ctx, scan_id)?;
    }
    Ok(())
}

/// An event waiting for the broker, or a venue record to publish (`venue`: its address; the
/// record is read as it is when it goes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub seq: i64,
    pub body: String,
    pub venue: Option<String>,
    /// The venue record's JSON, as it is now (`None`: gone).
    pub venue_record: Option<String>,
}

/// Lockdown or release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideMode {
    /// Every scan rejected (reason `lockdown`); the exit button still opens.
    Lockdown,
    /// The relay held energised: the door unlocked.
    Release,
}

impl OverrideMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideMode::Lockdown => "lockdown",
            OverrideMode::Release => "release",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "lockdown" => Some(OverrideMode::Lockdown),
            "release" => Some(OverrideMode::Release),
            _ => None,
        }
    }
}

/// A reader's lockdown or release, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorOverride {
    pub reader: String,
    pub mode: OverrideMode,
    pub since_ms: i64,
    pub jti: Option<String>,
}

/// Events dropped for `max_pending` since the last warn line.
static DROPPED_UNLOGGED: AtomicU64 = AtomicU64::new(0);
/// When the last warn line about dropped events was written (ms).
static DROPPED_LOGGED_AT: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Keeps the broker's copy of the events, at most `max_pending` rows (`None`: none kept).
    pub fn keep_events(&mut self, max_pending: Option<u64>) {
        self.events = max_pending;
    }

    /// Whether events were written since the last call.
    pub fn take_new_events(&mut self) -> bool {
        std::mem::take(&mut self.new_events)
    }

    /// After a commit that may have queued events: the wake-up, and the oldest dropped past
    /// `max_pending`.
    pub(super) fn after_events(&mut self) {
        let Some(max) = self.events else { return };
        self.new_events = true;
        let dropped = self
            .conn
            .execute(
                "DELETE FROM mqtt_events WHERE seq <= (SELECT MAX(seq) FROM mqtt_events) - ?1",
                [max as i64],
            )
            .unwrap_or(0) as u64;
        if dropped > 0 {
            crate::metrics::metrics()
                .mqtt_events_dropped
                .inc_by(dropped);
            let total = DROPPED_UNLOGGED.fetch_add(dropped, Ordering::Relaxed) + dropped;
            let now = now_ms() as u64;
            let last = DROPPED_LOGGED_AT.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 60_000 {
                DROPPED_LOGGED_AT.store(now, Ordering::Relaxed);
                DROPPED_UNLOGGED.store(0, Ordering::Relaxed);
                tracing::warn!(
                    dropped = total,
                    max_pending = max,
                    "mqtt: the broker has not taken the door's events for a while; the oldest were dropped from its copy (the scans and their events for the API are kept)"
                );
            }
        }
    }

    /// Queues a door or command event (its JSON) for the broker, alone in its transaction.
    pub fn push_event(&mut self, body: &str) -> Result<()> {
        if self.events.is_none() {
            return Ok(());
        }
        self.sync(false)?;
        self.conn.execute(
            "INSERT INTO mqtt_events (at_ms, body) VALUES (?1, ?2)",
            params![now_ms(), body],
        )?;
        self.after_events();
        Ok(())
    }

    /// Up to `limit` events after `after`, oldest first.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<EventRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT e.seq, e.body, e.venue, v.record FROM mqtt_events e
             LEFT JOIN venue_passes v ON v.address = e.venue
             WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                Ok(EventRow {
                    seq: r.get(0)?,
                    body: r.get(1)?,
                    venue: r.get(2)?,
                    venue_record: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The broker acknowledged these events: they go.
    pub fn events_delivered(&mut self, seqs: &[i64]) -> Result<()> {
        self.sync(false)?;
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached("DELETE FROM mqtt_events WHERE seq = ?1")?;
            for s in seqs {
                st.execute([s])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// How many events (not venue records) wait for the broker.
    pub fn events_pending(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM mqtt_events WHERE venue IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// Remembers a command's id until `exp_ms` (and its `iat` as the newest, if it is);
    /// false when the id was seen already (a replay). Durable before the command is done.
    pub fn remember_command(&mut self, jti: &str, exp_ms: i64, iat: i64) -> Result<bool> {
        self.sync(true)?;
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "INSERT INTO command_ids (jti, exp_ms) VALUES (?1, ?2) ON CONFLICT(jti) DO NOTHING",
            params![jti, exp_ms],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('command_newest_iat', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value
             WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
            [iat.to_string()],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// The newest `iat` of a command done so far (0: none).
    pub fn newest_command_iat(&self) -> Result<i64> {
        Ok(self
            .get_meta("command_newest_iat")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Sets (or with `None` ends) the lockdown or release of these readers, with the
    /// command's event, in one transaction: durable before the door changes.
    pub fn set_overrides(
        &mut self,
        readers: &[String],
        mode: Option<OverrideMode>,
        jti: Option<&str>,
        event: &str,
    ) -> Result<()> {
        self.sync(true)?;
        let tx = self.conn.transaction()?;
        for r in readers {
            match mode {
                Some(m) => tx.execute(
                    "INSERT OR REPLACE INTO door_overrides (reader, mode, since_ms, jti) VALUES (?1, ?2, ?3, ?4)",
                    params![r, m.as_str(), now_ms(), jti],
                )?,
                None => tx.execute("DELETE FROM door_overrides WHERE reader = ?1", [r])?,
            };
        }
        if self.events.is_some() {
            tx.execute(
                "INSERT INTO mqtt_events (at_ms, body) VALUES (?1, ?2)",
                params![now_ms(), event],
            )?;
        }
        tx.commit()?;
        self.after_events();
        Ok(())
    }

    /// The readers in lockdown or release.
    pub fn overrides(&self) -> Result<Vec<DoorOverride>> {
        let mut st = self
            .conn
            .prepare("SELECT reader, mode, since_ms, jti FROM door_overrides ORDER BY reader")?;
        let rows = st
            .query_map([], |r| {
                let mode: String = r.get(1)?;
                Ok((r.get(0)?, mode, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<Vec<(String, String, i64, Option<String>)>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(reader, mode, since_ms, jti)| {
                Some(DoorOverride {
                    reader,
                    mode: OverrideMode::parse(&mode)?,
                    since_ms,
                    jti,
                })
            })
            .collect())
    }

    /// Every event's body (this module's tests).
    #[cfg(test)]
    fn event_bodies(&self) -> Vec<String> {
        self.events_after(0, 1000)
            .unwrap()
            .into_iter()
            .map(|r| r.body)
            .collect()
    }
}

/// The override of one reader, if any (for readers looked up by name).
pub fn override_of(all: &[DoorOverride], reader: &str) -> Option<OverrideMode> {
    all.iter().find(|o| o.reader == reader).map(|o| o.mode)
}

#[cfg(test)]
mod tests {
    use super::super::NewScan;
    use super::*;
    use crate::decision::{UseChange, Verdict};

    fn scan(code: &str, verdict: Verdict, pending: bool) -> NewScan {
        NewScan {
            device: "door-1".into(),
            reader: "main".into(),
            ..super::super::tests::scan(code, verdict, pending)
        }
    }

    #[test]
    fn a_scans_event_is_its_row_as_stored_with_the_code_masked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("x.db")).unwrap();
        // Off: nothing kept.
        s.insert_scan(
            &scan("PASS-OFF-000001", Verdict::Reject, false),
            UseChange::None,
        )
        .unwrap();
        assert!(s.event_bodies().is_empty());
        assert!(!s.take_new_events());
        s.keep_events(Some(100));
        let r = scan("PASS-REJECT-0001", Verdict::Reject, false);
        s.insert_scan(&r, UseChange::None).unwrap();
        assert!(s.take_new_events());
        // An online accept written ahead has no event until the server answered.
        let ahead = NewScan {
            online: true,
            ..scan("PASS-AHEAD-0002", Verdict::Accept, true)
        };
        s.insert_scan_if_absent(&ahead).unwrap();
        assert_eq!(s.event_bodies().len(), 1);
        s.mark_sent_live(&ahead.scan_id.to_string(), "ev-1")
            .unwrap();
        let bodies = s.event_bodies();
        assert_eq!(bodies.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(v["type"], "scan");
        assert_eq!(v["scanId"], r.scan_id.to_string());
        assert_eq!(v["verdict"], "reject");
        assert_eq!(v["reason"], "voided");
        assert_eq!(v["mode"], "offline");
        assert_eq!(v["reader"], "main");
        assert_eq!(v["direction"], "entry");
        assert_eq!(v["device"], "door-1");
        assert_eq!(v["code"], crate::mask::mask_code("PASS-REJECT-0001"));
        assert!(!bodies.iter().any(|b| b.contains("PASS-REJECT-0001")));
        let v: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
        assert_eq!(
            (v["verdict"].as_str(), v["mode"].as_str()),
            (Some("accept"), Some("online"))
        );
    }

    #[test]
    fn the_copy_is_bounded_oldest_first_and_delivered_rows_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("x.db")).unwrap();
        s.keep_events(Some(3));
        for i in 0..5 {
            s.push_event(&format!("{{\"n\":{i}}}")).unwrap();
        }
        let rows = s.events_after(0, 10).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(),
            ["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]
        );
        s.events_delivered(&[rows[0].seq, rows[1].seq]).unwrap();
        assert_eq!(s.events_pending().unwrap(), 1);
        assert_eq!(s.events_after(rows[0].seq, 10).unwrap().len(), 1);
    }

    #[test]
    fn command_ids_are_remembered_and_overrides_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        {
            let mut s = Store::open(&path).unwrap();
            assert!(s.remember_command("j1", now_ms() + 60_000, 5).unwrap());
            assert!(!s.remember_command("j1", now_ms() + 60_000, 5).unwrap());
            s.set_overrides(
                &["a".into(), "b".into()],
                Some(OverrideMode::Lockdown),
                Some("j1"),
                "{}",
            )
            .unwrap();
            s.set_overrides(&["b".into()], Some(OverrideMode::Release), Some("j2"), "{}")
                .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        assert!(
            !s.remember_command("j1", 0, 3).unwrap(),
            "remembered across a restart"
        );
        let o = s.overrides().unwrap();
        assert_eq!(override_of(&o, "a"), Some(OverrideMode::Lockdown));
        assert_eq!(override_of(&o, "b"), Some(OverrideMode::Release));
        s.set_overrides(&["a".into(), "b".into()], None, Some("j3"), "{}")
            .unwrap();
        assert!(s.overrides().unwrap().is_empty());
        // Expired ids are pruned with the rest.
        s.prune(std::time::Duration::from_secs(86_400), now_ms() + 120_000)
            .unwrap();
        assert!(s.remember_command("j1", 0, 9).unwrap());
        assert_eq!(s.newest_command_iat().unwrap(), 9);
    }
}
