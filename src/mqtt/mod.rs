//! The door on the venue's MQTT broker (`[mqtt]`): so far its presence (`<topic>/status`,
//! with the will) and its state (`<topic>/state`); events and commands are to come.

pub mod act;
pub mod command;
pub mod ha;
pub mod link;
pub mod settings;
pub mod state;
pub mod window;
