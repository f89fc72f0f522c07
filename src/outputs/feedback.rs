//! Feedback at the door: pulses and patterns on the outputs, and the safe state.
//!
//! Rules for a new verdict while an earlier one is still showing:
//! - accept: the relay and the green LED (re)start their full pulse from now; red and the
//!   buzzer stop at once. Two guests admitted one after the other each get the full time.
//! - reject: green stops and red (re)starts its pulse, the buzzer sounds its pattern (`reject`
//!   for a pass turned away, `attention` for try-again-or-fetch-staff; both two beeps of
//!   `pulse_ms` unless configured); a relay pulse already running is **not** cut short, so a
//!   rejected scan right behind an admitted guest does not lock the door in that guest's face.
//! - an accept plays the buzzer's `accept` pattern (none by default) and stops any other.
//!
//! The "on" edge of an accept is written by the scan task itself (no task hop on the latency
//! path); a timer task turns outputs off when their time is up. After [`Feedback::safe_state`]
//! every output is off and stays off: nothing can switch it on again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::OutputBackend;
use crate::config::{LaneOutputs, OutputSpec, OutputsConfig};

struct State {
    backend: Box<dyn OutputBackend>,
    names: Vec<String>,
    specs: Vec<OutputSpec>,
    on: Vec<bool>,
    schedule: Vec<VecDeque<(Instant, bool)>>,
    status: Option<usize>,
    /// The status LED's pattern while it blinks: how long each state lasts, on first, in
    /// turn (offline: 1 s on, 1 s off), and where in it the LED is.
    status_blink: Option<(Vec<Duration>, usize)>,
    halted: bool,
    /// Outputs held on (a door released by a remote command): their pulses' ends do not
    /// turn them off; the safe state does.
    held: Vec<bool>,
}

impl State {
    fn write(&mut self, i: usize, on: bool) {
        if self.halted && on {
            return;
        }
        if !on && self.held[i] && !self.halted {
            return;
        }
        if let Err(e) = self.backend.set(i, on) {
            tracing::error!(output = %self.names[i], on, "cannot set output: {e}");
        }
        self.on[i] = on;
    }

    /// Sets an output now and replaces its schedule.
    fn set_now(&mut self, out: Option<usize>, on: bool, then: &[(Duration, bool)], now: Instant) {
        let Some(i) = out else { return };
        self.schedule[i].clear();
        if self.on[i] != on {
            self.write(i, on);
        } else if on && !then.is_empty() && !self.halted {
            // On already, and its time starts over.
            if let Err(e) = self.backend.restarted(i) {
                tracing::error!(output = %self.names[i], "cannot set output: {e}");
            }
        }
        for (after, state) in then {
            self.schedule[i].push_back((now + *after, *state));
        }
    }

    fn pulse(&self, out: Option<usize>) -> Duration {
        out.map(|i| self.specs[i].pulse).unwrap_or_default()
    }

    /// Plays a buzzer pattern from now (on, off, on...; off at the end), or silences it.
    fn sound(&mut self, out: Option<usize>, tone: Tone, now: Instant) {
        let Some(i) = out else { return };
        let p = &self.specs[i].patterns;
        let steps = match tone {
            Tone::Accept => &p.accept,
            Tone::Reject => &p.reject,
            Tone::Attention => &p.attention,
        };
        let then = pattern_schedule(steps);
        self.set_now(out, !steps.is_empty(), &then, now);
    }

    /// Applies every scheduled change that is due; returns the next deadline.
    fn run_due(&mut self, now: Instant) -> Option<Instant> {
        for i in 0..self.specs.len() {
            while let Some(&(at, on)) = self.schedule[i].front() {
                if at > now {
                    break;
                }
                self.schedule[i].pop_front();
                if self.on[i] != on {
                    self.write(i, on);
                }
            }
        }
        if let (Some(s), Some((steps, pos))) = (self.status, self.status_blink.as_mut()) {
            if self.schedule[s].is_empty() && !self.halted && !steps.is_empty() {
                let next = !self.on[s];
                self.schedule[s].push_back((now + steps[*pos % steps.len()], next));
                *pos = (*pos + 1) % steps.len();
            }
        }
        self.schedule
            .iter()
            .filter_map(|q| q.front().map(|(t, _)| *t))
            .min()
    }
}

/// Which of a buzzer's patterns a verdict sounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Accept,
    /// A pass turned away.
    Reject,
    /// Try again, or fetch staff.
    Attention,
}

