//! The door on a real mosquitto (Debian's package, which `.ci/test` installs): each test
//! starts its own on a free loopback port, with a password file and an ACL that gives each
//! door its own topics only. No mock broker.

mod common;
use common::broker::{Broker, Peer, PeerEvent, T};

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{doctor_line, field, wait_until, Harness, Opts};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// A subscriber as the watcher: every message under the door's prefix, retained ones too.
struct Watcher {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, String, bool)>,
    seen: Vec<(String, String, bool)>,
}

impl Watcher {
    async fn start(port: u16) -> Watcher {
        let mut o = MqttOptions::new(format!("watcher-{}", std::process::id()), "127.0.0.1", port);
        o.set_credentials("watcher", "watcher-secret");
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(o, 64);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client
                            .subscribe("tiketo-gate/test-door/#", QoS::AtLeastOnce)
                            .await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let body = String::from_utf8_lossy(&p.payload).into_owned();
                        if tx.send((topic, body, p.retain)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Watcher {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a message on `topic` whose body satisfies `ok`; returns the body.
    async fn wait(&mut self, topic: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + T;
        while Instant::now() < end {
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await
            {
                self.seen.push(m.clone());
                if m.0 == topic && ok(&m.1) {
                    return m.1;
                }
            }
        }
        panic!("nothing fitting on {topic}; seen: {:?}", self.seen);
    }
}

/// A daemon on `broker` (its [mqtt] table, nothing more) and a watcher that has seen it online.
async fn door_online(broker: &Broker) -> (Harness, Watcher) {
    let h = Harness::start(Opts {
        tail: broker.mqtt_table(""),
        ..Opts::default()
    })
    .await;
    let mut w = Watcher::start(broker.port).await;
    w.wait("tiketo-gate/test-door/status", |b| b == "online")
        .await;
    (h, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_says_online_its_state_and_offline_by_will_and_by_clean_stop() {
    let broker = Broker::start();
    let (mut h, mut w) = door_online(&broker).await;
    let state = w
        .wait("tiketo-gate/test-door/state", |b| b.contains("\"mode\""))
        .await;
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(v["mode"], "online", "{v}");
    assert_eq!(v["lockdown"], false);
    assert_eq!(v["readers"][0]["connected"], true, "{v}");
    assert!(h.logs().contains("mqtt connected"), "{}", h.logs());
    assert!(
        !h.logs().contains("door-secret"),
        "the password is never logged"
    );

    // A scan goes on as ever.
    h.write(b"VALID-0001\r\n");
    assert_eq!(field(&h.wait_scan(1), "verdict"), Some("accept"));

    // kill -9: the broker gives the will within 1.5 keep-alives (5 s here).
    let killed = Instant::now();
    h.kill9();
    w.wait("tiketo-gate/test-door/status", |b| b == "offline")
        .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "the will took {took:?}");

    // Back, then a clean stop: retained offline, published by the daemon itself.
    h.restart_daemon();
    w.wait("tiketo-gate/test-door/status", |b| b == "online")
        .await;
    h.signal("TERM");
    w.wait("tiketo-gate/test-door/status", |b| b == "offline")
        .await;
    assert!(
        wait_until(T, || h.logs().contains("mqtt: offline published")),
        "{}",
        h.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_or_hangs_costs_the_scans_nothing_and_is_joined_when_back() {
    // A port that accepts connections and never answers (a hung broker).
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let mut h = Harness::start(Opts {
        tail: format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{hung_port}\"\nkeep_alive_s = 5\n"),
        ..Opts::default()
    })
    .await;
    for i in 1..=5 {
        h.write(b"VALID-0001\r\n");
        let line = h.wait_scan(i);
        assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
        let ms: f64 = field(&line, "latency_ms").unwrap().parse().unwrap();
        assert!(ms < 500.0, "a scan waited for the broker: {line}");
        h.write(b"\r\n");
    }
    drop(hung);

    // A broker that is down at start, then comes up: joined without a restart.
    let mut broker = Broker::start();
    broker.stop();
    let mut h = Harness::start(Opts {
        tail: broker.mqtt_table(""),
        ..Opts::default()
    })
    .await;
    h.write(b"VALID-0002\r\n");
    assert_eq!(field(&h.wait_scan(1), "verdict"), Some("accept"));
    assert!(
        wait_until(T, || h.logs().contains("mqtt connection lost or refused")),
        "{}",
        h.logs()
    );
    broker.spawn();
    let mut w = Watcher::start(broker.port).await;
    w.wait("tiketo-gate/test-door/status", |b| b == "online")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_the_brokers_ca_connects_and_without_it_does_not() {
    let broker = Broker::start_with(true);
    let tls_port = broker.tls_port.unwrap();
    let table = |ca: &str| {
        format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nusername = \"test-door\"\npassword_file = \"{}\"\n{ca}",
            broker.password_file().display()
        )
    };
    // The system's roots do not know the test CA: refused, and said so.
    let h = Harness::start(Opts {
        tail: table(""),
        ..Opts::default()
    })
    .await;
    assert!(
        wait_until(T, || h.logs().contains("mqtt connection lost or refused")),
        "{}",
        h.logs()
    );
    assert!(!h.logs().contains("mqtt connected"), "{}", h.logs());
    drop(h);
    let mut w = Watcher::start(broker.port).await;
    let ca = broker.dir.path().join("ca.pem");
    let _h = Harness::start(Opts {
        tail: table(&format!("ca_file = \"{}\"\n", ca.display())),
        ..Opts::default()
    })
    .await;
    w.wait("tiketo-gate/test-door/status", |b| b == "online")
        .await;
}

#[test]
fn a_wrong_mqtt_table_is_named_by_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("door.toml");
    std::fs::write(
        &cfg,
        "[device]\nname = \"front-door\"\n[mqtt]\nurl = \"mqtt://broker:1883\"\ntopic = \"venue/#\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
        .args(["check-config", "--file-only", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("door.toml:5: mqtt.topic"), "{err}");
}

/// An MQTT client of the test's own, as any user: what it receives, and its PUBACKs' reasons.
const KEY: &str = "a-test-key-of-the-venue-0123456789abcdef";

fn key_file(h: &Harness) -> PathBuf {
    let p = h.dir.path().join("command.key");
    std::fs::write(&p, format!("{KEY}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signed command.
fn jwt(claims: serde_json::Value, key: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn cmd(act: &str, jti: &str) -> serde_json::Value {
    serde_json::json!({"aud": "test-door", "act": act, "iat": now_s(), "exp": now_s() + 60, "jti": jti})
}

const CMD: &str = "tiketo-gate/test-door/cmd";
const ACK: &str = "tiketo-gate/test-door/cmd/ack";

/// Restarts the daemon (after `stop`) and waits until it has subscribed again: a command sent
/// before that reaches no one (it is not retained).
fn restart_and_subscribe(h: &mut Harness) {
    let before = h.logs().matches("mqtt subscribed").count();
    h.restart_daemon();
    assert!(
        wait_until(T, || h.logs().matches("mqtt subscribed").count() > before),
        "{}",
        h.logs()
    );
}

/// The next ack, as JSON.
async fn ack(p: &mut Peer) -> serde_json::Value {
    let (b, _) = p.message(ACK).await;
    serde_json::from_str(&b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_500_scans_over_a_broker_restart_and_a_kill_9_all_arrive_in_order() {
    let mut broker = Broker::start();
    let mut h = Harness::start(Opts {
        tail: broker.mqtt_table(""),
        relay_ms: 20,
        ..Opts::default()
    })
    .await;
    let mut w = Peer::start(
        broker.port,
        "watcher",
        "watcher-secret",
        &["tiketo-gate/test-door/events"],
        true,
    )
    .await;
    let mut n = 0;
    let scan = |h: &mut Harness, n: &mut usize| {
        *n += 1;
        let code = if (*n).is_multiple_of(7) {
            format!("NOPE-{:06}", *n)
        } else {
            "VALID-0001".to_owned()
        };
        h.write(format!("{code}\r\n").as_bytes());
        h.wait_scan(*n);
    };
    for _ in 0..200 {
        scan(&mut h, &mut n);
    }
    // The broker goes away (a clean stop: it keeps the watcher's session), the door scans on.
    broker.stop_gracefully();
    for _ in 0..150 {
        scan(&mut h, &mut n);
    }
    // Power cut: the daemon killed, the events still in its store. The broker back, and the
    // watcher subscribed again before the door returns (what is under test is the door's
    // store, not the broker's persistence of the watcher's session).
    h.kill9();
    let subscribed = w.subacks.load(std::sync::atomic::Ordering::SeqCst);
    broker.spawn();
    assert!(wait_until(T, || w
        .subacks
        .load(std::sync::atomic::Ordering::SeqCst)
        > subscribed));
    h.restart_daemon();
    for _ in 0..150 {
        scan(&mut h, &mut n);
    }
    let ids: Vec<String> = h
        .scan_lines()
        .iter()
        .map(|l| field(l, "scan_id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 500);
    let mut got: Vec<String> = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while got.len() < 500 && Instant::now() < end {
        if let Ok(Some(PeerEvent::Message(_, body, _))) =
            tokio::time::timeout(Duration::from_millis(200), w.rx.recv()).await
        {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["type"], "scan", "{v}");
            assert!(!body.contains("VALID-0001"), "never the full code: {body}");
            let id = v["scanId"].as_str().unwrap().to_owned();
            // At least once: a consumer dedupes by scanId.
            if !got.contains(&id) {
                got.push(id);
            }
        }
    }
    let missing: Vec<usize> = (0..500).filter(|i| !got.contains(&ids[*i])).collect();
    assert!(
        missing.is_empty(),
        "scans whose event never arrived: {missing:?}\n{}",
        h.logs()
    );
    assert_eq!(got, ids, "in the order they happened");
    // Delivered events leave the store.
    assert!(wait_until(T, || h.store().events_pending().unwrap() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commands_open_lock_down_and_release_and_every_bad_one_is_refused() {
    let broker = Broker::start();
    let mut h = Harness::start(Opts {
        tail: String::new(),
        relay_ms: 300,
        outputs_extra: "sim_inputs = \"@DIR@/inputs\"\n".into(),
        ..Opts::default()
    })
    .await;
    let key = key_file(&h);
    let mut ctl = Peer::start(
        broker.port,
        "controller",
        "controller-secret",
        &[ACK],
        false,
    )
    .await;
    // A retained command waiting on the broker before the door connects: never obeyed.
    ctl.send(CMD, jwt(cmd("open", "retained-1"), KEY), true)
        .await;
    h.opts.tail = broker.mqtt_table(&format!("command_key_file = \"{}\"\n", key.display()))
        + "[inputs]\nexit_button = { pin = 5, active_low = true, bias = \"pull-up\" }\n";
    h.kill9();
    h.restart_daemon();
    let a = ack(&mut ctl).await;
    assert_eq!(
        (a["jti"].as_str(), a["ok"].as_bool()),
        (Some("retained-1"), Some(false)),
        "{a}"
    );
    assert!(a["error"].as_str().unwrap().contains("retained"), "{a}");
    assert!(!h.changes_of("relay").contains(&true));
    ctl.send(CMD, Vec::new(), true).await; // the retained message cleared

    // open: relay and green, no scan.
    let t = jwt(cmd("open", "open-1"), KEY);
    ctl.send(CMD, t.clone(), false).await;
    let a = ack(&mut ctl).await;
    assert_eq!(
        (a["jti"].as_str(), a["ok"].as_bool()),
        (Some("open-1"), Some(true)),
        "{a}"
    );
    assert!(h.wait_switched("relay", true, 1, T), "{}", h.logs());
    assert!(h.changes_of("green").contains(&true));
    assert!(h.scan_lines().is_empty());
    assert!(h.sim.scan_events().is_empty());
    h.wait_log("mqtt command done", T);

    // Refused, with nothing done: a replay, a bad signature, another aud, expired, not yet
    // valid, garbage, too big, an unknown reader.
    let synced = h.status_json()["clock_synced"] == true;
    let bad: Vec<(String, &str, Option<&str>)> = vec![
        (t.clone(), "already seen", Some("open-1")),
        (
            jwt(cmd("open", "sig-1"), "another-key-another-key-another-key!"),
            "bad signature",
            Some("sig-1"),
        ),
        (
            jwt(
                serde_json::json!({"aud": "other-door", "act": "open", "iat": now_s(), "exp": now_s() + 60, "jti": "aud-1"}),
                KEY,
            ),
            "aud",
            Some("aud-1"),
        ),
        (
            jwt(
                serde_json::json!({"aud": "test-door", "act": "open", "iat": now_s() - 400, "exp": now_s() - 100, "jti": "exp-1"}),
                KEY,
            ),
            "expired",
            Some("exp-1"),
        ),
        // The clock's own refusal: synced, a token from the future; not synced (docs/config.md),
        // one issued more than 300 s before the newest accepted (open-1's).
        if synced {
            (
                jwt(
                    serde_json::json!({"aud": "test-door", "act": "open", "iat": now_s() + 600, "exp": now_s() + 700, "jti": "nbf-1"}),
                    KEY,
                ),
                "not yet valid",
                Some("nbf-1"),
            )
        } else {
            (
                jwt(
                    serde_json::json!({"aud": "test-door", "act": "open", "iat": now_s() - 320, "exp": now_s() - 25, "jti": "nbf-1"}),
                    KEY,
                ),
                "newest",
                Some("nbf-1"),
            )
        },
        (
            jwt(
                serde_json::json!({"aud": "test-door", "act": "open", "iat": now_s(), "exp": now_s() + 3600, "jti": "long-1"}),
                KEY,
            ),
            "300",
            Some("long-1"),
        ),
        (
            jwt(
                serde_json::json!({"aud": "test-door", "act": "open", "reader": "roof", "iat": now_s(), "exp": now_s() + 60, "jti": "rd-1"}),
                KEY,
            ),
            "roof",
            Some("rd-1"),
        ),
        ("please open".into(), "not a compact JWT", None),
        ("x".repeat(9000), "bytes", None),
    ];
    for (payload, why, jti) in bad {
        ctl.send(CMD, payload, false).await;
        let a = ack(&mut ctl).await;
        assert_eq!(a["ok"], false, "{why}: {a}");
        assert_eq!(a["jti"].as_str(), jti, "{why}: {a}");
        assert!(a["error"].as_str().unwrap().contains(why), "{why}: {a}");
    }
    assert_eq!(
        h.changes_of("relay").iter().filter(|on| **on).count(),
        1,
        "only the good open opened"
    );
    let metrics = h.logs();
    assert!(
        metrics.matches("mqtt command refused").count() >= 9,
        "{metrics}"
    );

    // Another door's user cannot command this one (the README's ACL): the broker refuses it.
    let mut other = Peer::start(broker.port, "other-door", "other-secret", &[], false).await;
    other
        .send(CMD, jwt(cmd("open", "other-1"), KEY), false)
        .await;
    let e = other
        .wait("a PUBACK", |e| matches!(e, PeerEvent::PubAck(_)))
        .await;
    assert!(
        matches!(&e, PeerEvent::PubAck(r) if r.contains("NotAuthorized")),
        "{e:?}"
    );

    // lockdown: scans rejected (reason lockdown), the exit button still opens.
    ctl.send(CMD, jwt(cmd("lockdown", "ld-1"), KEY), false)
        .await;
    assert_eq!(ack(&mut ctl).await["ok"], true);
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    assert_eq!(
        (field(&line, "verdict"), field(&line, "reason")),
        (Some("reject"), Some("lockdown")),
        "{line}"
    );
    assert!(h.sim.scan_events().is_empty());
    let st = h.status_json();
    assert_eq!(st["lockdown"], true, "{st}");
    assert_eq!(st["overrides"][0]["jti"], "ld-1", "{st}");
    let text = String::from_utf8_lossy(&h.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("LOCKDOWN:"), "{text}");
    let relay_ons = h.changes_of("relay").iter().filter(|on| **on).count();
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(h.dir.path().join("inputs"))
        .unwrap();
    use std::io::Write;
    fifo.write_all(b"{\"input\":\"exit_button\",\"active\":true}\n{\"input\":\"exit_button\",\"active\":false}\n").unwrap();
    assert!(
        h.wait_switched("relay", true, relay_ons + 1, T),
        "people can always leave"
    );

    // A restart, even kill -9: still in lockdown, and the old command's jti still known.
    h.kill9();
    restart_and_subscribe(&mut h);
    h.write(b"VALID-0001\r\n");
    assert_eq!(field(&h.wait_scan(2), "reason"), Some("lockdown"));
    ctl.send(CMD, jwt(cmd("lockdown", "ld-1"), KEY), false)
        .await;
    let a = ack(&mut ctl).await;
    assert!(a["error"].as_str().unwrap().contains("already seen"), "{a}");

    // release: the relay held on past its pulse, across a clean restart (locked while stopped).
    ctl.send(CMD, jwt(cmd("release", "rel-1"), KEY), false)
        .await;
    assert_eq!(ack(&mut ctl).await["ok"], true);
    assert!(wait_until(T, || h
        .outputs()
        .iter()
        .rev()
        .find(|c| c.output == "relay")
        .is_some_and(|c| c.on)));
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        h.outputs()
            .iter()
            .rev()
            .find(|c| c.output == "relay")
            .is_some_and(|c| c.on),
        "held past the pulse"
    );
    assert_eq!(h.status_json()["release"], true);
    h.signal("TERM");
    h.wait_exit(T);
    assert!(
        !h.outputs()
            .iter()
            .rev()
            .find(|c| c.output == "relay")
            .unwrap()
            .on,
        "locked while stopped"
    );
    restart_and_subscribe(&mut h);
    assert!(
        wait_until(T, || h
            .outputs()
            .iter()
            .rev()
            .find(|c| c.output == "relay")
            .is_some_and(|c| c.on)),
        "released again"
    );

    // normal: locked, scans decided as ever.
    ctl.send(CMD, jwt(cmd("normal", "n-1"), KEY), false).await;
    assert_eq!(ack(&mut ctl).await["ok"], true);
    assert!(wait_until(T, || !h
        .outputs()
        .iter()
        .rev()
        .find(|c| c.output == "relay")
        .unwrap()
        .on));
    let st = h.status_json();
    assert_eq!(
        (st["lockdown"].as_bool(), st["release"].as_bool()),
        (Some(false), Some(false)),
        "{st}"
    );
    h.write(b"VALID-0001\r\n");
    assert_eq!(field(&h.wait_scan(3), "verdict"), Some("accept"));
    // Every command done is an event.
    let mut w = Peer::start(
        broker.port,
        "watcher",
        "watcher-secret",
        &["tiketo-gate/test-door/events"],
        false,
    )
    .await;
    drop(w.drain(Duration::from_millis(10)).await);
    ctl.send(CMD, jwt(cmd("open", "open-2"), KEY), false).await;
    let (b, _) = w.message("tiketo-gate/test-door/events").await;
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["action"].as_str(), v["jti"].as_str()),
        (Some("command"), Some("open"), Some("open-2")),
        "{v}"
    );
    assert!(v["id"].is_string() && v["at"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_sees_a_lock_and_its_open_is_obeyed_only_when_allowed() {
    let broker = Broker::start();
    let mut h = Harness::start(Opts {
        tail: broker.mqtt_table("home_assistant = true\n"),
        ..Opts::default()
    })
    .await;
    let mut ha = Peer::start(
        broker.port,
        "homeassistant",
        "ha-secret",
        &["homeassistant/#", ACK, "tiketo-gate/test-door/ha/+/verdict"],
        false,
    )
    .await;
    let (lock, _) = ha
        .message("homeassistant/lock/test-door/reader/config")
        .await;
    // Retained: a Home Assistant that subscribes later finds it.
    let mut late = Peer::start(
        broker.port,
        "homeassistant",
        "ha-secret",
        &["homeassistant/lock/#"],
        false,
    )
    .await;
    let (again, retained) = late
        .message("homeassistant/lock/test-door/reader/config")
        .await;
    assert!(retained && again == lock, "discovery is retained");
    drop(late);
    let v: serde_json::Value = serde_json::from_str(&lock).unwrap();
    for k in [
        "name",
        "unique_id",
        "command_topic",
        "state_topic",
        "value_template",
        "payload_open",
        "payload_lock",
        "payload_unlock",
        "availability_topic",
        "device",
    ] {
        assert!(!v[k].is_null(), "{k} in {v}");
    }
    assert_eq!(v["availability_topic"], "tiketo-gate/test-door/status");
    let (ev, _) = ha
        .message("homeassistant/event/test-door/reader_verdict/config")
        .await;
    let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
    assert_eq!(ev["event_types"], serde_json::json!(["accept", "reject"]));
    // A scan is an event entity's event.
    h.write(b"VALID-0001\r\n");
    h.wait_scan(1);
    let (b, _) = ha.message("tiketo-gate/test-door/ha/reader/verdict").await;
    assert!(b.contains("\"event_type\":\"accept\""), "{b}");
    // Home Assistant restarted: discovery again.
    ha.send("homeassistant/status", "online", false).await;
    ha.message("homeassistant/sensor/test-door/mode/config")
        .await;
    h.wait_log("Home Assistant is online", T);

    // OPEN without home_assistant_commands: refused, nothing done.
    let topic = v["command_topic"].as_str().unwrap().to_owned();
    ha.send(&topic, "OPEN", false).await;
    let a = ack(&mut ha).await;
    assert_eq!(a["ok"], false, "{a}");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("home_assistant_commands"),
        "{a}"
    );
    let before = h.changes_of("relay").iter().filter(|on| **on).count();

    // With it: obeyed.
    h.opts.tail = broker.mqtt_table("home_assistant = true\nhome_assistant_commands = true\n");
    h.kill9();
    restart_and_subscribe(&mut h);
    ha.message("homeassistant/lock/test-door/reader/config")
        .await;
    ha.send(&topic, "OPEN", false).await;
    let a = ack(&mut ha).await;
    assert_eq!(
        (a["ok"].as_bool(), a["jti"].as_str()),
        (Some(true), None),
        "{a}"
    );
    assert!(h.wait_switched("relay", true, before + 1, T));
    // UNLOCK holds it, LOCK ends it; the lock's state follows.
    ha.send(&topic, "UNLOCK", false).await;
    assert_eq!(ack(&mut ha).await["ok"], true);
    assert!(wait_until(T, || h.status_json()["release"] == true));
    ha.send(&topic, "LOCK", false).await;
    assert_eq!(ack(&mut ha).await["ok"], true);
    assert!(wait_until(T, || h.status_json()["release"] == false));
    // A door's own user cannot write Home Assistant's topic of another door.
    let mut other = Peer::start(broker.port, "other-door", "other-secret", &[], false).await;
    other.send(&topic, "OPEN", false).await;
    let e = other
        .wait("a PUBACK", |e| matches!(e, PeerEvent::PubAck(_)))
        .await;
    assert!(
        matches!(&e, PeerEvent::PubAck(r) if r.contains("NotAuthorized")),
        "{e:?}"
    );
}

/// doctor's `mqtt broker` line, from `doctor --json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_tries_the_broker_as_the_door_and_names_a_wrong_password_or_a_denied_topic() {
    let broker = Broker::start();
    let (mut h, _w) = door_online(&broker).await;
    let ok = doctor_line(&h, "mqtt broker");
    assert_eq!(ok["status"], "ok", "{ok}");
    assert!(
        ok["message"]
            .as_str()
            .unwrap()
            .contains("the daemon is online there"),
        "{ok}"
    );
    // The daemon stayed connected beside it (another client id, no will).
    assert_eq!(
        h.logs().matches("mqtt connected").count(),
        1,
        "{}",
        h.logs()
    );
    assert!(!h.logs().contains("connection lost"), "{}", h.logs());

    // A wrong password: ✗, exit 1, the fix names the password file.
    let pw = broker.dir.path().join("door-password");
    std::fs::write(&pw, "not-the-password\n").unwrap();
    let bad = doctor_line(&h, "mqtt broker");
    assert_eq!(bad["status"], "fail", "{bad}");
    assert!(
        bad["fix"].as_str().unwrap().contains("password_file"),
        "{bad}"
    );
    assert_eq!(h.cli(&["doctor"]).status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&h.cli(&["doctor"]).stdout).contains("not-the-password"));
    std::fs::write(&pw, "door-secret\n").unwrap();

    // Another door's topic: the ACL says no.
    h.opts.tail = broker.mqtt_table("topic = \"tiketo-gate/other-door\"\n");
    std::fs::write(h.config_path(), h.config_text()).unwrap();
    let denied = doctor_line(&h, "mqtt broker");
    assert_eq!(denied["status"], "fail", "{denied}");
    assert!(
        denied["message"].as_str().unwrap().contains("may not"),
        "{denied}"
    );
    assert!(denied["fix"].as_str().unwrap().contains("ACL"), "{denied}");
}

#[test]
fn check_config_reads_the_command_key_as_the_daemon_will() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("command.key");
    std::fs::write(&key, "too-short\n").unwrap();
    let cfg = dir.path().join("door.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nname = \"front-door\"\nstate_dir = \"{d}/state\"\n[api]\ntoken_file = \"{d}/token\"\n[mqtt]\nurl = \"mqtt://broker:1883\"\ncommand_key_file = \"{k}\"\n",
            d = dir.path().display(),
            k = key.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), "tok\n").unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mqtt.command_key_file") && err.contains("at least 32"),
        "{err}"
    );
    assert!(!err.contains("too-short"), "the key is never shown: {err}");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let out = run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
