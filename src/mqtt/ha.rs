//! Home Assistant's MQTT discovery (pure): the door as a device with, per reader with a relay,
//! a `lock` (OPEN = open, UNLOCK = release, LOCK = normal) and an `event` entity of its
//! verdicts; a door `binary_sensor` with a door sensor; sensors for the mode and the pending
//! events. Every entity's availability is `<topic>/status`; their states are read from the
//! door's own `<topic>/state` (one source), the verdicts from `<topic>/ha/<reader>/verdict`.
//! Keys as Home Assistant documents them (MQTT Lock, Event, Binary sensor, Sensor).

use serde_json::{json, Value};

use super::state::Topics;

/// Home Assistant's discovery prefix, and the topic where it says it (re)started.
pub const PREFIX: &str = "homeassistant";
pub const STATUS_TOPIC: &str = "homeassistant/status";

/// What discovery needs to know of the door.
pub struct Door<'a> {
    /// The client id: unique on the broker, `[A-Za-z0-9_-]`.
    pub node: &'a str,
    pub device: &'a str,
    /// (name, has a relay) per reader.
    pub readers: &'a [(String, bool)],
    pub door_sensor: bool,
}

/// A reader's name as an object id (`[A-Za-z0-9_-]`).
fn object_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The reader's entry of the state JSON, as a template: `r` is it.
fn reader_template(reader: &str, body: &str) -> String {
    let name = serde_json::to_string(reader).unwrap_or_default();
    format!("{{% set r = value_json.readers | selectattr('name', 'eq', {name}) | first %}}{body}")
}

