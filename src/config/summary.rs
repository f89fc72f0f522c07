//! The one-line summary `check-config` prints.

#[allow(unused_imports)]
use super::*;

impl Config {
    /// The one-line summary `check-config` prints.
    pub fn summary(&self) -> String {
        let kind = |r: &ReaderConfig| match &r.kind {
            ReaderKind::Serial { path, baud } => format!("serial {} @ {baud}", path.display()),
            ReaderKind::Stdin => "stdin".to_owned(),
            ReaderKind::Hid { source, layout, .. } => {
                let from = match source {
                    HidSource::Path(p) => p.display().to_string(),
                    HidSource::UsbId { vendor, product } => {
                        format!("usb {vendor:04x}:{product:04x}")
                    }
                    HidSource::Recording(p) => format!("recording {}", p.display()),
                };
                format!("hid {from} ({} layout)", layout.as_str())
            }
        };
        let reader = if self.multi_reader {
            let each: Vec<String> = self
                .readers
                .iter()
                .map(|r| {
                    let outs: Vec<&str> = [
                        &r.outputs.relay,
                        &r.outputs.green,
                        &r.outputs.red,
                        &r.outputs.buzzer,
                    ]
                    .iter()
                    .filter_map(|o| o.as_deref())
                    .collect();
                    format!(
                        "{} ({}, {}, outputs {})",
                        r.name,
                        kind(r),
                        r.direction,
                        if outs.is_empty() {
                            "none".into()
                        } else {
                            outs.join("+")
                        }
                    )
                })
                .collect();
            format!("readers [{}]", each.join("; "))
        } else {
            let r = &self.readers[0];
            let dir = if r.direction == Direction::Exit {
                " (exit)"
            } else {
                ""
            };
            format!("reader {}{dir}", kind(r))
        };
        let o = &self.outputs;
        let outs: Vec<String> = o
            .lines
            .iter()
            .map(|(n, s)| {
                let line = match &s.line {
                    LineRef::Pin(p) => p.to_string(),
                    other => other.to_string(),
                };
                format!(
                    "{n} {line}{}",
                    if s.active_low { " active-low" } else { "" }
                )
            })
            .collect();
        let backend = match &o.backend {
            OutputBackendKind::Gpio => "gpio".to_owned(),
            OutputBackendKind::Gpiod => format!("gpiod ({})", o.chip),
            OutputBackendKind::Sim {
                log: SimLog::Stdout,
                ..
            } => "sim (stdout)".to_owned(),
            OutputBackendKind::Sim {
                log: SimLog::File(p),
                ..
            } => format!("sim ({})", p.display()),
        };
        let mut inputs = Vec::new();
        if let Some(b) = &self.inputs.exit_button {
            inputs.push(format!("exit button {} -> {}", b.input.line, b.relay));
        }
        if let Some(d) = &self.inputs.door_sensor {
            inputs.push(format!(
                "door sensor {} (held open after {} s)",
                d.input.line,
                d.held_open.as_secs()
            ));
        }
        let inputs = if inputs.is_empty() {
            String::new()
        } else {
            format!(", inputs [{}]", inputs.join(", "))
        };
        // Added at the end (scripts read the line from the start).
        let mut extra = String::new();
        if self.readers.iter().any(|r| r.hours.is_set()) {
            extra.push_str(&format!(
                ", opening hours in {} (unsynced clock: {})",
                self.hours
                    .zone_name
                    .as_deref()
                    .unwrap_or("the system's zone"),
                self.hours.unsynced_clock.as_str()
            ));
        }
        if let Some(d) = &self.display {
            extra.push_str(&format!(
                ", guest screen http://{} ({})",
                d.listen, d.language
            ));
        }
        if let Some(m) = &self.mqtt {
            extra.push_str(&format!(
                ", mqtt {} as {} under {}{}",
                m.broker(),
                m.client_id,
                m.topic,
                if m.command_key_file.is_some() {
                    " (signed commands on)"
                } else {
                    ""
                }
            ));
        }
        format!(
            "ok: {}: device \"{}\", {reader}, api {} (timeout {} ms), offline policy {}, state {}, outputs {backend} [{}]{inputs}{extra}",
            self.source.display(),
            self.device.name,
            self.api.url,
            self.api.timeout.as_millis(),
            self.offline.policy.as_str(),
            self.device.state_dir.display(),
            if outs.is_empty() { "none".to_owned() } else { outs.join(", ") },
        )
    }
}
