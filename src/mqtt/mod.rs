//! The door on the venue's MQTT broker (`[mqtt]`): its presence (`<topic>/status`, with the
//! will), its state (`<topic>/state`), every event out of the store (`<topic>/events`), signed
//! remote commands (`<topic>/cmd`, answered on `<topic>/cmd/ack`) and Home Assistant.
//!
//! - [`settings`], [`state`], [`command`], [`ha`], [`window`]: pure (what the URL, the topics,
//!   a command, discovery and the acknowledgements mean);
//! - [`venue`]: the venue's topics (sealed pass records, the doors' presence), pure;
//! - [`link`]: the one task that owns the connection; [`act`]: a command done at the door.

pub mod act;
pub mod command;
pub mod ha;
pub mod link;
pub mod settings;
pub mod state;
pub mod venue;
pub mod window;
