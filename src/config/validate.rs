//! Validation: from the raw mirror to [`Config`], every problem collected with its key and line
//! (the device, API, readers, rules, offline, store and HTTP sections; outputs and inputs are in
//! `lines.rs`).

#[allow(unused_imports)]
use super::*;

/// The venue's records' default request budget: 10 `Query.pass` a minute for the whole venue
/// (600 an hour; at AppSync's $4 per million queries, about $0.06 a day per venue).
const DEFAULT_REFRESH_PER_MINUTE: u64 = 10;

/// The venue's topics and the door's own would overlap (one is the other, or holds it).
fn venue_overlaps(venue: &str, door: &str) -> bool {
    venue == door
        || door.starts_with(&format!("{venue}/"))
        || venue.starts_with(&format!("{door}/"))
}

pub(super) struct Validator<'a> {
    pub(super) loc: &'a Locator<'a>,
    pub(super) problems: Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: self.loc.line_of(key),
            key: Some(key.to_owned()),
            message: message.into(),
        });
    }

    pub(super) fn range(
        &mut self,
        key: &str,
        value: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        let v = value.unwrap_or(default);
        if v < min || v > max {
            self.problem(key, format!("must be between {min} and {max} (got {v})"));
            default
        } else {
            v
        }
    }

    pub(super) fn choice<'c>(
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

    pub(super) fn config(&mut self, mut raw: RawConfig, file: &Path) -> Config {
        let hours = self.hours_config(raw.device.timezone.take(), raw.rules.unsynced_clock.take());
        let default_hours = self.hours(
            "rules",
            raw.rules.hours.take(),
            raw.rules.closed_dates.take(),
            &crate::hours::Hours::default(),
        );
        let device = self.device(raw.device);
        let api = self.api(raw.api);
        let multi_reader = raw.readers.is_some();
        let outputs = self.outputs(raw.outputs);
        let readers = self.readers(raw.reader, raw.readers, &outputs, &default_hours);
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
        let mut notes = Vec::new();
        if raw.display.as_ref().is_some_and(|d| d.listen.is_none()) {
            notes.push(
                "[display] has no listen: the guest screen is off (set display.listen, e.g. \"127.0.0.1:9181\")"
                    .to_owned(),
            );
        }
        let display = raw
            .display
            .and_then(|d| self.display(d, &device.name, &readers, http.listen));
        let mqtt = self.mqtt(raw.mqtt, &device.name);
        if mqtt.is_some() {
            // Reader names become topic levels (`<topic>/ha/<reader>/lock`) and command claims.
            for r in &readers {
                if r.name.is_empty() || r.name.contains(['/', '+', '#', '\0']) {
                    self.problem(
                        &format!("{}.name", r.key),
                        format!(
                            "\"{}\" cannot be an MQTT topic level (no / + # with [mqtt])",
                            r.name
                        ),
                    );
                }
            }
        }
        Config {
            source: file.to_owned(),
            device,
            api,
            readers,
            multi_reader,
            rules,
            hours,
            offline,
            store,
            outputs,
            inputs,
            http,
            display,
            mqtt,
            notes,
        }
    }

    /// `[mqtt]`: everything checked, `None` unless `url` is set (a table with other keys but
    /// no url is a mistake, not a silent "off").
    pub(super) fn mqtt(&mut self, raw: RawMqtt, device: &str) -> Option<MqttConfig> {
        let Some(url) = raw.url.as_deref() else {
            let given = raw.ca_file.is_some()
                || raw.cert_file.is_some()
                || raw.key_file.is_some()
                || raw.username.is_some()
                || raw.password_file.is_some()
                || raw.client_id.is_some()
                || raw.topic.is_some()
                || raw.command_key_file.is_some()
                || raw.home_assistant.is_some()
                || raw.home_assistant_commands.is_some()
                || raw.keep_alive_s.is_some()
                || raw.max_pending.is_some()
                || raw.venue.is_some()
                || raw.venue_key_file.is_some();
            if given {
                self.problem(
                    "mqtt.url",
                    "missing: [mqtt] is off without it (e.g. \"mqtt://broker.local:1883\")",
                );
            }
            return None;
        };
        let (tls, host, port) = match crate::mqtt::settings::parse_url(url) {
            Ok(t) => t,
            Err(e) => {
                self.problem("mqtt.url", e);
                (false, String::new(), 1883)
            }
        };
        if !tls && raw.ca_file.is_some() {
            self.problem("mqtt.ca_file", "only with an mqtts:// url");
        }
        let client_cert = match (raw.cert_file, raw.key_file) {
            (Some(c), Some(k)) => {
                if !tls {
                    self.problem("mqtt.cert_file", "only with an mqtts:// url");
                }
                Some((c, k))
            }
            (None, None) => None,
            (Some(_), None) => {
                self.problem("mqtt.key_file", "missing: cert_file needs its key_file");
                None
            }
            (None, Some(_)) => {
                self.problem("mqtt.cert_file", "missing: key_file needs its cert_file");
                None
            }
        };
        if raw.password_file.is_some() && raw.username.is_none() {
            self.problem(
                "mqtt.username",
                "missing: a password_file needs a username (MQTT has no password alone)",
            );
        }
        let client_id = match raw.client_id {
            Some(id) => {
                if let Err(e) = crate::mqtt::settings::check_client_id(&id) {
                    self.problem("mqtt.client_id", e);
                }
                id
            }
            None => {
                if crate::mqtt::settings::check_client_id(device).is_err() {
                    self.problem(
                        "mqtt.client_id",
                        format!(
                            "missing: device.name \"{device}\" is not a client id (only A-Z a-z 0-9 _ -): set one"
                        ),
                    );
                }
                device.to_owned()
            }
        };
        let topic = match raw.topic {
            Some(t) => {
                if let Err(e) = crate::mqtt::settings::check_topic(&t) {
                    self.problem("mqtt.topic", e);
                }
                t
            }
            None => {
                let t = format!("tiketo-gate/{device}");
                if let Err(e) = crate::mqtt::settings::check_topic(&t) {
                    self.problem(
                        "mqtt.topic",
                        format!("missing: the default {t:?} does not do ({e}): set one"),
                    );
                }
                t
            }
        };
        let home_assistant = raw.home_assistant.unwrap_or(false);
        let home_assistant_commands = raw.home_assistant_commands.unwrap_or(false);
        if home_assistant_commands && !home_assistant {
            self.problem(
                "mqtt.home_assistant_commands",
                "only with home_assistant = true",
            );
        }
        // The broker gives a dead door's will after 1.5 keep-alives: within 30 s at 20. (rumqttc
        // takes no keep-alive under 5 s.)
        let keep_alive = self.range("mqtt.keep_alive_s", raw.keep_alive_s, 10, 5, 20);
        let max_pending = self.range("mqtt.max_pending", raw.max_pending, 100_000, 1, 10_000_000);
        let door_topic = topic.clone();
        let venue = match (raw.venue, raw.venue_key_file) {
            (Some(topic), Some(key_file)) => {
                if let Err(e) = crate::mqtt::settings::check_topic(&topic) {
                    self.problem("mqtt.venue", e);
                } else if venue_overlaps(&topic, &door_topic) {
                    self.problem(
                        "mqtt.venue",
                        "must not be the door's own topic or hold it (the venue's topics are shared by its doors)",
                    );
                }
                Some(VenueConfig { topic, key_file })
            }
            (None, None) => None,
            (Some(_), None) => {
                self.problem(
                    "mqtt.venue_key_file",
                    "missing: a venue needs its key (the same secret on every door of the venue, at least 32 bytes)",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "mqtt.venue",
                    "missing: venue_key_file needs the venue's topic (e.g. \"tiketo-gate/venues/main-hall\")",
                );
                None
            }
        };
        Some(MqttConfig {
            host,
            port,
            tls,
            ca_file: raw.ca_file,
            client_cert,
            username: raw.username,
            password_file: raw.password_file,
            client_id,
            topic,
            command_key_file: raw.command_key_file,
            home_assistant,
            home_assistant_commands,
            keep_alive: Duration::from_secs(keep_alive),
            max_pending,
            venue,
        })
    }

    /// `[reader]` or `[[readers]]` (not both); none at all: one serial reader with defaults.
    pub(super) fn readers(
        &mut self,
        single: Option<RawReader>,
        many: Option<Vec<RawReader>>,
        outputs: &OutputsConfig,
        hours: &crate::hours::Hours,
    ) -> Vec<ReaderConfig> {
        let readers: Vec<ReaderConfig> = match (single, many) {
            (Some(_), Some(_)) => {
                self.problem(
                    "readers",
                    "use either [reader] (one reader) or [[readers]] (several), not both",
                );
                Vec::new()
            }
            (Some(r), None) => vec![self.reader(r, "reader".into(), false, outputs, hours)],
            (None, None) => {
                vec![self.reader(RawReader::default(), "reader".into(), false, outputs, hours)]
            }
            (None, Some(list)) => {
                if list.is_empty() {
                    self.problem("readers", "needs at least one reader");
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, r)| self.reader(r, format!("readers[{i}]"), true, outputs, hours))
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
}

impl Validator<'_> {
    pub(super) fn http(&mut self, raw: RawHttp) -> HttpConfig {
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

    /// `[display]`: everything checked, `None` unless `listen` is set.
    pub(super) fn display(
        &mut self,
        raw: RawDisplay,
        device: &str,
        readers: &[ReaderConfig],
        http: Option<std::net::SocketAddr>,
    ) -> Option<crate::display::DisplayConfig> {
        let listen = raw
            .listen
            .as_deref()
            .and_then(|l| match l.parse::<std::net::SocketAddr>() {
                Ok(a) if Some(a) == http => {
                    self.problem("display.listen", format!("{a} is already http.listen"));
                    None
                }
                Ok(a) => Some(a),
                Err(_) => {
                    self.problem(
                        "display.listen",
                        format!(
                            "must be an address and port like \"127.0.0.1:9181\" (got \"{l}\")"
                        ),
                    );
                    None
                }
            });
        let langs = crate::display::languages();
        let names: Vec<&str> = langs.keys().map(String::as_str).collect();
        let language = self
            .choice("display.language", raw.language.as_deref(), "en", &names)
            .to_owned();
        let mut strings = langs[&language].clone();
        for (k, v) in raw.strings {
            let key = format!("display.strings.{k}");
            match strings.get_mut(&k) {
                None => self.problem(
                    &key,
                    format!(
                        "unknown string `{k}`, expected one of {}",
                        quoted(&crate::display::string_keys())
                    ),
                ),
                Some(_) if v.trim().is_empty() => self.problem(&key, "must not be empty"),
                Some(slot) => *slot = v,
            }
        }
        let greeting = raw.greeting.as_deref().and_then(|g| {
            match crate::display::template::Template::parse(g) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problem("display.greeting", e);
                    None
                }
            }
        });
        let shown = raw.readers.unwrap_or_default();
        for (i, name) in shown.iter().enumerate() {
            if !readers.iter().any(|r| &r.name == name) {
                let known: Vec<&str> = readers.iter().map(|r| r.name.as_str()).collect();
                self.problem(
                    "display.readers",
                    format!(
                        "entry {}: no reader is named \"{name}\" (readers: {})",
                        i + 1,
                        quoted(&known)
                    ),
                );
            }
        }
        let hold_ms = self.range("display.hold_ms", raw.hold_ms, 4000, 500, 60_000);
        let door = match raw.door {
            Some(d) if d.trim().is_empty() => {
                self.problem(
                    "display.door",
                    "must not be empty (leave it out for device.name)",
                );
                device.to_owned()
            }
            Some(d) => d,
            None => device.to_owned(),
        };
        Some(crate::display::DisplayConfig {
            listen: listen?,
            readers: shown,
            hold: Duration::from_millis(hold_ms),
            greeting,
            language,
            strings,
            door,
        })
    }

    pub(super) fn offline(&mut self, raw: RawOffline) -> OfflineConfig {
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
        let refresh_per_minute = self.range(
            "offline.refresh_per_minute",
            raw.refresh_per_minute,
            DEFAULT_REFRESH_PER_MINUTE,
            0,
            600,
        ) as u32;
        OfflineConfig {
            policy,
            cache_ttl,
            max_offline_uses,
            unknown_accepts,
            refresh_per_minute,
        }
    }

    pub(super) fn device(&mut self, raw: RawDevice) -> DeviceConfig {
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

    pub(super) fn api(&mut self, raw: RawApi) -> ApiConfig {
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

    pub(super) fn reader(
        &mut self,
        raw: RawReader,
        key: String,
        multi: bool,
        wired: &OutputsConfig,
        default_hours: &crate::hours::Hours,
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
        let hours = self.hours(&key, raw.hours, raw.closed_dates, default_hours);
        ReaderConfig {
            hours,
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

    /// `device.timezone` and `rules.unsynced_clock`.
    pub(super) fn hours_config(
        &mut self,
        timezone: Option<String>,
        unsynced: Option<String>,
    ) -> HoursConfig {
        let zone = match crate::hours::zone(timezone.as_deref()) {
            Ok(z) => z,
            Err(e) => {
                self.problem("device.timezone", e);
                jiff::tz::TimeZone::UTC
            }
        };
        let unsynced_clock = match self.choice(
            "rules.unsynced_clock",
            unsynced.as_deref(),
            "ignore_hours",
            &["ignore_hours", "reject"],
        ) {
            "reject" => crate::hours::UnsyncedClock::Reject,
            _ => crate::hours::UnsyncedClock::IgnoreHours,
        };
        HoursConfig {
            zone,
            zone_name: timezone,
            unsynced_clock,
        }
    }

    /// `{section}.hours` and `{section}.closed_dates`, each kept from `inherit` when not given.
    pub(super) fn hours(
        &mut self,
        section: &str,
        windows: Option<Vec<String>>,
        closed: Option<Vec<String>>,
        inherit: &crate::hours::Hours,
    ) -> crate::hours::Hours {
        match inherit.overridden(windows.as_deref(), closed.as_deref()) {
            Ok(h) => h,
            Err(errors) => {
                for (key, e) in errors {
                    self.problem(&format!("{section}.{key}"), e.to_string());
                }
                inherit.clone()
            }
        }
    }

    pub(super) fn rules(&mut self, raw: RawRules) -> Rules {
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
}
