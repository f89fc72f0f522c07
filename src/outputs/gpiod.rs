//! The `gpiod` backend: the kernel's GPIO character device (`/dev/gpiochipN`) through
//! gpiocdev.
//!
//! Works on every current Raspberry Pi (the Pi 5 included, where `/dev/gpiomem` is gone) and
//! on other Linux boards. Lines are named by BCM number (`pin`, an offset on `outputs.chip`),
//! by line name (`line = "GPIO17"`, the same on every Pi whatever the chip numbering) or by
//! chip and offset. Active-low is handled by the kernel (`as_active_low`), so "active" is
//! always the logical state: relay energised, button pressed, door open. Outputs are
//! requested already inactive, so an active-low relay never sees a low glitch at start.
//!
//! The planning ([`plan`], [`request_config`]) is pure and unit-tested; the requests and the
//! edge-event threads are the IO edge.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use gpiocdev::line::{Bias as LineBias, EdgeDetection, EdgeKind, Value};
use gpiocdev::request::{Config as RequestConfig, Request};
use tokio::sync::mpsc;

use super::inputs::{InputEvent, InputName, InputsHandle};
use super::OutputBackend;
use crate::config::{Bias, InputSpec, LineRef, OutputsConfig};

/// What one line is requested as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    Output,
    Input {
        bias: Bias,
        debounce: std::time::Duration,
    },
}

/// One line to request: where it is and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinePlan {
    /// The config key (`outputs.relay`, `inputs.door_sensor`), for messages.
    pub key: String,
    pub chip: PathBuf,
    pub offset: u32,
    pub active_low: bool,
    pub usage: Use,
}

/// Finds lines: a chip path and offset for a [`LineRef`].
pub trait Resolve {
    fn resolve(&self, line: &LineRef) -> io::Result<(PathBuf, u32)>;
}

/// `gpiochip0` -> `/dev/gpiochip0`; a path stays a path.
pub fn chip_path(chip: &str) -> PathBuf {
    if chip.contains('/') {
        PathBuf::from(chip)
    } else if chip.chars().all(|c| c.is_ascii_digit()) {
        PathBuf::from(format!("/dev/gpiochip{chip}"))
    } else {
        PathBuf::from("/dev").join(chip)
    }
}

/// The system's lines: names are looked up on every chip (`gpioinfo` shows them).
pub struct SystemLines {
    pub default_chip: String,
}

impl Resolve for SystemLines {
    fn resolve(&self, line: &LineRef) -> io::Result<(PathBuf, u32)> {
        match line {
            LineRef::Pin(n) => Ok((chip_path(&self.default_chip), *n)),
            LineRef::ChipOffset { chip, offset } => Ok((chip_path(chip), *offset)),
            LineRef::Named(name) => gpiocdev::find_named_line(name)
                .map(|f| (f.chip, f.info.offset))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no GPIO line is named \"{name}\" (gpioinfo lists them)"),
                    )
                }),
        }
    }
}

/// Resolves every line; two uses of one line are an error (the config checks the same
/// reference twice, this catches a name and a number that are the same line).
pub fn plan(
    resolver: &dyn Resolve,
    outputs: &[(String, crate::config::OutputSpec)],
    inputs: &[(InputName, InputSpec)],
) -> io::Result<Vec<LinePlan>> {
    let mut plans: Vec<LinePlan> = Vec::new();
    let wanted = outputs
        .iter()
        .map(|(n, s)| (format!("outputs.{n}"), &s.line, s.active_low, Use::Output))
        .chain(inputs.iter().map(|(n, s)| {
            (
                format!("inputs.{}", n.as_str()),
                &s.line,
                s.active_low,
                Use::Input {
                    bias: s.bias,
                    debounce: s.debounce,
                },
            )
        }));
    for (key, line, active_low, usage) in wanted {
        let (chip, offset) = resolver
            .resolve(line)
            .map_err(|e| io::Error::new(e.kind(), format!("{key}: {e}")))?;
        if let Some(other) = plans.iter().find(|p| p.chip == chip && p.offset == offset) {
            return Err(io::Error::other(format!(
                "{key}: {} line {offset} is already used by {}",
                chip.display(),
                other.key
            )));
        }
        plans.push(LinePlan {
            key,
            chip,
            offset,
            active_low,
            usage,
        });
    }
    Ok(plans)
}