impl Tone {
    /// The tone of a rejected scan: `attention` when the guest should try again or fetch
    /// staff (the pass itself was not judged), `reject` when the pass was turned away.
    pub fn of_reject(reason: crate::decision::Reason) -> Tone {
        if reason.needs_attention() {
            Tone::Attention
        } else {
            Tone::Reject
        }
    }
}

/// The changes after the first "on" of a pattern: off after each on step, on after each off
/// step but the last; off at the end.
fn pattern_schedule(steps: &[Duration]) -> Vec<(Duration, bool)> {
    let mut at = Duration::ZERO;
    let mut out = Vec::new();
    for (i, d) in steps.iter().enumerate() {
        at += *d;
        let on_step = i % 2 == 0;
        if on_step {
            out.push((at, false));
        } else if i + 1 < steps.len() {
            out.push((at, true));
        }
    }
    out
}

/// The outputs one reader drives, by index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lane {
    pub relay: Option<usize>,
    pub green: Option<usize>,
    pub red: Option<usize>,
    pub buzzer: Option<usize>,
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
        let n = cfg.lines.len();
        let mut state = State {
            backend,
            names: cfg.lines.iter().map(|(n, _)| n.clone()).collect(),
            specs: cfg.lines.iter().map(|(_, s)| s.clone()).collect(),
            on: vec![false; n],
            schedule: vec![VecDeque::new(); n],
            status: cfg.lines.iter().position(|(n, _)| n == "status"),
            status_blink: None,
            halted: false,
            held: vec![false; n],
        };
        for i in 0..n {
            state.write(i, false);
        }
        Feedback {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
        }
    }

    fn index(&self, name: Option<&str>) -> Option<usize> {
        let name = name?;
        self.lock().names.iter().position(|n| n == name)
    }

    /// The outputs a reader drives (names that are not configured drive nothing).
    pub fn lane(&self, outputs: &LaneOutputs) -> LaneFeedback {
        LaneFeedback {
            feedback: self.clone(),
            lane: Lane {
                relay: self.index(outputs.relay.as_deref()),
                green: self.index(outputs.green.as_deref()),
                red: self.index(outputs.red.as_deref()),
                buzzer: self.index(outputs.buzzer.as_deref()),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Door opens: relay and green pulse.
    pub fn accept(&self, lane: &Lane) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            let relay = s.pulse(lane.relay);
            s.set_now(lane.relay, true, &[(relay, false)], now);
            let green = s.pulse(lane.green);
            s.set_now(lane.green, true, &[(green, false)], now);
            s.set_now(lane.red, false, &[], now);
            s.sound(lane.buzzer, Tone::Accept, now);
        }
        self.inner.wake.notify_one();
    }

    /// Door stays shut: red pulse and the buzzer's `tone` (two beeps by default).
    pub fn reject(&self, lane: &Lane, tone: Tone) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            s.set_now(lane.green, false, &[], now);
            let red = s.pulse(lane.red);
            s.set_now(lane.red, true, &[(red, false)], now);
            s.sound(lane.buzzer, tone, now);
        }
        self.inner.wake.notify_one();
    }

    /// The status LED: steady on (online) or off.
    pub fn set_status(&self, on: bool) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            s.status_blink = None;
            let status = s.status;
            s.set_now(status, on, &[], now);
        }
        self.inner.wake.notify_one();
    }

    /// The status LED blinks: `half` on, `half` off (offline: 1 s).
    pub fn set_status_blink(&self, half: Duration) {
        self.set_status_pattern(&[half, half]);
    }

    /// The status LED blinks in a pattern: on for `steps[0]`, off for `steps[1]`, on for
    /// `steps[2]`... and round again (an even number of steps).
    pub fn set_status_pattern(&self, steps: &[Duration]) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            if s.status_blink.as_ref().is_some_and(|(old, _)| old == steps) {
                return;
            }
            s.status_blink = Some((steps.to_vec(), 0));
            let status = s.status;
            s.set_now(status, true, &[], now);
        }
        self.inner.wake.notify_one();
    }

    /// Pulses one output for its `pulse_ms` (a wiring test from the status page, the exit
    /// button). False when that output is not configured.
    pub fn pulse_output(&self, name: &str) -> bool {
        self.with_output(name, |s, i, now| {
            let p = s.pulse(Some(i));
            s.set_now(Some(i), true, &[(p, false)], now);
        })
    }

    /// Runs `f` on the output `name` and wakes the timers; false (nothing done) when it is
    /// not configured or the outputs are in their safe state.
    fn with_output(&self, name: &str, f: impl FnOnce(&mut State, usize, Instant)) -> bool {
        let now = Instant::now();
        {
            let mut s = self.lock();
            let Some(i) = s.names.iter().position(|n| n == name) else {
                return false;
            };
            if s.halted {
                return false;
            }
            f(&mut s, i, now);
        }
        self.inner.wake.notify_one();
        true
    }

    /// Holds an output on (`true`: a door released by a remote command) or lets it go back
    /// to its pulses (`false`: off now unless a pulse is still running). False when the
    /// output is not configured or the outputs are in their safe state.
    pub fn hold(&self, name: &str, on: bool) -> bool {
        self.with_output(name, |s, i, now| {
            if s.held[i] == on {
                // Nothing changes (at start: no line written).
                return;
            }
            s.held[i] = on;
            if on {
                s.set_now(Some(i), true, &[], now);
            } else if s.schedule[i].is_empty() && s.on[i] {
                s.write(i, false);
            }
        })
    }

    /// Every output off (relay released: door locked), and nothing switches on again.
    pub fn safe_state(&self) {
        let mut s = self.lock();
        Self::halt(&mut s);
    }

    /// The end of a clean stop: every output off, then the lines handed back to the board
    /// (`gpiod`: inputs at their off pull, so the level after the stop does not depend on the
    /// driver). Nothing is set after it.
    pub fn release(&self) {
        let mut s = self.lock();
        Self::halt(&mut s);
        if let Err(e) = s.backend.release() {
            tracing::warn!("outputs left as they are (off) at the stop: {e}");
        }
    }

    fn halt(s: &mut State) {
        s.halted = true;
        s.status_blink = None;
        for i in 0..s.specs.len() {
            s.schedule[i].clear();
            // Written even when believed off: the belief may be what went wrong.
            s.write(i, false);
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
                (0..s.specs.len())
                    .filter(|i| Some(*i) != s.status)
                    .filter_map(|i| s.schedule[i].back().map(|(t, _)| *t))
                    .max()
            };
            match next {
                Some(at) => tokio::time::sleep_until(at + Duration::from_millis(1)).await,
                None => return,
            }
        }
    }

    /// Which outputs are on now.
    pub fn states(&self) -> Vec<(String, bool)> {
        let s = self.lock();
        s.names.iter().cloned().zip(s.on.iter().copied()).collect()
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

/// The feedback of one reader: its own relay and LEDs (some may be shared).
#[derive(Clone)]
pub struct LaneFeedback {
    feedback: Feedback,
    lane: Lane,
}

impl LaneFeedback {
    pub fn accept(&self) {
        self.feedback.accept(&self.lane);
    }

    pub fn reject(&self, tone: Tone) {
        self.feedback.reject(&self.lane, tone);
    }

    pub fn lane(&self) -> Lane {
        self.lane
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LineRef, OutputBackendKind};
    use std::io;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum OutputName {
        Relay,
        Green,
        Red,
        Buzzer,
        Status,
        Relay2,
    }

    fn named(n: &str) -> OutputName {
        match n {
            "relay" => OutputName::Relay,
            "green" => OutputName::Green,
            "red" => OutputName::Red,
            "buzzer" => OutputName::Buzzer,
            "status" => OutputName::Status,
            _ => OutputName::Relay2,
        }
    }

    #[derive(Clone)]
    struct Recorder(Arc<Mutex<Vec<(Instant, OutputName, bool)>>>, Vec<String>);
    impl Recorder {
        fn new(c: &OutputsConfig) -> Self {
            Recorder(
                Default::default(),
                c.lines.iter().map(|(n, _)| n.clone()).collect(),
            )
        }
    }
    impl OutputBackend for Recorder {
        fn set(&mut self, index: usize, on: bool) -> io::Result<()> {
            let o = named(&self.1[index]);
            self.0.lock().unwrap().push((Instant::now(), o, on));
            Ok(())
        }
    }

    fn spec(pin: u32, ms: u64) -> OutputSpec {
        OutputSpec {
            line: LineRef::Pin(pin),
            active_low: false,
            pulse: Duration::from_millis(ms),
            patterns: crate::config::BuzzerPatterns::defaults(Duration::from_millis(ms)),
        }
    }

    fn cfg() -> OutputsConfig {
        OutputsConfig {
            backend: OutputBackendKind::Gpio,
            chip: "gpiochip0".into(),
            lines: vec![
                ("relay".into(), spec(17, 3000)),
                ("green".into(), spec(27, 1500)),
                ("red".into(), spec(22, 1500)),
                ("buzzer".into(), spec(23, 100)),
                ("status".into(), spec(24, 1000)),
            ],
        }
    }

    fn std_lane(fb: &Feedback) -> LaneFeedback {
        fb.lane(&LaneOutputs::standard())
    }

    fn setup(c: &OutputsConfig) -> (Recorder, Feedback) {
        let rec = Recorder::new(c);
        let fb = Feedback::new(Box::new(rec.clone()), c);
        (rec, fb)
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
        let (rec, fb) = setup(&cfg());
        let first: Vec<_> = changes(&rec);
        assert_eq!(first.len(), 5);
        assert!(first.iter().all(|(_, on)| !on), "{first:?}");
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let t0 = Instant::now();
        std_lane(&fb).accept();
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
        let (rec, fb) = setup(&cfg());
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let t0 = Instant::now();
        std_lane(&fb).accept();
        tokio::time::sleep(Duration::from_millis(500)).await;
        std_lane(&fb).reject(Tone::Reject);
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
    async fn buzzer_patterns_per_tone() {
        let mut c = cfg();
        c.lines[3].1.patterns = crate::config::BuzzerPatterns {
            accept: vec![Duration::from_millis(40)],
            reject: vec![Duration::from_millis(300)],
            attention: vec![
                Duration::from_millis(50),
                Duration::from_millis(50),
                Duration::from_millis(50),
                Duration::from_millis(50),
                Duration::from_millis(50),
                Duration::from_millis(400),
            ],
        };
        let (rec, fb) = setup(&c);
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let t0 = Instant::now();
        let buzzer = |rec: &Recorder| -> Vec<(u128, bool)> {
            rec.0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, o, _)| *o == OutputName::Buzzer)
                .skip(1)
                .map(|(t, _, on)| ((*t - t0).as_millis(), *on))
                .collect()
        };
        std_lane(&fb).accept();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(buzzer(&rec), vec![(0, true), (40, false)], "the chirp");
        std_lane(&fb).reject(Tone::Reject);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(buzzer(&rec)[2..], [(1000, true), (1300, false)]);
        std_lane(&fb).reject(Tone::Attention);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // Three short beeps; the last step (400 ms off) leaves it off.
        assert_eq!(
            buzzer(&rec)[4..],
            [
                (2000, true),
                (2050, false),
                (2100, true),
                (2150, false),
                (2200, true),
                (2250, false)
            ]
        );
        timers.abort();
        // Silent patterns, and the mapping of reasons.
        assert_eq!(pattern_schedule(&[]), vec![]);
        use crate::decision::Reason;
        assert_eq!(Tone::of_reject(Reason::Expired), Tone::Reject);
        assert_eq!(Tone::of_reject(Reason::OutsideHours), Tone::Reject);
        assert_eq!(Tone::of_reject(Reason::Malformed), Tone::Attention);
        assert_eq!(Tone::of_reject(Reason::QueueFull), Tone::Attention);
    }

    #[tokio::test(start_paused = true)]
    async fn second_accept_restarts_the_pulse() {
        let (rec, fb) = setup(&cfg());
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let t0 = Instant::now();
        std_lane(&fb).accept();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        std_lane(&fb).accept();
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
        let (rec, fb) = setup(&cfg());
        fb.set_status(true);
        std_lane(&fb).accept();
        assert!(fb.states().iter().any(|(o, on)| o == "relay" && *on));
        fb.safe_state();
        assert!(fb.states().iter().all(|(_, on)| !on));
        std_lane(&fb).accept();
        fb.set_status(true);
        assert!(fb.states().iter().all(|(_, on)| !on));
        let last = changes(&rec);
        assert_eq!(last.last(), Some(&(OutputName::Status, false)));
        assert!(fb.safe_state_from_panic());
    }

    #[tokio::test(start_paused = true)]
    async fn release_sets_everything_off_before_the_lines_go_back() {
        #[derive(Clone, Default)]
        struct Log(Arc<Mutex<Vec<String>>>);
        impl OutputBackend for Log {
            fn set(&mut self, index: usize, on: bool) -> io::Result<()> {
                self.0.lock().unwrap().push(format!("{index}={on}"));
                Ok(())
            }
            fn release(&mut self) -> io::Result<()> {
                self.0.lock().unwrap().push("release".into());
                Ok(())
            }
        }
        let log = Log::default();
        let fb = Feedback::new(Box::new(log.clone()), &cfg());
        std_lane(&fb).accept();
        log.0.lock().unwrap().clear();
        fb.release();
        let seen = log.0.lock().unwrap().clone();
        assert_eq!(seen.last().map(String::as_str), Some("release"), "{seen:?}");
        assert!(
            seen[..seen.len() - 1].iter().all(|e| e.ends_with("=false")),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"0=false".to_string()),
            "the relay went off: {seen:?}"
        );
        std_lane(&fb).accept();
        assert_eq!(log.0.lock().unwrap().len(), seen.len(), "nothing after");
    }

    #[tokio::test(start_paused = true)]
    async fn status_blinks_when_offline_and_is_steady_when_online() {
        let (rec, fb) = setup(&cfg());
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

    #[tokio::test(start_paused = true)]
    async fn a_status_pattern_repeats_its_steps() {
        let (rec, fb) = setup(&cfg());
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let ms = Duration::from_millis;
        // Two short flashes, a pause: on 150, off 150, on 150, off 900.
        fb.set_status_pattern(&[ms(150), ms(150), ms(150), ms(900)]);
        let t0 = tokio::time::Instant::now();
        let mut at = Vec::new();
        let mut last = changes(&rec).len();
        while t0.elapsed() < ms(2700) {
            tokio::time::sleep(ms(10)).await;
            let c = changes(&rec);
            for (o, on) in &c[last..] {
                if *o == OutputName::Status {
                    at.push((t0.elapsed().as_millis() / 10 * 10, *on));
                }
            }
            last = c.len();
        }
        let ons: Vec<u128> = at.iter().filter(|(_, on)| *on).map(|(t, _)| *t).collect();
        // On at 0 (set), 300, then a new cycle at 1350, 1650...
        for (got, want) in ons.iter().zip([300u128, 1350, 1650]) {
            assert!(got.abs_diff(want) <= 10, "{at:?}");
        }
        assert!(ons.len() >= 3, "{at:?}");
        // The same pattern again changes nothing.
        fb.set_status_pattern(&[ms(150), ms(150), ms(150), ms(900)]);
        timers.abort();
    }

    #[test]
    fn a_held_relay_outlasts_pulses_until_let_go_and_the_safe_state_ends_it() {
        let (rec, fb) = setup(&cfg());
        let lane = std_lane(&fb);
        let relay_on = || fb.states().iter().any(|(n, on)| n == "relay" && *on);
        assert!(fb.hold("relay", true));
        assert!(relay_on());
        lane.accept();
        fb.lock().run_due(Instant::now() + Duration::from_secs(60));
        assert!(relay_on(), "a pulse's end does not lock a released door");
        assert!(!fb.states().iter().any(|(n, on)| n == "green" && *on));
        assert!(fb.hold("relay", false));
        assert!(!relay_on());
        assert_eq!(changes(&rec).last(), Some(&(OutputName::Relay, false)));
        assert!(!fb.hold("nothing", true));
        fb.hold("relay", true);
        fb.safe_state();
        assert!(!relay_on(), "the safe state locks the door");
        assert!(!fb.hold("relay", true));
    }

    #[test]
    fn unconfigured_outputs_are_never_written() {
        let mut c = cfg();
        c.lines.retain(|(n, _)| n != "relay" && n != "buzzer");
        let (rec, fb) = setup(&c);
        std_lane(&fb).accept();
        std_lane(&fb).reject(Tone::Reject);
        assert!(changes(&rec)
            .iter()
            .all(|(o, _)| *o != OutputName::Relay && *o != OutputName::Buzzer));
    }

    #[tokio::test(start_paused = true)]
    async fn two_lanes_drive_their_own_relays_and_share_the_buzzer() {
        let mut c = cfg();
        c.lines.push(("relay2".into(), spec(5, 2000)));
        let (rec, fb) = setup(&c);
        let timers = tokio::spawn({
            let fb = fb.clone();
            async move { fb.run_timers().await }
        });
        let exit = fb.lane(&LaneOutputs {
            relay: Some("relay2".into()),
            green: None,
            red: None,
            buzzer: Some("buzzer".into()),
        });
        let start = changes(&rec).len();
        exit.accept();
        std_lane(&fb).reject(Tone::Reject);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let after: Vec<_> = changes(&rec)[start..].to_vec();
        assert_eq!(after[0], (OutputName::Relay2, true));
        assert!(after.contains(&(OutputName::Relay2, false)));
        assert!(
            !after.iter().any(|(o, _)| *o == OutputName::Relay),
            "the entry lane's reject leaves the exit relay and its own relay alone: {after:?}"
        );
        assert!(after.contains(&(OutputName::Red, true)));
        assert!(fb.pulse_output("relay"));
        assert!(!fb.pulse_output("nope"));
        timers.abort();
    }
}
