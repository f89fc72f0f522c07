//! The broker connection: one task owns the client and its event loop. It says the door is
//! there (`<topic>/status`: retained `online`; the will, and a clean stop, retained `offline`)
//! and what state it is in (`<topic>/state`: retained JSON, republished on each change); it
//! publishes the store's events in order at QoS 1 and deletes each once the broker has
//! acknowledged it ([`super::window`]); it takes signed commands on `<topic>/cmd` and Home
//! Assistant's on `<topic>/ha/<reader>/lock`, and answers each on `<topic>/cmd/ack`; it
//! publishes Home Assistant's discovery. A scan never waits for it: the broker down, refusing
//! or hanging costs the scan path nothing (the scan's transaction writes the event's row; this
//! task is woken after it).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, Packet, PubAckReason, Publish, PublishProperties, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use crate::config::MqttConfig;
use crate::shutdown::Shutdown;
use crate::state::Shared;

use super::act::Door;
use super::command::{self, Action, Context};
use super::state::{state_json, Topics};
use super::venue::{Incoming, VenueTopics, PRESENCE_EXPIRY_S};
use super::window::Window;

/// Events in flight at once (unacknowledged QoS 1 publishes).
const EVENT_WINDOW: usize = 64;
/// QoS 1 publishes in flight at most: the events' window and room for the door's own
/// messages (status, state, acks, discovery).
const OUTGOING_INFLIGHT: u16 = 2 * EVENT_WINDOW as u16;
/// Acknowledged events deleted in one transaction at most this many at a time (or every
/// [`DELETE_EVERY`]).
const DELETE_BATCH: usize = 64;
const DELETE_EVERY: Duration = Duration::from_millis(50);

/// The password, read once at start (never logged): one line, surrounding whitespace
/// trimmed. A file others may read is warned about, as the token file is by doctor.
pub fn read_password(path: &std::path::Path) -> Result<String, String> {
    read_secret("mqtt.password_file", path).map(|p| p.trim().to_owned())
}

/// The command key, read once at start (never logged): surrounding whitespace trimmed, at
/// least 32 bytes.
pub fn read_command_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = read_secret("mqtt.command_key_file", path)?;
    command::key_from(&text).map_err(|e| format!("mqtt.command_key_file {}: {e}", path.display()))
}

/// A secret file's text: not empty; warned about when every user may read it.
pub(crate) fn read_secret(key: &str, path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key} {}: cannot read: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("{key} {}: the file is empty", path.display()));
    }
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                "{key} {} is readable by every user: chmod 640 it",
                path.display()
            );
        }
    }
    Ok(text)
}

