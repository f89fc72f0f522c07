//! The scan store: one SQLite file in `device.state_dir`, WAL with `synchronous=FULL` (one
//! fsync per scan; a power cut loses nothing that was committed), schema migrations by
//! `PRAGMA user_version`.
//!
//! Every decided scan is a row, written in one transaction before its feedback. Accepted scans
//! carry their outbox state: `pending` (to send), `sent` (with the server's ScanEvent id), or
//! `dead` (a permanent failure, with the error; shown by `tiketo-gate queue list --dead`).
//! The pass cache and the offline use counts live here too, so they survive restarts.

use crate::decision::UseChange;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::decision::{PassFacts, Reason, Verdict};
use crate::mask::mask_code;

pub const FILE_NAME: &str = "tiketo-gate.db";
const SCHEMA_VERSION: i64 = 5;

const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE scans (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        scan_id TEXT NOT NULL UNIQUE,
        code TEXT NOT NULL,
        code_masked TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL,
        online INTEGER NOT NULL,
        scanned_at TEXT NOT NULL,
        scanned_at_ms INTEGER NOT NULL,
        boot_id TEXT NOT NULL,
        mono_ms INTEGER NOT NULL,
        clock_synced INTEGER NOT NULL,
        device TEXT NOT NULL,
        reward_points INTEGER,
        outbox TEXT CHECK (outbox IN ('pending', 'sent', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        event_id TEXT,
        last_error TEXT,
        done_at_ms INTEGER
     );
     CREATE INDEX scans_outbox ON scans(outbox, seq) WHERE outbox IN ('pending', 'dead');
     CREATE INDEX scans_age ON scans(scanned_at_ms);
     CREATE TABLE pass_cache (
        code TEXT PRIMARY KEY,
        found INTEGER NOT NULL,
        pass_id TEXT,
        template_id TEXT,
        project_id TEXT,
        expires_ms INTEGER,
        voided INTEGER NOT NULL DEFAULT 0,
        scan_config TEXT,
        verified_at_ms INTEGER NOT NULL
     );
     CREATE TABLE offline_uses (code TEXT PRIMARY KEY, uses INTEGER NOT NULL, last_ms INTEGER NOT NULL);",
    // v2: several readers, entry and exit.
    "ALTER TABLE scans ADD COLUMN reader TEXT NOT NULL DEFAULT 'reader';
     ALTER TABLE scans ADD COLUMN direction TEXT NOT NULL DEFAULT 'entry' CHECK (direction IN ('entry', 'exit'));",
    // v3: the pass's parameters, for the guest screen's greeting offline.
    "ALTER TABLE pass_cache ADD COLUMN parameters TEXT;",
    // v4: the broker's copy of the events (`[mqtt]`), the remote commands' ids and the door's
    // lockdown or release.
    "CREATE TABLE mqtt_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, body TEXT NOT NULL);
     CREATE INDEX mqtt_events_age ON mqtt_events(at_ms);
     CREATE TABLE command_ids (jti TEXT PRIMARY KEY, exp_ms INTEGER NOT NULL);
     CREATE TABLE door_overrides (
        reader TEXT PRIMARY KEY,
        mode TEXT NOT NULL CHECK (mode IN ('lockdown', 'release')),
        since_ms INTEGER NOT NULL,
        jti TEXT
     );",
    // v5: what the venue knows of each pass (`mqtt.venue`), by the code's keyed address; the
    // conflicts it found; a venue record to publish is a row of `mqtt_events` naming it.
    "CREATE TABLE venue_passes (
        address TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        verified_at_ms INTEGER,
        active_ms INTEGER NOT NULL
     );
     CREATE INDEX venue_passes_verified ON venue_passes(verified_at_ms);
     CREATE INDEX venue_passes_active ON venue_passes(active_ms);
     CREATE TABLE venue_conflicts (
        first TEXT NOT NULL,
        second TEXT NOT NULL,
        address TEXT NOT NULL,
        code_masked TEXT,
        first_door TEXT NOT NULL,
        second_door TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (first, second)
     );
     ALTER TABLE mqtt_events ADD COLUMN venue TEXT;
     CREATE INDEX mqtt_events_venue ON mqtt_events(venue) WHERE venue IS NOT NULL;",
];

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// True for errors that mean the file is not a healthy database.
fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt) | Some(rusqlite::ErrorCode::NotADatabase)
    )
}

