//! The TOML config: parsing, defaults and validation.
//!
//! Every problem names the file, the line and the dotted key, like a compiler message:
//! `/etc/tiketo-gate/config.toml:12: reader.baud: must be between 50 and 4000000 (got 0)`.
//! Unknown keys are errors (a typo must not silently fall back to a default).
//!
//! - `mod.rs`: the validated config's public types, [`load`] and [`parse`];
//! - `raw.rs`: the serde mirror of the file, as written;
//! - `locate.rs`: where a key is in the text, and the error that names it;
//! - `validate.rs`: from raw to validated, section by section; `lines.rs`: the GPIO lines,
//!   outputs and inputs, and the wiring between them;
//! - `summary.rs`: the line `check-config` prints.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::decision::{Direction, OfflinePolicy, OfflineRules, Rules};

pub const DEFAULT_PATH: &str = "/etc/tiketo-gate/config.toml";

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub device: DeviceConfig,
    pub api: ApiConfig,
    /// The readers: one from `[reader]`, or one per `[[readers]]` entry.
    pub readers: Vec<ReaderConfig>,
    /// Whether they came from `[[readers]]` (the summary names them then).
    pub multi_reader: bool,
    pub rules: Rules,
    /// Opening hours (`rules.hours`, `rules.closed_dates`, `device.timezone`,
    /// `rules.unsynced_clock`); each reader holds the hours it keeps.
    pub hours: HoursConfig,
    pub offline: OfflineConfig,
    pub store: StoreConfig,
    pub outputs: OutputsConfig,
    pub inputs: InputsConfig,
    pub http: HttpConfig,
    /// `[display]`: the guest screen (None unless `display.listen` is set).
    pub display: Option<crate::display::DisplayConfig>,
    /// `[mqtt]`: the door on the venue's broker (None unless `mqtt.url` is set).
    pub mqtt: Option<MqttConfig>,
    /// What is valid but likely not what was meant (check-config prints them).
    pub notes: Vec<String>,
}

/// The opening hours' zone and clock rule.
#[derive(Debug, Clone)]
pub struct HoursConfig {
    /// `device.timezone`, or the system's.
    pub zone: jiff::tz::TimeZone,
    /// The name it was given (None: the system's).
    pub zone_name: Option<String>,
    pub unsynced_clock: crate::hours::UnsyncedClock,
}

/// `[mqtt]`: the door on an MQTT broker (off unless `url` is set).
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS through rustls (the system roots, or `ca_file`).
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (both or neither).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub client_id: String,
    /// The door's topic prefix (`tiketo-gate/<device.name>` unless set).
    pub topic: String,
    pub command_key_file: Option<PathBuf>,
    pub home_assistant: bool,
    pub home_assistant_commands: bool,
    pub keep_alive: Duration,
    pub max_pending: u64,
    /// `mqtt.venue` and `mqtt.venue_key_file` (both or neither): the doors of a venue share
    /// lookups and admissions.
    pub venue: Option<VenueConfig>,
}

/// The venue's shared memory: its topic prefix and the key file of its secret.
#[derive(Debug, Clone)]
pub struct VenueConfig {
    pub topic: String,
    pub key_file: PathBuf,
}

impl MqttConfig {
    /// The broker as the summary and the logs show it (never a password).
    pub fn broker(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls { "mqtts" } else { "mqtt" },
            self.host,
            self.port
        )
    }
}

/// `[http]`: the metrics, health and status page endpoint (off unless `listen` is set).
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    pub listen: Option<std::net::SocketAddr>,
    /// Enables the output-test buttons of the status page.
    pub admin_token: Option<crate::mask::Secret>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Sent and rejected rows older than this are pruned.
    pub retention: Duration,
    /// At this many unsent scan events nothing more is admitted offline.
    pub max_pending: u64,
}

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub name: String,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub url: Url,
    pub token_file: PathBuf,
    /// The whole scan's budget: lookup and record.
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderKind {
    Serial {
        path: PathBuf,
        baud: u32,
    },
    Stdin,
    /// A USB keyboard-mode scanner through evdev.
    Hid {
        source: HidSource,
        layout: crate::hid::Layout,
        /// Take the device for ourselves (EVIOCGRAB) so its keystrokes reach nothing else.
        grab: bool,
    },
}