/// The rustls configuration for `mqtts://`: the system's roots, or `ca_file`'s; a client
/// certificate when one is set.
fn tls_config(cfg: &MqttConfig) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crate::api::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(ca) => {
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("mqtt.ca_file {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("mqtt.ca_file {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("mqtt.ca_file {}: {e}", ca.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match &cfg.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("mqtt.cert_file {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("mqtt.key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("mqtt.cert_file: {e}"))
        }
    }
}

/// The client's options: id, broker, keep-alive, credentials, the will, TLS.
pub fn options(cfg: &MqttConfig, topics: &Topics) -> Result<MqttOptions, String> {
    let mut o = options_without_will(cfg, &cfg.client_id)?;
    o.set_last_will(LastWill::new(
        topics.status.clone(),
        "offline",
        QoS::AtLeastOnce,
        true,
        None,
    ));
    Ok(o)
}

/// The options of another client of the door's user (doctor's, beside a running daemon:
/// another client id, no will).
pub fn options_without_will(cfg: &MqttConfig, client_id: &str) -> Result<MqttOptions, String> {
    let mut o = MqttOptions::new(client_id.to_owned(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    o.set_connection_timeout(5);
    // Small messages that someone waits for (a command's ack, an event): no Nagle delay.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    o.set_network_options(net);
    // rumqttc keeps a slot per possible packet id in flight: 65,536 of them (about 10 MB)
    // unless bounded. The events' window and the door's own messages fit in this.
    o.set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT);
    if let Some(user) = &cfg.username {
        let password = match &cfg.password_file {
            Some(p) => read_password(p)?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if cfg.tls {
        let tls = tls_config(cfg)?;
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
        ));
    }
    Ok(o)
}

/// What the task needs besides the connection's settings.
pub struct Parts {
    pub shared: Shared,
    /// `store.max_pending` (the status's queue-full flag).
    pub max_pending: u64,
    /// `device.name`: the commands' `aud`.
    pub device: String,
    pub door: Door,
    /// With a door sensor (Home Assistant's door entity).
    pub door_sensor: bool,
    /// `mqtt.venue`: the venue's shared memory.
    pub venue: Option<VenueParts>,
}

/// The venue's part of the connection.
pub struct VenueParts {
    pub key: Arc<crate::venue::seal::VenueKey>,
    pub topic: String,
    pub ttl_ms: i64,
    /// Set while this door is the one that refreshes the venue's passes.
    pub refresher: Arc<std::sync::atomic::AtomicBool>,
}

/// The venue as the task keeps it.
struct VenueSide {
    topics: VenueTopics,
    refresher: Arc<std::sync::atomic::AtomicBool>,
    /// Another venue key was said (once).
    foreign_said: bool,
    damaged_said: bool,
}

/// The connection's life until the daemon stops.
pub async fn run(cfg: MqttConfig, parts: Parts, shutdown: Shutdown) {
    let topics = Topics::new(&cfg.topic);
    let opts = match options(&cfg, &topics) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("mqtt is off: {e}");
            return;
        }
    };
    let key = match &cfg.command_key_file {
        None => None,
        Some(p) => match read_command_key(p) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!("mqtt commands are off: {e}");
                None
            }
        },
    };
    let venue = parts.venue.as_ref().map(|v| VenueSide {
        topics: VenueTopics::new(v.key.clone(), &v.topic, &parts.device, v.ttl_ms),
        refresher: v.refresher.clone(),
        foreign_said: false,
        damaged_said: false,
    });
    let mut opts = opts;
    if venue.is_some() {
        // A pass's record may be larger than a command (the broker drops, for this door,
        // what it says it cannot take).
        opts.set_max_packet_size(Some(256 * 1024));
    }
    let (client, events) = AsyncClient::new(opts, 256);
    let mut link = Link {
        venue,
        readers: parts.door.reader_names(),
        cfg,
        topics,
        client,
        key,
        parts,
        window: Window::new(EVENT_WINDOW),
        delivered: Vec::new(),
        connected: false,
        last_state: String::new(),
        refused_logged: false,
    };
    link.run(events, shutdown).await
}

struct Link {
    venue: Option<VenueSide>,
    cfg: MqttConfig,
    topics: Topics,
    client: AsyncClient,
    key: Option<Vec<u8>>,
    parts: Parts,
    readers: Vec<String>,
    window: Window,
    /// Events the broker acknowledged, to delete.
    delivered: Vec<i64>,
    connected: bool,
    last_state: String,
    /// The broker refused an event this session (logged once).
    refused_logged: bool,
}

