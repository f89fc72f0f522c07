//! Feedback at the door: pulses and patterns on the outputs, and the safe state.
//!
//! Rules for a new verdict while an earlier one is still showing:
//! - accept: the relay and the green LED (re)start their full pulse from now; red and the
//!   buzzer stop at once. Two guests admitted one after the other each get the full time.
//! - reject: green stops and red (re)starts its pulse, the buzzer sounds its pattern (two
//!   beeps of `pulse_ms`); a relay pulse already running is **not** cut short, so a rejected
//!   scan right behind an admitted guest does not lock the door in that guest's face.
//!
//! The "on" edge of an accept is written by the scan task itself (no task hop on the latency
//! path); a timer task turns outputs off when their time is up. After [`Feedback::safe_state`]
//! every output is off and stays off: nothing can switch it on again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{OutputBackend, OutputName};
use crate::config::{OutputSpec, OutputsConfig};

struct State {
    backend: Box<dyn OutputBackend>,
    specs: [Option<OutputSpec>; 5],
    on: [bool; 5],
    schedule: [VecDeque<(Instant, bool)>; 5],
    /// The status LED blinks with this half-period (offline: slow blink).
    status_blink: Option<Duration>,
    halted: bool,
}

impl State {
    fn write(&mut self, out: OutputName, on: bool) {
        let i = out.index();
        if self.specs[i].is_none() || (self.halted && on) {
            return;
        }
        if let Err(e) = self.backend.set(out, on) {
            tracing::error!(output = %out, on, "cannot set output: {e}");
        }
        self.on[i] = on;
    }

    /// Sets an output now and replaces its schedule.
    fn set_now(&mut self, out: OutputName, on: bool, then: &[(Duration, bool)], now: Instant) {
        let i = out.index();
        if self.specs[i].is_none() {
            return;
        }
        self.schedule[i].clear();
        if self.on[i] != on {
            self.write(out, on);
        }
        for (after, state) in then {
            self.schedule[i].push_back((now + *after, *state));
        }
    }

    fn pulse(&self, out: OutputName) -> Duration {
        self.specs[out.index()].map(|s| s.pulse).unwrap_or_default()
    }

    /// Applies every scheduled change that is due; returns the next deadline.
    fn run_due(&mut self, now: Instant) -> Option<Instant> {
        for out in OutputName::ALL {
            let i = out.index();
            while let Some(&(at, on)) = self.schedule[i].front() {
                if at > now {
                    break;
                }
                self.schedule[i].pop_front();
                if self.on[i] != on {
                    self.write(out, on);
                }
            }
        }
        let s = OutputName::Status.index();
        if let (Some(half), true) = (self.status_blink, self.schedule[s].is_empty()) {
            if self.specs[s].is_some() && !self.halted {
                let next = !self.on[s];
                self.schedule[s].push_back((now + half, next));
            }
        }
        self.schedule
            .iter()
            .filter_map(|q| q.front().map(|(t, _)| *t))
            .min()
    }
}

struct Inner {
    state: Mutex<State>,
    wake: Notify,
}

/// Drives the outputs. Cheap to clone; all clones drive the same outputs.
#[derive(Clone)]
pub struct Feedback {
    inner: Arc<Inner>,
}

impl Feedback {
    /// Takes the backend and drives every configured output to its safe state (off).
    pub fn new(backend: Box<dyn OutputBackend>, cfg: &OutputsConfig) -> Self {
        let mut specs = [None; 5];
        for (name, spec) in super::configured(cfg) {
            specs[name.index()] = Some(spec);
        }
        let mut state = State {
            backend,
            specs,
            on: [false; 5],
            schedule: Default::default(),
            status_blink: None,
            halted: false,
        };
        for out in OutputName::ALL {
            state.write(out, false);
        }
        Feedback {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Door opens: relay and green pulse.
    pub fn accept(&self) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            let relay = s.pulse(OutputName::Relay);
            s.set_now(OutputName::Relay, true, &[(relay, false)], now);
            let green = s.pulse(OutputName::Green);
            s.set_now(OutputName::Green, true, &[(green, false)], now);
            s.set_now(OutputName::Red, false, &[], now);
            s.set_now(OutputName::Buzzer, false, &[], now);
        }
        self.inner.wake.notify_one();
    }

