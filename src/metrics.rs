//! Prometheus metrics (prometheus-client, OpenMetrics text format). Names follow Prometheus
//! conventions (`_total`, `_seconds`, base units) and labels stay low-cardinality: never a
//! code, a pass id or a scan id.

use std::sync::atomic::AtomicI64;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScanLabels {
    pub verdict: &'static str,
    pub reason: &'static str,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderLabels {
    pub reader: String,
    pub direction: &'static str,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub operation: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `open`, `lockdown`, `release`, `normal`, or `unknown` (unreadable).
    pub action: String,
    /// `done` or `refused`.
    pub outcome: &'static str,
    /// `jwt` (`<topic>/cmd`) or `home_assistant` (`<topic>/ha/...`).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderOnly {
    pub reader: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeOnly {
    pub outcome: String,
}

/// One more in `family` for `outcome`.
pub fn count_outcome(family: &Family<OutcomeOnly, Counter>, outcome: &str) {
    family
        .get_or_create(&OutcomeOnly {
            outcome: outcome.into(),
        })
        .inc();
}

pub struct Metrics {
    pub registry: Registry,
    pub scans: Family<ScanLabels, Counter>,
    pub decision: Histogram,
    pub api_requests: Family<ApiLabels, Counter>,
    pub pending: Gauge,
    pub oldest_pending_age: Gauge,
    pub dead: Gauge,
    pub online: Gauge,
    pub reader_connected: Gauge,
    pub mqtt_connected: Gauge,
    pub mqtt_events_published: Counter,
    pub mqtt_events_dropped: Counter,
    pub mqtt_events_pending: Gauge,
    pub mqtt_commands: Family<CommandLabels, Counter>,
    pub lockdown: Family<ReaderOnly, Gauge>,
    pub release: Family<ReaderOnly, Gauge>,
    pub venue_conflicts: Counter,
    pub venue_messages: Family<OutcomeOnly, Counter>,
    pub venue_refreshes: Family<OutcomeOnly, Counter>,
    pub venue_passes: Gauge,
    pub enrolled: Gauge,
    pub clock_synced: Gauge,
    pub store_ok: Gauge,
    pub reader_scans: Family<ReaderLabels, Counter>,
    pub exit_requests: Counter,
    pub door_open: Gauge,
    pub door_held_open: Gauge,
    pub api_mismatch: Gauge,
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("tiketo_gate");
        let scans = Family::<ScanLabels, Counter>::default();
        registry.register(
            "scans",
            "Scans decided, by verdict, reason and online/offline",
            scans.clone(),
        );
        // 0.25 ms to 2 s: a door decides in about a millisecond online on a LAN and waits
        // for the budget when the API is slow.
        let decision = Histogram::new([
            0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
        ]);
        registry.register_with_unit(
            "scan_decision",
            "Time from the code's last byte to the decision",
            Unit::Seconds,
            decision.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Tiketo API requests by operation and outcome class",
            api_requests.clone(),
        );
        let g = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::<i64, AtomicI64>::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let pending = g(
            &mut registry,
            "pending_events",
            "Scan events waiting to be sent to Tiketo",
        );
        let oldest_pending_age = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "oldest_pending_event_age",
            "Age of the oldest scan event waiting to be sent",
            Unit::Seconds,
            oldest_pending_age.clone(),
        );
        let dead = g(
            &mut registry,
            "dead_letters",
            "Scan events the server refused for good (tiketo-gate queue list --dead)",
        );
        let online = g(
            &mut registry,
            "online",
            "1 while the Tiketo API is reachable",
        );
        let reader_connected = g(
            &mut registry,
            "reader_connected",
            "1 while every reader is connected",
        );
        let mqtt_connected = g(
            &mut registry,
            "mqtt_connected",
            "1 while connected to the MQTT broker ([mqtt]; 0 without it)",
        );
        let mqtt_events_published = Counter::default();
        registry.register(
            "mqtt_events_published",
            "Events the MQTT broker acknowledged (QoS 1) on <topic>/events",
            mqtt_events_published.clone(),
        );
        let mqtt_events_dropped = Counter::default();
        registry.register(
            "mqtt_events_dropped",
            "Events dropped from the broker's copy past mqtt.max_pending (oldest first; scans are kept)",
            mqtt_events_dropped.clone(),
        );
        let mqtt_events_pending = g(
            &mut registry,
            "mqtt_events_pending",
            "Events in the store not yet acknowledged by the MQTT broker",
        );
        let mqtt_commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "mqtt_commands",
            "Remote commands received over MQTT, by action, outcome (done or refused) and source",
            mqtt_commands.clone(),
        );
        let venue_conflicts = Counter::default();
        registry.register(
            "venue_conflicts",
            "Passes admitted offline past offline.max_offline_uses at two doors of the venue that did not know of each other (mqtt.venue)",
            venue_conflicts.clone(),
        );
        let venue_messages = Family::<OutcomeOnly, Counter>::default();
        registry.register(
            "venue_messages",
            "Venue records received from the broker, by outcome: merged, known (nothing new), foreign_key (another venue key), damaged",
            venue_messages.clone(),
        );
        let venue_refreshes = Family::<OutcomeOnly, Counter>::default();
        registry.register(
            "venue_refreshes",
            "Background verifications of cached passes (Query.pass) by this door for the venue, by outcome: ok, gone, error",
            venue_refreshes.clone(),
        );
        let venue_passes = g(
            &mut registry,
            "venue_passes",
            "Passes the venue's shared memory holds at this door (mqtt.venue)",
        );
        let lockdown = Family::<ReaderOnly, Gauge>::default();
        registry.register(
            "lockdown",
            "1 while the reader is in lockdown (every scan rejected; the exit button still opens)",
            lockdown.clone(),
        );
        let release = Family::<ReaderOnly, Gauge>::default();
        registry.register(
            "release",
            "1 while the reader's relay is held released (the door unlocked)",
            release.clone(),
        );
        let enrolled = g(
            &mut registry,
            "enrolled",
            "1 once the device has its own token",
        );
        let clock_synced = g(
            &mut registry,
            "clock_synced",
            "1 when the wall clock is synced to NTP",
        );
        let store_ok = g(
            &mut registry,
            "store_ok",
            "1 while the scan store is open and answering",
        );
        let reader_scans = Family::<ReaderLabels, Counter>::default();
        registry.register(
            "reader_scans",
            "Scans decided, by reader, direction and verdict",
            reader_scans.clone(),
        );
        let exit_requests = Counter::default();
        registry.register(
            "exit_requests",
            "Request-to-exit button presses that released the door",
            exit_requests.clone(),
        );
        let door_open = g(
            &mut registry,
            "door_open",
            "1 while the door contact reads open (0 closed; no door sensor: always 0)",
        );
        let door_held_open = g(
            &mut registry,
            "door_held_open",
            "1 while the door has been open longer than inputs.door_sensor.held_open_secs",
        );
        let api_mismatch = g(
            &mut registry,
            "api_mismatch",
            "1 while the Tiketo API's schema does not fit this daemon's documents (tiketo-gate status says why)",
        );
        // The conventional `*_build_info` gauge (always 1), which every Prometheus text parser
        // understands (OpenMetrics' `info` type is not).
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        Metrics {
            registry,
            scans,
            decision,
            api_requests,
            pending,
            oldest_pending_age,
            dead,
            online,
            reader_connected,
            mqtt_connected,
            mqtt_events_published,
            mqtt_events_dropped,
            mqtt_events_pending,
            mqtt_commands,
            lockdown,
            release,
            venue_conflicts,
            venue_messages,
            venue_refreshes,
            venue_passes,
            enrolled,
            clock_synced,
            store_ok,
            reader_scans,
            exit_requests,
            door_open,
            door_held_open,
            api_mismatch,
        }
    })
}

