//! The venue's topics on the broker (`mqtt.venue`), as the connection's task uses them (pure
//! but for the seal's nonce):
//!
//! - `<venue>/p/<address>`: one retained message per pass the venue knows, the record
//!   ([`crate::venue::ledger::PassRecord`]) sealed with the venue key, the topic as associated
//!   data, with MQTT 5's message expiry set to when the record's cache would forget it: a door
//!   that connects gets the venue's whole memory from the broker at once, and the broker drops
//!   what no door would use;
//! - `<venue>/doors/<device>`: each door's presence, retained, sealed, expiring 45 s after it
//!   was sent (sent every 10 s): which doors are there, and which of them can reach the API.
//!   The first of those by name refreshes the venue's passes (one door, not each).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::venue::ledger::{self, PassRecord};
use crate::venue::seal::{OpenError, VenueKey};

/// A door's presence expires from the broker after this long (it is sent every 10 s).
pub const PRESENCE_EXPIRY_S: u32 = 45;
/// A door not heard from for this long is gone (another takes the refresh over).
const PRESENCE_GONE_MS: i64 = 35_000;

/// A door's presence message (sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub door: String,
    pub at_ms: i64,
    /// It reaches the API now (it may refresh).
    pub api: bool,
}

/// What a message on a venue topic was.
#[derive(Debug)]
pub enum Incoming {
    /// Not one of the venue's topics.
    NotVenue,
    /// A pass's record, opened.
    Record {
        address: String,
        record: Box<PassRecord>,
    },
    /// A door's presence (the leader may have changed).
    Presence,
    /// Cleared (an empty retained message): nothing to do.
    Cleared,
    /// Sealed with another venue key.
    Foreign,
    /// Not a record of this version, or altered, or moved.
    Damaged(&'static str),
}

/// The venue as this door's connection sees it.
pub struct VenueTopics {
    key: Arc<VenueKey>,
    prefix: String,
    device: String,
    ttl_ms: i64,
    /// The doors heard from: their last presence.
    doors: BTreeMap<String, Presence>,
}

impl VenueTopics {
    pub fn new(key: Arc<VenueKey>, prefix: &str, device: &str, ttl_ms: i64) -> Self {
        VenueTopics {
            key,
            prefix: prefix.to_owned(),
            device: device.to_owned(),
            ttl_ms,
            doors: BTreeMap::new(),
        }
    }

    /// The filters to subscribe to: the records, the doors.
    pub fn filters(&self) -> [String; 2] {
        [
            format!("{}/p/+", self.prefix),
            format!("{}/doors/+", self.prefix),
        ]
    }

    pub fn record_topic(&self, address: &str) -> String {
        format!("{}/p/{address}", self.prefix)
    }

    /// This door's presence: (topic, sealed body).
    pub fn presence(&mut self, api: bool, now_ms: i64) -> (String, Vec<u8>) {
        let topic = format!("{}/doors/{}", self.prefix, self.device);
        let p = Presence {
            door: self.device.clone(),
            at_ms: now_ms,
            api,
        };
        self.doors.insert(self.device.clone(), p.clone());
        let body = serde_json::to_vec(&p).unwrap_or_default();
        let sealed = self.key.seal(&topic, &body);
        (topic, sealed)
    }

    /// A record as it goes to the broker: (topic, sealed body, message expiry in s). `None`
    /// (a record gone, or one no door would use any more) clears the retained message.
    pub fn sealed_record(
        &self,
        address: &str,
        record: Option<&PassRecord>,
        now_ms: i64,
    ) -> (String, Vec<u8>, Option<u32>) {
        let topic = self.record_topic(address);
        let left_ms = record.map(|r| ledger::last_activity(r).saturating_add(self.ttl_ms) - now_ms);
        match (record, left_ms) {
            (Some(r), Some(left)) if left > 0 => {
                let body = serde_json::to_vec(r).unwrap_or_default();
                let sealed = self.key.seal(&topic, &body);
                let expiry = (left / 1000).clamp(1, u32::MAX as i64) as u32;
                (topic, sealed, Some(expiry))
            }
            _ => (topic, Vec::new(), None),
        }
    }

