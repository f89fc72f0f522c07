//! One venue, one memory (issue 21, begun): the doors of a venue share what they learned of
//! each pass (a lookup's result) and each admission through the broker, so the offline rules
//! hold venue-wide. So far the pure core, not yet wired to the broker or the decisions:
//!
//! - [`seal`]: the venue key: a keyed address for each code (HMAC), the content sealed (AEAD,
//!   the topic as associated data), a key id to tell another venue's messages from damage;
//! - [`ledger`]: what the venue knows of one pass and how two views of it merge (a union by
//!   `scanId`: nothing counted twice), the offline uses since the last lookup anywhere (an exit
//!   anywhere resets them), and the conflicts two doors cut off from each other made.

pub mod ledger;
pub mod seal;
