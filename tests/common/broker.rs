//! A real mosquitto for the tests (Debian's package), with docs/config.md's ACL, and a peer
//! client that records what it receives.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use super::{free_port, wait_until};

pub const T: Duration = Duration::from_secs(15);

/// A mosquitto of our own with docs/config.md's ACL: user `test-door` (the daemon, named after
/// its device: its own topics by the `%u` pattern), `watcher` (reads every door's).
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// With TLS: a second listener on this port with a test CA's certificate for 127.0.0.1.
    pub tls_port: Option<u16>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(false)
    }

    pub fn start_with(tls: bool) -> Broker {
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

    pub fn write_files(&self) {
        let d = self.dir.path();
        let passwd = d.join("passwd");
        std::fs::write(&passwd, "").unwrap();
        for (u, p) in [
            ("test-door", "door-secret"),
            ("front-door", "door-secret"),
            ("side-door", "door-secret"),
            ("back-door", "door-secret"),
            ("other-door", "other-secret"),
            ("watcher", "watcher-secret"),
            ("controller", "controller-secret"),
            ("homeassistant", "ha-secret"),
        ] {
            let ok = Command::new(mosquitto_passwd())
                .args(["-b"])
                .arg(&passwd)
                .args([u, p])
                .status()
                .expect("mosquitto_passwd (Debian's mosquitto package) runs");
            assert!(ok.success());
        }
        // docs/config.md's ACL, word for word, and a watcher that reads everything.
        std::fs::write(
            d.join("acl"),
            format!(
                "{}\nuser watcher\ntopic read tiketo-gate/#\ntopic read homeassistant/#\n",
                readme_acl()
            ),
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

    pub fn spawn(&mut self) {
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

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: mosquitto writes its persistence (sessions, queued messages) and exits.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    pub fn password_file(&self) -> PathBuf {
        let p = self.dir.path().join("door-password");
        std::fs::write(&p, "door-secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    pub fn mqtt_table(&self, extra: &str) -> String {
        self.mqtt_table_as("test-door", extra)
    }

    /// The `[mqtt]` table of the door whose `device.name` (and broker user) is `user`.
    pub fn mqtt_table_as(&self, user: &str, extra: &str) -> String {
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nusername = \"{user}\"\npassword_file = \"{}\"\nkeep_alive_s = 5\n{extra}",
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

/// The mosquitto ACL that docs/config.md shows (between its `acl_file` fences).
pub fn readme_acl() -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md")).unwrap();
    let start = doc
        .find("```text\n# acl_file")
        .expect("docs/config.md shows the ACL");
    let body = &doc[start + "```text\n".len()..];
    body[..body.find("```").unwrap()].to_owned()
}

pub fn mosquitto() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is installed (.ci/test installs Debian's mosquitto)")
}

pub fn mosquitto_passwd() -> &'static Path {
    Path::new("/usr/bin/mosquitto_passwd")
}

pub struct Peer {
    pub client: AsyncClient,
    /// SUBACKs so far (one per subscription per connection).
    pub subacks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    pub seen: Vec<PeerEvent>,
}

#[derive(Debug, Clone)]
pub enum PeerEvent {
    Message(String, String, bool),
    PubAck(String),
}

impl Peer {
    /// Connects as `user`; `session`: a persistent session (messages kept while it is away).
    pub async fn start(
        port: u16,
        user: &str,
        password: &str,
        subscribe: &[&str],
        session: bool,
    ) -> Peer {
        // A client id of its own: two peers of one user must not take each other's session.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut o = MqttOptions::new(
            format!("{user}-peer-{}-{n}", std::process::id()),
            "127.0.0.1",
            port,
        );
        o.set_credentials(user, password);
        o.set_keep_alive(Duration::from_secs(5));
        if session {
            o.set_clean_start(false);
            let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
            props.session_expiry_interval = Some(3600);
            o.set_connect_properties(props);
        }
        let (client, mut events) = AsyncClient::new(o, 1024);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let subs: Vec<String> = subscribe.iter().map(|s| s.to_string()).collect();
        let c2 = client.clone();
        let subacks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let subacks2 = subacks.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for s in &subs {
                            let _ = c2.subscribe(s.clone(), QoS::AtLeastOnce).await;
                        }
                        if subs.is_empty() {
                            if let Some(r) = ready_tx.take() {
                                let _ = r.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let body = String::from_utf8_lossy(&p.payload).into_owned();
                        if tx.send(PeerEvent::Message(topic, body, p.retain)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        let _ = tx.send(PeerEvent::PubAck(format!("{:?}", a.reason)));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let _ = tokio::time::timeout(T, ready_rx).await;
        Peer {
            client,
            subacks,
            rx,
            seen: Vec::new(),
        }
    }

    pub async fn send(&self, topic: &str, body: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic.to_owned(), QoS::AtLeastOnce, retain, body.into())
            .await
            .unwrap();
    }

    /// The next event that fits, within `T`.
    pub async fn wait(&mut self, what: &str, ok: impl Fn(&PeerEvent) -> bool) -> PeerEvent {
        let end = Instant::now() + T;
        while Instant::now() < end {
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await
            {
                self.seen.push(m.clone());
                if ok(&m) {
                    return m;
                }
            }
        }
        panic!("no {what}; seen: {:?}", self.seen);
    }

    /// The next message on `topic`.
    pub async fn message(&mut self, topic: &str) -> (String, bool) {
        match self
            .wait(
                topic,
                |e| matches!(e, PeerEvent::Message(t, _, _) if t == topic),
            )
            .await
        {
            PeerEvent::Message(_, b, r) => (b, r),
            _ => unreachable!(),
        }
    }

    /// Everything received so far and within `d`, without waiting for anything in particular.
    pub async fn drain(&mut self, d: Duration) -> Vec<PeerEvent> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(100), self.rx.recv()).await
            {
                self.seen.push(m);
            }
        }
        self.seen.clone()
    }
}
