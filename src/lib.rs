//! tiketo-gate: a door and check-in terminal daemon for Tiketo wallet passes.
//!
//! # Layout
//!
//! - [`main.rs`](../src/main.rs) and [`cli`]: the commands, thin; [`daemon`]: `run`, its
//!   start-up order, the main loop and the order of a stop ([`shutdown`]).
//! - [`lane`]: where a reader's events become verdicts, one lane a reader: the dispatcher and
//!   its debouncer ([`lane::Lane`]), the decision ([`lane::scan`]) and the one commit step
//!   ([`lane::commit`]: store, feedback, tidy-up, record, log).
//! - [`state`]: what the tasks share, by what it is: the API's state and the one mapping of
//!   an API call's result into it, the outbox, the board; [`status`]: the one typed status.
//! - [`api`]: the Tiketo GraphQL client, its documents, error classes ([`api::classify`]) and
//!   AppSync's scalars ([`api::scalars`]); [`store`]: the SQLite file (scans, outbox, cache)
//!   and its one-at-a-time seam; [`replay`]: the outbox sent in batches; [`enrol`]: the
//!   device's credentials.
//! - [`reader`]: the reader threads (serial, keyboard-mode, stdin); [`outputs`]: the GPIO
//!   backends, the feedback patterns (the outputs' one owner), the door's inputs; [`door`]:
//!   what the inputs do; [`http`] and [`metrics`]: the status page, `/metrics`, `/healthz`.
//! - [`config`]: the TOML file, its validation and the line locator.
//! - Pure, no IO, unit-tested (and fuzzed where they read outside input): [`framing`],
//!   [`hid`], [`debounce`], [`decision`], [`link`], [`backoff`], [`mask`], [`clock`]'s
//!   formatting and sync rule, [`slots`] (who keeps a connection), [`api::classify`], [`api::scalars`].
//!
//! # The path of a scan
//!
//! A reader thread frames the bytes (`framing`, `hid`) and sends `ReaderEvent::Code` to its
//! lane. The lane debounces it, then `lane::scan::decide` asks the API (`passByScanCode`, the
//! decision, then `createScanEvent` with the pending row written meanwhile) or, offline or
//! out of budget, leaves it to the offline policy; either way it returns a `Commit`.
//! `lane::commit::commit` stores it (fsync'd where it admits a guest), gives the feedback,
//! records it (metrics, status page) and logs the `scan` line. Pending rows reach the server
//! later through `replay`.
#![forbid(unsafe_code)]

pub mod api;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod debounce;
pub mod decision;
pub mod display;
pub mod doctor;
pub mod door;
pub mod enrol;
pub mod fingerprint;
pub mod framing;
pub mod hid;
pub mod hours;
pub mod http;
pub mod lane;
pub mod link;
pub mod logging;
pub mod mask;
pub mod metrics;
pub mod mqtt;
pub mod outputs;
pub mod reader;
pub mod replay;
pub mod service;
pub mod shutdown;
pub mod slots;
pub mod state;
pub mod status;
pub mod store;
pub mod venue;
