//! What the door publishes about itself (pure): its topics and its state.

use serde_json::{json, Value};

use crate::status::Status;
use crate::store::{Counts, OverrideMode};

/// The door's topics under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Retained `online` / `offline` (the will).
    pub status: String,
    /// Retained JSON: [`state_json`].
    pub state: String,
    /// QoS 1, one JSON object per event, in order.
    pub events: String,
    /// Signed commands in.
    pub cmd: String,
    /// Every command's answer.
    pub ack: String,
    /// Home Assistant's side: `<ha>/<reader>/lock` (its commands), `<ha>/<reader>/verdict`.
    pub ha: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Topics {
            status: format!("{prefix}/status"),
            state: format!("{prefix}/state"),
            events: format!("{prefix}/events"),
            cmd: format!("{prefix}/cmd"),
            ack: format!("{prefix}/cmd/ack"),
            ha: format!("{prefix}/ha"),
        }
    }

    /// The reader of a Home Assistant command topic (`<ha>/<reader>/lock`).
    pub fn ha_lock_reader<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.ha.as_str())?
            .strip_prefix('/')?
            .strip_suffix("/lock")
            .filter(|r| !r.is_empty() && !r.contains('/'))
    }
}

/// `<topic>/state`: `mode` (`online`, `offline`, `api_mismatch`), `pending`, `dead`,
/// `lockdown`, `release`, and per reader `name`, `direction`, `connected`; `door` (`open`,
/// `closed`, `held_open`, `unknown`) with a door sensor. `pending` and `dead` are null when
/// the store could not be read.
pub fn state_json(s: &Status, counts: Option<&Counts>) -> Value {
    let mode = if !s.api_mismatch.is_empty() {
        "api_mismatch"
    } else {
        s.mode.as_str()
    };
    let door = s.door.as_ref().map(|d| {
        if d.held_open {
            "held_open".to_owned()
        } else {
            d.state.clone()
        }
    });
    let mut v = json!({
        "mode": mode,
        "pending": counts.map(|c| c.pending),
        "dead": counts.map(|c| c.dead),
        "lockdown": s.any(OverrideMode::Lockdown),
        "release": s.any(OverrideMode::Release),
        "clock_synced": s.clock_synced,
        "readers": s.readers.iter().map(|r| {
            let o = crate::store::override_of(&s.overrides, &r.name);
            json!({
                "name": r.name,
                "direction": r.direction,
                "connected": r.connected,
                "lockdown": o == Some(OverrideMode::Lockdown),
                "release": o == Some(OverrideMode::Release),
            })
        }).collect::<Vec<_>>(),
    });
    if let Some(d) = door {
        v["door"] = Value::String(d);
    }
    if let Some(venue) = &s.venue {
        // What changes rarely (not the count of passes, which moves with every scan).
        v["venue"] = json!({
            "doors": venue.doors,
            "refreshing": venue.refreshing,
            "foreign_key": venue.foreign_key,
            "conflicts": s.venue_conflicts,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DoorState, ReaderState};

    fn status() -> Status {
        Status {
            mode: "online".into(),
            mode_since_ms: 1,
            last_sync_ms: 0,
            auth_error: String::new(),
            api_mismatch: String::new(),
            queue_full: false,
            clock_synced: true,
            clock_sync_source: "kernel".into(),
            daemon_pid: 1,
            readers: vec![ReaderState {
                name: "main".into(),
                direction: "entry".into(),
                connected: true,
            }],
            door: None,
            overrides: vec![],
            venue: None,
            venue_conflicts: 0,
            recent_conflicts: vec![],
            venue_passes: 0,
            at_ms: 0,
        }
    }

    #[test]
    fn the_state_says_mode_queue_readers_and_door() {
        let counts = Counts {
            pending: 3,
            dead: 1,
            ..Counts::default()
        };
        let v = state_json(&status(), Some(&counts));
        assert_eq!(v["mode"], "online");
        assert_eq!(
            (v["pending"].as_i64(), v["dead"].as_i64()),
            (Some(3), Some(1))
        );
        assert_eq!(v["readers"][0]["connected"], true);
        assert!(v.get("door").is_none());
        let mut s = status();
        s.api_mismatch = "field venue".into();
        s.door = Some(DoorState {
            state: "open".into(),
            since_ms: 0,
            held_open: true,
        });
        let v = state_json(&s, None);
        assert_eq!(v["mode"], "api_mismatch");
        assert_eq!(v["door"], "held_open");
        assert!(v["pending"].is_null());
        assert_eq!(Topics::new("v/d").state, "v/d/state");
    }

    #[test]
    fn the_state_says_the_venue_when_there_is_one() {
        let mut s = status();
        assert!(state_json(&s, None).get("venue").is_none());
        s.venue = Some(crate::state::VenueState {
            topic: "v/hall".into(),
            doors: vec!["a".into(), "b".into()],
            refreshing: false,
            foreign_key: false,
        });
        s.venue_conflicts = 2;
        s.venue_passes = 500;
        let v = state_json(&s, None);
        assert_eq!(
            v["venue"],
            json!({"doors": ["a", "b"], "refreshing": false, "foreign_key": false, "conflicts": 2})
        );
    }
}
