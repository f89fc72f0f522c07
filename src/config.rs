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

use crate::decision::{OfflinePolicy, OfflineRules, Rules};

pub const DEFAULT_PATH: &str = "/etc/tiketo-gate/config.toml";

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub device: DeviceConfig,
    pub api: ApiConfig,
    pub reader: ReaderConfig,
    pub rules: Rules,
    pub offline: OfflineConfig,
    pub store: StoreConfig,
    pub outputs: OutputsConfig,
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
    Serial { path: PathBuf, baud: u32 },
    Stdin,
}

#[derive(Debug, Clone)]
pub struct ReaderConfig {
    pub kind: ReaderKind,
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
    Gpio,
    Sim { log: SimLog },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimLog {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSpec {
    /// BCM GPIO number.
    pub pin: u8,
    pub active_low: bool,
    pub pulse: Duration,
}

#[derive(Debug, Clone)]
pub struct OutputsConfig {
    pub backend: OutputBackendKind,
    pub relay: Option<OutputSpec>,
    pub green: Option<OutputSpec>,
    pub red: Option<OutputSpec>,
    pub buzzer: Option<OutputSpec>,
    pub status: Option<OutputSpec>,
}

// ---- raw, as written in the file -------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    device: RawDevice,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    reader: RawReader,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    offline: RawOffline,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    outputs: RawOutputs,
    #[serde(default)]
    http: RawHttp,
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
    kind: Option<String>,
    path: Option<PathBuf>,
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

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutputs {
    backend: Option<String>,
    sim_log: Option<String>,
    relay: Option<RawOutput>,
    green: Option<RawOutput>,
    red: Option<RawOutput>,
    buzzer: Option<RawOutput>,
    status: Option<RawOutput>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    pin: Option<u64>,
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

    /// The line of a dotted key (the deepest part of it that is written in the file).
    fn line_of(&self, path: &str) -> Option<usize> {
        let mut item: &toml_edit::Item = self.doc.as_ref()?.as_item();
        let mut best = None;
        for part in path.split('.') {
            let found = match item {
                toml_edit::Item::Table(t) => t.get_key_value(part),
                toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => t.get_key_value(part),
                _ => None,
            };
            let Some((key, next)) = found else { break };
            if let Some(span) = key.span().or_else(|| next.span()) {
                best = Some(self.line_at(span.start));
            }
            item = next;
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
        let reader = self.reader(raw.reader);
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
        let outputs = self.outputs(raw.outputs);
        let http = self.http(raw.http);
        Config {
            source: file.to_owned(),
            device,
            api,
            reader,
            rules,
            offline,
            store,
            outputs,
            http,
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

    fn reader(&mut self, raw: RawReader) -> ReaderConfig {
        let kind = match self.choice(
            "reader.kind",
            raw.kind.as_deref(),
            "serial",
            &["serial", "stdin"],
        ) {
            "stdin" => ReaderKind::Stdin,
            _ => {
                let path = raw
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/dev/ttyACM0"));
                if path.as_os_str().is_empty() {
                    self.problem("reader.path", "must not be empty");
                }
                let baud = self.range("reader.baud", raw.baud, 9600, 50, 4_000_000) as u32;
                ReaderKind::Serial { path, baud }
            }
        };
        let max_len = self.range("reader.max_len", raw.max_len, 512, 1, 65_536) as usize;
        let debounce_ms = self.range("reader.debounce_ms", raw.debounce_ms, 1500, 0, 600_000);
        let frame_timeout_ms = self.range(
            "reader.frame_timeout_ms",
            raw.frame_timeout_ms,
            300,
            10,
            60_000,
        );
        ReaderConfig {
            kind,
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
        let backend = match self.choice(
            "outputs.backend",
            raw.backend.as_deref(),
            "gpio",
            &["gpio", "sim"],
        ) {
            "sim" => {
                let log = match raw.sim_log.as_deref() {
                    None | Some("-") => SimLog::Stdout,
                    Some("") => {
                        self.problem("outputs.sim_log", "must be a path or \"-\" for stdout");
                        SimLog::Stdout
                    }
                    Some(p) => SimLog::File(PathBuf::from(p)),
                };
                OutputBackendKind::Sim { log }
            }
            _ => OutputBackendKind::Gpio,
        };
        let mut used: Vec<(u8, &'static str)> = Vec::new();
        let mut spec =
            |v: &mut Self, name: &'static str, raw: Option<RawOutput>, default_pulse: u64| {
                let raw = raw?;
                let key = format!("outputs.{name}");
                let Some(pin) = raw.pin else {
                    v.problem(&key, "needs a pin (BCM GPIO number)");
                    return None;
                };
                let pin = v.range(&format!("{key}.pin"), Some(pin), 0, 0, 27) as u8;
                if let Some((_, other)) = used.iter().find(|(p, _)| *p == pin) {
                    v.problem(
                        &format!("{key}.pin"),
                        format!("GPIO {pin} is already used by outputs.{other}"),
                    );
                }
                used.push((pin, name));
                let pulse_ms = v.range(
                    &format!("{key}.pulse_ms"),
                    raw.pulse_ms,
                    default_pulse,
                    1,
                    600_000,
                );
                Some(OutputSpec {
                    pin,
                    active_low: raw.active_low.unwrap_or(false),
                    pulse: Duration::from_millis(pulse_ms),
                })
            };
        let relay = spec(self, "relay", raw.relay, 3000);
        let green = spec(self, "green", raw.green, 1500);
        let red = spec(self, "red", raw.red, 1500);
        let buzzer = spec(self, "buzzer", raw.buzzer, 300);
        let status = spec(self, "status", raw.status, 1000);
        OutputsConfig {
            backend,
            relay,
            green,
            red,
            buzzer,
            status,
        }
    }
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
        let reader = match &self.reader.kind {
            ReaderKind::Serial { path, baud } => format!("serial {} @ {baud}", path.display()),
            ReaderKind::Stdin => "stdin".to_owned(),
        };
        let o = &self.outputs;
        let outs: Vec<String> = [
            ("relay", o.relay),
            ("green", o.green),
            ("red", o.red),
            ("buzzer", o.buzzer),
            ("status", o.status),
        ]
        .iter()
        .filter_map(|(n, s)| {
            s.map(|s| {
                format!(
                    "{n} {}{}",
                    s.pin,
                    if s.active_low { " active-low" } else { "" }
                )
            })
        })
        .collect();
        let backend = match &o.backend {
            OutputBackendKind::Gpio => "gpio".to_owned(),
            OutputBackendKind::Sim {
                log: SimLog::Stdout,
            } => "sim (stdout)".to_owned(),
            OutputBackendKind::Sim {
                log: SimLog::File(p),
            } => format!("sim ({})", p.display()),
        };
        format!(
            "ok: {}: device \"{}\", reader {reader}, api {} (timeout {} ms), offline policy {}, state {}, outputs {backend} [{}]",
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

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse_str("").unwrap();
        assert_eq!(c.api.url.as_str(), "https://api.tiketo.eu/graphql");
        assert_eq!(c.api.timeout, Duration::from_millis(800));
        assert_eq!(
            c.reader.kind,
            ReaderKind::Serial {
                path: "/dev/ttyACM0".into(),
                baud: 9600
            }
        );
        assert_eq!(c.reader.max_len, 512);
        assert_eq!(c.reader.debounce, Duration::from_millis(1500));
        assert_eq!(c.offline.policy, OfflinePolicy::Cache);
        assert_eq!(c.offline.cache_ttl, Duration::from_secs(86_400));
        assert_eq!(c.offline.max_offline_uses, 1);
        assert!(!c.offline.unknown_accepts);
        assert_eq!(c.store.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.store.max_pending, 1_000_000);
        assert_eq!(c.outputs.backend, OutputBackendKind::Gpio);
        assert!(c.outputs.relay.is_none());
        assert_eq!(c.device.state_dir, PathBuf::from("/var/lib/tiketo-gate"));
    }

    #[test]
    fn the_issue_example_parses() {
        let src = include_str!("../config/example.toml");
        let c = parse_str(src).unwrap();
        let relay = c.outputs.relay.unwrap();
        assert_eq!(
            (relay.pin, relay.active_low, relay.pulse),
            (17, false, Duration::from_millis(3000))
        );
        assert_eq!(c.outputs.green.unwrap().pin, 27);
        assert_eq!(c.outputs.buzzer.unwrap().pulse, Duration::from_millis(300));
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
                "test.toml:6: reader.kind: must be one of \"serial\", \"stdin\" (got \"usb\")"
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
}