    /// Door stays shut: red pulse and two beeps.
    pub fn reject(&self) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            s.set_now(OutputName::Green, false, &[], now);
            let red = s.pulse(OutputName::Red);
            s.set_now(OutputName::Red, true, &[(red, false)], now);
            let b = s.pulse(OutputName::Buzzer);
            s.set_now(
                OutputName::Buzzer,
                true,
                &[(b, false), (b * 2, true), (b * 3, false)],
                now,
            );
        }
        self.inner.wake.notify_one();
    }

    /// The status LED: steady on (online) or off.
    pub fn set_status(&self, on: bool) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            s.status_blink = None;
            s.set_now(OutputName::Status, on, &[], now);
        }
        self.inner.wake.notify_one();
    }

    /// The status LED blinks: `half` on, `half` off (offline: 1 s).
    pub fn set_status_blink(&self, half: Duration) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            s.status_blink = Some(half);
            s.set_now(OutputName::Status, true, &[], now);
        }
        self.inner.wake.notify_one();
    }

    /// Pulses one output for its `pulse_ms` (a wiring test from the status page). False when
    /// that output is not configured.
    pub fn test_pulse(&self, out: OutputName) -> bool {
        let now = Instant::now();
        {
            let mut s = self.lock();
            if s.specs[out.index()].is_none() || s.halted {
                return false;
            }
            let p = s.pulse(out);
            s.set_now(out, true, &[(p, false)], now);
        }
        self.inner.wake.notify_one();
        true
    }

    /// Every output off (relay released: door locked), and nothing switches on again.
    pub fn safe_state(&self) {
        let mut s = self.lock();
        Self::halt(&mut s);
    }

    fn halt(s: &mut State) {
        s.halted = true;
        s.status_blink = None;
        for out in OutputName::ALL {
            s.schedule[out.index()].clear();
            // Written even when believed off: the belief may be what went wrong.
            s.write(out, false);
        }
    }

    /// The safe state from a panic hook: never blocks for long, even if the panicking thread
    /// holds the lock (then the backend's own drop and the next start's safe state remain).
    pub fn safe_state_from_panic(&self) -> bool {
        for _ in 0..50 {
            match self.inner.state.try_lock() {
                Ok(mut s) => {
                    Self::halt(&mut s);
                    return true;
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    Self::halt(&mut p.into_inner());
                    return true;
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
            }
        }
        false
    }

    /// Waits until no pulse or pattern is still running (a blinking status LED aside).
    pub async fn wait_idle(&self) {
        loop {
            let next = {
                let s = self.lock();
                OutputName::ALL
                    .iter()
                    .filter(|o| **o != OutputName::Status)
                    .filter_map(|o| s.schedule[o.index()].back().map(|(t, _)| *t))
                    .max()
            };
            match next {
                Some(at) => tokio::time::sleep_until(at + Duration::from_millis(1)).await,
                None => return,
            }
        }
    }

    /// Which outputs are on now.
    pub fn states(&self) -> Vec<(OutputName, bool)> {
        let s = self.lock();
        OutputName::ALL
            .iter()
            .filter(|o| s.specs[o.index()].is_some())
            .map(|o| (*o, s.on[o.index()]))
            .collect()
    }

    /// Turns outputs off when their time is up. Runs for the daemon's life; sleeps when
    /// nothing is scheduled.
    pub async fn run_timers(&self) {
        loop {
            let next = self.lock().run_due(Instant::now());
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.inner.wake.notified() => {}
                    }
                }
                None => self.inner.wake.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputBackendKind;
    use std::io;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(Instant, OutputName, bool)>>>);
    impl OutputBackend for Recorder {
        fn set(&mut self, output: OutputName, on: bool) -> io::Result<()> {
            self.0.lock().unwrap().push((Instant::now(), output, on));
            Ok(())
        }
    }

    fn spec(pin: u8, ms: u64) -> Option<OutputSpec> {
        Some(OutputSpec {
            pin,
            active_low: false,
            pulse: Duration::from_millis(ms),
        })
    }

    fn cfg() -> OutputsConfig {
        OutputsConfig {
            backend: OutputBackendKind::Gpio,
            relay: spec(17, 3000),
            green: spec(27, 1500),
            red: spec(22, 1500),
            buzzer: spec(23, 100),
            status: spec(24, 1000),
        }
    }

    fn changes(r: &Recorder) -> Vec<(OutputName, bool)> {
        r.0.lock()
            .unwrap()
            .iter()
            .map(|(_, o, on)| (*o, *on))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn start_drives_everything_off_then_accept_pulses() {
        let rec = Recorder::default();
        let fb = Feedback::new(Box::new(rec.clone()), &cfg());
        let first: Vec<_> = changes(&rec);
        assert_eq!(first.len(), 5);
        assert!(first.iter().all(|(_, on)| !on), "{first:?}");
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let t0 = Instant::now();
        fb.accept();
        assert_eq!(
            changes(&rec)[5..],
            [(OutputName::Relay, true), (OutputName::Green, true)]
        );
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let log = rec.0.lock().unwrap().clone();
        let relay_off = log
            .iter()
            .find(|(_, o, on)| *o == OutputName::Relay && !on && log.len() > 5)
            .unwrap();
        let green_off = log
            .iter()
            .rev()
            .find(|(_, o, on)| *o == OutputName::Green && !on)
            .unwrap();
        assert_eq!(green_off.0 - t0, Duration::from_millis(1500));
        assert!(log.iter().any(|(t, o, on)| *o == OutputName::Relay
            && !on
            && *t - t0 == Duration::from_millis(3000)));
        let _ = relay_off;
        timers.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn reject_during_accept_keeps_the_door_pulse_and_beeps_twice() {
        let rec = Recorder::default();
        let fb = Feedback::new(Box::new(rec.clone()), &cfg());
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let t0 = Instant::now();
        fb.accept();
        tokio::time::sleep(Duration::from_millis(500)).await;
        fb.reject();
        tokio::time::sleep(Duration::from_millis(4000)).await;
        let log = rec.0.lock().unwrap().clone();
        let relay: Vec<_> = log
            .iter()
            .filter(|(_, o, _)| *o == OutputName::Relay)
            .skip(1)
            .map(|(t, _, on)| (*t - t0, *on))
            .collect();
        assert_eq!(
            relay,
            vec![(Duration::ZERO, true), (Duration::from_millis(3000), false)]
        );
        let green: Vec<_> = log
            .iter()
            .filter(|(_, o, _)| *o == OutputName::Green)
            .skip(1)
            .map(|(t, _, on)| (*t - t0, *on))
            .collect();
        assert_eq!(
            green,
            vec![(Duration::ZERO, true), (Duration::from_millis(500), false)]
        );
        let buzzer: Vec<_> = log
            .iter()
            .filter(|(_, o, _)| *o == OutputName::Buzzer)
            .skip(1)
            .map(|(t, _, on)| ((*t - t0).as_millis(), *on))
            .collect();
        assert_eq!(
            buzzer,
            vec![(500, true), (600, false), (700, true), (800, false)]
        );
        timers.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn second_accept_restarts_the_pulse() {
        let rec = Recorder::default();
        let fb = Feedback::new(Box::new(rec.clone()), &cfg());
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let t0 = Instant::now();
        fb.accept();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        fb.accept();
        tokio::time::sleep(Duration::from_millis(4000)).await;
        let log = rec.0.lock().unwrap().clone();
        let relay: Vec<_> = log
            .iter()
            .filter(|(_, o, _)| *o == OutputName::Relay)
            .skip(1)
            .map(|(t, _, on)| ((*t - t0).as_millis(), *on))
            .collect();
        assert_eq!(
            relay,
            vec![(0, true), (5000, false)],
            "one continuous opening"
        );
        timers.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn safe_state_turns_off_mid_pulse_and_blocks_later_pulses() {
        let rec = Recorder::default();
        let fb = Feedback::new(Box::new(rec.clone()), &cfg());
        fb.set_status(true);
        fb.accept();
        assert!(fb
            .states()
            .iter()
            .any(|(o, on)| *o == OutputName::Relay && *on));
        fb.safe_state();
        assert!(fb.states().iter().all(|(_, on)| !on));
        fb.accept();
        fb.set_status(true);
        assert!(fb.states().iter().all(|(_, on)| !on));
        let last = changes(&rec);
        assert_eq!(last.last(), Some(&(OutputName::Status, false)));
        assert!(fb.safe_state_from_panic());
    }

    #[tokio::test(start_paused = true)]
    async fn status_blinks_when_offline_and_is_steady_when_online() {
        let rec = Recorder::default();
        let fb = Feedback::new(Box::new(rec.clone()), &cfg());
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        fb.set_status_blink(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let status: Vec<bool> = changes(&rec)
            .into_iter()
            .filter(|(o, _)| *o == OutputName::Status)
            .map(|(_, on)| on)
            .collect();
        assert_eq!(status, vec![false, true, false, true, false, true]);
        fb.set_status(true);
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let after: Vec<bool> = changes(&rec)
            .into_iter()
            .filter(|(o, _)| *o == OutputName::Status)
            .map(|(_, on)| on)
            .collect();
        assert_eq!(after.len(), status.len(), "steady: no more changes");
        timers.abort();
    }

    #[test]
    fn unconfigured_outputs_are_never_written() {
        let rec = Recorder::default();
        let c = OutputsConfig {
            relay: None,
            buzzer: None,
            ..cfg()
        };
        let fb = Feedback::new(Box::new(rec.clone()), &c);
        fb.accept();
        fb.reject();
        assert!(changes(&rec)
            .iter()
            .all(|(o, _)| *o != OutputName::Relay && *o != OutputName::Buzzer));
    }
}
