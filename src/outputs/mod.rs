//! The door's outputs: relays, LEDs, buzzers. One seam ([`OutputBackend`]) with three
//! implementations: `gpio` (the Pi, through rppal), `gpiod` (any board, through the kernel's
//! GPIO character device) and `sim` (JSON lines, for tests and the demo).
//! [`feedback::Feedback`] drives them: pulses, patterns, and the safe state. The inputs (exit
//! button, door sensor) are in [`inputs`].

pub mod feedback;
mod gpio;
pub mod gpiod;
pub mod input_event;
pub mod inputs;

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, LineRef, OutputBackendKind, OutputsConfig, SimLog};

/// Sets outputs. `index` is the output's place in [`OutputsConfig::lines`]; `on` is the
/// logical state (relay energised, LED lit), which the backend maps to a level (active-low).
pub trait OutputBackend: Send {
    fn set(&mut self, index: usize, on: bool) -> io::Result<()>;

    /// An output that is on was switched on again: its time starts over (a second guest
    /// admitted while the door is still open). The line does not change, so a GPIO backend
    /// has nothing to do; the `sim` backend says so, for whoever watches it.
    fn restarted(&mut self, _index: usize) -> io::Result<()> {
        Ok(())
    }

    /// Hands the lines back at the end of a clean stop, after they were set off; nothing is
    /// set after it. Only `gpiod` has something to do (inputs at their off pull).
    fn release(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes one JSON object per output change, one per line:
/// `{"ts_ms": <unix ms>, "output": "relay", "on": true}`; an output that is on and starts its
/// time over (a second accept during the relay's pulse) adds `"restarted": true` to an `on`
/// line.
pub struct SimBackend {
    out: Box<dyn Write + Send>,
    names: Vec<String>,
}

impl SimBackend {
    pub fn new(out: Box<dyn Write + Send>, names: Vec<String>) -> Self {
        SimBackend { out, names }
    }

    pub fn open(log: &SimLog, names: Vec<String>) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match log {
            SimLog::Stdout => Box::new(io::stdout()),
            SimLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("outputs.sim_log {}: {e}", path.display()))
                    })?,
            ),
        };
        Ok(SimBackend::new(out, names))
    }
}

impl OutputBackend for SimBackend {
    fn set(&mut self, index: usize, on: bool) -> io::Result<()> {
        let output = self.names.get(index).map(String::as_str).unwrap_or("?");
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        // One write per line, so a reader of the file never sees half a line.
        let line = format!("{{\"ts_ms\":{ts_ms},\"output\":\"{output}\",\"on\":{on}}}\n");
        self.out.write_all(line.as_bytes())?;
        self.out.flush()
    }

    fn restarted(&mut self, index: usize) -> io::Result<()> {
        let output = self.names.get(index).map(String::as_str).unwrap_or("?");
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let line = format!(
            "{{\"ts_ms\":{ts_ms},\"output\":\"{output}\",\"on\":true,\"restarted\":true}}\n"
        );
        self.out.write_all(line.as_bytes())?;
        self.out.flush()
    }
}

/// The outputs that work a door (a reader's `relay`, the exit button's), each once, in
/// config order.
pub fn door_relays(cfg: &Config) -> Vec<&str> {
    let mut relays: Vec<&str> = Vec::new();
    let named = cfg
        .readers
        .iter()
        .filter_map(|r| r.outputs.relay.as_deref())
        .chain(cfg.inputs.exit_button.iter().map(|b| b.relay.as_str()));
    for name in named {
        if !relays.contains(&name) {
            relays.push(name);
        }
    }
    relays
}

