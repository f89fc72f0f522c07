//! The venue's shared memory (`mqtt.venue`), kept next to the pass cache so that the offline
//! decision reads one place whether a fact came from this door or another.
//!
//! One row per pass the venue knows, by the code's keyed address (never the code): the
//! [`PassRecord`] as JSON. This door's own lookups and admissions are written into it in the
//! same transaction as the pass cache and the scan's row; a record another door sent is
//! merged into it ([`ledger::merge`]). Each change queues the record for the broker: a row of
//! `mqtt_events` naming the address (the newest only; the MQTT task seals and publishes the
//! record as it is then, retained). A merge that knows more than the message it merged queues
//! it too, so two doors that meet end with the same record, here and on the broker.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{Result, Store};
use crate::clock::now_ms;
use crate::decision::PassFacts;
use crate::venue::ledger::{self, Admission, Lookup, PassRecord};
use crate::venue::seal::VenueKey;

/// What the store needs to keep the venue's memory.
#[derive(Clone)]
pub struct VenueCtx {
    pub key: Arc<VenueKey>,
    /// This door (`device.name`), as admissions and lookups name it.
    pub door: String,
    /// `offline.cache_ttl`: how long a record lives after its last scan.
    pub ttl_ms: i64,
    /// `offline.max_offline_uses` (what a conflict goes past).
    pub max_uses: u32,
}

/// Two doors admitted a pass offline past `max_offline_uses` without knowing of each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueConflict {
    pub address: String,
    /// The entry that used the pass up, and the one past it.
    pub first: Admission,
    pub second: Admission,
}

impl VenueConflict {
    /// The code as logs show it: from either admission (the door that made it knew it).
    pub fn code_masked(&self) -> String {
        self.first
            .code
            .clone()
            .or_else(|| self.second.code.clone())
            .unwrap_or_else(|| "-".into())
    }
}

/// What merging a record another door sent did.
#[derive(Debug, Default)]
pub struct VenueMerge {
    /// This door knew more than the message: the merged record is published again.
    pub republish: bool,
    /// Conflicts found for the first time.
    pub conflicts: Vec<VenueConflict>,
}

fn read(conn: &Connection, address: &str) -> Result<Option<PassRecord>> {
    let text: Option<String> = conn
        .query_row(
            "SELECT record FROM venue_passes WHERE address = ?1",
            [address],
            |r| r.get(0),
        )
        .optional()?;
    // A record this version cannot read is as good as none: the venue sends it again.
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// When the background refresh may verify the record again: a pass found, not voided, with
/// the ids `Query.pass` needs. `None` keeps it out of the refresh's index.
fn refreshable(r: &PassRecord) -> Option<i64> {
    let l = r.lookup.as_ref()?;
    (l.found && !l.voided && l.pass_id.is_some() && l.project_id.is_some())
        .then_some(l.verified_at_ms)
}

/// Stores `r` (trimmed) as the record of `address`, queues it for the broker when `publish`,
/// and records the conflicts it shows that were not known yet.
fn write(
    tx: &Transaction<'_>,
    ctx: &VenueCtx,
    address: &str,
    r: &PassRecord,
    publish: bool,
) -> Result<Vec<VenueConflict>> {
    let mut found = Vec::new();
    for (first, second) in ledger::conflicts(r, ctx.max_uses) {
        let n = tx.execute(
            "INSERT INTO venue_conflicts (first, second, address, code_masked, first_door, second_door, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            params![
                first.scan_id,
                second.scan_id,
                address,
                first.code.clone().or_else(|| second.code.clone()),
                first.door,
                second.door,
                now_ms()
            ],
        )?;
        if n == 1 {
            found.push(VenueConflict {
                address: address.to_owned(),
                first,
                second,
            });
        }
    }
    let r = ledger::trim(r);
    let text = serde_json::to_string(&r).map_err(|e| super::StoreError(e.to_string()))?;
    tx.execute(
        "INSERT OR REPLACE INTO venue_passes (address, record, verified_at_ms, active_ms) VALUES (?1, ?2, ?3, ?4)",
        params![address, text, refreshable(&r), ledger::last_activity(&r)],
    )?;
    if publish {
        tx.execute("DELETE FROM mqtt_events WHERE venue = ?1", [address])?;
        tx.execute(
            "INSERT INTO mqtt_events (at_ms, body, venue) VALUES (?1, '', ?2)",
            params![now_ms(), address],
        )?;
    }
    Ok(found)
}