impl ReaderKind {
    /// The device (or recording) path it reads, if it reads one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ReaderKind::Serial { path, .. } => Some(path),
            ReaderKind::Hid {
                source: HidSource::Path(p) | HidSource::Recording(p),
                ..
            } => Some(p),
            _ => None,
        }
    }
}

/// Where a HID reader's key events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HidSource {
    /// An event device path, best a stable `/dev/input/by-id/...-event-kbd` link.
    Path(PathBuf),
    /// The first keyboard-like event device with this USB vendor:product.
    UsbId { vendor: u16, product: u16 },
    /// A file or FIFO of raw `struct input_event` records (`hid_source = "recording"`), as
    /// `cat /dev/input/eventN > file` records them.
    Recording(PathBuf),
}

/// The outputs a reader drives (names of `[outputs]` entries); `None`: that role has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneOutputs {
    pub relay: Option<String>,
    pub green: Option<String>,
    pub red: Option<String>,
    pub buzzer: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Shown in logs, status and `ScanEventInput.data` (`reader`).
    pub name: String,
    /// The config key it came from (`reader` or `readers[N]`), for messages.
    pub key: String,
    pub kind: ReaderKind,
    pub direction: Direction,
    pub outputs: LaneOutputs,
    pub max_len: usize,
    pub debounce: Duration,
    /// Bytes of an unterminated code older than this are dropped as `incomplete`.
    pub frame_timeout: Duration,
    /// The opening hours it keeps: its own `hours`/`closed_dates`, else `[rules]`'s.
    pub hours: crate::hours::Hours,
}

#[derive(Debug, Clone)]
pub struct OfflineConfig {
    pub policy: OfflinePolicy,
    pub cache_ttl: Duration,
    pub max_offline_uses: u32,
    /// `offline.unknown = "accept"`.
    pub unknown_accepts: bool,
    /// With `mqtt.venue`: at most this many background verifications (`Query.pass`) a minute
    /// for the venue, by one door (0: none).
    pub refresh_per_minute: u32,
}