/// What `check-config` warns about the door's safety when the daemon is not running: an
/// active-low door relay is energised by a low line, and no backend holds a line at its off
/// level from power-on to the first start, or (rppal) after a SIGKILL. Pure.
pub fn safety_warnings(cfg: &Config) -> Vec<String> {
    let o = &cfg.outputs;
    door_relays(cfg)
        .into_iter()
        .filter_map(|name| Some((name, o.get(name)?)))
        .filter(|(_, spec)| spec.active_low)
        .filter_map(|(name, spec)| {
            let boot = match &spec.line {
                LineRef::Pin(n) => format!("gpio={n}=op,dh in /boot/firmware/config.txt"),
                LineRef::Named(l) => match l.strip_prefix("GPIO").map(str::parse::<u32>) {
                    Some(Ok(n)) => format!("gpio={n}=op,dh in /boot/firmware/config.txt"),
                    _ => "the board's boot-time pin setting".to_owned(),
                },
                LineRef::ChipOffset { .. } => "the board's boot-time pin setting".to_owned(),
            };
            let when = match o.backend {
                OutputBackendKind::Sim { .. } => return None,
                OutputBackendKind::Gpiod => {
                    "while the daemon is not running (before its first start, and for a \
                     moment on a restart if the board ignores the pull-up it sets)"
                }
                OutputBackendKind::Gpio => {
                    "while the daemon is not running (before its first start, and after a \
                     SIGKILL during a pulse, which leaves the pin at its last level)"
                }
            };
            Some(format!(
                "outputs.{name} is active-low: a low line energises it, and nothing holds the \
                 line high {when}; set {boot}, or wire a pull-up to the off level, or use an \
                 active-high relay module (README: Locked when not running)"
            ))
        })
        .collect()
}

/// Opens the configured backend. Every output starts in its safe state (off).
pub fn open_backend(cfg: &OutputsConfig) -> io::Result<Box<dyn OutputBackend>> {
    Ok(match &cfg.backend {
        OutputBackendKind::Sim { log, .. } => Box::new(SimBackend::open(
            log,
            cfg.lines.iter().map(|(n, _)| n.clone()).collect(),
        )?),
        OutputBackendKind::Gpio => Box::new(gpio::GpioBackend::open(&cfg.lines)?),
        OutputBackendKind::Gpiod => Box::new(gpiod::GpiodBackend::open(cfg)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn config(outputs: &str) -> Config {
        let text = format!(
            "[api]\nurl = \"https://api.example/graphql\"\n[reader]\nkind = \"stdin\"\n\
             [outputs]\n{outputs}\n[inputs]\n\
             exit_button = {{ pin = 25, relay = \"strike2\" }}\n"
        );
        crate::config::parse(&text, std::path::Path::new("t.toml")).unwrap()
    }

    #[test]
    fn active_low_door_relays_are_warned_about_with_the_boot_setting() {
        let cfg = config(
            "backend = \"gpiod\"\nrelay = { line = \"GPIO17\", active_low = true }\n\
             green = { pin = 27, active_low = true }\n\
             strike2 = { pin = 5, active_low = true }\n",
        );
        assert_eq!(door_relays(&cfg), vec!["relay", "strike2"]);
        let w = safety_warnings(&cfg);
        assert_eq!(w.len(), 2, "{w:?}: an active-low LED is no door");
        assert!(w[0].starts_with("outputs.relay is active-low"), "{}", w[0]);
        assert!(w[0].contains("gpio=17=op,dh"), "{}", w[0]);
        assert!(w[1].contains("outputs.strike2") && w[1].contains("gpio=5=op,dh"));
        let rppal = config(
            "backend = \"gpio\"\nrelay = { pin = 17, active_low = true }\nstrike2 = { pin = 5 }\n",
        );
        let w = safety_warnings(&rppal);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("SIGKILL"), "{}", w[0]);
        let sim = config(
            "backend = \"sim\"\nrelay = { pin = 17, active_low = true }\nstrike2 = { pin = 5 }\n",
        );
        assert!(safety_warnings(&sim).is_empty());
    }

    #[test]
    fn sim_backend_writes_one_json_object_per_change() {
        let buf = Shared::default();
        let mut b = SimBackend::new(Box::new(buf.clone()), vec!["relay".into(), "red".into()]);
        b.set(0, true).unwrap();
        b.set(1, false).unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["output"], "relay");
        assert_eq!(lines[0]["on"], true);
        assert!(lines[0]["ts_ms"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(lines[1]["output"], "red");
        assert_eq!(lines[1]["on"], false);
    }
}
