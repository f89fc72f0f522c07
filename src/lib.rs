//! tiketo-gate: a door and check-in terminal daemon for Tiketo wallet passes.
//!
//! The pure parts (framing, debounce, decision, error classification) do no IO and are
//! unit-tested; each IO edge sits behind a small seam: the reader threads ([`reader`]), the
//! outputs ([`outputs::OutputBackend`]), the API ([`api::Client`]).
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod debounce;
pub mod decision;
pub mod door;
pub mod enrol;
pub mod framing;
pub mod hid;
pub mod http;
pub mod link;
pub mod logging;
pub mod mask;
pub mod metrics;
pub mod outputs;
pub mod reader;
pub mod replay;
pub mod scan;
pub mod service;
pub mod store;