/// Counts a decided scan.
pub fn scan(verdict: &'static str, reason: &'static str, mode: &'static str, seconds: f64) {
    let m = metrics();
    m.scans
        .get_or_create(&ScanLabels {
            verdict,
            reason,
            mode,
        })
        .inc();
    m.decision.observe(seconds);
}

/// Counts an API request.
pub fn api(operation: &str, outcome: &'static str) {
    metrics()
        .api_requests
        .get_or_create(&ApiLabels {
            operation: operation.to_owned(),
            outcome,
        })
        .inc();
}

/// The OpenMetrics text exposition.
pub fn encode_openmetrics() -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

/// The Prometheus text exposition (format 0.0.4), for clients that do not ask for
/// OpenMetrics (promtool, curl, older scrapers).
pub fn encode_prometheus() -> String {
    to_prometheus_text(&encode_openmetrics())
}

/// OpenMetrics to Prometheus text: a counter family is named with its `_total` suffix in
/// HELP and TYPE, and the `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn openmetrics_to_prometheus_text() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total{k=\"v\"} 2\n# HELP a_t Time.\n# TYPE a_t_seconds histogram\n# UNIT a_t_seconds seconds\na_t_seconds_count 1\n# EOF\n";
        assert_eq!(
            super::to_prometheus_text(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total{k=\"v\"} 2\n# HELP a_t Time.\n# TYPE a_t_seconds histogram\na_t_seconds_count 1\n"
        );
    }
}