impl Link {
    async fn run(&mut self, mut events: rumqttc::v5::EventLoop, mut shutdown: Shutdown) {
        let broker = self.cfg.broker();
        let shared = self.parts.shared.clone();
        let mut changes = shared.api.link.subscribe();
        let mut wake = shared.board.status_wake.subscribe();
        let mut new_events = shared.store.events_wake();
        let mut failures: u32 = 0;
        let mut backoff = crate::backoff::mqtt();
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut delete_tick = tokio::time::interval(DELETE_EVERY);
        let mut presence_tick = tokio::time::interval(Duration::from_secs(10));
        self.update_pending_gauge().await;
        loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        backoff = crate::backoff::mqtt();
                        tracing::info!(broker = %broker, client_id = %self.cfg.client_id, topic = %self.cfg.topic, "mqtt connected");
                        self.on_connect().await;
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => self.window.outgoing(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let delivered = matches!(ack.reason, PubAckReason::Success | PubAckReason::NoMatchingSubscribers);
                        let event = self.window.acked(ack.pkid);
                        if event.is_none() && !delivered && !self.refused_logged {
                            self.refused_logged = true;
                            tracing::error!(reason = ?ack.reason, "mqtt: the broker refused one of the door's messages (status, state, an ack or Home Assistant's discovery): its ACL? (doctor checks it)");
                        }
                        if let Some(seq) = event {
                            if delivered {
                                self.delivered.push(seq);
                            } else if !self.refused_logged {
                                self.refused_logged = true;
                                tracing::error!(topic = %self.topics.events, reason = ?ack.reason, "mqtt: the broker refused the door's events (its ACL?); they are kept and sent again at the next connection");
                            }
                            if self.delivered.len() >= DELETE_BATCH {
                                self.flush_delivered().await;
                            }
                            self.fill().await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => self.on_message(p).await,
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| !matches!(c, SubscribeReasonCode::Success(_))) {
                            tracing::error!(codes = ?ack.return_codes, "mqtt: the broker refused a subscription (its ACL?): commands (or, with mqtt.venue, the venue's records) may not arrive");
                        } else {
                            // From here on a command reaches the door.
                            tracing::info!("mqtt subscribed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if self.connected || failures == 0 {
                            tracing::warn!(broker = %broker, "mqtt connection lost or refused ({e}); retrying");
                        }
                        self.connected = false;
                        self.window.reset();
                        crate::metrics::metrics().mqtt_connected.set(0);
                        let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                        failures = failures.saturating_add(1);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.recv() => {
                                self.flush_delivered().await;
                                return;
                            }
                        }
                    }
                },
                _ = new_events.changed() => self.fill().await,
                _ = delete_tick.tick(), if !self.delivered.is_empty() => self.flush_delivered().await,
                _ = state_may_have_changed(&mut changes, &mut wake, &mut tick) => {
                    self.update_pending_gauge().await;
                    if self.connected {
                        self.publish_state().await;
                    }
                }
                _ = presence_tick.tick(), if self.venue.is_some() => self.venue_presence(),
                _ = shutdown.recv() => {
                    self.flush_delivered().await;
                    if self.connected {
                        stop(&self.client, &mut events, &self.topics).await;
                    }
                    return;
                }
            }
        }
    }

    /// A publish request, remembered in the window's order.
    fn publish(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        body: impl Into<bytes::Bytes>,
        seq: Option<i64>,
    ) -> bool {
        let ok = self
            .client
            .try_publish(topic.to_owned(), qos, retain, body.into())
            .is_ok();
        if ok {
            self.window.handed(seq);
        }
        ok
    }

    /// A fresh session (the client starts clean: nothing of the last one is kept).
    async fn on_connect(&mut self) {
        self.connected = true;
        self.refused_logged = false;
        self.window.reset();
        crate::metrics::metrics().mqtt_connected.set(1);
        let status = self.topics.status.clone();
        self.publish(&status, QoS::AtLeastOnce, true, "online", None);
        self.last_state.clear();
        self.publish_state().await;
        if self.key.is_some() {
            let _ = self
                .client
                .try_subscribe(self.topics.cmd.clone(), QoS::AtLeastOnce);
        }
        if self.cfg.home_assistant {
            let _ = self
                .client
                .try_subscribe(format!("{}/+/lock", self.topics.ha), QoS::AtLeastOnce);
            let _ = self
                .client
                .try_subscribe(super::ha::STATUS_TOPIC, QoS::AtLeastOnce);
            self.discovery();
        }
        if let Some(v) = &self.venue {
            // Not this door's own messages back (its store has them already).
            let filters = v.topics.filters().map(|f| {
                let mut f = Filter::new(f, QoS::AtLeastOnce);
                f.nolocal = true;
                f
            });
            let _ = self.client.try_subscribe_many(filters);
            self.venue_presence();
        }
        // Acknowledged before the drop: not sent again.
        self.flush_delivered().await;
        self.fill().await;
    }

    /// Home Assistant's discovery, retained.
    fn discovery(&mut self) {
        let readers: Vec<(String, bool)> = self.parts.door.readers_with_relay();
        let d = super::ha::Door {
            node: &self.cfg.client_id,
            device: &self.parts.device,
            readers: &readers,
            door_sensor: self.parts.door_sensor,
        };
        for (topic, body) in super::ha::discovery(&d, &self.topics) {
            self.publish(&topic, QoS::AtLeastOnce, true, body, None);
        }
    }

    /// Hands the client the next events from the store, as many as the window has room for.
    async fn fill(&mut self) {
        if !self.connected || self.window.room() == 0 {
            return;
        }
        let (after, room) = (self.window.after(), self.window.room());
        let rows = match self
            .parts
            .shared
            .store
            .read(move |s| s.events_after(after, room))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("mqtt: cannot read the events to publish: {e}");
                return;
            }
        };
        let events_topic = self.topics.events.clone();
        for row in rows {
            if let Some(address) = &row.venue {
                if !self.publish_record(address, row.venue_record.as_deref(), row.seq) {
                    break;
                }
                continue;
            }
            if !self.publish(
                &events_topic,
                QoS::AtLeastOnce,
                false,
                row.body.clone(),
                Some(row.seq),
            ) {
                break;
            }
            if self.cfg.home_assistant {
                if let Some((topic, body)) = super::ha::verdict_of(&row.body, &self.topics) {
                    self.publish(&topic, QoS::AtMostOnce, false, body, None);
                }
            }
        }
    }

    /// Deletes the events the broker acknowledged.
    async fn flush_delivered(&mut self) {
        if self.delivered.is_empty() {
            return;
        }
        let seqs = std::mem::take(&mut self.delivered);
        let n = seqs.len() as u64;
        match self
            .parts
            .shared
            .store
            .run(move |s| s.events_delivered(&seqs))
            .await
        {
            Ok(()) => {
                crate::metrics::metrics().mqtt_events_published.inc_by(n);
            }
            Err(e) => {
                tracing::warn!("mqtt: delivered events not deleted ({e}); they may be sent again")
            }
        }
    }

    async fn update_pending_gauge(&self) {
        if let Ok(n) = self.parts.shared.store.read(|s| s.events_pending()).await {
            crate::metrics::metrics().mqtt_events_pending.set(n);
        }
        if self.venue.is_some() {
            if let Ok(n) = self.parts.shared.store.read(|s| s.venue_known()).await {
                crate::metrics::metrics().venue_passes.set(n);
            }
        }
    }

    /// Publishes the state when it changed.
    async fn publish_state(&mut self) {
        let shared = &self.parts.shared;
        let status = crate::status::Status::now(shared, self.parts.max_pending);
        let counts = shared.store.read(|s| s.counts()).await.ok();
        let body = state_json(&status, counts.as_ref()).to_string();
        if self.last_state != body {
            let topic = self.topics.state.clone();
            if self.publish(&topic, QoS::AtLeastOnce, true, body.clone(), None) {
                self.last_state = body;
            }
        }
    }

    /// A message on a topic the door subscribed to.
    async fn on_message(&mut self, p: Publish) {
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        if topic == super::ha::STATUS_TOPIC {
            if p.payload.as_ref() == b"online" && self.cfg.home_assistant {
                tracing::info!("mqtt: Home Assistant is online: discovery published again");
                self.discovery();
            }
            return;
        }
        if self.venue.is_some() && self.on_venue_message(&topic, &p.payload).await {
            return;
        }
        if p.payload.is_empty() {
            // How a retained command is cleared from the broker: nothing to answer.
            tracing::debug!(topic = %topic, "mqtt: an empty message ignored");
            return;
        }
        let jwt = topic == self.topics.cmd;
        let ha_reader = self.topics.ha_lock_reader(&topic).map(str::to_owned);
        if !jwt && ha_reader.is_none() {
            return;
        }
        let newest_iat = if jwt {
            let shared = &self.parts.shared;
            shared
                .store
                .read(|s| s.newest_command_iat())
                .await
                .unwrap_or(0)
        } else {
            0
        };
        let cx = Context {
            device: &self.parts.device,
            readers: &self.readers,
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            clock_synced: crate::clock::clock_synced(),
            newest_iat,
        };
        let (source, checked) = match (&self.key, ha_reader) {
            (Some(key), None) => ("jwt", command::check_jwt(&p.payload, p.retain, key, &cx)),
            (None, None) => return,
            (_, Some(reader)) => {
                let c = command::check_home_assistant(&p.payload, p.retain, &reader, &cx);
                let c = match c {
                    Ok(c) if !self.cfg.home_assistant_commands => Err(command::Refusal {
                        jti: None,
                        action: Some(c.action),
                        error: "Home Assistant's commands are off (mqtt.home_assistant_commands = false)".into(),
                    }),
                    other => other,
                };
                ("home_assistant", c)
            }
        };
        let result = match checked {
            Err(r) => Err(r),
            Ok(c) => self.remember_and_apply(c, source).await,
        };
        let (jti, action, outcome) = match &result {
            Ok((c, readers)) => (c.jti.clone(), Some(c.action), Ok(readers.as_slice())),
            Err(r) => (r.jti.clone(), r.action, Err(r.error.as_str())),
        };
        super::act::note(action, jti.as_deref(), source, outcome);
        let ack = command::ack_json(jti.as_deref(), outcome.map(|_| ()));
        let ack_topic = self.topics.ack.clone();
        self.publish(&ack_topic, QoS::AtLeastOnce, false, ack, None);
    }

    /// The `jti` remembered (durably: a replay after a restart is refused), then the command
    /// done.
    async fn remember_and_apply(
        &mut self,
        c: command::Command,
        source: &'static str,
    ) -> Result<(command::Command, Vec<String>), command::Refusal> {
        let refuse = |c: &command::Command, error: String| command::Refusal {
            jti: c.jti.clone(),
            action: Some(c.action),
            error,
        };
        if let Some(jti) = c.jti.clone() {
            let (exp_ms, iat) = (c.exp.saturating_mul(1000), c.iat);
            match self
                .parts
                .shared
                .store
                .run(move |s| s.remember_command(&jti, exp_ms, iat))
                .await
            {
                Ok(true) => {}
                Ok(false) => return Err(refuse(&c, "jti already seen (a replay)".into())),
                Err(e) => {
                    return Err(refuse(
                        &c,
                        format!("cannot remember the jti, nothing done: {e}"),
                    ))
                }
            }
        }
        match self.parts.door.apply(&c, source).await {
            Ok(readers) => {
                if c.action != Action::Open {
                    self.publish_state().await;
                }
                Ok((c, readers))
            }
            Err(e) => Err(refuse(&c, e)),
        }
    }
}