/// Adds what this door learned to the record of `code`, and queues it for the broker.
fn update(
    tx: &Transaction<'_>,
    ctx: &VenueCtx,
    code: &str,
    add: PassRecord,
) -> Result<Vec<VenueConflict>> {
    let address = ctx.key.address(code);
    let old = read(tx, &address)?.unwrap_or_default();
    write(tx, ctx, &address, &ledger::merge(&old, &add), true)
}

/// This door's lookup of `code` for a scan, in the pass cache's transaction.
pub(super) fn note_lookup(
    tx: &Transaction<'_>,
    ctx: &VenueCtx,
    code: &str,
    facts: Option<&PassFacts>,
    now_ms: i64,
) -> Result<()> {
    let add = PassRecord {
        lookup: Some(Lookup::of_scan(facts, now_ms, &ctx.door)),
        admissions: Vec::new(),
    };
    log_conflicts(&update(tx, ctx, code, add)?);
    Ok(())
}

/// A scan's row became final: an admission (an accepted scan) goes into the venue's record,
/// in the same transaction.
pub(super) fn note_final_scan(tx: &Transaction<'_>, ctx: &VenueCtx, scan_id: &str) -> Result<()> {
    let row = tx
        .query_row(
            "SELECT code, code_masked, online, scanned_at_ms, reader, direction FROM scans
             WHERE scan_id = ?1 AND verdict = 'accept'",
            [scan_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((code, masked, online, at_ms, reader, direction)) = row else {
        return Ok(());
    };
    let add = PassRecord {
        lookup: None,
        admissions: vec![Admission {
            scan_id: scan_id.to_owned(),
            at_ms,
            door: ctx.door.clone(),
            reader,
            direction: crate::decision::Direction::parse(&direction).unwrap_or_default(),
            online,
            code: Some(masked),
        }],
    };
    log_conflicts(&update(tx, ctx, &code, add)?);
    Ok(())
}

/// The one log line (and metric) of a conflict, at each door that finds it.
pub fn log_conflicts(found: &[VenueConflict]) {
    for c in found {
        crate::metrics::metrics().venue_conflicts.inc();
        tracing::warn!(
            code = %c.code_masked(),
            first_door = %c.first.door,
            first_reader = %c.first.reader,
            second_door = %c.second.door,
            second_reader = %c.second.reader,
            gap_ms = c.second.at_ms - c.first.at_ms,
            "venue conflict: one pass admitted offline at two doors that did not know of each other (cut off from each other, or inside the broker's round trip)"
        );
    }
}

impl Store {
    /// Keeps the venue's memory from now on.
    pub fn keep_venue(&mut self, ctx: Option<VenueCtx>) {
        self.venue = ctx;
    }

    /// What the venue knows of `code` (`None`: the venue is off, or knows nothing of it).
    pub fn venue_record(&self, code: &str) -> Result<Option<PassRecord>> {
        match &self.venue {
            None => Ok(None),
            Some(ctx) => read(&self.conn, &ctx.key.address(code)),
        }
    }

    /// The record of `address` (the MQTT task publishes it).
    pub fn venue_record_at(&self, address: &str) -> Result<Option<PassRecord>> {
        read(&self.conn, address)
    }

    /// Merges what another door sent for `address`.
    pub fn venue_merge(&mut self, address: &str, incoming: &PassRecord) -> Result<VenueMerge> {
        let Some(ctx) = self.venue.clone() else {
            return Ok(VenueMerge::default());
        };
        self.sync(false)?;
        let tx = self.conn.transaction()?;
        let old = read(&tx, address)?;
        let merged = match &old {
            Some(o) => ledger::merge(o, incoming),
            None => incoming.clone(),
        };
        let merged = ledger::trim(&merged);
        // This door knows more than the message: the merged record goes out again.
        let republish = ledger::trim(incoming) != merged;
        if old.as_ref() == Some(&merged) && !republish {
            // Nothing new either way (the usual case: a record heard twice).
            return Ok(VenueMerge::default());
        }
        let conflicts = write(&tx, &ctx, address, &merged, republish)?;
        tx.commit()?;
        if republish {
            self.after_events();
        }
        Ok(VenueMerge {
            republish,
            conflicts,
        })
    }

    /// Records whose facts were verified before `before_ms` and that the refresh may verify
    /// again, oldest first: (address, project id, pass id).
    pub fn venue_due(&self, before_ms: i64, limit: usize) -> Result<Vec<(String, String, String)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT address, record FROM venue_passes WHERE verified_at_ms < ?1
             ORDER BY verified_at_ms LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![before_ms, limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(address, text)| {
                let r: PassRecord = serde_json::from_str(&text).ok()?;
                let l = r.lookup?;
                Some((address, l.project_id?, l.pass_id?))
            })
            .collect())
    }

    /// The refresh's answer for `address` (`None`: the API knows the pass no more), shared.
    pub fn venue_refreshed(
        &mut self,
        address: &str,
        facts: Option<&PassFacts>,
        now_ms: i64,
    ) -> Result<()> {
        let Some(ctx) = self.venue.clone() else {
            return Ok(());
        };
        self.sync(false)?;
        let tx = self.conn.transaction()?;
        let Some(old) = read(&tx, address)? else {
            return Ok(());
        };
        let mut lookup = Lookup::refreshed(facts, now_ms, &ctx.door);
        if let (Some(f), Some(was)) = (facts, old.lookup.as_ref()) {
            // `Query.pass` is not asked for the holder's parameters: the greeting keeps the
            // ones the scan's lookup brought.
            if f.parameters.is_none() {
                lookup.parameters = was.parameters.clone();
            }
        }
        let add = PassRecord {
            lookup: Some(lookup),
            admissions: Vec::new(),
        };
        let merged = ledger::merge(&old, &add);
        log_conflicts(&write(&tx, &ctx, address, &merged, true)?);
        tx.commit()?;
        self.after_events();
        Ok(())
    }

    /// How many passes the venue's memory holds.
    pub fn venue_known(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM venue_passes", [], |r| r.get(0))?)
    }

    /// Conflicts found so far, newest first (at most `limit`), and how many in all.
    pub fn venue_conflicts(&self, limit: usize) -> Result<(i64, Vec<VenueConflictRow>)> {
        let total = self
            .conn
            .query_row("SELECT COUNT(*) FROM venue_conflicts", [], |r| r.get(0))?;
        let mut st = self.conn.prepare_cached(
            "SELECT code_masked, first_door, second_door, at_ms FROM venue_conflicts
             ORDER BY at_ms DESC LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit as i64], |r| {
                Ok(VenueConflictRow {
                    code: r.get::<_, Option<String>>(0)?.unwrap_or_else(|| "-".into()),
                    first_door: r.get(1)?,
                    second_door: r.get(2)?,
                    at_ms: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((total, rows))
    }

    /// Forgets records no scan touched within `offline.cache_ttl` (the broker's copies have
    /// expired by then too), and conflicts older than `retention`.
    pub(super) fn venue_prune(&self, retention_cutoff_ms: i64, now_ms: i64) -> Result<()> {
        if let Some(ctx) = &self.venue {
            self.conn.execute(
                "DELETE FROM venue_passes WHERE active_ms < ?1",
                [now_ms - ctx.ttl_ms],
            )?;
        }
        self.conn.execute(
            "DELETE FROM venue_conflicts WHERE at_ms < ?1",
            [retention_cutoff_ms],
        )?;
        Ok(())
    }
}

/// A conflict as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VenueConflictRow {
    pub code: String,
    pub first_door: String,
    pub second_door: String,
    pub at_ms: i64,
}