/// The request for the lines of one chip. Outputs start inactive (off) at the kernel level.
pub fn request_config(chip: &Path, lines: &[&LinePlan]) -> RequestConfig {
    let mut cfg = RequestConfig::default();
    cfg.on_chip(chip);
    for p in lines {
        cfg.with_line(p.offset);
        match &p.usage {
            Use::Output => {
                cfg.as_output(Value::Inactive);
            }
            Use::Input { bias, debounce } => {
                cfg.as_input();
                cfg.with_bias(match bias {
                    Bias::AsIs => None,
                    Bias::PullUp => Some(LineBias::PullUp),
                    Bias::PullDown => Some(LineBias::PullDown),
                    Bias::Disabled => Some(LineBias::Disabled),
                });
                cfg.with_edge_detection(EdgeDetection::BothEdges);
                if !debounce.is_zero() {
                    cfg.with_debounce_period(*debounce);
                }
            }
        }
        if p.active_low {
            cfg.as_active_low();
        } else {
            cfg.as_active_high();
        }
    }
    cfg
}

/// Groups plans by chip, in a stable order.
fn by_chip(plans: &[LinePlan]) -> BTreeMap<PathBuf, Vec<&LinePlan>> {
    let mut m: BTreeMap<PathBuf, Vec<&LinePlan>> = BTreeMap::new();
    for p in plans {
        m.entry(p.chip.clone()).or_default().push(p);
    }
    m
}

fn request(chip: &Path, lines: &[&LinePlan]) -> io::Result<Request> {
    Request::builder()
        .with_config(request_config(chip, lines))
        .with_consumer("tiketo-gate")
        .request()
        .map_err(|e| {
            let keys: Vec<&str> = lines.iter().map(|p| p.key.as_str()).collect();
            io::Error::other(format!("{} ({}): {e}", chip.display(), keys.join(", ")))
        })
}

/// The outputs, requested per chip.
pub struct GpiodBackend {
    /// Per output index: its request and offset.
    lines: Vec<(usize, u32)>,
    requests: Vec<Request>,
}

impl GpiodBackend {
    pub fn open(cfg: &OutputsConfig) -> io::Result<Self> {
        let resolver = SystemLines {
            default_chip: cfg.chip.clone(),
        };
        let plans = plan(&resolver, &cfg.lines, &[])?;
        let mut requests = Vec::new();
        let mut lines = vec![(usize::MAX, 0); plans.len()];
        for (chip, group) in by_chip(&plans) {
            requests.push(request(&chip, &group)?);
            for p in group {
                let i = plans.iter().position(|q| q.key == p.key).unwrap_or(0);
                lines[i] = (requests.len() - 1, p.offset);
            }
        }
        Ok(GpiodBackend { lines, requests })
    }
}

