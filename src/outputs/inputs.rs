//! The door's inputs: a request-to-exit button and a door contact.
//!
//! Each backend reports [`InputEvent`]s (the logical state: pressed, open) on a channel;
//! [`DoorMonitor`] (pure) turns the door contact's changes into log lines, status and the
//! "held open" warning. The `sim` backend reads simulated inputs from a FIFO of JSON lines
//! (`{"input": "door_sensor", "active": true}`), for tests and for trying the wiring.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Bias, InputSpec, InputsConfig, LineRef, OutputBackendKind, OutputsConfig};

pub use super::input_event::{InputEvent, InputName, InputsHandle};

/// What the door contact's state means for the log and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorNote {
    Opened,
    Closed {
        /// It had been held open (the warning is over).
        was_held: bool,
        open_for: Duration,
    },
    HeldOpen {
        open_for: Duration,
    },
}

/// The door contact: open or closed since when, and the held-open warning. Pure.
#[derive(Debug, Clone)]
pub struct DoorMonitor {
    held_open: Duration,
    open: Option<bool>,
    since: Option<Instant>,
    warned: bool,
}

impl DoorMonitor {
    pub fn new(held_open: Duration) -> Self {
        DoorMonitor {
            held_open,
            open: None,
            since: None,
            warned: false,
        }
    }

    pub fn is_open(&self) -> Option<bool> {
        self.open
    }

    pub fn is_held_open(&self) -> bool {
        self.warned
    }

    /// A state read or a change. Returns what to log (nothing for a repeat of the same state).
    pub fn update(&mut self, open: bool, now: Instant) -> Option<DoorNote> {
        if self.open == Some(open) {
            return None;
        }
        let first = self.open.is_none();
        let open_for = self.since.map(|s| now - s).unwrap_or_default();
        let was_held = self.warned;
        self.open = Some(open);
        self.since = Some(now);
        self.warned = false;
        match (open, first) {
            (true, _) => Some(DoorNote::Opened),
            (false, true) => None,
            (false, false) => Some(DoorNote::Closed { was_held, open_for }),
        }
    }

    /// When the held-open warning is due (None: door closed, or already warned).
    pub fn deadline(&self) -> Option<Instant> {
        match (self.open, self.since, self.warned) {
            (Some(true), Some(since), false) => Some(since + self.held_open),
            _ => None,
        }
    }

    /// Called at (or after) the deadline.
    pub fn tick(&mut self, now: Instant) -> Option<DoorNote> {
        let due = self.deadline()?;
        if now < due {
            return None;
        }
        self.warned = true;
        Some(DoorNote::HeldOpen {
            open_for: now - self.since.unwrap_or(now),
        })
    }
}

/// The configured input lines, by name.
pub fn lines(inputs: &InputsConfig) -> Vec<(InputName, InputSpec)> {
    [
        (
            InputName::ExitButton,
            inputs.exit_button.as_ref().map(|b| b.input.clone()),
        ),
        (
            InputName::DoorSensor,
            inputs.door_sensor.as_ref().map(|d| d.input.clone()),
        ),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.map(|s| (n, s)))
    .collect()
}

/// Starts reading the configured inputs. `None` when there are none.
pub fn spawn(
    outputs: &OutputsConfig,
    inputs: &InputsConfig,
) -> io::Result<Option<(InputsHandle, mpsc::Receiver<InputEvent>)>> {
    let lines = lines(inputs);
    if lines.is_empty() {
        return Ok(None);
    }
    let (tx, rx) = mpsc::channel(64);
    let handle = match &outputs.backend {
        OutputBackendKind::Sim { inputs: None, .. } => {
            tracing::info!("sim backend without outputs.sim_inputs: the inputs stay idle");
            InputsHandle::empty()
        }
        OutputBackendKind::Sim {
            inputs: Some(path), ..
        } => {
            spawn_sim(path, lines, tx)?;
            InputsHandle::empty()
        }
        OutputBackendKind::Gpio => spawn_rppal(lines, tx)?,
        OutputBackendKind::Gpiod => super::gpiod::spawn_inputs(outputs, lines, tx)?,
    };
    Ok(Some((handle, rx)))
}

/// The sim inputs: a FIFO (made if missing) of JSON lines. A line for an input that is not
/// configured, or that does not parse, is logged and skipped.
fn spawn_sim(
    path: &Path,
    lines: Vec<(InputName, InputSpec)>,
    tx: mpsc::Sender<InputEvent>,
) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => {
            return Err(io::Error::other(format!(
                "outputs.sim_inputs {}: exists and is not a FIFO",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .map_err(|e| {
                io::Error::other(format!(
                    "outputs.sim_inputs {}: cannot make the FIFO: {e}",
                    path.display()
                ))
            })?;
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("outputs.sim_inputs {}: {e}", path.display()),
            ))
        }
    }
    // Read-write: the FIFO never reaches end of file when a writer closes it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("outputs.sim_inputs {}: {e}", path.display()),
            )
        })?;
    let path: PathBuf = path.to_owned();
    std::thread::Builder::new()
        .name("sim inputs".into())
        .spawn(move || {
            // Simulated lines start inactive (button up, door closed).
            for (name, _) in &lines {
                let _ = tx.blocking_send(InputEvent {
                    input: *name,
                    active: false,
                    initial: true,
                });
            }
            for line in io::BufReader::new(file).lines() {
                let Ok(line) = line else { return };
                if line.trim().is_empty() {
                    continue;
                }
                match parse_sim_line(&line) {
                    Ok((input, active)) if lines.iter().any(|(n, _)| *n == input) => {
                        if tx
                            .blocking_send(InputEvent {
                                input,
                                active,
                                initial: false,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok((input, _)) => tracing::warn!(
                        path = %path.display(),
                        "simulated input {} is not configured in [inputs]; ignored",
                        input.as_str()
                    ),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "simulated input line ignored: {e}")
                    }
                }
            }
        })?;
    Ok(())
}

