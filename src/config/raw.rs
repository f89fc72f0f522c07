//! The config as written in the file: a serde mirror of it, every key optional, unknown
//! keys refused (`deny_unknown_fields`), so that validation can name what is missing.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) device: RawDevice,
    #[serde(default)]
    pub(super) api: RawApi,
    pub(super) reader: Option<RawReader>,
    pub(super) readers: Option<Vec<RawReader>>,
    #[serde(default)]
    pub(super) rules: RawRules,
    #[serde(default)]
    pub(super) offline: RawOffline,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) outputs: RawOutputs,
    #[serde(default)]
    pub(super) inputs: RawInputs,
    #[serde(default)]
    pub(super) http: RawHttp,
    pub(super) display: Option<RawDisplay>,
    #[serde(default)]
    pub(super) mqtt: RawMqtt,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMqtt {
    pub(super) url: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) client_id: Option<String>,
    pub(super) topic: Option<String>,
    pub(super) command_key_file: Option<PathBuf>,
    pub(super) home_assistant: Option<bool>,
    pub(super) home_assistant_commands: Option<bool>,
    pub(super) keep_alive_s: Option<u64>,
    pub(super) max_pending: Option<u64>,
    pub(super) venue: Option<String>,
    pub(super) venue_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisplay {
    pub(super) listen: Option<String>,
    pub(super) readers: Option<Vec<String>>,
    pub(super) hold_ms: Option<u64>,
    pub(super) greeting: Option<String>,
    pub(super) language: Option<String>,
    pub(super) door: Option<String>,
    #[serde(default)]
    pub(super) strings: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInputs {
    pub(super) exit_button: Option<RawInput>,
    pub(super) door_sensor: Option<RawInput>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInput {
    pub(super) pin: Option<u64>,
    pub(super) line: Option<String>,
    pub(super) chip: Option<String>,
    pub(super) offset: Option<u64>,
    pub(super) active_low: Option<bool>,
    pub(super) bias: Option<String>,
    pub(super) debounce_ms: Option<u64>,
    /// exit_button only.
    pub(super) relay: Option<String>,
    /// door_sensor only.
    pub(super) held_open_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) admin_token: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) retention_days: Option<u64>,
    pub(super) max_pending: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub(super) name: Option<String>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) timezone: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) url: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReader {
    pub(super) name: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) direction: Option<String>,
    pub(super) outputs: Option<RawLaneOutputs>,
    pub(super) path: Option<PathBuf>,
    pub(super) usb_id: Option<String>,
    pub(super) hid_source: Option<String>,
    pub(super) layout: Option<String>,
    pub(super) grab: Option<bool>,
    pub(super) baud: Option<u64>,
    pub(super) max_len: Option<u64>,
    pub(super) debounce_ms: Option<u64>,
    pub(super) frame_timeout_ms: Option<u64>,
    pub(super) hours: Option<Vec<String>>,
    pub(super) closed_dates: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRules {
    #[serde(default)]
    pub(super) projects: Vec<String>,
    #[serde(default)]
    pub(super) templates: Vec<String>,
    pub(super) reward_points: Option<i64>,
    pub(super) hours: Option<Vec<String>>,
    pub(super) closed_dates: Option<Vec<String>>,
    pub(super) unsynced_clock: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOffline {
    pub(super) policy: Option<String>,
    pub(super) cache_ttl: Option<toml::Value>,
    pub(super) max_offline_uses: Option<u64>,
    pub(super) unknown: Option<String>,
    pub(super) refresh_per_minute: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLaneOutputs {
    pub(super) relay: Option<String>,
    pub(super) green: Option<String>,
    pub(super) red: Option<String>,
    pub(super) buzzer: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawOutputs {
    pub(super) backend: Option<String>,
    pub(super) sim_log: Option<String>,
    pub(super) sim_inputs: Option<String>,
    pub(super) chip: Option<String>,
    /// Every other key: an output (a table), checked by the validator.
    #[serde(flatten)]
    pub(super) lines: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    pub(super) pin: Option<u64>,
    pub(super) line: Option<String>,
    pub(super) chip: Option<String>,
    pub(super) offset: Option<u64>,
    pub(super) active_low: Option<bool>,
    pub(super) pulse_ms: Option<u64>,
    pub(super) accept: Option<Vec<u64>>,
    pub(super) reject: Option<Vec<u64>>,
    pub(super) attention: Option<Vec<u64>>,
}
