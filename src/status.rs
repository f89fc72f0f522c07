//! The daemon's status, one typed struct: taken from the shared state ([`Status::now`]),
//! written into the store's `meta` table by the status writer ([`write`]) for `tiketo-gate
//! status` in another process ([`Status::read`]), and shown by `status`, `status --json`
//! ([`Status::cli_json`]) and `/api/status` ([`Status::page_json`]). The meta keys and the
//! JSON field names are a public contract: add, never rename.

use std::time::Duration;

use serde_json::{json, Value};

use crate::clock::{now_ms, rfc3339_from_ms};
use crate::shutdown::Shutdown;
use crate::state::{DoorState, ReaderState, Shared};
use crate::store::{Counts, Store};

/// What status shows, as the daemon knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `online`, `offline` (`unknown` when no daemon ever wrote it).
    pub mode: String,
    /// Since when (unix ms; 0: unknown).
    pub mode_since_ms: i64,
    /// When the server last acknowledged a scan event (unix ms; 0: never).
    pub last_sync_ms: i64,
    /// The API's last refusal of the token (empty: none).
    pub auth_error: String,
    /// The API's schema does not fit this daemon: the server's message (empty: it fits).
    pub api_mismatch: String,
    pub queue_full: bool,
    pub clock_synced: bool,
    /// Who says so (`kernel`, `timesyncd`; empty: nobody).
    pub clock_sync_source: String,
    pub daemon_pid: u32,
    pub readers: Vec<ReaderState>,
    pub door: Option<DoorState>,
    /// The readers in lockdown or release (remote commands), from the store.
    pub overrides: Vec<crate::store::DoorOverride>,
    /// The venue (`mqtt.venue`), as the broker shows it.
    pub venue: Option<crate::state::VenueState>,
    /// The venue's conflicts: how many, and the newest (from the store; live: none read).
    pub venue_conflicts: i64,
    pub recent_conflicts: Vec<crate::store::VenueConflictRow>,
    /// Passes the venue's memory holds (from the store; live: not read).
    pub venue_passes: i64,
    /// When the daemon wrote it (unix ms; 0: never), for a status read from the store.
    pub at_ms: i64,
}

impl Status {
    /// The status now.
    pub fn now(shared: &Shared, max_pending: u64) -> Status {
        let sync = crate::clock::sync_source();
        Status {
            mode: shared.api.link.mode().as_str().into(),
            mode_since_ms: shared.api.link.since_ms(),
            last_sync_ms: shared.outbox.last_sync_ms(),
            auth_error: shared.api.auth_error(),
            api_mismatch: shared.api.mismatch().map(|m| m.detail).unwrap_or_default(),
            queue_full: shared.outbox.is_full(max_pending),
            clock_synced: sync.is_some(),
            clock_sync_source: sync.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            daemon_pid: std::process::id(),
            readers: shared.board.readers(),
            door: shared.board.door(),
            overrides: shared.board.overrides(),
            venue: shared.board.venue(),
            venue_conflicts: crate::metrics::metrics().venue_conflicts.get() as i64,
            recent_conflicts: Vec::new(),
            venue_passes: crate::metrics::metrics().venue_passes.get(),
            at_ms: now_ms(),
        }
    }

    /// The meta rows (without `status_at_ms`, written with every change).
    fn meta(&self) -> Vec<(&'static str, String)> {
        vec![
            ("mode", self.mode.clone()),
            ("mode_since_ms", self.mode_since_ms.to_string()),
            ("last_sync_ms", self.last_sync_ms.to_string()),
            ("auth_error", self.auth_error.clone()),
            ("api_mismatch", self.api_mismatch.clone()),
            ("queue_full", self.queue_full.to_string()),
            ("clock_synced", self.clock_synced.to_string()),
            ("clock_sync_source", self.clock_sync_source.clone()),
            ("daemon_pid", self.daemon_pid.to_string()),
            (
                "readers",
                serde_json::to_string(&self.readers).unwrap_or_default(),
            ),
            (
                "door",
                serde_json::to_string(&self.door).unwrap_or_default(),
            ),
            (
                "venue",
                serde_json::to_string(&self.venue).unwrap_or_default(),
            ),
        ]
    }

