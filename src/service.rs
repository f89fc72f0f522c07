//! systemd integration: READY/STATUS/STOPPING notifications and the watchdog. Every call is a
//! no-op when the daemon is not run by systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;

pub fn notify_ready() {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("ready")]);
}

pub fn notify_status(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status)]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// The watchdog systemd asked for (`WatchdogSec=`), pinged at half its interval.
pub struct Watchdog {
    every: Option<Duration>,
}

impl Watchdog {
    pub fn from_env() -> Self {
        let every = sd_notify::watchdog_enabled().map(|d| d / 2);
        if let Some(e) = every {
            tracing::info!(ping_every_ms = e.as_millis() as u64, "systemd watchdog on");
        }
        Watchdog { every }
    }

    /// Ticks at half the watchdog interval (never, without a watchdog).
    pub fn interval(&self) -> tokio::time::Interval {
        let mut i = tokio::time::interval(self.every.unwrap_or(Duration::from_secs(86_400 * 365)));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    }

    pub fn ping(&self) {
        if self.every.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }
}
