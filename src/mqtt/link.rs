//! The broker connection: one task owns the client and its event loop. It says the door is
//! there (`<topic>/status`: retained `online`; the will, and a clean stop, retained `offline`)
//! and what state it is in (`<topic>/state`: retained JSON, republished on each change). A scan
//! never waits for it: the broker down, refusing or hanging costs the scan path nothing.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use crate::config::MqttConfig;
use crate::shutdown::Shutdown;
use crate::state::Shared;

use super::state::{state_json, Topics};

/// The password, read once at start (never logged): one line, surrounding whitespace
/// trimmed. A file others may read is warned about, as the token file is by doctor.
pub fn read_password(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("mqtt.password_file {}: cannot read: {e}", path.display()))?;
    let p = text.trim();
    if p.is_empty() {
        return Err(format!(
            "mqtt.password_file {}: the file is empty",
            path.display()
        ));
    }
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                "mqtt.password_file {} is readable by every user: chmod 640 it",
                path.display()
            );
        }
    }
    Ok(p.to_owned())
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
fn options(cfg: &MqttConfig, topics: &Topics) -> Result<MqttOptions, String> {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    o.set_connection_timeout(5);
    o.set_last_will(LastWill::new(
        topics.status.clone(),
        "offline",
        QoS::AtLeastOnce,
        true,
        None,
    ));
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

/// The connection's life until the daemon stops.
pub async fn run(cfg: MqttConfig, shared: Shared, max_pending: u64, mut shutdown: Shutdown) {
    let topics = Topics::new(&cfg.topic);
    let opts = match options(&cfg, &topics) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("mqtt is off: {e}");
            return;
        }
    };
    let broker = cfg.broker();
    let (client, mut events) = AsyncClient::new(opts, 64);
    let mut changes = shared.api.link.subscribe();
    let mut wake = shared.board.status_wake.subscribe();
    let mut connected = false;
    let mut last_state = String::new();
    let mut failures: u32 = 0;
    let mut backoff = crate::backoff::mqtt();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    failures = 0;
                    backoff = crate::backoff::mqtt();
                    crate::metrics::metrics().mqtt_connected.set(1);
                    tracing::info!(broker = %broker, client_id = %cfg.client_id, topic = %cfg.topic, "mqtt connected");
                    let _ = client.try_publish(topics.status.clone(), QoS::AtLeastOnce, true, "online");
                    last_state.clear();
                    publish_state(&client, &shared, max_pending, &topics, &mut last_state).await;
                }
                Ok(_) => {}
                Err(e) => {
                    if connected || failures == 0 {
                        tracing::warn!(broker = %broker, "mqtt connection lost or refused ({e}); retrying");
                    }
                    connected = false;
                    crate::metrics::metrics().mqtt_connected.set(0);
                    let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.recv() => return,
                    }
                }
            },
            _ = state_may_have_changed(&mut changes, &mut wake, &mut tick) => {
                if connected {
                    publish_state(&client, &shared, max_pending, &topics, &mut last_state).await;
                }
            }
            _ = shutdown.recv() => {
                if connected {
                    stop(&client, &mut events, &topics).await;
                }
                return;
            }
        }
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

/// Publishes the state when it changed.
async fn publish_state(
    client: &AsyncClient,
    shared: &Shared,
    max_pending: u64,
    topics: &Topics,
    last: &mut String,
) {
    let status = crate::status::Status::now(shared, max_pending);
    let counts = shared.store.read(|s| s.outbox_counts()).await.ok();
    let body = state_json(&status, counts.as_ref()).to_string();
    if *last != body
        && client
            .try_publish(topics.state.clone(), QoS::AtLeastOnce, true, body.clone())
            .is_ok()
    {
        *last = body;
    }
}