    /// The status the daemon last wrote into the store.
    pub fn read(store: &Store) -> crate::store::Result<Status> {
        let meta = |k: &str| store.get_meta(k);
        let num = |k: &str| -> crate::store::Result<i64> {
            Ok(meta(k)?
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(0))
        };
        // A store an older daemon made has no such tables: nothing of a venue there.
        let conflicts = store.venue_conflicts(5).unwrap_or_default();
        Ok(Status {
            mode: meta("mode")?.unwrap_or_else(|| "unknown".into()),
            mode_since_ms: num("mode_since_ms")?,
            last_sync_ms: num("last_sync_ms")?,
            auth_error: meta("auth_error")?.unwrap_or_default(),
            api_mismatch: meta("api_mismatch")?.unwrap_or_default(),
            queue_full: meta("queue_full")?.as_deref() == Some("true"),
            clock_synced: meta("clock_synced")?.as_deref() == Some("true"),
            clock_sync_source: meta("clock_sync_source")?.unwrap_or_default(),
            daemon_pid: num("daemon_pid")? as u32,
            readers: meta("readers")?
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            door: meta("door")?
                .and_then(|s| serde_json::from_str(&s).ok())
                .flatten(),
            // A store an older daemon made has no such table: no override there.
            overrides: match store.overrides() {
                Err(e) if e.0.contains("no such table") => Vec::new(),
                r => r?,
            },
            venue: meta("venue")?
                .and_then(|s| serde_json::from_str(&s).ok())
                .flatten(),
            venue_conflicts: conflicts.0,
            recent_conflicts: conflicts.1,
            venue_passes: store.venue_known().unwrap_or(0),
            at_ms: num("status_at_ms")?,
        })
    }

    /// Whether any reader is in this lockdown or release.
    pub fn any(&self, mode: crate::store::OverrideMode) -> bool {
        self.overrides.iter().any(|o| o.mode == mode)
    }

    /// The overrides as JSON: `[{"reader", "mode", "since", "jti"}]`.
    pub fn overrides_json(&self) -> Value {
        self.overrides
            .iter()
            .map(|o| {
                json!({
                    "reader": o.reader,
                    "mode": o.mode.as_str(),
                    "since": rfc3339_from_ms(o.since_ms),
                    "jti": o.jti,
                })
            })
            .collect()
    }

    /// The venue as JSON (`null` without `mqtt.venue`): `{"topic", "doors", "refreshing",
    /// "foreign_key", "passes", "conflicts", "recent_conflicts": [{"code", "first_door",
    /// "second_door", "at"}]}`.
    pub fn venue_json(&self) -> Value {
        match &self.venue {
            None => Value::Null,
            Some(v) => json!({
                "topic": v.topic,
                "doors": v.doors,
                "refreshing": v.refreshing,
                "foreign_key": v.foreign_key,
                "passes": self.venue_passes,
                "conflicts": self.venue_conflicts,
                "recent_conflicts": self.recent_conflicts.iter().map(|c| json!({
                    "code": c.code,
                    "first_door": c.first_door,
                    "second_door": c.second_door,
                    "at": rfc3339_from_ms(c.at_ms),
                })).collect::<Vec<_>>(),
            }),
        }
    }

    /// `tiketo-gate status --json`: the stored status, the store's counts, the enrolment.
    pub fn cli_json(
        &self,
        device: &str,
        counts: &Counts,
        workspace: Option<Option<String>>,
        store: &std::path::Path,
    ) -> Value {
        let iso = |ms: i64| (ms > 0).then(|| rfc3339_from_ms(ms));
        let sync = crate::clock::sync_source();
        json!({
            "device": device,
            "mode": self.mode,
            "mode_since": iso(self.mode_since_ms),
            "enrolled": workspace.is_some(),
            "workspace": workspace.flatten(),
            "pending": counts.pending,
            "oldest_pending": counts.oldest_pending_ms.map(rfc3339_from_ms),
            "oldest_pending_age_s": counts.oldest_pending_ms.map(|ms| (now_ms() - ms).max(0) / 1000),
            "dead": counts.dead,
            "sent": counts.sent,
            "scans": counts.scans,
            "last_sync": iso(self.last_sync_ms),
            // The clock of the machine the command runs on (the daemon's, on a kiosk).
            "clock_synced": sync.is_some(),
            // Who says so: "kernel" (an NTP daemon disciplines it: timedatectl's "System clock
            // synchronized"), "timesyncd" (its file), null.
            "clock_sync_source": sync.map(|s| s.as_str()),
            "auth_error": (!self.auth_error.is_empty()).then_some(&self.auth_error),
            "api_mismatch": (!self.api_mismatch.is_empty()).then_some(&self.api_mismatch),
            "queue_full": self.queue_full,
            "status_at": iso(self.at_ms),
            "readers": self.readers,
            "door": self.door.as_ref().map(|d| {
                let mut v = json!(d);
                v["since"] = json!(iso(d.since_ms));
                v
            }),
            "store": store.display().to_string(),
            "lockdown": self.any(crate::store::OverrideMode::Lockdown),
            "release": self.any(crate::store::OverrideMode::Release),
            "overrides": self.overrides_json(),
            "venue": self.venue_json(),
        })
    }

