//! The door's outputs: relay, LEDs, buzzer. One seam ([`OutputBackend`]) with two
//! implementations: `gpio` (the Pi, through rppal) and `sim` (JSON lines, for tests and the
//! demo). [`feedback::Feedback`] drives them: pulses, patterns, and the safe state.

pub mod feedback;
mod gpio;

use std::fmt;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{OutputBackendKind, OutputSpec, OutputsConfig, SimLog};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputName {
    Relay,
    Green,
    Red,
    Buzzer,
    Status,
}

impl OutputName {
    pub const ALL: [OutputName; 5] = [
        OutputName::Relay,
        OutputName::Green,
        OutputName::Red,
        OutputName::Buzzer,
        OutputName::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputName::Relay => "relay",
            OutputName::Green => "green",
            OutputName::Red => "red",
            OutputName::Buzzer => "buzzer",
            OutputName::Status => "status",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OutputName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sets outputs. `on` is the logical state (relay energised, LED lit); the backend maps it to
/// a level (active-low pins).
pub trait OutputBackend: Send {
    fn set(&mut self, output: OutputName, on: bool) -> io::Result<()>;
}

/// Writes one JSON object per output change, one per line:
/// `{"ts_ms": <unix ms>, "output": "relay", "on": true}`.
pub struct SimBackend {
    out: Box<dyn Write + Send>,
}

impl SimBackend {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        SimBackend { out }
    }

    pub fn open(log: &SimLog) -> io::Result<Self> {
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
        Ok(SimBackend::new(out))
    }
}

impl OutputBackend for SimBackend {
    fn set(&mut self, output: OutputName, on: bool) -> io::Result<()> {
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

/// The configured outputs, as (name, spec) pairs.
pub fn configured(cfg: &OutputsConfig) -> Vec<(OutputName, OutputSpec)> {
    [
        (OutputName::Relay, cfg.relay),
        (OutputName::Green, cfg.green),
        (OutputName::Red, cfg.red),
        (OutputName::Buzzer, cfg.buzzer),
        (OutputName::Status, cfg.status),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.map(|s| (n, s)))
    .collect()
}

/// Opens the configured backend. Every output starts in its safe state (off).
pub fn open_backend(cfg: &OutputsConfig) -> io::Result<Box<dyn OutputBackend>> {
    Ok(match &cfg.backend {
        OutputBackendKind::Sim { log } => Box::new(SimBackend::open(log)?),
        OutputBackendKind::Gpio => Box::new(gpio::GpioBackend::open(&configured(cfg))?),
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
        let mut b = SimBackend::new(Box::new(buf.clone()));
        b.set(OutputName::Relay, true).unwrap();
        b.set(OutputName::Red, false).unwrap();
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
