//! The door on a real mosquitto (Debian's package, which `.ci/test` installs): each test
//! starts its own on a free loopback port, with a password file and an ACL that gives each
//! door its own topics only. No mock broker.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{field, free_port, wait_until, Harness, Opts};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const T: Duration = Duration::from_secs(15);

/// A mosquitto of our own with docs/config.md's ACL: user `test-door` (the daemon, named after
/// its device: its own topics by the `%u` pattern), `watcher` (reads every door's).
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// With TLS: a second listener on this port with a test CA's certificate for 127.0.0.1.
    tls_port: Option<u16>,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(false)
    }

    fn start_with(tls: bool) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let b = Broker {
            child: None,
            port,
            dir,
            tls_port: tls.then(free_port),
        };
        b.write_files();
        let mut b = b;
        b.spawn();
        b
    }

    fn write_files(&self) {
        let d = self.dir.path();
        let passwd = d.join("passwd");
        std::fs::write(&passwd, "").unwrap();
        for (u, p) in [("test-door", "door-secret"), ("watcher", "watcher-secret")] {
            let ok = Command::new(mosquitto_passwd())
                .args(["-b"])
                .arg(&passwd)
                .args([u, p])
                .status()
                .expect("mosquitto_passwd (Debian's mosquitto package) runs");
            assert!(ok.success());
        }
        std::fs::write(
            d.join("acl"),
            "pattern readwrite tiketo-gate/%u/#\nuser watcher\ntopic read tiketo-gate/#\n",
        )
        .unwrap();
        let mut conf = format!(
            "allow_anonymous false\npassword_file {pw}\nacl_file {acl}\npersistence true\npersistence_location {dir}/\nlog_dest stderr\nlistener {port} 127.0.0.1\n",
            port = self.port,
            pw = passwd.display(),
            acl = d.join("acl").display(),
            dir = d.display(),
        );
        if let Some(tls_port) = self.tls_port {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name
                .push(rcgen::DnType::CommonName, "tiketo-gate test broker CA");
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let issuer = Issuer::new(ca, ca_key);
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(d.join("ca.pem"), ca_cert.pem()).unwrap();
            std::fs::write(d.join("server.pem"), cert.pem()).unwrap();
            std::fs::write(d.join("server.key"), key.serialize_pem()).unwrap();
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
                d = d.display()
            ));
        }
        std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
    }

    fn spawn(&mut self) {
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian's mosquitto package) starts");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(5), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "mosquitto never listened"
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn password_file(&self) -> PathBuf {
        let p = self.dir.path().join("door-password");
        std::fs::write(&p, "door-secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    fn mqtt_table(&self, extra: &str) -> String {
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nusername = \"test-door\"\npassword_file = \"{}\"\nkeep_alive_s = 5\n{extra}",
            self.port,
            self.password_file().display()
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mosquitto() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is installed (.ci/test installs Debian's mosquitto)")
}

fn mosquitto_passwd() -> &'static Path {
    Path::new("/usr/bin/mosquitto_passwd")
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_says_online_its_state_and_offline_by_will_and_by_clean_stop() {
    let broker = Broker::start();
    let mut h = Harness::start(Opts {
        tail: broker.mqtt_table(""),
        ..Opts::default()
    })
    .await;
    let mut w = Watcher::start(broker.port).await;
    w.wait("tiketo-gate/test-door/status", |b| b == "online")
        .await;
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