/// `{"input": "exit_button", "active": true}`.
pub fn parse_sim_line(line: &str) -> Result<(InputName, bool), String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let name = v["input"]
        .as_str()
        .ok_or("needs \"input\": \"exit_button\" or \"door_sensor\"")?;
    let input = InputName::parse(name)
        .ok_or_else(|| "\"input\" must be \"exit_button\" or \"door_sensor\"".to_string())?;
    let active = v["active"]
        .as_bool()
        .ok_or("needs \"active\": true or false")?;
    Ok((input, active))
}

/// The `gpio` backend's inputs, through rppal (edge interrupts with rppal's debounce).
fn spawn_rppal(
    lines: Vec<(InputName, InputSpec)>,
    tx: mpsc::Sender<InputEvent>,
) -> io::Result<InputsHandle> {
    use rppal::gpio::{Gpio, Level, Trigger};
    let gpio = Gpio::new().map_err(|e| io::Error::other(format!("cannot open the GPIO: {e}")))?;
    let mut keep: Vec<Box<dyn Send>> = Vec::new();
    for (name, spec) in lines {
        let LineRef::Pin(number) = spec.line else {
            return Err(io::Error::other(format!(
                "inputs.{}: the gpio backend takes pin numbers",
                name.as_str()
            )));
        };
        let pin = u8::try_from(number)
            .ok()
            .and_then(|n| gpio.get(n).ok())
            .ok_or_else(|| {
                io::Error::other(format!("inputs.{}: no GPIO {number}", name.as_str()))
            })?;
        let mut pin = match spec.bias {
            Bias::PullUp => pin.into_input_pullup(),
            Bias::PullDown => pin.into_input_pulldown(),
            Bias::AsIs | Bias::Disabled => pin.into_input(),
        };
        let active_low = spec.active_low;
        let level_active = move |l: Level| (l == Level::High) != active_low;
        // Called from the daemon's runtime: no blocking send (the channel has room).
        let _ = tx.try_send(InputEvent {
            input: name,
            active: level_active(pin.read()),
            initial: true,
        });
        let tx2 = tx.clone();
        let debounce = (!spec.debounce.is_zero()).then_some(spec.debounce);
        pin.set_async_interrupt(Trigger::Both, debounce, move |ev| {
            let level = if ev.trigger == Trigger::RisingEdge {
                Level::High
            } else {
                Level::Low
            };
            let _ = tx2.try_send(InputEvent {
                input: name,
                active: level_active(level),
                initial: false,
            });
        })
        .map_err(|e| io::Error::other(format!("inputs.{}: {e}", name.as_str())))?;
        keep.push(Box::new(pin));
    }
    Ok(InputsHandle::keeping(keep))
}

/// How long an exit-button press is ignored after the last one (a held or bouncing button
/// does not chatter the relay).
pub const EXIT_REPEAT: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn door_opens_closes_and_warns_once_when_held_open() {
        let t0 = Instant::now();
        let mut d = DoorMonitor::new(Duration::from_secs(30));
        assert_eq!(d.update(false, t0), None, "closed at start: nothing to say");
        assert_eq!(d.deadline(), None);
        assert_eq!(d.update(false, t0), None);
        assert_eq!(
            d.update(true, t0 + Duration::from_secs(1)),
            Some(DoorNote::Opened)
        );
        let due = d.deadline().unwrap();
        assert_eq!(due, t0 + Duration::from_secs(31));
        assert_eq!(d.tick(due - Duration::from_millis(1)), None);
        assert_eq!(
            d.tick(due),
            Some(DoorNote::HeldOpen {
                open_for: Duration::from_secs(30)
            })
        );
        assert!(d.is_held_open());
        assert_eq!(d.tick(due + Duration::from_secs(5)), None, "warned once");
        assert_eq!(d.deadline(), None);
        assert_eq!(
            d.update(false, t0 + Duration::from_secs(41)),
            Some(DoorNote::Closed {
                was_held: true,
                open_for: Duration::from_secs(40)
            })
        );
        assert!(!d.is_held_open());
        // Open at start: that is news, and the timer runs from start.
        let mut d = DoorMonitor::new(Duration::from_secs(5));
        assert_eq!(d.update(true, t0), Some(DoorNote::Opened));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            d.update(false, t0 + Duration::from_secs(2)),
            Some(DoorNote::Closed {
                was_held: false,
                open_for: Duration::from_secs(2)
            })
        );
    }

    #[test]
    fn sim_lines_parse_or_say_why_not() {
        assert_eq!(
            parse_sim_line(r#"{"input":"exit_button","active":true}"#),
            Ok((InputName::ExitButton, true))
        );
        assert_eq!(
            parse_sim_line(r#"{"input":"door_sensor","active":false}"#),
            Ok((InputName::DoorSensor, false))
        );
        assert!(parse_sim_line("door open")
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse_sim_line(r#"{"input":"window","active":true}"#).is_err());
        assert!(parse_sim_line(r#"{"input":"door_sensor","active":"yes"}"#).is_err());
    }
}
