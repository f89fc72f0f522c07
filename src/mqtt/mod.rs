//! The door on the venue's MQTT broker (`[mqtt]`): so far its presence (`<topic>/status`,
//! with the will) and its state (`<topic>/state`); events and commands are to come.

pub mod command;
pub mod link;
pub mod settings;
pub mod state;
