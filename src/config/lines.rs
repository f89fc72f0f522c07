//! Validation of the GPIO lines: outputs (rppal pins or gpiod names and offsets), the door's
//! inputs, and the wiring between readers, outputs and inputs (every named output exists, no
//! line used twice).

#[allow(unused_imports)]
use super::*;

impl Validator<'_> {
    /// Every output a reader or the exit button names exists; every output is used.
    pub(super) fn check_wiring(
        &mut self,
        readers: &[ReaderConfig],
        outputs: &OutputsConfig,
        inputs: &InputsConfig,
    ) {
        for r in readers {
            for (role, name) in [
                ("relay", &r.outputs.relay),
                ("green", &r.outputs.green),
                ("red", &r.outputs.red),
                ("buzzer", &r.outputs.buzzer),
            ] {
                let Some(name) = name else { continue };
                if name == "status" {
                    self.problem(
                        &format!("{}.outputs.{role}", r.key),
                        "the status LED belongs to the daemon, not to a reader",
                    );
                } else if outputs.get(name).is_none() {
                    self.problem(
                        &format!("{}.outputs.{role}", r.key),
                        format!("no output \"{name}\" in [outputs]"),
                    );
                }
            }
        }
        let used = |name: &str| {
            name == "status"
                || inputs.exit_button.as_ref().is_some_and(|b| b.relay == name)
                || readers.iter().any(|r| {
                    [
                        &r.outputs.relay,
                        &r.outputs.green,
                        &r.outputs.red,
                        &r.outputs.buzzer,
                    ]
                    .iter()
                    .any(|o| o.as_deref() == Some(name))
                })
        };
        for (name, _) in &outputs.lines {
            if !used(name) {
                self.problem(
                    &format!("outputs.{name}"),
                    "no reader drives this output (name it in a reader's outputs, or remove it)",
                );
            }
        }
    }

    /// An output's table, field by field, so that every problem names its key.
    pub(super) fn raw_output(&mut self, key: &str, t: &toml::Table) -> Option<RawOutput> {
        let mut r = RawOutput::default();
        let mut ok = true;
        for (k, v) in t {
            let full = format!("{key}.{k}");
            let describe = |v: &toml::Value| match v {
                toml::Value::String(s) => format!("string {s:?}"),
                other => format!("{} `{other}`", other.type_str()),
            };
            match k.as_str() {
                "pin" | "offset" | "pulse_ms" => match v.as_integer() {
                    Some(n) if n >= 0 => {
                        let n = Some(n as u64);
                        match k.as_str() {
                            "pin" => r.pin = n,
                            "offset" => r.offset = n,
                            _ => r.pulse_ms = n,
                        }
                    }
                    Some(n) => {
                        self.problem(&full, format!("must not be negative (got {n})"));
                        ok = false;
                    }
                    None => {
                        self.problem(
                            &full,
                            format!("invalid type: {}, expected an integer", describe(v)),
                        );
                        ok = false;
                    }
                },
                "line" | "chip" => match v.as_str() {
                    Some(s) if k == "line" => r.line = Some(s.to_owned()),
                    Some(s) => r.chip = Some(s.to_owned()),
                    None => {
                        self.problem(
                            &full,
                            format!("invalid type: {}, expected a string", describe(v)),
                        );
                        ok = false;
                    }
                },
                "accept" | "reject" | "attention" => match pattern_of(v) {
                    Ok(p) => match k.as_str() {
                        "accept" => r.accept = Some(p),
                        "reject" => r.reject = Some(p),
                        _ => r.attention = Some(p),
                    },
                    Err(why) => {
                        self.problem(&full, why);
                        ok = false;
                    }
                },
                "active_low" => match v.as_bool() {
                    Some(b) => r.active_low = Some(b),
                    None => {
                        self.problem(
                            &full,
                            format!("invalid type: {}, expected a boolean", describe(v)),
                        );
                        ok = false;
                    }
                },
                _ => {
                    self.problem(
                        &full,
                        format!("unknown key `{k}`, expected one of `pin`, `line`, `chip`, `offset`, `active_low`, `pulse_ms` (and for a buzzer `accept`, `reject`, `attention`)"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(r)
    }

    /// A line: `pin` (BCM number), `line` (a name, gpiod), or `chip` + `offset` (gpiod).
    pub(super) fn line_ref(
        &mut self,
        key: &str,
        backend: &OutputBackendKind,
        pin: Option<u64>,
        line: Option<String>,
        chip: Option<String>,
        offset: Option<u64>,
    ) -> Option<LineRef> {
        let gpiod = *backend == OutputBackendKind::Gpiod;
        let given =
            pin.is_some() as u8 + line.is_some() as u8 + (chip.is_some() || offset.is_some()) as u8;
        if given > 1 {
            self.problem(key, "give one of pin, line, or chip and offset");
            return None;
        }
        if let Some(pin) = pin {
            let max = if gpiod { 1023 } else { 27 };
            return Some(LineRef::Pin(
                self.range(&format!("{key}.pin"), Some(pin), 0, 0, max) as u32,
            ));
        }
        if !gpiod && (line.is_some() || chip.is_some() || offset.is_some()) {
            let k = if line.is_some() {
                "line"
            } else if chip.is_some() {
                "chip"
            } else {
                "offset"
            };
            self.problem(
                &format!("{key}.{k}"),
                "line names and chip offsets need outputs.backend = \"gpiod\" (the gpio backend takes pin = BCM number)",
            );
            return None;
        }
        if let Some(name) = line {
            if name.trim().is_empty() {
                self.problem(&format!("{key}.line"), "must not be empty");
                return None;
            }
            return Some(LineRef::Named(name));
        }
        match (chip, offset) {
            (Some(chip), Some(offset)) => {
                if chip.trim().is_empty() {
                    self.problem(&format!("{key}.chip"), "must not be empty");
                    return None;
                }
                let offset = self.range(&format!("{key}.offset"), Some(offset), 0, 0, 1023) as u32;
                Some(LineRef::ChipOffset { chip, offset })
            }
            (Some(_), None) => {
                self.problem(&format!("{key}.chip"), "needs an offset too");
                None
            }
            (None, Some(_)) => {
                self.problem(&format!("{key}.offset"), "needs a chip too");
                None
            }
            (None, None) => {
                self.problem(
                    key,
                    if gpiod {
                        "needs a pin (BCM GPIO number), a line name or a chip and offset"
                    } else {
                        "needs a pin (BCM GPIO number)"
                    },
                );
                None
            }
        }
    }

    pub(super) fn inputs(&mut self, raw: RawInputs, outputs: &OutputsConfig) -> InputsConfig {
        let input = |v: &mut Self, name: &str, raw: &RawInput| -> Option<InputSpec> {
            let key = format!("inputs.{name}");
            let line = v.line_ref(
                &key,
                &outputs.backend,
                raw.pin,
                raw.line.clone(),
                raw.chip.clone(),
                raw.offset,
            )?;
            let bias = match v.choice(
                &format!("{key}.bias"),
                raw.bias.as_deref(),
                "as-is",
                &["as-is", "pull-up", "pull-down", "disabled"],
            ) {
                "pull-up" => Bias::PullUp,
                "pull-down" => Bias::PullDown,
                "disabled" => Bias::Disabled,
                _ => Bias::AsIs,
            };
            let debounce = v.range(
                &format!("{key}.debounce_ms"),
                raw.debounce_ms,
                50,
                0,
                10_000,
            );
            Some(InputSpec {
                line,
                active_low: raw.active_low.unwrap_or(false),
                bias,
                debounce: Duration::from_millis(debounce),
            })
        };
        let exit_button = raw.exit_button.as_ref().and_then(|r| {
            if r.held_open_secs.is_some() {
                self.problem(
                    "inputs.exit_button.held_open_secs",
                    "only for inputs.door_sensor",
                );
            }
            let spec = input(self, "exit_button", r)?;
            let relay = r.relay.clone().unwrap_or_else(|| "relay".into());
            if outputs.get(&relay).is_none() {
                self.problem(
                    if r.relay.is_some() {
                        "inputs.exit_button.relay"
                    } else {
                        "inputs.exit_button"
                    },
                    format!("the output it releases, \"{relay}\", is not in [outputs]"),
                );
            }
            Some(ExitButtonConfig { input: spec, relay })
        });
        let door_sensor = raw.door_sensor.as_ref().and_then(|r| {
            if r.relay.is_some() {
                self.problem("inputs.door_sensor.relay", "only for inputs.exit_button");
            }
            let spec = input(self, "door_sensor", r)?;
            let held = self.range(
                "inputs.door_sensor.held_open_secs",
                r.held_open_secs,
                30,
                1,
                86_400,
            );
            Some(DoorSensorConfig {
                input: spec,
                held_open: Duration::from_secs(held),
            })
        });
        // A line is one thing: no input on an output's line, nor on the other input's.
        let mut taken: Vec<(LineRef, String)> = outputs
            .lines
            .iter()
            .map(|(n, s)| (s.line.clone(), format!("outputs.{n}")))
            .collect();
        for (name, spec) in [
            ("exit_button", exit_button.as_ref().map(|b| &b.input)),
            ("door_sensor", door_sensor.as_ref().map(|d| &d.input)),
        ] {
            let Some(spec) = spec else { continue };
            if let Some((_, other)) = taken.iter().find(|(l, _)| *l == spec.line) {
                let other = other.clone();
                self.problem(
                    &format!("inputs.{name}"),
                    format!("{} is already used by {other}", spec.line),
                );
            }
            taken.push((spec.line.clone(), format!("inputs.{name}")));
        }
        InputsConfig {
            exit_button,
            door_sensor,
        }
    }

    pub(super) fn outputs(&mut self, raw: RawOutputs) -> OutputsConfig {
        let backend_name = self.choice(
            "outputs.backend",
            raw.backend.as_deref(),
            "gpio",
            &["gpio", "gpiod", "sim"],
        );
        let backend = match backend_name {
            "sim" => {
                let log = match raw.sim_log.as_deref() {
                    None | Some("-") => SimLog::Stdout,
                    Some("") => {
                        self.problem("outputs.sim_log", "must be a path or \"-\" for stdout");
                        SimLog::Stdout
                    }
                    Some(p) => SimLog::File(PathBuf::from(p)),
                };
                let inputs = match raw.sim_inputs.as_deref() {
                    None => None,
                    Some("") => {
                        self.problem("outputs.sim_inputs", "must be a path");
                        None
                    }
                    Some(p) => Some(PathBuf::from(p)),
                };
                OutputBackendKind::Sim { log, inputs }
            }
            "gpiod" => OutputBackendKind::Gpiod,
            _ => OutputBackendKind::Gpio,
        };
        // sim_log and sim_inputs are left alone under the other backends (configs switch
        // between sim and gpio with them in place); a chip without gpiod is a forgotten backend.
        if backend_name != "gpiod" && raw.chip.is_some() {
            self.problem("outputs.chip", "only for backend = \"gpiod\"");
        }
        let chip = raw.chip.unwrap_or_else(|| "gpiochip0".into());
        // The standard outputs first, then the others by name.
        let mut names: Vec<&String> = raw.lines.keys().collect();
        names.sort_by_key(|n| {
            (
                STANDARD_OUTPUTS
                    .iter()
                    .position(|s| s == n)
                    .unwrap_or(STANDARD_OUTPUTS.len()),
                (*n).clone(),
            )
        });
        let mut lines: Vec<(String, OutputSpec)> = Vec::new();
        for name in names {
            let key = format!("outputs.{name}");
            let value = raw.lines[name].clone();
            if !value.is_table() {
                self.problem(
                    &key,
                    "unknown key (an output is a table like { pin = 17 }; the settings are backend, sim_log, sim_inputs and chip)",
                );
                continue;
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.problem(&key, "output names are letters, digits, _ and -");
                continue;
            }
            let Some(raw) = value.as_table().and_then(|t| self.raw_output(&key, t)) else {
                continue;
            };
            let Some(line) = self.line_ref(
                &key,
                &backend,
                raw.pin,
                raw.line.clone(),
                raw.chip.clone(),
                raw.offset,
            ) else {
                continue;
            };
            if let Some((other, _)) = lines.iter().find(|(_, s)| s.line == line) {
                let field = match line {
                    LineRef::Pin(_) => "pin",
                    LineRef::Named(_) => "line",
                    LineRef::ChipOffset { .. } => "offset",
                };
                self.problem(
                    &format!("{key}.{field}"),
                    format!("{line} is already used by outputs.{other}"),
                );
            }
            let default_pulse = match name.as_str() {
                "relay" => 3000,
                "buzzer" => 300,
                "status" => 1000,
                _ if name.starts_with("relay") => 3000,
                _ if name.starts_with("buzzer") => 300,
                _ => 1500,
            };
            let pulse_ms = self.range(
                &format!("{key}.pulse_ms"),
                raw.pulse_ms,
                default_pulse,
                1,
                600_000,
            );
            let pulse = Duration::from_millis(pulse_ms);
            let is_buzzer = name == "buzzer" || name.starts_with("buzzer");
            let mut patterns = if is_buzzer {
                BuzzerPatterns::defaults(pulse)
            } else {
                BuzzerPatterns::default()
            };
            for (k, given) in [
                ("accept", &raw.accept),
                ("reject", &raw.reject),
                ("attention", &raw.attention),
            ] {
                let Some(steps) = given else { continue };
                if !is_buzzer {
                    self.problem(
                        &format!("{key}.{k}"),
                        "a sound pattern is only for a buzzer (an output named buzzer or buzzer...)",
                    );
                    continue;
                }
                let steps: Vec<Duration> =
                    steps.iter().map(|ms| Duration::from_millis(*ms)).collect();
                match k {
                    "accept" => patterns.accept = steps,
                    "reject" => {
                        if raw.attention.is_none() {
                            patterns.attention = steps.clone();
                        }
                        patterns.reject = steps
                    }
                    _ => patterns.attention = steps,
                }
            }
            lines.push((
                name.clone(),
                OutputSpec {
                    line,
                    active_low: raw.active_low.unwrap_or(false),
                    pulse,
                    patterns,
                },
            ));
        }
        OutputsConfig {
            backend,
            chip,
            lines,
        }
    }
}

/// A buzzer pattern: ms on, off, on... (`[]` for silence), each step 1 to 10,000 ms, at most
/// 16 steps.
fn pattern_of(v: &toml::Value) -> Result<Vec<u64>, String> {
    let expected = "must be a list of milliseconds, on then off then on..., like [60] or [200, 100, 200] ([] for silence)";
    let list = v.as_array().ok_or_else(|| expected.to_string())?;
    if list.len() > 16 {
        return Err(format!("at most 16 steps (got {})", list.len()));
    }
    list.iter()
        .map(|x| match x.as_integer() {
            Some(n) if (1..=10_000).contains(&n) => Ok(n as u64),
            Some(n) => Err(format!(
                "each step must be between 1 and 10000 ms (got {n})"
            )),
            None => Err(expected.to_string()),
        })
        .collect()
}