impl Link {
    /// A venue record out of the store, sealed, retained, expiring when its cache would
    /// forget it (or the retained message cleared when no door would use it any more).
    fn publish_record(&mut self, address: &str, record: Option<&str>, seq: i64) -> bool {
        let Some(v) = &self.venue else { return false };
        let record: Option<crate::venue::ledger::PassRecord> =
            record.and_then(|t| serde_json::from_str(t).ok());
        let (topic, body, expiry) =
            v.topics
                .sealed_record(address, record.as_ref(), crate::clock::now_ms());
        self.publish_retained_expiring(topic, body, expiry, Some(seq))
    }

    /// A retained QoS 1 message the broker drops after `expiry` seconds (`None`: kept),
    /// remembered in the window's order like [`Link::publish`]'s.
    fn publish_retained_expiring(
        &mut self,
        topic: String,
        body: Vec<u8>,
        expiry: Option<u32>,
        seq: Option<i64>,
    ) -> bool {
        let props = PublishProperties {
            message_expiry_interval: expiry,
            ..Default::default()
        };
        let ok = self
            .client
            .try_publish_with_properties(topic, QoS::AtLeastOnce, true, body, props)
            .is_ok();
        if ok {
            self.window.handed(seq);
        }
        ok
    }

    /// This door's presence on the venue (every 10 s, and at each connection).
    fn venue_presence(&mut self) {
        if !self.connected {
            return;
        }
        let api = !self.parts.shared.api.link.is_offline();
        let now = crate::clock::now_ms();
        let Some(v) = self.venue.as_mut() else { return };
        let (topic, body) = v.topics.presence(api, now);
        self.publish_retained_expiring(topic, body, Some(PRESENCE_EXPIRY_S), None);
        self.venue_status(api, now);
    }