/// A decided scan, as it is written.
#[derive(Debug, Clone)]
pub struct NewScan {
    pub scan_id: Uuid,
    pub code: String,
    pub verdict: Verdict,
    pub reason: Reason,
    pub online: bool,
    pub scanned_at: OffsetDateTime,
    pub boot_id: String,
    pub mono_ms: u64,
    pub clock_synced: bool,
    pub device: String,
    pub reader: String,
    pub direction: crate::decision::Direction,
    pub reward_points: Option<i64>,
    /// An accepted scan whose event still has to reach the server.
    pub pending: bool,
}

/// What the cache knows of a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// `None`: the API said there is no such pass.
    pub facts: Option<PassFacts>,
    pub verified_at_ms: i64,
}

pub struct Store {
    pub(super) conn: Connection,
    path: PathBuf,
    /// Whether commits wait for fsync now (`synchronous=FULL`).
    full_sync: bool,
    /// The broker's copy of the events: kept (bounded by this many rows) when `[mqtt]` is on.
    pub(crate) events: Option<u64>,
    /// Events were written since the last look (the MQTT task's wake-up).
    pub(crate) new_events: bool,
    /// The venue's shared memory (`mqtt.venue`): what this door learns and admits is written
    /// into it in the same transaction.
    pub(crate) venue: Option<venue::VenueCtx>,
}

#[derive(Clone, Copy)]
enum Conflict {
    Fail,
    Ignore,
    Override,
}

use crate::clock::now_ms;

mod events;
mod handle;
mod outbox;
mod queue;
mod venue;

pub use events::{override_of, DoorOverride, EventRow, OverrideMode};
pub use handle::StoreHandle;
pub use outbox::{Counts, PendingRow};
pub use queue::ListedRow;
pub use venue::{log_conflicts, VenueConflict, VenueConflictRow, VenueCtx, VenueMerge};

/// The WAL file beside the store file `db`.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

