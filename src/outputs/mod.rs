//! The door's outputs: relays, LEDs, buzzers. One seam ([`OutputBackend`]) with three
//! implementations: `gpio` (the Pi, through rppal), `gpiod` (any board, through the kernel's
//! GPIO character device) and `sim` (JSON lines, for tests and the demo).
//! [`feedback::Feedback`] drives them: pulses, patterns, and the safe state. The inputs (exit
//! button, door sensor) are in [`inputs`].

pub mod feedback;
mod gpio;
pub mod gpiod;
pub mod inputs;

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{OutputBackendKind, OutputsConfig, SimLog};

/// Sets outputs. `index` is the output's place in [`OutputsConfig::lines`]; `on` is the
/// logical state (relay energised, LED lit), which the backend maps to a level (active-low).
pub trait OutputBackend: Send {
    fn set(&mut self, index: usize, on: bool) -> io::Result<()>;
}

/// Writes one JSON object per output change, one per line:
/// `{"ts_ms": <unix ms>, "output": "relay", "on": true}`.
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
