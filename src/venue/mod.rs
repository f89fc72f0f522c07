//! One venue, one memory (`mqtt.venue`): the doors of a venue share what they learned of each
//! pass (a lookup's result) and each admission through the broker, so the offline rules hold
//! venue-wide. The store keeps the venue's memory next to the pass cache
//! (`store::venue`), the connection's task carries it (`mqtt::venue`), and:
//!
//! - [`seal`]: the venue key: a keyed address for each code (HMAC), the content sealed (AEAD,
//!   the topic as associated data), a key id to tell another venue's messages from damage;
//! - [`ledger`]: what the venue knows of one pass and how two views of it merge (a union by
//!   `scanId`: nothing counted twice), the offline uses since the last lookup anywhere (an exit
//!   anywhere resets them), and the conflicts two doors cut off from each other made;
//! - [`refresh`]: the background verification of the venue's cached passes, by one door.

pub mod ledger;
pub mod refresh;
pub mod seal;

/// The venue key, read once at start (never logged): surrounding whitespace trimmed, at least
/// 32 bytes; warned about when every user may read the file.
pub fn read_key(path: &std::path::Path) -> Result<seal::VenueKey, String> {
    let text = crate::mqtt::link::read_secret("mqtt.venue_key_file", path)?;
    seal::VenueKey::from_text(&text)
        .map_err(|e| format!("mqtt.venue_key_file {}: {e}", path.display()))
}
