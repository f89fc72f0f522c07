//! Knowing whether the API is reachable: a small state machine (pure) and its shared handle.
//!
//! Waiting `api.timeout_ms` for every scan while the API is down keeps every guest waiting.
//! After `threshold` consecutive failures to reach the API (transport errors, timeouts, 5xx,
//! 429) the daemon is *offline*: scans are decided at once without calling the API, and a probe
//! asks the API in the background (with backoff) until it answers. Any answer from the API
//! (even an error it chose to send) puts the daemon back *online*.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Online,
    Offline,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
        }
    }
}

/// The pure state machine.
#[derive(Debug, Clone)]
pub struct Connectivity {
    mode: Mode,
    since_ms: i64,
    failures: u32,
    threshold: u32,
}

impl Connectivity {
    pub fn new(threshold: u32, now_ms: i64) -> Self {
        Connectivity {
            mode: Mode::Online,
            since_ms: now_ms,
            failures: 0,
            threshold: threshold.max(1),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn since_ms(&self) -> i64 {
        self.since_ms
    }

    /// The API answered. Returns the new mode when it changed.
    pub fn success(&mut self, now_ms: i64) -> Option<Mode> {
        self.failures = 0;
        self.switch(Mode::Online, now_ms)
    }

    /// The API could not be reached. Returns the new mode when it changed.
    pub fn failure(&mut self, now_ms: i64) -> Option<Mode> {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.threshold {
            self.switch(Mode::Offline, now_ms)
        } else {
            None
        }
    }

    fn switch(&mut self, to: Mode, now_ms: i64) -> Option<Mode> {
        if self.mode == to {
            return None;
        }
        self.mode = to;
        self.since_ms = now_ms;
        Some(to)
    }
}

/// The shared handle: the state machine plus a watch channel for whoever must react to a
/// switch (the probe, the replay worker, the status LED).
#[derive(Clone)]
pub struct Link {
    state: Arc<Mutex<Connectivity>>,
    tx: Arc<watch::Sender<Mode>>,
}

impl Link {
    pub fn new(threshold: u32) -> Self {
        let (tx, _) = watch::channel(Mode::Online);
        Link {
            state: Arc::new(Mutex::new(Connectivity::new(
                threshold,
                crate::clock::now_ms(),
            ))),
            tx: Arc::new(tx),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connectivity) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn mode(&self) -> Mode {
        self.with(|c| c.mode())
    }

    pub fn since_ms(&self) -> i64 {
        self.with(|c| c.since_ms())
    }

    pub fn is_offline(&self) -> bool {
        self.mode() == Mode::Offline
    }

    pub fn success(&self) {
        if let Some(m) = self.with(|c| c.success(crate::clock::now_ms())) {
            tracing::info!("API reachable again: back online");
            self.tx.send_replace(m);
        }
    }

    pub fn failure(&self, why: &str) {
        if let Some(m) = self.with(|c| c.failure(crate::clock::now_ms())) {
            tracing::warn!(
                "API unreachable ({why}): offline, deciding scans without it until it answers"
            );
            self.tx.send_replace(m);
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Mode> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_after_consecutive_failures_and_back_on_success() {
        let mut c = Connectivity::new(2, 0);
        assert_eq!(c.failure(1), None);
        assert_eq!(c.success(2), None, "one failure does not switch");
        assert_eq!(c.failure(3), None);
        assert_eq!(c.failure(4), Some(Mode::Offline));
        assert_eq!(c.since_ms(), 4);
        assert_eq!(c.failure(5), None, "no second switch");
        assert_eq!(c.success(6), Some(Mode::Online));
        assert_eq!(c.since_ms(), 6);
        assert_eq!(c.mode(), Mode::Online);
    }
}