impl OutputBackend for GpiodBackend {
    fn set(&mut self, index: usize, on: bool) -> io::Result<()> {
        let Some(&(req, offset)) = self.lines.get(index) else {
            return Ok(());
        };
        let value = if on { Value::Active } else { Value::Inactive };
        self.requests[req]
            .set_value(offset, value)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Requests the input lines with edge detection and reports their changes.
pub fn spawn_inputs(
    cfg: &OutputsConfig,
    inputs: Vec<(InputName, InputSpec)>,
    tx: mpsc::Sender<InputEvent>,
) -> io::Result<InputsHandle> {
    let resolver = SystemLines {
        default_chip: cfg.chip.clone(),
    };
    let plans = plan(&resolver, &[], &inputs)?;
    for (chip, group) in by_chip(&plans) {
        let req = request(&chip, &group)?;
        let names: Vec<(u32, InputName)> = group
            .iter()
            .filter_map(|p| {
                let name = inputs
                    .iter()
                    .find(|(n, _)| format!("inputs.{}", n.as_str()) == p.key)?
                    .0;
                Some((p.offset, name))
            })
            .collect();
        for (offset, input) in &names {
            let active = req
                .value(*offset)
                .map_err(|e| io::Error::other(format!("inputs.{}: {e}", input.as_str())))?;
            // Called from the daemon's runtime: no blocking send (the channel has room).
            let _ = tx.try_send(InputEvent {
                input: *input,
                active: active == Value::Active,
                initial: true,
            });
        }
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("gpiod inputs {}", chip.display()))
            .spawn(move || loop {
                match req.read_edge_event() {
                    Ok(ev) => {
                        let Some((_, input)) = names.iter().find(|(o, _)| *o == ev.offset) else {
                            continue;
                        };
                        // Edges are of the logical value: with active_low the kernel has
                        // already turned a falling level into a rising "active" edge.
                        let active = ev.kind == EdgeKind::Rising;
                        if tx
                            .blocking_send(InputEvent {
                                input: *input,
                                active,
                                initial: false,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(chip = %chip.display(), "GPIO input events stopped: {e}");
                        return;
                    }
                }
            })?;
    }
    Ok(InputsHandle::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputSpec;
    use gpiocdev::line::Direction;
    use std::time::Duration;

    /// Lines as a Pi 4 names them: GPIO<n> is offset n on gpiochip0; a second chip for
    /// the "chip and offset" form.
    struct PiLines;
    impl Resolve for PiLines {
        fn resolve(&self, line: &LineRef) -> io::Result<(PathBuf, u32)> {
            match line {
                LineRef::Pin(n) => Ok((chip_path("gpiochip0"), *n)),
                LineRef::ChipOffset { chip, offset } => Ok((chip_path(chip), *offset)),
                LineRef::Named(n) => n
                    .strip_prefix("GPIO")
                    .and_then(|d| d.parse().ok())
                    .map(|o| (chip_path("gpiochip0"), o))
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such line")),
            }
        }
    }

    fn out(line: LineRef, active_low: bool) -> OutputSpec {
        OutputSpec {
            line,
            active_low,
            pulse: Duration::from_millis(100),
        }
    }

    fn input(line: LineRef, active_low: bool, bias: Bias, ms: u64) -> InputSpec {
        InputSpec {
            line,
            active_low,
            bias,
            debounce: Duration::from_millis(ms),
        }
    }

    #[test]
    fn lines_by_number_name_and_chip_offset_resolve_and_group_by_chip() {
        let outputs = vec![
            ("relay".to_string(), out(LineRef::Pin(17), true)),
            (
                "green".to_string(),
                out(LineRef::Named("GPIO27".into()), false),
            ),
            (
                "relay2".to_string(),
                out(
                    LineRef::ChipOffset {
                        chip: "gpiochip1".into(),
                        offset: 3,
                    },
                    false,
                ),
            ),
        ];
        let inputs = vec![(
            InputName::DoorSensor,
            input(LineRef::Named("GPIO5".into()), true, Bias::PullUp, 20),
        )];
        let plans = plan(&PiLines, &outputs, &inputs).unwrap();
        let at: Vec<(String, PathBuf, u32)> = plans
            .iter()
            .map(|p| (p.key.clone(), p.chip.clone(), p.offset))
            .collect();
        assert_eq!(
            at,
            vec![
                ("outputs.relay".into(), "/dev/gpiochip0".into(), 17),
                ("outputs.green".into(), "/dev/gpiochip0".into(), 27),
                ("outputs.relay2".into(), "/dev/gpiochip1".into(), 3),
                ("inputs.door_sensor".into(), "/dev/gpiochip0".into(), 5),
            ]
        );
        let groups = by_chip(&plans);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[Path::new("/dev/gpiochip0")].len(), 3);
    }

    #[test]
    fn outputs_start_inactive_and_active_low_is_the_kernels_job() {
        let outputs = vec![
            ("relay".to_string(), out(LineRef::Pin(17), true)),
            ("green".to_string(), out(LineRef::Pin(27), false)),
        ];
        let plans = plan(&PiLines, &outputs, &[]).unwrap();
        let refs: Vec<&LinePlan> = plans.iter().collect();
        let cfg = request_config(Path::new("/dev/gpiochip0"), &refs);
        assert_eq!(cfg.chip(), Path::new("/dev/gpiochip0"));
        assert_eq!(cfg.num_lines(), 2);
        let relay = cfg.line_config(17).unwrap();
        assert_eq!(relay.direction, Some(Direction::Output));
        assert!(relay.active_low, "the relay is active-low");
        // Inactive = off: for an active-low relay the kernel drives the line high from the
        // request on, so it never clicks at start.
        assert_eq!(relay.value, Some(Value::Inactive));
        assert_eq!(relay.edge_detection, None);
        let green = cfg.line_config(27).unwrap();
        assert!(!green.active_low);
        assert_eq!(green.value, Some(Value::Inactive));
    }

    #[test]
    fn inputs_get_edges_bias_debounce_and_polarity() {
        let inputs = vec![
            (
                InputName::ExitButton,
                input(LineRef::Pin(6), true, Bias::PullUp, 50),
            ),
            (
                InputName::DoorSensor,
                input(LineRef::Pin(5), false, Bias::AsIs, 0),
            ),
        ];
        let plans = plan(&PiLines, &[], &inputs).unwrap();
        let refs: Vec<&LinePlan> = plans.iter().collect();
        let cfg = request_config(Path::new("/dev/gpiochip0"), &refs);
        let button = cfg.line_config(6).unwrap();
        assert_eq!(button.direction, Some(Direction::Input));
        assert!(button.active_low);
        assert_eq!(button.bias, Some(LineBias::PullUp));
        assert_eq!(button.edge_detection, Some(EdgeDetection::BothEdges));
        assert_eq!(button.debounce_period, Some(Duration::from_millis(50)));
        let door = cfg.line_config(5).unwrap();
        assert!(!door.active_low);
        assert_eq!(door.bias, None, "as-is leaves the bias alone");
        assert_eq!(door.debounce_period, None);
        assert_eq!(door.edge_detection, Some(EdgeDetection::BothEdges));
    }

    #[test]
    fn one_line_twice_or_an_unknown_name_is_an_error_naming_the_key() {
        let outputs = vec![
            ("relay".to_string(), out(LineRef::Pin(17), false)),
            (
                "relay2".to_string(),
                out(LineRef::Named("GPIO17".into()), false),
            ),
        ];
        let e = plan(&PiLines, &outputs, &[]).unwrap_err().to_string();
        assert!(
            e.contains("outputs.relay2") && e.contains("already used by outputs.relay"),
            "{e}"
        );
        let outputs = vec![(
            "relay".to_string(),
            out(LineRef::Named("PIN_X".into()), false),
        )];
        let e = plan(&PiLines, &outputs, &[]).unwrap_err().to_string();
        assert!(e.starts_with("outputs.relay: "), "{e}");
    }

    #[test]
    fn chip_names_become_paths() {
        assert_eq!(chip_path("gpiochip4"), PathBuf::from("/dev/gpiochip4"));
        assert_eq!(chip_path("0"), PathBuf::from("/dev/gpiochip0"));
        assert_eq!(chip_path("/dev/gpiochip2"), PathBuf::from("/dev/gpiochip2"));
    }

    /// A gpio-sim chip made through configfs, removed on drop.
    struct SimChip {
        root: PathBuf,
        chip: String,
        sysfs: PathBuf,
    }

    impl SimChip {
        fn new(lines: u32) -> SimChip {
            let root = PathBuf::from(format!(
                "/sys/kernel/config/gpio-sim/tiketo-{}",
                std::process::id()
            ));
            let bank = root.join("bank0");
            std::fs::create_dir(&root).expect("configfs gpio-sim (modprobe gpio-sim)");
            std::fs::create_dir(&bank).unwrap();
            std::fs::write(bank.join("num_lines"), lines.to_string()).unwrap();
            std::fs::write(root.join("live"), "1").unwrap();
            let chip = std::fs::read_to_string(bank.join("chip_name"))
                .unwrap()
                .trim()
                .to_owned();
            let dev = std::fs::read_to_string(root.join("dev_name"))
                .unwrap()
                .trim()
                .to_owned();
            let sysfs = PathBuf::from(format!("/sys/devices/platform/{dev}/{chip}"));
            SimChip { root, chip, sysfs }
        }

        /// The level the backend drives on an output line.
        fn level(&self, offset: u32) -> u8 {
            let v = std::fs::read_to_string(self.sysfs.join(format!("sim_gpio{offset}/value")))
                .unwrap();
            v.trim().parse().unwrap()
        }

        /// Pulls an input line up or down, as a switch would.
        fn pull(&self, offset: u32, up: bool) {
            std::fs::write(
                self.sysfs.join(format!("sim_gpio{offset}/pull")),
                if up { "pull-up" } else { "pull-down" },
            )
            .unwrap();
        }
    }

    impl Drop for SimChip {
        fn drop(&mut self) {
            let _ = std::fs::write(self.root.join("live"), "0");
            let _ = std::fs::remove_dir(self.root.join("bank0"));
            let _ = std::fs::remove_dir(&self.root);
        }
    }

    /// The real backend against the kernel's gpio-sim, where the machine has it.
    #[test]
    #[ignore = "needs the kernel's gpio-sim (CONFIG_GPIO_SIM, configfs mounted) and root; this machine's kernel has neither, so the line requests are checked by the unit tests above"]
    fn real_gpio_sim_chip() {
        let sim = SimChip::new(8);
        let cfg = OutputsConfig {
            backend: crate::config::OutputBackendKind::Gpiod,
            chip: sim.chip.clone(),
            lines: vec![
                ("relay".to_string(), out(LineRef::Pin(1), true)),
                ("green".to_string(), out(LineRef::Pin(3), false)),
            ],
        };
        let mut b = GpiodBackend::open(&cfg).unwrap();
        // Requested inactive: the active-low relay's line is high (off), green low.
        assert_eq!((sim.level(1), sim.level(3)), (1, 0));
        b.set(0, true).unwrap();
        b.set(1, true).unwrap();
        assert_eq!((sim.level(1), sim.level(3)), (0, 1));
        b.set(0, false).unwrap();
        assert_eq!(sim.level(1), 1);

        // An active-low door contact on line 5: pulled up (closed) reads inactive; pulled
        // down (open) is a rising edge of the logical value.
        sim.pull(5, true);
        let (tx, mut rx) = mpsc::channel(8);
        let inputs = vec![(
            InputName::DoorSensor,
            input(LineRef::Pin(5), true, Bias::AsIs, 0),
        )];
        let _h = spawn_inputs(&cfg, inputs, tx).unwrap();
        let first = rx.blocking_recv().unwrap();
        assert!(first.initial && !first.active, "{first:?}");
        sim.pull(5, false);
        let ev = rx.blocking_recv().unwrap();
        assert!(!ev.initial && ev.active, "{ev:?}");
        sim.pull(5, true);
        assert!(!rx.blocking_recv().unwrap().active);
    }
}