    /// A message on one of the subscribed topics.
    pub fn incoming(&mut self, topic: &str, payload: &[u8]) -> Incoming {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Incoming::NotVenue;
        };
        let (kind, name) = match rest.split_once('/') {
            Some((k, n)) if !n.is_empty() && !n.contains('/') => (k, n),
            _ => return Incoming::NotVenue,
        };
        if kind != "p" && kind != "doors" {
            return Incoming::NotVenue;
        }
        if payload.is_empty() {
            return Incoming::Cleared;
        }
        let plain = match self.key.open(topic, payload) {
            Ok(p) => p,
            Err(OpenError::ForeignKey) => return Incoming::Foreign,
            Err(OpenError::Damaged) => return Incoming::Damaged("does not open"),
        };
        if kind == "p" {
            let valid_address = name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid_address {
                return Incoming::Damaged("not a pass address");
            }
            match serde_json::from_slice::<PassRecord>(&plain) {
                Ok(record) => Incoming::Record {
                    address: name.to_owned(),
                    record: Box::new(record),
                },
                Err(_) => Incoming::Damaged("not a pass record"),
            }
        } else {
            match serde_json::from_slice::<Presence>(&plain) {
                Ok(p) if p.door == name => {
                    self.doors.insert(name.to_owned(), p);
                    Incoming::Presence
                }
                _ => Incoming::Damaged("not a door's presence"),
            }
        }
    }

    /// The doors heard from lately (this one included once it has said it is there).
    pub fn doors(&self, now_ms: i64) -> Vec<String> {
        self.doors
            .values()
            .filter(|p| now_ms - p.at_ms < PRESENCE_GONE_MS || p.door == self.device)
            .map(|p| p.door.clone())
            .collect()
    }

    /// Whether this door is the one that refreshes: the first by name of the doors heard
    /// lately that reach the API (this one included, if it does).
    pub fn refresher(&self, api: bool, now_ms: i64) -> bool {
        if !api {
            return false;
        }
        let first = self
            .doors
            .values()
            .filter(|p| p.door == self.device || (p.api && now_ms - p.at_ms < PRESENCE_GONE_MS))
            .map(|p| p.door.as_str())
            .chain(std::iter::once(self.device.as_str()))
            .min();
        first == Some(self.device.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<VenueKey> {
        Arc::new(VenueKey::from_text(&s.repeat(40)).unwrap())
    }

    #[test]
    fn records_go_sealed_with_their_expiry_and_come_back() {
        let k = key("a");
        let a = VenueTopics::new(k.clone(), "v/hall", "door-a", 60_000);
        let mut b = VenueTopics::new(k, "v/hall", "door-b", 60_000);
        let r = PassRecord {
            lookup: Some(ledger::Lookup::of_scan(None, 1_000, "door-a")),
            admissions: vec![],
        };
        let (topic, body, expiry) = a.sealed_record(&"0".repeat(32), Some(&r), 11_000);
        assert_eq!(topic, format!("v/hall/p/{}", "0".repeat(32)));
        assert_eq!(
            expiry,
            Some(50),
            "the record's cache forgets it 60 s after the lookup"
        );
        assert!(!String::from_utf8_lossy(&body).contains("door-a"), "sealed");
        match b.incoming(&topic, &body) {
            Incoming::Record { address, record } => {
                assert_eq!((address, *record), ("0".repeat(32), r.clone()))
            }
            other => panic!("{other:?}"),
        }
        // Past its time: the retained message is cleared.
        let (_, body, expiry) = a.sealed_record(&"0".repeat(32), Some(&r), 61_000);
        assert!(body.is_empty() && expiry.is_none());
        assert!(matches!(b.incoming(&topic, &body), Incoming::Cleared));
        assert!(matches!(
            b.incoming("v/hall/p/zz", b"x"),
            Incoming::Damaged(_)
        ));
        assert!(matches!(
            b.incoming("v/other/p/x", b"x"),
            Incoming::NotVenue
        ));
        // Another venue's key.
        let mut c = VenueTopics::new(key("c"), "v/hall", "door-c", 60_000);
        assert!(matches!(
            c.incoming(
                &topic,
                &a.sealed_record(&"0".repeat(32), Some(&r), 11_000).1
            ),
            Incoming::Foreign
        ));
    }

    #[test]
    fn one_door_refreshes_the_first_by_name_that_reaches_the_api() {
        let k = key("a");
        let mut a = VenueTopics::new(k.clone(), "v", "door-a", 60_000);
        let mut b = VenueTopics::new(k, "v", "door-b", 60_000);
        let now = 100_000;
        assert!(b.refresher(true, now), "alone, it refreshes");
        let (t, body) = a.presence(true, now);
        assert!(matches!(b.incoming(&t, &body), Incoming::Presence));
        assert!(!b.refresher(true, now), "door-a comes first");
        assert!(a.refresher(true, now));
        assert!(b.refresher(true, now + 40_000), "door-a not heard for 40 s");
        let (t, body) = a.presence(false, now);
        b.incoming(&t, &body);
        assert!(b.refresher(true, now), "door-a cannot reach the API");
        assert!(!b.refresher(false, now), "nor can door-b");
        assert_eq!(b.doors(now), ["door-a"]);
        // A presence under another door's name does not count.
        let (_, body) = a.presence(true, now);
        assert!(matches!(
            b.incoming("v/doors/door-z", &body),
            Incoming::Damaged(_)
        ));
    }
}