impl Store {
    /// The store file in a state directory.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// Opens (creating the directory and file if needed) and migrates.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        }
        let conn =
            Connection::open(path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            full_sync: true,
            events: None,
            new_events: false,
            venue: None,
        };
        store.setup()?;
        Ok(store)
    }

    /// Opens; a file that is not a healthy database is moved aside (never deleted) and a new
    /// one is made. Returns where the old file went.
    pub fn open_or_quarantine(path: &Path) -> Result<(Store, Option<PathBuf>)> {
        match Store::open(path).and_then(|s| s.quick_check().map(|_| s)) {
            Ok(s) => Ok((s, None)),
            Err(e)
                if e.0.contains("malformed")
                    || e.0.contains("not a database")
                    || e.0.contains("corrupt") =>
            {
                let stamp = OffsetDateTime::now_utc().unix_timestamp();
                let aside = path.with_extension(format!("db.corrupt-{stamp}"));
                std::fs::rename(path, &aside).map_err(|e| {
                    StoreError(format!("cannot move {} aside: {e}", path.display()))
                })?;
                for ext in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{ext}", path.display()));
                    if side.exists() {
                        let _ = std::fs::rename(
                            &side,
                            PathBuf::from(format!("{}{ext}", aside.display())),
                        );
                    }
                }
                let s = Store::open(path)?;
                Ok((s, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens an existing store for the CLI while the daemon may be running.
    pub fn open_existing(path: &Path, write: bool) -> Result<Store> {
        let flags = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            return Err(StoreError(format!(
                "{}: not a tiketo-gate store (yet)",
                path.display()
            )));
        }
        Ok(Store {
            conn,
            path: path.to_owned(),
            full_sync: true,
            events: None,
            new_events: false,
            venue: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn setup(&mut self) -> Result<()> {
        self.conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError(format!(
                "cannot switch to WAL (journal_mode is {mode})"
            )));
        }
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        // No checkpoint inside a scan's commit: the daemon checkpoints in the background
        // (`checkpoint`), between scans.
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // After a checkpoint the WAL starts again from its beginning; a burst (a long replay,
        // 30 s of scans) may have grown it, and the reset cuts it back to this.
        self.conn
            .pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError(format!(
                "{} has schema version {version}, newer than this tiketo-gate ({SCHEMA_VERSION}): downgrade refused",
                self.path.display()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// `PRAGMA quick_check`: `Ok` when the file is sound.
    pub fn quick_check(&self) -> Result<()> {
        let r: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| {
                if is_corruption(&e) {
                    StoreError(format!("database disk image is malformed: {e}"))
                } else {
                    StoreError::from(e)
                }
            })?;
        if r == "ok" {
            Ok(())
        } else {
            Err(StoreError(format!("database disk image is malformed: {r}")))
        }
    }

    /// Copies the WAL into the database file (without waiting for readers); returns the
    /// WAL pages that were in it.
    pub fn checkpoint(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?)
    }

    /// `PRAGMA integrity_check`'s first line.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// Writes a decided scan in one transaction (with the offline use it spends, if any).
    pub fn insert_scan(&mut self, s: &NewScan, uses: impl Into<UseChange>) -> Result<()> {
        self.write_scan(s, uses.into(), Conflict::Fail)
    }

    /// Writes the row of an online accept about to be sent, unless the offline decision of
    /// the same scan got there first.
    pub fn insert_scan_if_absent(&mut self, s: &NewScan) -> Result<()> {
        self.write_scan(s, UseChange::None, Conflict::Ignore)
    }

    /// Writes an offline decision, replacing the online attempt's row of the same scan if it
    /// is there (the offline decision is what the guest saw). A row the server already
    /// acknowledged stays sent.
    pub fn upsert_offline_decision(
        &mut self,
        s: &NewScan,
        uses: impl Into<UseChange>,
    ) -> Result<()> {
        self.write_scan(s, uses.into(), Conflict::Override)
    }

    /// `synchronous=FULL` (the commit waits for fsync) or `NORMAL` (durable at the next FULL
    /// commit or checkpoint; a power cut may lose it). In WAL mode a FULL commit also makes
    /// every NORMAL commit before it durable.
    pub(super) fn sync(&mut self, full: bool) -> Result<()> {
        if self.full_sync != full {
            self.conn
                .pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
            self.full_sync = full;
        }
        Ok(())
    }

    fn write_scan(&mut self, s: &NewScan, uses: UseChange, conflict: Conflict) -> Result<()> {
        // Durability where it matters: a pending row that is the only record of an admitted
        // guest waits for fsync. The row of an online accept written just before its event
        // leaves does not (the server holds the record once it answers; if it does not
        // answer, the offline decision rewrites the row with fsync before any feedback), nor
        // does a rejected scan (nothing to send).
        let durable = s.pending && !matches!(conflict, Conflict::Ignore);
        self.sync(durable)?;
        let on_conflict = match conflict {
            Conflict::Fail => "",
            Conflict::Ignore => "ON CONFLICT(scan_id) DO NOTHING",
            Conflict::Override => {
                "ON CONFLICT(scan_id) DO UPDATE SET online = excluded.online, verdict = excluded.verdict,
                    reason = excluded.reason, reward_points = excluded.reward_points,
                    outbox = CASE WHEN scans.outbox = 'sent' THEN 'sent' ELSE excluded.outbox END"
            }
        };
        let sql = format!(
            "INSERT INTO scans (scan_id, code, code_masked, verdict, reason, online, scanned_at, scanned_at_ms,
                                boot_id, mono_ms, clock_synced, device, reward_points, outbox, reader, direction)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) {on_conflict}"
        );
        let tx = self.conn.transaction()?;
        tx.execute(
            &sql,
            params![
                s.scan_id.to_string(),
                s.code,
                mask_code(&s.code),
                s.verdict.as_str(),
                s.reason.as_str(),
                s.online,
                crate::clock::rfc3339_ms(s.scanned_at),
                (s.scanned_at.unix_timestamp_nanos() / 1_000_000) as i64,
                s.boot_id,
                s.mono_ms as i64,
                s.clock_synced,
                s.device,
                s.reward_points,
                s.pending.then_some("pending"),
                s.reader,
                s.direction.as_str(),
            ],
        )?;
        match uses {
            UseChange::None => {}
            UseChange::Count => {
                tx.execute(
                    "INSERT INTO offline_uses (code, uses, last_ms) VALUES (?1, 1, ?2)
                     ON CONFLICT(code) DO UPDATE SET uses = uses + 1, last_ms = excluded.last_ms",
                    params![s.code, now_ms()],
                )?;
            }
            UseChange::Reset => {
                tx.execute("DELETE FROM offline_uses WHERE code = ?1", [&s.code])?;
            }
        }
        // The row as the guest saw it is final, except an online accept written ahead of its
        // event: its event goes out when the server has answered (or the offline policy
        // decided instead).
        let final_row = !matches!(conflict, Conflict::Ignore);
        if final_row {
            events::queue_scan_event(
                &tx,
                self.events,
                self.venue.as_ref(),
                &s.scan_id.to_string(),
            )?;
        }
        tx.commit()?;
        if final_row {
            self.after_events();
        }
        Ok(())
    }

    /// Remembers what a successful lookup said (a fresh view resets the offline use count).
    pub fn cache_put(&mut self, code: &str, facts: Option<&PassFacts>, now_ms: i64) -> Result<()> {
        self.sync(false)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO pass_cache (code, found, pass_id, template_id, project_id, expires_ms, voided, scan_config, verified_at_ms, parameters)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                code,
                facts.is_some(),
                facts.map(|f| f.id.clone()),
                facts.map(|f| f.template_id.clone()),
                facts.and_then(|f| f.project_id.clone()),
                facts.and_then(|f| f.expires).map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64),
                facts.is_some_and(|f| f.voided),
                facts.and_then(|f| f.scan_config.clone()),
                now_ms,
                facts.and_then(|f| f.parameters.clone()),
            ],
        )?;
        tx.execute("DELETE FROM offline_uses WHERE code = ?1", [code])?;
        if let Some(ctx) = &self.venue {
            venue::note_lookup(&tx, ctx, code, facts, now_ms)?;
        }
        tx.commit()?;
        if self.venue.is_some() {
            self.after_events();
        }
        Ok(())
    }

    /// The cache entry for a code, if verified within `ttl`.
    pub fn cache_get(&self, code: &str, ttl: Duration, now_ms: i64) -> Result<Option<CacheEntry>> {
        let row = self
            .conn
            .query_row(
                "SELECT found, pass_id, template_id, project_id, expires_ms, voided, scan_config, verified_at_ms, parameters
                 FROM pass_cache WHERE code = ?1",
                [code],
                |r| {
                    let found: bool = r.get(0)?;
                    let expires_ms: Option<i64> = r.get(4)?;
                    let facts = if found {
                        Some(PassFacts {
                            id: r.get(1)?,
                            template_id: r.get(2)?,
                            project_id: r.get(3)?,
                            expires: expires_ms.and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok()),
                            voided: r.get(5)?,
                            scan_config: r.get(6)?,
                            parameters: r.get(8)?,
                        })
                    } else {
                        None
                    };
                    Ok(CacheEntry { facts, verified_at_ms: r.get(7)? })
                },
            )
            .optional()?;
        Ok(row.filter(|e| now_ms - e.verified_at_ms < ttl.as_millis() as i64))
    }

    /// The pass left (an exit was admitted online): its offline entries start again.
    pub fn reset_offline_uses(&mut self, code: &str) -> Result<()> {
        self.sync(false)?;
        self.conn
            .execute("DELETE FROM offline_uses WHERE code = ?1", [code])?;
        Ok(())
    }

    pub fn offline_uses(&self, code: &str) -> Result<u32> {
        Ok(self
            .conn
            .query_row(
                "SELECT uses FROM offline_uses WHERE code = ?1",
                [code],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Writes several meta rows and `status_at_ms` in one transaction, without waiting for
    /// fsync (status is not a record: the next commit or checkpoint makes it durable).
    pub fn set_meta_all(&mut self, rows: &[(&str, String)], at_ms: i64) -> Result<()> {
        self.sync(false)?;
        let tx = self.conn.transaction()?;
        for (k, v) in rows {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('status_at_ms', ?1)",
            params![at_ms.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Deletes sent and rejected rows older than `retention` (pending and dead rows stay),
    /// and cached passes not verified within it (with their holders' parameters). Returns the
    /// scan rows deleted.
    pub fn prune(&self, retention: Duration, now_ms: i64) -> Result<usize> {
        let cutoff = now_ms - retention.as_millis() as i64;
        let scans = self.conn.execute(
            "DELETE FROM scans WHERE scanned_at_ms < ?1 AND (outbox IS NULL OR outbox = 'sent')",
            [cutoff],
        )?;
        self.conn
            .execute("DELETE FROM pass_cache WHERE verified_at_ms < ?1", [cutoff])?;
        self.conn
            .execute("DELETE FROM mqtt_events WHERE at_ms < ?1", [cutoff])?;
        self.conn
            .execute("DELETE FROM command_ids WHERE exp_ms < ?1", [now_ms])?;
        self.venue_prune(cutoff, now_ms)?;
        Ok(scans)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A decided scan for the store's tests.
    pub(in crate::store) fn scan(code: &str, verdict: Verdict, pending: bool) -> NewScan {
        NewScan {
            scan_id: Uuid::new_v4(),
            code: code.into(),
            verdict,
            reason: if verdict == Verdict::Accept {
                Reason::OfflinePolicy
            } else {
                Reason::Voided
            },
            online: false,
            scanned_at: OffsetDateTime::now_utc(),
            boot_id: "boot".into(),
            mono_ms: 42,
            clock_synced: false,
            device: "d".into(),
            reader: "reader".into(),
            direction: crate::decision::Direction::Entry,
            reward_points: None,
            pending,
        }
    }

    #[test]
    fn outbox_lifecycle_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("x.db")).unwrap();
        let a = scan("CODE-AAAA-1", Verdict::Accept, true);
        let b = scan("CODE-BBBB-2", Verdict::Accept, true);
        let r = scan("CODE-CCCC-3", Verdict::Reject, false);
        for x in [&a, &b, &r] {
            s.insert_scan(x, false).unwrap();
        }
        let c = s.counts().unwrap();
        assert_eq!((c.scans, c.pending, c.dead, c.sent), (3, 2, 0, 0));
        let batch = s.pending_batch(10, &[]).unwrap();
        assert_eq!(
            batch.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
            ["CODE-AAAA-1", "CODE-BBBB-2"]
        );
        let skip = s.pending_batch(10, &[a.scan_id.to_string()]).unwrap();
        assert_eq!(skip.len(), 1);
        s.apply_replay(
            &[(a.scan_id.to_string(), Some("ev1".into()))],
            &[(b.scan_id.to_string(), "MappingTemplate".into())],
            &[],
        )
        .unwrap();
        let c = s.counts().unwrap();
        assert_eq!((c.pending, c.dead, c.sent), (0, 1, 1));
        let dead = s.list(true, 10).unwrap();
        assert_eq!(dead[0].code, mask_code("CODE-BBBB-2"));
        assert_eq!(dead[0].last_error.as_deref(), Some("MappingTemplate"));
        assert_eq!(s.retry(None).unwrap(), 1);
        assert_eq!(s.counts().unwrap().pending, 1);
        assert!(s.drop_row(&b.scan_id.to_string()).unwrap());
        assert_eq!(s.counts().unwrap().pending, 0);
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn cache_ttl_and_offline_uses_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let facts = PassFacts {
            id: "p".into(),
            template_id: "t".into(),
            project_id: Some("pr".into()),
            expires: Some(OffsetDateTime::from_unix_timestamp(4_000_000_000).unwrap()),
            voided: false,
            scan_config: None,
            parameters: Some(r#"{"firstName":"Eva"}"#.into()),
        };
        {
            let mut s = Store::open(&path).unwrap();
            s.cache_put("C1", Some(&facts), 1_000).unwrap();
            s.cache_put("C2", None, 1_000).unwrap();
            s.insert_scan(
                &NewScan {
                    code: "C1".into(),
                    ..scan("C1", Verdict::Accept, true)
                },
                true,
            )
            .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let ttl = Duration::from_secs(10);
        assert_eq!(
            s.cache_get("C1", ttl, 5_000).unwrap().unwrap().facts,
            Some(facts.clone())
        );
        assert_eq!(s.cache_get("C2", ttl, 5_000).unwrap().unwrap().facts, None);
        assert!(
            s.cache_get("C1", ttl, 11_001).unwrap().is_none(),
            "stale entries are not used"
        );
        assert_eq!(s.offline_uses("C1").unwrap(), 1);
        s.cache_put("C1", Some(&facts), 20_000).unwrap();
        assert_eq!(
            s.offline_uses("C1").unwrap(),
            0,
            "a fresh online view resets the count"
        );
    }

    #[test]
    fn the_offline_decision_wins_over_the_online_attempts_row_in_either_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("x.db")).unwrap();
        let online = NewScan {
            online: true,
            ..scan("C", Verdict::Accept, true)
        };
        let offline = NewScan {
            verdict: Verdict::Reject,
            reason: Reason::OfflinePolicy,
            pending: false,
            ..online.clone()
        };
        // online row first, then the offline decision
        s.insert_scan_if_absent(&online).unwrap();
        s.upsert_offline_decision(&offline, false).unwrap();
        assert_eq!(s.counts().unwrap().pending, 0);
        // offline decision first, then the late online insert
        let online2 = NewScan {
            scan_id: Uuid::new_v4(),
            ..online.clone()
        };
        let offline2 = NewScan {
            scan_id: online2.scan_id,
            ..offline.clone()
        };
        s.upsert_offline_decision(&offline2, false).unwrap();
        s.insert_scan_if_absent(&online2).unwrap();
        let c = s.counts().unwrap();
        assert_eq!((c.scans, c.pending), (2, 0));
        // an acknowledged row stays sent
        let online3 = NewScan {
            scan_id: Uuid::new_v4(),
            ..online.clone()
        };
        s.insert_scan_if_absent(&online3).unwrap();
        s.mark_sent(&online3.scan_id.to_string(), Some("ev"))
            .unwrap();
        s.upsert_offline_decision(
            &NewScan {
                scan_id: online3.scan_id,
                ..offline.clone()
            },
            false,
        )
        .unwrap();
        assert_eq!(s.counts().unwrap().sent, 1);
    }

    #[test]
    fn prune_forgets_cached_passes_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("x.db")).unwrap();
        let day = 86_400_000;
        s.cache_put("OLD", None, 1_000).unwrap();
        s.cache_put("NEW", None, 40 * day).unwrap();
        s.prune(Duration::from_secs(30 * 86_400), 41 * day).unwrap();
        let forever = Duration::from_secs(100 * 86_400);
        assert!(s.cache_get("OLD", forever, 41 * day).unwrap().is_none());
        assert!(s.cache_get("NEW", forever, 41 * day).unwrap().is_some());
    }

    #[test]
    fn prune_keeps_pending_and_dead() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("x.db")).unwrap();
        let old = OffsetDateTime::now_utc() - time::Duration::days(40);
        let p = NewScan {
            scanned_at: old,
            ..scan("P", Verdict::Accept, true)
        };
        let r = NewScan {
            scanned_at: old,
            ..scan("R", Verdict::Reject, false)
        };
        let sent = NewScan {
            scanned_at: old,
            ..scan("S", Verdict::Accept, true)
        };
        for x in [&p, &r, &sent] {
            s.insert_scan(x, false).unwrap();
        }
        s.mark_sent(&sent.scan_id.to_string(), Some("e")).unwrap();
        assert_eq!(
            s.prune(Duration::from_secs(30 * 86400), now_ms()).unwrap(),
            2
        );
        assert_eq!(s.counts().unwrap().pending, 1);
    }

    #[test]
    fn garbage_file_is_moved_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (s, aside) = Store::open_or_quarantine(&path).unwrap();
        let aside = aside.expect("moved aside");
        assert!(aside.exists());
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 8192]);
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn a_v1_store_migrates_and_its_queue_replays_as_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        {
            // A store as the first release left it, with one pending scan.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute(
                "INSERT INTO scans (scan_id, code, code_masked, verdict, reason, online, scanned_at,
                     scanned_at_ms, boot_id, mono_ms, clock_synced, device, outbox)
                 VALUES ('s1', 'VALID-0001', '…0001', 'accept', 'offline_policy', 0,
                     '2026-11-27T12:00:00.000Z', 1, 'b', 1, 1, 'old-door', 'pending')",
                [],
            )
            .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let rows = s.pending_batch(10, &[]).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].reader, "reader");
        assert_eq!(rows[0].direction, crate::decision::Direction::Entry);
        let listed = s.list(false, 10).unwrap();
        assert_eq!(
            (listed[0].reader.as_str(), listed[0].direction.as_str()),
            ("reader", "entry")
        );
        // New rows keep their direction; the column refuses anything else.
        let mut exit = scan("CODE-EXIT-0001", Verdict::Accept, true);
        exit.direction = crate::decision::Direction::Exit;
        exit.reader = "way-out".into();
        s.insert_scan(&exit, UseChange::None).unwrap();
        let rows = s.pending_batch(10, &[]).unwrap();
        assert_eq!(rows[1].direction, crate::decision::Direction::Exit);
        assert_eq!(rows[1].reader, "way-out");
        assert!(s
            .conn
            .execute("UPDATE scans SET direction = 'sideways'", [])
            .is_err());
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let e = Store::open(&path).err().unwrap();
        assert!(e.0.contains("newer"), "{e}");
    }
}