    /// Who refreshes, and what `status` shows of the venue.
    fn venue_status(&mut self, api: bool, now: i64) {
        let Some(v) = self.venue.as_mut() else { return };
        let refresher = v.topics.refresher(api, now);
        v.refresher
            .store(refresher, std::sync::atomic::Ordering::Relaxed);
        self.parts.shared.board.set_venue(crate::state::VenueState {
            topic: self
                .cfg
                .venue
                .as_ref()
                .map(|c| c.topic.clone())
                .unwrap_or_default(),
            doors: v.topics.doors(now),
            refreshing: refresher,
            foreign_key: v.foreign_said,
        });
    }

    /// A message on the venue's topics (false: not one of them).
    async fn on_venue_message(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(v) = self.venue.as_mut() else {
            return false;
        };
        let count = |outcome: &str| {
            crate::metrics::count_outcome(&crate::metrics::metrics().venue_messages, outcome)
        };
        match v.topics.incoming(topic, payload) {
            Incoming::NotVenue => return false,
            Incoming::Cleared => {}
            Incoming::Presence => {
                let api = !self.parts.shared.api.link.is_offline();
                self.venue_status(api, crate::clock::now_ms());
            }
            Incoming::Foreign => {
                count("foreign_key");
                if !v.foreign_said {
                    v.foreign_said = true;
                    tracing::error!(topic = %topic, "venue: a message sealed with another venue key: ignored (this door's mqtt.venue_key_file differs from the other doors', or another venue shares the topic); said once");
                    let api = !self.parts.shared.api.link.is_offline();
                    self.venue_status(api, crate::clock::now_ms());
                }
            }
            Incoming::Damaged(why) => {
                count("damaged");
                if !v.damaged_said {
                    v.damaged_said = true;
                    tracing::warn!(topic = %topic, "venue: a message that is not a venue record ({why}): ignored; said once");
                }
            }
            Incoming::Record { address, record } => {
                let merged = self
                    .parts
                    .shared
                    .store
                    .run(move |s| s.venue_merge(&address, &record))
                    .await;
                match merged {
                    Ok(r) => {
                        count(if r.republish || !r.conflicts.is_empty() {
                            "merged"
                        } else {
                            "known"
                        });
                        crate::store::log_conflicts(&r.conflicts);
                        if !r.conflicts.is_empty() {
                            self.parts.shared.board.status_wake.notify();
                        }
                    }
                    Err(e) => {
                        tracing::warn!("venue: a record not merged ({e}); the broker keeps it")
                    }
                }
            }
        }
        true
    }
}

/// Returns when the state may have changed: the link's mode, anything `status` shows, or
/// 10 s passed (the queue's counts move without a wake).
async fn state_may_have_changed<T>(
    link: &mut tokio::sync::watch::Receiver<T>,
    wake: &mut tokio::sync::watch::Receiver<u64>,
    tick: &mut tokio::time::Interval,
) {
    tokio::select! {
        _ = link.changed() => {}
        _ = wake.changed() => {}
        _ = tick.tick() => {}
    }
}

/// A clean stop: retained `offline`, then the disconnect, within a second.
async fn stop(client: &AsyncClient, events: &mut rumqttc::v5::EventLoop, topics: &Topics) {
    let _ = client.try_publish(topics.status.clone(), QoS::AtLeastOnce, true, "offline");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                _ => {}
            }
        }
    })
    .await;
    tracing::info!("mqtt: offline published, disconnected");
}