impl OfflineConfig {
    pub fn rules(&self) -> OfflineRules {
        OfflineRules {
            policy: self.policy,
            unknown_accepts: self.unknown_accepts,
            max_offline_uses: self.max_offline_uses,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputBackendKind {
    /// The Pi's GPIO through rppal (`/dev/gpiomem`).
    Gpio,
    /// The kernel's GPIO character device through gpiocdev (`/dev/gpiochipN`).
    Gpiod,
    Sim {
        log: SimLog,
        /// Simulated inputs: a FIFO (created if missing) of JSON lines like
        /// `{"input": "exit_button", "active": true}`.
        inputs: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimLog {
    Stdout,
    File(PathBuf),
}

/// Which GPIO line: a BCM number (`pin`), a line name (`line = "GPIO17"`, gpiod only) or a
/// chip and offset (gpiod only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LineRef {
    Pin(u32),
    Named(String),
    ChipOffset { chip: String, offset: u32 },
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineRef::Pin(p) => write!(f, "GPIO {p}"),
            LineRef::Named(n) => write!(f, "line \"{n}\""),
            LineRef::ChipOffset { chip, offset } => write!(f, "{chip} line {offset}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub line: LineRef,
    pub active_low: bool,
    pub pulse: Duration,
    /// A buzzer's patterns (`accept`, `reject`, `attention`); empty for other outputs.
    pub patterns: BuzzerPatterns,
}

/// A buzzer's sound for each kind of verdict: how long it is on, then off, then on... (ms in
/// the config), and off at the end. Empty: silent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuzzerPatterns {
    /// An admitted guest (default: silent).
    pub accept: Vec<Duration>,
    /// A pass turned away (default: two beeps of `pulse_ms`).
    pub reject: Vec<Duration>,
    /// Try again or fetch staff: a misread, the device not enrolled, the queue full, the API
    /// in trouble, closed by the offline policy (default: the reject pattern).
    pub attention: Vec<Duration>,
}

impl BuzzerPatterns {
    /// The defaults for a buzzer whose `pulse_ms` is `pulse`.
    pub fn defaults(pulse: Duration) -> Self {
        BuzzerPatterns {
            accept: Vec::new(),
            reject: vec![pulse, pulse, pulse],
            attention: vec![pulse, pulse, pulse],
        }
    }
}

/// The standard output names; a single `[reader]` drives relay, green, red and buzzer.
pub const STANDARD_OUTPUTS: [&str; 5] = ["relay", "green", "red", "buzzer", "status"];

#[derive(Debug, Clone)]
pub struct OutputsConfig {
    pub backend: OutputBackendKind,
    /// gpiod: the chip that `pin` numbers are offsets on.
    pub chip: String,
    /// Every configured output by name: the standard ones first, then the others by name.
    pub lines: Vec<(String, OutputSpec)>,
}

impl OutputsConfig {
    pub fn get(&self, name: &str) -> Option<&OutputSpec> {
        self.lines.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bias {
    AsIs,
    PullUp,
    PullDown,
    Disabled,
}

/// An input line. `active` is the pressed button / the open door: with `active_low` the
/// line reads low then (a switch to ground with a pull-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub line: LineRef,
    pub active_low: bool,
    pub bias: Bias,
    pub debounce: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitButtonConfig {
    pub input: InputSpec,
    /// The output it pulses (for its `pulse_ms`).
    pub relay: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorSensorConfig {
    pub input: InputSpec,
    /// Open longer than this: a "held open" warning.
    pub held_open: Duration,
}

/// `[inputs]`: optional request-to-exit button and door contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputsConfig {
    pub exit_button: Option<ExitButtonConfig>,
    pub door_sensor: Option<DoorSensorConfig>,
}

mod lines;
mod locate;
mod raw;
mod summary;
#[cfg(test)]
mod tests;
mod validate;

use locate::Locator;
pub use locate::{ConfigError, Problem};
use raw::*;
use validate::Validator;

// ---- loading -----------------------------------------------------------------------------

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            line: None,
            key: None,
            message: format!("cannot read the config file: {e}"),
        }],
    })?;
    parse(&src, path)
}

/// Parses and validates config text; `file` is only used to name it in errors.
pub fn parse(src: &str, file: &Path) -> Result<Config, ConfigError> {
    let loc = Locator::new(src);
    let fail = |problems: Vec<Problem>| ConfigError {
        file: file.to_owned(),
        problems,
    };
    let raw: RawConfig = toml::from_str(src).map_err(|e| {
        let span = e.span();
        let line = span.as_ref().map(|s| loc.line_at(s.start));
        let key = span.as_ref().and_then(|s| loc.key_at(s.start));
        let mut message = e.message().trim().to_owned();
        // toml reports an unknown key without its table; the key path says it already.
        if message.starts_with("unknown field") {
            message = message.replacen("unknown field", "unknown key", 1);
        }
        fail(vec![Problem { line, key, message }])
    })?;
    let mut v = Validator {
        loc: &loc,
        problems: Vec::new(),
    };
    let config = v.config(raw, file);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        v.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(fail(v.problems))
    }
}

impl LaneOutputs {
    /// What a reader drives unless it says otherwise: the standard outputs.
    pub fn standard() -> Self {
        LaneOutputs {
            relay: Some("relay".into()),
            green: Some("green".into()),
            red: Some("red".into()),
            buzzer: Some("buzzer".into()),
        }
    }
}

/// `"0c2e:0b61"` -> (0x0c2e, 0x0b61).
pub fn parse_usb_id(s: &str) -> Option<(u16, u16)> {
    let (v, p) = s.trim().split_once(':')?;
    let hex = |x: &str| {
        (x.len() == 4)
            .then(|| u16::from_str_radix(x, 16).ok())
            .flatten()
    };
    Some((hex(v)?, hex(p)?))
}

/// A duration: whole seconds, or a string like `"90s"`, `"30m"`, `"24h"`, `"7d"`.
pub fn parse_duration(v: &toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().map_err(|_| {
                format!("\"{s}\" is not a duration (like \"24h\", \"30m\", \"90s\")")
            })?;
            let secs = match unit.trim() {
                "s" | "" => n,
                "m" | "min" => n * 60,
                "h" => n * 3600,
                "d" => n * 86_400,
                other => return Err(format!("unknown unit \"{other}\" (use s, m, h or d)")),
            };
            Ok(Duration::from_secs(secs))
        }
        other => Err(format!(
            "must be seconds or a string like \"24h\" (got {other})"
        )),
    }
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// HTTPS, or plain HTTP to a loopback host (a local test server); nothing else.
pub fn check_api_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err("http:// is only allowed for a loopback host (use https://)".into()),
        other => Err(format!("scheme must be https (got \"{other}\")")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The hostname, the default device name.
pub fn default_device_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tiketo-gate".to_owned())
}