    /// `/api/status`, what the status page polls: the live status and the page's extras.
    pub fn page_json(&self, page: PageExtras) -> Value {
        let all_connected = !self.readers.is_empty() && self.readers.iter().all(|r| r.connected);
        json!({
            "device": page.device,
            "mode": self.mode,
            "mode_since": rfc3339_from_ms(self.mode_since_ms),
            "reader_connected": all_connected,
            "readers": self.readers,
            "door": self.door,
            "enrolled": page.enrolled,
            "pending": page.pending,
            "oldest_pending_age_s": page.oldest_pending_age_s,
            "dead": page.dead,
            "store_ok": page.store_ok,
            "last_sync": (self.last_sync_ms > 0).then(|| rfc3339_from_ms(self.last_sync_ms)),
            "clock_synced": self.clock_synced,
            "clock_sync_source": (!self.clock_sync_source.is_empty()).then_some(&self.clock_sync_source),
            "auth_error": !self.auth_error.is_empty(),
            "api_mismatch": !self.api_mismatch.is_empty(),
            "outputs": page.outputs,
            "recent": page.recent,
            "admin": page.admin,
            "version": env!("CARGO_PKG_VERSION"),
            "lockdown": self.any(crate::store::OverrideMode::Lockdown),
            "release": self.any(crate::store::OverrideMode::Release),
            "overrides": self.overrides_json(),
            "venue": self.venue_json(),
        })
    }
}

/// What the status page shows beside the status.
pub struct PageExtras {
    pub device: String,
    pub enrolled: bool,
    pub pending: i64,
    pub oldest_pending_age_s: i64,
    pub dead: i64,
    pub store_ok: bool,
    pub outputs: serde_json::Map<String, Value>,
    pub recent: Vec<crate::state::RecentScan>,
    pub admin: bool,
}

/// The status writer: writes the meta rows that changed, when something changed (woken by
/// the board, the link, the outbox) and every 10 s.
pub async fn write(shared: Shared, max_pending: u64, mut shutdown: Shutdown) {
    let mut last: Vec<(&'static str, String)> = Vec::new();
    let mut changes = shared.api.link.subscribe();
    let mut wake = shared.board.status_wake.subscribe();
    loop {
        let now = Status::now(&shared, max_pending).meta();
        if now != last {
            let changed: Vec<(&'static str, String)> = now
                .iter()
                .filter(|kv| !last.contains(kv))
                .cloned()
                .collect();
            let write = shared
                .store
                .run(move |s| s.set_meta_all(&changed, now_ms()))
                .await;
            if write.is_ok() {
                last = now;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = changes.changed() => {}
            _ = wake.changed() => {}
            _ = shutdown.recv() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let status = Status {
            mode: "offline".into(),
            mode_since_ms: 1_764_000_000_000,
            last_sync_ms: 1_764_000_001_000,
            auth_error: "401 UnauthorizedException".into(),
            api_mismatch: "Validation error of type FieldUndefined: Field 'venue'".into(),
            queue_full: true,
            clock_synced: true,
            clock_sync_source: "kernel".into(),
            daemon_pid: 4242,
            readers: vec![ReaderState {
                name: "exit".into(),
                direction: "exit".into(),
                connected: true,
            }],
            door: Some(DoorState {
                state: "open".into(),
                since_ms: 5,
                held_open: true,
            }),
            overrides: vec![],
            venue: Some(crate::state::VenueState {
                topic: "v/hall".into(),
                doors: vec!["a".into(), "b".into()],
                refreshing: true,
                foreign_key: false,
            }),
            venue_conflicts: 0,
            recent_conflicts: vec![],
            venue_passes: 0,
            at_ms: 1_764_000_002_000,
        };
        store.set_meta_all(&status.meta(), status.at_ms).unwrap();
        assert_eq!(Status::read(&store).unwrap(), status);
    }

    #[test]
    fn a_store_no_daemon_wrote_reads_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let s = Status::read(&store).unwrap();
        assert_eq!(s.mode, "unknown");
        assert_eq!((s.at_ms, s.last_sync_ms), (0, 0));
        assert!(s.readers.is_empty() && s.door.is_none());
    }
}
