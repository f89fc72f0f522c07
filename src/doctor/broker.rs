//! The broker line (`[mqtt]`): connects as the door's user (another client id, no will: a
//! running daemon stays connected), reads the door's retained status, publishes to the status
//! topic and reads it back, subscribes to the command topic. A wrong password, a denied topic
//! or no broker is ✗ with the fix. And the command key, when commands are on.

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event};

use super::{check, Check, Level, STEP};
use crate::config::{Config, MqttConfig};
use crate::mqtt::state::Topics;

/// Every check of `[mqtt]` (none without it).
pub async fn broker(cfg: &Config) -> Vec<Check> {
    let Some(m) = &cfg.mqtt else {
        return Vec::new();
    };
    let mut out = vec![probe(m).await];
    if let Some(p) = &m.command_key_file {
        out.push(match crate::mqtt::link::read_command_key(p) {
            Ok(_) => {
                let mode = std::fs::metadata(p)
                    .map(|md| std::os::unix::fs::PermissionsExt::mode(&md.permissions()))
                    .unwrap_or(0);
                let c = check(
                    "mqtt commands",
                    super::secret_mode_level(mode),
                    format!("signed commands on {}/cmd (key {})", m.topic, p.display()),
                );
                if c.status == Level::Ok {
                    c
                } else {
                    c.fix(format!(
                        "chmod 640 {}: whoever reads the key can open the door",
                        p.display()
                    ))
                }
            }
            Err(e) => check("mqtt commands", Level::Fail, e).fix(
                "openssl rand -hex 32 > the file (the same key signs the commands); chmod 640",
            ),
        });
    }
    if m.home_assistant_commands {
        out.push(
            check(
                "home assistant",
                Level::Warn,
                format!("plain OPEN/UNLOCK/LOCK on {}/ha/<reader>/lock are obeyed: the broker's ACL is the only check", m.topic),
            )
            .fix("make sure only Home Assistant's user may write there (docs/config.md shows the ACL)"),
        );
    }
    out
}

async fn probe(m: &MqttConfig) -> Check {
    let name = "mqtt broker";
    let topics = Topics::new(&m.topic);
    let id = format!("{}-doctor", &m.client_id[..m.client_id.len().min(16)]);
    let opts = match crate::mqtt::link::options_without_will(m, &id) {
        Ok(o) => o,
        Err(e) => return check(name, Level::Fail, e).fix("fix the file named above"),
    };
    let (client, mut events) = AsyncClient::new(opts, 16);
    let start = Instant::now();
    let deadline = start + STEP * 3;
    let broker = m.broker();
    let user = m.username.as_deref().unwrap_or("(anonymous)");
    let fail = |msg: String, fix: &str| check(name, Level::Fail, msg).fix(fix.to_owned());
    // 1. Connect.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.max(Duration::from_millis(1)), events.poll()).await {
            Err(_) => {
                return fail(
                    format!("{broker}: no answer within {} s", (STEP * 3).as_secs()),
                    "is the broker running, and this port open to the door? (a firewall, the wrong port, TLS on a plain port)",
                )
            }
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                let fix = match code {
                    ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                        "check mqtt.username and the password in mqtt.password_file (mosquitto_passwd sets it on the broker)"
                    }
                    ConnectReturnCode::ClientIdentifierNotValid => "mqtt.client_id: the broker refuses it",
                    _ => "see the broker's log",
                };
                return fail(format!("{broker} refused {user}: {code:?}"), fix);
            }
            Ok(Err(e)) => {
                return fail(
                    format!("{broker}: {e}"),
                    "is the broker running and reachable? (mqtts: is its certificate signed by mqtt.ca_file or the system's roots?)",
                )
            }
        }
    }
    // 2. Subscribe to the status (its retained value: the daemon's) and the command topic.
    let _ = client.try_subscribe(topics.status.clone(), QoS::AtLeastOnce);
    let _ = client.try_subscribe(topics.cmd.clone(), QoS::AtLeastOnce);
    let mut subacks = 0;
    let mut retained: Option<String> = None;
    let mut published = false;
    let mut acked = false;
    let mut echoed = false;
    while Instant::now() < deadline && !(acked && echoed) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match tokio::time::timeout(left, events.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                return fail(
                    format!("{broker}: the connection ended: {e}"),
                    "see the broker's log",
                )
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::SubAck(a)) => {
                subacks += 1;
                if let Some(bad) = a
                    .return_codes
                    .iter()
                    .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                {
                    let which = if subacks == 1 {
                        &topics.status
                    } else {
                        &topics.cmd
                    };
                    return fail(
                        format!("{user} may not subscribe to {which} ({bad:?})"),
                        "the broker's ACL: the door's user reads and writes its own tree (docs/config.md shows one)",
                    );
                }
                if subacks == 2 && !published {
                    // The status as it is (a non-retained copy: nothing changes for others).
                    let body = retained.clone().unwrap_or_else(|| "offline".into());
                    let _ =
                        client.try_publish(topics.status.clone(), QoS::AtLeastOnce, false, body);
                    published = true;
                }
            }
            Event::Incoming(Packet::Publish(p)) if p.topic.as_ref() == topics.status.as_bytes() => {
                let body = String::from_utf8_lossy(&p.payload).into_owned();
                if p.retain && retained.is_none() && !published {
                    retained = Some(body);
                } else if published {
                    echoed = true;
                }
            }
            Event::Incoming(Packet::PubAck(a)) => {
                if !matches!(
                    a.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                ) {
                    return fail(
                        format!("{user} may not publish to {} ({:?})", topics.status, a.reason),
                        "the broker's ACL: the door's user reads and writes its own tree (docs/config.md shows one)",
                    );
                }
                acked = true;
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
    if !(acked && echoed) {
        return fail(
            format!("{broker}: connected as {user}, but the status topic's message did not come back"),
            "the broker's ACL: the door's user reads and writes its own tree (docs/config.md shows one)",
        );
    }
    let daemon = match retained.as_deref() {
        Some("online") => "the daemon is online there",
        Some("offline") => "the daemon says offline there",
        _ => "no daemon has connected yet",
    };
    check(
        name,
        Level::Ok,
        format!(
            "{broker} as {user}: publishes and reads {}, subscribes to {} ({} ms); {daemon}",
            topics.status,
            topics.cmd,
            start.elapsed().as_millis()
        ),
    )
}