/// Every discovery message: (topic, retained payload).
pub fn discovery(d: &Door<'_>, t: &Topics) -> Vec<(String, String)> {
    let device = json!({
        "identifiers": [format!("tiketo-gate_{}", d.node)],
        "name": d.device,
        "manufacturer": "tiketo-gate",
        "model": "Door terminal",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let common = |name: String, unique: String| -> Value {
        json!({
            "name": name,
            "unique_id": unique,
            "availability_topic": t.status,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        })
    };
    let mut out = Vec::new();
    let mut push = |component: &str, object: String, mut v: Value, extra: Value| {
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                m.insert(k.clone(), x.clone());
            }
        }
        out.push((
            format!("{PREFIX}/{component}/{}/{object}/config", d.node),
            v.to_string(),
        ));
    };
    for (reader, relay) in d.readers {
        let o = object_id(reader);
        if *relay {
            push(
                "lock",
                o.clone(),
                common(
                    format!("{reader} door"),
                    format!("tiketo-gate_{}_{o}_lock", d.node),
                ),
                json!({
                    "command_topic": format!("{}/{reader}/lock", t.ha),
                    "payload_open": "OPEN",
                    "payload_unlock": "UNLOCK",
                    "payload_lock": "LOCK",
                    "state_topic": t.state,
                    "value_template": reader_template(reader, "{{ 'UNLOCKED' if r.release else 'LOCKED' }}"),
                    "state_locked": "LOCKED",
                    "state_unlocked": "UNLOCKED",
                    "optimistic": false,
                    "retain": false,
                    "qos": 1,
                }),
            );
        }
        push(
            "event",
            format!("{o}_verdict"),
            common(
                format!("{reader} scans"),
                format!("tiketo-gate_{}_{o}_verdict", d.node),
            ),
            json!({
                "state_topic": format!("{}/{reader}/verdict", t.ha),
                "event_types": ["accept", "reject"],
            }),
        );
        push(
            "binary_sensor",
            format!("{o}_lockdown"),
            common(
                format!("{reader} lockdown"),
                format!("tiketo-gate_{}_{o}_lockdown", d.node),
            ),
            json!({
                "state_topic": t.state,
                "value_template": reader_template(reader, "{{ 'ON' if r.lockdown else 'OFF' }}"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "safety",
            }),
        );
    }
    if d.door_sensor {
        push(
            "binary_sensor",
            "door".into(),
            common("Door".into(), format!("tiketo-gate_{}_door", d.node)),
            json!({
                "state_topic": t.state,
                "value_template": "{{ 'ON' if value_json.door in ['open', 'held_open'] else 'OFF' }}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "door",
            }),
        );
    }
    push(
        "sensor",
        "mode".into(),
        common("Mode".into(), format!("tiketo-gate_{}_mode", d.node)),
        json!({
            "state_topic": t.state,
            "value_template": "{{ value_json.mode }}",
            "device_class": "enum",
            "options": ["online", "offline", "api_mismatch"],
        }),
    );
    push(
        "sensor",
        "pending".into(),
        common(
            "Pending scan events".into(),
            format!("tiketo-gate_{}_pending", d.node),
        ),
        json!({
            "state_topic": t.state,
            "value_template": "{{ value_json.pending }}",
            "state_class": "measurement",
        }),
    );
    out
}

/// The verdict event of a scan event body (`<ha>/<reader>/verdict`), if it is a scan's.
pub fn verdict_of(event_body: &str, t: &Topics) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(event_body).ok()?;
    if v["type"] != "scan" {
        return None;
    }
    let reader = v["reader"].as_str()?;
    Some((
        format!("{}/{reader}/verdict", t.ha),
        json!({
            "event_type": v["verdict"],
            "reason": v["reason"],
            "mode": v["mode"],
            "direction": v["direction"],
            "code": v["code"],
            "scanId": v["scanId"],
        })
        .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_has_the_keys_home_assistant_documents() {
        let t = Topics::new("tiketo-gate/door-1");
        let readers = vec![("main".to_owned(), true), ("way out".to_owned(), false)];
        let d = Door {
            node: "door-1",
            device: "door-1",
            readers: &readers,
            door_sensor: true,
        };
        let all = discovery(&d, &t);
        let get = |topic: &str| -> Value {
            let (_, p) = all
                .iter()
                .find(|(t, _)| t == topic)
                .unwrap_or_else(|| panic!("{topic} in {all:?}"));
            serde_json::from_str(p).unwrap()
        };
        let lock = get("homeassistant/lock/door-1/main/config");
        assert_eq!(lock["command_topic"], "tiketo-gate/door-1/ha/main/lock");
        assert_eq!(
            (
                lock["payload_open"].as_str(),
                lock["payload_unlock"].as_str(),
                lock["payload_lock"].as_str()
            ),
            (Some("OPEN"), Some("UNLOCK"), Some("LOCK"))
        );
        assert_eq!(lock["availability_topic"], "tiketo-gate/door-1/status");
        assert_eq!(lock["unique_id"], "tiketo-gate_door-1_main_lock");
        assert_eq!(lock["device"]["identifiers"][0], "tiketo-gate_door-1");
        assert!(lock["value_template"]
            .as_str()
            .unwrap()
            .contains("\"main\""));
        assert!(
            !all.iter().any(|(t, _)| t.contains("lock/door-1/way_out")),
            "no relay, no lock"
        );
        let ev = get("homeassistant/event/door-1/way_out_verdict/config");
        assert_eq!(ev["event_types"], json!(["accept", "reject"]));
        assert_eq!(ev["state_topic"], "tiketo-gate/door-1/ha/way out/verdict");
        assert_eq!(
            get("homeassistant/binary_sensor/door-1/door/config")["device_class"],
            "door"
        );
        assert_eq!(
            get("homeassistant/sensor/door-1/mode/config")["value_template"],
            "{{ value_json.mode }}"
        );
        get("homeassistant/sensor/door-1/pending/config");
        let (topic, body) = verdict_of(
            r#"{"type":"scan","reader":"main","verdict":"reject","reason":"lockdown","mode":"online"}"#,
            &t,
        )
        .unwrap();
        assert_eq!(topic, "tiketo-gate/door-1/ha/main/verdict");
        assert!(body.contains(r#""event_type":"reject""#));
        assert!(verdict_of(r#"{"type":"door"}"#, &t).is_none());
    }
}
