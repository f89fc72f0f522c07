//! The TOML config: parsing, defaults and validation.
//!
//! Every problem names the file, the line and the dotted key, like a compiler message:
//! `/etc/tiketo-gate/config.toml:12: reader.baud: must be between 50 and 4000000 (got 0)`.
//! Unknown keys are errors (a typo must not silently fall back to a default).

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
    pub offline: OfflineConfig,
    pub store: StoreConfig,
    pub outputs: OutputsConfig,
    pub inputs: InputsConfig,
    pub http: HttpConfig,
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
}

#[derive(Debug, Clone)]
pub struct OfflineConfig {
    pub policy: OfflinePolicy,
    pub cache_ttl: Duration,
    pub max_offline_uses: u32,
    /// `offline.unknown = "accept"`.
    pub unknown_accepts: bool,
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

// ---- raw, as written in the file -------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    device: RawDevice,
    #[serde(default)]
    api: RawApi,
    reader: Option<RawReader>,
    readers: Option<Vec<RawReader>>,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    offline: RawOffline,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    outputs: RawOutputs,
    #[serde(default)]
    inputs: RawInputs,
    #[serde(default)]
    http: RawHttp,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInputs {
    exit_button: Option<RawInput>,
    door_sensor: Option<RawInput>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInput {
    pin: Option<u64>,
    line: Option<String>,
    chip: Option<String>,
    offset: Option<u64>,
    active_low: Option<bool>,
    bias: Option<String>,
    debounce_ms: Option<u64>,
    /// exit_button only.
    relay: Option<String>,
    /// door_sensor only.
    held_open_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    admin_token: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    retention_days: Option<u64>,
    max_pending: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: Option<String>,
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    url: Option<String>,
    token_file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReader {
    name: Option<String>,
    kind: Option<String>,
    direction: Option<String>,
    outputs: Option<RawLaneOutputs>,
    path: Option<PathBuf>,
    usb_id: Option<String>,
    hid_source: Option<String>,
    layout: Option<String>,
    grab: Option<bool>,
    baud: Option<u64>,
    max_len: Option<u64>,
    debounce_ms: Option<u64>,
    frame_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    projects: Vec<String>,
    #[serde(default)]
    templates: Vec<String>,
    reward_points: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOffline {
    policy: Option<String>,
    cache_ttl: Option<toml::Value>,
    max_offline_uses: Option<u64>,
    unknown: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawLaneOutputs {
    relay: Option<String>,
    green: Option<String>,
    red: Option<String>,
    buzzer: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RawOutputs {
    backend: Option<String>,
    sim_log: Option<String>,
    sim_inputs: Option<String>,
    chip: Option<String>,
    /// Every other key: an output (a table), checked by the validator.
    #[serde(flatten)]
    lines: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    pin: Option<u64>,
    line: Option<String>,
    chip: Option<String>,
    offset: Option<u64>,
    active_low: Option<bool>,
    pulse_ms: Option<u64>,
}

// ---- errors ------------------------------------------------------------------------------

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

/// Everything wrong with a config file, one problem a line.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
            if let Some(key) = &p.key {
                write!(f, "{key}: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where keys are in the source text, for naming lines.
struct Locator<'a> {
    src: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    fn new(src: &'a str) -> Self {
        Locator {
            src,
            doc: toml_edit::Document::parse(src).ok(),
        }
    }

    fn line_at(&self, offset: usize) -> usize {
        let offset = offset.min(self.src.len());
        self.src.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The line of a dotted key (the deepest part of it that is written in the file). A part
    /// may index an array of tables: `readers[1].path`.
    fn line_of(&self, path: &str) -> Option<usize> {
        enum At<'d> {
            Item(&'d toml_edit::Item),
            Value(&'d toml_edit::Value),
            Table(&'d toml_edit::Table),
        }
        fn child<'d>(at: &At<'d>, name: &str) -> Option<(Option<std::ops::Range<usize>>, At<'d>)> {
            let table: Option<&toml_edit::Table> = match at {
                At::Item(toml_edit::Item::Table(t)) => Some(t),
                At::Table(t) => Some(t),
                _ => None,
            };
            if let Some(t) = table {
                let (k, v) = t.get_key_value(name)?;
                return Some((k.span().or_else(|| v.span()), At::Item(v)));
            }
            let inline = match at {
                At::Item(toml_edit::Item::Value(toml_edit::Value::InlineTable(t)))
                | At::Value(toml_edit::Value::InlineTable(t)) => t,
                _ => return None,
            };
            let (k, v) = inline.get_key_value(name)?;
            Some((k.span().or_else(|| v.span()), At::Item(v)))
        }
        fn index<'d>(at: &At<'d>, i: usize) -> Option<(Option<std::ops::Range<usize>>, At<'d>)> {
            match at {
                At::Item(toml_edit::Item::ArrayOfTables(a)) => {
                    let t = a.get(i)?;
                    Some((t.span(), At::Table(t)))
                }
                At::Item(toml_edit::Item::Value(toml_edit::Value::Array(a)))
                | At::Value(toml_edit::Value::Array(a)) => {
                    let v = a.get(i)?;
                    Some((v.span(), At::Value(v)))
                }
                _ => None,
            }
        }
        let mut at = At::Item(self.doc.as_ref()?.as_item());
        let mut best = None;
        for part in path.split('.') {
            let (name, idx) = match part.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            let Some((span, next)) = child(&at, name) else {
                break;
            };
            if let Some(span) = span {
                best = Some(self.line_at(span.start));
            }
            at = next;
            if let Some(i) = idx {
                let Some((span, next)) = index(&at, i) else {
                    break;
                };
                if let Some(span) = span {
                    best = Some(self.line_at(span.start));
                }
                at = next;
            }
        }
        best
    }

    /// The dotted key whose text contains `offset`, if any.
    fn key_at(&self, offset: usize) -> Option<String> {
        fn children(item: &toml_edit::Item) -> Vec<(&toml_edit::Key, &toml_edit::Item)> {
            match item {
                toml_edit::Item::Table(t) => {
                    t.iter().filter_map(|(k, _)| t.get_key_value(k)).collect()
                }
                toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
                    t.iter().filter_map(|(k, _)| t.get_key_value(k)).collect()
                }
                _ => Vec::new(),
            }
        }
        fn walk(item: &toml_edit::Item, offset: usize, prefix: &str) -> Option<String> {
            // `[[readers]]`: look into each table as `readers[N]`.
            if let toml_edit::Item::ArrayOfTables(a) = item {
                for (i, t) in a.iter().enumerate() {
                    let name = format!("{prefix}[{i}]");
                    for (k, _) in t.iter() {
                        let Some((key, value)) = t.get_key_value(k) else {
                            continue;
                        };
                        let full = format!("{name}.{}", key.get());
                        if let Some(deeper) = walk(value, offset, &full) {
                            return Some(deeper);
                        }
                        let in_key = key.span().is_some_and(|s| s.contains(&offset));
                        let in_value = value
                            .span()
                            .is_some_and(|s| s.contains(&offset) || s.end == offset);
                        if in_key || in_value {
                            return Some(full);
                        }
                    }
                }
                return None;
            }
            let mut found = None;
            for (key, value) in children(item) {
                let name = if prefix.is_empty() {
                    key.get().to_owned()
                } else {
                    format!("{prefix}.{}", key.get())
                };
                if let Some(deeper) = walk(value, offset, &name) {
                    return Some(deeper);
                }
                let in_key = key.span().is_some_and(|s| s.contains(&offset));
                let in_value = value
                    .span()
                    .is_some_and(|s| s.contains(&offset) || s.end == offset);
                if in_key || in_value {
                    found = Some(name);
                }
            }
            found
        }
        walk(self.doc.as_ref()?.as_item(), offset, "")
    }
}

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

struct Validator<'a> {
    loc: &'a Locator<'a>,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: self.loc.line_of(key),
            key: Some(key.to_owned()),
            message: message.into(),
        });
    }

    fn range(&mut self, key: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> u64 {
        let v = value.unwrap_or(default);
        if v < min || v > max {
            self.problem(key, format!("must be between {min} and {max} (got {v})"));
            default
        } else {
            v
        }
    }

    fn choice<'c>(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: &'c str,
        allowed: &[&'c str],
    ) -> &'c str {
        match value {
            None => default,
            Some(v) => match allowed.iter().find(|a| **a == v) {
                Some(a) => a,
                None => {
                    self.problem(
                        key,
                        format!("must be one of {} (got \"{v}\")", quoted(allowed)),
                    );
                    default
                }
            },
        }
    }

    fn config(&mut self, raw: RawConfig, file: &Path) -> Config {
        let device = self.device(raw.device);
        let api = self.api(raw.api);
        let multi_reader = raw.readers.is_some();
        let outputs = self.outputs(raw.outputs);
        let readers = self.readers(raw.reader, raw.readers, &outputs);
        let rules = self.rules(raw.rules);
        let offline = self.offline(raw.offline);
        let store = StoreConfig {
            retention: Duration::from_secs(
                86_400
                    * self.range(
                        "store.retention_days",
                        raw.store.retention_days,
                        30,
                        1,
                        3650,
                    ),
            ),
            max_pending: self.range(
                "store.max_pending",
                raw.store.max_pending,
                1_000_000,
                1,
                100_000_000,
            ),
        };
        let inputs = self.inputs(raw.inputs, &outputs);
        self.check_wiring(&readers, &outputs, &inputs);
        let http = self.http(raw.http);
        Config {
            source: file.to_owned(),
            device,
            api,
            readers,
            multi_reader,
            rules,
            offline,
            store,
            outputs,
            inputs,
            http,
        }
    }

    /// `[reader]` or `[[readers]]` (not both); none at all: one serial reader with defaults.
    fn readers(
        &mut self,
        single: Option<RawReader>,
        many: Option<Vec<RawReader>>,
        outputs: &OutputsConfig,
    ) -> Vec<ReaderConfig> {
        let readers: Vec<ReaderConfig> = match (single, many) {
            (Some(_), Some(_)) => {
                self.problem(
                    "readers",
                    "use either [reader] (one reader) or [[readers]] (several), not both",
                );
                Vec::new()
            }
            (Some(r), None) => vec![self.reader(r, "reader".into(), false, outputs)],
            (None, None) => {
                vec![self.reader(RawReader::default(), "reader".into(), false, outputs)]
            }
            (None, Some(list)) => {
                if list.is_empty() {
                    self.problem("readers", "needs at least one reader");
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, r)| self.reader(r, format!("readers[{i}]"), true, outputs))
                    .collect()
            }
        };
        for (i, r) in readers.iter().enumerate() {
            if let Some(first) = readers[..i].iter().find(|o| o.name == r.name) {
                self.problem(
                    &format!("{}.name", r.key),
                    format!("\"{}\" is already the name of {}", r.name, first.key),
                );
            }
            if let Some(p) = r.kind.path() {
                let same = readers[..i].iter().find(|o| o.kind.path() == Some(p));
                if let Some(o) = same {
                    self.problem(
                        &format!("{}.path", r.key),
                        format!("{} is already read by {}", p.display(), o.key),
                    );
                }
            }
            if let ReaderKind::Hid {
                source: HidSource::UsbId { vendor, product },
                ..
            } = &r.kind
            {
                let same = readers[..i].iter().find(|o| {
                    matches!(&o.kind, ReaderKind::Hid { source: HidSource::UsbId { vendor: v, product: p }, .. } if v == vendor && p == product)
                });
                if let Some(o) = same {
                    self.problem(
                        &format!("{}.usb_id", r.key),
                        format!(
                            "{vendor:04x}:{product:04x} is already read by {} (two readers of one model: use their /dev/input/by-path/... links)",
                            o.key
                        ),
                    );
                }
            }
            if r.kind == ReaderKind::Stdin
                && readers[..i].iter().any(|o| o.kind == ReaderKind::Stdin)
            {
                self.problem(&format!("{}.kind", r.key), "only one reader can read stdin");
            }
        }
        readers
    }

    /// Every output a reader or the exit button names exists; every output is used.
    fn check_wiring(
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
    fn raw_output(&mut self, key: &str, t: &toml::Table) -> Option<RawOutput> {
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
                        format!("unknown key `{k}`, expected one of `pin`, `line`, `chip`, `offset`, `active_low`, `pulse_ms`"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(r)
    }

    /// A line: `pin` (BCM number), `line` (a name, gpiod), or `chip` + `offset` (gpiod).
    fn line_ref(
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

    fn inputs(&mut self, raw: RawInputs, outputs: &OutputsConfig) -> InputsConfig {
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

    fn http(&mut self, raw: RawHttp) -> HttpConfig {
        let listen = raw
            .listen
            .as_deref()
            .and_then(|l| match l.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.problem(
                        "http.listen",
                        format!(
                            "must be an address and port like \"127.0.0.1:9180\" (got \"{l}\")"
                        ),
                    );
                    None
                }
            });
        let admin_token = match raw.admin_token {
            Some(t) if t.trim().len() < 12 => {
                self.problem(
                    "http.admin_token",
                    "must be at least 12 characters (it opens the door)",
                );
                None
            }
            Some(t) => Some(crate::mask::Secret::new(t.trim())),
            None => None,
        };
        if admin_token.is_some() && listen.is_none() {
            self.problem("http.admin_token", "needs http.listen");
        }
        HttpConfig {
            listen,
            admin_token,
        }
    }

    fn offline(&mut self, raw: RawOffline) -> OfflineConfig {
        let policy = match self.choice(
            "offline.policy",
            raw.policy.as_deref(),
            "cache",
            &["reject", "accept", "cache"],
        ) {
            "accept" => OfflinePolicy::Accept,
            "reject" => OfflinePolicy::Reject,
            _ => OfflinePolicy::Cache,
        };
        let default_ttl = Duration::from_secs(24 * 3600);
        let cache_ttl = match &raw.cache_ttl {
            None => default_ttl,
            Some(v) => match parse_duration(v) {
                Ok(d) if d >= Duration::from_secs(1) => d,
                Ok(_) => {
                    self.problem("offline.cache_ttl", "must be at least 1s");
                    default_ttl
                }
                Err(e) => {
                    self.problem("offline.cache_ttl", e);
                    default_ttl
                }
            },
        };
        let max_offline_uses = self.range(
            "offline.max_offline_uses",
            raw.max_offline_uses,
            1,
            1,
            1_000_000,
        ) as u32;
        let unknown_accepts = self.choice(
            "offline.unknown",
            raw.unknown.as_deref(),
            "reject",
            &["reject", "accept"],
        ) == "accept";
        OfflineConfig {
            policy,
            cache_ttl,
            max_offline_uses,
            unknown_accepts,
        }
    }

    fn device(&mut self, raw: RawDevice) -> DeviceConfig {
        let name = match raw.name {
            Some(n) if n.trim().is_empty() => {
                self.problem(
                    "device.name",
                    "must not be empty (leave it out to use the hostname)",
                );
                default_device_name()
            }
            Some(n) => n,
            None => default_device_name(),
        };
        let state_dir = raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/tiketo-gate"));
        if state_dir.as_os_str().is_empty() {
            self.problem("device.state_dir", "must not be empty");
        }
        DeviceConfig { name, state_dir }
    }

    fn api(&mut self, raw: RawApi) -> ApiConfig {
        const DEFAULT_URL: &str = "https://api.tiketo.eu/graphql";
        let url_text = raw.url.as_deref().unwrap_or(DEFAULT_URL);
        let url = match check_api_url(url_text) {
            Ok(u) => u,
            Err(msg) => {
                self.problem("api.url", msg);
                Url::parse(DEFAULT_URL).expect("default url parses")
            }
        };
        let timeout_ms = self.range("api.timeout_ms", raw.timeout_ms, 800, 50, 60_000);
        ApiConfig {
            url,
            token_file: raw
                .token_file
                .unwrap_or_else(|| PathBuf::from("/etc/tiketo-gate/token")),
            timeout: Duration::from_millis(timeout_ms),
            ca_file: raw.ca_file,
        }
    }

    fn reader(
        &mut self,
        raw: RawReader,
        key: String,
        multi: bool,
        wired: &OutputsConfig,
    ) -> ReaderConfig {
        let k = |s: &str| format!("{key}.{s}");
        let kind_name = self.choice(
            &k("kind"),
            raw.kind.as_deref(),
            "serial",
            &["serial", "stdin", "hid"],
        );
        // Keys that belong to another kind are mistakes, not silently ignored settings.
        let only = |v: &mut Self, name: &str, given: bool, kinds: &str| {
            if given {
                v.problem(&k(name), format!("only for kind = {kinds}"));
            }
        };
        let kind = match kind_name {
            "stdin" => {
                only(self, "path", raw.path.is_some(), "\"serial\" or \"hid\"");
                only(self, "baud", raw.baud.is_some(), "\"serial\"");
                ReaderKind::Stdin
            }
            "hid" => {
                only(self, "baud", raw.baud.is_some(), "\"serial\"");
                let layout = match raw.layout.as_deref() {
                    None => crate::hid::Layout::Us,
                    Some(l) => match crate::hid::Layout::parse(l) {
                        Some(l) => l,
                        None => {
                            self.problem(
                                &k("layout"),
                                format!(
                                    "must be one of {} (got \"{l}\")",
                                    quoted(crate::hid::Layout::NAMES)
                                ),
                            );
                            crate::hid::Layout::Us
                        }
                    },
                };
                let recording = self.choice(
                    &k("hid_source"),
                    raw.hid_source.as_deref(),
                    "device",
                    &["device", "recording"],
                ) == "recording";
                let source = match (raw.path.clone(), raw.usb_id.as_deref()) {
                    (Some(_), Some(_)) => {
                        self.problem(&k("usb_id"), "give either path or usb_id, not both");
                        HidSource::Path(PathBuf::new())
                    }
                    (Some(p), None) => {
                        if p.as_os_str().is_empty() {
                            self.problem(&k("path"), "must not be empty");
                        }
                        if recording {
                            HidSource::Recording(p)
                        } else {
                            HidSource::Path(p)
                        }
                    }
                    (None, Some(id)) => {
                        if recording {
                            self.problem(&k("usb_id"), "a recording is read from a path");
                        }
                        match parse_usb_id(id) {
                            Some((vendor, product)) => HidSource::UsbId { vendor, product },
                            None => {
                                self.problem(
                                    &k("usb_id"),
                                    format!("must be vendor:product in hex, like \"0c2e:0b61\" (got \"{id}\")"),
                                );
                                HidSource::Path(PathBuf::new())
                            }
                        }
                    }
                    (None, None) => {
                        self.problem(
                            &key,
                            "a hid reader needs a path (/dev/input/by-id/...-event-kbd) or a usb_id",
                        );
                        HidSource::Path(PathBuf::new())
                    }
                };
                ReaderKind::Hid {
                    source,
                    layout,
                    grab: raw.grab.unwrap_or(true),
                }
            }
            _ => {
                let path = raw
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/dev/ttyACM0"));
                if path.as_os_str().is_empty() {
                    self.problem(&k("path"), "must not be empty");
                }
                let baud = self.range(&k("baud"), raw.baud, 9600, 50, 4_000_000) as u32;
                ReaderKind::Serial { path, baud }
            }
        };
        if kind_name != "hid" {
            let hid = "\"hid\"";
            only(self, "layout", raw.layout.is_some(), hid);
            only(self, "usb_id", raw.usb_id.is_some(), hid);
            only(self, "grab", raw.grab.is_some(), hid);
            only(self, "hid_source", raw.hid_source.is_some(), hid);
        }
        let name = match raw.name {
            Some(n) if n.trim().is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) => {
                self.problem(&k("name"), "must be 1 to 64 printable characters");
                key.clone()
            }
            Some(n) => n,
            None if multi => {
                self.problem(
                    &key,
                    "needs a name (shown in logs, status and each scan event)",
                );
                key.clone()
            }
            None => "reader".into(),
        };
        let direction = match raw.direction.as_deref() {
            None => Direction::Entry,
            Some(d) => Direction::parse(d).unwrap_or_else(|| {
                self.problem(
                    &k("direction"),
                    format!("must be one of \"entry\", \"exit\" (got \"{d}\")"),
                );
                Direction::Entry
            }),
        };
        let outputs = match raw.outputs {
            // Unless it says otherwise, a reader drives the standard outputs that are wired.
            None => {
                let std = LaneOutputs::standard();
                let wired = |o: Option<String>| o.filter(|n| wired.get(n).is_some());
                LaneOutputs {
                    relay: wired(std.relay),
                    green: wired(std.green),
                    red: wired(std.red),
                    buzzer: wired(std.buzzer),
                }
            }
            Some(o) => LaneOutputs {
                relay: o.relay,
                green: o.green,
                red: o.red,
                buzzer: o.buzzer,
            },
        };
        let max_len = self.range(&k("max_len"), raw.max_len, 512, 1, 65_536) as usize;
        let debounce_ms = self.range(&k("debounce_ms"), raw.debounce_ms, 1500, 0, 600_000);
        let frame_timeout_ms = self.range(
            &k("frame_timeout_ms"),
            raw.frame_timeout_ms,
            300,
            10,
            60_000,
        );
        ReaderConfig {
            name,
            key,
            kind,
            direction,
            outputs,
            max_len,
            debounce: Duration::from_millis(debounce_ms),
            frame_timeout: Duration::from_millis(frame_timeout_ms),
        }
    }

    fn rules(&mut self, raw: RawRules) -> Rules {
        for (key, list) in [
            ("rules.projects", &raw.projects),
            ("rules.templates", &raw.templates),
        ] {
            if list.iter().any(|s| s.trim().is_empty()) {
                self.problem(key, "ids must not be empty strings");
            }
        }
        let reward_points = raw.reward_points.unwrap_or(0);
        if !(0..=i32::MAX as i64).contains(&reward_points) {
            self.problem(
                "rules.reward_points",
                format!("must be between 0 and {} (got {reward_points})", i32::MAX),
            );
        }
        Rules {
            projects: raw.projects,
            templates: raw.templates,
            reward_points: reward_points.clamp(0, i32::MAX as i64),
        }
    }

    fn outputs(&mut self, raw: RawOutputs) -> OutputsConfig {
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
            lines.push((
                name.clone(),
                OutputSpec {
                    line,
                    active_low: raw.active_low.unwrap_or(false),
                    pulse: Duration::from_millis(pulse_ms),
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
        format!(
            "ok: {}: device \"{}\", {reader}, api {} (timeout {} ms), offline policy {}, state {}, outputs {backend} [{}]{inputs}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(src: &str) -> Result<Config, ConfigError> {
        parse(src, Path::new("test.toml"))
    }

    fn err(src: &str) -> String {
        parse_str(src).expect_err("should fail").to_string()
    }

    /// Each source fails with (at least) each of its messages.
    fn expect_errors(cases: &[(&str, &[&str])]) {
        for (src, wanted) in cases {
            let e = err(src);
            for w in *wanted {
                assert!(e.contains(w), "{src:?}: no {w:?} in:\n{e}");
            }
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse_str("").unwrap();
        assert_eq!(c.api.url.as_str(), "https://api.tiketo.eu/graphql");
        assert_eq!(c.api.timeout, Duration::from_millis(800));
        assert_eq!(
            c.readers[0].kind,
            ReaderKind::Serial {
                path: "/dev/ttyACM0".into(),
                baud: 9600
            }
        );
        assert_eq!(c.readers.len(), 1);
        assert_eq!(c.readers[0].name, "reader");
        assert_eq!(c.readers[0].direction, Direction::Entry);
        assert_eq!(
            c.readers[0].outputs,
            LaneOutputs::default(),
            "nothing wired"
        );
        assert_eq!(c.readers[0].max_len, 512);
        assert_eq!(c.readers[0].debounce, Duration::from_millis(1500));
        assert_eq!(c.offline.policy, OfflinePolicy::Cache);
        assert_eq!(c.offline.cache_ttl, Duration::from_secs(86_400));
        assert_eq!(c.offline.max_offline_uses, 1);
        assert!(!c.offline.unknown_accepts);
        assert_eq!(c.store.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.store.max_pending, 1_000_000);
        assert_eq!(c.outputs.backend, OutputBackendKind::Gpio);
        assert!(c.outputs.lines.is_empty());
        assert_eq!(c.inputs, InputsConfig::default());
        assert_eq!(c.device.state_dir, PathBuf::from("/var/lib/tiketo-gate"));
    }

    #[test]
    fn the_issue_example_parses() {
        let src = include_str!("../config/example.toml");
        let c = parse_str(src).unwrap();
        let relay = c.outputs.get("relay").unwrap();
        assert_eq!(
            (&relay.line, relay.active_low, relay.pulse),
            (&LineRef::Pin(17), false, Duration::from_millis(3000))
        );
        assert_eq!(c.outputs.get("green").unwrap().line, LineRef::Pin(27));
        assert_eq!(
            c.outputs.get("buzzer").unwrap().pulse,
            Duration::from_millis(300)
        );
        assert_eq!(c.readers[0].outputs, LaneOutputs::standard());
        assert!(c
            .summary()
            .starts_with("ok: test.toml: device \"front-door\""));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[api]\nurl = \"https://x.example/graphql\"\n\n[reader]\nbuad = 9600\n");
        assert!(
            e.contains("test.toml:5: reader.buad: unknown key `buad`"),
            "{e}"
        );
        let e = err("[outputs]\nrelay = { pin = 17, pulsems = 3 }\n");
        assert!(
            e.contains(":2:") && e.contains("outputs.relay.pulsems"),
            "{e}"
        );
        let e = err("[rules]\nprojects = []\n[mystery]\nx = 1\n");
        assert!(e.contains(":3: mystery: unknown key"), "{e}");
    }

    #[test]
    fn wrong_types_name_key_and_line() {
        let e = err("[reader]\nkind = \"serial\"\nbaud = \"fast\"\n");
        assert!(e.starts_with("test.toml:3: reader.baud:"), "{e}");
        let e = err("[outputs]\nrelay = { pin = \"17\" }\n");
        assert!(e.contains(":2:") && e.contains("outputs.relay.pin"), "{e}");
    }

    #[test]
    fn bad_values_are_all_reported_with_lines() {
        let src = "[api]\nurl = \"http://example.com/graphql\"\ntimeout_ms = 0\n\n[reader]\nkind = \"usb\"\nmax_len = 0\n\n[offline]\npolicy = \"maybe\"\n\n[outputs]\nbackend = \"sim\"\nrelay = { pin = 40 }\ngreen = { pin = 27 }\nred = { pin = 27 }\nbuzzer = { active_low = true }\n";
        let e = err(src);
        let lines: Vec<&str> = e.lines().collect();
        assert!(
            lines.iter().any(|l| l
                .starts_with("test.toml:2: api.url: http:// is only allowed for a loopback host")),
            "{e}"
        );
        assert!(
            lines.iter().any(|l| l
                .starts_with("test.toml:3: api.timeout_ms: must be between 50 and 60000 (got 0)")),
            "{e}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(
                "test.toml:6: reader.kind: must be one of \"serial\", \"stdin\", \"hid\" (got \"usb\")"
            )),
            "{e}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("test.toml:7: reader.max_len:")),
            "{e}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("test.toml:10: offline.policy:")),
            "{e}"
        );
        assert!(
            lines.iter().any(|l| l
                .starts_with("test.toml:14: outputs.relay.pin: must be between 0 and 27 (got 40)")),
            "{e}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(
                "test.toml:16: outputs.red.pin: GPIO 27 is already used by outputs.green"
            )),
            "{e}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("test.toml:17: outputs.buzzer: needs a pin")),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let e = err("[api]\nurl = \"https://x\"\ntimeout_ms = = 3\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
    }

    #[test]
    fn loopback_http_is_allowed_other_http_is_not() {
        for ok in [
            "http://127.0.0.1:8787/graphql",
            "http://localhost/graphql",
            "http://[::1]:9/graphql",
            "http://127.8.9.1/g",
            "https://api.tiketo.eu/graphql",
        ] {
            assert!(check_api_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/graphql",
            "http://api.tiketo.eu/graphql",
            "ftp://x/y",
            "not a url",
            "http://localhost.evil.com/",
        ] {
            assert!(check_api_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offline_and_store_keys() {
        let c = parse_str("[offline]\npolicy = \"accept\"\ncache_ttl = \"90m\"\nmax_offline_uses = 3\nunknown = \"accept\"\n[store]\nretention_days = 7\nmax_pending = 10\n").unwrap();
        assert_eq!(c.offline.policy, OfflinePolicy::Accept);
        assert_eq!(c.offline.cache_ttl, Duration::from_secs(5400));
        assert_eq!(c.offline.max_offline_uses, 3);
        assert!(c.offline.unknown_accepts);
        assert_eq!(c.store.max_pending, 10);
        assert_eq!(
            parse_str("[offline]\ncache_ttl = 3600\n")
                .unwrap()
                .offline
                .cache_ttl,
            Duration::from_secs(3600)
        );
        let e = err("[offline]\ncache_ttl = \"soon\"\n");
        assert!(e.starts_with("test.toml:2: offline.cache_ttl:"), "{e}");
        let e = err("[offline]\nunknown = \"maybe\"\n");
        assert!(e.starts_with("test.toml:2: offline.unknown:"), "{e}");
    }

    #[test]
    fn http_keys() {
        let c = parse_str(
            "[http]\nlisten = \"127.0.0.1:9180\"\nadmin_token = \"correct-horse-battery\"\n",
        )
        .unwrap();
        assert_eq!(c.http.listen.unwrap().port(), 9180);
        assert_eq!(
            c.http.admin_token.unwrap().expose(),
            "correct-horse-battery"
        );
        assert!(parse_str("").unwrap().http.listen.is_none());
        let e = err("[http]\nlisten = \"localhost\"\n");
        assert!(e.starts_with("test.toml:2: http.listen:"), "{e}");
        let e = err("[http]\nlisten = \"127.0.0.1:1\"\nadmin_token = \"short\"\n");
        assert!(e.starts_with("test.toml:3: http.admin_token:"), "{e}");
        assert!(!e.contains("short"), "the token is not echoed: {e}");
    }

    #[test]
    fn dotted_and_inline_tables_are_located() {
        let src = "outputs.backend = \"sim\"\n\n[outputs.relay]\npin = 99\n";
        let e = err(src);
        assert!(e.starts_with("test.toml:4: outputs.relay.pin:"), "{e}");
    }

    const TWO_LANES: &str = r#"
[outputs]
backend = "sim"
relay = { pin = 17 }
green = { pin = 27 }
red = { pin = 22 }
buzzer = { pin = 23 }
status = { pin = 24 }
relay_exit = { pin = 5, active_low = true, pulse_ms = 2000 }
green_exit = { pin = 6 }

[[readers]]
name = "entrance"
kind = "serial"
path = "/dev/serial/by-id/usb-A"

[[readers]]
name = "exit"
kind = "hid"
usb_id = "0C2E:0b61"
layout = "de"
direction = "exit"
debounce_ms = 500
outputs = { relay = "relay_exit", green = "green_exit", buzzer = "buzzer" }

[inputs]
exit_button = { pin = 25, active_low = true, bias = "pull-up" }
door_sensor = { pin = 16, held_open_secs = 45 }
"#;

    #[test]
    fn several_readers_with_their_own_outputs_and_inputs() {
        let c = parse_str(TWO_LANES).unwrap();
        assert!(c.multi_reader);
        assert_eq!(c.readers.len(), 2);
        let (a, b) = (&c.readers[0], &c.readers[1]);
        assert_eq!(
            (a.name.as_str(), a.direction),
            ("entrance", Direction::Entry)
        );
        assert_eq!(a.outputs, LaneOutputs::standard());
        assert_eq!((b.name.as_str(), b.direction), ("exit", Direction::Exit));
        assert_eq!(
            b.kind,
            ReaderKind::Hid {
                source: HidSource::UsbId {
                    vendor: 0x0c2e,
                    product: 0x0b61
                },
                layout: crate::hid::Layout::De,
                grab: true
            }
        );
        assert_eq!(b.debounce, Duration::from_millis(500));
        assert_eq!(b.outputs.relay.as_deref(), Some("relay_exit"));
        assert_eq!(b.outputs.red, None, "left out: this lane has no red LED");
        let names: Vec<&str> = c.outputs.lines.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "relay",
                "green",
                "red",
                "buzzer",
                "status",
                "green_exit",
                "relay_exit"
            ]
        );
        assert_eq!(
            c.outputs.get("relay_exit").unwrap().pulse,
            Duration::from_millis(2000)
        );
        let button = c.inputs.exit_button.as_ref().unwrap();
        assert_eq!(button.relay, "relay");
        assert_eq!(button.input.bias, Bias::PullUp);
        assert!(button.input.active_low);
        assert_eq!(button.input.debounce, Duration::from_millis(50));
        let door = c.inputs.door_sensor.as_ref().unwrap();
        assert_eq!(door.held_open, Duration::from_secs(45));
        let sum = c.summary();
        assert!(sum.contains("readers [entrance (serial /dev/serial/by-id/usb-A @ 9600, entry, outputs relay+green+red+buzzer); exit (hid usb 0c2e:0b61 (de layout), exit, outputs relay_exit+green_exit+buzzer)]"), "{sum}");
        assert!(
            sum.contains(
                "inputs [exit button GPIO 25 -> relay, door sensor GPIO 16 (held open after 45 s)]"
            ),
            "{sum}"
        );
    }

    #[test]
    fn reader_mistakes_name_the_entry_and_line() {
        let bad = TWO_LANES
            .replace("direction = \"exit\"", "direction = \"out\"")
            .replace("relay = \"relay_exit\"", "relay = \"relay_x\"")
            .replace("name = \"exit\"", "name = \"entrance\"");
        let e = err(&bad);
        let lines: Vec<&str> = e.lines().collect();
        assert!(
            lines.iter().any(|l| l.starts_with(
                "test.toml:18: readers[1].name: \"entrance\" is already the name of readers[0]"
            )),
            "{e}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("test.toml:22: readers[1].direction: must be one of \"entry\", \"exit\" (got \"out\")")),
            "{e}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(
                "test.toml:24: readers[1].outputs.relay: no output \"relay_x\" in [outputs]"
            )),
            "{e}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l
                    .starts_with("test.toml:9: outputs.relay_exit: no reader drives this output")),
            "{e}"
        );
        // Both forms at once, a nameless entry, a serial key on a HID reader, a stdin twice,
        // HID mistakes, one port or one USB id read twice.
        let cases: &[(&str, &[&str])] = &[
            (
                "[reader]\nkind = \"stdin\"\n[[readers]]\nname = \"a\"\n",
                &["use either [reader]"],
            ),
            (
                "[[readers]]\nkind = \"stdin\"\n[[readers]]\nname = \"b\"\nkind = \"stdin\"\n",
                &[
                    "test.toml:1: readers[0]: needs a name",
                    "test.toml:5: readers[1].kind: only one reader can read stdin",
                ],
            ),
            (
                "[reader]\nkind = \"hid\"\npath = \"/dev/input/event3\"\nbaud = 9600\n",
                &["test.toml:4: reader.baud: only for kind = \"serial\""],
            ),
            (
                "[reader]\nkind = \"hid\"\n",
                &["test.toml:1: reader: a hid reader needs a path"],
            ),
            (
                "[reader]\nkind = \"hid\"\nusb_id = \"zz:1\"\n",
                &["test.toml:3: reader.usb_id: must be vendor:product"],
            ),
            (
                "[reader]\nkind = \"hid\"\npath = \"/dev/input/event3\"\nlayout = \"fr\"\n",
                &["test.toml:4: reader.layout: must be one of \"us\", \"de\" (got \"fr\")"],
            ),
            (
                "[[readers]]\nname = \"a\"\npath = \"/dev/ttyACM0\"\n[[readers]]\nname = \"b\"\npath = \"/dev/ttyACM0\"\n",
                &["test.toml:6: readers[1].path: /dev/ttyACM0 is already read by readers[0]"],
            ),
            (
                "[[readers]]\nname = \"a\"\nkind = \"hid\"\nusb_id = \"0c2e:0b61\"\n[[readers]]\nname = \"b\"\nkind = \"hid\"\nusb_id = \"0C2E:0B61\"\n",
                &["test.toml:8: readers[1].usb_id: 0c2e:0b61 is already read by readers[0]"],
            ),
        ];
        expect_errors(cases);
        // The single-reader form keeps working, with a direction if wanted.
        let c = parse_str("[reader]\nkind = \"hid\"\npath = \"/dev/input/by-id/usb-scanner-event-kbd\"\ndirection = \"exit\"\n").unwrap();
        assert!(!c.multi_reader);
        assert_eq!(c.readers[0].direction, Direction::Exit);
        assert!(
            c.summary()
                .contains("reader hid /dev/input/by-id/usb-scanner-event-kbd (us layout) (exit)"),
            "{}",
            c.summary()
        );
    }

    #[test]
    fn the_two_lanes_example_parses() {
        let c = parse_str(include_str!("../config/two-lanes.toml")).unwrap();
        assert_eq!(c.readers.len(), 2);
        assert_eq!(c.readers[1].direction, Direction::Exit);
        assert!(c.inputs.exit_button.is_some() && c.inputs.door_sensor.is_some());
        assert_eq!(c.outputs.backend, OutputBackendKind::Gpiod);
    }

    #[test]
    fn gpiod_lines_and_input_mistakes() {
        let c = parse_str("[outputs]\nbackend = \"gpiod\"\nchip = \"gpiochip4\"\nrelay = { line = \"GPIO17\", active_low = true }\ngreen = { chip = \"gpiochip0\", offset = 27 }\nred = { pin = 22 }\n[inputs]\ndoor_sensor = { line = \"GPIO5\", bias = \"pull-up\", active_low = true }\n").unwrap();
        assert_eq!(c.outputs.backend, OutputBackendKind::Gpiod);
        assert_eq!(c.outputs.chip, "gpiochip4");
        assert_eq!(
            c.outputs.get("relay").unwrap().line,
            LineRef::Named("GPIO17".into())
        );
        assert_eq!(
            c.outputs.get("green").unwrap().line,
            LineRef::ChipOffset {
                chip: "gpiochip0".into(),
                offset: 27
            }
        );
        assert!(c.summary().contains("outputs gpiod (gpiochip4) [relay line \"GPIO17\" active-low, green gpiochip0 line 27, red 22]"), "{}", c.summary());
        // Names and chips need gpiod; one way to name a line; inputs cannot share a line.
        expect_errors(&[
            (
                "[outputs]\nrelay = { line = \"GPIO17\" }\n",
                &["test.toml:2: outputs.relay.line: line names and chip offsets need outputs.backend = \"gpiod\""],
            ),
            (
                "[outputs]\nbackend = \"gpiod\"\nrelay = { pin = 17, line = \"GPIO17\" }\n",
                &["test.toml:3: outputs.relay: give one of pin, line, or chip and offset"],
            ),
            (
                "[outputs]\nchip = \"gpiochip0\"\n",
                &["test.toml:2: outputs.chip: only for backend = \"gpiod\""],
            ),
            (
                "[outputs]\nrelay = { pin = 17 }\n[inputs]\nexit_button = { pin = 17, held_open_secs = 3 }\ndoor_sensor = { pin = 5, bias = \"up\" }\n",
                &[
                    "test.toml:4: inputs.exit_button: GPIO 17 is already used by outputs.relay",
                    "test.toml:4: inputs.exit_button.held_open_secs: only for inputs.door_sensor",
                    "test.toml:5: inputs.door_sensor.bias: must be one of",
                ],
            ),
            (
                "[outputs]\nrelay = { pin = 17 }\n[inputs]\nexit_button = { pin = 6, relay = \"door2\" }\n",
                &["test.toml:4: inputs.exit_button.relay: the output it releases, \"door2\", is not in [outputs]"],
            ),
            (
                "[outputs]\nbackend = \"sim\"\nlogfile = \"x\"\n",
                &["test.toml:3: outputs.logfile: unknown key"],
            ),
            (
                "[outputs]\nrelay = { pin = 17, pulse = 3 }\n",
                &["test.toml:2: outputs.relay.pulse: unknown key `pulse`"],
            ),
        ]);
        // The old example's sim_log under the gpio backend is still fine.
        assert!(parse_str("[outputs]\nbackend = \"gpio\"\nsim_log = \"-\"\n").is_ok());
    }
}
